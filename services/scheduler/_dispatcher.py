"""The dispatcher: turns due jobs of running runs into job envelopes on JetStream.

Each tick, per pool: credit = live capacity - outstanding; the credit is split between running
runs by priority (fair share), then each run fills its allowance with due retries first and new
jobs of its plan after, in index order, subject to its own limits (max concurrency, per-engine
caps, per-host token buckets, host backoff) and account availability. This is policy only: the
job store (jobs/) claims and records, the bus publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.common import bus
from services.common.spec import AccountSelector, RunSpec
from services.common.types import Cell, JobEnvelope
from services.scheduler._credit import CreditLedger
from services.scheduler._events import (
    FleetChanged,
    JobsReleased,
    NodeRegistered,
    RunCancelled,
    RunCreated,
    RunExpedited,
    RunResumed,
    RunStarted,
)
from services.scheduler._fairshare import Claim as FairClaim
from services.scheduler._fairshare import fair_allowance, weight_of
from services.scheduler._hosts import HostLimiter, origin_of
from services.scheduler._planner import RunPlan
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs import Run, RunStore
from services.scheduler.jobs import Claim, JobStore, job_id

logger = logging.getLogger(__name__)

MAX_CLAIM = 500
# Plans of this many runs are kept between ticks (the oldest kept goes first).
_PLANS_KEPT = 256
IDLE_WAKE = timedelta(milliseconds=500)

# Events after which there may be something to send: the dispatcher looks at once.
WAKING_EVENTS = (
    RunCreated,
    RunStarted,
    RunResumed,
    RunExpedited,
    RunCancelled,
    JobsReleased,
    NodeRegistered,
    FleetChanged,
)


class AccountAssigner(Protocol):
    async def assign(self, selector: AccountSelector, *, now: datetime) -> str | None: ...


class EnvelopePublisher(Protocol):
    async def publish(self, envelopes: Sequence[JobEnvelope]) -> list[JobEnvelope]:
        """Publish all; returns those that failed (to be retried)."""
        ...


def pool_of(cell: Cell) -> str:
    return bus.pool_name(cell.engine, cell.labels)


@dataclass(slots=True)
class _RunTick:
    run: Run
    plan: RunPlan
    new_due: int
    retries_due: int
    pools: set[str] = field(default_factory=set)


class Dispatcher:
    def __init__(
        self,
        *,
        runs: RunStore,
        jobs: JobStore,
        registry: NodeRegistry,
        ledger: CreditLedger,
        publisher: EnvelopePublisher,
        hosts: HostLimiter,
        accounts: AccountAssigner,
        allowed_hosts: Sequence[str],
        interval: timedelta,
        recovery_grace: timedelta,
    ) -> None:
        self._runs = runs
        self._jobs = jobs
        self._registry = registry
        self._ledger = ledger
        self._publisher = publisher
        self._hosts = hosts
        self._accounts = accounts
        self._allowed_hosts = tuple(allowed_hosts)
        self._interval = interval.total_seconds()
        self._recovery_grace = recovery_grace
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_wake: datetime | None = None
        # Envelopes whose publish failed; retried before anything new goes out.
        self._unpublished: list[JobEnvelope] = []
        self._retries_checked = float("-inf")
        self._plans: dict[str, tuple[tuple[datetime, datetime | None], RunPlan]] = {}

    def wake(self, _event: Any = None) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Credit from the jobs table and a republish of every job out: what a scheduler that
        starts, or takes over from a leader that died, must do before dispatching anew."""
        self._unpublished = []
        self._ledger.reset(await self._jobs.outstanding())
        await self._republish()
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _republish(self) -> int:
        """A claim commits before its publish, so a scheduler that died in between left jobs
        claimed that never reached the bus. Publish every job still out again, under its own
        message id and attempt: the stream drops the copies it already holds (within its
        duplicate window), the rest go out now, and no job loses an attempt to the crash."""
        count, after = 0, ""
        while batch := await self._jobs.dispatched(after=after, limit=MAX_CLAIM):
            after = batch[-1].id
            envelopes = []
            for job in batch:
                spec = await self._runs.spec(job.run_id)
                claim = Claim(
                    index=job.index,
                    target_url=job.target_url,
                    cell=job.cell,
                    pool=job.pool,
                    account=job.account or None,
                )
                envelope = self._envelope(job.run_id, spec, claim, deadline=job.deadline)
                envelopes.append(replace(envelope, attempt=job.attempt))
            self._unpublished.extend(await self._publisher.publish(envelopes))
            count += len(envelopes)
        if count:
            logger.info("republished %d job(s) still out on the bus at start", count)
        return count

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                sent = await self.tick()
            except Exception:
                logger.exception("dispatch tick failed")
                sent = 0
            if not sent:
                now = datetime.now(UTC)
                wake_at = min(self._next_wake or now + IDLE_WAKE, now + IDLE_WAKE)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), max(0.0, (wake_at - now).total_seconds())
                    )
            self._wake.clear()
            # Ticks start at least `interval` apart: a paced run due every millisecond, or a
            # result stored every millisecond, then makes one claim and one publish per interval
            # rather than one tick per job, which would keep the writer and the loop busy.
            rest = began + self._interval - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)
            else:
                await asyncio.sleep(0)

    # -- one tick ----------------------------------------------------------------------------

    async def tick(self) -> int:
        """Publish what credit, fairness and limits allow now; returns how many went out."""
        if self._unpublished:
            retry, self._unpublished = self._unpublished, []
            self._unpublished = await self._publisher.publish(retry)
        now = datetime.now(UTC)
        self._next_wake = None
        # Capacity as of now, before reading runs: a node arriving mid-tick wakes the next tick.
        capacity = self._registry.capacity
        snapshot: dict[str, int] = {pool: capacity(pool) for pool in self._registry.pools()}
        if not any(self._ledger.credit(pool, free) for pool, free in snapshot.items()):
            # Nothing may go out, so skip the reads: what frees credit (a result stored, a node
            # arriving, a run cancelled) wakes the next tick.
            return 0
        ticks = await self._prepare(now)
        if not ticks:
            return 0
        allowance = self._allowances(ticks, snapshot)
        sent = 0
        for tick in ticks:
            budget = {pool: allowance.get(pool, {}).get(tick.run.id, 0) for pool in tick.pools}
            if not any(budget.values()):
                continue
            claims = await self._candidates(tick, budget, now)
            if not claims:
                continue
            deadline = now + tick.run.spec.limits.session_timeout + self._recovery_grace
            # The ledger takes the claimed jobs when the claim commits (JobsDispatched).
            if not await self._jobs.claim(tick.run, claims, now=now, deadline=deadline):
                continue
            envelopes = [
                self._envelope(tick.run.id, tick.run.spec, claim, deadline=deadline)
                for claim in claims
            ]
            self._unpublished.extend(await self._publisher.publish(envelopes))
            sent += len(envelopes)
        return sent

    async def extend_deadlines(self, job_ids: Sequence[str]) -> int:
        """A node says these jobs still run: push their deadlines out by the recovery grace."""
        return await self._jobs.extend_deadlines(
            job_ids, until=datetime.now(UTC) + self._recovery_grace
        )

    async def _prepare(self, now: datetime) -> list[_RunTick]:
        running = await self._runs.running()
        if not running:
            return []
        retries: dict[str, int] = {}
        # The runs' counters say whether any job waits to retry, so most ticks need not look;
        # still look now and then, should a counter ever be off.
        checked = asyncio.get_running_loop().time()
        if any(run.retrying for run in running) or checked >= self._retries_checked + 1.0:
            self._retries_checked = checked
            retries, next_retry = await self._jobs.retries(now)
            if next_retry is not None:
                self._note_wake(next_retry)
        ticks = []
        for run in running:
            assert run.started_at is not None
            plan = self._plan(run)
            new_due = max(0, plan.due_count(now) - run.next_index)
            if run.next_index < run.planned and new_due == 0:
                self._note_wake(plan.job(run.next_index).due)
            retries_due = int(retries.get(run.id, 0))
            if new_due == 0 and retries_due == 0:
                continue
            ticks.append(
                _RunTick(
                    run=run,
                    plan=plan,
                    new_due=new_due,
                    retries_due=retries_due,
                    pools=self._pools(plan, run),
                )
            )
        return ticks

    def _plan(self, run: Run) -> RunPlan:
        """The run's plan, kept across ticks while it stays the same (start and expedite)."""
        assert run.started_at is not None
        key = (run.started_at, run.expedited_at)
        kept = self._plans.get(run.id)
        if kept is None or kept[0] != key:
            plan = RunPlan(run.spec, started_at=run.started_at, expedited_at=run.expedited_at)
            kept = self._plans[run.id] = (key, plan)
            while len(self._plans) > _PLANS_KEPT:
                self._plans.pop(next(iter(self._plans)))
        return kept[1]

    @staticmethod
    def _pools(plan: RunPlan, run: Run) -> set[str]:
        return {pool_of(cell) for cell in plan.cells()}

    def _allowances(
        self, ticks: list[_RunTick], capacities: dict[str, int]
    ) -> dict[str, dict[str, int]]:
        """Per pool, the fair split of its credit between the runs that can use it."""
        result: dict[str, dict[str, int]] = {}
        for pool in {pool for tick in ticks for pool in tick.pools}:
            capacity = capacities.get(pool, 0)
            claims = {}
            for tick in ticks:
                if pool not in tick.pools:
                    continue
                demand = tick.new_due + tick.retries_due
                limit = tick.run.spec.limits.max_concurrency
                if limit:
                    demand = min(demand, max(0, limit - tick.run.in_flight))
                claims[tick.run.id] = FairClaim(
                    weight=weight_of(tick.run.spec.priority),
                    in_flight=self._ledger.run_outstanding(tick.run.id, pool),
                    demand=min(demand, MAX_CLAIM),
                )
            # Outstanding work of runs not dispatching this tick still holds capacity.
            held = self._ledger.outstanding(pool) - sum(
                claim.in_flight for claim in claims.values()
            )
            result[pool] = fair_allowance(max(0, capacity - held), claims)
        return result

    async def _candidates(
        self, tick: _RunTick, budget: dict[str, int], now: datetime
    ) -> list[Claim]:
        run, spec = tick.run, tick.run.spec
        left = dict(budget)
        total_left = sum(left.values())
        if spec.limits.max_concurrency:
            total_left = min(total_left, spec.limits.max_concurrency - run.in_flight)
        engine_room = {
            engine: cap
            - sum(
                self._ledger.run_outstanding(run.id, pool)
                for pool in tick.pools
                if pool.split(".")[0] == engine
            )
            for engine, cap in spec.limits.engine_concurrency.items()
        }
        chosen: list[Claim] = []

        async def admit(candidate: Claim) -> bool:
            """True when the candidate is taken; False stops the run here for this tick."""
            nonlocal total_left
            if total_left <= 0 or left.get(candidate.pool, 0) <= 0:
                return False
            engine = candidate.cell.engine
            if engine in engine_room and engine_room[engine] <= 0:
                return False
            host = origin_of(candidate.target_url)
            if not self._hosts.take(
                run.id,
                host,
                rate=spec.limits.per_host_rate,
                burst=spec.limits.per_host_burst,
                now=now,
            ):
                wait = self._hosts.next_token_in(run.id, host, rate=spec.limits.per_host_rate)
                self._note_wake(now + max(wait, timedelta(milliseconds=20)))
                return False
            if spec.accounts is not None:
                candidate.account = await self._accounts.assign(spec.accounts, now=now)
                if candidate.account is None:
                    self._note_wake(now + timedelta(seconds=1))
                    return False
            chosen.append(candidate)
            left[candidate.pool] -= 1
            total_left -= 1
            if engine in engine_room:
                engine_room[engine] -= 1
            return True

        if tick.retries_due:
            for due in await self._jobs.due_retries(run.id, now, limit=min(MAX_CLAIM, total_left)):
                claim = Claim(
                    index=due.index,
                    target_url=due.target_url,
                    cell=due.cell,
                    pool=due.pool,
                    retry=due,
                )
                if not await admit(claim):
                    break
        cells = tick.plan.cells()
        single = cells[0] if len(cells) == 1 else None
        targets = spec.targets
        for index in range(run.next_index, run.next_index + min(tick.new_due, MAX_CLAIM)):
            # What plan.job(index) gives, without its due time (already known to have passed)
            # and, for a one-cell run, without looking the cell up.
            cell = single or tick.plan.matrix.cell_of(index)
            target = targets[index % len(targets)]
            if not await admit(
                Claim(index=index, target_url=target, cell=cell, pool=pool_of(cell))
            ):
                break
        return chosen

    def _note_wake(self, when: datetime) -> None:
        if self._next_wake is None or when < self._next_wake:
            self._next_wake = when

    def _envelope(
        self, run_id: str, spec: RunSpec, candidate: Claim, *, deadline: datetime
    ) -> JobEnvelope:
        return JobEnvelope(
            job_id=job_id(run_id, candidate.index),
            attempt=candidate.attempt,
            run_id=run_id,
            index=candidate.index,
            target_url=candidate.target_url,
            engine=candidate.cell.engine,
            session_timeout=spec.limits.session_timeout,
            deadline=deadline,
            allowed_hosts=self._allowed_hosts,
            steps=tuple(spec.steps),
            cell=candidate.cell,
            account=candidate.account or "",
            write_back_state=bool(spec.accounts and spec.accounts.write_back),
            artifacts=spec.artifacts,
            seed=spec.seed,
        )

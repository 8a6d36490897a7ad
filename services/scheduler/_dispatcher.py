"""The dispatcher: turns due jobs of running runs into job envelopes on JetStream.

Each tick, per pool: credit = live capacity - outstanding; the credit is split between running
runs by priority (fair share), then each run fills its allowance with due retries first and new
jobs of its plan after, in index order, subject to its own limits (max concurrency, per-engine
caps, per-host token buckets, host backoff) and account availability.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from nats.js import JetStreamContext
from sqlalchemy import Table, func, insert, select, update

from services.common import bus
from services.common.contracts import envelope_to_bytes
from services.common.spec import AccountSelector, RunSpec
from services.common.types import Cell, Geolocation, JobEnvelope
from services.scheduler._credit import CreditLedger
from services.scheduler._db import Database
from services.scheduler._fairshare import Claim, fair_allowance, weight_of
from services.scheduler._hosts import HostLimiter
from services.scheduler._models import JobRow, RunRow
from services.scheduler._planner import RunPlan
from services.scheduler._progress import RunProgressHub
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs import Run, RunStatus, RunStore

logger = logging.getLogger(__name__)

MAX_CLAIM = 500
# Plans of this many runs are kept between ticks (the oldest kept goes first).
_PLANS_KEPT = 256
PUBLISH_TIMEOUT = 5.0
IDLE_WAKE = timedelta(milliseconds=500)


_INSERT_JOBS = insert(cast(Table, JobRow.__table__))


class AccountAssigner(Protocol):
    async def assign(self, selector: AccountSelector, *, now: datetime) -> str | None: ...


@lru_cache(maxsize=4096)
def _cell_json(cell: Cell) -> dict[str, object]:
    return cell_to_json(cell)


def cell_to_json(cell: Cell) -> dict[str, object]:
    geo = cell.geolocation
    return {
        "device": cell.device,
        "locale": cell.locale,
        "timezone": cell.timezone,
        "geolocation": None
        if geo is None
        else {"latitude": geo.latitude, "longitude": geo.longitude, "accuracy": geo.accuracy},
        "engine": cell.engine,
        "labels": [list(pair) for pair in cell.labels],
    }


def cell_from_json(data: dict[str, Any]) -> Cell:
    geo = data.get("geolocation")
    return Cell(
        device=str(data.get("device", "")),
        locale=str(data.get("locale", "")),
        timezone=str(data.get("timezone", "")),
        geolocation=Geolocation(**geo) if isinstance(geo, dict) else None,
        engine=str(data.get("engine", "chromium")),
        labels=tuple((str(k), str(v)) for k, v in data.get("labels") or []),
    )


def pool_of(cell: Cell) -> str:
    return bus.pool_name(cell.engine, cell.labels)


@dataclass(slots=True)
class _Candidate:
    """A job the run would send next: a due retry (existing row) or a new index of the plan."""

    index: int
    target_url: str
    cell: Cell
    pool: str
    retry: JobRow | None = None
    account: str | None = None


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
        db: Database,
        runs: RunStore,
        registry: NodeRegistry,
        ledger: CreditLedger,
        js: JetStreamContext,
        hub: RunProgressHub,
        hosts: HostLimiter,
        allowed_hosts: list[str],
        interval: timedelta,
        recovery_grace: timedelta,
        accounts: AccountAssigner | None = None,
        ensure_pool: Callable[[str], object] | None = None,
    ) -> None:
        self._db = db
        self._runs = runs
        self._registry = registry
        self._ledger = ledger
        self._js = js
        self._hub = hub
        self._hosts = hosts
        self._allowed_hosts = tuple(allowed_hosts)
        self._interval = interval.total_seconds()
        self._recovery_grace = recovery_grace
        self.accounts = accounts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_wake: datetime | None = None
        # Envelopes whose publish failed; retried before anything new goes out.
        self._unpublished: list[JobEnvelope] = []
        self._retries_checked = float("-inf")
        self._plans: dict[str, tuple[tuple[datetime, datetime | None], RunPlan]] = {}

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        await self._load_outstanding()
        self._task = asyncio.create_task(self._loop(), name="dispatcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _load_outstanding(self) -> None:
        async with self._db.read() as session:
            rows = await session.execute(
                select(JobRow.run_id, JobRow.pool, func.count())
                .where(JobRow.status == "dispatched")
                .group_by(JobRow.run_id, JobRow.pool)
            )
            self._ledger.reset([(run_id, pool, count) for run_id, pool, count in rows])

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
            await self._publish(retry)
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
            candidates = await self._candidates(tick, budget, now)
            if not candidates:
                continue
            envelopes = await self._claim(tick, candidates, now)
            if not envelopes:
                continue
            for pool, count in Counter(pool_of(e.cell) for e in envelopes).items():
                self._ledger.took(pool, count, run_id=tick.run.id)
            await self._publish(envelopes)
            self._hub.changed([tick.run.id])
            sent += len(envelopes)
        return sent

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
            async with self._db.read() as session:
                retries = dict(
                    (
                        await session.execute(
                            select(JobRow.run_id, func.count())
                            .where(JobRow.status == "retry_wait", JobRow.retry_at <= now)
                            .group_by(JobRow.run_id)
                        )
                    ).all()
                )
                next_retry = await session.scalar(
                    select(func.min(JobRow.retry_at)).where(
                        JobRow.status == "retry_wait", JobRow.retry_at > now
                    )
                )
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
                claims[tick.run.id] = Claim(
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
    ) -> list[_Candidate]:
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
        chosen: list[_Candidate] = []

        async def admit(candidate: _Candidate) -> bool:
            """True when the candidate is taken; False stops the run here for this tick."""
            nonlocal total_left
            if total_left <= 0 or left.get(candidate.pool, 0) <= 0:
                return False
            engine = candidate.cell.engine
            if engine in engine_room and engine_room[engine] <= 0:
                return False
            host = urlsplit(candidate.target_url).hostname or ""
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
                if self.accounts is None:
                    return False
                candidate.account = await self.accounts.assign(spec.accounts, now=now)
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
            async with self._db.read() as session:
                rows = list(
                    await session.scalars(
                        select(JobRow)
                        .where(
                            JobRow.run_id == run.id,
                            JobRow.status == "retry_wait",
                            JobRow.retry_at <= now,
                        )
                        .order_by(JobRow.retry_at)
                        .limit(min(MAX_CLAIM, total_left))
                    )
                )
            for row in rows:
                cell = cell_from_json(row.cell)
                if not await admit(
                    _Candidate(row.index, row.target_url, cell, row.pool, retry=row)
                ):
                    break
        cells = tick.plan.cells()
        single = cells[0] if len(cells) == 1 else None
        targets = spec.targets
        for index in range(run.next_index, run.next_index + min(tick.new_due, MAX_CLAIM)):
            # What plan.job(index) gives, without its due time (already known to have passed)
            # and, for a one-cell run, without looking the cell up.
            cell = single or tick.plan.matrix.cell_of(index)
            target = targets[index % len(targets)]
            if not await admit(_Candidate(index, target, cell, pool_of(cell))):
                break
        return chosen

    def _note_wake(self, when: datetime) -> None:
        if self._next_wake is None or when < self._next_wake:
            self._next_wake = when

    def _envelope(
        self, run: Run, candidate: _Candidate, *, attempt: int, deadline: datetime
    ) -> JobEnvelope:
        spec: RunSpec = run.spec
        return JobEnvelope(
            job_id=f"{run.id}-{candidate.index}",
            attempt=attempt,
            run_id=run.id,
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

    async def _claim(
        self, tick: _RunTick, candidates: list[_Candidate], now: datetime
    ) -> list[JobEnvelope]:
        """Advance the run's cursor, create new job rows and re-arm retries, in one transaction."""
        run = tick.run
        deadline = now + run.spec.limits.session_timeout + self._recovery_grace
        new = [c for c in candidates if c.retry is None]
        retries = [c for c in candidates if c.retry is not None]
        async with self._db.write() as session:
            claimed = await session.scalar(
                update(RunRow)
                .where(
                    RunRow.id == run.id,
                    RunRow.status == RunStatus.RUNNING,
                    RunRow.next_index == run.next_index,
                )
                .values(
                    next_index=RunRow.next_index + len(new),
                    dispatched=RunRow.dispatched + len(candidates),
                    in_flight=RunRow.in_flight + len(candidates),
                    retrying=RunRow.retrying - len(retries),
                )
                .returning(RunRow.id)
            )
            if claimed is None:
                return []
            envelopes = []
            for candidate in retries:
                assert candidate.retry is not None
                attempt = candidate.retry.attempt + 1
                rearmed = await session.execute(
                    update(JobRow)
                    .where(JobRow.id == candidate.retry.id, JobRow.status == "retry_wait")
                    .values(
                        status="dispatched",
                        attempt=attempt,
                        dispatched_at=now,
                        deadline=deadline,
                        retry_at=None,
                        account=candidate.account,
                    )
                )
                if getattr(rearmed, "rowcount", 1) != 1:
                    raise RuntimeError(f"job {candidate.retry.id} left retry_wait during a claim")
                envelopes.append(self._envelope(run, candidate, attempt=attempt, deadline=deadline))
            rows = []
            for candidate in new:
                envelope = self._envelope(run, candidate, attempt=1, deadline=deadline)
                envelopes.append(envelope)
                rows.append(
                    {
                        "id": envelope.job_id,
                        "run_id": run.id,
                        "index": candidate.index,
                        "attempt": 1,
                        "status": "dispatched",
                        "pool": candidate.pool,
                        "target_url": candidate.target_url,
                        "cell": _cell_json(candidate.cell),
                        "account": candidate.account,
                        "outcome": None,
                        "error": None,
                        "dispatched_at": now,
                        "deadline": deadline,
                        "retry_at": None,
                        "finished_at": None,
                    }
                )
            if rows:
                # One executemany of a cached statement, not an ORM object per job.
                await session.execute(_INSERT_JOBS, rows)
        return envelopes

    async def _publish(self, envelopes: list[JobEnvelope]) -> None:
        """Publish all, then wait for their acks together: the stream's acks pipeline instead
        of one request-reply per envelope. What fails or times out is retried next tick (the
        message id makes a repeat harmless)."""
        sent: list[tuple[JobEnvelope, asyncio.Future[Any]]] = []
        failed: list[tuple[JobEnvelope, BaseException]] = []
        for envelope in envelopes:
            try:
                sent.append(
                    (
                        envelope,
                        await self._js.publish_async(
                            bus.pool_subject(pool_of(envelope.cell)),
                            envelope_to_bytes(envelope),
                            headers={
                                "Nats-Msg-Id": bus.message_id(envelope.job_id, envelope.attempt)
                            },
                        ),
                    )
                )
            except Exception as refused:
                failed.append((envelope, refused))
        if sent:
            _, late = await asyncio.wait([ack for _, ack in sent], timeout=PUBLISH_TIMEOUT)
            for ack in late:
                ack.cancel()
            for envelope, ack in sent:
                if ack.cancelled():
                    failed.append((envelope, TimeoutError("no ack from the stream")))
                elif (nacked := ack.exception()) is not None:
                    failed.append((envelope, nacked))
        if failed:
            first, reason = failed[0]
            logger.warning(
                "publish of %d envelope(s) failed, e.g. %s: %s; will retry",
                len(failed),
                first.job_id,
                reason or type(reason).__name__,
            )
            self._unpublished.extend(envelope for envelope, _ in failed)

    # -- deadlines ---------------------------------------------------------------------------

    async def extend_deadlines(self, job_ids: list[str], now: datetime | None = None) -> int:
        """A node says these jobs still run: push their deadlines out by the recovery grace."""
        now = now or datetime.now(UTC)
        async with self._db.write() as session:
            result = await session.execute(
                update(JobRow)
                .where(
                    JobRow.id.in_(job_ids),
                    JobRow.status == "dispatched",
                    JobRow.deadline < now + self._recovery_grace,
                )
                .values(deadline=now + self._recovery_grace)
            )
        return int(getattr(result, "rowcount", 0) or 0)

    async def recover_overdue(self, now: datetime | None = None) -> int:
        """Jobs dispatched but not reported by their deadline count as a lost attempt.

        They go back to retry_wait, due at once (or end `dead` after their last attempt), and
        the normal dispatch path sends them again with the next attempt number.
        """
        now = now or datetime.now(UTC)
        async with self._db.write() as session:
            overdue = list(
                await session.scalars(
                    select(JobRow)
                    .where(JobRow.status == "dispatched", JobRow.deadline < now)
                    .limit(MAX_CLAIM)
                    .with_for_update()
                )
            )
            if not overdue:
                return 0
            retrying: Counter[str] = Counter()
            dead: Counter[str] = Counter()
            for row in overdue:
                spec = await self._runs.spec(row.run_id)
                row.outcome = "lost"
                row.error = "no result reported by the job's deadline"
                if row.attempt < spec.retry.max_attempts:
                    row.status = "retry_wait"
                    row.retry_at = now
                    retrying[row.run_id] += 1
                else:
                    row.status = "dead"
                    row.finished_at = now
                    dead[row.run_id] += 1
            for run_id in retrying.keys() | dead.keys():
                await session.execute(
                    update(RunRow)
                    .where(RunRow.id == run_id)
                    .values(
                        in_flight=RunRow.in_flight - retrying[run_id] - dead[run_id],
                        retrying=RunRow.retrying + retrying[run_id],
                        failed=RunRow.failed + dead[run_id],
                        dead=RunRow.dead + dead[run_id],
                    )
                )
        for row in overdue:
            self._ledger.returned(row.pool, 1, run_id=row.run_id)
        logger.warning("recovered %d overdue jobs", len(overdue))
        runs = {row.run_id for row in overdue}
        if dead:
            await self._runs.complete_finished(list(runs))
        self._hub.changed(runs)
        self.wake()
        return len(overdue)

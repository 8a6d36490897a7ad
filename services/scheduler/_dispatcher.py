"""The dispatcher: turns due jobs of running runs into job envelopes on JetStream, within credit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext
from sqlalchemy import func, select, update

from services.common import bus
from services.common.contracts import envelope_to_bytes
from services.common.types import JobEnvelope
from services.scheduler._credit import CreditLedger
from services.scheduler._db import Database
from services.scheduler._models import JobRow, RunRow
from services.scheduler._planner import PacingPlan
from services.scheduler._progress import RunProgressHub
from services.scheduler._registry import NodeRegistry
from services.scheduler._runs import Run, RunStatus, RunStore

logger = logging.getLogger(__name__)

MAX_CLAIM = 500
PUBLISH_TIMEOUT = 5.0


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
        allowed_hosts: list[str],
        interval: timedelta,
        recovery_grace: timedelta,
    ) -> None:
        self._db = db
        self._runs = runs
        self._registry = registry
        self._ledger = ledger
        self._js = js
        self._hub = hub
        self._allowed_hosts = tuple(allowed_hosts)
        self._interval = interval.total_seconds()
        self._recovery_grace = recovery_grace
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Envelopes whose publish failed; retried before anything new goes out.
        self._unpublished: list[JobEnvelope] = []

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
                select(JobRow.pool, func.count())
                .where(JobRow.status == "dispatched")
                .group_by(JobRow.pool)
            )
            self._ledger.reset({pool: count for pool, count in rows})

    async def _loop(self) -> None:
        while True:
            try:
                sent = await self.tick()
            except Exception:
                logger.exception("dispatch tick failed")
                sent = 0
            if sent == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._interval * 10)
                self._wake.clear()
            else:
                await asyncio.sleep(0)

    async def tick(self) -> int:
        """Publish what credit allows now; returns how many envelopes went out."""
        if self._unpublished:
            retry, self._unpublished = self._unpublished, []
            await self._publish(retry)
        credits: dict[str, int] = {}
        sent = 0
        now = datetime.now(UTC)
        for run in await self._runs.running():
            pool = run.spec.engine
            if pool not in credits:
                credits[pool] = self._ledger.credit(pool, self._registry.capacity(pool))
            count = min(credits[pool], self._due(run, now) - run.next_index, MAX_CLAIM)
            if run.spec.limits.max_concurrency:
                count = min(count, run.spec.limits.max_concurrency - run.in_flight)
            if count <= 0:
                continue
            envelopes = await self._claim(run, count, now)
            if not envelopes:
                continue
            credits[pool] -= len(envelopes)
            self._ledger.took(pool, len(envelopes))
            await self._publish(envelopes)
            self._hub.changed([run.id])
            sent += len(envelopes)
        return sent

    @staticmethod
    def _due(run: Run, now: datetime) -> int:
        assert run.started_at is not None
        return PacingPlan(run.spec, started_at=run.started_at).due_count(now)

    async def _claim(self, run: Run, count: int, now: datetime) -> list[JobEnvelope]:
        """Advance the run's cursor and create the job rows, in one transaction."""
        plan = PacingPlan(run.spec, started_at=run.started_at or now)
        deadline = now + run.spec.limits.session_timeout + self._recovery_grace
        async with self._db.write() as session:
            claimed = await session.scalar(
                update(RunRow)
                .where(
                    RunRow.id == run.id,
                    RunRow.status == RunStatus.RUNNING,
                    RunRow.next_index == run.next_index,
                )
                .values(
                    next_index=RunRow.next_index + count,
                    dispatched=RunRow.dispatched + count,
                    in_flight=RunRow.in_flight + count,
                )
                .returning(RunRow.next_index)
            )
            if claimed is None:
                return []
            jobs = [plan.job(index) for index in range(run.next_index, run.next_index + count)]
            envelopes = [
                JobEnvelope(
                    job_id=f"{run.id}-{job.index}",
                    attempt=1,
                    run_id=run.id,
                    index=job.index,
                    target_url=job.target_url,
                    engine=run.spec.engine,
                    session_timeout=run.spec.limits.session_timeout,
                    deadline=deadline,
                    allowed_hosts=self._allowed_hosts,
                )
                for job in jobs
            ]
            session.add_all(
                JobRow(
                    id=envelope.job_id,
                    run_id=run.id,
                    index=envelope.index,
                    attempt=1,
                    status="dispatched",
                    pool=run.spec.engine,
                    target_url=envelope.target_url,
                    outcome=None,
                    dispatched_at=now,
                    deadline=deadline,
                    finished_at=None,
                )
                for envelope in envelopes
            )
        return envelopes

    async def _publish(self, envelopes: list[JobEnvelope]) -> None:
        async def publish_one(envelope: JobEnvelope) -> None:
            try:
                await self._js.publish(
                    bus.pool_subject(envelope.engine),
                    envelope_to_bytes(envelope),
                    headers={"Nats-Msg-Id": bus.message_id(envelope.job_id, envelope.attempt)},
                    timeout=PUBLISH_TIMEOUT,
                )
            except Exception as error:
                logger.warning("publish of %s failed (%s); will retry", envelope.job_id, error)
                self._unpublished.append(envelope)

        await asyncio.gather(*(publish_one(envelope) for envelope in envelopes))

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
        """Re-dispatch, as the next attempt, jobs dispatched but not reported by their deadline."""
        now = now or datetime.now(UTC)
        async with self._db.write() as session:
            overdue = list(
                await session.scalars(
                    select(JobRow)
                    .where(JobRow.status == "dispatched", JobRow.deadline < now)
                    .limit(MAX_CLAIM)
                )
            )
            if not overdue:
                return 0
            runs: dict[str, timedelta] = {}
            for run_id in {row.run_id for row in overdue}:
                run_row = await session.get(RunRow, run_id)
                assert run_row is not None
                runs[run_id] = Run.from_row(run_row).spec.limits.session_timeout
            envelopes = []
            for row in overdue:
                spec_timeout = runs[row.run_id]
                row.attempt += 1
                row.dispatched_at = now
                row.deadline = now + spec_timeout + self._recovery_grace
                envelopes.append(
                    JobEnvelope(
                        job_id=row.id,
                        attempt=row.attempt,
                        run_id=row.run_id,
                        index=row.index,
                        target_url=row.target_url,
                        engine=row.pool,
                        session_timeout=spec_timeout,
                        deadline=row.deadline,
                        allowed_hosts=self._allowed_hosts,
                    )
                )
            for run_id in runs:
                count = sum(1 for row in overdue if row.run_id == run_id)
                await session.execute(
                    update(RunRow)
                    .where(RunRow.id == run_id)
                    .values(dispatched=RunRow.dispatched + count)
                )
        logger.warning("recovering %d overdue jobs", len(envelopes))
        await self._publish(envelopes)
        self._hub.changed(runs)
        return len(envelopes)

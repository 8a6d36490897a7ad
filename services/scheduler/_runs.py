"""Runs: create, start, pause, resume, expedite; read (O(1): counters are kept incrementally).

What follows from jobs — counters, completion, cancel — is the job store's (jobs/). Each
transition here emits its event (_events.py) in its own transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError

from services.common.errors import FailedPrecondition, NotFound
from services.common.spec import RunSpec
from services.scheduler._db import Database
from services.scheduler._events import (
    RunCreated,
    RunExpedited,
    RunPaused,
    RunResumed,
    RunStarted,
    emit,
)
from services.scheduler._models import RunRow
from services.scheduler._run import Run, RunStatus

# Specs kept in memory (the first cached leaves first); a spec is a few KB.
SPEC_CACHE_SIZE = 10_000


class RunStore:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._specs: dict[str, RunSpec] = {}

    async def create(
        self,
        spec: RunSpec,
        *,
        start: bool,
        labels: dict[str, str] | None = None,
        request_id: str = "",
        created_by: str = "",
    ) -> Run:
        """A new run; with a `request_id` already used, the run that request created (a
        client retrying a create after a timeout gets the first run, not a second one)."""
        if request_id:
            existing = await self._by_request_id(request_id)
            if existing is not None:
                return existing
        now = datetime.now(UTC)
        row = RunRow(
            id=uuid.uuid4().hex[:16],
            name=spec.name or "run",
            status=RunStatus.RUNNING if start else RunStatus.DRAFT,
            priority=spec.priority,
            spec=spec.to_json(),
            planned=spec.sessions,
            next_index=0,
            dispatched=0,
            succeeded=0,
            failed=0,
            retrying=0,
            in_flight=0,
            dead=0,
            cancelled=0,
            expedited_at=None,
            created_at=now,
            started_at=now if start else None,
            finished_at=None,
            labels=labels or None,
            request_id=request_id or None,
            created_by=created_by or None,
        )
        run = Run.from_row(row, spec=spec)
        try:
            async with self._db.write() as session:
                session.add(row)
                emit(session, RunCreated(run), *([RunStarted(run)] if start else []))
        except IntegrityError:
            # The same request_id, created concurrently: answer with the run that won.
            existing = await self._by_request_id(request_id) if request_id else None
            if existing is None:
                raise
            return existing
        self._specs[run.id] = spec
        return run

    async def _by_request_id(self, request_id: str) -> Run | None:
        async with self._db.read() as session:
            row = await session.scalar(select(RunRow).where(RunRow.request_id == request_id))
            return None if row is None else self.from_row(row)

    async def start(self, run_id: str) -> Run:
        async with self._db.write() as session:
            row = await session.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFound("run", run_id)
            if row.status == RunStatus.RUNNING:
                return self.from_row(row)
            if row.status != RunStatus.DRAFT:
                raise FailedPrecondition(
                    f"run {run_id} is {row.status}; only a draft run can be started"
                )
            row.status = RunStatus.RUNNING
            row.started_at = datetime.now(UTC)
            run = self.from_row(row)
            emit(session, RunStarted(run))
        return run

    async def _transition(
        self,
        run_id: str,
        allowed: tuple[RunStatus, ...],
        verb: str,
        event: type[RunPaused | RunResumed | RunExpedited],
        **values: object,
    ) -> Run:
        async with self._db.write() as session:
            row = await session.get(RunRow, run_id, with_for_update=True)
            if row is None:
                raise NotFound("run", run_id)
            if row.status not in allowed:
                raise FailedPrecondition(
                    f"run {run_id} is {row.status}; only a {' or '.join(allowed)} run can be {verb}"
                )
            changed = any(getattr(row, name) != value for name, value in values.items())
            for name, value in values.items():
                setattr(row, name, value)
            run = self.from_row(row)
            if changed:
                emit(session, event(run))
        return run

    async def pause(self, run_id: str) -> Run:
        return await self._transition(
            run_id,
            (RunStatus.RUNNING, RunStatus.PAUSED),
            "paused",
            RunPaused,
            status=RunStatus.PAUSED,
        )

    async def resume(self, run_id: str) -> Run:
        return await self._transition(
            run_id,
            (RunStatus.PAUSED, RunStatus.RUNNING),
            "resumed",
            RunResumed,
            status=RunStatus.RUNNING,
        )

    async def expedite(self, run_id: str) -> Run:
        return await self._transition(
            run_id,
            (RunStatus.RUNNING, RunStatus.PAUSED, RunStatus.DRAFT),
            "expedited",
            RunExpedited,
            expedited_at=datetime.now(UTC),
        )

    async def spec(self, run_id: str) -> RunSpec:
        """A run's spec (immutable once created), cached."""
        spec = self._specs.get(run_id)
        return spec if spec is not None else (await self.get(run_id)).spec

    async def get(self, run_id: str) -> Run:
        async with self._db.read() as session:
            row = await session.get(RunRow, run_id)
            if row is None:
                raise NotFound("run", run_id)
            return self.from_row(row)

    async def list_runs(
        self,
        *,
        limit: int,
        statuses: Sequence[RunStatus] = (),
        name_prefix: str = "",
        labels: Mapping[str, str] | None = None,
        after: tuple[datetime, str] | None = None,
    ) -> list[Run]:
        """Newest first (creation time, then id), filtered; `after` continues a listing past
        the (created_at, id) of its last run."""
        statement = select(RunRow)
        if statuses:
            statement = statement.where(RunRow.status.in_([s.value for s in statuses]))
        if name_prefix:
            escaped = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            statement = statement.where(RunRow.name.like(f"{escaped}%", escape="\\"))
        for key, value in (labels or {}).items():
            statement = statement.where(RunRow.labels[key].as_string() == value)
        if after is not None:
            created, run_id = after
            statement = statement.where(
                or_(
                    RunRow.created_at < created,
                    and_(RunRow.created_at == created, RunRow.id < run_id),
                )
            )
        statement = statement.order_by(RunRow.created_at.desc(), RunRow.id.desc()).limit(limit)
        async with self._db.read() as session:
            return [self.from_row(row) for row in await session.scalars(statement)]

    async def running(self) -> list[Run]:
        """Runs that may still dispatch, highest priority first, then oldest."""
        async with self._db.read() as session:
            rows = await session.scalars(
                select(RunRow)
                .where(RunRow.status == RunStatus.RUNNING)
                .order_by(RunRow.priority.desc(), RunRow.created_at)
            )
            return [self.from_row(row) for row in rows]

    def from_row(self, row: RunRow) -> Run:
        """Validating a stored spec is the costly part of a read; specs never change, so keep them."""
        spec = self._specs.get(row.id)
        if spec is None:
            run = Run.from_row(row)
            self._specs[row.id] = run.spec
            while len(self._specs) > SPEC_CACHE_SIZE:
                self._specs.pop(next(iter(self._specs)))
            return run
        return Run.from_row(row, spec=spec)

    def forget(self, run_id: str) -> None:
        """A final run's spec need not be kept."""
        self._specs.pop(run_id, None)


__all__ = ["Run", "RunStatus", "RunStore"]

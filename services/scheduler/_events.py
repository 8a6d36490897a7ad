"""The scheduler's state changes as typed events on one in-process stream, in commit order.

Whatever changes a run, a job or a node emits its event inside the transaction that makes the
change (`emit(session, event)`); the database publishes a transaction's events right after it
commits, under one lock, so subscribers see them in the order the changes were committed and
never see a change that was rolled back. Nodes live in memory: the registry publishes their
events itself, after persisting them.

Subscribers are plain callables run in order on the event loop: they must be quick and must not
block (the progress hub marks runs dirty, the dispatcher moves credit and wakes, metrics count).
A subscriber that raises is logged and the others still run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from services.common.types import SessionResult
    from services.scheduler._registry import NodeRecord
    from services.scheduler._runs import Run

logger = logging.getLogger(__name__)

_PENDING = "smartfleet.events"


# -- runs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunCreated:
    run: Run


@dataclass(frozen=True, slots=True)
class RunStarted:
    run: Run


@dataclass(frozen=True, slots=True)
class RunPaused:
    run: Run


@dataclass(frozen=True, slots=True)
class RunResumed:
    run: Run


@dataclass(frozen=True, slots=True)
class RunExpedited:
    run: Run


@dataclass(frozen=True, slots=True)
class RunCompleted:
    """Every planned job is final; `run` carries the final counters."""

    run: Run


@dataclass(frozen=True, slots=True)
class RunCancelled:
    """`withdrawn`: jobs that were out on the bus when the run was cancelled, per pool."""

    run: Run
    withdrawn: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunFailed:
    run: Run
    reason: str


# -- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobsDispatched:
    """Jobs of one run claimed for the bus, per pool."""

    run_id: str
    by_pool: dict[str, int]


@dataclass(frozen=True, slots=True)
class JobsReleased:
    """Jobs no longer out on the bus (reported, recovered or withdrawn), per (run, pool)."""

    by_run_pool: Counter[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ResultsStored:
    """Results stored for the first time (repeats of a stored attempt are not here)."""

    results: tuple[SessionResult, ...]


@dataclass(frozen=True, slots=True)
class JobDead:
    """A job used up its attempts; `outcome` and `error` are those of its last attempt."""

    run_id: str
    job_id: str
    index: int
    attempt: int
    outcome: str
    error: str


@dataclass(frozen=True, slots=True)
class RunsProgressed:
    """Counters of these runs changed (jobs dispatched, results stored, jobs recovered)."""

    run_ids: frozenset[str]


# -- nodes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeRegistered:
    node: NodeRecord


@dataclass(frozen=True, slots=True)
class NodeLost:
    node: NodeRecord


@dataclass(frozen=True, slots=True)
class NodeDrained:
    node: NodeRecord


@dataclass(frozen=True, slots=True)
class FleetChanged:
    """Capacity may have changed: a node's state or slots moved (the dispatcher looks again)."""


RunEvent = (
    RunCreated
    | RunStarted
    | RunPaused
    | RunResumed
    | RunExpedited
    | RunCompleted
    | RunCancelled
    | RunFailed
)
Event = (
    RunEvent
    | JobsDispatched
    | JobsReleased
    | ResultsStored
    | JobDead
    | RunsProgressed
    | NodeRegistered
    | NodeLost
    | NodeDrained
    | FleetChanged
)
RUN_EVENTS: tuple[type[Any], ...] = (
    RunCreated,
    RunStarted,
    RunPaused,
    RunResumed,
    RunExpedited,
    RunCompleted,
    RunCancelled,
    RunFailed,
)

Subscriber = Callable[[Any], None]


def emit(session: AsyncSession, *events: Event) -> None:
    """Queue events with the transaction of `session`: published once it commits, else never."""
    session.info.setdefault(_PENDING, []).extend(events)


def pending(session: AsyncSession) -> list[Event]:
    """The events queued on `session`, taken off it (for the database to publish at commit)."""
    return session.info.pop(_PENDING, None) or []


def run_ids_of(event: Event) -> Iterable[str]:
    """The runs an event is about (for subscribers that follow runs)."""
    if isinstance(event, RUN_EVENTS):
        return (event.run.id,)
    if isinstance(event, RunsProgressed):
        return event.run_ids
    if isinstance(event, JobsDispatched | JobDead):
        return (event.run_id,)
    return ()


class EventStream:
    """Subscribers by event type; `publish` calls each subscriber of each event in order."""

    def __init__(self) -> None:
        self._subscribers: list[tuple[tuple[type[Any], ...], Subscriber]] = []

    def subscribe(self, subscriber: Subscriber, *types: type[Any]) -> None:
        """`subscriber(event)` for every event of `types` (all events when none are given)."""
        self._subscribers.append((types, subscriber))

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            for types, subscriber in self._subscribers:
                if types and not isinstance(event, types):
                    continue
                try:
                    subscriber(event)
                except Exception:
                    logger.exception(
                        "event subscriber %r failed on %s", subscriber, type(event).__name__
                    )

"""The plan of a run: a pure function of (spec, seed) giving job i's target and due time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.spec import RunSpec


@dataclass(frozen=True, slots=True)
class PlannedJob:
    index: int
    target_url: str
    due: datetime


class PacingPlan:
    """`fast` pacing: every job is due when the run starts; targets are taken round-robin."""

    def __init__(self, spec: RunSpec, *, started_at: datetime) -> None:
        self._spec = spec
        self._started_at = started_at

    def job(self, index: int) -> PlannedJob:
        if not 0 <= index < self._spec.sessions:
            raise IndexError(f"job index {index} outside 0..{self._spec.sessions - 1}")
        targets = self._spec.targets
        return PlannedJob(
            index=index, target_url=targets[index % len(targets)], due=self._started_at
        )

    def due_count(self, now: datetime) -> int:
        """How many jobs (a prefix of the run) are due at `now`."""
        return self._spec.sessions if now >= self._started_at else 0

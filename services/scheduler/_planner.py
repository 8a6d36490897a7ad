"""The plan of a run: a pure function of (spec, seed) giving job i's target, cell and due time.

Nothing is materialised per job: building a plan is O(cells + phases) (cached across dispatch
ticks), and any job can be asked for on its own, so a run of a million sessions costs the
same memory as a run of ten.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.common.spec import RunSpec
from services.common.types import Cell
from services.scheduler._matrix import MatrixPlan
from services.scheduler._pacing import PacingPlan, pacing_plan


@dataclass(frozen=True, slots=True)
class PlannedJob:
    index: int
    target_url: str
    due: datetime
    cell: Cell


class RunPlan:
    """Job i of a run: target round-robin, matrix cell interleaved, due time per the pacing."""

    def __init__(
        self, spec: RunSpec, *, started_at: datetime, expedited_at: datetime | None = None
    ) -> None:
        self._spec = spec
        self.matrix = MatrixPlan(spec)
        self.pacing: PacingPlan = pacing_plan(
            spec, started_at=started_at, expedited_at=expedited_at
        )

    def cells(self) -> list[Cell]:
        """The cells that get at least one session, in cell order."""
        return [cell for cell, count in self.matrix.counts() if count]

    def job(self, index: int) -> PlannedJob:
        if not 0 <= index < self._spec.sessions:
            raise IndexError(f"job index {index} outside 0..{self._spec.sessions - 1}")
        targets = self._spec.targets
        return PlannedJob(
            index=index,
            target_url=targets[index % len(targets)],
            due=self.pacing.due(index),
            cell=self.matrix.cell_of(index),
        )

    def due_count(self, now: datetime) -> int:
        """How many jobs (a prefix of the run) are due at `now`."""
        return self.pacing.due_count(now)

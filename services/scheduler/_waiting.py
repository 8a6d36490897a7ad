"""Why a running run sends nothing: the cells of it no ready node can serve."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from services.common import bus
from services.common.types import Cell
from services.scheduler._planner import RunPlan
from services.scheduler._registry import NodeRegistry
from services.scheduler._run import Run

# Cells of this many runs are kept (the oldest kept goes first).
_KEPT = 256


def _describe(cell: Cell) -> str:
    return ", ".join([f"engine={cell.engine}", *(f"{k}={v}" for k, v in cell.labels)])


class WaitingReasons:
    """`leading()`: only the leader knows the fleet (a standby's registry is empty), so only
    it says why a run waits."""

    def __init__(self, registry: NodeRegistry, *, leading: Callable[[], bool]) -> None:
        self._registry = registry
        self._leading = leading
        self._cells: dict[str, list[Cell]] = {}

    def of(self, run: Run) -> str:
        """`no node serves engine=webkit` for a running run with work left whose cells no ready
        node serves; "" when every cell has one (it may still wait for free slots, its pacing
        or its limits)."""
        if (run.next_index >= run.planned and not run.retrying) or not self._leading():
            return ""
        cells = self._cells.get(run.id)
        if cells is None:
            plan = RunPlan(run.spec, started_at=run.started_at or datetime.now(UTC))
            cells = self._cells[run.id] = plan.cells()
            while len(self._cells) > _KEPT:
                self._cells.pop(next(iter(self._cells)))
        served = self._registry.pools()
        every = {_describe(cell) for cell in cells}
        missing = sorted(
            {
                _describe(cell)
                for cell in cells
                if bus.pool_name(cell.engine, cell.labels) not in served
            }
        )
        if not missing:
            return ""
        reason = "no node serves " + "; ".join(missing)
        return reason + (" (the other cells run)" if len(missing) < len(every) else "")

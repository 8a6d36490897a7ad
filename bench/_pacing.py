"""How close window-paced sessions start to their planned time."""

from __future__ import annotations

from bench._fleet import Fleet, spec
from services.common.contracts import from_timestamp, spec_data_from_pb
from services.common.spec import parse_spec
from services.scheduler._planner import RunPlan
from smartfleet.v1 import runs_pb2


async def pacing_errors_ms(
    fleet: Fleet, url: str, *, sessions: int, window_s: int, seed: int = 42
) -> tuple[list[float], runs_pb2.Run]:
    """|actual session start - planned start| for every result of a window-paced run."""
    final, _ = await fleet.run_to_end(
        spec("bench-pacing", [url], sessions, window_s=window_s, seed=seed)
    )
    run = await fleet.get(final.id)
    started_at = from_timestamp(run.started_at)
    assert started_at is not None
    plan = RunPlan(parse_spec(spec_data_from_pb(run.spec)), started_at=started_at)
    errors = []
    for result in await fleet.results(run.id):
        actual = from_timestamp(result.started_at)
        assert actual is not None
        errors.append(abs((actual - plan.job(result.index).due).total_seconds()) * 1000)
    return errors, final

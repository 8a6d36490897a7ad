"""Pacing plans: due times as a pure function of (spec, seed), monotone and invertible."""

from __future__ import annotations

import itertools
import math
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.common.spec import RunSpec, parse_spec
from services.scheduler._pacing import PacingPlan, PhasesPacing, pacing_plan
from services.scheduler._planner import RunPlan

LOCAL = "http://127.0.0.1:8080/"
START = datetime(2025, 3, 29, 12, 0, 0, 123_456, tzinfo=UTC)


def make_spec(sessions: int, pacing: dict[str, Any], **extra: Any) -> RunSpec:
    return parse_spec({"targets": [LOCAL], "sessions": sessions, "pacing": pacing, **extra})


def plan_of(spec: RunSpec, **kwargs: Any) -> PacingPlan:
    return pacing_plan(spec, started_at=kwargs.pop("started_at", START), **kwargs)


def seconds(plan: PacingPlan, index: int) -> float:
    return (plan.due(index) - START).total_seconds()


def one_hour(hour: int) -> list[float]:
    return [1.0 if h == hour else 0.0 for h in range(24)]


phase = st.fixed_dictionaries(
    {
        "duration": st.integers(min_value=1, max_value=600).map(lambda s: f"{s}s"),
        "arrival_rate": st.sampled_from([0, 0.5, 1, 3.25, 10, 1000]),
    },
    optional={"ramp_to": st.sampled_from([0, 0.1, 2, 10, 250])},
)


@st.composite
def paced_specs(draw: st.DrawFn) -> RunSpec:
    """Window (with or without diurnal) and phases specs with up to 2,000 sessions."""
    seed = draw(st.integers(min_value=0, max_value=2**64 - 1))
    mode = draw(st.sampled_from(["window", "diurnal", "phases"]))
    if mode == "phases":
        phases = draw(st.lists(phase, min_size=1, max_size=5))
        total = sum(parse_spec_phase_arrivals(p) for p in phases)
        if total < 1:
            phases.append({"duration": "1s", "arrival_rate": 5})
            total += 5
        sessions = draw(st.integers(min_value=1, max_value=min(2000, math.ceil(total))))
        return make_spec(sessions, {"mode": "phases", "phases": phases}, seed=seed)
    pacing: dict[str, Any] = {
        "mode": "window",
        "window": f"{draw(st.integers(min_value=1, max_value=31 * 86_400))}s",
        "jitter": draw(st.sampled_from([None, 0, 0.3, 1])),
    }
    if mode == "diurnal":
        hourly = draw(st.lists(st.sampled_from([0, 0, 1, 2.5, 7]), min_size=24, max_size=24))
        if sum(hourly) == 0:
            hourly[0] = 1
        zone = draw(
            st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kolkata", "Australia/Lord_Howe"])
        )
        pacing["diurnal"] = {"timezone": zone, "hourly_weights": hourly}
    sessions = draw(st.integers(min_value=1, max_value=2000))
    return make_spec(sessions, pacing, seed=seed)


def parse_spec_phase_arrivals(data: dict[str, Any]) -> float:
    rate = data["arrival_rate"]
    end = data.get("ramp_to", rate)
    return int(data["duration"][:-1]) * (rate + end) / 2


@settings(max_examples=150, deadline=None)
@given(spec=paced_specs())
def test_due_is_non_decreasing_and_due_count_inverts_it(spec: RunSpec) -> None:
    """due() never goes back in index, and due_count(due(i)) counts job i."""
    plan = plan_of(spec)
    dues = [plan.due(i) for i in range(spec.sessions)]
    assert all(a <= b for a, b in itertools.pairwise(dues))
    for index in range(0, spec.sessions, max(1, spec.sessions // 50)):
        assert plan.due_count(dues[index]) > index
        if dues[index] > START and index:
            # Just before its due time, job `index` is not yet due.
            assert plan.due_count(dues[index] - timedelta(microseconds=1)) <= index
    assert plan.due_count(START - timedelta(microseconds=1)) == 0
    assert plan.due_count(dues[-1]) == spec.sessions


@settings(max_examples=100, deadline=None)
@given(
    sessions=st.integers(min_value=1, max_value=3000),
    window=st.integers(min_value=1, max_value=31 * 86_400),
    seed=st.integers(min_value=0, max_value=2**64 - 1),
    jitter=st.sampled_from([None, 0.0, 0.5, 1.0]),
)
def test_window_keeps_every_due_inside_the_window(
    sessions: int, window: int, seed: int, jitter: float | None
) -> None:
    """Every job of a window run is due in [start, start + window)."""
    spec = make_spec(
        sessions, {"mode": "window", "window": f"{window}s", "jitter": jitter}, seed=seed
    )
    plan = plan_of(spec)
    for index in range(sessions):
        assert START <= plan.due(index) < START + timedelta(seconds=window)


def test_window_without_jitter_is_evenly_spaced() -> None:
    """jitter 0 puts job i at exactly window·i/N."""
    plan = plan_of(make_spec(4, {"mode": "window", "window": "1h", "jitter": 0}))
    assert [seconds(plan, i) for i in range(4)] == [0, 900, 1800, 2700]


def test_same_seed_same_plan_other_seed_other_jitter() -> None:
    """The plan is a pure function of (spec, seed): same seed repeats, a new seed moves jobs."""
    pacing = {"mode": "window", "window": "12h"}
    first = plan_of(make_spec(500, pacing, seed=7))
    again = plan_of(make_spec(500, pacing, seed=7))
    other = plan_of(make_spec(500, pacing, seed=8))
    dues = [first.due(i) for i in range(500)]
    assert dues == [again.due(i) for i in range(500)]
    moved = sum(a != b for a, b in zip(dues, (other.due(i) for i in range(500)), strict=True))
    assert moved > 490


def test_default_jitter_spreads_within_each_slot() -> None:
    """Default jitter is 1: job i lands anywhere in its slot [i, i+1)·window/N, not at its start."""
    plan = plan_of(make_spec(100, {"mode": "window", "window": "100s"}, seed=1))
    offsets = [seconds(plan, i) - i for i in range(100)]
    assert all(0 <= offset < 1 for offset in offsets)
    assert len({round(offset, 3) for offset in offsets}) > 90


def test_fast_is_all_due_at_start() -> None:
    """fast: every job is due at the start; none before it."""
    plan = plan_of(make_spec(1000, {"mode": "fast"}))
    assert plan.due(999) == START
    assert plan.due_count(START) == 1000
    assert plan.due_count(START - timedelta(seconds=1)) == 0


def test_constant_phase_places_job_fifty_at_five_seconds() -> None:
    """A constant 10/s phase of 10 s puts job 50 at 5 s (C(t) = 10·t)."""
    plan = plan_of(
        make_spec(100, {"mode": "phases", "phases": [{"duration": "10s", "arrival_rate": 10}]})
    )
    assert seconds(plan, 50) == pytest.approx(5.0, abs=1e-6)
    assert seconds(plan, 0) == 0
    assert seconds(plan, 99) == pytest.approx(9.9, abs=1e-6)


def test_ramp_places_job_fifty_at_ten_seconds() -> None:
    """A ramp 0→10/s over 10 s has C(t) = t²/2, so job 50 is at 10 s and job 2 at 2 s."""
    phases = [
        {"duration": "10s", "arrival_rate": 0, "ramp_to": 10},
        {"duration": "10s", "arrival_rate": 10},
    ]
    plan = plan_of(make_spec(150, {"mode": "phases", "phases": phases}))
    assert seconds(plan, 50) == pytest.approx(10.0, abs=1e-6)
    assert seconds(plan, 2) == pytest.approx(2.0, abs=1e-6)
    assert seconds(plan, 1) == pytest.approx(math.sqrt(2), abs=1e-6)
    assert seconds(plan, 60) == pytest.approx(11.0, abs=1e-6)


def test_ramp_down_inverts_exactly() -> None:
    """A ramp 10→0/s over 10 s places 50; job i is at 10 - sqrt(100 - 2i)."""
    phases = [{"duration": "10s", "arrival_rate": 10, "ramp_to": 0}]
    plan = plan_of(make_spec(50, {"mode": "phases", "phases": phases}))
    for index in (1, 10, 37, 49):
        expected = 10 - math.sqrt(100 - 2 * index)
        assert seconds(plan, index) == pytest.approx(expected, abs=2e-6)
        # Floored to the microsecond: never later than the exact time.
        assert seconds(plan, index) <= expected + 1e-9


def test_zero_rate_phase_is_a_pause() -> None:
    """A rate-0 phase between two 1/s phases shifts the later jobs by its duration."""
    phases = [
        {"duration": "5s", "arrival_rate": 1},
        {"duration": "1m", "arrival_rate": 0},
        {"duration": "5s", "arrival_rate": 1},
    ]
    plan = plan_of(make_spec(10, {"mode": "phases", "phases": phases}))
    assert [seconds(plan, i) for i in range(10)] == [0, 1, 2, 3, 4, 65, 66, 67, 68, 69]


def test_phases_that_place_too_few_sessions_are_refused() -> None:
    """The spec refuses phases placing fewer arrivals than sessions, naming the field."""
    with pytest.raises(InvalidArgument) as caught:
        make_spec(200, {"mode": "phases", "phases": [{"duration": "10s", "arrival_rate": 10}]})
    assert str(caught.value) == "spec.pacing.phases: the phases place only 100 of 200 sessions"


def test_jobs_beyond_the_phases_are_due_at_their_end() -> None:
    """A stored spec whose phases place too few sessions puts the rest at the last phase's end."""
    spec = make_spec(100, {"mode": "phases", "phases": [{"duration": "10s", "arrival_rate": 10}]})
    plan = PhasesPacing(spec.model_copy(update={"sessions": 150}), started_at=START)
    assert seconds(plan, 99) == pytest.approx(9.9, abs=1e-6)
    assert [seconds(plan, i) for i in (100, 149)] == [10, 10]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York"])
def test_diurnal_weight_in_one_hour_puts_every_job_in_that_hour(zone: str) -> None:
    """With weight only in the 14:00 local hour, every due falls in that local hour (DST included)."""
    pacing = {
        "mode": "window",
        "window": "3d",
        "diurnal": {"timezone": zone, "hourly_weights": one_hour(14)},
    }
    plan = plan_of(make_spec(2000, pacing, seed=5))
    days = set()
    for index in range(2000):
        local = plan.due(index).astimezone(ZoneInfo(zone))
        assert local.hour == 14
        days.add(local.date())
    # The 3-day window crosses Europe's spring-forward night and holds three 14:00 hours.
    assert len(days) == 3


def test_diurnal_density_follows_the_weights() -> None:
    """Hours weighted 3:1 get three times the sessions over a whole number of days."""
    hourly = [3.0 if h < 12 else 1.0 for h in range(24)]
    start = datetime(2025, 1, 1, tzinfo=UTC)
    pacing = {
        "mode": "window",
        "window": "2d",
        "jitter": 0,
        "diurnal": {"timezone": "UTC", "hourly_weights": hourly},
    }
    plan = plan_of(make_spec(8000, pacing), started_at=start)
    morning = sum(1 for i in range(8000) if plan.due(i).hour < 12)
    assert morning == 6000


def test_diurnal_window_with_no_weighted_hour_falls_back_to_clock_time() -> None:
    """A 1-hour window that holds only zero-weight hours spreads jobs evenly instead."""
    pacing = {
        "mode": "window",
        "window": "1h",
        "jitter": 0,
        "diurnal": {"timezone": "UTC", "hourly_weights": one_hour(3)},
    }
    plan = plan_of(make_spec(4, pacing), started_at=datetime(2025, 1, 1, 12, tzinfo=UTC))
    assert [plan.due(i).minute for i in range(4)] == [0, 15, 30, 45]


def test_expedite_makes_every_later_job_due_then() -> None:
    """Once expedited, jobs not yet due are due at expedited_at; earlier ones keep their time."""
    spec = make_spec(4, {"mode": "window", "window": "1h", "jitter": 0})
    expedited = START + timedelta(minutes=20)
    plan = plan_of(spec, expedited_at=expedited)
    assert [plan.due(i) for i in range(4)] == [
        START,
        START + timedelta(minutes=15),
        expedited,
        expedited,
    ]
    assert plan.due_count(expedited - timedelta(seconds=1)) == 2
    assert plan.due_count(expedited) == 4


def test_run_plan_combines_target_cell_and_due() -> None:
    """RunPlan.job gives round-robin targets, the matrix cell and the paced due time."""
    spec = parse_spec(
        {
            "targets": [LOCAL, "http://127.0.0.1:8081/"],
            "sessions": 10,
            "pacing": {"mode": "window", "window": "10s", "jitter": 0},
            "matrix": {"engines": [{"engine": "chromium", "weight": 4}, {"engine": "firefox"}]},
        }
    )
    plan = RunPlan(spec, started_at=START)
    job = plan.job(3)
    assert (job.index, job.target_url, job.due) == (
        3,
        "http://127.0.0.1:8081/",
        START + timedelta(seconds=3),
    )
    assert [c.engine for c in plan.cells()] == ["chromium", "firefox"]
    assert plan.due_count(START + timedelta(seconds=4)) == 5
    with pytest.raises(IndexError):
        plan.job(10)


@pytest.mark.parametrize(
    "pacing",
    [
        {"mode": "fast"},
        {"mode": "window", "window": "24h"},
        {
            "mode": "window",
            "window": "31d",
            "diurnal": {"timezone": "Europe/Berlin", "hourly_weights": [1.0] * 12 + [2.0] * 12},
        },
        {
            "mode": "phases",
            "phases": [
                {"duration": "1h", "arrival_rate": 0, "ramp_to": 200},
                {"duration": "2h", "arrival_rate": 200},
                {"duration": "10m", "arrival_rate": 0},
                {"duration": "1h", "arrival_rate": 200, "ramp_to": 10},
            ],
        },
    ],
    ids=["fast", "window", "diurnal", "phases"],
)
def test_a_million_sessions_plan_in_constant_memory(pacing: dict[str, Any]) -> None:
    """Planning 1,000,000 sessions and asking for the last job allocates no per-job lists."""
    spec = make_spec(
        1_000_000,
        pacing,
        matrix={
            "engines": [{"engine": "chromium", "weight": 7}, {"engine": "firefox", "weight": 3}]
        },
    )
    tracemalloc.start()
    try:
        plan = RunPlan(spec, started_at=START)
        last = plan.job(999_999)
        count = plan.due_count(last.due)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 1_000_000
    assert last.cell.engine in ("chromium", "firefox")
    # A list of a million anything would be >= 8 MB; the plan stays well under 1 MB.
    assert peak < 1_000_000

"""Matrix plans: exact largest-remainder allocation, interleaved cells, random access by index."""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.spec import RunSpec, parse_spec
from services.common.types import Cell
from services.scheduler._matrix import MatrixPlan

LOCAL = "http://127.0.0.1:8080/"

weights = st.one_of(
    st.integers(min_value=0, max_value=20).map(float),
    st.floats(min_value=0, max_value=1000, allow_nan=False, allow_infinity=False),
)


def dimension(size: int) -> st.SearchStrategy[list[float]]:
    """Up to `size` weights, at least one positive (the spec refuses all-zero dimensions)."""
    return st.lists(weights, min_size=1, max_size=size).filter(lambda ws: sum(ws) > 0)


def make_spec(
    sessions: int,
    engines: list[float] | None = None,
    labels: list[float] | None = None,
    **extra: Any,
) -> RunSpec:
    matrix: dict[str, Any] = {}
    if engines:
        names = ("chromium", "firefox", "webkit")
        matrix["engines"] = [{"engine": names[i], "weight": w} for i, w in enumerate(engines)]
    if labels:
        matrix["labels"] = [{"labels": {"slot": str(i)}, "weight": w} for i, w in enumerate(labels)]
    return parse_spec({"targets": [LOCAL], "sessions": sessions, "matrix": matrix, **extra})


def exact_shares(spec: RunSpec, plan: MatrixPlan) -> list[Fraction]:
    """Each cell's exact share of the run from the spec's float weights."""
    engines = [Fraction(e.weight) for e in spec.matrix.engines] or [Fraction(1)]
    labels = [Fraction(e.weight) for e in spec.matrix.labels] or [Fraction(1)]
    total = sum(engines) * sum(labels)
    shares = [e * lab / total for e in engines for lab in labels]
    assert len(shares) == len(plan.cells)
    return shares


def brute_force_order(counts: list[int]) -> list[int]:
    """Every session materialised at its ideal position (k + 1/2)·N/n, ties by cell order."""
    sessions = sum(counts)
    slots = [
        (Fraction((2 * k + 1) * sessions, 2 * n), cell)
        for cell, n in enumerate(counts)
        for k in range(n)
    ]
    return [cell for _, cell in sorted(slots)]


def test_seventy_thirty_of_a_thousand_is_exact() -> None:
    """1,000 sessions at 70/30 are exactly 700 and 300."""
    plan = MatrixPlan(make_spec(1000, engines=[0.7, 0.3]))
    assert [count for _, count in plan.counts()] == [700, 300]
    assert Counter(plan.cell_of(i).engine for i in range(1000)) == {
        "chromium": 700,
        "firefox": 300,
    }


def test_seventy_thirty_is_interleaved() -> None:
    """70/30 repeats a 10-job pattern of seven and three, not 700 then 300."""
    plan = MatrixPlan(make_spec(1000, engines=[0.7, 0.3]))
    order = "".join(plan.cell_of(i).engine[0] for i in range(20))
    assert order == "cfcccfccfc" * 2


def test_empty_matrix_is_one_default_cell() -> None:
    """Without a matrix every job runs in one cell: default device and locale, the spec's engine."""
    plan = MatrixPlan(parse_spec({"targets": [LOCAL], "sessions": 5, "engine": "webkit"}))
    assert plan.counts() == [(Cell(engine="webkit"), 5)]
    assert plan.cell_of(4) == Cell(engine="webkit")


def test_cells_are_the_product_with_sorted_labels() -> None:
    """Cells are the product devices, locales, engines, labels, with fields set and labels sorted."""
    spec = parse_spec(
        {
            "targets": [LOCAL],
            "sessions": 8,
            "matrix": {
                "devices": [{"name": "Pixel 7"}, {"name": "Desktop Chrome"}],
                "locales": [
                    {
                        "locale": "de-DE",
                        "timezone": "Europe/Berlin",
                        "geolocation": {"latitude": 52.5, "longitude": 13.4},
                    }
                ],
                "engines": [{"engine": "firefox"}, {"engine": "webkit"}],
                "labels": [{"labels": {"zone": "a", "region": "eu"}}],
            },
        }
    )
    plan = MatrixPlan(spec)
    assert [(c.device, c.engine) for c in plan.cells] == [
        ("Pixel 7", "firefox"),
        ("Pixel 7", "webkit"),
        ("Desktop Chrome", "firefox"),
        ("Desktop Chrome", "webkit"),
    ]
    first = plan.cells[0]
    assert (first.locale, first.timezone) == ("de-DE", "Europe/Berlin")
    assert first.geolocation is not None and first.geolocation.latitude == 52.5
    assert first.labels == (("region", "eu"), ("zone", "a"))
    assert [count for _, count in plan.counts()] == [2, 2, 2, 2]


def test_zero_weight_cell_gets_nothing() -> None:
    """A cell of weight 0 gets no sessions, even when seats are left after the floors."""
    plan = MatrixPlan(make_spec(7, labels=[1, 0, 1]))
    assert [count for _, count in plan.counts()] == [4, 0, 3]


def test_ties_go_by_cell_order() -> None:
    """Three equal cells and 10 sessions: the extra seat goes to the first cell."""
    plan = MatrixPlan(make_spec(10, labels=[1, 1, 1]))
    assert [count for _, count in plan.counts()] == [4, 3, 3]


@settings(max_examples=200, deadline=None)
@given(
    sessions=st.integers(min_value=1, max_value=10**8),
    engines=dimension(3),
    labels=dimension(12),
)
def test_allocation_is_exact_largest_remainder(
    sessions: int, engines: list[float], labels: list[float]
) -> None:
    """Counts add up to N exactly and each is the floor or ceiling of its exact quota."""
    spec = make_spec(sessions, engines=engines, labels=labels)
    plan = MatrixPlan(spec)
    counts = [count for _, count in plan.counts()]
    assert sum(counts) == sessions
    for count, share in zip(counts, exact_shares(spec, plan), strict=True):
        quota = sessions * share
        assert quota - 1 < count < quota + 1
        if share == 0:
            assert count == 0


@settings(max_examples=150, deadline=None)
@given(
    sessions=st.integers(min_value=1, max_value=300),
    engines=dimension(3),
    labels=dimension(6),
)
def test_cell_of_agrees_with_the_materialised_order(
    sessions: int, engines: list[float], labels: list[float]
) -> None:
    """cell_index(i) is the i-th session of the brute-force ordering, for every i, any order."""
    plan = MatrixPlan(make_spec(sessions, engines=engines, labels=labels))
    expected = brute_force_order([count for _, count in plan.counts()])
    assert [plan.cell_index(i) for i in range(sessions)] == expected
    # Random access (backwards, so no lookup reuses the last one) gives the same answer.
    fresh = MatrixPlan(make_spec(sessions, engines=engines, labels=labels))
    assert [fresh.cell_index(i) for i in reversed(range(sessions))] == expected[::-1]


@settings(max_examples=150, deadline=None)
@given(
    sessions=st.integers(min_value=1, max_value=400),
    engines=dimension(3),
    labels=dimension(6),
)
def test_every_prefix_keeps_the_proportions(
    sessions: int, engines: list[float], labels: list[float]
) -> None:
    """In every prefix each cell is within 1/2 + share·(C-2)/2 of k·share: ±1 for up to 3 cells."""
    plan = MatrixPlan(make_spec(sessions, engines=engines, labels=labels))
    counts = [count for _, count in plan.counts()]
    shares = [Fraction(n, sessions) for n in counts]
    live = sum(1 for n in counts if n)
    seen = [0] * len(counts)
    for k in range(1, sessions + 1):
        seen[plan.cell_index(k - 1)] += 1
        for cell, share in enumerate(shares):
            bound = Fraction(1, 2) + share * max(live - 2, 0) / 2
            assert abs(seen[cell] - k * share) <= bound
            if live <= 3:
                assert abs(seen[cell] - k * share) <= 1


@settings(max_examples=100, deadline=None)
@given(
    sessions=st.integers(min_value=1, max_value=300),
    engines=dimension(3),
    labels=dimension(8),
)
def test_prefix_is_within_half_a_session_of_its_ideal_position(
    sessions: int, engines: list[float], labels: list[float]
) -> None:
    """At the ideal position v of job k, every cell has run within 1/2 of v·share."""
    plan = MatrixPlan(make_spec(sessions, engines=engines, labels=labels))
    counts = [count for _, count in plan.counts()]
    seen = [0] * len(counts)
    ranks = [0] * len(counts)
    for index in range(sessions):
        cell = plan.cell_index(index)
        position = Fraction((2 * ranks[cell] + 1) * sessions, 2 * counts[cell])
        ranks[cell] += 1
        seen[cell] += 1
        for other, count in enumerate(counts):
            assert abs(seen[other] - position * Fraction(count, sessions)) <= Fraction(1, 2)


def test_large_run_is_answered_without_materialising() -> None:
    """A 100,000,000-session run of 12 cells answers the last job and agrees with its counts."""
    plan = MatrixPlan(make_spec(100_000_000, engines=[3, 2, 1], labels=[1, 1, 5, 0.25]))
    counts = [count for _, count in plan.counts()]
    assert sum(counts) == 100_000_000
    last = plan.cell_index(99_999_999)
    assert counts[last] > 0
    # The whole run's last slot belongs to the cell whose last ideal position is largest.
    assert last == max(
        range(len(counts)),
        key=lambda c: (Fraction(2 * counts[c] - 1, counts[c]) if counts[c] else -1, c),
    )

"""Fair share between runs and per-host limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import NotFound
from services.scheduler._fairshare import Claim, fair_allowance
from services.scheduler._hosts import HostLimiter, origin_of

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_equal_priorities_split_evenly() -> None:
    """Two idle runs with equal priority and plenty of demand split 10 slots 5/5."""
    allowance = fair_allowance(10, {"a": Claim(1, 0, 100), "b": Claim(1, 0, 100)})
    assert allowance == {"a": 5, "b": 5}


def test_priority_weights_the_split() -> None:
    """A weight-3 run gets three times the slots of a weight-1 run."""
    allowance = fair_allowance(8, {"hi": Claim(3, 0, 100), "lo": Claim(1, 0, 100)})
    assert allowance == {"hi": 6, "lo": 2}


def test_unused_share_goes_to_others() -> None:
    """A run that wants 2 of its 5 leaves 3 to the other run."""
    allowance = fair_allowance(10, {"small": Claim(1, 0, 2), "big": Claim(1, 0, 100)})
    assert allowance == {"small": 2, "big": 8}


def test_in_flight_counts_against_the_share() -> None:
    """A run already holding its share gets nothing new until the other catches up."""
    allowance = fair_allowance(10, {"busy": Claim(1, 5, 100), "new": Claim(1, 0, 100)})
    assert allowance == {"busy": 0, "new": 5}


@given(
    capacity=st.integers(0, 200),
    claims=st.dictionaries(
        st.text("abcdef", min_size=1, max_size=3),
        st.tuples(st.integers(1, 5), st.integers(0, 50), st.integers(0, 100)),
        max_size=6,
    ),
)
def test_allowance_never_exceeds_free_capacity_or_demand(
    capacity: int, claims: dict[str, tuple[int, int, int]]
) -> None:
    """Whatever the claims, no run gets more than it asks and the total fits in free capacity."""
    parsed = {
        run: Claim(float(w), in_flight, demand) for run, (w, in_flight, demand) in claims.items()
    }
    allowance = fair_allowance(capacity, parsed)
    free = max(0, capacity - sum(c.in_flight for c in parsed.values()))
    assert sum(allowance.values()) <= free
    assert all(0 <= allowance[run] <= parsed[run].demand for run in parsed)


def test_token_bucket_limits_rate() -> None:
    """At 2/s with burst 1, one start now, the next only after 0.5 s."""
    limiter = HostLimiter()
    assert limiter.take("r", "h", rate=2, burst=1, now=T0)
    assert not limiter.take("r", "h", rate=2, burst=1, now=T0 + timedelta(milliseconds=100))
    assert limiter.take("r", "h", rate=2, burst=1, now=T0 + timedelta(milliseconds=500))


def test_backoff_doubles_to_the_cap_and_resets() -> None:
    """Errors back an origin off 5 s, 10 s, … 60 s; a success or a reset ends it."""
    limiter = HostLimiter()
    h = "http://h:8080"
    for _ in range(6):
        limiter.record(h, error=True, now=T0)
    assert limiter.states(T0)[0].until == T0 + timedelta(seconds=60)
    assert not limiter.take("r", h, rate=0, burst=0, now=T0 + timedelta(seconds=59))
    assert [state.host for state in limiter.reset(h)] == [h]
    assert limiter.take("r", h, rate=0, burst=0, now=T0)
    limiter.record(h, error=True, now=T0)
    assert limiter.backing_off(h, T0 + timedelta(seconds=4))
    assert not limiter.backing_off(h, T0 + timedelta(seconds=5))
    limiter.record(h, error=False, now=T0)
    assert limiter.states(T0) == []


def test_backoff_is_per_origin_and_a_host_name_resets_all_its_origins() -> None:
    """500s from one port hold back only that origin; resetting the bare host name ends the
    backoff of each of its origins; a name never seen is NotFound."""
    limiter = HostLimiter()
    limiter.record(origin_of("http://127.0.0.1:35227/x"), error=True, now=T0)
    limiter.record(origin_of("https://127.0.0.1/"), error=True, now=T0)
    assert not limiter.backing_off(origin_of("http://127.0.0.1:8080/"), T0)
    assert limiter.backing_off("http://127.0.0.1:35227", T0)
    assert [state.host for state in limiter.reset("127.0.0.1")] == [
        "http://127.0.0.1:35227",
        "https://127.0.0.1",
    ]
    with pytest.raises(NotFound):
        limiter.reset("nosuch.example")


def test_origins_drop_default_ports() -> None:
    """An origin is scheme://host[:port], the port written only when it is not the default."""
    assert origin_of("https://Shop.Example.com:443/a?b") == "https://shop.example.com"
    assert origin_of("http://[::1]:8080/") == "http://[::1]:8080"

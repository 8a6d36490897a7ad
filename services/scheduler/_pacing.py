"""The pacing side of a run plan: when job i is due, a pure function of (spec, seed, start).

Every plan computes job i's offset from the start exactly (integers and fractions, floored to
the microsecond), so due() is non-decreasing in i and due_count() can binary-search it. Building
a plan costs O(phases), or O(hours of the window) with a diurnal curve; nothing is per job.
"""

from __future__ import annotations

import hashlib
import math
from abc import ABC, abstractmethod
from bisect import bisect_right
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from functools import lru_cache
from zoneinfo import ZoneInfo

from services.common.spec import RunSpec
from services.scheduler._matrix import integer_weights

_MICROSECOND = timedelta(microseconds=1)
_UNIT = 2**64


def _microseconds(value: timedelta) -> int:
    return value // _MICROSECOND


def unit_hash(seed: int, index: int) -> int:
    """A seeded 64-bit hash of (seed, index): u = unit_hash / 2**64 is uniform in [0, 1)."""
    data = seed.to_bytes(8, "big") + index.to_bytes(8, "big")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=b"sf.pacing").digest())


class PacingPlan(ABC):
    """When each of a run's jobs is due; `expedited_at` makes every later job due then."""

    def __init__(
        self, *, sessions: int, started_at: datetime, expedited_at: datetime | None = None
    ) -> None:
        self._sessions = sessions
        self._started_at = started_at
        self._expedited_at = expedited_at

    @abstractmethod
    def offset(self, index: int) -> int:
        """Microseconds from the start to job `index`'s planned time; non-decreasing."""

    def due(self, index: int) -> datetime:
        """When job `index` is due (an operator's expedite pulls later jobs in to then)."""
        if not 0 <= index < self._sessions:
            raise IndexError(f"job index {index} outside 0..{self._sessions - 1}")
        due = self._started_at + timedelta(microseconds=self.offset(index))
        if self._expedited_at is not None and due > self._expedited_at:
            return self._expedited_at
        return due

    def due_count(self, now: datetime) -> int:
        """How many jobs (a prefix of the run) are due at `now`."""
        low, high = 0, self._sessions
        while low < high:
            middle = (low + high) // 2
            if self.due(middle) <= now:
                low = middle + 1
            else:
                high = middle
        return low


class FastPacing(PacingPlan):
    """`fast`: every job is due when the run starts; capacity alone paces the run."""

    def offset(self, index: int) -> int:
        return 0

    def due_count(self, now: datetime) -> int:
        return self._sessions if self.due(0) <= now else 0


class WindowPacing(PacingPlan):
    """`window`: job i at window·(i + u_i·jitter)/N, u_i a seeded hash in [0, 1).

    With a diurnal curve the same fraction is taken of the window's weighted time instead of
    its clock time, so arrivals follow the hourly weights of the local hour.
    """

    def __init__(
        self, spec: RunSpec, *, started_at: datetime, expedited_at: datetime | None = None
    ) -> None:
        super().__init__(sessions=spec.sessions, started_at=started_at, expedited_at=expedited_at)
        pacing = spec.pacing
        assert pacing.window is not None  # the spec refuses window pacing without a window
        self._window = _microseconds(pacing.window)
        self._jitter = Fraction(1 if pacing.jitter is None else pacing.jitter)
        self._seed = spec.seed
        self._clock: _DiurnalClock | None = None
        if pacing.diurnal is not None:
            diurnal = pacing.diurnal
            clock = _diurnal_clock(
                started_at, self._window, diurnal.timezone, tuple(diurnal.hourly_weights)
            )
            self._clock = clock if clock.total else None

    def offset(self, index: int) -> int:
        # i + u·jitter < i + 1, so the fraction is strictly increasing and below 1.
        jitter = self._jitter * Fraction(unit_hash(self._seed, index), _UNIT)
        fraction = (index + jitter) / self._sessions
        if self._clock is not None:
            return self._clock.offset_at(fraction)
        return math.floor(self._window * fraction)


class _DiurnalClock:
    """The window cut where the local hour (or the UTC offset) changes, each piece weighted.

    `total` is the weighted length, sum of weight·microseconds; 0 when the window holds only
    zero-weight hours, in which case window pacing falls back to clock time.
    """

    def __init__(
        self, started_at: datetime, window: int, timezone: str, hourly_weights: tuple[float, ...]
    ) -> None:
        zone = ZoneInfo(timezone)
        weights = integer_weights(hourly_weights)
        # A naive start is taken as UTC, as the scheduler stores every time in UTC.
        start = (
            started_at.replace(tzinfo=UTC) if started_at.tzinfo is None else started_at
        ).astimezone(UTC)
        end = start + timedelta(microseconds=window)
        self.starts: list[int] = []
        self.weights: list[int] = []
        self.cumulative: list[int] = []
        total = 0
        moment = start
        while moment < end:
            local = moment.astimezone(zone)
            to_next_hour = timedelta(hours=1) - timedelta(
                minutes=local.minute, seconds=local.second, microseconds=local.microsecond
            )
            following = min(moment + to_next_hour, end)
            if _offset_in(zone, following - _MICROSECOND) != local.utcoffset():
                following = _offset_change(zone, moment, following)
            weight = weights[local.hour]
            self.starts.append(_microseconds(moment - start))
            self.weights.append(weight)
            self.cumulative.append(total)
            total += weight * _microseconds(following - moment)
            moment = following
        self.total = total

    def offset_at(self, fraction: Fraction) -> int:
        """Microseconds from the start at which `fraction` of the weighted time has passed."""
        target = self.total * fraction
        # The last piece starting at or before the target has a positive weight (target < total).
        piece = bisect_right(self.cumulative, target) - 1
        inside = (target - self.cumulative[piece]) / self.weights[piece]
        return self.starts[piece] + math.floor(inside)


@lru_cache(maxsize=64)
def _diurnal_clock(
    started_at: datetime, window: int, timezone: str, hourly_weights: tuple[float, ...]
) -> _DiurnalClock:
    # Plans are rebuilt on every dispatch tick; the pieces depend only on these.
    return _DiurnalClock(started_at, window, timezone, hourly_weights)


def _offset_in(zone: ZoneInfo, moment: datetime) -> timedelta | None:
    return moment.astimezone(zone).utcoffset()


def _offset_change(zone: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The first microsecond in (low, high] whose UTC offset differs from low's."""
    before = _offset_in(zone, low)
    steps = _microseconds(high - low)
    first = _search(lambda step: _offset_in(zone, low + step * _MICROSECOND) != before, 1, steps)
    return low + first * _MICROSECOND


def _search(changed: Callable[[int], bool], low: int, high: int) -> int:
    """The smallest step in [low, high] where `changed` holds (it holds at high, monotonically)."""
    while low < high:
        middle = (low + high) // 2
        if changed(middle):
            high = middle
        else:
            low = middle + 1
    return low


class PhasesPacing(PacingPlan):
    """`phases`: arrival-rate phases, each constant or a linear ramp; job i is due when the
    cumulative arrivals C(t) reach i.

    A phase of rate 0 (and no ramp) is a pause. Jobs beyond what the phases place (specs the
    validator now refuses, stored before it did) are due at the end of the last phase.
    """

    def __init__(
        self, spec: RunSpec, *, started_at: datetime, expedited_at: datetime | None = None
    ) -> None:
        super().__init__(sessions=spec.sessions, started_at=started_at, expedited_at=expedited_at)
        self._phases: list[_Phase] = []
        self._cumulative: list[Fraction] = []
        arrivals, begins = Fraction(0), 0
        for phase in spec.pacing.phases:
            length = _microseconds(phase.duration)
            ramp_to = phase.arrival_rate if phase.ramp_to is None else phase.ramp_to
            self._phases.append(
                _Phase(begins, length, Fraction(phase.arrival_rate), Fraction(ramp_to))
            )
            self._cumulative.append(arrivals)
            arrivals += phase.arrivals
            begins += length
        self._arrivals = arrivals
        self._end = begins

    def offset(self, index: int) -> int:
        if index >= self._arrivals:
            return self._end
        # The last phase starting at or before arrival `index` places arrivals (index < total).
        piece = bisect_right(self._cumulative, index) - 1
        phase = self._phases[piece]
        return phase.begins + phase.time_of(index - self._cumulative[piece])


class _Phase:
    """One phase: rate goes linearly from `start` to `end` (per second) over `length` µs."""

    __slots__ = ("begins", "end", "length", "start")

    def __init__(self, begins: int, length: int, start: Fraction, end: Fraction) -> None:
        self.begins = begins
        self.length = length
        self.start = start
        self.end = end

    def arrivals_by(self, elapsed: int) -> Fraction:
        """C(τ) within the phase: arrivals in its first `elapsed` microseconds."""
        seconds = Fraction(elapsed, 1_000_000)
        slope = (self.end - self.start) / Fraction(self.length, 1_000_000)
        return self.start * seconds + slope * seconds * seconds / 2

    def time_of(self, arrivals: Fraction) -> int:
        """The floor (in µs) of the τ where C(τ) = arrivals, for 0 <= arrivals < the phase's."""
        if arrivals <= 0:
            return 0
        # Closed form (quadratic formula in its cancellation-free shape) as a float guess ...
        start, target = float(self.start), float(arrivals)
        slope = (float(self.end) - start) / (self.length / 1_000_000)
        root = math.sqrt(max(0.0, start * start + 2 * slope * target))
        guess = int(2 * target / (start + root) * 1_000_000) if start + root > 0 else 0
        # ... made exact: the largest µs whose arrivals do not pass the target.
        return _largest_within(self.arrivals_by, arrivals, guess, self.length)


def _largest_within(
    arrivals_by: Callable[[int], Fraction], target: Fraction, guess: int, high: int
) -> int:
    """Largest u in [0, high] with arrivals_by(u) <= target (non-decreasing, true at 0).

    Gallops out from the guess, so a good guess costs a few evaluations, a bad one O(log).
    """
    low = min(max(guess, 0), high)
    step = 1
    if arrivals_by(low) <= target:
        upper = low + step
        while upper <= high and arrivals_by(upper) <= target:
            low, step = upper, step * 2
            upper = low + step
        upper = min(upper, high + 1)
    else:
        upper = low
        low = upper - step
        while low > 0 and arrivals_by(low) > target:
            upper, step = low, step * 2
            low = upper - step
        low = max(low, 0)
    # arrivals_by(low) <= target; upper == high + 1 or arrivals_by(upper) > target.
    while upper - low > 1:
        middle = (low + upper) // 2
        if arrivals_by(middle) <= target:
            low = middle
        else:
            upper = middle
    return low


def pacing_plan(
    spec: RunSpec, *, started_at: datetime, expedited_at: datetime | None = None
) -> PacingPlan:
    """The pacing plan the spec asks for."""
    mode = spec.pacing.mode
    if mode == "window":
        return WindowPacing(spec, started_at=started_at, expedited_at=expedited_at)
    if mode == "phases":
        return PhasesPacing(spec, started_at=started_at, expedited_at=expedited_at)
    return FastPacing(sessions=spec.sessions, started_at=started_at, expedited_at=expedited_at)

"""What a run will do before it runs: sessions per cell and per target, hosts, pacing timeline.

A pure function of (spec, start). It never walks the sessions: cells come from the matrix
allocation (O(cells)), targets from the round-robin (O(targets)), and the timeline samples the
due-time curve at bucket boundaries, each a binary search over the plan (O(log sessions)), so a
100M-session run is summarised as fast as a 10-session one. `smartctl run validate` and
`run create --dry-run` print it; the scheduler can answer the same summary for `validate_only`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from services.common.spec import RunSpec
from services.scheduler._planner import RunPlan

# Bucket widths the timeline picks from: the smallest that fits the run in `max_buckets`.
_BUCKET_STEPS = tuple(
    timedelta(seconds=seconds)
    for seconds in (
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200,
        86400, 172800, 604800,
    )
)  # fmt: skip
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class CellCount:
    key: str
    sessions: int


@dataclass(frozen=True, slots=True)
class TargetCount:
    url: str
    sessions: int


@dataclass(frozen=True, slots=True)
class TimelineBucket:
    """Sessions due in [offset, offset + bucket) from the run's start."""

    offset: timedelta
    sessions: int


@dataclass(frozen=True, slots=True)
class PlanSummary:
    sessions: int
    pacing: str
    cells: tuple[CellCount, ...]
    targets: tuple[TargetCount, ...]
    hosts: tuple[str, ...]
    # The last session is due this long after the start (0 for fast pacing).
    span: timedelta
    bucket: timedelta
    timeline: tuple[TimelineBucket, ...]

    def per_minute(self, bucket: TimelineBucket) -> float:
        """The bucket's sessions as a rate per minute (all at once for fast pacing)."""
        if self.bucket <= timedelta(0):
            return float(bucket.sessions)
        return bucket.sessions * 60 / self.bucket.total_seconds()

    @property
    def peak_per_minute(self) -> float:
        return max((self.per_minute(bucket) for bucket in self.timeline), default=0.0)


def plan_hosts(spec: RunSpec) -> tuple[str, ...]:
    """The hosts the run visits: its targets' and its goto steps' (templated ones aside)."""
    hosts: dict[str, None] = {}
    for url in spec.targets:
        hosts.setdefault(urlsplit(url).hostname or "", None)
    for step in spec.steps:
        if step.goto is not None and step.goto.url:
            host = urlsplit(step.goto.url).hostname or ""
            if host and "{" not in host:
                hosts.setdefault(host, None)
    return tuple(host for host in hosts if host)


def target_counts(spec: RunSpec) -> tuple[TargetCount, ...]:
    """Job i visits target i mod len(targets): the first `sessions mod n` get one more."""
    count = len(spec.targets)
    base, extra = divmod(spec.sessions, count)
    return tuple(
        TargetCount(url, base + (1 if index < extra else 0))
        for index, url in enumerate(spec.targets)
    )


def bucket_width(span: timedelta, *, max_buckets: int) -> timedelta:
    for step in _BUCKET_STEPS:
        if (span // step) + 1 <= max_buckets:
            return step
    return _BUCKET_STEPS[-1] * (int((span // _BUCKET_STEPS[-1]) // max_buckets) + 1)


def summarize_plan(
    spec: RunSpec, *, started_at: datetime | None = None, max_buckets: int = 24
) -> PlanSummary:
    """The summary of the plan the scheduler would follow if the run started at `started_at`."""
    start = started_at or datetime.now(UTC)
    plan = RunPlan(spec, started_at=start)
    cells = tuple(CellCount(cell.key, count) for cell, count in plan.matrix.counts() if count)
    span = plan.pacing.due(spec.sessions - 1) - start
    if span <= timedelta(0):
        bucket = timedelta(0)
        timeline: tuple[TimelineBucket, ...] = (TimelineBucket(timedelta(0), spec.sessions),)
    else:
        bucket = bucket_width(span, max_buckets=max_buckets)
        buckets = span // bucket + 1
        # Jobs due before each boundary; the curve is non-decreasing, so differences count.
        before = [
            plan.pacing.due_count(start + bucket * index - _MICROSECOND)
            for index in range(buckets + 1)
        ]
        before[-1] = spec.sessions
        timeline = tuple(
            TimelineBucket(bucket * index, before[index + 1] - before[index])
            for index in range(buckets)
        )
    return PlanSummary(
        sessions=spec.sessions,
        pacing=spec.pacing.mode,
        cells=cells,
        targets=target_counts(spec),
        hosts=plan_hosts(spec),
        span=span,
        bucket=bucket,
        timeline=timeline,
    )

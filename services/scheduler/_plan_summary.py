"""What a run would do, without creating it: sessions per cell and per target, a timeline of
starts, and the hosts it visits with the allowlist's verdict on each.

O(cells + targets + buckets), never O(sessions): a 100-million-session plan is summarised by
counting due jobs at bucket edges (the plan's `due_count`), not by walking its jobs.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from services.common.allowlist import host_allowed
from services.common.spec import RunSpec
from services.scheduler._planner import RunPlan

MAX_BUCKETS = 1440


@dataclass(frozen=True, slots=True)
class PlanHost:
    host: str
    allowed: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class PlanSummary:
    sessions: int
    cells: list[tuple[str, int]]
    targets: list[tuple[str, int]]
    starts_per_bucket: list[int]
    bucket: timedelta
    span: timedelta
    hosts: list[PlanHost]


def summarise(spec: RunSpec, *, allowed_hosts: list[str]) -> PlanSummary:
    start = datetime(2000, 1, 1, tzinfo=UTC)
    plan = RunPlan(spec, started_at=start)
    sessions = spec.sessions
    cells = [(cell.key, count) for cell, count in plan.matrix.counts() if count]
    per_target, rest = divmod(sessions, len(spec.targets))
    targets = [(url, per_target + (i < rest)) for i, url in enumerate(spec.targets)]
    span = plan.job(sessions - 1).due - start if sessions else timedelta(0)
    bucket = timedelta(minutes=1)
    while span / bucket > MAX_BUCKETS:
        bucket *= 2
    edges = int(span / bucket) + 1
    due = [
        plan.due_count(start + bucket * (i + 1) - timedelta(microseconds=1)) for i in range(edges)
    ]
    due[-1] = sessions
    starts = [due[0], *(b - a for a, b in itertools.pairwise(due))]
    hosts: Counter[str] = Counter(urlsplit(url).hostname or "" for url in spec.targets)
    for step in spec.steps:
        host = urlsplit(step.goto.url).hostname if step.goto is not None else None
        if host and "{" not in host:
            hosts[host] += 0
    return PlanSummary(
        sessions=sessions,
        cells=cells,
        targets=targets,
        starts_per_bucket=starts,
        bucket=bucket,
        span=span,
        hosts=[
            PlanHost(host, True)
            if host_allowed(host, allowed_hosts)
            else PlanHost(host, False, "not in the scheduler's target allowlist")
            for host in sorted(hosts)
        ],
    )

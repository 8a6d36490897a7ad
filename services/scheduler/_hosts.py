"""Per-target limits: a token bucket per (run, origin), and a backoff per origin after errors.

An origin is scheme, host and port (`http://127.0.0.1:8080`): two sites on one host are two
targets, so 500s from one port never hold back another.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from urllib.parse import urlsplit

from services.common.errors import NotFound
from services.common.types import Outcome, SessionResult
from services.scheduler._events import ResultsStored, RunCancelled

BACKOFF_BASE = timedelta(seconds=5)
BACKOFF_MAX = timedelta(seconds=60)

# Outcomes that say the target host struggles (it gets a backoff), as opposed to the session.
_HOST_ERRORS = {Outcome.NAVIGATION_ERROR, Outcome.TIMEOUT}


_DEFAULT_PORTS = {"http": 80, "https": 443}


@lru_cache(maxsize=4096)
def origin_of(url: str) -> str:
    """`scheme://host[:port]`, the port written only when it is not the scheme's default."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    scheme = parts.scheme.lower()
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def host_error(result: SessionResult) -> bool:
    return result.outcome in _HOST_ERRORS or (
        result.outcome is Outcome.HTTP_ERROR and result.http_status >= 500
    )


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: datetime


@dataclass(frozen=True, slots=True)
class HostState:
    host: str
    consecutive_errors: int
    until: datetime | None


class HostLimiter:
    """Decides whether a session may start against a host now.

    The bucket is per (run, host): a run's `per_host_rate` limits its own session starts per
    host. The backoff is per host, fleet-wide: after a transient error (5xx, network, timeout)
    the host rests 5 s, doubling per consecutive error up to 60 s; a success or an operator's
    reset ends it.
    """

    def __init__(self, *, base: timedelta = BACKOFF_BASE, cap: timedelta = BACKOFF_MAX) -> None:
        self._base = base
        self._cap = cap
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._errors: dict[str, int] = {}
        self._until: dict[str, datetime] = {}

    def backing_off(self, host: str, now: datetime) -> bool:
        until = self._until.get(host)
        return until is not None and now < until

    def take(self, run_id: str, host: str, *, rate: float, burst: int, now: datetime) -> bool:
        """Take a token for one session start (always granted when the rate is 0, i.e. unlimited)."""
        if self.backing_off(host, now):
            return False
        if rate <= 0:
            return True
        capacity = float(max(1, burst))
        bucket = self._buckets.get((run_id, host))
        if bucket is None:
            bucket = self._buckets[(run_id, host)] = _Bucket(tokens=capacity, updated=now)
        elapsed = max(0.0, (now - bucket.updated).total_seconds())
        bucket.tokens = min(capacity, bucket.tokens + elapsed * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def next_token_in(self, run_id: str, host: str, *, rate: float) -> timedelta:
        bucket = self._buckets.get((run_id, host))
        if bucket is None or rate <= 0:
            return timedelta(0)
        return timedelta(seconds=max(0.0, (1.0 - bucket.tokens) / rate))

    def record(self, host: str, *, error: bool, now: datetime) -> None:
        if not error:
            self._errors.pop(host, None)
            self._until.pop(host, None)
            return
        count = self._errors.get(host, 0) + 1
        self._errors[host] = count
        wait = min(self._cap, self._base * (2 ** (count - 1)))
        self._until[host] = now + wait

    def on_results(self, event: ResultsStored) -> None:
        """Each stored result counts for or against its target host."""
        for result in event.results:
            self.record(
                origin_of(result.target_url),
                error=host_error(result),
                now=datetime.now(UTC),
            )

    def on_cancelled(self, event: RunCancelled) -> None:
        self.forget_run(event.run.id)

    def reset(self, host: str) -> list[HostState]:
        """End the backoff of an origin, or of every origin of a host name; NotFound when
        nothing of that name ever erred."""
        wanted = origin_of(host) if "://" in host else None
        matching = [
            origin
            for origin in set(self._errors) | set(self._until)
            if origin == wanted or (wanted is None and urlsplit(origin).hostname == host)
        ]
        if not matching:
            raise NotFound("host", host)
        for origin in matching:
            self._errors.pop(origin, None)
            self._until.pop(origin, None)
        return [
            HostState(host=origin, consecutive_errors=0, until=None) for origin in sorted(matching)
        ]

    def forget_run(self, run_id: str) -> None:
        for key in [key for key in self._buckets if key[0] == run_id]:
            del self._buckets[key]

    def states(self, now: datetime) -> list[HostState]:
        return [
            HostState(host=host, consecutive_errors=self._errors.get(host, 0), until=until)
            for host, until in sorted(self._until.items())
            if until > now or self._errors.get(host)
        ]

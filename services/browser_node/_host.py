"""The host a node runs on: how many sessions it can hold (its CPU and memory, as limited by
cgroups in a container) and, for heartbeats, how busy it is.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

# Peak memory of one session (a fresh Chromium context and page with a typical site, renderer
# included), with headroom for the shared browser process.
SESSION_MEMORY_BYTES = 350 * 1024 * 1024
# Sessions per CPU core: they wait on the network part of the time, but rendering is CPU-bound
# (a fresh context per session on 2 cores tops out near 2.3 sessions/s whatever the concurrency).
SESSIONS_PER_CPU = 1.5

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMINFO = Path("/proc/meminfo")


@dataclass(frozen=True, slots=True, kw_only=True)
class HostLimits:
    """The CPUs and memory this process may use; memory None when it cannot be read."""

    cpus: float
    memory_bytes: int | None

    @property
    def slots(self) -> int:
        """Sessions to run at once by default: the lower of the CPU and the memory bound, >= 1."""
        by_cpu = math.floor(self.cpus * SESSIONS_PER_CPU)
        if self.memory_bytes is None:
            return max(1, by_cpu)
        return max(1, min(by_cpu, self.memory_bytes // SESSION_MEMORY_BYTES))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cgroup_cpus(root: Path) -> float | None:
    """The CPU quota as a number of CPUs (v2 `cpu.max`, else v1 CFS quota), None when unlimited."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota != "max":
            try:
                return int(quota) / int(period or 100_000)
            except (ValueError, ZeroDivisionError):
                return None
        return None
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        quota_text = _read(folder / "cpu.cfs_quota_us")
        period_text = _read(folder / "cpu.cfs_period_us")
        if quota_text is None or period_text is None:
            continue
        try:
            cfs_quota, cfs_period = int(quota_text), int(period_text)
        except ValueError:
            return None
        return cfs_quota / cfs_period if cfs_quota > 0 and cfs_period > 0 else None
    return None


def _cgroup_memory(root: Path) -> int | None:
    """The memory limit in bytes (v2 `memory.max`, else v1 `memory.limit_in_bytes`), or None."""
    for path in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        text = _read(path)
        if text is None:
            continue
        try:
            # v1 says "no limit" with a huge number: the caller takes the lower of it and RAM.
            return int(text) if text != "max" else None
        except ValueError:
            return None
    return None


def _total_memory(meminfo: Path) -> int | None:
    for line in (_read(meminfo) or "").splitlines():
        if line.startswith("MemTotal:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def _host_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_limits(
    *, cgroup_root: Path = CGROUP_ROOT, meminfo: Path = MEMINFO, cpus: int | None = None
) -> HostLimits:
    """The host's CPUs and memory, lowered to the cgroup (v2 or v1) limits where there are any."""
    host_cpus: float = cpus if cpus is not None else _host_cpus()
    quota = _cgroup_cpus(cgroup_root)
    memory = _total_memory(meminfo)
    limit = _cgroup_memory(cgroup_root)
    if limit is not None:
        memory = min(memory, limit) if memory is not None else limit
    return HostLimits(
        cpus=min(host_cpus, quota) if quota is not None else host_cpus, memory_bytes=memory
    )


def default_slots() -> int:
    """Slots sized from this host: min(1.5 per CPU, one per 350 MB of memory), at least 1."""
    return host_limits().slots


def cpu_percent() -> float:
    """The 1-minute load average as a percentage of the host's CPUs (cheap, no sampling)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 0.0
    return round(100.0 * load / (os.cpu_count() or 1), 1)


def rss_bytes() -> int:
    """Resident memory of this process (browsers are separate processes and not included)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # Linux reports KiB, macOS bytes; the peak is the best we have without /proc.
        return peak if sys.platform == "darwin" else peak * 1024

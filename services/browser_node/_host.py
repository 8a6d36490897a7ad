"""How busy this host is, for heartbeats: CPU load and the node's resident memory."""

from __future__ import annotations

import os
import resource
import sys


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

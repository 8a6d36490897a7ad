"""Node host sizing from cgroup and /proc files, node settings and node-link commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.browser_node._host import SESSION_MEMORY_BYTES, HostLimits, host_limits
from services.browser_node._link import Cordon, Drain, _command_from_pb
from services.common.config import NodeSettings
from smartfleet.v1 import node_link_pb2

GIB = 1024**3


def _files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n", encoding="ascii")
    return root


def _meminfo(tmp_path: Path, total: int) -> Path:
    path = tmp_path / "meminfo"
    path.write_text(f"MemTotal:       {total // 1024} kB\nMemFree:        1024 kB\n")
    return path


def test_cgroup_v2_quota_and_memory_limit(tmp_path: Path) -> None:
    """cgroup v2 `cpu.max` 2.5 CPUs and `memory.max` 2 GiB lower the host's 16 CPUs and 64 GiB."""
    root = _files(tmp_path / "cg", {"cpu.max": "250000 100000", "memory.max": str(2 * GIB)})
    limits = host_limits(cgroup_root=root, meminfo=_meminfo(tmp_path, 64 * GIB), cpus=16)
    assert limits == HostLimits(cpus=2.5, memory_bytes=2 * GIB)
    # 2.5 CPUs allow 3 sessions, 2 GiB allow 5: the CPU bound wins.
    assert limits.slots == 3


def test_cgroup_v2_unlimited_uses_host(tmp_path: Path) -> None:
    """`max` in cpu.max and memory.max means the host's CPUs and MemTotal apply."""
    root = _files(tmp_path / "cg", {"cpu.max": "max 100000", "memory.max": "max"})
    limits = host_limits(cgroup_root=root, meminfo=_meminfo(tmp_path, 8 * GIB), cpus=4)
    assert limits == HostLimits(cpus=4, memory_bytes=8 * GIB)
    assert limits.slots == 6


def test_cgroup_v1_quota_and_memory(tmp_path: Path) -> None:
    """cgroup v1 CFS quota (2 CPUs) and memory.limit_in_bytes (1 GiB): memory bound wins."""
    root = _files(
        tmp_path / "cg",
        {
            "cpu,cpuacct/cpu.cfs_quota_us": "200000",
            "cpu,cpuacct/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": str(GIB),
        },
    )
    limits = host_limits(cgroup_root=root, meminfo=_meminfo(tmp_path, 32 * GIB), cpus=8)
    assert limits == HostLimits(cpus=2.0, memory_bytes=GIB)
    assert limits.slots == GIB // SESSION_MEMORY_BYTES == 2


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    """A v1 quota of -1 and the huge "no limit" memory value leave the host's own figures."""
    root = _files(
        tmp_path / "cg",
        {
            "cpu/cpu.cfs_quota_us": "-1",
            "cpu/cpu.cfs_period_us": "100000",
            "memory/memory.limit_in_bytes": "9223372036854771712",
        },
    )
    limits = host_limits(cgroup_root=root, meminfo=_meminfo(tmp_path, 4 * GIB), cpus=2)
    assert limits == HostLimits(cpus=2, memory_bytes=4 * GIB)
    assert limits.slots == 3


def test_no_cgroup_no_meminfo_sizes_from_cpus(tmp_path: Path) -> None:
    """Without cgroup files or /proc/meminfo, 1.5 sessions per CPU."""
    limits = host_limits(cgroup_root=tmp_path / "none", meminfo=tmp_path / "none", cpus=4)
    assert limits == HostLimits(cpus=4, memory_bytes=None)
    assert limits.slots == 6


def test_tiny_host_still_gets_one_slot() -> None:
    """A fraction of a CPU or less memory than one session still leaves one slot."""
    assert HostLimits(cpus=0.5, memory_bytes=100 * 1024 * 1024).slots == 1
    assert HostLimits(cpus=0.2, memory_bytes=None).slots == 1


def test_effective_slots_explicit_or_from_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """Explicit node_slots win; 0 asks the host sizing."""
    monkeypatch.setattr("services.browser_node._host.default_slots", lambda: 7)
    assert NodeSettings(node_slots=3).effective_slots == 3
    assert NodeSettings(node_slots=0).effective_slots == 7


def test_node_proxy_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """SMARTFLEET_NODE_PROXY takes a proxy URL; empty is none; a non-proxy URL is refused."""
    monkeypatch.setenv("SMARTFLEET_NODE_PROXY", "http://user:pw@proxy.corp:3128")
    assert NodeSettings().node_proxy == "http://user:pw@proxy.corp:3128"
    assert NodeSettings(node_proxy="").node_proxy is None
    assert NodeSettings(node_proxy="socks5://10.0.0.1:1080").node_proxy == "socks5://10.0.0.1:1080"
    for bad in ("ftp://proxy:21", "http://proxy:notaport", "http://"):
        with pytest.raises(ValidationError, match="proxy"):
            NodeSettings(node_proxy=bad)


def test_cordon_and_drain_commands_parse() -> None:
    """cordon true/false and drain in a heartbeat response become node commands."""
    assert _command_from_pb(node_link_pb2.NodeCommand(cordon=True)) == Cordon(True)
    assert _command_from_pb(node_link_pb2.NodeCommand(cordon=False)) == Cordon(False)
    assert _command_from_pb(node_link_pb2.NodeCommand(drain=True)) == Drain()

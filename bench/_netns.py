"""Simulated hosts for tests and benchmarks: network namespaces on one bridge, 198.18.0.0/24.

RFC 2544's benchmarking range: nothing here leaves the machine. The root namespace is the
bridge's side at 198.18.0.1 (it reaches the local PostgreSQL); host i is 198.18.0.(10+i).
Everything is created with `ip` and removed by `close()`, also after a failure half way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field

BRIDGE_ADDRESS = "198.18.0.1"
PREFIX = 24


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=20)


def unavailable_reason() -> str | None:
    """Why namespaces cannot be made here (None when they can): root and `ip netns` are needed."""
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"sfprobe{uuid.uuid4().hex[:6]}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass(slots=True)
class Host:
    name: str
    namespace: str
    address: str
    # The root-namespace end of its cable (on the bridge): down means the host is cut off.
    cable: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


@dataclass(slots=True)
class Network:
    """`with Network(3) as net:` — net.hosts[0..2], net.cut(host), net.mend(host)."""

    count: int
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    hosts: list[Host] = field(default_factory=list)
    bridge: str = ""

    def __enter__(self) -> Network:
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        self.bridge = f"sfbr{self.tag}"
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{BRIDGE_ADDRESS}/{PREFIX}", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for number in range(1, self.count + 1):
            host = Host(
                name=f"h{number}",
                namespace=f"sf{self.tag}h{number}",
                address=f"198.18.0.{10 + number}",
                cable=f"sfv{self.tag}{number}",
            )
            self.hosts.append(host)
            inside = f"sfi{self.tag}{number}"
            _ip("netns", "add", host.namespace)
            _ip("link", "add", host.cable, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", host.namespace)
            _ip("link", "set", host.cable, "master", self.bridge)
            _ip("link", "set", host.cable, "up")
            in_ns = ["-n", host.namespace]
            _ip(*in_ns, "addr", "add", f"{host.address}/{PREFIX}", "dev", inside)
            _ip(*in_ns, "link", "set", inside, "up")
            _ip(*in_ns, "link", "set", "lo", "up")

    def cut(self, host: Host) -> None:
        """Pull the host's cable: its packets vanish (no RST), as when a link or host dies."""
        _ip("link", "set", host.cable, "down")

    def mend(self, host: Host) -> None:
        _ip("link", "set", host.cable, "up")

    def close(self) -> None:
        """Remove namespaces (their ends of the cables go with them), cables and the bridge."""
        for host in self.hosts:
            _ip("netns", "del", host.namespace, check=False)
            _ip("link", "del", host.cable, check=False)
        if self.bridge:
            _ip("link", "del", self.bridge, check=False)

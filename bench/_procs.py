"""Resident memory of a process tree, read from /proc (no psutil)."""

from __future__ import annotations

import asyncio
import os
import statistics
from pathlib import Path

_PROC = Path("/proc")


def _ppids() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone while we looked
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def tree(root: int) -> list[int]:
    """`root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppids().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def rss_mb(pid: int) -> float:
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def tree_rss_mb(root: int, *, include_root: bool = True) -> float:
    pids = tree(root)
    return sum(rss_mb(pid) for pid in pids if include_root or pid != root)


class RssSampler:
    """Samples the summed RSS of a process tree every `interval` seconds while it runs."""

    def __init__(self, root: int, *, include_root: bool = True, interval: float = 0.25) -> None:
        self._root = root
        self._include_root = include_root
        self._interval = interval
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            self.samples.append(
                await asyncio.to_thread(tree_rss_mb, self._root, include_root=self._include_root)
            )
            await asyncio.sleep(self._interval)

    async def __aenter__(self) -> RssSampler:
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else 0.0

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)


def self_pid() -> int:
    return os.getpid()

"""Resident memory of a process tree, read from /proc (no psutil)."""

from __future__ import annotations

import os
from collections.abc import Iterable
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

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)


def self_pid() -> int:
    return os.getpid()


def pss_mb(pid: int) -> float | None:
    """Proportional set size: each shared page split among the processes mapping it.

    Summed over Chromium's processes (which share most of their code) it counts the tree once,
    where summed RSS counts shared pages once per process. None when smaps_rollup is unreadable.
    """
    try:
        for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def tree_memory_mb(
    root: int, *, include_root: bool = True, exclude_trees: Iterable[int] = ()
) -> tuple[float, float, bool]:
    """(PSS, RSS, all PSS read) summed over `root`'s tree, without the subtrees rooted at
    `exclude_trees`; a process whose PSS cannot be read counts with its RSS."""
    excluded = {pid for top in exclude_trees for pid in tree(top)}
    pss = rss = 0.0
    every_pss = True
    for pid in tree(root):
        if pid in excluded or (pid == root and not include_root):
            continue
        proportional = pss_mb(pid)  # first, so a process exiting meanwhile is not "unreadable"
        resident = rss_mb(pid)
        # Neither readable: the process exited meanwhile, and counts for nothing.
        every_pss &= proportional is not None or resident == 0.0
        rss += resident
        pss += resident if proportional is None else proportional
    return pss, rss, every_pss


def browser_pids(root: int) -> list[int]:
    """Chromium browser processes under `root`: the executable itself, not its --type= helpers."""
    found = []
    for pid in tree(root):
        try:
            argv = (_PROC / str(pid) / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:  # gone while we looked
            continue
        name = Path(argv[0]).name
        if name.startswith(("chrom", "headless")) and "crashpad" not in name:
            if not any(arg.startswith("--type=") for arg in argv):
                found.append(pid)
    return found

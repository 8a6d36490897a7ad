"""Where a node keeps session artifacts: a directory, one folder per run, job and attempt.

Results reference artifacts by key, a relative path (`<run>/<job>/<attempt>/<name>.png`), so
the reference stays valid whatever the store's root on a given host.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class ArtifactUploader(Protocol):
    """Where a node sends the artifacts it keeps (the scheduler link); returns the stored key."""

    async def put_artifact(
        self, *, run_id: str, job_id: str, attempt: int, name: str, path: Path
    ) -> str: ...


def _component(value: str) -> str:
    """One safe path component: no separators, no leading dot (so never `.`, `..` or hidden)."""
    return _UNSAFE.sub("_", value)[:120].lstrip(".") or "_"


def default_artifact_dir() -> Path:
    return Path(tempfile.gettempdir()) / "smartfleet-artifacts"


class ArtifactStore:
    """A directory of artifacts (the node's `artifact_dir` setting, else <tmp>/smartfleet-artifacts)."""

    def __init__(self, root: Path | str | None = None) -> None:
        configured = str(root).strip() if root is not None else ""
        self.root = Path(configured) if configured else default_artifact_dir()

    def key(
        self, *, run_id: str, job_id: str, attempt: int, name: str, suffix: str = ".png"
    ) -> str:
        return "/".join(
            (_component(run_id), _component(job_id), str(attempt), _component(name) + suffix)
        )

    def path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def discard(self, keys: Iterable[str]) -> None:
        """Delete these artifacts (a session that did not need them); missing ones are fine."""
        for key in keys:
            path = self.path(key)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            # Prune the attempt, job and run folders when they are left empty.
            for folder in list(path.parents)[:3]:
                try:
                    folder.rmdir()
                except OSError:
                    break

"""The scheduler's artifact store: a directory of session artifacts nodes upload, with retention.

Layout `<root>/<run>/<job>/<attempt>/<name>`; the key is the same path with `/`, as results list
it. An upload is written to a hidden temporary file and renamed into place when complete, so a
reader never sees half an artifact and a failed upload leaves nothing behind. Retention removes
artifacts older than `retention`, then the oldest ones while the store holds more than
`max_bytes`; it runs periodically and soon after an upload pushes the store over its size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from services.common.durations import format_duration
from services.common.errors import InvalidArgument, NotFound, SmartfleetError
from services.common.recurring import RecurringTask

logger = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024
# Run and job ids, attempts and file names: one path component each, never `.`/`..`/hidden.
_COMPONENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}")
_PARTIAL_PREFIX = ".upload-"


class ArtifactTooLarge(SmartfleetError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    key: str
    run_id: str
    job_id: str
    attempt: int
    name: str
    size_bytes: int
    created_at: datetime


def _check(value: str, field: str) -> str:
    if not _COMPONENT.fullmatch(value):
        raise InvalidArgument(
            field, "must be 1-128 characters of letters, digits, '_', '-', '.' (no leading dot)"
        )
    return value


def artifact_key(run_id: str, job_id: str, attempt: int, name: str) -> str:
    return f"{run_id}/{job_id}/{attempt}/{name}"


# MB as the settings count it (SMARTFLEET_ARTIFACT_MAX_MB=5120 is 5120 * 1024**2 bytes).
_MB = 1024**2


def retention_text(value: timedelta) -> str:
    """A retention as the settings spell it: `7d`, `36h`, `90m`."""
    if value >= timedelta(days=1) and value % timedelta(days=1) == timedelta(0):
        return f"{value // timedelta(days=1)}d"
    return format_duration(value)


class ArtifactStore:
    def __init__(
        self,
        root: Path,
        *,
        retention: timedelta = timedelta(days=7),
        max_bytes: int = 5 * 1024**3,
        max_upload_bytes: int = 512 * 1024**2,
        sweep_interval: timedelta = timedelta(minutes=10),
    ) -> None:
        self.root = root
        self.retention = retention
        self.max_bytes = max_bytes
        self.max_upload_bytes = max_upload_bytes
        # What the store holds, as of the last sweep plus uploads since (an estimate between).
        self.total_bytes = 0
        self._sweeper = RecurringTask(
            "artifact-retention", self.sweep, interval=sweep_interval, timeout=timedelta(minutes=5)
        )

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await self.sweep()
        self._sweeper.start()
        logger.info(
            "artifact store %s: %.1f MB held, keeping %s and at most %d MB",
            self.root,
            self.total_bytes / _MB,
            retention_text(self.retention),
            self.max_bytes // _MB,
        )

    async def stop(self) -> None:
        await self._sweeper.stop()

    # --- writing ------------------------------------------------------------------------------

    async def put(
        self,
        *,
        run_id: str,
        job_id: str,
        attempt: int,
        name: str,
        chunks: AsyncIterator[bytes],
        declared_size: int = 0,
    ) -> StoredArtifact:
        """Store one artifact from its chunks; replaces an earlier upload of the same key."""
        _check(run_id, "header.run_id")
        _check(job_id, "header.job_id")
        _check(name, "header.name")
        if attempt < 1:
            raise InvalidArgument("header.attempt", "must be >= 1")
        if declared_size > self.max_upload_bytes:
            raise ArtifactTooLarge(self._too_large(declared_size))
        folder = self.root / run_id / job_id / str(attempt)
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        partial = folder / f"{_PARTIAL_PREFIX}{uuid.uuid4().hex}"
        handle = await asyncio.to_thread(open, partial, "wb")
        size = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_upload_bytes:
                    raise ArtifactTooLarge(self._too_large(size))
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(handle.close)
            final = folder / name
            await asyncio.to_thread(os.replace, partial, final)
        except BaseException:
            await asyncio.to_thread(_discard, handle, partial)
            raise
        self.total_bytes += size
        if self.total_bytes > self.max_bytes:
            self._sweeper.trigger()
        return StoredArtifact(
            key=artifact_key(run_id, job_id, attempt, name),
            run_id=run_id,
            job_id=job_id,
            attempt=attempt,
            name=name,
            size_bytes=size,
            created_at=datetime.now(UTC),
        )

    def _too_large(self, size: int) -> str:
        return (
            f"artifact of {size / 1e6:.1f} MB exceeds the store's limit of "
            f"{self.max_upload_bytes / 1e6:.0f} MB per artifact"
        )

    # --- reading ------------------------------------------------------------------------------

    async def listing(
        self, run_id: str, *, job_id: str = "", after_key: str = "", limit: int = 10_000
    ) -> tuple[list[StoredArtifact], str, int]:
        """(a page of the run's artifacts in key order, the key to continue after, total bytes)."""
        _check(run_id, "run_id")
        if job_id:
            _check(job_id, "job_id")
        every = await asyncio.to_thread(self._scan_run, run_id, job_id)
        total = sum(item.size_bytes for item in every)
        page = [item for item in every if item.key > after_key] if after_key else every
        more = len(page) > limit
        page = page[:limit]
        return page, (page[-1].key if more and page else ""), total

    def _scan_run(self, run_id: str, job_id: str) -> list[StoredArtifact]:
        base = self.root / run_id
        jobs = [base / job_id] if job_id else _subdirs(base)
        found = []
        for job_dir in jobs:
            for attempt_dir in _subdirs(job_dir):
                if not attempt_dir.name.isdigit():
                    continue
                for entry in _files(attempt_dir):
                    stat = entry.stat()
                    found.append(
                        StoredArtifact(
                            key=artifact_key(
                                run_id, job_dir.name, int(attempt_dir.name), entry.name
                            ),
                            run_id=run_id,
                            job_id=job_dir.name,
                            attempt=int(attempt_dir.name),
                            name=entry.name,
                            size_bytes=stat.st_size,
                            created_at=datetime.fromtimestamp(stat.st_mtime, UTC),
                        )
                    )
        found.sort(key=lambda item: item.key)
        return found

    def resolve(self, key: str) -> tuple[Path, StoredArtifact]:
        parts = key.split("/")
        if len(parts) != 4 or not parts[2].isdigit():
            raise InvalidArgument("key", "must look like <run>/<job>/<attempt>/<name>")
        run_id, job_id, attempt, name = parts
        for value in (run_id, job_id, name):
            _check(value, "key")
        path = self.root / run_id / job_id / attempt / name
        try:
            stat = path.stat()
        except FileNotFoundError:
            raise NotFound("artifact", key) from None
        return path, StoredArtifact(
            key=key,
            run_id=run_id,
            job_id=job_id,
            attempt=int(attempt),
            name=name,
            size_bytes=stat.st_size,
            created_at=datetime.fromtimestamp(stat.st_mtime, UTC),
        )

    async def read(self, key: str) -> tuple[StoredArtifact, AsyncIterator[bytes]]:
        """The artifact and its bytes in chunks (opened now: retention cannot pull it away)."""
        path, artifact = await asyncio.to_thread(self.resolve, key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise NotFound("artifact", key) from None

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while chunk := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                    yield chunk
            finally:
                handle.close()

        return artifact, chunks()

    # --- retention ----------------------------------------------------------------------------

    async def sweep(self) -> int:
        """Apply retention now; returns how many artifacts were removed."""
        removed, self.total_bytes = await asyncio.to_thread(
            _sweep, self.root, self.retention, self.max_bytes
        )
        if removed:
            logger.info(
                "artifact retention removed %d artifact(s); %.1f MB held",
                removed,
                self.total_bytes / _MB,
            )
        return removed


def _subdirs(path: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(path) if entry.is_dir()]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _files(path: Path) -> list[os.DirEntry[str]]:
    try:
        return [
            entry
            for entry in os.scandir(path)
            if entry.is_file() and not entry.name.startswith(".")
        ]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _discard(handle: object, partial: Path) -> None:
    with contextlib.suppress(OSError):
        handle.close()  # type: ignore[attr-defined]
    with contextlib.suppress(OSError):
        partial.unlink(missing_ok=True)


def _sweep(root: Path, retention: timedelta, max_bytes: int) -> tuple[int, int]:
    """Remove expired artifacts, then the oldest beyond `max_bytes`: (removed, bytes left)."""
    now = time.time()
    expired_before = now - retention.total_seconds()
    # Uploads still being written are left alone unless abandoned for a day.
    abandoned_before = now - 86_400
    kept: list[tuple[float, int, str]] = []
    removed = 0
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            if name.startswith(_PARTIAL_PREFIX):
                if stat.st_mtime < abandoned_before:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                continue
            if stat.st_mtime < expired_before:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
                continue
            kept.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in kept)
    if total > max_bytes:
        kept.sort()
        for _, size, path in kept:
            if total <= max_bytes:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += 1
            total -= size
    if removed:
        _prune_empty(root)
    return removed, total


def _prune_empty(root: Path) -> None:
    for folder, _, _ in os.walk(root, topdown=False):
        if Path(folder) != root:
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only succeeds when empty

"""The scheduler's artifact store: layout, validation, atomic uploads and retention."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument, NotFound
from services.scheduler._artifacts import ArtifactStore, ArtifactTooLarge, retention_text


def files(root: Path) -> list[Path]:
    """Every file under root (sync: called from tests that await nothing meanwhile)."""
    return [path for path in root.rglob("*") if path.is_file()]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def put(store: ArtifactStore, job: str, name: str, data: bytes, attempt: int = 1) -> str:
    stored = await store.put(
        run_id="run-a", job_id=job, attempt=attempt, name=name, chunks=chunks(data)
    )
    return stored.key


async def read_all(store: ArtifactStore, key: str) -> bytes:
    _, stream = await store.read(key)
    return b"".join([part async for part in stream])


async def test_put_list_and_read_round_trip(tmp_path: Path) -> None:
    """What is put comes back byte for byte, listed per run and per job in key order."""
    store = ArtifactStore(tmp_path)
    big = os.urandom(600_000)  # more than one read chunk
    key = await put(store, "job-2", "trace.zip", big)
    await put(store, "job-1", "failure.png", b"png")
    await put(store, "job-2", "session.har", b"{}", attempt=2)
    assert key == "run-a/job-2/1/trace.zip"
    assert await read_all(store, key) == big
    page, after, total = await store.listing("run-a")
    assert [a.key for a in page] == [
        "run-a/job-1/1/failure.png",
        "run-a/job-2/1/trace.zip",
        "run-a/job-2/2/session.har",
    ]
    assert (after, total) == ("", len(big) + 5)
    only, _, _ = await store.listing("run-a", job_id="job-1")
    assert [a.name for a in only] == ["failure.png"]
    first, after, _ = await store.listing("run-a", limit=2)
    rest, _, _ = await store.listing("run-a", after_key=after)
    assert [a.key for a in first + rest] == [a.key for a in page]


@pytest.mark.parametrize("name", ["../x", ".hidden", "a/b", "", "x" * 200])
async def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    """A name that is not one plain path component is refused and nothing is written."""
    store = ArtifactStore(tmp_path)
    with pytest.raises(InvalidArgument):
        await put(store, "job-1", name, b"data")
    assert not files(tmp_path)


@pytest.mark.parametrize("key", ["../../etc/passwd", "run-a/job-1/x/a.png", "a/b/1/.x", "a"])
async def test_unsafe_or_unknown_keys_are_not_read(tmp_path: Path, key: str) -> None:
    """Keys outside the layout are invalid; a well-formed key that was never stored is not found."""
    store = ArtifactStore(tmp_path)
    with pytest.raises(InvalidArgument):
        await store.read(key)
    with pytest.raises(NotFound):
        await store.read("run-a/job-1/1/none.png")


async def test_interrupted_or_oversized_upload_leaves_nothing(tmp_path: Path) -> None:
    """An upload that fails half-way or exceeds the limit is not stored, not even in part."""
    store = ArtifactStore(tmp_path, max_upload_bytes=10)

    async def broken() -> AsyncIterator[bytes]:
        yield b"12345"
        raise ConnectionError("the node went away")

    with pytest.raises(ConnectionError):
        await store.put(run_id="run-a", job_id="j", attempt=1, name="a.zip", chunks=broken())
    with pytest.raises(ArtifactTooLarge):
        await put(store, "j", "b.zip", b"x" * 11)
    with pytest.raises(ArtifactTooLarge):
        await store.put(
            run_id="run-a", job_id="j", attempt=1, name="c", chunks=chunks(), declared_size=11
        )
    assert not files(tmp_path)
    assert (await store.listing("run-a"))[0] == []


async def test_retention_removes_expired_then_oldest_beyond_size(tmp_path: Path) -> None:
    """Artifacts older than the retention go; then the oldest go until the store fits its size."""
    store = ArtifactStore(tmp_path, retention=timedelta(days=1), max_bytes=250)
    now = time.time()
    ages = {"expired": 2 * 86_400, "old": 3_000, "middle": 2_000, "new": 1_000}
    for name, age in ages.items():
        key = await put(store, name, "a.bin", b"x" * 100)
        os.utime(store.resolve(key)[0], (now - age, now - age))
    assert await store.sweep() == 2
    page, _, total = await store.listing("run-a")
    assert [a.job_id for a in page] == ["middle", "new"]
    assert total == store.total_bytes == 200
    assert not (tmp_path / "run-a" / "expired").exists()  # empty folders pruned


async def test_upload_over_the_size_limit_triggers_a_sweep(tmp_path: Path) -> None:
    """The retention loop runs soon after uploads push the store over its size, not only hourly."""
    store = ArtifactStore(tmp_path, max_bytes=150, sweep_interval=timedelta(hours=1))
    await store.start()
    try:
        first = await put(store, "one", "a.bin", b"x" * 100)
        old = time.time() - 60
        os.utime(store.resolve(first)[0], (old, old))
        await put(store, "two", "a.bin", b"x" * 100)
        for _ in range(100):
            if not (tmp_path / "run-a" / "one").exists():
                break
            await asyncio.sleep(0.02)
        page, _, _ = await store.listing("run-a")
        assert [a.job_id for a in page] == ["two"]
    finally:
        await store.stop()


async def test_start_logs_retention_as_the_settings_spell_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start line says `keeping 7d and at most 5120 MB` (SMARTFLEET_ARTIFACT_MAX_MB's unit)."""
    store = ArtifactStore(tmp_path, retention=timedelta(days=7), max_bytes=5120 * 1024**2)
    with caplog.at_level(logging.INFO, logger="services.scheduler._artifacts"):
        await store.start()
        await store.stop()
    assert "keeping 7d and at most 5120 MB" in caplog.text
    assert retention_text(timedelta(hours=36)) == "36h"

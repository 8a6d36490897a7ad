"""Artifacts at the node: which files a session keeps under each policy, and their upload."""

from __future__ import annotations

import asyncio
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from demo import DemoSite
from services.browser_node._artifacts import ArtifactStore
from services.browser_node._pool import BrowserPool
from services.browser_node._session import SessionRunner
from services.common.errors import Unavailable
from services.common.types import Outcome
from tests.integration.test_browser_node import envelope

pytestmark = [pytest.mark.browser]

EVERYTHING = {"trace.zip", "session.har"}


def files(root: Path) -> list[Path]:
    """Every file under root (sync: called from tests that await nothing meanwhile)."""
    return [path for path in root.rglob("*") if path.is_file()]


@pytest.fixture
async def pool() -> AsyncIterator[BrowserPool]:
    async with BrowserPool() as browser_pool:
        yield browser_pool


def kept(store: ArtifactStore, keys: tuple[str, ...]) -> set[str]:
    assert all(store.path(key).is_file() for key in keys), keys
    return {key.rsplit("/", 1)[-1] for key in keys}


@pytest.mark.parametrize(
    ("policy", "path", "expected"),
    [
        ("never", "/about", set()),
        ("never", "/missing", set()),
        ("on_failure", "/about", set()),
        ("on_failure", "/missing", {"failure.png", *EVERYTHING}),
        ("always", "/about", {"final.png", *EVERYTHING}),
        ("always", "/missing", {"failure.png", *EVERYTHING}),
    ],
)
async def test_policy_decides_what_a_session_keeps(
    pool: BrowserPool,
    demo_site: DemoSite,
    tmp_path: Path,
    policy: str,
    path: str,
    expected: set[str],
) -> None:
    """Screenshot, trace and HAR are kept exactly when the policy says; discarded files leave no trace."""
    store = ArtifactStore(tmp_path)
    runner = SessionRunner(pool=pool, node_id="node-test", artifacts=store)
    result = await runner.run(envelope(f"{demo_site.url}{path}", artifacts=policy))
    assert (result.outcome is Outcome.OK) == (path == "/about"), result.error
    assert kept(store, result.artifacts) == expected
    on_disk = {p.name for p in files(tmp_path)}
    assert on_disk == expected


async def test_trace_and_har_are_complete(
    pool: BrowserPool, demo_site: DemoSite, tmp_path: Path
) -> None:
    """The kept trace opens as a Playwright trace and the HAR lists the session's requests."""
    store = ArtifactStore(tmp_path)
    runner = SessionRunner(pool=pool, node_id="node-test", artifacts=store)
    result = await runner.run(envelope(f"{demo_site.url}/about", artifacts="always"))
    paths = {key.rsplit("/", 1)[-1]: store.path(key) for key in result.artifacts}
    with zipfile.ZipFile(paths["trace.zip"]) as trace:
        events = trace.read("trace.trace").decode()
    assert "/about" in events
    har = json.loads(paths["session.har"].read_text())
    assert [entry["response"]["status"] for entry in har["log"]["entries"]][:1] == [200]


class Uploads:
    """An uploader like the scheduler link: fails `failures` times with Unavailable first."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.stored: dict[str, bytes] = {}

    async def put_artifact(
        self, *, run_id: str, job_id: str, attempt: int, name: str, path: Path
    ) -> str:
        if self.failures:
            self.failures -= 1
            raise Unavailable("scheduler PutArtifact: UNAVAILABLE")
        key = f"{run_id}/{job_id}/{attempt}/{name}"
        self.stored[key] = await asyncio.to_thread(path.read_bytes)
        return key


async def test_kept_artifacts_are_uploaded_then_removed_locally(
    pool: BrowserPool, demo_site: DemoSite, tmp_path: Path
) -> None:
    """With an uploader, the result lists the stored keys and the node keeps no copy; a brief outage is retried."""
    uploads = Uploads(failures=1)
    runner = SessionRunner(
        pool=pool, node_id="node-test", artifacts=ArtifactStore(tmp_path), uploader=uploads
    )
    result = await runner.run(envelope(f"{demo_site.url}/missing", artifacts="on_failure"))
    assert set(result.artifacts) == set(uploads.stored)
    assert {key.rsplit("/", 1)[-1] for key in uploads.stored} == {"failure.png", *EVERYTHING}
    assert uploads.stored["run-1/job-1/1/failure.png"].startswith(b"\x89PNG")
    assert not files(tmp_path)


async def test_artifacts_that_cannot_be_stored_are_not_referenced(
    pool: BrowserPool, demo_site: DemoSite, tmp_path: Path
) -> None:
    """When the store stays unavailable, the result still comes, without keys that lead nowhere."""
    runner = SessionRunner(
        pool=pool,
        node_id="node-test",
        artifacts=ArtifactStore(tmp_path),
        uploader=Uploads(failures=1_000),
    )
    result = await runner.run(envelope(f"{demo_site.url}/missing", artifacts="on_failure"))
    assert result.outcome is Outcome.HTTP_ERROR
    assert result.artifacts == ()
    assert not files(tmp_path)

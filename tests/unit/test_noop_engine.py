"""The benchmark-only noop engine: explicit everywhere, a default nowhere, and what it reports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cli._stack import Stack
from services.browser_node._noop import NOOP_ENGINE, NoopRunner
from services.common.bus import node_pools
from services.common.config import NodeSettings
from services.common.spec import parse_spec
from services.common.types import Cell, ErrorClass, JobEnvelope, Outcome


def envelope(engine: str = NOOP_ENGINE) -> JobEnvelope:
    return JobEnvelope(
        job_id="run-1-7",
        attempt=2,
        run_id="run-1",
        index=7,
        target_url="http://127.0.0.1:9/",
        engine=engine,
        session_timeout=timedelta(seconds=30),
        deadline=datetime.now(UTC) + timedelta(minutes=1),
        cell=Cell(engine=engine),
    )


async def test_noop_runner_completes_at_once_with_ok() -> None:
    """The job's result is ok, engine noop, with the envelope's identity and sane timestamps."""
    before = datetime.now(UTC)
    result = await NoopRunner(node_id="bench").run(envelope())
    assert (result.job_id, result.attempt, result.run_id, result.index) == (
        "run-1-7",
        2,
        "run-1",
        7,
    )
    assert (result.outcome, result.error_class, result.engine) == (
        Outcome.OK,
        ErrorClass.NONE,
        "noop",
    )
    assert result.node_id == "bench" and result.cell == Cell(engine="noop")
    assert before <= result.started_at <= result.finished_at <= datetime.now(UTC)
    assert result.duration_ms >= 0


async def test_noop_runner_refuses_other_engines_and_reports_cancellation() -> None:
    """A chromium envelope is not run (transient, for another node); a cancelled run says so."""
    runner = NoopRunner(node_id="bench")
    refused = await runner.run(envelope("chromium"))
    assert (refused.outcome, refused.error_class) == (Outcome.INTERNAL_ERROR, ErrorClass.TRANSIENT)
    cancelled = runner.cancelled(envelope())
    assert cancelled.outcome is Outcome.CANCELLED


def test_noop_is_never_a_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Spec, node settings and the local stack all default to chromium; noop must be named."""
    monkeypatch.delenv("SMARTFLEET_NODE_ENGINE", raising=False)
    assert parse_spec({"targets": ["http://127.0.0.1/"], "sessions": 1}).engines == ("chromium",)
    assert parse_spec(
        {"targets": ["http://127.0.0.1/"], "sessions": 1, "engine": "noop"}
    ).engines == ("noop",)
    assert NodeSettings().node_engine == "chromium"
    assert Stack(data_dir=tmp_path)._env_for("node")["SMARTFLEET_NODE_ENGINE"] == "chromium"
    assert not any(pool.startswith("noop") for pool in node_pools(("chromium",), {"region": "eu"}))

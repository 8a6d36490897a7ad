"""Issue-3 features as a user drives them: smartctl against the whole local stack, real Chromium."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from cli._stack import Stack
from demo import DemoSite
from tests.e2e.test_stack import smartctl, stack

__all__ = ["stack"]  # the fixture this module uses
pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(240)]


async def ctl(stack: Stack, *args: str) -> tuple[int, str, str]:
    result = await asyncio.to_thread(smartctl, stack, *args)
    return result.returncode, result.stdout, result.stderr


async def create_from(stack: Stack, tmp_path: Path, spec: dict[str, object]) -> str:
    spec_file = tmp_path / "run.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    code, out, err = await ctl(stack, "run", "create", "-f", str(spec_file), "--start")
    assert code == 0, err
    return out.strip()


def exported(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_steps_and_matrix_through_smartctl(
    stack: Stack, demo_site: DemoSite, tmp_path: Path
) -> None:
    """A spec file with steps and a 2:1 device matrix runs to completion; results carry extracts and cells."""
    run_id = await create_from(
        stack,
        tmp_path,
        {
            "name": "form-matrix",
            "targets": [f"{demo_site.url}/form"],
            "sessions": 6,
            "matrix": {
                "devices": [
                    {"name": "Desktop Chrome", "weight": 2},
                    {"name": "Pixel 7", "weight": 1},
                ]
            },
            "steps": [
                {"goto": {}},
                {"fill": {"selector": "#name", "value": "Ada"}},
                {"select": {"selector": "#colour", "values": ["blue"]}},
                {"click": {"selector": "#greet"}},
                {"assert": {"text": "Hello, Ada (blue)!"}},
                {"extract": {"name": "greeting", "selector": "#greeting"}},
                {"click": {"selector": "#cookie-banner"}, "optional": True, "timeout": "300ms"},
            ],
        },
    )
    code, out, err = await ctl(stack, "run", "watch", run_id, "-o", "json")
    assert code == 0, out + err
    export = tmp_path / "results.jsonl"
    code, _, err = await ctl(
        stack, "run", "results", run_id, "--format", "jsonl", "--out", str(export)
    )
    assert code == 0, err
    results = exported(export)
    assert len(results) == 6
    assert {r["extracted"]["greeting"] for r in results} == {"Hello, Ada (blue)!"}
    devices = sorted(r["cell"]["device"] for r in results)
    assert devices == ["Desktop Chrome"] * 4 + ["Pixel 7"] * 2
    assert all(r["steps"][-1]["status"] == "skipped" for r in results)
    code, out, _ = await ctl(stack, "run", "watch", run_id)
    assert "Pixel 7" in out, "the summary breaks results down by cell"


async def test_accounts_keep_their_cookies_apart(
    stack: Stack, demo_site: DemoSite, tmp_path: Path
) -> None:
    """Two accounts' sessions each see only their own signed-in cookie."""
    host = demo_site.url.split("//", 1)[1].split(":")[0]
    for name in ("alice", "bob"):
        state = {
            "cookies": [
                {
                    "name": "session",
                    "value": name,
                    "domain": host,
                    "path": "/",
                    "expires": -1,
                    "httpOnly": False,
                    "secure": False,
                    "sameSite": "Lax",
                }
            ],
            "origins": [],
        }
        state_file = tmp_path / f"{name}.json"
        state_file.write_text(json.dumps(state))
        code, _, err = await ctl(
            stack,
            "accounts",
            "create",
            name,
            "--label",
            "team=e2e",
            "--storage-state",
            str(state_file),
        )
        assert code == 0, err
    run_id = await create_from(
        stack,
        tmp_path,
        {
            "name": "accounts",
            "targets": [f"{demo_site.url}/me"],
            "sessions": 4,
            "accounts": {"labels": {"team": "e2e"}},
            "steps": [{"goto": {}}, {"extract": {"name": "who", "selector": "#who"}}],
        },
    )
    code, out, err = await ctl(stack, "run", "watch", run_id, "-o", "json")
    assert code == 0, out + err
    export = tmp_path / "accounts.jsonl"
    await ctl(stack, "run", "results", run_id, "--format", "jsonl", "--out", str(export))
    results = exported(export)
    assert sorted(r["account"] for r in results) == ["alice", "alice", "bob", "bob"]
    assert all(r["extracted"]["who"] == f"signed in as {r['account']}" for r in results)


async def test_pause_resume_cancel_through_smartctl(
    stack: Stack, demo_site: DemoSite, tmp_path: Path
) -> None:
    """Pause holds new sessions, resume continues, cancel ends the run with partial results kept."""
    run_id = await create_from(
        stack,
        tmp_path,
        {"name": "lifecycle", "targets": [f"{demo_site.url}/slow?ms=400"], "sessions": 60},
    )
    for verb, status in (("pause", "paused"), ("resume", "running"), ("cancel", "cancelled")):
        await asyncio.sleep(1.0)
        code, out, err = await ctl(stack, "run", verb, run_id)
        assert code == 0, err
        assert f"is {status}" in out
    code, out, _ = await ctl(stack, "run", "get", run_id, "-o", "json")
    counters = json.loads(out)["counters"]
    assert 0 < int(counters["succeeded"]) < 60
    assert int(counters["succeeded"]) + int(counters["failed"]) + int(counters["cancelled"]) == 60
    code, out, _ = await ctl(stack, "run", "watch", run_id)
    assert code == 2 and "cancelled" in out

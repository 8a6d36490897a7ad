"""smartctl accounts/schedules against a real gateway and scheduler (the gateway forwards)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli.main import app
from tests.integration.test_gateway import TOKEN, gateway

__all__ = ["gateway"]  # fixtures used here
pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


async def smartctl(gateway: str, *args: str) -> Result:
    # The CLI is synchronous; the servers run on this event loop, so it runs in a thread.
    return await asyncio.to_thread(
        runner.invoke, app, ["--gateway", gateway, "--token", TOKEN, *args]
    )


async def test_accounts_round_trip_through_smartctl(gateway: str, tmp_path: Path) -> None:
    """create with a storage-state file, ls/get as JSON, update, delete; errors exit 2."""
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"cookies": [{"name": "sid", "value": "v"}], "origins": []}))
    created = await smartctl(
        gateway, "accounts", "create", "shop-1", "--label", "pool=shop", "--proxy",
        "http://127.0.0.1:3128", "--per-hour", "10", "--cooldown", "5m", "--storage-state",
        str(state), "-o", "json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    account = json.loads(created.stdout)
    assert account["has_storage_state"] is True and account["cooldown"] == "5m"
    assert "storage_state" not in account
    listed = await smartctl(gateway, "accounts", "ls", "-o", "json")
    assert [a["name"] for a in json.loads(listed.stdout)["accounts"]] == ["shop-1"]
    updated = await smartctl(gateway, "accounts", "update", "shop-1", "--disable", "--proxy", "")
    assert updated.exit_code == 0, updated.output
    got = json.loads((await smartctl(gateway, "accounts", "get", "shop-1", "-o", "json")).stdout)
    assert (got["status"], got["proxy"], got["sessions_per_hour"]) == ("disabled", "", 10)
    bad = await smartctl(gateway, "accounts", "create", "x", "--proxy", "ftp://p")
    assert bad.exit_code == 2 and "account.proxy" in bad.output
    assert (await smartctl(gateway, "accounts", "delete", "shop-1")).exit_code == 0
    missing = await smartctl(gateway, "accounts", "get", "shop-1")
    assert missing.exit_code == 2 and "not found" in missing.output


async def test_schedules_round_trip_through_smartctl(gateway: str, tmp_path: Path) -> None:
    """create from a spec file, pause, resume, ls, delete; a bad cron exits 2 naming it."""
    spec = tmp_path / "run.yaml"
    spec.write_text("targets: [http://127.0.0.1:9/]\nsessions: 2\nlimits: {session_timeout: 30s}\n")
    created = await smartctl(
        gateway, "schedules", "create", "nightly", "--cron", "0 3 * * *", "--timezone",
        "Europe/Berlin", "-f", str(spec), "-o", "json",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    schedule = json.loads(created.stdout)
    assert schedule["template"]["sessions"] == 2 and schedule["timezone"] == "Europe/Berlin"
    paused = await smartctl(gateway, "schedules", "pause", "nightly", "-o", "json")
    assert json.loads(paused.stdout)["paused"] is True
    resumed = await smartctl(gateway, "schedules", "resume", "nightly")
    assert resumed.exit_code == 0 and "next tick" in resumed.stdout
    listed = await smartctl(gateway, "schedules", "ls")
    assert "nightly" in listed.stdout and "0 3 * * *" in listed.stdout
    bad = await smartctl(
        gateway, "schedules", "create", "b", "--cron", "nope", "-t", "http://127.0.0.1/"
    )
    assert bad.exit_code == 2 and "schedule.cron" in bad.output
    assert (await smartctl(gateway, "schedules", "delete", "nightly")).exit_code == 0
    assert "no schedules yet" in (await smartctl(gateway, "schedules", "ls")).stderr

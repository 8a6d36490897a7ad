"""`run validate` / `run create --dry-run` and the plan summary behind them, without a fleet."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from cli._plan_view import ALLOWLIST_UNKNOWN, bar
from cli.main import app
from services.common.spec import parse_spec
from services.scheduler._plan_summary import summarize_plan
from services.scheduler._planner import RunPlan

runner = CliRunner()
START = datetime(2025, 6, 1, 12, tzinfo=UTC)


def test_summary_matches_the_plan_job_by_job() -> None:
    """Cells, targets and every timeline bucket agree with RunPlan's own jobs, counted one by one."""
    spec = parse_spec(
        {
            "targets": ["http://a.test/", "http://b.test:8080/x", "http://a.test/y"],
            "sessions": 1000,
            "pacing": {
                "mode": "phases",
                "phases": [
                    {"duration": "1m", "arrival_rate": 5, "ramp_to": 20},
                    {"duration": "2m", "arrival_rate": 3},
                ],
            },
            "matrix": {"devices": [{"name": "Pixel 7", "weight": 7}, {"name": "Desktop Chrome", "weight": 3}]},
            "steps": [{"goto": {"url": "http://c.test/login"}}, {"goto": {"url": "http://{host}/t"}}],
        }
    )  # fmt: skip
    summary = summarize_plan(spec, started_at=START)
    plan = RunPlan(spec, started_at=START)
    jobs = [plan.job(index) for index in range(spec.sessions)]
    assert {c.key: c.sessions for c in summary.cells} == {
        key: sum(1 for job in jobs if job.cell.key == key) for key in {j.cell.key for j in jobs}
    }
    assert [(t.url, t.sessions) for t in summary.targets] == [
        ("http://a.test/", 334), ("http://b.test:8080/x", 333), ("http://a.test/y", 333)
    ]  # fmt: skip
    assert summary.hosts == ("a.test", "b.test", "c.test")
    assert summary.span == jobs[-1].due - START
    for bucket in summary.timeline:
        low, high = START + bucket.offset, START + bucket.offset + summary.bucket
        assert bucket.sessions == sum(1 for job in jobs if low <= job.due < high)
    assert sum(bucket.sessions for bucket in summary.timeline) == 1000
    assert len(summary.timeline) <= 24


def test_summary_of_a_100m_session_run_is_instant() -> None:
    """A 100M-session window run is summarised without touching its sessions (well under a second here)."""
    spec = parse_spec(
        {"targets": ["http://a.test/"], "sessions": 100_000_000, "pacing": {"mode": "window", "window": "24h"}}
    )  # fmt: skip
    started = time.process_time()
    summary = summarize_plan(spec, started_at=START)
    spent = time.process_time() - started
    assert summary.bucket == timedelta(hours=1) and len(summary.timeline) == 24
    assert sum(bucket.sessions for bucket in summary.timeline) == 100_000_000
    assert spent < 5, spent  # generous: O(buckets·log N), not O(N)


def test_fast_pacing_is_one_bucket_and_bars_scale() -> None:
    """Fast pacing puts every session at the start; bars are proportional, a non-empty bucket shows."""
    summary = summarize_plan(
        parse_spec({"targets": ["http://a/"], "sessions": 7}), started_at=START
    )
    assert summary.bucket == timedelta(0) and [b.sessions for b in summary.timeline] == [7]
    assert bar(10, 10, 4) == "████" and bar(5, 10, 4) == "██"
    assert bar(0.01, 10, 4) == "▏" and bar(0, 10, 4) == ""


def test_validate_prints_the_plan_and_needs_no_gateway(tmp_path: Path) -> None:
    """`run validate -f` prints cells, targets, hosts and a timeline at 80 columns, with no stack running."""
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: smoke\ntargets: [http://127.0.0.1:8080/, 'http://${SHOP_HOST:-shop.test}/cart']\n"
        "sessions: 600\npacing: {mode: window, window: 10m}\n"
    )
    result = runner.invoke(
        app,
        ["--data-dir", str(tmp_path / "none"), "run", "validate", "-f", str(spec)],
        env={"COLUMNS": "80"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "600 sessions" in out and "http://shop.test/cart" in out
    assert "shop.test" in out and ALLOWLIST_UNKNOWN in out
    assert "sessions per minute" in out and "60.0/min" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    as_json = runner.invoke(app, ["run", "validate", "-f", str(spec), "-o", "json"])
    data = json.loads(as_json.stdout)
    assert data["sessions"] == 600 and data["span"] == "9m59s"
    assert sum(item["sessions"] for item in data["timeline"]) == 600
    as_csv = runner.invoke(app, ["run", "validate", "-f", str(spec), "-o", "csv"]).stdout
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert sum(int(row["sessions"]) for row in rows) == 600 and rows[1]["offset_s"] == "30.0"
    assert data["hosts"] == [
        {"host": "127.0.0.1", "allowlist": ALLOWLIST_UNKNOWN},
        {"host": "shop.test", "allowlist": ALLOWLIST_UNKNOWN},
    ]


def test_dry_run_creates_nothing_and_bad_specs_name_the_field(tmp_path: Path) -> None:
    """`run create --dry-run` answers with no gateway at all; a bad field fails locally, exit 2."""
    base = ["--data-dir", str(tmp_path / "none"), "run", "create"]
    ok = runner.invoke(
        app, [*base, "-t", "http://127.0.0.1/", "-n", "3", "--dry-run", "-o", "yaml"]
    )
    assert ok.exit_code == 0, ok.output
    assert "sessions: 3" in ok.stdout
    bad = runner.invoke(app, [*base, "-t", "ftp://127.0.0.1/", "--dry-run"])
    assert bad.exit_code == 2
    assert "error: invalid argument: spec.targets[0]" in bad.stderr
    unset = tmp_path / "unset.yaml"
    unset.write_text("targets: ['${SMARTFLEET_TEST_UNSET_VAR}']\n")
    missing = runner.invoke(app, [*base, "-f", str(unset), "--dry-run"])
    assert missing.exit_code == 2
    assert "SMARTFLEET_TEST_UNSET_VAR is not set" in missing.stderr

"""smartctl against one real stack (module-scoped): every read command with every -o, the watch
summary with failure reasons, a draft, reports; and `up`'s options on a second, noop stack."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml
from typer.testing import CliRunner, Result

from cli._stack import Stack
from cli.main import app
from demo import DemoSite
from tests.conftest import POSTGRES_URL, postgres_available

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]
runner = CliRunner()
FORMATS = ("table", "wide", "json", "jsonl", "csv", "yaml")
PROTO_SPELLINGS = ("OUTCOME_", "RUN_STATUS_", "NODE_STATE_", "ERROR_CLASS_")


class Fleet:
    """A running stack, the demo site, and runs made once for the whole module."""

    def __init__(self, stack: Stack, site: DemoSite) -> None:
        self.stack = stack
        self.site = site
        self.failing_run = ""
        self.draft_run = ""

    def ctl(self, *args: str, columns: int = 80) -> Result:
        return runner.invoke(
            app,
            ["--gateway", self.stack.gateway_addr, "--token", self.stack.token, *args],
            env={"COLUMNS": str(columns), "NO_COLOR": "1"},
        )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    # Its own loop for the whole module: the services are subprocesses that outlive each test.
    loop = asyncio.new_event_loop()
    stack = Stack(
        data_dir=tmp_path_factory.mktemp("cli-stack") / "stack",
        gateway_port=0,
        scheduler_port=0,
        node_slots=4,
    )
    loop.run_until_complete(stack.start())
    try:
        with DemoSite() as site:
            fleet = Fleet(stack, site)
            spec = tmp_path_factory.mktemp("specs") / "failing.yaml"
            spec.write_text(
                f"name: checkout <smoke>\ntargets: [{site.url}/about, {site.url}/missing]\n"
                "sessions: 6\nartifacts: on_failure\nretry: {max_attempts: 1}\n"
                "steps: [{goto: {}}, {assert: {text: About}}]\n"
            )
            created = fleet.ctl("run", "create", "-f", str(spec), "--start")
            assert created.exit_code == 0, created.output
            fleet.failing_run = created.stdout.strip()
            draft = fleet.ctl("run", "create", "-t", f"{site.url}/", "-n", "2", "--name", "later")
            fleet.draft_run = draft.stdout.strip()
            watched = fleet.ctl("run", "watch", fleet.failing_run, "--timeout", "3m")
            assert watched.exit_code == 1, watched.output
            yield fleet
    finally:
        loop.run_until_complete(stack.stop())
        loop.close()


def parsed(fmt: str, text: str) -> object:
    if fmt == "json":
        return json.loads(text)
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if fmt == "yaml":
        return yaml.safe_load(text)
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text)))
    return text


def test_every_read_command_with_every_output(fleet: Fleet) -> None:
    """run ls|get|jobs|results|artifacts|watch, nodes ls, hosts ls, accounts ls, schedules ls, version: each -o parses, one spelling."""
    run = fleet.failing_run
    commands = {
        "run ls": ["run", "ls"],
        "run get": ["run", "get", run],
        "run jobs": ["run", "jobs", run],
        "run results": ["run", "results", run],
        "run artifacts": ["run", "artifacts", run],
        "nodes ls": ["nodes", "ls"],
        "hosts ls": ["hosts", "ls"],
        "accounts ls": ["accounts", "ls"],
        "schedules ls": ["schedules", "ls"],
        "run watch": ["run", "watch", run],  # exits 1: the run completed with failures
    }
    for name, args in commands.items():
        for fmt in FORMATS:
            result = fleet.ctl(*args, "-o", fmt)
            expected = 1 if name == "run watch" else 0
            assert result.exit_code == expected, (name, fmt, result.output)
            text = result.stdout
            assert not any(spelling in text for spelling in PROTO_SPELLINGS), (name, fmt, text)
            data = parsed(fmt, text)
            if fmt == "table" and text:
                assert all(len(line) <= 80 for line in text.splitlines()), (name, text)
            if name == "run ls" and fmt == "json":
                runs = data["runs"]  # type: ignore[index]
                assert {r["id"] for r in runs} >= {fleet.failing_run, fleet.draft_run}
                assert all(isinstance(r["counters"]["planned"], int) for r in runs)
                assert {r["status"] for r in runs} == {"completed", "draft"}
            if name == "run results" and fmt in ("csv", "jsonl"):
                rows = data
                assert len(rows) == 6  # type: ignore[arg-type]
                outcomes = {row["outcome"] for row in rows}  # type: ignore[union-attr,index]
                assert outcomes == {"ok", "http_error"}, outcomes
            if name in ("run jobs", "run results", "run ls") and fmt in ("table", "wide"):
                ids = [run] if name == "run ls" else [f"{run}-{index}" for index in range(6)]
                for identifier in ids:
                    assert identifier in text, (name, fmt, identifier, text)
    verbose = fleet.ctl("-v", "run", "ls")
    assert f"gateway {fleet.stack.gateway_addr} (from --gateway)" in verbose.stderr
    assert "ListRunsRequest answered in" in verbose.stderr
    assert fleet.stack.token not in verbose.stderr, "the token never reaches the output"
    quiet = fleet.ctl("-q", "run", "results", fleet.failing_run, "-o", "csv")
    assert quiet.stderr == "" and quiet.stdout.startswith("job_id,")
    version = fleet.ctl("version", "-o", "json")
    assert version.exit_code == 0, version.output
    nodes = json.loads(version.stdout)["nodes"]
    assert nodes and nodes[0]["version"] and nodes[0]["playwright_version"]


def test_results_table_has_an_error_column_and_watch_names_the_reasons(fleet: Fleet) -> None:
    """The results table shows why sessions failed; `run watch` lists the top reasons with a count and a job."""
    results = fleet.ctl("run", "results", fleet.failing_run)
    assert "ERROR" in results.stdout.splitlines()[0]
    assert "HTTP 404" in results.stdout
    summary = fleet.ctl("run", "watch", fleet.failing_run)
    assert summary.exit_code == 1
    text = summary.stdout
    assert "top failure reasons:" in text
    reason = next(line for line in text.splitlines() if "http_error:" in line)
    assert reason.split()[0] == "3" and "404" in " ".join(text.split())
    assert f"e.g. job {fleet.failing_run}-" in text
    assert "3 of 6 sessions failed" in text
    data = json.loads(fleet.ctl("run", "watch", fleet.failing_run, "-o", "json").stdout)
    assert data["failures"]["reasons"][0]["count"] == 3
    assert data["stats"]["results"] == 6 and data["exit_code"] == 1


def test_validate_asks_the_server_which_hosts_its_allowlist_allows(fleet: Fleet) -> None:
    """`run validate` with a gateway: loopback is allowed, a host outside the scheduler's
    allowlist is refused by name (exit 2), and nothing is created either way."""

    def run_ids() -> list[str]:
        listed = json.loads(fleet.ctl("run", "ls", "-o", "json").stdout)
        return [run["id"] for run in (listed["runs"] if isinstance(listed, dict) else listed)]

    before = run_ids()
    ok = fleet.ctl("run", "validate", "--target", f"{fleet.site.url}/", "-o", "json")
    assert ok.exit_code == 0, ok.output
    assert [h["allowlist"] for h in json.loads(ok.stdout)["hosts"]] == ["allowed"]
    refused = fleet.ctl(
        "run", "validate", "--target", "http://shop.example.net/", "--sessions", "3"
    )
    assert refused.exit_code == 2
    assert "refused" in refused.stdout and "shop.example.net" in refused.output
    assert run_ids() == before


def test_version_names_the_gateway_scheduler_and_nodes(fleet: Fleet) -> None:
    """`smartctl version` asks GetServerInfo: the gateway and the scheduler behind it, each with
    its version and address, and the node's version."""
    data = json.loads(fleet.ctl("version", "-o", "json").stdout)
    assert [c["name"] for c in data["servers"]] == ["gateway", "scheduler"]
    assert all(c["version"] and c["address"] for c in data["servers"])
    assert data["nodes"] and data["nodes"][0]["version"]
    shown = fleet.ctl("version")
    assert shown.exit_code == 0 and "scheduler: " in shown.stdout, shown.output


def test_watch_on_a_draft_exits_at_once_or_times_out(fleet: Fleet) -> None:
    """On a draft `run watch` exits 2 with a one-line hint; with --wait-start it waits until --timeout."""
    started = time.monotonic()
    draft = fleet.ctl("run", "watch", fleet.draft_run)
    assert draft.exit_code == 2
    assert draft.stderr.count("\n") == 1 and "is a draft" in draft.stderr
    waited = fleet.ctl("run", "watch", fleet.draft_run, "--wait-start", "--timeout", "2s")
    assert waited.exit_code == 2
    assert "gave up after 2s" in waited.stderr and "draft" in waited.stderr
    assert time.monotonic() - started < 60


def test_reports_parse_back(fleet: Fleet, tmp_path: Path) -> None:
    """`run report --format junit` parses as JUnit; `--format html` inlines the failures' screenshots."""
    junit = tmp_path / "report.xml"
    made = fleet.ctl("run", "report", fleet.failing_run, "--format", "junit", "--out", str(junit))
    assert made.exit_code == 0, made.output
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("name") == "checkout <smoke>"
    cases = suite.findall("testcase")
    assert len(cases) == 2
    failed = [case for case in cases if case.find("failure") is not None]
    assert [case.get("classname") for case in failed] == [f"{fleet.site.url}/missing"]
    assert "3 of 3 sessions failed" in (failed[0].find("failure").get("message") or "")  # type: ignore[union-attr]
    page = tmp_path / "report.html"
    made = fleet.ctl("run", "report", fleet.failing_run, "--format", "html", "--out", str(page))
    assert made.exit_code == 0, made.output
    html = page.read_text()
    assert "checkout &lt;smoke&gt;" in html and "<smoke>" not in html
    assert 'src="data:image/png;base64,' in html


@pytest.fixture
async def postgres_url() -> object:
    if not postgres_available():
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    import asyncpg

    admin = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    name = f"sf_cli_{uuid.uuid4().hex[:10]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_up_takes_free_ports_several_nodes_and_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    """A taken default port gives way to a free one; --nodes 2 registers two nodes; artifacts live in the data dir."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(
            data_dir=tmp_path / "stack",
            gateway_port=port,
            scheduler_port=0,
            free_ports=["gateway"],
            nodes=2,
            node_engine="noop",
            node_slots=8,
            database_url=postgres_url,
            allowed_hosts="shop.example.com",
        )
        async with stack:
            assert stack.port_notes == [f"gateway: 127.0.0.1:{port} is in use; a free port instead"]
            assert not stack.gateway_addr.endswith(f":{port}")
            assert stack.info.artifact_dir == str(stack.data_dir / "artifacts")
            args = ["--gateway", stack.gateway_addr, "--token", stack.token]
            nodes: list[dict[str, object]] = []
            for _ in range(60):
                listed = await asyncio.to_thread(
                    runner.invoke, app, [*args, "nodes", "ls", "-o", "json"]
                )
                nodes = json.loads(listed.stdout)["nodes"]
                if len(nodes) == 2:
                    break
                await asyncio.sleep(0.5)
            assert sorted(n["info"]["node_id"] for n in nodes) == sorted(stack.info.node_ids)  # type: ignore[index]
            dry = await asyncio.to_thread(
                runner.invoke, app,
                [*args, "run", "create", "-t", "https://shop.example.com/", "-n", "5", "--engine", "noop", "--start"],
            )  # fmt: skip
            assert dry.exit_code == 0, dry.output  # allowed by --allowed-hosts
            watched = await asyncio.to_thread(
                runner.invoke, app, [*args, "run", "watch", dry.stdout.strip(), "--timeout", "60s"]
            )
            assert watched.exit_code == 0, watched.output

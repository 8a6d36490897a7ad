"""smartctl commands that need no fleet: help texts, spec schema, version, global flags, `up` ports."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli._schema import run_spec_schema, run_spec_schema_text
from cli._stack import Stack, StackError
from cli.main import app
from services.common.config import GatewaySettings, NodeSettings, SchedulerSettings

runner = CliRunner()
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
DOCS_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "run-spec.schema.json"


def help_of(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.replace("│", " ").split())


def test_serve_help_shows_env_vars_and_real_defaults() -> None:
    """`serve --help` names each option's SMARTFLEET_* variable and the settings class's own default."""
    scheduler = help_of("scheduler", "serve")
    assert "[env: SMARTFLEET_SCHEDULER_LISTEN]" in scheduler
    assert f"[default: {SchedulerSettings().scheduler_listen}]" in scheduler
    assert "[env: SMARTFLEET_DATABASE_URL]" in scheduler
    assert SchedulerSettings.model_fields["database_url"].default in scheduler
    node = help_of("node", "serve")
    assert "[env: SMARTFLEET_NODE_SLOTS] [default: 0]" in node
    assert f"[env: SMARTFLEET_SCHEDULER_ADDR] [default: {NodeSettings().scheduler_addr}]" in node
    assert "[env: SMARTFLEET_LOG_JSON] [default: true]" in node
    gateway = help_of("gateway", "serve")
    assert f"[default: {GatewaySettings().gateway_listen}]" in gateway
    assert "[env: SMARTFLEET_GATEWAY_TOKEN_FILE] [default: none]" in gateway


def test_flags_show_no_bool_placeholder() -> None:
    """`--start` and `--dry-run` are flags: no `<bool>` after them in help."""
    text = help_of("run", "create")
    assert "--start" in text and "--dry-run" in text
    assert "<bool>" not in text
    assert "table|wide|json|jsonl|csv|yaml" in text


def test_spec_schema_is_the_docs_file_and_describes_the_spec() -> None:
    """`smartctl spec schema` prints docs/run-spec.schema.json exactly (regenerate it when this fails)."""
    printed = runner.invoke(app, ["spec", "schema"])
    assert printed.exit_code == 0
    assert printed.stdout == run_spec_schema_text()
    assert DOCS_SCHEMA.read_text(encoding="utf-8") == printed.stdout, (
        "docs/run-spec.schema.json is stale: smartctl spec schema --out docs/run-spec.schema.json"
    )
    schema = run_spec_schema()
    assert schema["required"] == ["targets", "sessions"]
    assert schema["additionalProperties"] is False
    step = schema["$defs"]["Step"]["properties"]
    assert "assert" in step and "assert_" not in step
    assert step["timeout"]["pattern"].startswith("^")


def test_version_client_and_global_flags(tmp_path: Path) -> None:
    """`version --client` needs no gateway; -q drops hints; the hint of a missing stack is one line."""
    shown = runner.invoke(app, ["version", "--client"])
    assert shown.exit_code == 0 and shown.stdout.startswith("client: smartctl ")
    data = json.loads(runner.invoke(app, ["version", "--client", "-o", "json"]).stdout)
    assert data["client"]["version"] and data["servers"] is None
    no_gateway = runner.invoke(app, ["--data-dir", str(tmp_path), "version"])
    assert no_gateway.exit_code == 2
    assert "client: smartctl" in no_gateway.stdout
    assert no_gateway.stderr.count("\n") == 1 and no_gateway.stderr.startswith("error: ")
    quiet = runner.invoke(
        app, ["-q", "--no-color", "run", "validate", "-t", "http://a/", "-n", "1"]
    )
    assert quiet.exit_code == 0 and quiet.stderr == ""


async def test_up_refuses_a_taken_port_it_was_given(tmp_path: Path) -> None:
    """A port given explicitly must be free: `up --gateway-port N` with N taken fails before starting."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = Stack(data_dir=tmp_path, gateway_port=port, scheduler_port=0, free_ports=())
        with pytest.raises(StackError, match=f"127.0.0.1:{port} is in use"):
            await stack.start()
    assert not (tmp_path / "stack.json").exists()


def test_stack_environment_for_options(tmp_path: Path) -> None:
    """--nodes, --database-url and --allowed-hosts reach the services; artifacts live in the data dir."""
    stack = Stack(
        data_dir=tmp_path,
        nodes=3,
        database_url="postgresql+asyncpg://smartfleet@127.0.0.1/x",
        allowed_hosts="shop.example.com",
        node_slots=2,
    )
    assert stack.node_keys == ["node", "node-2", "node-3"]
    scheduler = stack._env_for("scheduler")
    assert scheduler["SMARTFLEET_DATABASE_URL"].startswith("postgresql+asyncpg://")
    assert scheduler["SMARTFLEET_ARTIFACT_DIR"] == str(tmp_path.resolve() / "artifacts")
    assert scheduler["SMARTFLEET_ALLOWED_HOSTS"] == "shop.example.com"
    ids = {stack._env_for(key)["SMARTFLEET_NODE_ID"] for key in stack.node_keys}
    assert len(ids) == 3
    dirs = {stack._env_for(key)["SMARTFLEET_ARTIFACT_DIR"] for key in stack.node_keys}
    assert len(dirs) == 3
    assert all(stack._env_for(key)["SMARTFLEET_NODE_SLOTS"] == "2" for key in stack.node_keys)


def test_smartctl_up_keeps_an_explicit_port(tmp_path: Path) -> None:
    """`smartctl up --gateway-port N` with N taken exits 2 naming the flag; it does not take another port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["up", "--data-dir", str(tmp_path), "--gateway-port", str(port)]
        refused = runner.invoke(app, [*args, "--scheduler-port", "0"])
    assert refused.exit_code == 2, refused.output
    assert f"127.0.0.1:{port} is in use" in refused.stderr and "--gateway-port" in refused.stderr
    assert not (tmp_path / "stack.json").exists()

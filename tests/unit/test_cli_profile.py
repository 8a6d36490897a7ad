"""CLI contexts (kubectl-like) and which gateway a command talks to: flags > env > context > stack.json."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli._config import resolve_connection, write_stack_file
from cli._errors import CliError
from cli._profile import Context, load_profile, profile_path
from cli.main import app

runner = CliRunner()


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in ("SMARTFLEET_GATEWAY_ADDR", "SMARTFLEET_TOKEN", "SMARTFLEET_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    return home


def test_set_context_use_and_ls(config_home: Path, tmp_path: Path) -> None:
    """set-context writes $XDG_CONFIG_HOME/smartfleet/config.yaml (0600); use switches; ls marks the current one."""
    token = tmp_path / "prod.token"
    token.write_text("# prod\nprod-secret\n")
    made = runner.invoke(
        app, ["config", "set-context", "prod", "--gateway", "fleet.example:443",
              "--token-file", str(token), "--output", "wide"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert runner.invoke(app, ["config", "set-context", "lab", "--gateway", "lab:1"]).exit_code == 0
    path = profile_path()
    assert path == config_home / "smartfleet" / "config.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "prod-secret" not in path.read_text(), "a context names its token file, never the token"
    assert load_profile().current_context == "prod"  # the first context becomes current
    assert runner.invoke(app, ["config", "use", "lab"]).stdout.strip() == "current context: lab"
    listed = json.loads(runner.invoke(app, ["config", "ls", "-o", "json"]).stdout)["contexts"]
    assert [(c["name"], c["current"]) for c in listed] == [("lab", True), ("prod", False)]
    table = runner.invoke(app, ["config", "ls"], env={"COLUMNS": "80"}).stdout
    assert re.search(r"^\*\s+lab\s+lab:1", table, re.MULTILINE), table
    assert not any(line != line.rstrip() for line in table.splitlines())
    unknown = runner.invoke(app, ["config", "use", "nope"])
    assert unknown.exit_code == 2 and "no context 'nope'" in unknown.stderr


def test_precedence_flags_env_context_stack(config_home: Path, tmp_path: Path) -> None:
    """A context wins over stack.json; --gateway elsewhere wins over the context and gets neither's token."""
    token = tmp_path / "t"
    token.write_text("ctx-token\n")
    context = Context(gateway="ctx:1", token_file=str(token), ca_file="/ca.pem")
    write_stack_file(tmp_path, {"gateway": "stack:1", "token": "stack-token"})
    by_context = resolve_connection(
        gateway=None, token=None, data_dir=tmp_path, context=context, context_name="prod"
    )
    assert (by_context.gateway, by_context.token, by_context.ca_file) == (
        "ctx:1",
        "ctx-token",
        "/ca.pem",
    )
    assert by_context.source == "context prod"
    by_flag = resolve_connection(gateway="other:9", token=None, data_dir=tmp_path, context=context)
    assert (by_flag.gateway, by_flag.token, by_flag.ca_file) == ("other:9", None, None)
    token_flag = resolve_connection(gateway=None, token="flag", data_dir=tmp_path, context=context)
    assert (token_flag.gateway, token_flag.token) == ("ctx:1", "flag")
    no_context = resolve_connection(gateway=None, token=None, data_dir=tmp_path)
    assert (no_context.gateway, no_context.token) == ("stack:1", "stack-token")


def test_context_default_output_and_bad_profiles(config_home: Path, tmp_path: Path) -> None:
    """A context's `output` is the default -o; a broken profile is one clear line, exit 2."""
    assert (
        runner.invoke(
            app, ["config", "set-context", "lab", "--gateway", "lab:1", "--output", "json"]
        ).exit_code
        == 0
    )
    spec = ["run", "validate", "-t", "http://127.0.0.1/", "-n", "2"]
    assert json.loads(runner.invoke(app, spec).stdout)["sessions"] == 2
    assert "CELL" in runner.invoke(app, [*spec, "-o", "table"]).stdout
    profile_path().write_text("contexts: {lab: {gateway: x, colour: red}}\n")
    broken = runner.invoke(app, ["config", "ls"])
    assert broken.exit_code == 2 and "unknown key 'colour'" in broken.stderr
    missing = Context(gateway="g:1", token_file=str(tmp_path / "nothing"))
    with pytest.raises(CliError, match="cannot read the context's token file"):
        missing.token()

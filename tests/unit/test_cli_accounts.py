"""smartctl accounts/schedules without a fleet: flags to requests, local errors exit 2."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli._accounts import parse_labels, read_storage_state, update_request
from cli._errors import CliError
from cli._schedules import schedule_message
from cli._spec import build_spec
from cli.main import app
from smartfleet.v1 import accounts_pb2

runner = CliRunner()
# Nothing listens here: a command that got as far as calling would fail with "cannot reach".
OFFLINE = ["--gateway", "127.0.0.1:9", "--rpc-timeout", "0.5"]


def test_labels_parse_and_bad_ones_are_named() -> None:
    """KEY=VALUE pairs become a dict; a pair without `=` is an error naming --label."""
    assert parse_labels(["pool=shop", "tier = gold", "empty="]) == {
        "pool": "shop",
        "tier": "gold",
        "empty": "",
    }
    with pytest.raises(CliError, match="--label: write KEY=VALUE"):
        parse_labels(["pool"])


def test_update_mask_names_exactly_the_flags_given() -> None:
    """Only the flags given are in the mask; --proxy "" clears; --enable sets active."""
    account, paths = update_request("a", per_hour=5, proxy="", enable=True, cooldown="2m")
    assert paths == ["proxy", "sessions_per_hour", "cooldown", "status"]
    assert account.sessions_per_hour == 5
    assert account.status == accounts_pb2.ACCOUNT_STATUS_ACTIVE
    assert account.cooldown.ToTimedelta() == timedelta(minutes=2)
    account, paths = update_request("a", clear_labels=True)
    assert paths == ["labels"] and dict(account.labels) == {}
    assert update_request("a")[1] == []
    with pytest.raises(CliError, match="--cooldown"):
        update_request("a", cooldown="soon")


def test_storage_state_file_errors_are_clear(tmp_path: Path) -> None:
    """A missing or empty storage-state file is a one-line error before any call."""
    with pytest.raises(CliError, match="cannot read storage state"):
        read_storage_state(tmp_path / "missing.json")
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(CliError, match="is empty"):
        read_storage_state(tmp_path / "empty.json")
    (tmp_path / "state.json").write_text('{"cookies": []}')
    assert read_storage_state(tmp_path / "state.json") == b'{"cookies": []}'


def test_schedule_template_comes_from_the_spec_flags() -> None:
    """The template is built like `run create`'s spec: flags, 1 session by default."""
    template = build_spec(targets=["http://127.0.0.1:8080/"], timeout="30s")
    message = schedule_message(
        "nightly", cron="0 3 * * *", timezone="Europe/Berlin", template=template
    )
    assert (message.name, message.cron, message.timezone) == (
        "nightly",
        "0 3 * * *",
        "Europe/Berlin",
    )
    assert message.template.sessions == 1
    assert message.template.limits.session_timeout.seconds == 30


def test_local_mistakes_exit_2_without_calling() -> None:
    """Bad flags fail with exit code 2 and the reason, before the gateway is contacted."""
    cases = [
        (["accounts", "create", "a", "--label", "nope"], "--label: write KEY=VALUE"),
        (["accounts", "update", "a"], "nothing to change"),
        (["accounts", "update", "a", "--label", "k=v", "--clear-labels"], "contradict"),
        (["accounts", "create", "a", "--cooldown", "later"], "--cooldown"),
        (["schedules", "create", "s", "--cron", "* * * * *"], "at least one target"),
    ]
    for args, message in cases:
        result = runner.invoke(app, [*OFFLINE, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)

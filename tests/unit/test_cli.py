"""smartctl without a fleet: spec files, stack.json lookup, output, error mapping."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from rich.console import Console
from typer.testing import CliRunner

from cli._client import translate_error
from cli._config import read_stack_file, resolve_connection, write_stack_file
from cli._data import message_data
from cli._errors import CliError
from cli._output import print_fields, print_table, redirect_console
from cli._serve import build_settings
from cli._spec import build_spec, load_spec_document, spec_from_document
from cli._stack import Stack, StackError
from cli._views import (
    OUTCOME_COLUMNS,
    node_columns,
    outcome_rows,
    run_fields,
    run_status,
    stats_summary,
)
from cli._watch import exit_code_for
from cli.main import app
from services.common.config import NodeSettings
from smartfleet.v1 import common_pb2, nodes_pb2, results_pb2, runs_pb2

runner = CliRunner()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- spec files ---------------------------------------------------------------------------------


def test_yaml_spec_with_human_durations(tmp_path: Path) -> None:
    """A YAML spec parses, and `30s`/`1500ms` durations become proto Durations."""
    spec_file = _write(
        tmp_path / "spec.yaml",
        "name: smoke\n"
        "targets: [http://127.0.0.1:8080/, http://127.0.0.1:8080/about]\n"
        "sessions: 50\n"
        "engine: chromium\n"
        "pacing: {mode: fast}\n"
        "limits:\n  max_concurrency: 4\n  session_timeout: 1500ms\n",
    )
    spec = build_spec(document=load_spec_document(spec_file), source=str(spec_file))
    assert spec.name == "smoke"
    assert list(spec.targets) == ["http://127.0.0.1:8080/", "http://127.0.0.1:8080/about"]
    assert spec.sessions == 50
    assert spec.pacing.mode == runs_pb2.PACING_MODE_FAST
    assert spec.limits.max_concurrency == 4
    assert spec.limits.session_timeout.ToTimedelta() == timedelta(milliseconds=1500)


def test_json_spec_accepts_json_names_and_minutes(tmp_path: Path) -> None:
    """A JSON spec parses with camelCase names too, and `2m` means 120 seconds."""
    spec_file = _write(
        tmp_path / "spec.json",
        json.dumps(
            {
                "targets": ["https://example.test/"],
                "sessions": 3,
                "limits": {"sessionTimeout": "2m"},
            }
        ),
    )
    spec = spec_from_document(load_spec_document(spec_file))
    assert spec.sessions == 3
    assert spec.limits.session_timeout.seconds == 120


def test_unknown_top_level_field_is_named_with_a_suggestion() -> None:
    """A misspelt field is an error that names it and suggests the right one."""
    with pytest.raises(CliError) as caught:
        spec_from_document({"targets": ["http://x/"], "sesions": 3}, source="spec.yaml")
    assert "'sesions'" in caught.value.message
    assert "did you mean 'sessions'" in caught.value.message
    assert caught.value.message.startswith("spec.yaml:")


def test_unknown_nested_field_is_named_by_its_path() -> None:
    """An unknown field inside a nested message is named by its dotted path."""
    with pytest.raises(CliError, match=r"unknown field 'limits\.max_concurency'"):
        spec_from_document({"targets": ["http://x/"], "limits": {"max_concurency": 2}})


def test_invalid_duration_names_the_field() -> None:
    """A duration that does not parse is an error naming the field and the accepted form."""
    with pytest.raises(CliError, match=r"limits\.session_timeout.*500ms, 5s, 2m or 1h"):
        spec_from_document({"targets": ["http://x/"], "limits": {"session_timeout": "soon"}})


def test_numeric_duration_is_refused() -> None:
    """A bare number is not taken as a duration: the unit must be written."""
    with pytest.raises(CliError, match=r"limits\.session_timeout: write durations like"):
        spec_from_document({"targets": ["http://x/"], "limits": {"session_timeout": 30}})


def test_wrong_value_type_is_reported_by_the_parser() -> None:
    """A value of the wrong type is refused by ParseDict with the field in the message."""
    with pytest.raises(CliError, match="sessions"):
        spec_from_document({"targets": ["http://x/"], "sessions": "many"})


def test_flags_override_the_file() -> None:
    """Flags replace the file's targets and set sessions, name, concurrency and timeout."""
    spec = build_spec(
        document={"targets": ["http://a/"], "sessions": 5, "name": "file"},
        targets=["http://b/", "http://c/"],
        sessions=7,
        name="flags",
        concurrency=2,
        timeout="45s",
    )
    assert list(spec.targets) == ["http://b/", "http://c/"]
    assert (spec.sessions, spec.name, spec.limits.max_concurrency) == (7, "flags", 2)
    assert spec.limits.session_timeout.seconds == 45


def test_flags_alone_default_to_one_session() -> None:
    """Without a file or --sessions a run has one session; without a target it is refused."""
    assert build_spec(targets=["http://a/"]).sessions == 1
    with pytest.raises(CliError, match="at least one target"):
        build_spec(sessions=3)


def test_spec_file_must_be_a_mapping(tmp_path: Path) -> None:
    """A YAML list (or broken YAML) at the top level is a clear error, not a traceback."""
    with pytest.raises(CliError, match="must be a mapping"):
        load_spec_document(_write(tmp_path / "list.yaml", "- http://x/\n"))
    with pytest.raises(CliError) as caught:
        load_spec_document(_write(tmp_path / "bad.yaml", "targets: [unclosed\nsessions: 3\n"))
    # One line: where (line:column) and why.
    assert caught.value.message == (
        f"{tmp_path / 'bad.yaml'}:2:9: not valid YAML: expected ',' or ']', but got ':'"
    )


def test_cli_create_with_unknown_field_exits_2_without_traceback(tmp_path: Path) -> None:
    """`run create -f` with an unknown field prints the field and exits 2 before any call."""
    spec_file = _write(tmp_path / "spec.yaml", "targets: [http://x/]\nsessionz: 3\n")
    result = runner.invoke(
        app, ["--data-dir", str(tmp_path), "run", "create", "-f", str(spec_file)]
    )
    assert result.exit_code == 2
    assert "sessionz" in result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- stack.json lookup ----------------------------------------------------------------------------


def test_connection_comes_from_stack_json(tmp_path: Path) -> None:
    """Without flags the gateway and token come from <data-dir>/stack.json."""
    write_stack_file(tmp_path, {"gateway": "127.0.0.1:6001", "token": "secret"})
    connection = resolve_connection(gateway=None, token=None, data_dir=tmp_path)
    assert (connection.gateway, connection.token) == ("127.0.0.1:6001", "secret")
    assert connection.source.endswith("stack.json")


def test_missing_stack_json_says_how_to_start_the_stack(tmp_path: Path) -> None:
    """With no flags and no stack.json the error tells the user to run `smartctl up`."""
    with pytest.raises(CliError, match=r"smartctl up"):
        resolve_connection(gateway=None, token=None, data_dir=tmp_path / "nothing")


def test_stack_token_is_only_sent_to_its_own_gateway(tmp_path: Path) -> None:
    """An explicit --gateway elsewhere does not get the local stack's token."""
    write_stack_file(tmp_path, {"gateway": "127.0.0.1:6001", "token": "secret"})
    other = resolve_connection(gateway="fleet.example:443", token=None, data_dir=tmp_path)
    same = resolve_connection(gateway="127.0.0.1:6001", token=None, data_dir=tmp_path)
    assert other.token is None
    assert same.token == "secret"


def test_flags_win_over_stack_json(tmp_path: Path) -> None:
    """--gateway and --token given together ignore stack.json entirely."""
    write_stack_file(tmp_path, {"gateway": "127.0.0.1:6001", "token": "secret"})
    connection = resolve_connection(gateway="h:1", token="t", data_dir=tmp_path)
    assert (connection.gateway, connection.token) == ("h:1", "t")


def test_stack_json_is_private(tmp_path: Path) -> None:
    """stack.json holds the token, so only its owner may read it."""
    path = write_stack_file(tmp_path, {"gateway": "g:1", "token": "t"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_stack_file(tmp_path) == {"gateway": "g:1", "token": "t"}


def test_cli_without_stack_exits_2_with_a_hint(tmp_path: Path) -> None:
    """`run ls` with nothing to talk to exits 2 and says how to start the stack."""
    result = runner.invoke(app, ["run", "ls"], env={"SMARTFLEET_DATA_DIR": str(tmp_path)})
    assert result.exit_code == 2
    assert "smartctl up" in result.stderr


async def test_stack_refuses_a_data_dir_in_use(tmp_path: Path) -> None:
    """A second stack on a data dir whose supervisor is alive is refused before starting."""
    write_stack_file(tmp_path, {"gateway": "g:1", "token": "t", "supervisor_pid": os.getpid()})
    with pytest.raises(StackError, match="already running"):
        await Stack(data_dir=tmp_path, gateway_port=0, scheduler_port=0).start()


# -- output ---------------------------------------------------------------------------------------


def _run() -> runs_pb2.Run:
    run = runs_pb2.Run(
        id="run-1",
        name="demo",
        status=runs_pb2.RUN_STATUS_COMPLETED,
        spec=runs_pb2.RunSpec(targets=["http://127.0.0.1:8080/"], sessions=4),
        counters=runs_pb2.RunCounters(planned=4, dispatched=4, succeeded=3, failed=1),
    )
    run.spec.limits.session_timeout.FromTimedelta(timedelta(seconds=30))
    run.created_at.FromDatetime(datetime(2025, 1, 1, tzinfo=UTC))
    run.started_at.FromDatetime(datetime(2025, 1, 1, 0, 0, 1, tzinfo=UTC))
    run.finished_at.FromDatetime(datetime(2025, 1, 1, 0, 0, 11, tzinfo=UTC))
    return run


def test_json_output_uses_field_names_one_spelling_and_numbers() -> None:
    """-o json: proto field names, enums lowercase, int64 as numbers, durations as `30s`."""
    data = message_data(_run())
    assert data["id"] == "run-1"
    assert data["status"] == "completed"
    assert data["counters"]["in_flight"] == 0 and data["counters"]["planned"] == 4
    assert data["spec"]["sessions"] == 4
    assert data["spec"]["limits"]["session_timeout"] == "30s"
    # What smartctl prints reads back as a spec file would.
    assert spec_from_document(json.loads(json.dumps(data["spec"]))) == _run().spec


def _rendered(width: int, draw: object) -> str:
    console = Console(record=True, width=width)
    with redirect_console(console):
        draw()  # type: ignore[operator]
    return console.export_text()


def test_tables_render_runs_stats_and_nodes() -> None:
    """The human tables render a run, its stats and nodes without errors."""
    stats = runs_pb2.RunStats(
        run_id="run-1",
        results=4,
        outcomes=[
            runs_pb2.OutcomeCount(outcome=common_pb2.OUTCOME_OK, count=3),
            runs_pb2.OutcomeCount(outcome=common_pb2.OUTCOME_TIMEOUT, count=1),
        ],
        success_rate=0.75,
        duration_p50_ms=120,
        duration_p95_ms=480,
        duration_max_ms=15_000,
    )
    node = nodes_pb2.Node(
        info=nodes_pb2.NodeInfo(
            node_id="n1",
            host="h",
            engines=[common_pb2.ENGINE_CHROMIUM],
            slots=4,
            labels={"r": "eu"},
        ),
        state=nodes_pb2.NODE_STATE_READY,
        load=nodes_pb2.NodeLoad(busy_slots=1, free_slots=3),
    )
    node.last_heartbeat.FromDatetime(datetime(2025, 1, 1, tzinfo=UTC))
    now = datetime(2025, 1, 1, 0, 0, 5, tzinfo=UTC)

    def draw() -> None:
        print_fields(run_fields(_run()))
        print_table(OUTCOME_COLUMNS, outcome_rows(stats))
        print_table(node_columns(now=now), [node])

    text = _rendered(160, draw)
    assert "completed" in text and "10.0s" in text
    assert "timeout" in text and "25.0%" in text
    assert "n1" in text and "r=eu" in text and "5s ago" in text
    assert "p95 480ms" in stats_summary(stats) and "max 15.00s" in stats_summary(stats)
    assert run_status(_run()) == "completed"


class _NodeClient:
    """Answers cordon/drain/uncordon like the gateway would, and records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __enter__(self) -> _NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _node(self, verb: str, node_id: str, state: int) -> nodes_pb2.Node:
        self.calls.append((verb, node_id))
        return nodes_pb2.Node(info=nodes_pb2.NodeInfo(node_id=node_id), state=state)

    def cordon_node(self, node_id: str) -> nodes_pb2.Node:
        return self._node("cordon", node_id, nodes_pb2.NODE_STATE_CORDONED)

    def drain_node(self, node_id: str) -> nodes_pb2.Node:
        return self._node("drain", node_id, nodes_pb2.NODE_STATE_DRAINING)

    def uncordon_node(self, node_id: str) -> nodes_pb2.Node:
        return self._node("uncordon", node_id, nodes_pb2.NODE_STATE_READY)


def test_nodes_cordon_drain_uncordon(monkeypatch: pytest.MonkeyPatch) -> None:
    """`smartctl nodes cordon|drain|uncordon NODE` call the gateway and print the new state."""
    client = _NodeClient()
    monkeypatch.setattr("cli._nodes.open_client", lambda ctx: client)
    for verb, state in (("cordon", "cordoned"), ("drain", "draining"), ("uncordon", "ready")):
        result = runner.invoke(app, ["nodes", verb, "n1"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"node n1 is {state}"
    result = runner.invoke(app, ["nodes", "drain", "n2", "-o", "json"])
    assert json.loads(result.output)["state"] == "draining"
    assert client.calls == [("cordon", "n1"), ("drain", "n1"), ("uncordon", "n1"), ("drain", "n2")]
    assert runner.invoke(app, ["nodes", "cordon"]).exit_code == 2  # the node is required


def test_nodes_show_playwright_and_browser_versions() -> None:
    """`nodes ls` shows the Playwright and browser versions; -o json carries them too."""
    node = nodes_pb2.Node(
        info=nodes_pb2.NodeInfo(
            node_id="n1",
            engines=[common_pb2.ENGINE_CHROMIUM],
            playwright_version="1.65.0",
            browser_versions={"chromium": "156.0.7000.1"},
        ),
        state=nodes_pb2.NODE_STATE_READY,
    )
    text = _rendered(200, lambda: print_table(node_columns(), [node]))
    assert "PLAYWRIGHT" in text and "BROWSER" in text
    assert "1.65.0" in text and "chromium 156.0.7000.1" in text
    info = message_data(node)["info"]
    assert info["playwright_version"] == "1.65.0"
    assert info["browser_versions"] == {"chromium": "156.0.7000.1"}


def test_watch_exit_codes() -> None:
    """0 all sessions ok, 1 completed with failures, 2 cancelled or failed."""
    assert exit_code_for(completed=True, planned=4, succeeded=4, failed=0) == 0
    assert exit_code_for(completed=True, planned=4, succeeded=3, failed=1) == 1
    assert exit_code_for(completed=False, planned=4, succeeded=4, failed=0) == 2


# -- errors and settings --------------------------------------------------------------------------


class _FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            "unavailable: cannot reach the gateway at g:1: is `smartctl up` running?",
        ),
        (
            grpc.StatusCode.UNAUTHENTICATED,
            "unauthenticated: the gateway at g:1 did not accept the token",
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "invalid argument: spec.sessions: must be positive"),
        (grpc.StatusCode.ALREADY_EXISTS, "already exists: spec.sessions: must be positive"),
        (grpc.StatusCode.NOT_FOUND, "not found: spec.sessions: must be positive"),
        (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "deadline exceeded: the gateway at g:1 did not answer within 15s",
        ),
    ],
)
def test_grpc_errors_become_actionable_messages(code: grpc.StatusCode, expected: str) -> None:
    """Each status code maps to one style, `<code in words>: <what to do or the server's words>`, exit 2."""
    error = translate_error(
        _FakeRpcError(code, "spec.sessions: must be positive"), gateway="g:1", timeout=15
    )
    assert expected in error.message
    assert error.exit_code == 2


def test_serve_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`node serve` flags win over SMARTFLEET_* env; unset flags keep the env value."""
    monkeypatch.setenv("SMARTFLEET_NODE_SLOTS", "3")
    monkeypatch.setenv("SMARTFLEET_NATS_URL", "nats://env:4222")
    settings = build_settings(NodeSettings, node_slots=8, nats_url=None)
    assert settings.node_slots == 8
    assert settings.nats_url == "nats://env:4222"


def test_serve_invalid_env_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed SMARTFLEET_* value is reported with its field, not as a traceback."""
    monkeypatch.setenv("SMARTFLEET_NODE_SLOTS", "lots")
    with pytest.raises(CliError, match="node_slots"):
        build_settings(NodeSettings)


def test_metrics_table_and_result_columns() -> None:
    """The watch summary's metrics table formats each measurement; CSV rows carry the vitals."""
    from cli._results import RESULT_COLUMNS, result_row
    from cli._views import METRIC_COLUMNS

    stats = runs_pb2.RunStats(
        metrics=[
            runs_pb2.MetricStats(name="lcp_ms", p50=120, p95=480, p99=12_000, count=9),
            runs_pb2.MetricStats(name="cls", p50=0.05, p95=0.1, p99=0.25, count=9),
            runs_pb2.MetricStats(name="bytes", p50=2_500, p95=1_200_000, p99=1_500_000, count=9),
        ]
    )
    text = _rendered(120, lambda: print_table(METRIC_COLUMNS, stats.metrics))
    assert "lcp_ms" in text and "480ms" in text and "12.00s" in text
    assert "0.250" in text and "2.5 KB" in text and "1.2 MB" in text
    result = results_pb2.SessionResult(
        vitals=results_pb2.WebVitals(ttfb_ms=12.34, fcp_ms=40, lcp_ms=55, cls=0.012345),
        bytes_transferred=4096,
        request_count=3,
    )
    row = result_row(result)
    assert set(RESULT_COLUMNS) == set(row)
    assert (row["ttfb_ms"], row["lcp_ms"], row["cls"]) == (12.3, 55, 0.0123)
    assert (row["bytes"], row["requests"]) == (4096, 3)

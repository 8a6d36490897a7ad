"""`smartctl run jobs|results|artifacts`: what a run produced."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress

from cli._context import open_client, output_format
from cli._data import job_statuses, message_data
from cli._errors import CliError, err_console, report_errors
from cli._output import (
    UI,
    Column,
    OutputFormat,
    OutputOption,
    emit_list,
    hint,
    print_json,
    print_table,
    print_yaml,
)
from cli._results import RESULT_COLUMNS, RESULT_TABLE_COLUMNS, result_row
from cli._run_app import RunArgument, app
from cli._text import bytes_text, plural, timestamp_text, timestamp_value
from cli._views import JOB_COLUMNS
from smartfleet.v1 import artifacts_pb2


@app.command("jobs")
@report_errors
def jobs(
    ctx: typer.Context,
    run_id: RunArgument,
    status: Annotated[
        str, typer.Option("--status", help="Only jobs in this status: dead, retry_wait, failed, …")
    ] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, max=5000)] = 100,
    output: OutputOption = None,
) -> None:
    """List a run's jobs (one per session), e.g. the dead ones."""
    with open_client(ctx) as client:
        found = client.list_jobs(run_id, statuses=job_statuses(status), limit=limit)
    emit_list(
        found,
        columns=JOB_COLUMNS,
        output=output_format(ctx, output),
        key="jobs",
        data=message_data,
        empty="no jobs" + (f" in status {status}" if status else ""),
    )


# Results in a table by default: the first page only (export the rest with -o jsonl|csv).
TABLE_RESULTS = 50


@app.command("results")
@report_errors
def results(
    ctx: typer.Context,
    run_id: RunArgument,
    output: OutputOption = None,
    legacy_format: Annotated[
        OutputFormat | None,
        typer.Option("--format", hidden=True, help="The old name of -o."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to this file instead of stdout.")
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", min=0, help=f"At most this many (0: all; a table shows {TABLE_RESULTS})."
        ),
    ] = 0,
) -> None:
    """Show or export a run's session results (JSON/JSONL keep every field, CSV a flat row each)."""
    fmt = output_format(ctx, output or legacy_format)
    with open_client(ctx) as client:
        total = client.get_run_stats(run_id).results
        stream = client.iter_results(run_id)
        if fmt.is_table and out is None:
            shown = limit or TABLE_RESULTS
            rows = [result_row(r) for r, _ in zip(stream, range(shown), strict=False)]
            if not rows:
                hint(f"no results yet for run {run_id}")
                return
            print_table(RESULT_TABLE_COLUMNS, rows, wide=fmt is OutputFormat.wide)
            if total > len(rows):
                hint(f"{len(rows)} of {total} results; export all with -o jsonl|csv --out FILE")
            return
        expected = min(total, limit) if limit else total
        written = export_results(stream, fmt=fmt, out=out, total=expected, limit=limit)
    if out is not None:
        hint(f"wrote {plural(written, 'result')} to {out}")


def export_results(
    stream: Iterable[Any], *, fmt: OutputFormat, out: Path | None, total: int, limit: int
) -> int:
    """Write results in the format, with a progress bar when writing to a file."""
    if fmt is OutputFormat.wide or fmt is OutputFormat.table:
        fmt = OutputFormat.csv  # a table to a file: the flat rows people open in a sheet
    handle = open(out, "w", newline="", encoding="utf-8") if out else sys.stdout
    written = 0
    try:
        writer = (
            csv.DictWriter(handle, fieldnames=RESULT_COLUMNS) if fmt is OutputFormat.csv else None
        )
        if writer:
            writer.writeheader()
        documents: list[dict[str, Any]] = []  # json/yaml are one document: gathered first
        with Progress(
            transient=True, console=err_console, disable=out is None or UI.quiet
        ) as progress:
            task = progress.add_task("exporting", total=total or None)
            for result in stream:
                if limit and written >= limit:
                    break
                if writer:
                    writer.writerow(result_row(result))
                elif fmt is OutputFormat.jsonl:
                    handle.write(json.dumps(message_data(result), sort_keys=True) + "\n")
                else:
                    documents.append(message_data(result))
                written += 1
                progress.advance(task)
        if fmt in (OutputFormat.json, OutputFormat.yaml):
            _write_document({"results": documents}, fmt=fmt, handle=handle, to_file=out is not None)
    finally:
        if out:
            handle.close()
    return written


def _write_document(data: Any, *, fmt: OutputFormat, handle: Any, to_file: bool) -> None:
    if not to_file:
        (print_yaml if fmt is OutputFormat.yaml else print_json)(data)
        return
    if fmt is OutputFormat.yaml:
        import yaml

        yaml.safe_dump(data, handle, sort_keys=False)
    else:
        json.dump(data, handle, indent=2)
        handle.write("\n")


ARTIFACT_COLUMNS: list[Column[artifacts_pb2.Artifact]] = [
    Column(header="JOB", text=lambda artifact: artifact.job_id),
    Column(header="TRY", text=lambda artifact: str(artifact.attempt), right=True, priority=2),
    Column(header="NAME", text=lambda artifact: artifact.name),
    Column(
        header="SIZE",
        text=lambda artifact: bytes_text(artifact.size_bytes),
        value=lambda artifact: artifact.size_bytes,
        right=True,
        priority=1,
    ),
    Column(
        header="CREATED",
        text=lambda artifact: timestamp_text(artifact.created_at),
        value=lambda artifact: timestamp_value(artifact.created_at),
        priority=3,
    ),
    Column(header="KEY", text=lambda artifact: artifact.key, wide=True),
]


@app.command("artifacts")
@report_errors
def artifacts(
    ctx: typer.Context,
    run_id: RunArgument,
    job: Annotated[
        str, typer.Option("--job", "-j", metavar="JOB", help="Only this job's artifacts.")
    ] = "",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="DIR",
            help="Download them into DIR (as <job>/<attempt>/<name>); without it, list them.",
        ),
    ] = None,
    output: OutputOption = None,
) -> None:
    """List or download a run's artifacts: screenshots, Playwright traces, HARs."""
    fmt = output_format(ctx, output)
    with open_client(ctx) as client:
        found = list(client.iter_artifacts(run_id, job_id=job))
        if out is None:
            scope = f"job {job} of run {run_id}" if job else f"run {run_id}"
            emit_list(
                found,
                columns=ARTIFACT_COLUMNS,
                output=fmt,
                key="artifacts",
                data=message_data,
                empty=f"no artifacts for {scope} (kept per the run's `artifacts` policy: "
                "never, on_failure or always)",
            )
            if found and fmt.is_table:
                total = sum(artifact.size_bytes for artifact in found)
                hint(
                    f"{plural(len(found), 'artifact')}, {bytes_text(total)}; "
                    f"download with `smartctl run artifacts {run_id} --out DIR`"
                )
            return
        written = download_artifacts(client, found, out)
    total = sum(artifact.size_bytes for artifact in found)
    if not fmt.is_table:
        data = {
            "run_id": run_id,
            "out": str(out),
            "files": [str(p) for p in written],
            "bytes": total,
        }
        (print_yaml if fmt is OutputFormat.yaml else print_json)(data)
        return
    hint(
        f"downloaded {plural(len(written), 'artifact')}, {bytes_text(total)}, to {out}"
        if written
        else f"no artifacts for run {run_id}" + (f" job {job}" if job else "")
    )


def download_artifacts(client: Any, found: list[Any], out: Path) -> list[Path]:
    """Each artifact to out/<job>/<attempt>/<name>, written whole or not at all."""
    written: list[Path] = []
    total = sum(artifact.size_bytes for artifact in found)
    with Progress(transient=True, console=err_console, disable=UI.quiet) as progress:
        task = progress.add_task("downloading", total=total or None)
        for artifact in found:
            # The key's parts were checked by the scheduler; refuse anything else anyway.
            parts = (artifact.job_id, str(artifact.attempt), artifact.name)
            if any(not part or part.startswith(".") or "/" in part for part in parts):
                raise CliError(f"refusing the artifact key {artifact.key!r}")
            target = out.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            with open(partial, "wb") as handle:
                client.download_artifact(
                    artifact.key, handle, on_bytes=lambda n: progress.advance(task, n)
                )
            partial.replace(target)
            written.append(target)
    return written

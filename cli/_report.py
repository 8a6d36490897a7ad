"""`smartctl run report RUN --format junit|html --out FILE`: a run's report for CI and people."""

from __future__ import annotations

import io
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cli._client import FleetClient
from cli._context import open_client
from cli._errors import report_errors
from cli._output import hint
from cli._report_build import (
    ReportModel,
    Screenshots,
    build_report,
    html_report,
    junit_xml,
)
from cli._run_app import RunArgument, app
from cli._text import bytes_text, plural

# Screenshots inlined into one HTML page: at most this many, each at most this large.
MAX_SCREENSHOTS = 20
MAX_SCREENSHOT_BYTES = 5 * 1024 * 1024


class ReportFormat(StrEnum):
    junit = "junit"
    html = "html"


def fetch_screenshots(client: FleetClient, model: ReportModel) -> Screenshots:
    """The PNG artifacts of the report's failed sessions, fetched with the artifact calls."""
    wanted = {(failed.job_id, failed.attempt) for failed in model.failed_sessions}
    found: Screenshots = {}
    count = 0
    for job_id in dict.fromkeys(failed.job_id for failed in model.failed_sessions):
        for artifact in client.iter_artifacts(model.run.id, job_id=job_id):
            key = (artifact.job_id, artifact.attempt)
            if (
                key not in wanted
                or not artifact.name.endswith(".png")
                or artifact.size_bytes > MAX_SCREENSHOT_BYTES
                or count >= MAX_SCREENSHOTS
            ):
                continue
            buffer = io.BytesIO()
            client.download_artifact(artifact.key, buffer)
            found.setdefault(key, []).append((artifact.name, buffer.getvalue()))
            count += 1
    return found


@app.command("report")
@report_errors
def report(
    ctx: typer.Context,
    run_id: RunArgument,
    fmt: Annotated[
        ReportFormat,
        typer.Option(
            "--format", help="junit (XML for CI systems) or html (one self-contained page)."
        ),
    ] = ReportFormat.junit,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write here (default: stdout)."),
    ] = None,
) -> None:
    """Write a run's report as JUnit XML (for CI) or one self-contained HTML page.

    JUnit: a testsuite for the run, a testcase per target x cell, failures with their errors
    and counts. HTML: summary, outcomes, percentiles, failures with their screenshots inline.
    """
    with open_client(ctx) as client:
        run = client.get_run(run_id)
        stats = client.get_run_stats(run_id)
        model = build_report(run, stats, client.iter_results(run_id))
        if fmt is ReportFormat.junit:
            content = junit_xml(model)
        else:
            content = html_report(model, screenshots=fetch_screenshots(client, model)).encode()
    if out is None:
        sys.stdout.write(content.decode("utf-8"))
        sys.stdout.flush()
        return
    tmp = out.with_name(f".{out.name}.part")
    tmp.write_bytes(content)
    tmp.replace(out)
    hint(
        f"wrote the {fmt.value} report of run {run_id} to {out} ({bytes_text(len(content))}; "
        f"{plural(len(model.cases), 'testcase')}, {plural(model.failures, 'failed session')})"
    )

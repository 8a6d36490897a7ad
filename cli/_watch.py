"""`smartctl run watch`: a live progress bar from WatchRun, then a summary from GetRunStats."""

from __future__ import annotations

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli._client import FleetClient, is_completed, is_draft
from cli._errors import EXIT_ERROR, EXIT_FAILURES, err_console
from cli._output import (
    OutputFormat,
    cells_table,
    console,
    message_dict,
    metrics_table,
    print_json,
    run_duration_text,
    run_status,
    stats_summary,
    stats_table,
    styled,
)


def exit_code_for(*, completed: bool, planned: int, succeeded: int, failed: int) -> int:
    """0: completed with every session ok; 1: completed with failures; 2: cancelled or failed."""
    if not completed:
        return EXIT_ERROR
    return 0 if failed == 0 and succeeded >= planned else EXIT_FAILURES


def watch_run(client: FleetClient, run_id: str, *, output: OutputFormat) -> int:
    """Follow the run until it is final, print the outcome, return the exit code."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
        disable=output is OutputFormat.json,
    )
    # One plain read first: an unknown run fails before any progress bar is drawn.
    last = client.get_run(run_id)
    if is_draft(last):
        err_console.print(
            f"run {escape(last.id)} is a draft: start it with `smartctl run start {escape(last.id)}`"
        )
    with progress:
        task = progress.add_task("waiting", total=None, detail="")
        for run in client.watch_run(run_id):
            last = run
            counters = run.counters
            progress.update(
                task,
                description=f"{escape(run.name or run.id)} {styled(run_status(run))}",
                total=counters.planned or None,
                completed=counters.succeeded + counters.failed,
                detail=(
                    f"[green]{counters.succeeded} ok[/] [red]{counters.failed} failed[/] "
                    f"{counters.retrying} retrying {counters.in_flight} in flight"
                ),
            )
    stats = client.get_run_stats(run_id)
    counters = last.counters
    code = exit_code_for(
        completed=is_completed(last),
        planned=counters.planned,
        succeeded=counters.succeeded,
        failed=counters.failed,
    )
    if output is OutputFormat.json:
        print_json({"run": message_dict(last), "stats": message_dict(stats), "exit_code": code})
        return code
    console.print()
    console.print(stats_table(stats))
    console.print(stats_summary(stats))
    if stats.metrics:
        console.print()
        console.print(metrics_table(stats))
    if len(stats.cells) > 1:
        console.print()
        console.print(cells_table(stats))
    if counters.dead:
        console.print(
            f"[red]{counters.dead} dead jobs[/]: smartctl run jobs {escape(last.id)} --status dead"
        )
    status = run_status(last)
    final = counters.succeeded + counters.failed
    if code == 0:
        verdict = (
            f"[green]✓ run {escape(last.id)} completed: all {counters.succeeded} sessions ok[/]"
        )
    elif code == EXIT_FAILURES:
        verdict = f"[red]✗ run {escape(last.id)} completed: {counters.failed} of {final} sessions failed[/]"
    else:
        verdict = (
            f"[red]✗ run {escape(last.id)} ended {status}[/] ({final}/{counters.planned} final)"
        )
    console.print(f"{verdict} in {run_duration_text(last)}")
    return code

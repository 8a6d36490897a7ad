"""Every read command's output: `-o table|wide|json|jsonl|csv|yaml`, and the one table helper.

Tables are laid out here, not by Rich, because a table must never cut a value: ids keep their
full width, columns that may wrap (names, URLs, errors) wrap, and when the terminal (or a pipe,
80 columns) is still too narrow the lowest-priority columns are left out; `-o wide` shows
every column at full width, however wide the line gets. Headers never wrap.
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

import typer
import yaml
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from cli._errors import err_console
from cli._text import wrap_text

T = TypeVar("T")

console = Console(highlight=False)


@contextlib.contextmanager
def redirect_console(target: Console) -> Iterator[Console]:
    """Print tables and results to `target` for a while (tests record output this way)."""
    global console
    previous, console = console, target
    try:
        yield target
    finally:
        console = previous


GAP = 2  # spaces between columns


class OutputFormat(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    yaml = "yaml"

    @property
    def is_table(self) -> bool:
        return self in (OutputFormat.table, OutputFormat.wide)


OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        help="table (fits the terminal), wide (every column), json, jsonl, csv or yaml "
        "\\[default: table, or the context's output]",
    ),
]


@dataclass(slots=True)
class UiState:
    """What the global -q/-v flags asked for (set once per invocation by the root callback)."""

    quiet: bool = False
    verbose: bool = False


UI = UiState()


def hint(message: str | Text) -> None:
    """A line for people on stderr (progress notes, next steps); -q silences it."""
    if not UI.quiet:
        err_console.print(message, soft_wrap=True, markup=False, highlight=False)


def debug(message: str) -> None:
    """A line only -v shows (where the gateway came from, each call and its time)."""
    if UI.verbose:
        err_console.print(f"· {message}", style="dim", soft_wrap=True, markup=False)


def say(message: str | Text) -> None:
    """A result line on stdout (not a hint: -q keeps it), printed as is, never as markup."""
    console.print(message, soft_wrap=True, markup=False, highlight=False)


# -- the table helper -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Column(Generic[T]):
    """One column: its header, its text for people and its value for CSV.

    priority 0 is never left out; when the table is too wide, the column with the highest
    priority goes first (rightmost first among equals). `wide` columns show only in -o wide.
    `wrap` > 0 lets the column wrap down to that many characters instead of being left out.
    """

    header: str
    text: Callable[[T], str]
    value: Callable[[T], Any] | None = None
    key: str = ""
    priority: int = 0
    wide: bool = False
    wrap: int = 0
    right: bool = False
    style: Callable[[T], str | None] | None = None

    @property
    def csv_key(self) -> str:
        return self.key or self.header.lower().replace(" ", "_")

    def csv_value(self, item: T) -> Any:
        return self.value(item) if self.value is not None else self.text(item)


@dataclass(frozen=True, slots=True)
class TableLayout:
    """Which columns are shown at what width, and which were left out."""

    shown: tuple[int, ...]
    widths: tuple[int, ...]
    dropped: tuple[str, ...]


def layout_table(
    columns: Sequence[Column[Any]], cells: Sequence[Sequence[str]], *, width: int, wide: bool
) -> TableLayout:
    """Fit the columns into `width`: wrap what may wrap, then leave out low-priority columns."""
    natural = []
    minimum = []
    for index, column in enumerate(columns):
        longest = max(
            (cell_len(line) for row in cells for line in row[index].splitlines() or [""]),
            default=0,
        )
        natural.append(max(cell_len(column.header), longest))
        floor = min(natural[-1], max(column.wrap, cell_len(column.header)))
        minimum.append(floor if column.wrap and not wide else natural[-1])
    shown = [
        index
        for index, column in enumerate(columns)
        if wide or not (column.wide or (column.priority > 0 and _empty(cells, index)))
    ]
    dropped: list[str] = []

    def needed() -> int:
        return sum(minimum[index] for index in shown) + GAP * max(len(shown) - 1, 0)

    while not wide and needed() > width:
        droppable = [index for index in shown if columns[index].priority > 0]
        if not droppable:
            break  # only essential columns left: the line gets long, nothing is cut
        victim = max(droppable, key=lambda index: (columns[index].priority, index))
        shown.remove(victim)
        dropped.append(columns[victim].header)
    widths = {index: minimum[index] for index in shown}
    spare = width - needed()
    for index in shown:
        if spare <= 0:
            break
        grow = min(spare, natural[index] - widths[index])
        widths[index] += grow
        spare -= grow
    return TableLayout(
        tuple(shown), tuple(widths[index] for index in shown), tuple(reversed(dropped))
    )


def _empty(cells: Sequence[Sequence[str]], index: int) -> bool:
    """Whether every cell of the column is blank or `-` (an optional column then says nothing)."""
    return all(row[index] in ("", "-") for row in cells)


def table_lines(
    columns: Sequence[Column[T]],
    items: Iterable[T],
    *,
    width: int,
    wide: bool = False,
    show_header: bool = True,
) -> tuple[list[Text], TableLayout]:
    """The table as lines of styled text, and the layout it used."""
    rows = list(items)
    cells = [[column.text(item) for column in columns] for item in rows]
    plan = layout_table(columns, cells, width=width, wide=wide)
    lines: list[Text] = []

    def line(parts: list[tuple[str, int, bool, str | None]]) -> Text:
        text = Text()
        for position, (value, size, right, style) in enumerate(parts):
            if position:
                text.append(" " * GAP)
            pad = " " * max(size - cell_len(value), 0)
            last = position == len(parts) - 1
            text.append(pad if right else "")
            text.append(value, style=style or "")
            if not right and not last:
                text.append(pad)
        text.rstrip()
        return text

    if show_header:
        lines.append(
            line(
                [
                    (columns[index].header, size, columns[index].right, "bold")
                    for index, size in zip(plan.shown, plan.widths, strict=True)
                ]
            )
        )
    for item, row in zip(rows, cells, strict=True):
        shown = [
            (columns[index], wrap_text(row[index], size), size)
            for index, size in zip(plan.shown, plan.widths, strict=True)
        ]
        height = max((len(parts) for _, parts, _ in shown), default=1)
        for depth in range(height):
            lines.append(
                line(
                    [
                        (
                            parts[depth] if depth < len(parts) else "",
                            size,
                            column.right,
                            column.style(item) if column.style else None,
                        )
                        for column, parts, size in shown
                    ]
                )
            )
    return lines, plan


def print_table(
    columns: Sequence[Column[T]],
    items: Iterable[T],
    *,
    wide: bool = False,
    show_header: bool = True,
) -> None:
    """Print a table that fits the terminal (80 columns in a pipe); nothing is ever cut."""
    lines, plan = table_lines(
        columns, items, width=console.width, wide=wide, show_header=show_header
    )
    for text in lines:
        console.print(text, soft_wrap=True, no_wrap=True, overflow="ignore", crop=False)
    if plan.dropped:
        hint(
            f"(not shown at {console.width} columns: {', '.join(plan.dropped)}; -o wide shows all)"
        )


def print_fields(rows: Sequence[tuple[str, str] | tuple[str, str, str | None]]) -> None:
    """One object as a two-column table of its fields, with the same helper as every table."""
    columns: list[Column[tuple[Any, ...]]] = [
        Column(header="FIELD", text=lambda row: row[0], style=lambda row: "bold"),
        Column(
            header="VALUE",
            text=lambda row: row[1],
            wrap=20,
            style=lambda row: row[2] if len(row) > 2 else None,
        ),
    ]
    print_table(columns, rows, show_header=False)


# -- machine formats ------------------------------------------------------------------------------


def print_json(data: Any) -> None:
    """JSON on stdout, plain (no markup or wrapping), so it pipes into jq."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def print_yaml(data: Any) -> None:
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    sys.stdout.flush()


def print_jsonl(items: Iterable[Any]) -> None:
    for data in items:
        sys.stdout.write(json.dumps(data, sort_keys=False) + "\n")
    sys.stdout.flush()


def write_csv(columns: Sequence[Column[T]], items: Iterable[T], handle: Any = None) -> int:
    """Every column (the wide table's), one row per item, machine values; returns the rows."""
    writer = csv.writer(handle or sys.stdout)
    writer.writerow([column.csv_key for column in columns])
    count = 0
    for item in items:
        writer.writerow([column.csv_value(item) for column in columns])
        count += 1
    return count


def emit_list(
    items: Sequence[T],
    *,
    columns: Sequence[Column[T]],
    output: OutputFormat,
    key: str,
    data: Callable[[T], Any],
    empty: str = "",
) -> None:
    """A list in the asked format: `{key: [...]}` in JSON/YAML, an object a line in JSONL."""
    if output is OutputFormat.json:
        print_json({key: [data(item) for item in items]})
    elif output is OutputFormat.yaml:
        print_yaml({key: [data(item) for item in items]})
    elif output is OutputFormat.jsonl:
        print_jsonl(data(item) for item in items)
    elif output is OutputFormat.csv:
        write_csv(columns, items)
    elif not items:
        hint(empty)
    else:
        print_table(columns, items, wide=output is OutputFormat.wide)


def emit_one(
    item: T,
    *,
    output: OutputFormat,
    data: Callable[[T], Any],
    fields: Callable[[T], Sequence[tuple[str, str] | tuple[str, str, str | None]]],
    columns: Sequence[Column[T]] = (),
) -> None:
    """One object: its fields as a table for people, else the asked machine format."""
    if output is OutputFormat.json:
        print_json(data(item))
    elif output is OutputFormat.yaml:
        print_yaml(data(item))
    elif output is OutputFormat.jsonl:
        print_jsonl([data(item)])
    elif output is OutputFormat.csv and columns:
        write_csv(columns, [item])
    elif output is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        rows = fields(item)
        writer.writerow([row[0] for row in rows])
        writer.writerow([row[1] for row in rows])
    else:
        print_fields(fields(item))

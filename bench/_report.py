"""The results table: target, figure and PASS / MISS / REPORT per row; markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["PASS", "MISS", "REPORT", "NOT MEASURED"]


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    value: float | None
    target: str  # ">= 0.90", "< 250", "report"
    unit: str = ""
    note: str = ""

    @property
    def verdict(self) -> Verdict:
        if self.value is None:
            return "NOT MEASURED"
        op, _, bound = self.target.partition(" ")
        if op == "report":
            return "REPORT"
        limit = float(bound)
        ok = {">=": self.value >= limit, ">": self.value > limit, "<": self.value < limit}[op]
        return "PASS" if ok else "MISS"

    def shown(self) -> str:
        if self.value is None:
            return "not measured yet"
        text = f"{self.value:.3f}" if abs(self.value) < 10 else f"{self.value:.0f}"
        return f"{text} {self.unit}".strip()


def table(rows: list[Row]) -> str:
    head = ["figure", "value", "target", "result", "how"]
    body = [[r.key, r.shown(), r.target, r.verdict, r.note] for r in rows]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), rule, *(line(b) for b in body)])


def write(folder: Path, rows: list[Row], meta: dict[str, Any], details: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    machine = ", ".join(f"{k}={v}" for k, v in meta.items())
    (folder / "latest.md").write_text(f"# Smartfleet benchmarks\n\n{machine}\n\n{table(rows)}\n")
    data: dict[str, Any] = dict(meta)
    for row in rows:
        data[row.key] = row.value
    data["verdicts"] = {row.key: row.verdict for row in rows}
    data["targets"] = {row.key: row.target for row in rows}
    data["details"] = details
    (folder / "latest.json").write_text(json.dumps(data, indent=2, default=str) + "\n")

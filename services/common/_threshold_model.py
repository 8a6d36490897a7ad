"""What a threshold is (frozen values) and its one canonical spelling."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from services.common.types import Outcome

if TYPE_CHECKING:
    from services.common.types import Cell

# The figures a run keeps per session; the names are those of `GetRunStats`.
METRIC_NAMES: tuple[str, ...] = (
    "duration_ms",
    "ttfb_ms",
    "fcp_ms",
    "lcp_ms",
    "cls",
    "load_ms",
    "bytes",
    "requests",
)
OUTCOME_NAMES: tuple[str, ...] = tuple(outcome.value for outcome in Outcome)
ENGINE_NAMES: tuple[str, ...] = ("chromium", "firefox", "webkit")
# Cell fields a scope may name, in canonical order; labels are spelled `label.<name>`.
CELL_FIELDS: tuple[str, ...] = ("device", "locale", "timezone", "engine")
LABEL_PREFIX = "label."
LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-/]*")


class MetricFunction(StrEnum):
    AVG = "avg"
    MED = "med"
    MIN = "min"
    MAX = "max"
    PERCENTILE = "p"


class CountFunction(StrEnum):
    RATE = "rate"
    COUNT = "count"


class Comparator(StrEnum):
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="

    def holds(self, value: float, bound: float) -> bool:
        match self:
            case Comparator.LT:
                return value < bound
            case Comparator.LE:
                return value <= bound
            case Comparator.GT:
                return value > bound
            case Comparator.GE:
                return value >= bound
            case Comparator.EQ:
                return value == bound
            case Comparator.NE:
                return value != bound


@dataclass(frozen=True, slots=True)
class CellSelector:
    """`cell(device="Pixel 7", label.region="eu")`: every matrix cell whose fields all match.

    `fields` is in canonical order (device, locale, timezone, engine, then labels by name), so
    two selectors that select the same cells compare equal.
    """

    fields: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        if not self.fields:
            raise ValueError("a cell selector names at least one field")
        if list(self.fields) != sorted(self.fields, key=_field_order) or len(
            {name for name, _ in self.fields}
        ) != len(self.fields):
            raise ValueError("cell selector fields must be unique and in canonical order")

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> CellSelector:
        return cls(tuple(sorted(fields.items(), key=_field_order)))

    def matches(self, cell: Cell) -> bool:
        for name, value in self.fields:
            if name.startswith(LABEL_PREFIX):
                label = name[len(LABEL_PREFIX) :]
                if not any(key == label and found == value for key, found in cell.labels):
                    return False
            elif getattr(cell, name) != value:
                return False
        return True


def _field_order(item: tuple[str, str]) -> tuple[int, str]:
    name = item[0]
    return (CELL_FIELDS.index(name), "") if name in CELL_FIELDS else (len(CELL_FIELDS), name)


@dataclass(frozen=True, slots=True)
class MetricAggregate:
    """avg/med/min/max/pNN over one metric; `percentile` (0 < p < 100) only for pNN."""

    function: MetricFunction
    metric: str
    percentile: float | None = None

    @property
    def quantile(self) -> float | None:
        if self.function is MetricFunction.PERCENTILE:
            return None if self.percentile is None else self.percentile / 100
        return 0.5 if self.function is MetricFunction.MED else None


@dataclass(frozen=True, slots=True)
class OutcomeCondition:
    """Which outcomes a rate or count counts: `outcomes` (sorted, unique), or all others."""

    outcomes: tuple[str, ...]
    negated: bool = False

    def matches(self, outcome: str) -> bool:
        return (outcome in self.outcomes) != self.negated


@dataclass(frozen=True, slots=True)
class CountAggregate:
    """rate(condition): matching share of sessions; count(condition): how many matched."""

    function: CountFunction
    condition: OutcomeCondition


Aggregate = MetricAggregate | CountAggregate


@dataclass(frozen=True, slots=True)
class Threshold:
    """`[cell(...):] aggregate comparator bound`, e.g. `p95(lcp_ms) < 2500`."""

    aggregate: Aggregate
    comparator: Comparator
    bound: float
    scope: CellSelector | None = None

    def __str__(self) -> str:
        return format_threshold(self)


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """One entry of a spec's `thresholds`: the expression and what a failure may do early."""

    threshold: Threshold
    abort_on_fail: bool = False
    # Results in the threshold's scope before an estimate (rate, percentile, mean) may abort.
    min_sessions: int = 0
    expr: str = field(default="", compare=False)

    def to_json(self) -> str | dict[str, Any]:
        """The canonical spec entry: a plain string unless an option is set."""
        text = format_threshold(self.threshold)
        if not self.abort_on_fail:
            return text
        entry: dict[str, Any] = {"expr": text, "abort_on_fail": True}
        if self.min_sessions:
            entry["min_sessions"] = self.min_sessions
        return entry


# ----------------------------------------------------------------------------- formatting


def format_number(value: float) -> str:
    """Whole numbers without a fraction, others as Python's shortest exact repr."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def format_percentile(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_condition(condition: OutcomeCondition) -> str:
    outcomes = condition.outcomes
    if len(outcomes) == 1:
        if outcomes[0] == Outcome.OK and not condition.negated:
            return "ok"
        return f"outcome {'!=' if condition.negated else '=='} {quote(outcomes[0])}"
    listed = ", ".join(quote(outcome) for outcome in outcomes)
    return f"outcome {'not in' if condition.negated else 'in'} ({listed})"


def format_aggregate(aggregate: Aggregate) -> str:
    if isinstance(aggregate, CountAggregate):
        return f"{aggregate.function}({format_condition(aggregate.condition)})"
    if aggregate.function is MetricFunction.PERCENTILE:
        assert aggregate.percentile is not None
        return f"p{format_percentile(aggregate.percentile)}({aggregate.metric})"
    return f"{aggregate.function}({aggregate.metric})"


def format_scope(scope: CellSelector) -> str:
    return "cell(" + ", ".join(f"{name}={quote(value)}" for name, value in scope.fields) + ")"


def format_threshold(threshold: Threshold) -> str:
    """The canonical spelling: parse_threshold(format_threshold(t)) == t."""
    text = (
        f"{format_aggregate(threshold.aggregate)} {threshold.comparator}"
        f" {format_number(threshold.bound)}"
    )
    return f"{format_scope(threshold.scope)}: {text}" if threshold.scope else text

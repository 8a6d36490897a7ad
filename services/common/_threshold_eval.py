"""Evaluate thresholds against a run's figures, decide early failures, give the run a verdict."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

from services.common._threshold_model import (
    CellSelector,
    Comparator,
    CountAggregate,
    CountFunction,
    MetricAggregate,
    MetricFunction,
    Threshold,
    ThresholdRule,
    format_threshold,
)


class Figures(Protocol):
    """What a run's statistics answer; `cell=None` means every cell of the run.

    Metric reads return None where no result in scope measured the metric.
    """

    def outcomes(self, *, cell: CellSelector | None = None) -> Mapping[str, int]: ...

    def count(self, metric: str, *, cell: CellSelector | None = None) -> int: ...

    def quantile(
        self, metric: str, q: float, *, cell: CellSelector | None = None
    ) -> float | None: ...

    def mean(self, metric: str, *, cell: CellSelector | None = None) -> float | None: ...

    def min(self, metric: str, *, cell: CellSelector | None = None) -> float | None: ...

    def max(self, metric: str, *, cell: CellSelector | None = None) -> float | None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdResult:
    """A threshold against the figures so far.

    `passed` is None while nothing in scope measured what it asks about. `settled` says a
    failure can no longer turn into a pass, whatever results follow: a count that only grows
    is past its upper bound, a max above its ceiling, a min below its floor.
    """

    threshold: Threshold
    passed: bool | None
    value: float | None
    sessions: int
    settled: bool = False

    def describe(self) -> str:
        value = "no data" if self.value is None else f"{self.value:g}"
        state = {True: "passed", False: "failed", None: "no data yet"}[self.passed]
        return f"{format_threshold(self.threshold)}: {value} ({state})"

    def to_json(self) -> dict[str, Any]:
        return {
            "expr": format_threshold(self.threshold),
            "passed": self.passed,
            "value": self.value,
            "sessions": self.sessions,
        }


def _value(
    aggregate: MetricAggregate | CountAggregate,
    figures: Figures,
    cell: CellSelector | None,
    sessions: int,
) -> float | None:
    if isinstance(aggregate, CountAggregate):
        matched = sum(
            count
            for outcome, count in figures.outcomes(cell=cell).items()
            if aggregate.condition.matches(outcome)
        )
        if aggregate.function is CountFunction.COUNT:
            return float(matched)
        return matched / sessions if sessions else None
    metric = aggregate.metric
    if figures.count(metric, cell=cell) == 0:
        return None
    match aggregate.function:
        case MetricFunction.AVG:
            return figures.mean(metric, cell=cell)
        case MetricFunction.MIN:
            return figures.min(metric, cell=cell)
        case MetricFunction.MAX:
            return figures.max(metric, cell=cell)
        case _:
            quantile = aggregate.quantile
            assert quantile is not None
            return figures.quantile(metric, quantile, cell=cell)


def _settled(threshold: Threshold) -> bool:
    """Whether a failure of this threshold is permanent: its value only moves one way."""
    aggregate, comparator = threshold.aggregate, threshold.comparator
    if isinstance(aggregate, CountAggregate):
        # A count only grows: past an upper bound (or an exact one) it stays past.
        return aggregate.function is CountFunction.COUNT and comparator in (
            Comparator.LT,
            Comparator.LE,
            Comparator.EQ,
        )
    if aggregate.function is MetricFunction.MAX:
        return comparator in (Comparator.LT, Comparator.LE, Comparator.EQ)
    if aggregate.function is MetricFunction.MIN:
        return comparator in (Comparator.GT, Comparator.GE, Comparator.EQ)
    return False


def evaluate(threshold: Threshold, figures: Figures) -> ThresholdResult:
    """The threshold on what is in so far (at completion: the final answer)."""
    cell = threshold.scope
    sessions = sum(figures.outcomes(cell=cell).values())
    value = _value(threshold.aggregate, figures, cell, sessions)
    if value is None:
        return ThresholdResult(threshold=threshold, passed=None, value=None, sessions=sessions)
    passed = threshold.comparator.holds(value, threshold.bound)
    # An exact bound (==) is past for good only once the value is beyond it, not below it.
    settled = not passed and _settled(threshold)
    if settled and threshold.comparator is Comparator.EQ:
        aggregate = threshold.aggregate
        rising = isinstance(aggregate, CountAggregate) or aggregate.function is MetricFunction.MAX
        settled = value > threshold.bound if rising else value < threshold.bound
    return ThresholdResult(
        threshold=threshold, passed=passed, value=value, sessions=sessions, settled=settled
    )


def should_abort(rule: ThresholdRule, result: ThresholdResult) -> bool:
    """Whether this failure stops the run now (only rules with abort_on_fail).

    Estimates (rates, percentiles, means) abort once `min_sessions` results are in the rule's
    scope; a settled failure (a count past its bound) aborts at once, it cannot recover.
    """
    if not rule.abort_on_fail or result.passed is not False:
        return False
    return result.settled or result.sessions >= rule.min_sessions


class VerdictStatus(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    # Set by the scheduler when an abort_on_fail threshold stopped the run.
    ABORTED = "aborted"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """The run's verdict: one result per threshold, in the order of the spec."""

    status: VerdictStatus
    results: tuple[ThresholdResult, ...]
    final: bool

    @property
    def failures(self) -> tuple[ThresholdResult, ...]:
        """What failed; at completion a threshold that never had data counts as failed."""
        return tuple(
            result
            for result in self.results
            if result.passed is False or (self.final and result.passed is None)
        )

    @property
    def pending(self) -> tuple[ThresholdResult, ...]:
        """Thresholds with no data yet (only while the run goes on)."""
        return () if self.final else tuple(r for r in self.results if r.passed is None)

    def aborted(self) -> Verdict:
        return replace(self, status=VerdictStatus.ABORTED, final=True)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "final": self.final,
            "failures": [result.to_json() for result in self.failures],
        }


def judge(rules: Iterable[ThresholdRule | Threshold], figures: Figures, *, final: bool) -> Verdict:
    """The run's verdict so far (`final=False`) or at completion (`final=True`)."""
    results = tuple(
        evaluate(rule.threshold if isinstance(rule, ThresholdRule) else rule, figures)
        for rule in rules
    )
    failed = any(r.passed is False or (final and r.passed is None) for r in results)
    status = VerdictStatus.FAILED if failed else VerdictStatus.PASSED
    return Verdict(status=status, results=results, final=final)


def abort_reasons(rules: Sequence[ThresholdRule], verdict: Verdict) -> tuple[ThresholdResult, ...]:
    """The results of `verdict` (judged over `rules`, same order) that ask to stop the run now."""
    return tuple(
        result
        for rule, result in zip(rules, verdict.results, strict=True)
        if should_abort(rule, result)
    )

"""Threshold expressions: grammar, canonical form, errors with positions, evaluation, verdicts."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common._threshold_model import LABEL_NAME, format_aggregate, format_scope
from services.common.devices import device_names
from services.common.thresholds import (
    CELL_FIELDS,
    ENGINE_NAMES,
    METRIC_NAMES,
    OUTCOME_NAMES,
    CellSelector,
    Comparator,
    CountAggregate,
    CountFunction,
    MetricAggregate,
    MetricFunction,
    OutcomeCondition,
    Threshold,
    ThresholdError,
    ThresholdRule,
    ThresholdRuleError,
    VerdictStatus,
    abort_reasons,
    evaluate,
    format_threshold,
    judge,
    parse_threshold,
    parse_threshold_rules,
    should_abort,
)
from services.common.types import Cell
from services.scheduler._stats import percentile

# ----------------------------------------------------------------------------- strategies

_texts = st.text(max_size=12)
_devices = st.sampled_from(sorted(device_names()))
_label_names = st.from_regex(LABEL_NAME, fullmatch=True).filter(lambda name: len(name) <= 16)


@st.composite
def scopes(draw: st.DrawFn) -> CellSelector:
    fields: dict[str, str] = {}
    for name in draw(st.sets(st.sampled_from(CELL_FIELDS), max_size=4)):
        if name == "device":
            fields[name] = draw(_devices)
        elif name == "engine":
            fields[name] = draw(st.sampled_from(ENGINE_NAMES))
        else:
            fields[name] = draw(_texts)
    for label in draw(st.sets(_label_names, max_size=2)):
        fields[f"label.{label}"] = draw(_texts)
    if not fields:
        fields["engine"] = draw(st.sampled_from(ENGINE_NAMES))
    return CellSelector.of(fields)


@st.composite
def thresholds(draw: st.DrawFn) -> Threshold:
    scope = draw(st.none() | scopes())
    comparator = draw(st.sampled_from(Comparator))
    if draw(st.booleans()):
        function = draw(st.sampled_from(MetricFunction))
        percentile_ = (
            draw(st.integers(1, 99_999)) / 1000 if function is MetricFunction.PERCENTILE else None
        )
        aggregate: MetricAggregate | CountAggregate = MetricAggregate(
            function=function, metric=draw(st.sampled_from(METRIC_NAMES)), percentile=percentile_
        )
        bound = draw(st.floats(min_value=0, max_value=1e300, allow_nan=False))
    else:
        outcomes = draw(st.sets(st.sampled_from(OUTCOME_NAMES), min_size=1))
        condition = OutcomeCondition(outcomes=tuple(sorted(outcomes)), negated=draw(st.booleans()))
        count_function = draw(st.sampled_from(CountFunction))
        aggregate = CountAggregate(function=count_function, condition=condition)
        if count_function is CountFunction.RATE:
            bound = draw(st.floats(min_value=0, max_value=1))
        else:
            bound = float(draw(st.integers(0, 10**6)))
    return Threshold(aggregate=aggregate, comparator=comparator, bound=bound, scope=scope)


def _outside_strings(text: str) -> list[int]:
    """Indices of the spaces of a canonical text that are not inside a quoted string."""
    spaces, quoted, escaped = [], False, False
    for index, char in enumerate(text):
        if quoted:
            escaped, quoted = (not escaped and char == "\\"), quoted and (escaped or char != '"')
        elif char == '"':
            quoted = True
        elif char == " ":
            spaces.append(index)
    return spaces


# ----------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("p95(lcp_ms) < 2500", "p95(lcp_ms) < 2500"),
        ("p99(duration_ms)<5000", "p99(duration_ms) < 5000"),
        ("rate(ok) >= 0.99", "rate(ok) >= 0.99"),
        ("count(outcome == 'timeout') < 5", 'count(outcome == "timeout") < 5'),
        ("avg(ttfb_ms) <= 300.0", "avg(ttfb_ms) <= 300"),
        ("max(cls) < .1", "max(cls) < 0.1"),
        ("med(fcp_ms) < 1e3", "med(fcp_ms) < 1000"),
        ("min(load_ms) > 0", "min(load_ms) > 0"),
        ("p99.90(bytes) < 5E6", "p99.9(bytes) < 5000000"),
        ('count(outcome == "ok") > 10', "count(ok) > 10"),
        (
            'rate(outcome in ("timeout", "navigation_error", "timeout",)) < 0.01',
            'rate(outcome in ("navigation_error", "timeout")) < 0.01',
        ),
        (
            'rate(outcome not in ("ok")) <= 0.05',
            'rate(outcome != "ok") <= 0.05',
        ),
        (
            "cell(locale='de-DE', device='Pixel 7'): p95(duration_ms) < 3000",
            'cell(device="Pixel 7", locale="de-DE"): p95(duration_ms) < 3000',
        ),
        (
            ' cell( label.region = "eu" , engine="webkit", ) :count(outcome != "ok")==0 ',
            'cell(engine="webkit", label.region="eu"): count(outcome != "ok") == 0',
        ),
    ],
)
def test_examples_parse_to_their_canonical_form(text: str, canonical: str) -> None:
    """Each accepted spelling parses, and formats to the one canonical text, which reparses."""
    threshold = parse_threshold(text)
    assert format_threshold(threshold) == canonical
    assert parse_threshold(canonical) == threshold


def test_parsed_values() -> None:
    """A parsed threshold carries the function, metric, percentile, comparator and bound."""
    threshold = parse_threshold('cell(device="Pixel 7"): p99.9(lcp_ms) >= 2500.5')
    assert threshold == Threshold(
        aggregate=MetricAggregate(
            function=MetricFunction.PERCENTILE, metric="lcp_ms", percentile=99.9
        ),
        comparator=Comparator.GE,
        bound=2500.5,
        scope=CellSelector((("device", "Pixel 7"),)),
    )
    assert threshold.aggregate.quantile == pytest.approx(0.999)
    assert parse_threshold("med(cls) < 1").aggregate.quantile == 0.5  # type: ignore[union-attr]


@settings(max_examples=250, deadline=None)
@given(thresholds())
def test_parse_of_format_is_identity(threshold: Threshold) -> None:
    """For any valid threshold, parse(format(t)) == t."""
    assert parse_threshold(format_threshold(threshold)) == threshold


@settings(max_examples=200, deadline=None)
@given(thresholds(), st.randoms(use_true_random=False))
def test_whitespace_between_tokens_does_not_matter(
    threshold: Threshold, rnd: random.Random
) -> None:
    """Extra whitespace outside strings (spaces, tabs, newlines) parses to the same threshold."""
    text = format_threshold(threshold)
    chars = list(text)
    for index in reversed(_outside_strings(text)):
        chars[index] = rnd.choice([" ", "  ", "\t", "\n "])
    assert parse_threshold(" " + "".join(chars) + "\t") == threshold


@settings(max_examples=200, deadline=None)
@given(thresholds(), st.data())
def test_bad_input_names_the_right_position(threshold: Threshold, data: st.DataObject) -> None:
    """Each kind of mistake in a valid threshold is reported at the column where it is."""
    prefix = f"{format_scope(threshold.scope)}: " if threshold.scope else ""
    aggregate = format_aggregate(threshold.aggregate)
    text = format_threshold(threshold)
    comparator_at = len(prefix) + len(aggregate) + 1
    mistakes: list[tuple[str, int]] = [
        # a stray character where a space was
        *((text[:at] + " @" + text[at:], at + 1) for at in _outside_strings(text)),
        # `=` instead of a comparison
        (text[:comparator_at] + "= 1", comparator_at),
        # no number after the comparison
        (
            text[: comparator_at + len(threshold.comparator)],
            comparator_at + len(threshold.comparator),
        ),
        # something after the end
        (text + " ms", len(text) + 1),
    ]
    if isinstance(threshold.aggregate, MetricAggregate):
        at = len(prefix) + aggregate.index("(") + 1
        mistakes.append((text[:at] + "x" + text[at:], at))
    else:
        quote_at = text.find('"', len(prefix))
        if quote_at > 0:
            mistakes.append((text[: quote_at + 1] + "x" + text[quote_at + 1 :], quote_at))
    bad, position = data.draw(st.sampled_from(mistakes))
    with pytest.raises(ThresholdError) as caught:
        parse_threshold(bad)
    assert caught.value.position == position, (bad, str(caught.value))
    assert str(caught.value).startswith(f"at {position}: ")


@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("p95(lcp) < 2500", 4, "unknown metric 'lcp' (did you mean 'lcp_ms'?); known: duration_ms"),
        ("p95(lcp_ms) = 2500", 12, "found '=' (use == to compare)"),
        ("rate(ok) >= 99", 12, "a rate is a fraction between 0 and 1; did you mean 0.99?"),
        (
            'count(outcome == "timout") < 5',
            17,
            "unknown outcome 'timout' (did you mean 'timeout'?)",
        ),
        (
            'cell(devise="Pixel 7"): p95(duration_ms) < 1',
            5,
            "unknown cell field 'devise' (did you mean 'device'?)",
        ),
        (
            'cell(device="Pixel7"): max(cls) < 1',
            12,
            "unknown device 'Pixel7' (did you mean 'Pixel 7'?)",
        ),
        (
            'cell(engine="chrome"): max(cls) < 1',
            12,
            "unknown engine 'chrome' (did you mean 'chromium'?)",
        ),
        (
            'cell(device="Pixel 7", device="Pixel 5"): max(cls) < 1',
            23,
            "cell field 'device' named twice",
        ),
        ("cell(): max(cls) < 1", 4, "cell() names at least one field"),
        ('cell(device="Pixel 7") p95(cls) < 1', 23, "expected ':' after cell(...)"),
        ('cell(label.="x"): max(cls) < 1', 5, "names no label"),
        ("p150(cls) < 1", 0, "percentile 150 is out of range"),
        ("p99.9999(cls) < 1", 0, "at most 3 decimals"),
        ("p(95)(cls) < 1", 0, "write the percentile in the name"),
        ("mean(cls) < 1", 0, "unknown function 'mean' (did you mean 'avg'?)"),
        ("avg(ok) < 1", 4, "avg() takes a metric, not an outcome"),
        ("rate(lcp_ms) < 0.5", 5, "not a metric"),
        ("rate(timeout) < 0.1", 5, 'write outcome == "timeout"'),
        ("rate(outcome = 'ok') < 0.1", 13, "(use == to compare)"),
        ("rate(outcome in ()) < 0.1", 16, "list at least one outcome"),
        ("p95(lcp_ms) < -1", 14, "bounds are never negative"),
        ("p95(lcp_ms) < 1e999", 14, "out of range"),
        ("p95(lcp_ms) < 2500 ms", 19, "unexpected 'ms' after the threshold"),
        ("p95(lcp_ms < 5", 11, "expected ')', found '<'"),
        ("p95(lcp_ms) <", 13, "expected a number, found the end of the expression"),
        ('count(ok) < "5', 12, "unterminated string"),
        ("count(outcome == 'o\\k') < 1", 19, "unknown escape"),
        ("p95(lcp_ms) < 2500 & 1", 19, "unexpected character '&'"),
        ("", 0, "empty threshold"),
        ("   ", 0, "empty threshold"),
        ("x" * 501, 500, "longer than 500 characters"),
    ],
)
def test_error_messages(text: str, position: int, message: str) -> None:
    """Bad expressions raise ThresholdError with the column and a message that says what to do."""
    with pytest.raises(ThresholdError) as caught:
        parse_threshold(text)
    assert caught.value.position == position
    assert message in str(caught.value)
    assert str(caught.value) == f"at {position}: {caught.value.reason}"
    assert isinstance(caught.value, ValueError)


# ----------------------------------------------------------------------------- spec entries


def test_rules_from_strings_and_objects() -> None:
    """Spec entries are strings or {expr, abort_on_fail, min_sessions}; to_json reparses."""
    rules = parse_threshold_rules(
        [
            "rate(ok) >= 0.99",
            {"expr": "p95(lcp_ms)<2500", "abort_on_fail": True, "min_sessions": 100},
            {"expr": "max(cls) < 0.1", "abort_on_fail": False},
        ]
    )
    assert [rule.abort_on_fail for rule in rules] == [False, True, False]
    assert rules[1].min_sessions == 100
    assert rules[1].expr == "p95(lcp_ms)<2500"
    assert [rule.to_json() for rule in rules] == [
        "rate(ok) >= 0.99",
        {"expr": "p95(lcp_ms) < 2500", "abort_on_fail": True, "min_sessions": 100},
        "max(cls) < 0.1",
    ]
    assert parse_threshold_rules([rule.to_json() for rule in rules]) == rules
    assert parse_threshold_rules(None) == ()


@pytest.mark.parametrize(
    ("entries", "path", "message", "position"),
    [
        (
            ["rate(ok) >= 0.9", "max(cls) < 1", "p95(lcp) < 1"],
            "thresholds[2]",
            "[2] at 4: unknown metric 'lcp'",
            4,
        ),
        (
            [{"expr": "p95(lcp_ms) <"}],
            "thresholds[0].expr",
            "[0] expr: at 13: expected a number",
            13,
        ),
        (
            [{"exp": "max(cls) < 1"}],
            "thresholds[0]",
            "unknown field 'exp' (did you mean 'expr'?)",
            None,
        ),
        ([{"abort_on_fail": True}], "thresholds[0].expr", "needs expr", None),
        (
            [{"expr": "max(cls) < 1", "abort_on_fail": "yes"}],
            "thresholds[0].abort_on_fail",
            "true or false",
            None,
        ),
        (
            [{"expr": "max(cls) < 1", "abort_on_fail": True, "min_sessions": -1}],
            "thresholds[0].min_sessions",
            "between 0",
            None,
        ),
        (
            [{"expr": "max(cls) < 1", "abort_on_fail": True, "min_sessions": 1.5}],
            "thresholds[0].min_sessions",
            "whole number",
            None,
        ),
        (
            [{"expr": "max(cls) < 1", "min_sessions": 10}],
            "thresholds[0].min_sessions",
            "only with abort_on_fail",
            None,
        ),
        ([7], "thresholds[0]", "a threshold is a string or an object", None),
        ("rate(ok) > 0.5", "thresholds[0]", "is a list", None),
        (["max(cls) < 1"] * 51, "thresholds[50]", "at most 50 thresholds", None),
    ],
)
def test_rule_errors_name_the_field_and_position(
    entries: object, path: str, message: str, position: int | None
) -> None:
    """A bad entry names its path (thresholds[2], thresholds[2].min_sessions) and the column."""
    with pytest.raises(ThresholdRuleError) as caught:
        parse_threshold_rules(entries)
    assert caught.value.path == path
    assert message in str(caught.value)
    assert caught.value.position == position


# ----------------------------------------------------------------------------- evaluation


class ExactFigures:
    """The reference figures: exact nearest-rank values over lists of (cell, outcome, metrics)."""

    def __init__(self, rows: list[tuple[Cell, str, dict[str, float]]]) -> None:
        self.rows = rows

    def _rows(self, cell: CellSelector | None) -> list[tuple[Cell, str, dict[str, float]]]:
        return [row for row in self.rows if cell is None or cell.matches(row[0])]

    def _values(self, metric: str, cell: CellSelector | None) -> list[float]:
        return sorted(m[metric] for _, _, m in self._rows(cell) if metric in m)

    def outcomes(self, *, cell: CellSelector | None = None) -> Mapping[str, int]:
        counts: dict[str, int] = {}
        for _, outcome, _ in self._rows(cell):
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def count(self, metric: str, *, cell: CellSelector | None = None) -> int:
        return len(self._values(metric, cell))

    def quantile(self, metric: str, q: float, *, cell: CellSelector | None = None) -> float | None:
        values = self._values(metric, cell)
        return percentile(values, q) if values else None

    def mean(self, metric: str, *, cell: CellSelector | None = None) -> float | None:
        values = self._values(metric, cell)
        return sum(values) / len(values) if values else None

    def min(self, metric: str, *, cell: CellSelector | None = None) -> float | None:
        values = self._values(metric, cell)
        return values[0] if values else None

    def max(self, metric: str, *, cell: CellSelector | None = None) -> float | None:
        values = self._values(metric, cell)
        return values[-1] if values else None


PIXEL = Cell(device="Pixel 7", locale="de-DE", labels=(("region", "eu"),))
DESKTOP = Cell(device="Desktop Chrome", locale="en-US")


def _figures() -> ExactFigures:
    rows: list[tuple[Cell, str, dict[str, float]]] = []
    for index in range(100):
        rows.append((DESKTOP, "ok", {"duration_ms": 100.0 + index, "lcp_ms": 1000.0 + index}))
    for index in range(50):
        outcome = "timeout" if index < 5 else "ok"
        rows.append((PIXEL, outcome, {"duration_ms": 3000.0 + index, "cls": 0.05}))
    return ExactFigures(rows)


@pytest.mark.parametrize(
    ("text", "passed", "value"),
    [
        ("rate(ok) >= 0.99", False, 145 / 150),
        ("rate(ok) >= 0.95", True, 145 / 150),
        ('count(outcome == "timeout") < 5', False, 5.0),
        ('count(outcome == "timeout") <= 5', True, 5.0),
        ('rate(outcome != "ok") < 0.05', True, 5 / 150),
        ("p95(lcp_ms) < 2500", True, 1094.0),
        ("p50(duration_ms) < 170", False, 174.0),
        ("med(duration_ms) <= 174", True, 174.0),
        ("avg(lcp_ms) == 1049.5", True, 1049.5),
        ("max(duration_ms) < 3049", False, 3049.0),
        ("min(duration_ms) >= 100", True, 100.0),
        ('cell(device="Pixel 7"): rate(ok) >= 0.9', True, 0.9),
        ('cell(label.region="eu"): p99(duration_ms) < 3049', False, 3049.0),
        ('cell(locale="en-US"): count(outcome == "timeout") == 0', True, 0.0),
        ('cell(device="Pixel 7"): p95(lcp_ms) < 2500', None, None),
        ('cell(device="Pixel 5"): rate(ok) >= 0.9', None, None),
        ('cell(device="Pixel 5"): count(ok) < 1', True, 0.0),
    ],
)
def test_evaluate(text: str, passed: bool | None, value: float | None) -> None:
    """evaluate gives the value of the figures in scope and whether the bound holds (None: no data)."""
    result = evaluate(parse_threshold(text), _figures())
    assert result.passed is passed
    assert result.value == (None if value is None else pytest.approx(value))


@pytest.mark.parametrize(
    ("text", "settled"),
    [
        ('count(outcome == "timeout") < 5', True),
        ('count(outcome == "timeout") == 0', True),
        ('count(outcome == "timeout") == 9', False),
        ("count(ok) >= 1000", False),
        ("max(duration_ms) <= 3000", True),
        ("min(duration_ms) > 100", True),
        ("min(duration_ms) == 101", True),
        ("max(duration_ms) == 4000", False),
        ("rate(ok) >= 0.99", False),
        ("p99(duration_ms) < 100", False),
        ("avg(duration_ms) < 100", False),
    ],
)
def test_failures_that_cannot_recover_are_settled(text: str, settled: bool) -> None:
    """A failure is settled only where the value moves one way (counts up, max up, min down)."""
    result = evaluate(parse_threshold(text), _figures())
    assert result.passed is False
    assert result.settled is settled


def test_should_abort_waits_for_min_sessions_except_for_settled_failures() -> None:
    """Estimates abort after min_sessions results in scope; a count past its bound at once."""
    figures = _figures()
    rate = ThresholdRule(threshold=parse_threshold("rate(ok) >= 0.99"), abort_on_fail=True)
    assert should_abort(rate, evaluate(rate.threshold, figures))
    waiting = ThresholdRule(threshold=rate.threshold, abort_on_fail=True, min_sessions=151)
    assert not should_abort(waiting, evaluate(waiting.threshold, figures))
    scoped = ThresholdRule(
        threshold=parse_threshold('cell(device="Pixel 7"): rate(ok) >= 0.99'),
        abort_on_fail=True,
        min_sessions=60,
    )
    assert evaluate(scoped.threshold, figures).sessions == 50
    assert not should_abort(scoped, evaluate(scoped.threshold, figures))
    count = ThresholdRule(
        threshold=parse_threshold('count(outcome == "timeout") < 5'),
        abort_on_fail=True,
        min_sessions=10**6,
    )
    assert should_abort(count, evaluate(count.threshold, figures))
    quiet = ThresholdRule(threshold=count.threshold)
    assert not should_abort(quiet, evaluate(quiet.threshold, figures))
    passing = ThresholdRule(threshold=parse_threshold("rate(ok) >= 0.5"), abort_on_fail=True)
    assert not should_abort(passing, evaluate(passing.threshold, figures))


def test_count_upper_bound_fails_as_soon_as_it_is_reached() -> None:
    """Fed one result at a time, count(...) < 3 passes until the third timeout, then aborts."""
    rule = parse_threshold_rules(
        [{"expr": 'count(outcome == "timeout") < 3', "abort_on_fail": True, "min_sessions": 50}]
    )[0]
    rows: list[tuple[Cell, str, dict[str, float]]] = []
    decisions = []
    for outcome in ["ok", "timeout", "ok", "timeout", "ok", "timeout", "ok"]:
        rows.append((DESKTOP, outcome, {"duration_ms": 1.0}))
        decisions.append(should_abort(rule, evaluate(rule.threshold, ExactFigures(rows))))
    assert decisions == [False, False, False, False, False, True, True]


def test_verdict_passed_failed_and_aborted() -> None:
    """judge lists failures with values; no data fails only at completion; aborted is kept."""
    rules = parse_threshold_rules(
        [
            "rate(ok) >= 0.95",
            {"expr": "p95(duration_ms) < 3000", "abort_on_fail": True},
            'cell(device="Pixel 5"): p95(duration_ms) < 3000',
        ]
    )
    figures = _figures()
    running = judge(rules, figures, final=False)
    assert running.status is VerdictStatus.FAILED
    assert [f.threshold for f in running.failures] == [rules[1].threshold]
    assert running.failures[0].value == 3042.0
    assert [p.threshold for p in running.pending] == [rules[2].threshold]
    assert [r.threshold for r in abort_reasons(rules, running)] == [rules[1].threshold]

    final = judge(rules, figures, final=True)
    assert [f.threshold for f in final.failures] == [rules[1].threshold, rules[2].threshold]
    assert final.pending == ()
    assert final.to_json()["failures"][1] == {
        "expr": 'cell(device="Pixel 5"): p95(duration_ms) < 3000',
        "passed": None,
        "value": None,
        "sessions": 0,
    }
    aborted = running.aborted()
    assert aborted.status is VerdictStatus.ABORTED
    assert aborted.failures == final.failures
    assert final.failures[0].describe() == "p95(duration_ms) < 3000: 3042 (failed)"

    passing = judge(rules[:1], figures, final=True)
    assert passing.status is VerdictStatus.PASSED
    assert passing.failures == ()
    assert judge([], figures, final=True).status is VerdictStatus.PASSED


def test_selector_matches_cells() -> None:
    """A selector matches a cell when every named field (labels by name) is equal."""
    assert CellSelector.of({"device": "Pixel 7"}).matches(PIXEL)
    assert CellSelector.of({"label.region": "eu", "locale": "de-DE"}).matches(PIXEL)
    assert not CellSelector.of({"label.region": "us"}).matches(PIXEL)
    assert not CellSelector.of({"label.zone": "eu"}).matches(PIXEL)
    assert CellSelector.of({"engine": "chromium"}).matches(DESKTOP)
    with pytest.raises(ValueError, match="canonical order"):
        CellSelector((("locale", "x"), ("device", "Pixel 7")))
    with pytest.raises(ValueError, match="at least one"):
        CellSelector(())


def test_comparators() -> None:
    """Every comparator holds exactly where its operator does."""
    for comparator in Comparator:
        for value, bound in [(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]:
            expected = eval(f"{value} {comparator.value} {bound}")
            assert comparator.holds(value, bound) is expected
    assert not math.isnan(parse_threshold("rate(ok) > 0").bound)

"""Parse threshold expressions (a hand-written tokenizer and recursive descent: a tiny grammar).

    threshold  = [ scope ":" ] aggregate comparator number
    scope      = "cell" "(" selection { "," selection } [ "," ] ")"
    selection  = ( "device" | "locale" | "timezone" | "engine" | "label." name ) "=" string
    aggregate  = ( "avg" | "med" | "min" | "max" | percentile ) "(" metric ")"
               | ( "rate" | "count" ) "(" condition ")"
    percentile = "p" digits [ "." digits ]            (0 < p < 100, at most 3 decimals)
    metric     = "duration_ms" | "ttfb_ms" | "fcp_ms" | "lcp_ms" | "cls" | "load_ms"
               | "bytes" | "requests"
    condition  = "ok"
               | "outcome" ( "==" | "!=" ) string
               | "outcome" [ "not" ] "in" "(" string { "," string } [ "," ] ")"
    comparator = "<" | "<=" | ">" | ">=" | "==" | "!="
    number     = digits [ "." digits ] [ ( "e" | "E" ) [ "+" | "-" ] digits ]
    string     = '"' { character | '\\"' | "\\\\" } '"'   (or the same in single quotes)

Whitespace may separate any two tokens. Every error carries the 0-based column it concerns.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass

from services.common._threshold_model import (
    CELL_FIELDS,
    ENGINE_NAMES,
    LABEL_NAME,
    LABEL_PREFIX,
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
)
from services.common.devices import device_names

MAX_LENGTH = 500

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_.\-/]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op><=|>=|==|!=|<|>|=|\(|\)|,|:)
    """,
    re.VERBOSE | re.DOTALL,
)
_PERCENTILE = re.compile(r"p(\d+(?:\.(\d+))?)")
_COMPARATORS = {comparator.value: comparator for comparator in Comparator}
_METRIC_FUNCTIONS = {"avg", "med", "min", "max"}
_ALIASES = {"mean": "avg", "average": "avg", "median": "med", "total": "count"}
_FUNCTIONS_HELP = "avg, med, min, max, pNN (p95, p99.9), rate, count"


class ThresholdError(ValueError):
    """A threshold expression that does not parse; `position` is the 0-based column."""

    def __init__(self, reason: str, *, position: int) -> None:
        super().__init__(f"at {position}: {reason}")
        self.reason = reason
        self.position = position


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # name, number, string, op, end
    text: str
    position: int

    def shown(self) -> str:
        return "the end of the expression" if self.kind == "end" else repr(self.text)


def suggest(word: str, known: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unquote(token: _Token) -> str:
    body, out, index = token.text[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            escaped = body[index + 1]
            if escaped not in "\\\"'":
                raise ThresholdError(
                    f"unknown escape '\\{escaped}' in a string; only \\\\, \\\" and \\' are known",
                    position=token.position + 1 + index,
                )
            out.append(escaped)
            index += 2
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _tokenize(text: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            char = text[position]
            if char in "\"'":
                raise ThresholdError("unterminated string", position=position)
            if char == "-":
                raise ThresholdError("bounds are never negative; remove the '-'", position=position)
            raise ThresholdError(f"unexpected character {char!r}", position=position)
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group(), position))
        position = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self._tokens = _tokenize(text)
        self._index = 0

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def _next(self) -> _Token:
        token = self._peek()
        self._index += 1
        return token

    def _at(self, op: str) -> bool:
        token = self._peek()
        return token.kind == "op" and token.text == op

    def _expect(self, text: str, what: str) -> _Token:
        token = self._next()
        if token.kind != "op" or token.text != text:
            raise ThresholdError(f"expected {what}, found {token.shown()}", position=token.position)
        return token

    def threshold(self) -> Threshold:
        scope = None
        first = self._peek()
        if first.kind == "end":
            raise ThresholdError(
                "empty threshold; write one like p95(duration_ms) < 5000", position=0
            )
        if first.kind == "name" and first.text == "cell":
            scope = self._scope()
            self._expect(":", "':' after cell(...)")
        aggregate = self._aggregate()
        comparator = self._comparator()
        bound = self._bound(aggregate)
        end = self._next()
        if end.kind != "end":
            raise ThresholdError(
                f"unexpected {end.shown()} after the threshold", position=end.position
            )
        return Threshold(aggregate=aggregate, comparator=comparator, bound=bound, scope=scope)

    # ------------------------------------------------------------------------- scope

    def _scope(self) -> CellSelector:
        self._next()
        opening = self._expect("(", "'('")
        fields: dict[str, str] = {}
        while not self._at(")"):
            name = self._cell_field()
            if name.text in fields:
                raise ThresholdError(
                    f"cell field {name.text!r} named twice", position=name.position
                )
            self._expect("=", f"'=' after {name.text}")
            fields[name.text] = self._cell_value(name.text)
            if not self._at(")"):
                self._expect(",", "',' or ')'")
        if not fields:
            raise ThresholdError(
                'cell() names at least one field, e.g. cell(device="Pixel 7")',
                position=opening.position,
            )
        self._next()
        return CellSelector.of(fields)

    def _cell_field(self) -> _Token:
        token = self._next()
        known = f"known: {', '.join(CELL_FIELDS)}, {LABEL_PREFIX}<name>"
        if token.kind != "name":
            raise ThresholdError(
                f"expected a cell field, found {token.shown()}; {known}", position=token.position
            )
        if token.text in CELL_FIELDS:
            return token
        if token.text.startswith(LABEL_PREFIX):
            if LABEL_NAME.fullmatch(token.text[len(LABEL_PREFIX) :]):
                return token
            raise ThresholdError(
                f"{token.text!r} names no label; write {LABEL_PREFIX}<name>, e.g. label.region",
                position=token.position,
            )
        stem = token.text.split(".", 1)[0]
        hint = suggest(stem, [*CELL_FIELDS, "label"])
        raise ThresholdError(
            f"unknown cell field {token.text!r}{hint}; {known}", position=token.position
        )

    def _cell_value(self, field: str) -> str:
        token = self._next()
        if token.kind != "string":
            raise ThresholdError(
                f'expected a quoted value for {field}, found {token.shown()}; e.g. {field}="..."',
                position=token.position,
            )
        value = _unquote(token)
        if field == "engine" and value not in ENGINE_NAMES:
            raise ThresholdError(
                f"unknown engine {value!r}{suggest(value, ENGINE_NAMES)}; "
                f"known: {', '.join(ENGINE_NAMES)}",
                position=token.position,
            )
        if field == "device" and value not in device_names():
            raise ThresholdError(
                f"unknown device {value!r}{suggest(value, sorted(device_names()))}; "
                "use a Playwright device name like 'Pixel 7' or 'Desktop Chrome'",
                position=token.position,
            )
        return value

    # ------------------------------------------------------------------------- aggregate

    def _aggregate(self) -> MetricAggregate | CountAggregate:
        name = self._next()
        if name.kind != "name":
            raise ThresholdError(
                f"expected a function ({_FUNCTIONS_HELP}), found {name.shown()}",
                position=name.position,
            )
        if name.text in ("rate", "count"):
            self._expect("(", f"'(' after {name.text}")
            condition = self._condition(name.text)
            self._expect(")", "')'")
            return CountAggregate(function=CountFunction(name.text), condition=condition)
        if name.text in _METRIC_FUNCTIONS:
            function, percentile = MetricFunction(name.text), None
        elif match := _PERCENTILE.fullmatch(name.text):
            function, percentile = MetricFunction.PERCENTILE, float(match.group(1))
            if not 0 < percentile < 100:
                raise ThresholdError(
                    f"percentile {match.group(1)} is out of range; use 0 < p < 100 "
                    "(min(...) and max(...) are the ends)",
                    position=name.position,
                )
            if len(match.group(2) or "") > 3:
                raise ThresholdError(
                    "a percentile has at most 3 decimals, e.g. p99.999", position=name.position
                )
        elif name.text == "p" and self._at("("):
            raise ThresholdError(
                "write the percentile in the name, e.g. p95(duration_ms)", position=name.position
            )
        else:
            known = ["avg", "med", "min", "max", "p95", "p99", "rate", "count"]
            alias = _ALIASES.get(name.text.lower())
            hint = f" (did you mean {alias!r}?)" if alias else suggest(name.text, known)
            raise ThresholdError(
                f"unknown function {name.text!r}{hint}; known: {_FUNCTIONS_HELP}",
                position=name.position,
            )
        self._expect("(", f"'(' after {name.text}")
        metric = self._metric(name.text)
        self._expect(")", "')'")
        return MetricAggregate(function=function, metric=metric, percentile=percentile)

    def _metric(self, function: str) -> str:
        token = self._next()
        known = f"known: {', '.join(METRIC_NAMES)}"
        if token.kind == "name" and token.text in METRIC_NAMES:
            return token.text
        if token.kind == "name" and token.text in ("ok", "outcome", *OUTCOME_NAMES):
            raise ThresholdError(
                f"{function}() takes a metric, not an outcome; use rate(...) or count(...) "
                f"for outcomes; {known}",
                position=token.position,
            )
        if token.kind != "name":
            raise ThresholdError(
                f"expected a metric, found {token.shown()}; {known}", position=token.position
            )
        raise ThresholdError(
            f"unknown metric {token.text!r}{suggest(token.text, METRIC_NAMES)}; {known}",
            position=token.position,
        )

    def _condition(self, function: str) -> OutcomeCondition:
        token = self._next()
        if token.kind == "name" and token.text == "ok":
            return OutcomeCondition(outcomes=("ok",))
        if token.kind == "name" and token.text == "outcome":
            return self._outcome_test()
        usage = f'{function}() takes ok, outcome == "...", outcome in ("...", ...)'
        if token.kind == "name" and token.text in OUTCOME_NAMES:
            raise ThresholdError(
                f'{usage}; write outcome == "{token.text}"', position=token.position
            )
        if token.kind == "name" and token.text in METRIC_NAMES:
            raise ThresholdError(
                f"{usage}, not a metric; avg/med/min/max/pNN take metrics",
                position=token.position,
            )
        hint = suggest(token.text, ["ok", "outcome"]) if token.kind == "name" else ""
        raise ThresholdError(f"{usage}; found {token.shown()}{hint}", position=token.position)

    def _outcome_test(self) -> OutcomeCondition:
        token = self._next()
        if token.kind == "op" and token.text in ("==", "!="):
            return OutcomeCondition(outcomes=(self._outcome(),), negated=token.text == "!=")
        negated = token.kind == "name" and token.text == "not"
        if negated:
            token = self._next()
        if token.kind != "name" or token.text != "in":
            expected = "'in'" if negated else "==, !=, in or not in"
            hint = " (use == to compare)" if token.text == "=" else ""
            raise ThresholdError(
                f"expected {expected} after outcome, found {token.shown()}{hint}",
                position=token.position,
            )
        opening = self._expect("(", "'(' after in")
        outcomes: set[str] = set()
        while not self._at(")"):
            outcomes.add(self._outcome())
            if not self._at(")"):
                self._expect(",", "',' or ')'")
        if not outcomes:
            raise ThresholdError("list at least one outcome", position=opening.position)
        self._next()
        return OutcomeCondition(outcomes=tuple(sorted(outcomes)), negated=negated)

    def _outcome(self) -> str:
        token = self._next()
        known = f"known: {', '.join(OUTCOME_NAMES)}"
        if token.kind != "string":
            raise ThresholdError(
                f"expected a quoted outcome, found {token.shown()}; {known}",
                position=token.position,
            )
        value = _unquote(token)
        if value not in OUTCOME_NAMES:
            raise ThresholdError(
                f"unknown outcome {value!r}{suggest(value, OUTCOME_NAMES)}; {known}",
                position=token.position,
            )
        return value

    # ------------------------------------------------------------------------- comparison

    def _comparator(self) -> Comparator:
        token = self._next()
        if token.kind == "op" and token.text in _COMPARATORS:
            return _COMPARATORS[token.text]
        hint = " (use == to compare)" if token.text == "=" else ""
        raise ThresholdError(
            f"expected a comparison (<, <=, >, >=, ==, !=), found {token.shown()}{hint}",
            position=token.position,
        )

    def _bound(self, aggregate: MetricAggregate | CountAggregate) -> float:
        token = self._next()
        if token.kind != "number":
            raise ThresholdError(
                f"expected a number, found {token.shown()}", position=token.position
            )
        value = float(token.text)
        if not math.isfinite(value):
            raise ThresholdError(f"{token.text} is out of range", position=token.position)
        if isinstance(aggregate, CountAggregate) and aggregate.function is CountFunction.RATE:
            if value > 1:
                hint = f"; did you mean {value / 100:g}?" if value <= 100 else ""
                raise ThresholdError(
                    f"a rate is a fraction between 0 and 1{hint}", position=token.position
                )
        return value


def parse_threshold(text: str) -> Threshold:
    """Parse one expression like `p95(lcp_ms) < 2500`; raise ThresholdError naming the column."""
    if len(text) > MAX_LENGTH:
        raise ThresholdError(f"longer than {MAX_LENGTH} characters", position=MAX_LENGTH)
    return _Parser(text).threshold()

"""A spec's `thresholds` list: each entry a string or {expr, abort_on_fail, min_sessions}."""

from __future__ import annotations

from collections.abc import Mapping

from services.common._threshold_model import ThresholdRule
from services.common._threshold_parser import ThresholdError, parse_threshold, suggest

MAX_RULES = 50
MAX_MIN_SESSIONS = 10**9
_RULE_KEYS = ("expr", "abort_on_fail", "min_sessions")


class ThresholdRuleError(ValueError):
    """A bad entry of a spec's `thresholds` list.

    `path` is relative to the spec (`thresholds[2]`, `thresholds[2].min_sessions`); `str()` is
    `[2] reason` (or `[2] min_sessions: reason`), the shape `parse_spec` folds into a field
    path. `position` is the column inside the expression, when the expression is at fault.
    """

    def __init__(
        self, reason: str, *, index: int, subfield: str = "", position: int | None = None
    ) -> None:
        super().__init__(f"[{index}] {subfield}: {reason}" if subfield else f"[{index}] {reason}")
        self.reason = reason
        self.index = index
        self.subfield = subfield
        self.position = position

    @property
    def path(self) -> str:
        path = f"thresholds[{self.index}]"
        return f"{path}.{self.subfield}" if self.subfield else path


def _rule(entry: object, index: int) -> ThresholdRule:
    options: Mapping[object, object] = {}
    if isinstance(entry, str):
        expr: object = entry
    elif isinstance(entry, Mapping):
        unknown = [str(key) for key in entry if key not in _RULE_KEYS]
        if unknown:
            raise ThresholdRuleError(
                f"unknown field {unknown[0]!r}{suggest(unknown[0], _RULE_KEYS)}; "
                f"known: {', '.join(_RULE_KEYS)}",
                index=index,
            )
        expr, options = entry.get("expr"), entry
    else:
        raise ThresholdRuleError(
            "a threshold is a string or an object {expr, abort_on_fail, min_sessions}",
            index=index,
        )
    if not isinstance(expr, str):
        raise ThresholdRuleError(
            'needs expr, a string like "p95(duration_ms) < 5000"', index=index, subfield="expr"
        )
    abort_on_fail = options.get("abort_on_fail", False)
    if not isinstance(abort_on_fail, bool):
        raise ThresholdRuleError("must be true or false", index=index, subfield="abort_on_fail")
    min_sessions = options.get("min_sessions", 0)
    if isinstance(min_sessions, bool) or not isinstance(min_sessions, int):
        raise ThresholdRuleError("must be a whole number", index=index, subfield="min_sessions")
    if not 0 <= min_sessions <= MAX_MIN_SESSIONS:
        raise ThresholdRuleError(
            f"must be between 0 and {MAX_MIN_SESSIONS}", index=index, subfield="min_sessions"
        )
    if "min_sessions" in options and not abort_on_fail:
        raise ThresholdRuleError(
            "applies only with abort_on_fail: true (it delays an early abort)",
            index=index,
            subfield="min_sessions",
        )
    try:
        threshold = parse_threshold(expr)
    except ThresholdError as error:
        raise ThresholdRuleError(
            str(error),
            index=index,
            subfield="expr" if isinstance(entry, Mapping) else "",
            position=error.position,
        ) from None
    return ThresholdRule(
        threshold=threshold, abort_on_fail=abort_on_fail, min_sessions=min_sessions, expr=expr
    )


def parse_threshold_rules(entries: object) -> tuple[ThresholdRule, ...]:
    """A spec's `thresholds`: each a string or {expr, abort_on_fail, min_sessions}."""
    if entries is None:
        return ()
    if isinstance(entries, str | bytes) or not isinstance(entries, list | tuple):
        raise ThresholdRuleError("thresholds is a list of expressions", index=0)
    if len(entries) > MAX_RULES:
        raise ThresholdRuleError(
            f"at most {MAX_RULES} thresholds, got {len(entries)}", index=MAX_RULES
        )
    return tuple(_rule(entry, index) for index, entry in enumerate(entries))

"""Thresholds: k6-style expressions over a run's figures, and the verdict they give a run.

    p95(lcp_ms) < 2500
    rate(ok) >= 0.99
    count(outcome == "timeout") < 5
    cell(device="Pixel 7", locale="de-DE"): p95(duration_ms) < 3000

The grammar is in `_threshold_parser`; `format_threshold` writes the one canonical spelling
(`parse_threshold(format_threshold(t)) == t`). A spec carries a list of strings or objects
`{expr, abort_on_fail, min_sessions}` (`parse_threshold_rules`). The statistics layer
implements `Figures`; `evaluate` and `judge` read it.
"""

from __future__ import annotations

from services.common._threshold_eval import (
    Figures,
    ThresholdResult,
    Verdict,
    VerdictStatus,
    abort_reasons,
    evaluate,
    judge,
    should_abort,
)
from services.common._threshold_model import (
    CELL_FIELDS,
    ENGINE_NAMES,
    LABEL_PREFIX,
    METRIC_NAMES,
    OUTCOME_NAMES,
    Aggregate,
    CellSelector,
    Comparator,
    CountAggregate,
    CountFunction,
    MetricAggregate,
    MetricFunction,
    OutcomeCondition,
    Threshold,
    ThresholdRule,
    format_threshold,
)
from services.common._threshold_parser import MAX_LENGTH, ThresholdError, parse_threshold
from services.common._threshold_rules import (
    MAX_RULES,
    ThresholdRuleError,
    parse_threshold_rules,
)

__all__ = [
    "CELL_FIELDS",
    "ENGINE_NAMES",
    "LABEL_PREFIX",
    "MAX_LENGTH",
    "MAX_RULES",
    "METRIC_NAMES",
    "OUTCOME_NAMES",
    "Aggregate",
    "CellSelector",
    "Comparator",
    "CountAggregate",
    "CountFunction",
    "Figures",
    "MetricAggregate",
    "MetricFunction",
    "OutcomeCondition",
    "Threshold",
    "ThresholdError",
    "ThresholdResult",
    "ThresholdRule",
    "ThresholdRuleError",
    "Verdict",
    "VerdictStatus",
    "abort_reasons",
    "evaluate",
    "format_threshold",
    "judge",
    "parse_threshold",
    "parse_threshold_rules",
    "should_abort",
]

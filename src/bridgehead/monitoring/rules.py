"""Monitor rules: a metric of the report, a comparison, a threshold and a severity (pure).

A rule is ``{"metric": "accuracy_decline", "op": ">", "threshold": 0.05, "severity": "critical"}``. Metrics are
the flat names of `monitoring.report` (``drift_share``, ``psi:<column>``, ``fairness:<attribute>:<gap>``...).
A rule whose metric the window does not have (no labels yet, no protected attribute) is not breached; the
report says which rules could not be evaluated.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bridgehead.errors import ValidationFailed
from bridgehead.monitoring.report import metric_names

__all__ = ["DEFAULT_RULES", "OPS", "SEVERITIES", "evaluate_rules", "validate_rules", "worst"]

SEVERITIES = ("info", "warning", "critical")
OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_DYNAMIC = re.compile(
    r"^(psi:.+|fairness:.+:(demographic_parity_difference|equalized_odds_difference|disparate_impact_ratio))$"
)

# What a new monitor watches unless told otherwise: Evidently's dataset drift verdict, a five-point fall in
# accuracy (or F1) from the validation baseline, a significant PSI on any input, the four-fifths rule and a
# 0.1 demographic-parity gap.
DEFAULT_RULES: list[dict[str, Any]] = [
    {"metric": "dataset_drift", "op": ">=", "threshold": 1, "severity": "warning"},
    {"metric": "psi_max", "op": ">=", "threshold": 0.25, "severity": "warning"},
    {"metric": "accuracy_decline", "op": ">", "threshold": 0.05, "severity": "critical"},
    {"metric": "f1_decline", "op": ">", "threshold": 0.05, "severity": "critical"},
    {"metric": "demographic_parity_difference", "op": ">", "threshold": 0.1, "severity": "warning"},
    {"metric": "disparate_impact_ratio", "op": "<", "threshold": 0.8, "severity": "warning"},
]


def validate_rules(rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rules as stored: each checked (known metric, comparison, finite threshold, severity)."""
    known = set(metric_names())
    out = []
    for i, rule in enumerate(rules):
        metric = str(rule.get("metric", ""))
        if metric not in known and not _DYNAMIC.match(metric):
            raise ValidationFailed(
                f"Rule {i + 1}: unknown metric {metric!r}. Use one of {', '.join(sorted(known))}, "
                "'psi:<column>' or 'fairness:<attribute>:<gap>'.",
                details={"rule": i, "metric": metric},
            )
        op = str(rule.get("op", ""))
        if op not in OPS:
            raise ValidationFailed(
                f"Rule {i + 1}: comparison must be one of {', '.join(OPS)}.", details={"rule": i, "op": op}
            )
        threshold = rule.get("threshold")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
        ):
            raise ValidationFailed(
                f"Rule {i + 1}: threshold must be a finite number.",
                details={"rule": i, "threshold": threshold},
            )
        severity = str(rule.get("severity", "warning"))
        if severity not in SEVERITIES:
            raise ValidationFailed(
                f"Rule {i + 1}: severity must be one of {', '.join(SEVERITIES)}.",
                details={"rule": i, "severity": severity},
            )
        out.append({"metric": metric, "op": op, "threshold": float(threshold), "severity": severity})
    return out


def evaluate_rules(
    rules: Sequence[Mapping[str, Any]], metrics: Mapping[str, float]
) -> tuple[list[dict[str, Any]], list[str]]:
    """(breaches, metrics not available in this window). A breach is the rule plus the value seen."""
    breaches, missing = [], []
    for rule in rules:
        value = metrics.get(rule["metric"])
        if value is None or (isinstance(value, float) and math.isnan(value)):
            missing.append(rule["metric"])
            continue
        if OPS[rule["op"]](float(value), float(rule["threshold"])):
            breaches.append(dict(rule) | {"value": float(value)})
    return breaches, missing


def worst(breaches: Sequence[Mapping[str, Any]]) -> str:
    """The highest severity among breaches."""
    return max((b["severity"] for b in breaches), key=SEVERITIES.index, default="info")

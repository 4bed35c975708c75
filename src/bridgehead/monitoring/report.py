"""One monitoring report: a window of an endpoint's prediction log against a reference (no database, no HTTP).

Given the reference (per-column `ReferenceColumn`s from a stored data profile), the window's rows (record
batches from the Parquet prediction log, read chunk by chunk), the labels that came back for them, the model's
validation baseline and the monitor's settings, `build_report` returns a JSON-ready dict:

- ``drift``: one test per model input (Evidently's default choice, overridable), PSI, the drifted share and the
  dataset verdict, the schema change, per-column data quality (null-rate change, out-of-range share, unseen
  categories) and distribution charts (reference vs current shares on the reference's deciles, or per category);
- ``prediction``: drift of the predictions against the reference's target column (when the reference has one),
  and the mean confidence (highest class probability) of classifiers;
- ``performance``: quality on the labelled rows (classification or regression) next to the validation baseline,
  with the decline;
- ``fairness``: per protected attribute among the inputs, selection rate, TPR, FPR per group and the gaps;
- ``metrics``: a flat name -> number dict, what monitor rules are evaluated on.

Memory is bounded by columns and grid points, not rows: batches are folded into sketches (`windows`) and
accumulators (`performance`) and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bridgehead.monitoring import stats
from bridgehead.monitoring.performance import Classification, Fairness, Regression
from bridgehead.monitoring.stats import DriftOverrides
from bridgehead.monitoring.windows import (
    CategoricalWindow,
    DriftWindow,
    NumericWindow,
    ReferenceColumn,
    evaluate,
    window_for,
)

__all__ = ["BASELINE_NAMES", "ReportInputs", "build_report", "metric_names"]

# Where a model version's validation figures are looked for in its metrics snapshot, first match wins.
BASELINE_NAMES: dict[str, tuple[str, ...]] = {
    "accuracy": ("val_accuracy", "validation_accuracy", "test_accuracy", "accuracy"),
    "f1": ("val_f1", "validation_f1", "test_f1", "f1", "f1_score"),
    "roc_auc": ("val_roc_auc", "validation_roc_auc", "test_roc_auc", "roc_auc", "auc"),
    "precision": ("val_precision", "test_precision", "precision"),
    "recall": ("val_recall", "test_recall", "recall"),
    "mae": ("val_mae", "test_mae", "mae"),
    "rmse": ("val_rmse", "test_rmse", "rmse"),
    "r2": ("val_r2", "test_r2", "r2"),
}
# Metrics where lower is better: their decline is current - baseline.
LOWER_IS_BETTER = frozenset({"mae", "rmse"})
CHART_CATEGORIES = 12


@dataclass
class ReportInputs:
    references: Mapping[str, ReferenceColumn]
    features: list[str]  # the model's inputs (the columns drift is tested on)
    target: ReferenceColumn | None = None  # the reference's label column, for prediction drift
    labels: Mapping[str, Any] = field(default_factory=dict)  # request id -> ground truth
    overrides: int = 0  # human overrides recorded for the window's requests
    protected: list[str] = field(default_factory=list)
    task: str = "classification"  # or "regression"
    positive: Any = 1
    baseline: Mapping[str, float] = field(default_factory=dict)
    column_overrides: Mapping[str, DriftOverrides] = field(default_factory=dict)
    drift_share: float = stats.DRIFT_SHARE


def metric_names() -> list[str]:
    """The names monitor rules may use (besides ``psi:<column>`` and ``fairness:<attribute>:<gap>``)."""
    return [
        "rows",
        "drift_share",
        "drifted_columns",
        "dataset_drift",
        "psi_max",
        "prediction_drift",
        "confidence_mean",
        "labelled_rows",
        "labels_unmatched",
        "accuracy",
        "precision",
        "recall",
        "f1",
        "roc_auc",
        "mae",
        "rmse",
        "r2",
        *(f"{m}_decline" for m in BASELINE_NAMES),
        "demographic_parity_difference",
        "equalized_odds_difference",
        "disparate_impact_ratio",
        "null_rate_change_max",
        "out_of_range_share_max",
        "override_rate",
    ]


def _protected_groups(ref: ReferenceColumn | None) -> np.ndarray | None:
    """Quartile edges for a numeric protected attribute (age): groups are reference quartile bands."""
    if ref is None or ref.kind != "numeric" or len(ref.deciles) < 3:
        return None
    return np.unique(np.asarray([ref.deciles[len(ref.deciles) // 4], ref.deciles[len(ref.deciles) // 2],
                                 ref.deciles[3 * len(ref.deciles) // 4]], dtype=float))  # fmt: skip


def _band_labels(values: pa.Array, edges: np.ndarray) -> list[str]:
    v = np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    idx = np.searchsorted(edges, v, side="right")
    names = [f"< {edges[0]:g}"] + [f"{edges[i - 1]:g} to < {edges[i]:g}" for i in range(1, len(edges))]
    names.append(f">= {edges[-1]:g}")
    return [None if x != x else names[i] for x, i in zip(v.tolist(), idx.tolist(), strict=True)]  # type: ignore[misc]


class _Accumulator:
    def __init__(self, inputs: ReportInputs) -> None:
        self.inputs = inputs
        refs = {c: inputs.references[c] for c in inputs.features if c in inputs.references}
        self.drift = DriftWindow(refs)
        self.rows = 0
        self.versions: dict[int, int] = {}
        self.prediction: NumericWindow | CategoricalWindow | None = (
            window_for(inputs.target) if inputs.target is not None else None
        )
        self.confidence_sum = 0.0
        self.confidence_n = 0
        self.quality: Classification | Regression = (
            Classification(positive=inputs.positive) if inputs.task == "classification" else Regression()
        )
        self.fairness: dict[str, Fairness] = {}
        self.bands = {a: _protected_groups(inputs.references.get(a)) for a in inputs.protected}
        self.labelled = 0

    def update(self, batch: pa.RecordBatch) -> None:
        keep = pc.and_(pc.equal(batch.column("role"), "primary"), pc.equal(batch.column("status"), "ok"))
        batch = batch.filter(keep)
        if batch.num_rows == 0:
            return
        self.rows += batch.num_rows
        for v, c in zip(*np.unique(batch.column("version").to_numpy(), return_counts=True), strict=True):
            self.versions[int(v)] = self.versions.get(int(v), 0) + int(c)
        inputs = batch.column("inputs")
        if pa.types.is_struct(inputs.type):
            names = [inputs.type.field(i).name for i in range(inputs.type.num_fields)]
            self.drift.update(pa.RecordBatch.from_arrays(inputs.flatten(), names=names))
        outputs = batch.column("outputs")
        prediction = _struct_field(outputs, "prediction")
        probabilities = _struct_field(outputs, "probabilities")
        if prediction is None:
            return
        if self.prediction is not None:
            try:
                self.prediction.update(prediction)
            except (ValueError, TypeError, pa.ArrowException):
                self.prediction = None  # predictions of another kind than the reference's target column
        score = None
        if probabilities is not None and pa.types.is_list(probabilities.type):
            matrix = _matrix(probabilities)
            if matrix is not None and matrix.shape[1]:
                top = matrix.max(axis=1)
                self.confidence_sum += float(np.nansum(top))
                self.confidence_n += int(np.isfinite(top).sum())
                if matrix.shape[1] == 2:
                    score = matrix[:, 1]
        ids = batch.column("request_id").to_pylist()
        labels = self.inputs.labels
        have = [i for i, rid in enumerate(ids) if rid in labels]
        pred_list = prediction.to_pylist()
        if have:
            self.labelled += len(have)
            y_true = [labels[ids[i]] for i in have]
            y_pred = [pred_list[i] for i in have]
            if isinstance(self.quality, Classification):
                self.quality.update(
                    _align(y_true, y_pred), y_pred, score[have] if score is not None else None
                )
            else:
                self.quality.update(np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float))
        if isinstance(self.quality, Classification) and pa.types.is_struct(inputs.type):
            truth = [labels.get(rid) for rid in ids]
            truth = _align(truth, pred_list)
            for attribute in self.inputs.protected:
                column = _struct_field(inputs, attribute)
                if column is None:
                    continue
                edges = self.bands.get(attribute)
                groups = _band_labels(column, edges) if edges is not None else column.to_pylist()
                acc = self.fairness.setdefault(attribute, Fairness(positive=self.inputs.positive))
                acc.update(groups, pred_list, truth)


def _struct_field(array: pa.Array | pa.ChunkedArray, name: str) -> pa.Array | None:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if not pa.types.is_struct(array.type) or array.type.get_field_index(name) < 0:
        return None
    return pc.struct_field(array, name)


def _matrix(lists: pa.Array) -> np.ndarray | None:
    sizes = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    valid = sizes[~np.isnan(sizes.astype(float))] if sizes.dtype.kind == "f" else sizes
    if len(valid) == 0 or len(set(valid.tolist())) != 1 or lists.null_count:
        return None
    width = int(valid[0])
    flat = np.asarray(pc.list_flatten(lists).to_numpy(zero_copy_only=False), dtype=float)
    return flat.reshape(len(lists), width) if width else None


def _align(truth: list[Any], predictions: list[Any]) -> list[Any]:
    """Labels typed like the predictions (feedback JSON may say 1.0 or "1" for a class 1)."""
    sample = next((p for p in predictions if p is not None), None)
    if sample is None:
        return truth
    out = []
    for t in truth:
        if t is None or type(t) is type(sample):
            out.append(t)
            continue
        try:
            out.append(type(sample)(t) if not isinstance(sample, bool) else bool(t))
        except (TypeError, ValueError):
            out.append(t)
    return out


def _distribution(ref: ReferenceColumn, window: NumericWindow | CategoricalWindow) -> dict[str, Any]:
    """Reference and current shares for a chart: on the reference's deciles, or per category (the most common)."""
    if isinstance(window, CategoricalWindow):
        ref_total = sum(ref.categories.values()) or 1
        cur_total = window.n or 1
        names = sorted(ref.categories, key=lambda k: -ref.categories[k])[:CHART_CATEGORIES]
        new = sorted((k for k in window.counts if k not in ref.categories), key=lambda k: -window.counts[k])
        names += new[: max(0, CHART_CATEGORIES - len(names))]
        return {
            "kind": "categorical",
            "labels": names,
            "reference": [ref.categories.get(k, 0) / ref_total for k in names],
            "current": [window.counts.get(k, 0) / cur_total for k in names],
        }
    edges = np.asarray(ref.deciles, dtype=float)
    if not len(edges) or window.n == 0:
        return {"kind": "numeric", "labels": [], "reference": [], "current": []}
    at_most = window.counts_at_most(edges)
    cur = np.diff(np.concatenate([[0.0], at_most, [float(window.n)]])) / window.n
    ref_cdf = np.interp(edges, ref.grid, ref.cdf) if len(ref.grid) else np.linspace(0.1, 0.9, len(edges))
    ref_shares = np.diff(np.concatenate([[0.0], ref_cdf, [1.0]]))
    labels = [f"<= {edges[0]:.4g}"] + [f"{edges[i - 1]:.4g} to {edges[i]:.4g}" for i in range(1, len(edges))]
    labels.append(f"> {edges[-1]:.4g}")
    return {"kind": "numeric", "labels": labels, "reference": ref_shares.tolist(), "current": cur.tolist()}


def _quality(ref: ReferenceColumn, window: NumericWindow | CategoricalWindow) -> dict[str, Any]:
    ref_null = ref.null_count / ref.rows if ref.rows else 0.0
    rows = window.rows or 0
    cur_null = (window.null_count + getattr(window, "nan_count", 0)) / rows if rows else None
    out: dict[str, Any] = {
        "null_rate_reference": ref_null,
        "null_rate_current": cur_null,
        "null_rate_change": None if cur_null is None else cur_null - ref_null,
    }
    if isinstance(window, NumericWindow):
        out["out_of_range_share"] = window.out_of_range / window.n if window.n else None
    else:
        if ref.rest:  # the reference kept its most frequent categories only: "unseen" cannot be told
            out["unseen_categories"], out["unseen_share"] = {}, None
        else:
            unseen = {k: c for k, c in window.counts.items() if k not in ref.categories}
            out["unseen_categories"] = dict(sorted(unseen.items(), key=lambda kv: -kv[1])[:20])
            out["unseen_share"] = (sum(unseen.values()) + window.other) / window.n if window.n else None
    return out


def build_report(inputs: ReportInputs, batches: Iterable[pa.RecordBatch]) -> dict[str, Any]:
    """The report of one window; see the module docstring."""
    acc = _Accumulator(inputs)
    for batch in batches:
        acc.update(batch)
    results = acc.drift.results(dict(inputs.column_overrides)) if acc.rows else []
    tested = [r for r in results if r.statistic is not None]
    verdict = stats.dataset_drift(tested, share=inputs.drift_share)
    columns = []
    quality: dict[str, Any] = {}
    for r in results:
        ref = acc.drift.references[r.column]
        window = acc.drift.columns[r.column]
        columns.append(r.as_dict() | {"distribution": _distribution(ref, window)})
        quality[r.column] = _quality(ref, window)
    change = acc.drift.schema_change()
    prediction_drift = None
    if acc.prediction is not None and inputs.target is not None and acc.rows:
        try:
            prediction_drift = evaluate(inputs.target, acc.prediction, None).as_dict()
        except (ValueError, TypeError) as exc:  # predictions of another kind than the target column
            prediction_drift = {
                "column": inputs.target.name,
                "score": None,
                "drifted": False,
                "reason": str(exc),
            }
    performance: dict[str, Any] = {
        "task": inputs.task,
        "labelled_rows": acc.labelled,
        # Labels given since the window began whose request id is not among the window's predictions: for
        # earlier windows, or for ids that were never predicted (a pipeline joining on the wrong key).
        "labels_received": len(inputs.labels),
        "labels_unmatched": len(inputs.labels) - acc.labelled,
    }
    current = acc.quality.summary()
    performance["current"] = current
    baseline = {k: v for k, v in inputs.baseline.items() if k in current}
    performance["baseline"] = baseline
    decline = {}
    for name, base in baseline.items():
        now = current.get(name)
        if now is not None and base is not None:
            decline[name] = (now - base) if name in LOWER_IS_BETTER else (base - now)
    performance["decline"] = decline
    fairness = {a: f.summary() for a, f in acc.fairness.items()}
    metrics: dict[str, float] = {
        "rows": acc.rows,
        "labelled_rows": acc.labelled,
        "labels_unmatched": len(inputs.labels) - acc.labelled,
        "drift_share": verdict.share,
        "drifted_columns": verdict.n_drifted,
        "dataset_drift": float(verdict.drifted),
    }
    psis = [r.psi for r in results if r.psi is not None]
    if psis:
        metrics["psi_max"] = max(psis)
    for r in results:
        if r.psi is not None:
            metrics[f"psi:{r.column}"] = r.psi
    if prediction_drift is not None and prediction_drift["score"] is not None:
        metrics["prediction_drift"] = float(prediction_drift["drifted"])
        metrics["prediction_drift_score"] = prediction_drift["score"]
    if acc.confidence_n:
        metrics["confidence_mean"] = acc.confidence_sum / acc.confidence_n
    for name, value in current.items():
        if name != "rows" and isinstance(value, int | float) and value is not None:
            metrics[name] = float(value)
    for name, value in decline.items():
        metrics[f"{name}_decline"] = value
    for attribute, summary in fairness.items():
        for gap in ("demographic_parity_difference", "equalized_odds_difference", "disparate_impact_ratio"):
            if summary[gap] is not None:
                metrics[f"fairness:{attribute}:{gap}"] = summary[gap]
                worst = max if gap != "disparate_impact_ratio" else min
                metrics[gap] = worst(metrics.get(gap, summary[gap]), summary[gap])
    changes = [q["null_rate_change"] for q in quality.values() if q.get("null_rate_change") is not None]
    if changes:
        metrics["null_rate_change_max"] = max(changes)
    ranges = [q["out_of_range_share"] for q in quality.values() if q.get("out_of_range_share") is not None]
    if ranges:
        metrics["out_of_range_share_max"] = max(ranges)
    if acc.rows:
        metrics["override_rate"] = inputs.overrides / acc.rows
    return {
        "rows": acc.rows,
        "versions": {str(k): v for k, v in sorted(acc.versions.items())},
        "drift": {
            "columns": columns,
            "n_columns": verdict.n_columns,
            "n_drifted": verdict.n_drifted,
            "share": verdict.share,
            "drift_share": verdict.drift_share,
            "dataset_drift": verdict.drifted,
            "schema_change": {
                "added": list(change.added),
                "removed": list(change.removed),
                "retyped": {k: list(v) for k, v in change.retyped.items()},
            },
            "quality": quality,
        },
        "prediction": {
            "drift": prediction_drift,
            "confidence_mean": metrics.get("confidence_mean"),
        },
        "performance": performance,
        "fairness": fairness,
        "metrics": metrics,
    }

"""Streaming, mergeable dataset profiles (pure: pyarrow, numpy and DataSketches; no database, no HTTP).

A profile is built batch by batch (`Profiler.update`), so memory is bounded by one batch whatever the file
size, and two profiles of the same schema merge (`Profile.merge`) into the profile of both parts. What it keeps
per column is a set of sketches, not data:

- every column: row count, null count, a HyperLogLog distinct estimate;
- numbers and dates: min, max, mean and variance (merged with Chan's formula), NaN/inf counts, zeros, and a KLL
  quantile sketch (DataSketches, k=200: rank error about 1.3 %) from which quantiles and histograms are read;
- strings, booleans and integers: the most frequent values with counts (exact for categories); strings also
  their length range and mean.

The KLL sketch is what monitoring uses as a drift reference: it gives the reference CDF at any point, so
current data can be binned on the reference's quantiles (PSI) or compared by CDF (KS) without the reference
rows. Serialized, a column takes a few KiB (HyperLogLog 4 KiB compressed, KLL about 3 KiB).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import kll_doubles_sketch

from bridgehead.data.sketches import FrequentValues, HyperLogLog, hash_floats

__all__ = ["PROFILE_FORMAT", "ColumnProfile", "Profile", "Profiler", "column_kind", "profile_batches"]

PROFILE_FORMAT = 1
KLL_K = 200
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
HISTOGRAM_BINS = 20
TOP_SHOWN = 20


def column_kind(t: pa.DataType) -> str:
    """numeric, datetime, boolean, string or other (nested and binary columns: counts only)."""
    if pa.types.is_dictionary(t):
        return column_kind(t.value_type)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    return "other"


@dataclass
class ColumnProfile:
    name: str
    type: str
    kind: str
    count: int = 0
    null_count: int = 0
    nan_count: int = 0
    inf_count: int = 0
    zero_count: int = 0
    # numbers (dates as epoch seconds)
    n_values: int = 0
    min: float | None = None
    max: float | None = None
    mean: float = 0.0
    m2: float = 0.0
    kll: Any = None
    # strings
    length_min: int | None = None
    length_max: int | None = None
    length_sum: int = 0
    hll: HyperLogLog = field(default_factory=HyperLogLog)
    top: FrequentValues | None = None

    # -- building -------------------------------------------------------------------------------------------

    def update(self, arr: pa.Array | pa.ChunkedArray) -> None:
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        self.count += len(arr)
        self.null_count += arr.null_count
        if self.kind == "other":
            return
        present = pc.drop_null(arr) if arr.null_count else arr
        if len(present) == 0:
            return
        if self.kind == "numeric":
            values = _as_float(present)
            if pa.types.is_integer(arr.type):
                self._update_counted(present)
            else:
                self.hll.update_hashes(hash_floats(values))
            self._update_numbers(values)
        elif self.kind == "datetime":
            self.hll.update(present)
            self._update_numbers(_epoch_seconds(present))
        elif self.kind == "boolean":
            self._update_counted(present)
            self._update_numbers(np.asarray(present.to_numpy(zero_copy_only=False), dtype=np.float64))
        elif self.kind == "string":
            lengths = pc.utf8_length(present)
            low, high = pc.min_max(lengths).values()
            self.length_min = _min(self.length_min, low.as_py())
            self.length_max = _max(self.length_max, high.as_py())
            self.length_sum += int(pc.sum(lengths).as_py() or 0)
            self._update_counted(present)

    def _update_counted(self, present: pa.Array) -> None:
        """One hash-table pass gives both the frequent values and the distinct values to hash."""
        counted = pc.value_counts(present)
        self.hll.update(counted.field("values"))
        if self.top is None:
            self.top = FrequentValues()
        self.top.update_counts(counted)

    def _update_numbers(self, values: np.ndarray) -> None:
        nan = np.isnan(values)
        n_nan = int(nan.sum())
        if n_nan:
            values = values[~nan]
            self.nan_count += n_nan
        inf = np.isinf(values)
        n_inf = int(inf.sum())
        if n_inf:
            self.inf_count += n_inf
            finite = values[~inf]
        else:
            finite = values
        self.zero_count += int(np.count_nonzero(values == 0))
        if len(values):
            self.min = _min(self.min, float(values.min()))
            self.max = _max(self.max, float(values.max()))
            if self.kll is None:
                self.kll = kll_doubles_sketch(KLL_K)
            if not values.flags.writeable:  # the binding refuses read-only (Arrow-backed) arrays
                values = values.copy()
            self.kll.update(values)
        if len(finite):
            n = len(finite)
            mean = float(finite.mean())
            m2 = float(((finite - mean) ** 2).sum())
            self._combine_moments(n, mean, m2)

    def _combine_moments(self, n: int, mean: float, m2: float) -> None:
        total = self.n_values + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n_values * n / total
        self.n_values = total

    def merge(self, other: ColumnProfile) -> None:
        if other.kind != self.kind:
            raise ValueError(
                f"column {self.name!r} is {self.kind} in one profile and {other.kind} in the other"
            )
        self.count += other.count
        self.null_count += other.null_count
        self.nan_count += other.nan_count
        self.inf_count += other.inf_count
        self.zero_count += other.zero_count
        self.min = _min(self.min, other.min)
        self.max = _max(self.max, other.max)
        if other.n_values:
            self._combine_moments(other.n_values, other.mean, other.m2)
        if other.kll is not None:
            if self.kll is None:
                self.kll = kll_doubles_sketch(KLL_K)
            self.kll.merge(other.kll)
        self.length_min = _min(self.length_min, other.length_min)
        self.length_max = _max(self.length_max, other.length_max)
        self.length_sum += other.length_sum
        self.hll.merge(other.hll)
        if other.top is not None:
            if self.top is None:
                self.top = FrequentValues()
            self.top.merge(other.top)

    # -- reading --------------------------------------------------------------------------------------------

    @property
    def present(self) -> int:
        return self.count - self.null_count

    def distinct(self) -> int:
        estimate = round(self.hll.estimate())
        if self.top is not None and not self.top.error:
            estimate = len(self.top.counts) if len(self.top.counts) < self.top.capacity else estimate
        return min(estimate, self.present)

    def quantiles(self, qs: Iterable[float] = QUANTILES) -> dict[str, float]:
        if self.kll is None or self.kll.is_empty():
            return {}
        qs = list(qs)
        return {f"{q:g}": float(v) for q, v in zip(qs, self.kll.get_quantiles(qs), strict=True)}

    def cdf(self, points: Iterable[float]) -> list[float]:
        """Share of values at or below each point (the drift reference's view of this column)."""
        if self.kll is None or self.kll.is_empty():
            return []
        return [float(v) for v in self.kll.get_cdf(list(points), inclusive=True)[:-1]]

    def histogram(self, bins: int = HISTOGRAM_BINS) -> dict[str, list[float]]:
        if self.kll is None or self.kll.is_empty() or self.min is None or self.max is None:
            return {}
        low, high = self.min, self.max
        if not (math.isfinite(low) and math.isfinite(high)):
            low, high = self.kll.get_quantile(0.001), self.kll.get_quantile(0.999)
        if high <= low:
            return {"edges": [low, high], "counts": [float(self.kll.n)]}
        edges = np.linspace(low, high, bins + 1)
        masses = self.kll.get_pmf(list(edges[1:-1]), inclusive=True)
        counts = [round(m * self.kll.n) for m in masses]
        return {"edges": [float(e) for e in edges], "counts": [float(c) for c in counts]}

    def summary(self) -> dict[str, Any]:
        """What people look at (and what the API returns): no sketches, values in their column's terms."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "count": self.count,
            "null_count": self.null_count,
            "null_share": self.null_count / self.count if self.count else 0.0,
        }
        if self.kind == "other":
            return out
        out["distinct"] = self.distinct()
        if self.kind in ("numeric", "boolean"):
            out.update(
                min=self.min,
                max=self.max,
                mean=self.mean if self.n_values else None,
                std=math.sqrt(self.m2 / (self.n_values - 1)) if self.n_values > 1 else None,
                nan_count=self.nan_count,
                inf_count=self.inf_count,
                zero_count=self.zero_count,
            )
            if self.kind == "numeric":
                out["quantiles"] = self.quantiles()
                out["histogram"] = self.histogram()
        if self.kind == "datetime":
            out.update(min=_iso(self.min), max=_iso(self.max))
            out["quantiles"] = {q: _iso(v) for q, v in self.quantiles().items()}
            out["histogram"] = self.histogram()
        if self.kind == "string":
            present = self.present
            out.update(
                length_min=self.length_min,
                length_max=self.length_max,
                length_mean=self.length_sum / present if present else None,
            )
        if self.top is not None:
            out["top_values"] = [{"value": v, "count": c} for v, c in self.top.top(TOP_SHOWN)]
            out["top_values_error"] = self.top.error
        return out

    # -- storing --------------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "kind": self.kind,
            "count": self.count,
            "null_count": self.null_count,
            "nan_count": self.nan_count,
            "inf_count": self.inf_count,
            "zero_count": self.zero_count,
            "n_values": self.n_values,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "m2": self.m2,
            "length_min": self.length_min,
            "length_max": self.length_max,
            "length_sum": self.length_sum,
            "hll": self.hll.to_text(),
        }
        if self.kll is not None:
            state["kll"] = base64.b64encode(self.kll.serialize()).decode("ascii")
        if self.top is not None:
            state["top"] = {"counts": self.top.counts, "error": self.top.error, "capacity": self.top.capacity}
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ColumnProfile:
        col = cls(name=str(state["name"]), type=str(state["type"]), kind=str(state["kind"]))
        for key in ("count", "null_count", "nan_count", "inf_count", "zero_count", "n_values", "length_sum"):
            setattr(col, key, int(state.get(key) or 0))
        for key in ("length_min", "length_max"):
            value = state.get(key)
            setattr(col, key, None if value is None else int(value))
        for key in ("min", "max"):
            value = state.get(key)
            setattr(col, key, None if value is None else float(value))
        col.mean = float(state.get("mean") or 0.0)
        col.m2 = float(state.get("m2") or 0.0)
        col.hll = HyperLogLog.from_text(str(state["hll"]))
        if state.get("kll"):
            col.kll = kll_doubles_sketch.deserialize(base64.b64decode(str(state["kll"]), validate=True))
        top = state.get("top")
        if top:
            counts = {str(k): int(v) for k, v in dict(top["counts"]).items()}
            col.top = FrequentValues(int(top.get("capacity", 100)), counts, int(top.get("error", 0)))
        return col


@dataclass
class Profile:
    columns: dict[str, ColumnProfile]
    row_count: int = 0

    @classmethod
    def empty(cls, schema: pa.Schema) -> Profile:
        return cls({f.name: ColumnProfile(f.name, str(f.type), column_kind(f.type)) for f in schema})

    def update(self, batch: pa.RecordBatch | pa.Table, pool: ThreadPoolExecutor | None = None) -> None:
        """Adds a batch. With a pool, columns are profiled in parallel (numpy, Arrow and the sketches release
        the GIL for most of the work); each column is only ever touched by one thread at a time."""
        self.row_count += batch.num_rows
        if pool is None:
            for name, col in self.columns.items():
                col.update(batch.column(name))
            return
        futures = [pool.submit(col.update, batch.column(name)) for name, col in self.columns.items()]
        for future in futures:
            future.result()

    def merge(self, other: Profile) -> Profile:
        """Adds `other` into this profile (same columns) and returns it."""
        if list(other.columns) != list(self.columns):
            raise ValueError("profiles of different columns cannot be merged")
        self.row_count += other.row_count
        for name, col in self.columns.items():
            col.merge(other.columns[name])
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "row_count": self.row_count,
            "columns": [c.summary() for c in self.columns.values()],
        }

    def to_state(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "row_count": self.row_count,
            "columns": [c.to_state() for c in self.columns.values()],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Profile:
        if state.get("format") != PROFILE_FORMAT:
            raise ValueError(
                f"unknown profile format {state.get('format')!r} (this version reads {PROFILE_FORMAT})"
            )
        columns = [ColumnProfile.from_state(c) for c in state["columns"]]
        return cls({c.name: c for c in columns}, int(state["row_count"]))


class Profiler:
    """Builds a profile from batches; `Profiler(schema).run(batches)` is the whole loop. Columns are profiled
    on ``threads`` threads (default: the machine's cores, at most 4); use it as a context manager, or call
    `close`, when calling `update` yourself."""

    def __init__(self, schema: pa.Schema, threads: int | None = None) -> None:
        self.profile = Profile.empty(schema)
        workers = threads if threads is not None else min(os.cpu_count() or 1, 4)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="profile") if workers > 1 else None

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        self.profile.update(batch, self._pool)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> Profiler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, batches: Iterable[pa.RecordBatch]) -> Profile:
        with self:
            for batch in batches:
                self.update(batch)
        return self.profile


def profile_batches(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch] | Iterator[pa.RecordBatch]
) -> Profile:
    return Profiler(schema).run(batches)


def _as_float(arr: pa.Array) -> np.ndarray:
    if pa.types.is_floating(arr.type) and arr.type.bit_width == 64:
        return np.asarray(arr.to_numpy(zero_copy_only=False))
    return np.asarray(arr.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64)


def _epoch_seconds(arr: pa.Array) -> np.ndarray:
    if pa.types.is_date(arr.type):
        arr = arr.cast(pa.timestamp("s"))
    unit = arr.type.unit
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    ints = np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    return ints / scale


def _iso(seconds: float | None) -> str | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC).isoformat()


def _min(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None or a <= b else b


def _max(a: Any, b: Any) -> Any:
    if a is None:
        return b
    return a if b is None or a >= b else b

"""Streaming, mergeable accumulators for a *current* window, compared with a stored reference.

A window is read chunk by chunk (Arrow arrays or record batches from the Parquet prediction log) into counts on
points fixed by the reference, so its memory depends on the number of columns and grid points, never on rows:
a window of 100 M rows takes the same few arrays as one of 1 M. Two windows over the same reference merge
(`merge`) into the window of both parts, exactly (categorical windows: exactly while the cap on new categories
is not reached).

The reference side (`ReferenceColumn`) comes from a stored `bridgehead.data.profile.ColumnProfile` or, for small
references whose rows are available, from the raw values. Per numeric column it holds a grid of points: the
reference's quantiles at 0, 0.001, ..., 1 (1001 points, duplicates removed), its deciles and its min and max,
with the reference CDF at and just below each point. Raw references put *every* distinct value on the grid.

The current side (`NumericWindow`) counts, for each grid point, the values equal to it and the values strictly
between it and the next one, with the sum of their offsets from the cell's left edge. From these:

- KS is exact when every reference value is a grid point (raw references, and profiles whose KLL sketch is
  still exact or whose exact frequent values cover the column). The proof is in `stats.ks_from_cdfs`. The
  p-value is then exactly scipy's for that D. From a sketched reference D is off by at most the KLL rank
  error plus the largest reference mass strictly inside one grid cell; `DriftTest.error_bound` reports it.
- PSI: the decile edges are grid points, so the current's bin counts are exact; the reference's shares are
  exact for raw references and within the KLL rank error otherwise.
- Wasserstein-1 is the integral of |F_ref - F_cur|. Outside the reference range, F_ref is exactly 0 or 1 and
  the current's part is exact (sums of offsets). Inside each grid cell the current's integral is exact (from
  the offset sums); the reference CDF is taken as linear between grid points, and where the two CDFs may
  cross inside a cell the cell contributes the midpoint of its possible range. The reported error bound is
  the sum of those per-cell half-ranges plus ``rank_error * (max - min)`` of the reference (0 for raw
  references), divided by the norm. The test measures it against scipy on 1 M rows.
- Jensen-Shannon by value (low-cardinality numbers, categories) is exact: values the reference never had are
  lumped into one bin, which leaves JS unchanged because every such bin contributes ``q/2 * ln 2``, linear in
  its current share q. Chi-square is exact too (any such value makes it infinite, lumped or not).
  Jensen-Shannon on Sturges bins (only when chosen by override for a numeric column with more than 20
  reference values) spreads each grid cell's count uniformly over the cell: approximate, no bound reported.
- Running min, max, mean and variance (Chan's merge), null, NaN, infinity and out-of-range counts are exact.

Categorical windows count every category the reference has, plus up to ``max_new_categories`` unseen ones;
further unseen categories go to one "other" count (reported; JS and chi-square stay exact, PSI and the Z-test
are flagged approximate when it is non-zero).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from bridgehead.data.profile import ColumnProfile, Profile, column_kind
from bridgehead.monitoring import stats
from bridgehead.monitoring.stats import DriftOverrides, DriftTest, SchemaChange, TestChoice

__all__ = [
    "GRID_POINTS",
    "MAX_NEW_CATEGORIES",
    "CategoricalWindow",
    "DriftWindow",
    "NumericWindow",
    "ReferenceColumn",
    "evaluate",
    "references_from_profile",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

GRID_POINTS = 1001
MAX_NEW_CATEGORIES = 1000
_RANKS = np.linspace(0.0, 1.0, GRID_POINTS)
_DECILE_RANKS = np.arange(1, stats.PSI_BINS) / stats.PSI_BINS


# -- the reference ---------------------------------------------------------------------------------------------


@dataclass
class ReferenceColumn:
    """What a drift test needs to know about one reference column (see the module docstring).

    ``n`` counts the usable values (non-null; for numbers also finite), which is the reference size the
    choice of test looks at. ``cdf``/``cdf_below`` are F_ref at and just below each grid point; ``rank_error``
    bounds their absolute error (0 when ``exact``). ``categories`` holds value counts: for categorical columns,
    and for numeric columns when their values are known exactly (keys are the values as text).
    """

    name: str
    kind: str  # "numeric" or "categorical"
    profile_kind: str
    rows: int
    null_count: int
    n: int
    n_unique: int
    low: float | None = None
    high: float | None = None
    mean: float = 0.0
    std: float = 0.0
    grid: FloatArray = field(default_factory=lambda: np.zeros(0))
    cdf: FloatArray = field(default_factory=lambda: np.zeros(0))
    cdf_below: FloatArray = field(default_factory=lambda: np.zeros(0))
    deciles: FloatArray = field(default_factory=lambda: np.zeros(0))
    exact: bool = True
    rank_error: float = 0.0
    categories: dict[str, int] = field(default_factory=dict)
    categories_error: int = 0
    # Values of a categorical column beyond the profile's most frequent ones (its table was full): one "rest"
    # bin, into which the window's values outside ``categories`` go too (they may be in the reference's tail).
    rest: int = 0

    @classmethod
    def from_values(cls, name: str, values: pa.Array | pa.ChunkedArray | npt.ArrayLike) -> ReferenceColumn:
        """An exact reference from raw values (meant for small references: it keeps a grid point per distinct
        value). Arrow arrays keep their type (dates become epoch seconds, strings and booleans categories);
        numpy input is numeric unless it holds strings or booleans."""
        arr = _as_arrow(values)
        profile_kind = column_kind(arr.type)
        kind = stats.drift_kind(profile_kind)
        if kind is None:
            raise ValueError(f"column {name!r} of type {arr.type} has no drift test")
        rows, nulls = len(arr), arr.null_count
        if kind == "categorical":
            counts = _category_counts(arr)
            return cls(
                name, kind, profile_kind, rows, nulls, sum(counts.values()), len(counts), categories=counts
            )
        v = _numbers(arr)
        finite = np.sort(v[np.isfinite(v)])
        ref = cls(name, kind, profile_kind, rows, nulls, len(finite), len(np.unique(finite)))
        if len(finite):
            ref.low, ref.high = float(finite[0]), float(finite[-1])
            ref.mean, ref.std = float(finite.mean()), float(np.std(finite))
            ref.deciles = np.unique(np.quantile(finite, _DECILE_RANKS))
            ref.grid = np.unique(np.concatenate([finite, ref.deciles]))
            ref.cdf = np.searchsorted(finite, ref.grid, side="right") / len(finite)
            ref.cdf_below = np.searchsorted(finite, ref.grid, side="left") / len(finite)
            values_, counts_ = np.unique(finite, return_counts=True)
            if len(values_) <= MAX_NEW_CATEGORIES:
                ref.categories = {_number_label(x): int(c) for x, c in zip(values_, counts_, strict=True)}
        return ref

    @classmethod
    def from_profile(cls, col: ColumnProfile) -> ReferenceColumn:
        """A reference from a stored profile column: n_unique from its distinct estimate, the grid from its
        KLL sketch (exact while the sketch is, or when exact frequent values cover the column), categories
        from its frequent values (exact for categories)."""
        kind = stats.drift_kind(col.kind)
        if kind is None:
            raise ValueError(f"column {col.name!r} of kind {col.kind} has no drift test")
        top_exact = col.top is not None and col.top.error == 0 and len(col.top.counts) < col.top.capacity
        if kind == "categorical":
            counts = dict(col.top.counts) if col.top is not None else {}
            error = col.top.error if col.top is not None else 0
            n_unique = len(counts) if top_exact else col.distinct()
            rest = 0 if top_exact else max(col.present - sum(counts.values()), 0)
            return cls(
                col.name, kind, col.kind, col.count, col.null_count, col.present, n_unique,
                categories=counts, categories_error=error, exact=error == 0 and not rest, rest=rest,
            )  # fmt: skip
        n = col.n_values  # finite values: what the moments were computed over
        ref = cls(col.name, kind, col.kind, col.count, col.null_count, n, min(col.distinct(), n))
        if n == 0 or col.kll is None or col.kll.is_empty():
            return ref
        ref.mean, ref.std = col.mean, math.sqrt(col.m2 / n)
        if top_exact and col.top is not None and col.kind == "numeric" and not col.inf_count:
            # Exact value counts (integer columns with few values): the whole distribution is known.
            values_ = np.array([float(k) for k in col.top.counts], dtype=np.float64)
            counts_ = np.array(list(col.top.counts.values()), dtype=np.float64)
            order = np.argsort(values_)
            values_, counts_ = values_[order], counts_[order]
            finite = np.isfinite(values_)
            values_, counts_ = values_[finite], counts_[finite]
            total = counts_.sum()
            ref.low, ref.high = float(values_[0]), float(values_[-1])
            ref.n_unique = len(values_)
            cum = np.cumsum(counts_) / total
            below = cum - counts_ / total
            ref.deciles = np.unique(values_[np.searchsorted(cum, _DECILE_RANKS - 1e-12)])
            ref.grid, ref.cdf, ref.cdf_below = values_, cum, below
            ref.categories = {_number_label(x): int(c) for x, c in zip(values_, counts_, strict=True)}
            return ref
        kll = col.kll
        grid = np.asarray(kll.get_quantiles(list(_RANKS)), dtype=np.float64)
        deciles = np.asarray(kll.get_quantiles(list(_DECILE_RANKS)), dtype=np.float64)
        # The sketch's quantile 0 and 1 are retained items, not the exact min and max the profile keeps.
        ends = [x for x in (col.min, col.max) if x is not None and math.isfinite(x)]
        grid = np.unique(np.concatenate([grid, deciles, np.asarray(ends, dtype=np.float64)]))
        grid = grid[np.isfinite(grid)]
        if len(grid) == 0:
            return ref
        points = list(grid)
        cdf = np.asarray(kll.get_cdf(points, inclusive=True)[:-1], dtype=np.float64)
        below = np.asarray(kll.get_cdf(points, inclusive=False)[:-1], dtype=np.float64)
        if col.inf_count:  # the sketch holds the infinities too: renormalize to the finite values
            lo = float(kll.get_rank(-math.inf, inclusive=True))
            hi = float(kll.get_rank(float(grid[-1]), inclusive=True))
            span = hi - lo if hi > lo else 1.0
            cdf, below = (cdf - lo) / span, np.clip((below - lo) / span, 0.0, 1.0)
        ref.grid, ref.cdf, ref.cdf_below = grid, np.clip(cdf, 0.0, 1.0), below
        ref.deciles = np.unique(deciles[np.isfinite(deciles)])
        ref.low, ref.high = float(grid[0]), float(grid[-1])
        ref.exact = not kll.is_estimation_mode()
        ref.rank_error = 0.0 if ref.exact else float(kll.normalized_rank_error(False))
        return ref


def references_from_profile(profile: Profile) -> dict[str, ReferenceColumn]:
    """One `ReferenceColumn` per column of a stored profile that has a drift test."""
    return {
        name: ReferenceColumn.from_profile(col)
        for name, col in profile.columns.items()
        if stats.drift_kind(col.kind) is not None
    }


# -- the current window ---------------------------------------------------------------------------------------


class NumericWindow:
    """Counts of a numeric column's current values on a reference grid, plus exact running moments.

    State: ``at[i]`` values equal to ``grid[i]``; ``between[i]`` values strictly between ``grid[i-1]`` and
    ``grid[i]`` (``between[0]`` below the grid, ``between[-1]`` above it); ``offset[i]`` the sum of those
    values' distances from the cell's inner edge (``grid[0] - v`` below the grid, ``v - grid[i-1]`` otherwise).
    Size: 3 arrays of about ``len(grid)``, whatever the number of rows.
    """

    def __init__(self, grid: npt.ArrayLike, low: float | None = None, high: float | None = None) -> None:
        self.grid = np.asarray(grid, dtype=np.float64)
        size = len(self.grid)
        self.low = low if low is not None else (float(self.grid[0]) if size else None)
        self.high = high if high is not None else (float(self.grid[-1]) if size else None)
        self.rows = 0
        self.null_count = 0
        self.nan_count = 0
        self.inf_count = 0
        self.n = 0
        self.min: float | None = None
        self.min_count = 0  # values equal to the running min: the Z-test's "first value" may be a new one
        self.max: float | None = None
        self.mean = 0.0
        self.m2 = 0.0
        self.out_of_range = 0
        self.at: IntArray = np.zeros(size, dtype=np.int64)
        self.between: IntArray = np.zeros(size + 1, dtype=np.int64)
        self.offset: FloatArray = np.zeros(size + 1, dtype=np.float64)

    def update(self, values: pa.Array | pa.ChunkedArray | npt.ArrayLike) -> None:
        arr = _as_arrow(values)
        self.rows += len(arr)
        self.null_count += arr.null_count
        v = _numbers(arr)
        finite = np.isfinite(v)
        inf_count = 0
        if not finite.all():
            nan = int(np.isnan(v).sum())
            inf_count = int(len(v) - finite.sum()) - nan
            self.nan_count += nan
            self.inf_count += inf_count
            v = v[finite]
        if len(v) == 0:
            return
        low, high = float(v.min()), float(v.max())
        if self.low is not None and self.high is not None and (low < self.low or high > self.high):
            self.out_of_range += int(np.count_nonzero((v < self.low) | (v > self.high)))
        self.out_of_range += inf_count if self.low is not None and self.high is not None else 0
        self._merge_min(low, int(np.count_nonzero(v == low)))
        self.max = high if self.max is None else max(self.max, high)
        mean = float(v.mean())
        # Not np.dot: on a busy machine BLAS threads make it tens of times slower than this.
        self._merge_moments(len(v), mean, float(((v - mean) ** 2).sum()))
        g = self.grid
        size = len(g)
        if size == 0:
            self.between[0] += len(v)
            return
        # Sorted first: binary searches of sorted values hit the cache (several times faster overall, sort
        # included). One search: a value equals the grid point at its insertion index, or lies in the cell
        # before it.
        v = np.sort(v)
        left = np.searchsorted(g, v, side="left")
        equal = g[np.minimum(left, size - 1)] == v
        if equal.any():
            self.at += np.bincount(left[equal], minlength=size)
            cells, inside = left[~equal], v[~equal]
        else:
            cells, inside = left, v
        self.between += np.bincount(cells, minlength=size + 1)
        # Distance from the cell's inner edge: v - grid[cell - 1]; below the grid (cell 0, a prefix of the
        # sorted values) grid[0] - v.
        distance = inside - g.take(np.maximum(cells - 1, 0))
        below = int(np.searchsorted(cells, 0, side="right"))
        if below:
            distance[:below] = g[0] - inside[:below]
        self.offset += np.bincount(cells, weights=distance, minlength=size + 1)

    def merge(self, other: NumericWindow) -> NumericWindow:
        """Adds `other` (a window over the same grid) into this one and returns it."""
        if not np.array_equal(self.grid, other.grid):
            raise ValueError("windows over different reference grids cannot be merged")
        self.rows += other.rows
        self.null_count += other.null_count
        self.nan_count += other.nan_count
        self.inf_count += other.inf_count
        self.out_of_range += other.out_of_range
        if other.n:
            assert other.min is not None
            assert other.max is not None
            self._merge_min(other.min, other.min_count)
            self.max = other.max if self.max is None else max(self.max, other.max)
            self._merge_moments(other.n, other.mean, other.m2)
        self.at += other.at
        self.between += other.between
        self.offset += other.offset
        return self

    def state_sizes(self) -> dict[str, int]:
        """Lengths of the state arrays (what memory grows with: the grid, not the rows)."""
        return {
            "grid": len(self.grid),
            "at": len(self.at),
            "between": len(self.between),
            "offset": len(self.offset),
        }

    @property
    def std(self) -> float | None:
        return math.sqrt(self.m2 / self.n) if self.n else None

    def _merge_min(self, low: float, count: int) -> None:
        if self.min is None or low < self.min:
            self.min, self.min_count = low, count
        elif low == self.min:
            self.min_count += count

    def _merge_moments(self, n: int, mean: float, m2: float) -> None:
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    # -- reading, against the reference the grid came from ------------------------------------------------

    def cdfs(self) -> tuple[FloatArray, FloatArray]:
        """The current CDF at and just below each grid point (exact)."""
        below = np.cumsum(self.between[:-1]) + np.concatenate([[0], np.cumsum(self.at)[:-1]])
        return (below + self.at) / self.n, below / self.n

    def counts_at_most(self, points: FloatArray) -> FloatArray:
        """Current values <= each point; exact for grid points."""
        cdf, _ = self.cdfs()
        idx = np.searchsorted(self.grid, points)
        if np.all((idx < len(self.grid)) & (self.grid[np.minimum(idx, len(self.grid) - 1)] == points)):
            return np.asarray(cdf[idx] * self.n, dtype=np.float64)
        return self._interpolated_counts(points)

    def _interpolated_counts(self, points: FloatArray) -> FloatArray:
        """Values <= each point, spreading every cell's count uniformly over the cell (outside the grid:
        over the window's own min or max). Approximate; exact at grid points."""
        assert self.min is not None
        assert self.max is not None
        g, n = self.grid, float(self.n)
        cdf, below = self.cdfs()
        out = np.empty(len(points))
        for k, x in enumerate(points):
            i = int(np.searchsorted(g, x, side="right"))  # g[i-1] <= x < g[i]
            if i > 0 and g[i - 1] == x:
                out[k] = cdf[i - 1] * n
                continue
            if i == 0:
                lo_x, lo_y = self.min, 0.0
                hi_x, hi_y = (float(g[0]), below[0] * n) if len(g) else (self.max, n)
            elif i == len(g):
                lo_x, lo_y, hi_x, hi_y = float(g[-1]), cdf[-1] * n, self.max, n
            else:
                lo_x, lo_y, hi_x, hi_y = float(g[i - 1]), cdf[i - 1] * n, float(g[i]), below[i] * n
            if x <= lo_x:
                out[k] = lo_y
            elif x >= hi_x:
                out[k] = hi_y
            else:
                out[k] = lo_y + (hi_y - lo_y) * (x - lo_x) / (hi_x - lo_x)
        return out


class CategoricalWindow:
    """Counts per category: every reference category, plus up to ``max_new`` unseen ones; the rest of the
    unseen values are counted in ``other``. Values are labelled as profiles label them (text; booleans
    "true"/"false")."""

    def __init__(self, known: Iterable[str] = (), max_new: int = MAX_NEW_CATEGORIES) -> None:
        self.known = frozenset(known)
        self.max_new = max_new
        self.rows = 0
        self.null_count = 0
        self.counts: dict[str, int] = {}
        self.new = 0  # distinct unseen categories kept in `counts`
        self.other = 0

    def update(self, values: pa.Array | pa.ChunkedArray | npt.ArrayLike) -> None:
        arr = _as_arrow(values)
        self.rows += len(arr)
        self.null_count += arr.null_count
        self._add(_category_counts(arr).items())

    def merge(self, other: CategoricalWindow) -> CategoricalWindow:
        self.rows += other.rows
        self.null_count += other.null_count
        self.other += other.other
        self._add(other.counts.items())
        return self

    def _add(self, pairs: Iterable[tuple[str, int]]) -> None:
        for label, count in pairs:
            if label in self.counts:
                self.counts[label] += count
            elif label in self.known or self.new < self.max_new:
                self.counts[label] = count
                self.new += label not in self.known
            else:
                self.other += count

    @property
    def n(self) -> int:
        return sum(self.counts.values()) + self.other

    def state_sizes(self) -> dict[str, int]:
        return {"counts": len(self.counts)}


ColumnWindow = NumericWindow | CategoricalWindow


def window_for(reference: ReferenceColumn, max_new_categories: int = MAX_NEW_CATEGORIES) -> ColumnWindow:
    if reference.kind == "numeric":
        return NumericWindow(reference.grid, reference.low, reference.high)
    return CategoricalWindow(reference.categories, max_new_categories)


# -- comparing ----------------------------------------------------------------------------------------------------


def evaluate(
    reference: ReferenceColumn, window: ColumnWindow, overrides: DriftOverrides | None = None
) -> DriftTest:
    """The column's `DriftTest`: the test Evidently's preset picks for this reference (or the override), and
    PSI; approximations flagged and bounded as the module docstring says."""
    choice = stats.choose_test(reference.kind, reference.n, reference.n_unique, overrides)
    n_cur = window.n
    if reference.n == 0:
        return stats.skipped(reference.name, choice, "no reference values", reference.n, n_cur)
    if n_cur == 0:
        return stats.skipped(reference.name, choice, "no values in the window", reference.n, n_cur)
    if isinstance(window, NumericWindow):
        return _evaluate_numeric(reference, window, choice)
    return _evaluate_categorical(reference, window, choice)


def _evaluate_numeric(ref: ReferenceColumn, win: NumericWindow, choice: TestChoice) -> DriftTest:
    approximate, bound = not ref.exact, None
    p_value: float | None = None
    test = choice.test
    if test == "ks":
        cur_cdf, cur_below = win.cdfs()
        statistic = stats.ks_from_cdfs(ref.cdf, ref.cdf_below, cur_cdf, cur_below)
        p_value = stats.ks_p_value(statistic, ref.n, win.n)
        if approximate:
            inside = np.maximum(ref.cdf_below[1:] - ref.cdf[:-1], 0.0)
            bound = ref.rank_error + float(inside.max(initial=0.0))
    elif test == "wasserstein":
        distance, error = _wasserstein(ref, win)
        norm = max(ref.std, stats.WASSERSTEIN_MIN_NORM)
        statistic, bound = distance / norm, error / norm
        approximate = error > 0
    elif test == "psi":
        statistic, approximate = _numeric_psi(ref, win)
    elif test == "jensenshannon" and ref.n_unique > stats.JS_HISTOGRAM_MIN_UNIQUE:
        statistic, approximate = _sturges_js(ref, win), True
    else:  # by value: jensenshannon, chisquare, z over the reference's values and the unseen ones
        r, c, first_is_new = _value_counts(ref, win)
        if test == "jensenshannon":
            statistic = stats.jensen_shannon(r, c)
        elif test == "chisquare":
            statistic, p_value = stats.chi_square(r, c)
        else:
            if first_is_new:  # a current value below every reference value is the first category
                r = np.concatenate([[0.0], r])
                c = np.concatenate([[float(win.min_count)], c])
                c[-1] -= win.min_count
            statistic, p_value = stats.z_test_proportions(r, c)
    value = statistic if test == "psi" else _numeric_psi(ref, win)[0]
    return _result(ref, choice, statistic, p_value, value, win.n, approximate, bound)


def _evaluate_categorical(ref: ReferenceColumn, win: CategoricalWindow, choice: TestChoice) -> DriftTest:
    if ref.rest:
        # The profile kept only the most frequent categories: compare those, plus one bin for all the others on
        # both sides (a current value outside the table may be in the reference's tail, so it is not "new").
        keys = sorted(ref.categories)
        r = np.array([*(ref.categories[k] for k in keys), ref.rest], dtype=np.float64)
        outside = sum(v for k, v in win.counts.items() if k not in ref.categories) + win.other
        c = np.array([*(win.counts.get(k, 0) for k in keys), outside], dtype=np.float64)
    else:
        keys = sorted(set(ref.categories) | set(win.counts))
        r = np.array([ref.categories.get(k, 0) for k in keys], dtype=np.float64)
        c = np.array([win.counts.get(k, 0) for k in keys], dtype=np.float64)
        if win.other:  # unseen categories beyond the cap: one more bin the reference has nothing in
            r, c = np.append(r, 0.0), np.append(c, float(win.other))
    approximate = ref.categories_error > 0 or ref.rest > 0
    p_value: float | None = None
    if choice.test == "jensenshannon":
        statistic = stats.jensen_shannon(r, c)
    elif choice.test == "chisquare":
        statistic, p_value = stats.chi_square(r, c)
    elif choice.test == "z":
        statistic, p_value = stats.z_test_proportions(r, c)
        approximate = approximate or win.other > 0
    else:
        statistic = stats.psi(r, c)
        approximate = approximate or win.other > 0
    return _result(ref, choice, statistic, p_value, stats.psi(r, c), win.n, approximate, None)


def _result(
    ref: ReferenceColumn,
    choice: TestChoice,
    statistic: float,
    p_value: float | None,
    psi_value: float,
    n_cur: int,
    approximate: bool,
    bound: float | None,
) -> DriftTest:
    score = p_value if choice.score == "p_value" else statistic
    assert score is not None
    return DriftTest(
        ref.name, choice.test, statistic, p_value, choice.threshold,
        stats.is_drifted(choice.test, score, choice.threshold), psi_value, stats.psi_band(psi_value),
        ref.n, n_cur, approximate, bound,
    )  # fmt: skip


def _numeric_psi(ref: ReferenceColumn, win: NumericWindow) -> tuple[float, bool]:
    """PSI on the reference deciles (grid points, so the current's counts are exact)."""
    edges = ref.deciles
    idx = np.searchsorted(ref.grid, edges)
    ref_at_most = np.concatenate([ref.cdf[idx], [1.0]])
    cur_at_most = np.concatenate([win.counts_at_most(edges), [float(win.n)]])
    return stats.psi(np.diff(ref_at_most, prepend=0.0), np.diff(cur_at_most, prepend=0.0)), not ref.exact


def _value_counts(ref: ReferenceColumn, win: NumericWindow) -> tuple[FloatArray, FloatArray, bool]:
    """Reference and current counts per reference value (grid point), plus one bin for the current's values
    the reference does not have (JS and chi-square are unchanged by lumping those, see the module docstring)."""
    r = (ref.cdf - ref.cdf_below) * ref.n  # exact when every reference value is a grid point
    c = win.at.astype(np.float64)
    new = float(win.between.sum())
    first_is_new = bool(win.between[0] > 0)
    return np.append(r, 0.0), np.append(c, new), first_is_new


def _sturges_js(ref: ReferenceColumn, win: NumericWindow) -> float:
    """Evidently's Sturges bins over reference + current, the current's counts interpolated within cells."""
    assert ref.low is not None
    assert ref.high is not None
    assert win.min is not None
    assert win.max is not None
    edges = stats.sturges_edges(min(ref.low, win.min), max(ref.high, win.max), ref.n + win.n)
    inner = edges[1:-1]
    ref_cdf = np.interp(inner, ref.grid, ref.cdf, left=0.0, right=1.0)
    ref_counts = np.diff(np.concatenate([[0.0], ref_cdf, [1.0]]))
    cur_counts = np.diff(np.concatenate([[0.0], win._interpolated_counts(inner), [float(win.n)]]))
    return stats.jensen_shannon(np.maximum(ref_counts, 0.0), np.maximum(cur_counts, 0.0))


def _wasserstein(ref: ReferenceColumn, win: NumericWindow) -> tuple[float, float]:
    """W1 between the reference and the window, and a bound on its absolute error (module docstring)."""
    g, n = ref.grid, float(win.n)
    cur_cdf, cur_below = win.cdfs()
    total = (win.offset[0] + win.offset[-1]) / n  # outside the reference range: exact
    width = np.diff(g)
    if len(width) == 0:
        return float(total), 0.0
    # Cell j = [g_j, g_{j+1}). The current's integral of F comes from the offsets, exactly.
    a_cur = width * cur_cdf[:-1] + (win.between[1:-1] * width - win.offset[1:-1]) / n
    # The reference's lies in [w * F(g_j), w * F(g_{j+1}-)]. The midpoint is shifted by one common fraction of
    # the half-ranges so that the cells add up to the exact total, max - mean (known from the profile's
    # moments): this mostly moves the wide tail cells, where a straight line fits a skewed CDF worst.
    r_start, r_end = ref.cdf[:-1], ref.cdf_below[1:]
    half = width * np.maximum(r_end - r_start, 0.0) / 2
    a_ref = width * (r_start + r_end) / 2
    shift = 0.0
    if ref.high is not None and half.sum() > 0:
        shift = float(np.clip((ref.high - ref.mean - a_ref.sum()) / half.sum(), -1.0, 1.0))
    a_ref = a_ref + shift * half
    e_ref = half * (1.0 + abs(shift))
    lo = r_start - cur_below[1:]  # smallest possible F_ref - F_cur in the cell
    hi = r_end - cur_cdf[:-1]  # largest
    same_sign = (lo >= 0) | (hi <= 0)
    diff = np.abs(a_ref - a_cur)
    # Where the CDFs may cross: both taken as straight lines across the cell, kept within what is possible.
    d0, d1 = r_start - cur_cdf[:-1], r_end - cur_below[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing = np.where(
            d0 * d1 < 0, width * (d0 * d0 + d1 * d1) / (2 * np.abs(d0 - d1)), width * np.abs(d0 + d1) / 2
        )
    lower = np.maximum(diff - e_ref, 0.0)
    upper = width * np.maximum(-lo, hi)
    crossing = np.clip(crossing, lower, upper)
    estimate = np.where(same_sign, diff, crossing)
    error = np.where(same_sign, e_ref, np.maximum(crossing - lower, upper - crossing))
    span = float(g[-1] - g[0])
    return float(total + estimate.sum()), float(error.sum() + ref.rank_error * span)


# -- a whole window -------------------------------------------------------------------------------------------------


class DriftWindow:
    """The current window of every reference column, fed record batches; `results` compares it with the
    reference. Columns the reference lacks (or that change kind) show up in `schema_change`, not as tests."""

    def __init__(
        self, references: Mapping[str, ReferenceColumn], max_new_categories: int = MAX_NEW_CATEGORIES
    ) -> None:
        self.references = dict(references)
        self.columns: dict[str, ColumnWindow] = {
            name: window_for(ref, max_new_categories) for name, ref in self.references.items()
        }
        self.current_kinds: dict[str, str] = {}
        self.rows = 0

    def update(self, batch: pa.RecordBatch | pa.Table) -> None:
        self.rows += batch.num_rows
        for f in batch.schema:
            self.current_kinds.setdefault(f.name, column_kind(f.type))
        for name, window in self.columns.items():
            if name in batch.schema.names and self._comparable(name):
                window.update(batch.column(name))
            else:
                window.rows += batch.num_rows

    def merge(self, other: DriftWindow) -> DriftWindow:
        self.rows += other.rows
        for name, kind in other.current_kinds.items():
            self.current_kinds.setdefault(name, kind)
        for name, window in self.columns.items():
            window.merge(other.columns[name])  # type: ignore[arg-type]
        return self

    def _comparable(self, name: str) -> bool:
        return stats.drift_kind(self.current_kinds.get(name, "")) == self.references[name].kind

    def schema_change(self) -> SchemaChange:
        ref = {name: r.profile_kind for name, r in self.references.items()}
        return stats.schema_change(ref, self.current_kinds) if self.current_kinds else SchemaChange()

    def results(
        self, overrides: Mapping[str, DriftOverrides] | DriftOverrides | None = None
    ) -> list[DriftTest]:
        """One `DriftTest` per reference column present in the window with the same kind."""
        out = []
        for name, ref in self.references.items():
            if name not in self.current_kinds or not self._comparable(name):
                continue
            chosen = overrides.get(name) if isinstance(overrides, Mapping) else overrides
            out.append(evaluate(ref, self.columns[name], chosen))
        return out


# -- values --------------------------------------------------------------------------------------------------------


def _as_arrow(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(np.asarray(values))
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values


def _numbers(arr: pa.Array) -> FloatArray:
    """Non-null values as float64 (dates and timestamps as epoch seconds, like profiles)."""
    present = pc.drop_null(arr) if arr.null_count else arr
    t = present.type
    if pa.types.is_date(t):
        present, t = present.cast(pa.timestamp("s")), pa.timestamp("s")
    if pa.types.is_timestamp(t):
        scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[t.unit]
        ints = np.asarray(present.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
        return np.asarray(ints / scale, dtype=np.float64)
    return np.asarray(present.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype=np.float64)


def _category_counts(arr: pa.Array) -> dict[str, int]:
    present = pc.drop_null(arr) if arr.null_count else arr
    if len(present) == 0:
        return {}
    counted = pc.value_counts(present)
    labels = _labels(counted.field("values"))
    counts = counted.field("counts").to_pylist()
    out: dict[str, int] = {}
    for label, count in zip(labels, counts, strict=True):
        out[label] = out.get(label, 0) + int(count)
    return out


def _labels(values: pa.Array) -> list[str]:
    """Values as the text a profile's frequent values use (see bridgehead.data.sketches)."""
    t = values.type
    if pa.types.is_boolean(t):
        return ["true" if v else "false" for v in values.to_pylist()]
    if pa.types.is_temporal(t):
        return [v.isoformat() if hasattr(v, "isoformat") else str(v) for v in values.to_pylist()]
    return [str(v) for v in values.to_pylist()]


def _number_label(x: float) -> str:
    """A float value as a key: integral values as integers ("3", the way integer columns are labelled)."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**53 else repr(float(x))

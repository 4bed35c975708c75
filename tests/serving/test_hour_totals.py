"""The per-hour aggregates of the prediction log: a file of one endpoint, hour, model version and role is
summed without grouping; any other file is grouped. Both must give what pandas gives on the same rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bridgehead.serving.predlog import SCHEMA
from bridgehead.serving.runtime import LATENCY_BUCKETS_MS
from bridgehead.serving.service import _hour_totals

HOUR = 3_600_000
T0 = 1_700_000_000_000 // HOUR * HOUR


def _rows(seed: int) -> pd.DataFrame:
    """Requests of 1-5 rows over two endpoints, two hours, two models, versions and roles; some failed; some
    requests' first rows are missing (a request whose rows came in several files); latencies include the
    bucket bounds themselves."""
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    for request in range(400):
        n = int(rng.integers(1, 6))
        latency = float(rng.choice(LATENCY_BUCKETS_MS) if request % 7 == 0 else rng.lognormal(2.0, 1.5))
        first_row = 1 if request % 11 == 0 else 0
        common = {
            "request_id": f"r{request}",
            "endpoint": "credit" if request % 5 else "churn",
            "model_name": "credit-risk" if request % 3 else "challenger",
            "version": int(rng.integers(1, 3)),
            "role": "shadow" if request % 4 == 0 else "primary",
            "ts": T0 + int(rng.integers(0, 2)) * HOUR + request,
            "latency_ms": latency,
            "status": "error" if request % 13 == 0 else "ok",
            "key": "",
        }
        rows.extend({**common, "row": i} for i in range(first_row, n))
    return pd.DataFrame(rows)


def _table(frame: pd.DataFrame) -> pa.Table:
    # ``ts`` as epoch milliseconds, which Arrow takes for its timestamp type as they are.
    return pa.Table.from_pydict({name: frame[name].tolist() for name in SCHEMA.names}, schema=SCHEMA)


def _reference(frame: pd.DataFrame) -> dict[tuple[Any, ...], list[Any]]:
    """The same sums with pandas."""
    frame = frame.assign(hour=frame["ts"] // HOUR * HOUR)
    out: dict[tuple[Any, ...], list[Any]] = {}
    for key, group in frame.groupby(["endpoint", "hour", "model_name", "version", "role"]):
        firsts = group[group["row"] == 0]["latency_ms"].to_numpy()
        buckets = np.searchsorted(np.asarray(LATENCY_BUCKETS_MS), firsts, side="left")
        out[tuple(int(k) if isinstance(k, np.integer) else k for k in key)] = [
            len(firsts),
            len(group),
            int((group["status"] != "ok").sum()),
            float(firsts.sum()),
            float(firsts.max()) if len(firsts) else 0.0,
            np.bincount(buckets, minlength=len(LATENCY_BUCKETS_MS) + 1).tolist(),
        ]
    return out


def _close(got: dict[tuple[Any, ...], list[Any]], expected: dict[tuple[Any, ...], list[Any]]) -> None:
    assert got.keys() == expected.keys()
    for key, (requests, rows, errors, total, highest, buckets) in expected.items():
        assert got[key][:3] == [requests, rows, errors], key
        assert got[key][3] == pytest.approx(total, rel=1e-12), key
        assert got[key][4] == highest and got[key][5] == buckets, key


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_and_single_group_totals_agree_with_pandas(seed: int) -> None:
    frame = _rows(seed)
    expected = _reference(frame)
    assert len(expected) > 10  # the grouped way, many groups
    _close(_hour_totals(_table(frame)), expected)
    # One file per group, as the log writes them in practice: each summed without grouping.
    frame = frame.assign(hour=frame["ts"] // HOUR * HOUR)
    single: dict[tuple[Any, ...], list[Any]] = {}
    for _, group in frame.groupby(["endpoint", "hour", "model_name", "version", "role"]):
        got = _hour_totals(_table(group.drop(columns="hour")))
        assert len(got) == 1
        single.update(got)
    _close(single, expected)


def test_a_file_without_any_first_row_counts_rows_and_errors_but_no_request() -> None:
    frame = _rows(3)
    rest = frame[frame["row"] > 0].head(1)
    rest = pd.concat([rest.assign(status="ok"), rest.assign(status="error")], ignore_index=True)
    [(key, values)] = _hour_totals(_table(rest)).items()
    assert key[0] == rest["endpoint"].iloc[0] and key[1] == rest["ts"].iloc[0] // HOUR * HOUR
    assert values == [0, 2, 1, 0.0, 0.0, [0] * (len(LATENCY_BUCKETS_MS) + 1)]

"""The drift benchmark runs end to end at quick size (Bridgehead only: Evidently is not installed).

No timing is asserted. What is checked is that the harness works and that Bridgehead's verdicts on the generated
data are the ones the data was built to give: the 4 shifted columns drifted, the other 16 not, and the dataset
(4 of 20 columns, share < 0.5) not drifted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "drift_vs_evidently.py"
SHIFTED = {"num_normal_shift", "num_lognormal_shift", "num_lowcard_shift", "cat_8_shift"}
# A categorical column with more categories than the profile's frequent-values table (100): the categories left
# out of the stored reference count as unseen in the window, so Jensen-Shannon flags drift Evidently does not.
MANY_CATEGORIES = "cat_200"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    data = tmp_path_factory.mktemp("drift-bench")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-peer", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), data


def test_quick_drift_benchmark_summary(run: tuple[dict[str, Any], Path]) -> None:
    summary, data = run
    assert summary["rows"] == 200_000 and summary["columns"] == 20 and summary["peer"] is False
    assert set(summary["shifted"]) == SHIFTED
    assert "speedup" not in summary and "stream" not in summary
    assert {"bridgehead_reference", "bridgehead_drift"} <= set(summary["seconds"])
    assert all(v > 0 for v in summary["seconds"].values())
    assert all(v > 0 for v in summary["peak_mb"].values())
    assert 0 < summary["bridgehead_profile_kb"] < 2000  # sketches, not data
    assert len(summary["bridgehead_columns"]) == 20
    for name in ("reference", "current"):
        generated = pq.ParquetFile(data / f"drift-{name}-200000.parquet")
        assert generated.metadata.num_rows == 200_000 and generated.metadata.num_columns == 20


def test_quick_drift_benchmark_flags_only_the_shifted_columns(run: tuple[dict[str, Any], Path]) -> None:
    summary, _ = run
    # Including the 200-category column, whose profile keeps only its 100 most frequent values (the rest is
    # compared as one bin): no false alarm.
    assert set(summary["bridgehead_drifted"]) == SHIFTED
    dataset = summary["bridgehead_dataset"]
    assert dataset["n_drifted"] == 4 and dataset["share"] == 0.2 and dataset["drifted"] is False

"""The serving benchmark runs end to end at quick size (no MLflow: nothing is installed or downloaded).

No timing is asserted: the figures depend on the machine. What is checked is that the harness works (the
client ceiling, the minimal FastAPI app and Bridgehead were each driven, every request was answered with one
prediction per record) and that Bridgehead's prediction log holds every row it answered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bridgehead.settings import Settings

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "serving_vs_mlflow.py"
RATIOS = {"speedup_1row", "speedup_100row", "p99_ratio", "vs_naive_1row", "log_overhead"}


def test_quick_serving_benchmark() -> None:
    done = subprocess.run(
        # Two log-on/log-off server pairs, one turn each: the second pair serves the deployment the first made.
        [sys.executable, str(SCRIPT), "--quick", "--no-peer", "--pairs", "2", "--segments", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary.keys() >= RATIOS
    assert summary["mode"] == "quick"
    assert (summary["config"]["pairs"], summary["config"]["segments"]) == (2, 1)
    # Without MLflow there is nothing to divide by; the floor is measured.
    assert summary["speedup_1row"] is None and summary["speedup_100row"] is None
    assert summary["p99_ratio"] is None
    assert isinstance(summary["vs_naive_1row"], float) and summary["vs_naive_1row"] > 0

    switch = "prediction_log_disabled" in Settings.model_fields
    expected = {"ceiling", "naive", "bridgehead"} | ({"bridgehead_log_off"} if switch else set())
    results = summary["results"]
    assert set(results) == expected
    assert (summary["log_overhead"] is not None) == switch
    assert summary["errors"] == 0
    for target, per_size in results.items():
        assert set(per_size) == {"1", "100"}, target
        for size, figures in per_size.items():
            where = f"{target}, {size} row(s)"
            assert figures["errors"] == 0, where
            assert figures["answered"] == figures["sent"] > 0, where  # every request answered, and right
            assert figures["measured_requests"] > 0, where
            assert figures["rows_per_s"] > 0 and figures["rps"] > 0, where
            assert figures["rows_per_s"] == pytest.approx(figures["rps"] * int(size), rel=0.02), where
            assert 0 < figures["p50_ms"] <= figures["p99_ms"], where

    bridgehead = results["bridgehead"]
    if switch:
        # The log-on and log-off servers took turns (one slice in each of two pairs); CPU per request is read.
        for key in ("bridgehead", "bridgehead_log_off"):
            for size, figures in results[key].items():
                assert figures["segments"] == 2, (key, size)
                assert figures["cpu_ms_per_request"] > 0, (key, size)
        assert set(summary["log_cpu_overhead_by_size"]) == {"1", "100"}
        assert all(isinstance(v, float) for v in summary["log_cpu_overhead_by_size"].values())
    assert summary["bridgehead_answered_requests"] == sum(r["answered"] for r in bridgehead.values())
    rows = sum(r["answered"] * int(size) for size, r in bridgehead.items())
    assert summary["bridgehead_answered_rows"] == rows
    assert summary["bridgehead_logged_rows"] == rows  # the prediction log lost and duplicated nothing

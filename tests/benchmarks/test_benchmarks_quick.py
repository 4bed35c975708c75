"""The tracking benchmark runs end to end at quick size, and Bridgehead stores exactly what was logged.

No timing is asserted: the figures depend on the machine. What is checked is that the harness works
(Bridgehead and the floor; the real MLflow server is skipped, so nothing is downloaded) and that the fast
logging path lost or duplicated nothing.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "tracking_vs_mlflow.py"
# QUICK sizes in the script: 2 runs x 5 params x 200 points, 20 single calls, 20 search runs (2 metrics and
# 5 params each), plus one warm-up point.
METRIC_ROWS = 2 * 200 + 1 + 20 + 20 * 2
PARAM_ROWS = 2 * 5 + 20 * 5
RUNS = 2 + 1 + 20


def test_quick_tracking_benchmark_reports_and_stores_every_point(tmp_path: Path) -> None:
    home = tmp_path / "bridgehead"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-peer", "--bridgehead-home", str(home)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"log_batch_speedup", "single_call_speedup", "search_speedup", "floor_ratio"} <= summary.keys()
    # Without the peer there is nothing to divide by; the floor ratio is measured.
    assert summary["log_batch_speedup"] is None and summary["search_speedup"] is None
    assert isinstance(summary["floor_ratio"], float) and summary["floor_ratio"] > 0
    assert summary["expected_metric_rows"] == METRIC_ROWS
    assert summary["bridgehead_metric_rows"] == METRIC_ROWS

    with contextlib.closing(sqlite3.connect(home / "bridgehead.db")) as db:
        assert db.execute("SELECT count(*) FROM metrics").fetchone()[0] == METRIC_ROWS
        distinct = db.execute("SELECT count(*) FROM (SELECT DISTINCT run_id, key, step FROM metrics)")
        assert distinct.fetchone()[0] == METRIC_ROWS  # nothing logged twice
        assert db.execute("SELECT count(*) FROM params").fetchone()[0] == PARAM_ROWS
        assert db.execute("SELECT count(*) FROM runs").fetchone()[0] == RUNS
        # The latest value per key is what search filters on: exactly half of the search runs match.
        above = db.execute("SELECT count(*) FROM latest_metrics WHERE key = 'acc' AND value > 0.5")
        assert above.fetchone()[0] == 10
        steps = db.execute("SELECT max(step) FROM metrics WHERE key = 'loss' AND step > 0").fetchone()[0]
        assert steps == 19

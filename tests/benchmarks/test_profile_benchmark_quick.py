"""The profiling benchmark runs end to end at quick size (Bridgehead only: nothing is installed).

No timing is asserted. What is checked is that the harness works, that Bridgehead profiled every row of the
generated file and that the generated file passes the benchmark's contract (so the validator did all its work).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "profile_vs_peers.py"


def test_quick_profile_benchmark(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-peers", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["rows"] == 200_000 and summary["columns"] == 20 and summary["peers"] is False
    assert set(summary["seconds"]) == {"bridgehead_profile", "bridgehead_validate"}
    assert all(v > 0 for v in summary["peak_mb"].values())
    assert 0 < summary["bridgehead_profile_kb"] < 2000  # sketches, not data
    generated = pq.ParquetFile(tmp_path / "bench-200000.parquet")
    assert generated.metadata.num_rows == 200_000 and generated.metadata.num_columns == 20

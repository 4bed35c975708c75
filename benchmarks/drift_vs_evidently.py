"""Drift detection: Bridgehead against Evidently's data-drift preset.

The same generated data (1,000,000 reference + 1,000,000 current rows by default; 15 numeric and 5 categorical
columns; a shift injected in 4 of them), one machine, one run. Every job runs in a fresh process that reports
its wall time and peak resident memory (its own ``ru_maxrss``).

    .venv/bin/python benchmarks/drift_vs_evidently.py                 # full run (installs Evidently on first use)
    .venv/bin/python benchmarks/drift_vs_evidently.py --quick         # 200,000 + 200,000 rows, Bridgehead only
    .venv/bin/python benchmarks/drift_vs_evidently.py --quick --with-peer   # the same with Evidently
    .venv/bin/python benchmarks/drift_vs_evidently.py --no-peer --stream-rows 10000000

Bridgehead works as a monitor does: the reference profile is built once from the reference Parquet and stored
(timed, but not part of the comparison); the measured job loads the stored profile, streams the current Parquet
in batches into `DriftWindow`s (one per thread, over disjoint row groups, merged at the end), and computes the
per-column tests and the dataset verdict. Evidently (its own venv, benchmarks/.venv-evidently) reads both
Parquet files into pandas and runs ``Report([DataDriftPreset()])``. Imports are timed separately and count for
neither side; the Parquet reading counts for both (Bridgehead reads while it computes; Evidently's read time is
also printed on its own).

``--stream-rows N`` also writes a current file of N rows (chunked: bounded memory) and streams it through
Bridgehead alone. The last line printed is one JSON object with ``speedup`` (Evidently's seconds / Bridgehead's),
``memory_ratio`` (Bridgehead's peak / Evidently's) and ``verdicts_agree``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
PEER = HERE / ".venv-evidently"
PEER_PINS = ["evidently==0.7.23", "pandas<3"]
TARGETS = {"speedup": 40.0, "memory_ratio": 0.25}
ROW_GROUP = 250_000
BATCH = 65_536  # pyarrow's default batch: less memory than a whole row group, and no slower here
CHUNK = 1_000_000

# name -> (kind, generator description); the kinds Evidently is told (numerical or categorical).
NUMERIC = [
    "num_normal_shift",  # normal(100, 15); current: mean + 0.5 sd                          (shifted)
    "num_normal",  # normal(0, 1)
    "num_normal_nulls",  # normal(-20, 4), 2 % nulls
    "num_lognormal_shift",  # lognormal(3, 0.6); current: scaled by 1.4                      (shifted)
    "num_lognormal",  # lognormal(0, 1)
    "num_uniform",  # uniform(0, 1)
    "num_uniform_wide",  # uniform(-500, 500)
    "num_exponential",  # exponential(2)
    "num_gamma",  # gamma(2, 3)
    "num_int_wide",  # integers 0 .. 99,999 (int64)
    "num_int_poisson",  # poisson(400) (int64, ~150 distinct values)
    "num_int_age",  # integers 18 .. 90 (int64, 73 values)
    "num_lowcard_shift",  # 1 .. 5 (int64), current frequencies moved                          (shifted)
    "num_binary",  # 0 / 1 (int64)
    "num_lowcard_float",  # 0.5, 1.0, 2.5 (float64)
]
CATEGORICAL = [
    "cat_3",  # 3 categories
    "cat_8_shift",  # 8 categories; current frequencies reversed                            (shifted)
    "cat_30",  # 30 categories, geometric frequencies
    "cat_200",  # 200 categories, Zipf-like frequencies
    "cat_2",  # "yes" / "no", 1 % nulls
]
SHIFTED = ["num_normal_shift", "num_lognormal_shift", "num_lowcard_shift", "cat_8_shift"]
COLUMNS = NUMERIC + CATEGORICAL


def _labels(prefix: str, k: int) -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(k)]


def _zipf(k: int, s: float) -> Any:
    import numpy as np

    p = 1.0 / np.arange(1, k + 1) ** s
    return p / p.sum()


def chunk_table(n: int, seed: int, shifted: bool) -> Any:
    """n rows of all 20 columns; ``shifted`` applies the current side's shift to the 4 shifted columns."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(seed)

    def with_nulls(values: Any, share: float) -> Any:
        return pa.array(values, mask=rng.random(n) < share)

    def categorical(labels: list[str], p: Any) -> Any:
        return pa.array(labels).take(pa.array(rng.choice(len(labels), n, p=p)))

    cols: dict[str, Any] = {
        "num_normal_shift": rng.normal(100 + (7.5 if shifted else 0.0), 15, n),
        "num_normal": rng.normal(0, 1, n),
        "num_normal_nulls": with_nulls(rng.normal(-20, 4, n), 0.02),
        "num_lognormal_shift": rng.lognormal(3, 0.6, n) * (1.4 if shifted else 1.0),
        "num_lognormal": rng.lognormal(0, 1, n),
        "num_uniform": rng.random(n),
        "num_uniform_wide": rng.uniform(-500, 500, n),
        "num_exponential": rng.exponential(2, n),
        "num_gamma": rng.gamma(2, 3, n),
        "num_int_wide": rng.integers(0, 100_000, n),
        "num_int_poisson": rng.poisson(400, n).astype(np.int64),
        "num_int_age": rng.integers(18, 91, n),
        "num_lowcard_shift": rng.choice(
            np.arange(1, 6), n, p=[0.3, 0.3, 0.2, 0.1, 0.1] if shifted else [0.1, 0.2, 0.4, 0.2, 0.1]
        ),
        "num_binary": (rng.random(n) < 0.3).astype(np.int64),
        "num_lowcard_float": rng.choice(np.array([0.5, 1.0, 2.5]), n, p=[0.5, 0.3, 0.2]),
        "cat_3": categorical(["red", "green", "blue"], [0.5, 0.3, 0.2]),
        "cat_8_shift": categorical(_labels("region", 8), _zipf(8, 1.0)[::-1] if shifted else _zipf(8, 1.0)),
        "cat_30": categorical(_labels("segment", 30), 0.9 ** np.arange(30) / (0.9 ** np.arange(30)).sum()),
        "cat_200": categorical(_labels("store", 200), _zipf(200, 0.8)),
    }
    missing = pa.array(rng.random(n) < 0.01)
    cols["cat_2"] = pc.if_else(
        missing, pa.scalar(None, pa.string()), categorical(["yes", "no"], [0.35, 0.65])
    )
    return pa.table({name: cols[name] for name in COLUMNS})


def generate(path: Path, rows: int, seed: int, shifted: bool) -> None:
    """Writes ``rows`` rows in chunks of at most 1,000,000 (each with its own seed), row groups of 250,000
    (at least 4 row groups, so that small files are split across threads too)."""
    import pyarrow.parquet as pq

    row_group = min(ROW_GROUP, max(rows // 4, 1))
    tmp = path.with_suffix(".tmp")
    writer = None
    for i, start in enumerate(range(0, rows, CHUNK)):
        table = chunk_table(min(CHUNK, rows - start), seed * 100_003 + i, shifted)
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=row_group)
    assert writer is not None
    writer.close()
    tmp.rename(path)


def ensure(path: Path, rows: int, seed: int, shifted: bool) -> Path:
    if not path.exists():
        print(f"generating {path} ({rows:,} rows x {len(COLUMNS)} columns) …", file=sys.stderr, flush=True)
        generate(path, rows, seed, shifted)
    return path


# --- the jobs: each runs in its own process and prints {"seconds", "peak_mb", ...} --------------------------

PRELUDE = """
import json, resource, sys, time
args = json.loads(sys.argv[1])
t_import = time.perf_counter()
"""
EPILOGUE = """
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  **extra}))
"""

JOBS = {
    # Built once and stored: what `bridgehead data register` keeps for a dataset version.
    "bridgehead_reference": """
from bridgehead.data.profile import Profiler
import pyarrow.parquet as pq
import_s = time.perf_counter() - t_import
t0 = time.perf_counter()
source = pq.ParquetFile(args["reference"], pre_buffer=False)
profile = Profiler(source.schema_arrow).run(source.iter_batches(batch_size=args["batch_size"]))
state = json.dumps(profile.to_state())
with open(args["profile"], "w") as f:
    f.write(state)
seconds = time.perf_counter() - t0
extra = {"import_s": import_s, "rows": profile.row_count, "profile_kb": len(state) / 1024}
""",
    # The measured part: stored profile + one pass over the current Parquet.
    "bridgehead_drift": """
from concurrent.futures import ThreadPoolExecutor
import pyarrow.parquet as pq
from bridgehead.data.profile import Profile
from bridgehead.monitoring.stats import dataset_drift
from bridgehead.monitoring.windows import DriftWindow, references_from_profile
import_s = time.perf_counter() - t_import
t0 = time.perf_counter()
with open(args["profile"]) as f:
    references = references_from_profile(Profile.from_state(json.load(f)))
groups = pq.ParquetFile(args["current"]).metadata.num_row_groups
threads = max(1, min(args["threads"], groups))

def one_pass(part):
    window = DriftWindow(references)
    # pre_buffer=False as in bridgehead.data.readers: pre-buffering would hold every listed row group at once.
    source = pq.ParquetFile(args["current"], pre_buffer=False)
    for batch in source.iter_batches(batch_size=args["batch_size"], row_groups=part, use_threads=False):
        window.update(batch)
    return window

parts = [list(range(groups))[i::threads] for i in range(threads)]
if threads == 1:
    windows = [one_pass(parts[0])]
else:
    with ThreadPoolExecutor(threads) as pool:
        windows = list(pool.map(one_pass, parts))
window = windows[0]
for other in windows[1:]:
    window.merge(other)
results = window.results()
dataset = dataset_drift(results)
seconds = time.perf_counter() - t0
extra = {
    "import_s": import_s, "rows": window.rows, "threads": threads,
    "columns": {r.column: {"test": r.test, "statistic": r.statistic, "p_value": r.p_value, "score": r.score,
                           "threshold": r.threshold, "drifted": r.drifted, "approximate": r.approximate,
                           "error_bound": r.error_bound} for r in results},
    "dataset": {"n_columns": dataset.n_columns, "n_drifted": dataset.n_drifted, "share": dataset.share,
                "drifted": dataset.drifted},
}
""",
    "evidently_drift": """
import warnings
warnings.filterwarnings("ignore")
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset
import evidently
import_s = time.perf_counter() - t_import
t0 = time.perf_counter()
reference = pd.read_parquet(args["reference"])
current = pd.read_parquet(args["current"])
read_s = time.perf_counter() - t0
definition = DataDefinition(numerical_columns=args["numeric"], categorical_columns=args["categorical"])
snapshot = Report([DataDriftPreset()], include_tests=True).run(  # tests: the per-column verdicts
    Dataset.from_pandas(current, data_definition=definition),
    Dataset.from_pandas(reference, data_definition=definition),
)
result = snapshot.dict()
seconds = time.perf_counter() - t0
columns, dataset = {}, None
for metric in result["metrics"]:
    config = metric.get("config", {})
    if config.get("type", "").endswith("ValueDrift"):
        columns[config["column"]] = {"test": config.get("method"), "threshold": config.get("threshold"),
                                     "score": metric["value"]}
    elif config.get("type", "").endswith("DriftedColumnsCount"):
        dataset = metric["value"]
for test in result["tests"]:
    column = (test.get("metric_config") or {}).get("params", {}).get("column")
    if column in columns:
        columns[column]["drifted"] = test["status"] == "FAIL"
extra = {"import_s": import_s, "read_s": read_s, "rows": int(len(current)), "version": evidently.__version__,
         "columns": columns, "dataset": dataset}
""",
}


def run_job(python: Path, job: str, args: dict[str, Any]) -> dict[str, Any]:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(JOBS[job]) + textwrap.dedent(EPILOGUE)
    env = {**os.environ, "DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}
    env.pop("PYTHONPATH", None)
    print(f"  {job} …", file=sys.stderr, flush=True)
    done = subprocess.run(
        [str(python), "-c", code, json.dumps(args)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{job} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(
        f"  {job}: {result['seconds']:.2f} s (+ {result['import_s']:.2f} s imports), "
        f"peak {result['peak_mb']:.0f} MB",
        file=sys.stderr,
        flush=True,
    )
    return result


def peer_python() -> Path:
    python = PEER / "bin" / "python"
    if not python.exists():
        print(f"installing Evidently into {PEER} (first use only) …", file=sys.stderr, flush=True)
        venv.create(PEER, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    return python


TEST_NAMES = {  # Evidently's display names -> Bridgehead's test names
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "PSI": "psi",
}


def compare(ours: dict[str, Any], theirs: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Prints the per-column table and returns (every verdict agrees, the disagreements)."""
    print(
        f"\n{'column':22} | {'evidently test':14} {'stat':>9} {'drifted':>7} | "
        f"{'bridgehead test':15} {'stat':>9} {'drifted':>7} | agree"
    )
    disagreements = []
    for name in COLUMNS:
        e, b = theirs.get(name), ours.get(name)
        if e is None or b is None or "drifted" not in e:
            disagreements.append({"column": name, "evidently": e, "bridgehead": b, "why": "missing"})
            print(f"{name:22} | missing on one side")
            continue
        e_test = TEST_NAMES.get(e["test"], e["test"])
        agree = e["drifted"] == b["drifted"]
        if not agree:
            disagreements.append({"column": name, "evidently": e, "bridgehead": b})
        print(
            f"{name:22} | {e_test:14} {e['score']:9.4f} {e['drifted']!s:>7} | "
            f"{b['test']:15} {b['score']:9.4f} {b['drifted']!s:>7} | {'yes' if agree else 'NO'}"
        )
    return not disagreements, disagreements


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=1_000_000, help="rows in the reference and in the current"
    )
    parser.add_argument("--quick", action="store_true", help="200,000 + 200,000 rows, no peer, no stream")
    parser.add_argument("--with-peer", action="store_true", help="run Evidently even with --quick")
    parser.add_argument("--no-peer", action="store_true", help="Bridgehead only; nothing is installed")
    parser.add_argument("--stream-rows", type=int, default=None, help="default 100,000,000; 0 skips")
    parser.add_argument("--threads", type=int, default=2, help="windows over disjoint row groups, merged")
    parser.add_argument("--batch-size", type=int, default=BATCH, help="rows per Parquet batch read")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    args = parser.parse_args()
    rows = 200_000 if args.quick else args.rows
    peer = (args.with_peer or not args.quick) and not args.no_peer
    stream_rows = args.stream_rows if args.stream_rows is not None else (0 if args.quick else 100_000_000)
    args.data_dir.mkdir(parents=True, exist_ok=True)
    reference = ensure(args.data_dir / f"drift-reference-{rows}.parquet", rows, 1, False)
    current = ensure(args.data_dir / f"drift-current-{rows}.parquet", rows, 2, True)
    profile = args.data_dir / f"drift-reference-{rows}.profile.json"
    job_args = {
        "reference": str(reference),
        "current": str(current),
        "profile": str(profile),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "numeric": NUMERIC,
        "categorical": CATEGORICAL,
    }
    ours = Path(sys.executable)
    results: dict[str, dict[str, Any]] = {}
    results["bridgehead_reference"] = run_job(ours, "bridgehead_reference", job_args)
    results["bridgehead_drift"] = run_job(ours, "bridgehead_drift", job_args)
    if args.threads != 1:
        results["bridgehead_drift_1thread"] = run_job(ours, "bridgehead_drift", {**job_args, "threads": 1})
    bh = results["bridgehead_drift"]
    for key in ("bridgehead_reference", "bridgehead_drift"):
        if results[key]["rows"] != rows:
            raise SystemExit(f"{key} saw {results[key]['rows']} rows, the file has {rows}")
    drifted = sorted(c for c, r in bh["columns"].items() if r["drifted"])
    figures: dict[str, Any] = {
        "rows": rows,
        "columns": len(COLUMNS),
        "shifted": SHIFTED,
        "reference_mb": round(reference.stat().st_size / 1e6, 1),
        "current_mb": round(current.stat().st_size / 1e6, 1),
        "peer": peer,
        "threads": bh["threads"],
        "bridgehead_drifted": drifted,
        "bridgehead_dataset": bh["dataset"],
        "bridgehead_columns": {
            c: {"test": r["test"], "score": r["score"], "drifted": r["drifted"]}
            for c, r in bh["columns"].items()
        },
        "bridgehead_profile_kb": round(results["bridgehead_reference"]["profile_kb"], 1),
    }
    if peer:
        evidently = run_job(peer_python(), "evidently_drift", job_args)
        results["evidently_drift"] = evidently
        agree, disagreements = compare(bh["columns"], evidently["columns"])
        e_dataset = evidently["dataset"] or {}
        dataset_agree = bool(e_dataset.get("share", -1) >= 0.5) == bh["dataset"]["drifted"]
        figures.update(
            speedup=round(evidently["seconds"] / bh["seconds"], 2),
            speedup_without_read=round((evidently["seconds"] - evidently["read_s"]) / bh["seconds"], 2),
            speedup_with_imports=round(
                (evidently["seconds"] + evidently["import_s"]) / (bh["seconds"] + bh["import_s"]), 2
            ),
            memory_ratio=round(bh["peak_mb"] / evidently["peak_mb"], 3),
            verdicts_agree=agree and dataset_agree,
            disagreements=disagreements,
            evidently_version=evidently["version"],
            evidently_read_s=round(evidently["read_s"], 2),
            evidently_dataset=e_dataset,
        )
        met = {
            "speedup": figures["speedup"] >= TARGETS["speedup"],
            "memory_ratio": figures["memory_ratio"] <= TARGETS["memory_ratio"],
            "verdicts_agree": figures["verdicts_agree"],
        }
        print()
        for key, ok in met.items():
            target = TARGETS.get(key, True)
            print(f"  {key}: {figures[key]} (target {target}) {'met' if ok else 'NOT met'}")
        figures["met"] = met
    if stream_rows:
        big = ensure(args.data_dir / f"drift-current-{stream_rows}.parquet", stream_rows, 3, True)
        stream = run_job(ours, "bridgehead_drift", {**job_args, "current": str(big)})
        results["bridgehead_stream"] = stream
        if stream["rows"] != stream_rows:
            raise SystemExit(f"the stream saw {stream['rows']} rows, the file has {stream_rows}")
        figures["stream"] = {
            "rows": stream_rows,
            "file_mb": round(big.stat().st_size / 1e6, 1),
            "seconds": round(stream["seconds"], 2),
            "peak_mb": round(stream["peak_mb"]),
            "rows_per_s": round(stream_rows / stream["seconds"]),
            "threads": stream["threads"],
            "drifted": sorted(c for c, r in stream["columns"].items() if r["drifted"]),
        }
    print(f"\n{'job':26} {'seconds':>9} {'imports s':>9} {'peak MB':>9}")
    for job, r in results.items():
        print(f"{job:26} {r['seconds']:9.2f} {r['import_s']:9.2f} {r['peak_mb']:9.0f}")
    figures["seconds"] = {job: round(r["seconds"], 3) for job, r in results.items()}
    figures["import_s"] = {job: round(r["import_s"], 2) for job, r in results.items()}
    figures["peak_mb"] = {job: round(r["peak_mb"]) for job, r in results.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

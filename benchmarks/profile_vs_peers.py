"""Profiling and contract validation: Bridgehead against whylogs, ydata-profiling and Great Expectations.

One generated Parquet file (5,000,000 rows x 20 columns by default: floats with nulls, ints, low-cardinality
categories, high-cardinality ids), one machine, one run. Every job runs in a fresh process that reads the file
itself and reports its wall time and peak resident memory, so imports and reading count for everyone.

    .venv/bin/python benchmarks/profile_vs_peers.py            # full run (installs the peers on first use)
    .venv/bin/python benchmarks/profile_vs_peers.py --quick --no-peers   # 200,000 rows, Bridgehead only
    .venv/bin/python benchmarks/profile_vs_peers.py --rows 100000000 --profile-only   # ~10 GB, profile only

The peers live in benchmarks/.venv-data-peers (whylogs 1.6.4 needs numpy<2 and pyarrow<21, so they cannot
share the project's venv). The last line printed is one JSON object with profile_speedup (whylogs time /
Bridgehead time), validate_speedup (Great Expectations / Bridgehead) and memory_ratio (Bridgehead's profiling
peak / the lower of the peers' profiling peaks).
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

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data"
PEERS = HERE / ".venv-data-peers"
PEER_PINS = ["whylogs==1.6.4", "ydata-profiling==4.18.4", "great_expectations==1.24.1", "pyarrow<21"]
TARGETS = {"profile_speedup": 10.0, "validate_speedup": 5.0, "memory_ratio": 0.5}

FLOATS = [f"f{i}" for i in range(8)]
INTS = [f"i{i}" for i in range(4)]
CATS = [f"c{i}" for i in range(5)]
IDS = ["id0", "id1", "id2"]
CATEGORY_VALUES = ["north", "south", "east", "west", "central", "online", "partner", "other"]

# The same ~21 expectations for both validators (the file breaks none of them, so both do all the work).
CONTRACT = {
    "columns": {
        **{f: {"type": "number", "max_null_share": 0.1, "min": -1000, "max": 1000} for f in FLOATS[:4]},
        **{f: {"type": "number", "max_null_share": 0.1} for f in FLOATS[4:6]},
        **{i: {"type": "integer", "min": 0, "max": 1_000_000} for i in INTS[:3]},
        **{c: {"type": "string", "allowed_values": CATEGORY_VALUES} for c in CATS[:4]},
        "id0": {"type": "string", "nullable": False, "unique": True, "regex": r"^ID-[0-9]{9}$"},
        "id1": {"type": "string", "regex": r"^[A-Z]{2}[0-9]{6}$"},
    },
    "rows": {"min": 1, "max": 100_000_000},
}


def generate(path: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2026)
    schema = None
    chunk = 500_000
    writer = None
    ids = rng.permutation(rows)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        cols: dict[str, pa.Array] = {}
        for j, name in enumerate(FLOATS):
            values = rng.normal(j * 10, 5 + j, n)
            values[rng.random(n) < 0.05] = np.nan
            cols[name] = pa.array(values, from_pandas=True)
        for j, name in enumerate(INTS):
            cols[name] = pa.array(rng.integers(0, 10 ** (j + 2), n))
        for name in CATS:
            cols[name] = pa.array(np.array(CATEGORY_VALUES)[rng.integers(0, len(CATEGORY_VALUES), n)])
        cols["id0"] = pa.array(np.char.add("ID-", np.char.zfill(ids[start : start + n].astype(str), 9)))
        letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
        prefix = np.char.add(letters[rng.integers(0, 26, n)], letters[rng.integers(0, 26, n)])
        cols["id1"] = pa.array(np.char.add(prefix, np.char.zfill(rng.integers(0, 10**6, n).astype(str), 6)))
        cols["id2"] = pa.array(np.char.add("acct-", rng.integers(0, rows // 3 + 1, n).astype(str)))
        table = pa.table(cols)
        if writer is None:
            schema = table.schema
            writer = pq.ParquetWriter(path, schema)
        writer.write_table(table, row_group_size=250_000)
    assert writer is not None
    writer.close()


# --- the jobs: each runs in its own process and prints {"seconds", "peak_mb", ...} --------------------------

PRELUDE = """
import json, resource, sys, time
path = sys.argv[1]
contract = json.loads(sys.argv[2])
t0 = time.perf_counter()
"""
EPILOGUE = """
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  **extra}))
"""

JOBS = {
    "bridgehead_profile": """
from bridgehead.data.readers import open_source
from bridgehead.data.profile import profile_batches
src = open_source(path)
profile = profile_batches(src.schema, src.batches())
state = json.dumps(profile.to_state())
extra = {"rows": profile.row_count, "profile_kb": len(state) / 1024}
""",
    "bridgehead_validate": """
from bridgehead.data.contracts import Contract
from bridgehead.data.local import validate_location
report = validate_location(path, Contract.model_validate(contract))
extra = {"rows": report.row_count, "passed": report.passed, "expectations": len(report.expectations),
         "failed": [e.id for e in report.failed]}
""",
    "whylogs_profile": """
import pandas as pd
import whylogs as why
df = pd.read_parquet(path)
view = why.log(pandas=df).view()
extra = {"rows": int(len(df)), "profile_kb": len(view.serialize()) / 1024}
""",
    "ydata_profile": """
import pandas as pd
from ydata_profiling import ProfileReport
df = pd.read_parquet(path)
description = ProfileReport(df, minimal=True, progress_bar=False).get_description()
extra = {"rows": int(len(df))}
""",
    "gx_validate": """
import pandas as pd
import great_expectations as gx
import great_expectations.expectations as gxe
df = pd.read_parquet(path)
context = gx.get_context(mode="ephemeral")
batch = (context.data_sources.add_pandas("bench").add_dataframe_asset("file")
         .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df}))
suite = context.suites.add(gx.ExpectationSuite(name="contract"))
for name, rule in contract["columns"].items():
    if "max_null_share" in rule:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=1 - rule["max_null_share"]))
    if rule.get("nullable") is False:
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name))
    if "min" in rule or "max" in rule:
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=rule.get("min"),
                                                                max_value=rule.get("max")))
    if "allowed_values" in rule:
        suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column=name, value_set=rule["allowed_values"]))
    if "regex" in rule:
        suite.add_expectation(gxe.ExpectColumnValuesToMatchRegex(column=name, regex=rule["regex"]))
    if rule.get("unique"):
        suite.add_expectation(gxe.ExpectColumnValuesToBeUnique(column=name))
suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=contract["rows"]["min"],
                                                         max_value=contract["rows"]["max"]))
result = batch.validate(suite)
extra = {"rows": int(len(df)), "passed": bool(result.success), "expectations": len(suite.expectations),
         "failed": [r.expectation_config.type for r in result.results if not r.success]}
""",
}


def run_job(python: Path, job: str, path: Path) -> dict[str, float]:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(JOBS[job]) + textwrap.dedent(EPILOGUE)
    env = {**os.environ, "WHYLOGS_NO_ANALYTICS": "True", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    env.pop("PYTHONPATH", None)
    print(f"  {job} …", file=sys.stderr, flush=True)
    done = subprocess.run(
        [str(python), "-c", code, str(path), json.dumps(CONTRACT)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{job} failed:\n{done.stderr[-4000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {job}: {result['seconds']:.1f} s, peak {result['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    return result


def peers_python() -> Path:
    python = PEERS / "bin" / "python"
    if not python.exists():
        print(f"installing the peers into {PEERS} (first use only) …", file=sys.stderr, flush=True)
        venv.create(PEERS, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--quick", action="store_true", help="200,000 rows (overrides --rows)")
    parser.add_argument("--no-peers", action="store_true", help="Bridgehead only; nothing is installed")
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only Bridgehead's profile (implies --no-peers); for showing bounded memory on a large file",
    )
    args = parser.parse_args()
    args.no_peers = args.no_peers or args.profile_only
    rows = 200_000 if args.quick else args.rows
    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = args.data_dir / f"bench-{rows}.parquet"
    if not path.exists():
        print(f"generating {path} ({rows:,} rows x 20 columns) …", file=sys.stderr, flush=True)
        tmp = path.with_suffix(".tmp")
        generate(tmp, rows)
        tmp.rename(path)
    size_mb = path.stat().st_size / 1e6
    ours = Path(sys.executable)
    ours_jobs = ["bridgehead_profile"] if args.profile_only else ["bridgehead_profile", "bridgehead_validate"]
    results = {job: run_job(ours, job, path) for job in ours_jobs}
    for key in ours_jobs:
        if results[key]["rows"] != rows:
            raise SystemExit(f"{key} saw {results[key]['rows']} rows, the file has {rows}")
    if not args.profile_only and not results["bridgehead_validate"]["passed"]:
        raise SystemExit(
            f"the contract failed on the generated file: {results['bridgehead_validate']['failed']}"
        )
    figures: dict[str, object] = {
        "rows": rows,
        "columns": 20,
        "file_mb": round(size_mb, 1),
        "peers": not args.no_peers,
    }
    if not args.no_peers:
        python = peers_python()
        for job in ("whylogs_profile", "ydata_profile", "gx_validate"):
            results[job] = run_job(python, job, path)
        if not results["gx_validate"]["passed"]:
            raise SystemExit(f"Great Expectations failed the contract: {results['gx_validate']['failed']}")
        bh_p, bh_v = results["bridgehead_profile"], results["bridgehead_validate"]
        print(f"\n{'job':28} {'seconds':>9} {'peak MB':>9}")
        for job, r in results.items():
            print(f"{job:28} {r['seconds']:9.1f} {r['peak_mb']:9.0f}")
        lower_peer_peak = min(results["whylogs_profile"]["peak_mb"], results["ydata_profile"]["peak_mb"])
        figures.update(
            profile_speedup=round(results["whylogs_profile"]["seconds"] / bh_p["seconds"], 2),
            ydata_speedup=round(results["ydata_profile"]["seconds"] / bh_p["seconds"], 2),
            validate_speedup=round(results["gx_validate"]["seconds"] / bh_v["seconds"], 2),
            memory_ratio=round(bh_p["peak_mb"] / lower_peer_peak, 3),
        )
        met = {
            "profile_speedup": figures["profile_speedup"] >= TARGETS["profile_speedup"],  # type: ignore[operator]
            "validate_speedup": figures["validate_speedup"] >= TARGETS["validate_speedup"],  # type: ignore[operator]
            "memory_ratio": figures["memory_ratio"] <= TARGETS["memory_ratio"],  # type: ignore[operator]
        }
        for key, ok in met.items():
            print(f"  {key}: {figures[key]} (target {TARGETS[key]}) {'met' if ok else 'NOT met'}")
        figures["met"] = met
    figures["seconds"] = {job: round(r["seconds"], 2) for job, r in results.items()}
    figures["peak_mb"] = {job: round(r["peak_mb"]) for job, r in results.items()}
    figures["bridgehead_profile_kb"] = round(results["bridgehead_profile"]["profile_kb"], 1)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()

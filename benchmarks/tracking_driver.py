"""Client side of the tracking benchmark: one process, one target, the mlflow client over HTTP.

Run by ``tracking_vs_mlflow.py`` with a Python that has the ``mlflow`` client; prints one JSON object of
timings on stdout (progress goes to stderr). The same workload runs against every target:

1. ``runs`` runs, each with one ``log_batch`` of ``params`` params and ``points`` metric points in
   ``log_batch`` calls of ``batch`` points (timed: the log_batch calls);
2. ``singles`` single ``log_metric`` calls into one run (timed);
3. ``search_runs`` runs with two metrics and a few params in a separate experiment (setup, not timed), then
   ``search_runs`` with the filter ``metrics.acc > 0.5`` (timed; median of ``search_repeats``).

Unless ``verify`` is false (the floor stores nothing), the data is read back afterwards to check that the
target stored what was sent.

    python benchmarks/tracking_driver.py '{"uri": "http://127.0.0.1:5000", "label": "mlflow", ...}'
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

DEFAULTS: dict[str, Any] = {
    "runs": 20,
    "params": 50,
    "points": 5000,
    "batch": 1000,
    "keys": 10,
    "singles": 1000,
    "search_runs": 1000,
    "search_params": 5,
    "search_repeats": 5,
    "setup_threads": 4,
    "verify": True,
}
SEARCH_FILTER = "metrics.acc > 0.5"


class Progress:
    """A line on stderr every tenth of a phase: long phases (a minute of single calls against MLflow's
    default server) should visibly move."""

    def __init__(self, label: str, phase: str, total: int) -> None:
        self.prefix = f"  [{label}] {phase}"
        self.total = max(total, 1)
        self.step = max(self.total // 10, 1)
        self.start = time.perf_counter()

    def update(self, done: int) -> None:
        if done % self.step == 0 or done == self.total:
            elapsed = time.perf_counter() - self.start
            print(f"{self.prefix}: {done}/{self.total} ({elapsed:.1f} s)", file=sys.stderr, flush=True)


def acc_of(i: int, n: int) -> float:
    """Search runs' ``acc``: exactly the upper half of them is above 0.5."""
    return (i + 0.5) / n


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    cfg = {**DEFAULTS, **spec}
    label = cfg["label"]
    client = MlflowClient(tracking_uri=cfg["uri"])
    tag = uuid.uuid4().hex[:8]
    name = f"bench-{tag}"
    # As mlflow.set_experiment does it: look the name up, create it when absent.
    existing = client.get_experiment_by_name(name)
    eid = existing.experiment_id if existing else client.create_experiment(name)
    ts = int(time.time() * 1000)
    out: dict[str, Any] = {"label": label, "experiment": name}

    # --- 1. log_batch: params in one call, metric points in calls of `batch` --------------------------
    params = [Param(f"param_{j}", f"value-{j}") for j in range(cfg["params"])]
    keys = cfg["keys"]
    points = [Metric(f"m{i % keys}", float(i) * 0.5, ts + i, i // keys) for i in range(cfg["points"])]
    chunks = [points[b : b + cfg["batch"]] for b in range(0, len(points), cfg["batch"])]
    batch_s = 0.0
    batch_calls = 0
    batch_run_ids = []
    progress = Progress(label, "log_batch runs", cfg["runs"])
    for r in range(cfg["runs"]):
        run_id = client.create_run(eid, run_name=f"batch-{r}").info.run_id
        batch_run_ids.append(run_id)
        for kwargs in [{"params": params}] + [{"metrics": chunk} for chunk in chunks]:
            t0 = time.perf_counter()
            client.log_batch(run_id, **kwargs)
            batch_s += time.perf_counter() - t0
            batch_calls += 1
        client.set_terminated(run_id)
        progress.update(r + 1)
    out.update(log_batch_s=batch_s, log_batch_calls=batch_calls)

    # --- 2. single log_metric calls -------------------------------------------------------------------
    single_run = client.create_run(eid, run_name="single").info.run_id
    client.log_metric(single_run, "warmup", 0.0)  # the connection is open and the run exists
    progress = Progress(label, "single log_metric", cfg["singles"])
    t0 = time.perf_counter()
    for i in range(cfg["singles"]):
        client.log_metric(single_run, "loss", 1.0 / (i + 1), step=i)
        progress.update(i + 1)
    out.update(single_s=time.perf_counter() - t0, single_calls=cfg["singles"])
    client.set_terminated(single_run)

    # --- 3. search_runs over `search_runs` runs with a metric filter ----------------------------------
    n = cfg["search_runs"]
    search_eid = client.create_experiment(f"{name}-search")
    search_params = [Param(f"p{j}", str(j)) for j in range(cfg["search_params"])]
    progress = Progress(label, "search setup runs", n)
    done = 0

    def make(i: int) -> None:
        run_id = client.create_run(search_eid, start_time=ts + i, run_name=f"search-{i}").info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric("acc", acc_of(i, n), ts, 0), Metric("loss", 1.0 - acc_of(i, n), ts, 0)],
            params=search_params,
        )

    t0 = time.perf_counter()
    with ThreadPoolExecutor(cfg["setup_threads"]) as pool:
        for future in [pool.submit(make, i) for i in range(n)]:
            future.result()
            done += 1
            progress.update(done)
    out["search_setup_s"] = time.perf_counter() - t0

    expected_matches = sum(1 for i in range(n) if acc_of(i, n) > 0.5)
    times = []
    matches = 0
    for _ in range(cfg["search_repeats"]):
        t0 = time.perf_counter()
        found = client.search_runs([search_eid], SEARCH_FILTER, max_results=1000)
        times.append(time.perf_counter() - t0)
        matches = len(found)
    out.update(
        search_s=statistics.median(times),
        search_times_s=times,
        search_over_runs=n,
        search_matches=matches,
        search_expected_matches=expected_matches,
    )

    # What was logged, for the caller's row count check: batch points, the warm-up point, single calls and
    # two points per search run.
    out["metric_points"] = cfg["runs"] * cfg["points"] + 1 + cfg["singles"] + 2 * n
    out["params_logged"] = cfg["runs"] * cfg["params"] + n * cfg["search_params"]

    # --- read back (not timed) ------------------------------------------------------------------------
    problems = []
    if cfg["verify"]:
        if matches != expected_matches:
            problems.append(f"search_runs found {matches} runs, expected {expected_matches}")
        per_key = len([p for p in points if p.key == "m0"])
        history = client.get_metric_history(batch_run_ids[-1], "m0")
        if len(history) != per_key:
            problems.append(f"metric history of m0 has {len(history)} points, expected {per_key}")
        singles = client.get_metric_history(single_run, "loss")
        if len(singles) != cfg["singles"]:
            problems.append(f"single-call history has {len(singles)} points, expected {cfg['singles']}")
        stored = client.get_run(batch_run_ids[0]).data.params
        if len(stored) != cfg["params"]:
            problems.append(f"run has {len(stored)} params, expected {cfg['params']}")
    out["verified"] = bool(cfg["verify"]) and not problems
    out["problems"] = problems
    return out


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(run(spec)), flush=True)


if __name__ == "__main__":
    main()

"""Online inference: Bridgehead against ``mlflow models serve`` and against a minimal FastAPI app.

One invocation, one machine, one model, the same bounded load against every target:

* the model: scikit-learn ``GradientBoostingClassifier`` (100 trees, depth 3; 20 numeric features), trained
  once with a fixed seed by the repo venv's Python;
* ``mlflow``: ``mlflow models serve -m DIR --env-manager local`` from its own venv ``benchmarks/.venv-mlflow``
  (installed on first use, same pins as ``tracking_vs_mlflow.py``), with its defaults: one uvicorn worker,
  60 s request timeout. The model is saved with ``mlflow.sklearn.save_model`` with the same input example
  (so MLflow checks the same signature) and ``pyfunc_predict_fn="predict_proba"``, so that all three targets
  return class probabilities;
* ``naive``: ``serving_naive_app.py``, a minimal FastAPI app that calls ``predict_proba`` (uvicorn, 1 worker,
  its defaults): the floor of a Python model server;
* ``bridgehead``: ``bridgehead server`` (its defaults: 1 worker) on a fresh home, the model logged and
  registered through the SDK (skops format), deployed to the endpoint ``bench`` through the API and scored at
  ``POST /serve/bench/predict`` with a Bearer token, prediction log on (flushed every second). When the
  installed Bridgehead has the ``BRIDGEHEAD_PREDICTION_LOG_DISABLED`` setting, a second server on the same home
  runs with it, and the two alternate (each idle while the other is measured), for the log's cost. Two
  processes of the same code differ by a few per cent by themselves, so three such pairs are started one after
  the other (``--pairs``) and the log's cost is taken over all of them.

The load: ``--clients`` separate client processes (8; each one keep-alive ``http.client`` connection in a
tight loop over pre-encoded bodies) for ``--seconds`` (20) per target and request size (1 record, 100
records), after a warm-up. Every answer must be 200 with one prediction per record; any error fails the run.
A do-nothing server with canned answers first measures what the clients themselves can drive.

It prints a table, the ratios against the targets, and a last line of JSON with ``speedup_1row`` and
``speedup_100row`` (Bridgehead / MLflow throughput), ``p99_ratio`` (Bridgehead / MLflow single-record p99),
``vs_naive_1row`` (Bridgehead / naive throughput) and ``log_overhead`` (the larger of the two sizes' throughput
lost to the prediction log, a fraction), plus the raw figures.

    .venv/bin/python benchmarks/serving_vs_mlflow.py             # full run, ~5 minutes
    .venv/bin/python benchmarks/serving_vs_mlflow.py --quick     # seconds; no MLflow, nothing installed
    .venv/bin/python benchmarks/serving_vs_mlflow.py --quick --with-peer
"""

from __future__ import annotations

import argparse
import array
import asyncio
import concurrent.futures
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracking_vs_mlflow import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    MLFLOW_VERSION,
    bridgehead_executable,
    clean_env,
    free_port,
    peer_python,
    process,
    wait_until_up,
)

HERE = Path(__file__).resolve().parent
NAIVE_APP = HERE / "serving_naive_app.py"
STARTED = time.monotonic()

# `pairs`: log-on/log-off server pairs started one after the other; `segments`: turns each server of a pair
# takes per request size.
FULL = {
    "trees": 100,
    "clients": 8,
    "seconds": 20.0,
    "warmup": 1.0,
    "ceiling_seconds": 5.0,
    "pairs": 3,
    "segments": 2,
}
QUICK = {
    "trees": 20,
    "clients": 2,
    "seconds": 3.0,
    "warmup": 0.5,
    "ceiling_seconds": 0.5,
    "pairs": 1,
    "segments": 2,
}
DEPTH = 3
FEATURES = 20
SIZES = (1, 100)
BODIES_PER_SIZE = 16
ENDPOINT = "bench"
TARGETS = {
    "speedup_1row": (">=", 10.0, "single-record throughput >= 10x MLflow"),
    "speedup_100row": (">=", 5.0, "100-record throughput >= 5x MLflow"),
    "p99_ratio": ("<=", 0.2, "single-record p99 <= 0.2x MLflow's"),
    "vs_naive_1row": (">=", 1.0, "single-record throughput >= the minimal FastAPI app"),
    "log_overhead": ("<=", 0.1, "prediction log costs <= 10% of throughput"),
}


def log(message: str) -> None:
    """Progress, to stderr, with the seconds since the start."""
    print(f"[{time.monotonic() - STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


# --- the model and the bodies -------------------------------------------------------------------------

TRAIN = r"""
import json, sys
import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier

work, trees, depth, features, per_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
x, y = make_classification(n_samples=6000, n_features=features, n_informative=12, n_redundant=4,
                           random_state=2026)
columns = [f"f{i}" for i in range(features)]
frame = pd.DataFrame(x, columns=columns).round(6)
model = GradientBoostingClassifier(n_estimators=trees, max_depth=depth, random_state=2026)
model.fit(frame.iloc[:5000], y[:5000])
joblib.dump(model, f"{work}/model.joblib")
held_out = frame.iloc[5000:].to_numpy()
rng = np.random.default_rng(7)
batches = {str(n): [held_out[rng.choice(len(held_out), n, replace=False)].tolist() for _ in range(per_size)]
           for n in (1, 100)}
accuracy = float(model.score(frame.iloc[5000:], y[5000:]))
json.dump({"columns": columns, "batches": batches, "accuracy": accuracy, "sklearn": sklearn.__version__},
          open(f"{work}/data.json", "w"))
"""

SAVE_FOR_MLFLOW = r"""
import json, sys
import joblib
import mlflow.sklearn
import pandas as pd
import sklearn

work = sys.argv[1]
data = json.load(open(f"{work}/data.json"))
model = joblib.load(f"{work}/model.joblib")
example = pd.DataFrame(data["batches"]["100"][0][:3], columns=data["columns"])
# MLflow's default format, skops, refuses the trees' node storage unless it is named as trusted (ours is).
mlflow.sklearn.save_model(model, f"{work}/mlflow-model", input_example=example, pyfunc_predict_fn="predict_proba",
                          skops_trusted_types=["sklearn.tree._tree.Tree"])
print(json.dumps({"sklearn": sklearn.__version__}))
"""

REGISTER = r"""
import json, os, sys, time, urllib.request
import joblib
import pandas as pd
import skops.io  # imported while the server starts, not after
import bridgehead as bh

work = sys.argv[1]
data = json.load(open(f"{work}/data.json"))
model = joblib.load(f"{work}/model.joblib")
example = pd.DataFrame(data["batches"]["100"][0][:3], columns=data["columns"])
deadline = time.monotonic() + 120
while True:  # the server starts alongside this process
    try:
        with urllib.request.urlopen(os.environ["BRIDGEHEAD_URL"] + "/healthz", timeout=1) as answer:
            if answer.status == 200:
                break
    except OSError:
        if time.monotonic() > deadline:
            raise
    time.sleep(0.2)
bh.set_experiment("serving-benchmark")
with bh.start_run(run_name="gbc"):
    info = bh.log_model(model, "model", registered_model_name=sys.argv[2], input_example=example)
print(json.dumps({"version": info.registered_model_version, "flavor": info.flavor}))
"""


def start_python(
    python: str | Path, code: str, args: list[str], env: dict[str, str]
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(python), "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_python(proc: subprocess.Popen[str], what: str) -> dict[str, Any]:
    """Wait for a job started by ``start_python``; its last line of output, as JSON."""
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{stderr[-4000:]}")
    lines = stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def run_python(
    python: str | Path, code: str, args: list[str], env: dict[str, str], what: str
) -> dict[str, Any]:
    return finish_python(start_python(python, code, args, env), what)


def records_bodies(data: dict[str, Any], size: int) -> list[bytes]:
    columns = data["columns"]
    return [
        json.dumps({"records": [dict(zip(columns, row, strict=True)) for row in batch]}).encode()
        for batch in data["batches"][str(size)]
    ]


def mlflow_bodies(data: dict[str, Any], size: int) -> list[bytes]:
    return [
        json.dumps({"dataframe_split": {"columns": data["columns"], "data": batch}}).encode()
        for batch in data["batches"][str(size)]
    ]


# --- the load ------------------------------------------------------------------------------------------


@dataclass
class Load:
    """One target at one request size: where to send what, and what every answer must hold."""

    port: int
    path: str
    bodies: list[bytes]
    rows: int
    headers: dict[str, str] = field(default_factory=dict)


def _answer_rows(payload: bytes) -> int:
    try:
        predictions = json.loads(payload)["predictions"]
    except (ValueError, KeyError, TypeError):
        return -1
    return len(predictions) if isinstance(predictions, list) else -1


def _client(load: Load, number: int, start: float, measure_from: float, end: float) -> dict[str, Any]:
    """One client process: one keep-alive connection, requests back to back until ``end``.

    Latencies are kept for requests sent from ``measure_from`` on; every answer is checked."""
    headers = {"Content-Type": "application/json", **load.headers}
    latencies = array.array("d")
    sent = answered = errors = 0
    problems: list[str] = []
    conn: http.client.HTTPConnection | None = None
    i = number * 7  # the clients start at different bodies
    while time.monotonic() < start:
        time.sleep(0.001)
    while True:
        t0 = time.monotonic()
        if t0 >= end or errors >= 50:
            break
        body = load.bodies[i % len(load.bodies)]
        i += 1
        sent += 1
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", load.port, timeout=60)
                conn.connect()
                assert conn.sock is not None
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request("POST", load.path, body, headers)
            response = conn.getresponse()
            payload = response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            errors += 1
            if len(problems) < 5:
                problems.append(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn.close()
            conn = None
            continue
        t1 = time.monotonic()
        got = _answer_rows(payload) if status == 200 else -1
        if got != load.rows:
            errors += 1
            if len(problems) < 5:
                problems.append(f"HTTP {status}, {got} predictions for {load.rows} rows: {payload[:300]!r}")
            continue
        answered += 1
        if t0 >= measure_from:
            latencies.append(t1 - t0)
    if conn is not None:
        conn.close()
    return {
        "sent": sent,
        "answered": answered,
        "errors": errors,
        "problems": problems,
        "latencies": latencies.tobytes(),
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def prime(load: Load, what: str) -> float:
    """One request, answered, before the clocks start: a lazily loaded model is loaded. Its time in seconds."""
    conn = http.client.HTTPConnection("127.0.0.1", load.port, timeout=300)
    try:
        t0 = time.monotonic()
        conn.request("POST", load.path, load.bodies[0], {"Content-Type": "application/json", **load.headers})
        response = conn.getresponse()
        payload = response.read()
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    if response.status != 200 or _answer_rows(payload) != load.rows:
        raise SystemExit(f"{what}: the first request answered HTTP {response.status}: {payload[:500]!r}")
    return elapsed


def run_load(
    load: Load, clients: int, warmup: float, seconds: float, what: str, pid: int | None = None
) -> dict[str, Any]:
    """``clients`` processes against one target for ``warmup`` + ``seconds``: the raw figures of the measured
    part (latencies as a list), to be summarised by `summarise`, alone or with other segments of the same load.
    With the server's ``pid``, also its CPU time over the load after the priming request (which may load the
    model), in ``cpu_s``, for the ``answered - 1`` requests of that time."""
    first = prime(load, what)
    if first > 0.5:
        log(f"  [{what}] the first request took {first:.1f} s (loading the model)")
    cpu_before = None if pid is None else cpu_seconds(pid)
    context = multiprocessing.get_context("fork")
    start = time.monotonic() + 0.3  # after the processes are up
    measure_from = start + warmup
    end = measure_from + seconds
    with context.Pool(clients) as pool:
        parts = pool.starmap(_client, [(load, n, start, measure_from, end) for n in range(clients)])
    cpu_after = None if pid is None else cpu_seconds(pid)
    latencies: list[float] = []
    for part in parts:
        values = array.array("d")
        values.frombytes(part["latencies"])
        latencies.extend(values)
    return {
        "cpu_s": None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
        # The first, priming request counts as sent and answered (the prediction log has it too).
        "sent": 1 + sum(p["sent"] for p in parts),
        "answered": 1 + sum(p["answered"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "problems": [problem for p in parts for problem in p["problems"]],
        "latencies": latencies,
        "seconds": seconds,
    }


def summarise(segments: list[dict[str, Any]], rows: int, what: str) -> dict[str, Any]:
    """The figures of one target and request size over its measured segments: throughput over their summed
    time, percentiles over all their latencies."""
    latencies = sorted(x for segment in segments for x in segment["latencies"])
    seconds = sum(segment["seconds"] for segment in segments)
    errors = sum(segment["errors"] for segment in segments)
    result: dict[str, Any] = {
        "sent": sum(segment["sent"] for segment in segments),
        "answered": sum(segment["answered"] for segment in segments),
        "errors": errors,
        "measured_requests": len(latencies),
        "rows": rows,
    }
    if len(segments) > 1:
        result["segments"] = len(segments)
    if errors:
        problems = [problem for segment in segments for problem in segment["problems"]]
        log(f"  [{what}] {errors} errors; first: " + " | ".join(problems[:5]))
        result["problems"] = problems[:10]
    if not latencies:
        raise SystemExit(f"{what}: no request was answered during the measurement")
    rps = len(latencies) / seconds
    result.update(
        rps=round(rps, 1),
        rows_per_s=round(rps * rows, 1),
        p50_ms=round(_quantile(latencies, 0.50) * 1000, 2),
        p99_ms=round(_quantile(latencies, 0.99) * 1000, 2),
        mean_ms=round(sum(latencies) / len(latencies) * 1000, 2),
    )
    log(
        f"  [{what}] {result['rps']:.0f} req/s, {result['rows_per_s']:.0f} rows/s, "
        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, {errors} errors"
    )
    return result


def drive(load: Load, clients: int, warmup: float, seconds: float, what: str) -> dict[str, Any]:
    """``clients`` processes against one target for ``warmup`` + ``seconds``; the figures of the measured part."""
    return summarise([run_load(load, clients, warmup, seconds, what)], load.rows, what)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads) so far, from /proc; None where there is none."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the client's ceiling: a do-nothing server with canned answers -----------------------------------


class _Canned(asyncio.Protocol):
    """HTTP/1.1 keep-alive, one canned JSON answer per request; the path ``/rows/N`` says how many rows."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < head_end + 4 + length:
                return
            self.buffer = self.buffer[head_end + 4 + length :]
            path = head[0].split(" ")[1]
            rows = int(path.rsplit("/", 1)[1]) if path.startswith("/rows/") else 0
            body = json.dumps({"predictions": [[0.25, 0.75]] * rows}).encode()
            assert self.transport is not None
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\n\r\n"
                + body
            )


def serve_canned(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Canned, "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the targets ---------------------------------------------------------------------------------------


def http_post(url: str, body: dict[str, Any], token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - http://127.0.0.1 only
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


@contextlib.contextmanager
def canned_server(work: Path) -> Iterator[int]:
    port = free_port()
    logfile = work / "canned.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--canned-server", str(port)]
    with process(command, clean_env(), logfile, work) as proc:
        wait_until_up(proc, f"http://127.0.0.1:{port}/rows/0", "the canned server", 30, logfile)
        yield port


@contextlib.contextmanager
def naive_server(python: str, work: Path) -> Iterator[int]:
    port = free_port()
    env = clean_env()
    env["SERVING_BENCH_MODEL"] = str(work / "model.joblib")
    command = [
        python,
        "-m",
        "uvicorn",
        f"{NAIVE_APP.stem}:app",
        "--app-dir",
        str(NAIVE_APP.parent),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    logfile = work / "naive.log"
    with process(command, env, logfile, work) as proc:
        wait_until_up(proc, f"http://127.0.0.1:{port}/health", "the minimal FastAPI app", 60, logfile)
        yield port


@contextlib.contextmanager
def mlflow_serve(venv: Path, work: Path) -> Iterator[int]:
    venv = venv.resolve()
    port = free_port()
    env = clean_env()
    # `mlflow models serve` starts `uvicorn` from PATH: the peer venv's.
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    command = [
        str(venv / "bin" / "mlflow"),
        "models",
        "serve",
        "-m",
        str(work / "mlflow-model"),
        "--env-manager",
        "local",
        "-p",
        str(port),
        "--host",
        "127.0.0.1",
    ]
    logfile = work / "mlflow-serve.log"
    with process(command, env, logfile, work) as proc:
        wait_until_up(proc, f"http://127.0.0.1:{port}/ping", "mlflow models serve", 180, logfile)
        yield port


def bridgehead_env(home: Path, log_disabled: bool) -> dict[str, str]:
    env = clean_env()
    env.update(
        BRIDGEHEAD_HOME=str(home),
        BRIDGEHEAD_DATABASE_URL=f"sqlite:///{home / 'bridgehead.db'}",
        BRIDGEHEAD_ARTIFACT_ROOT=str(home / "artifacts"),
        BRIDGEHEAD_PREDICTION_LOG_FLUSH_SECONDS="1",
    )
    if log_disabled:
        env["BRIDGEHEAD_PREDICTION_LOG_DISABLED"] = "1"
    return env


def bridgehead_token(executable: str, home: Path) -> str:
    env = bridgehead_env(home, False)
    if not (home / "bridgehead.db").exists():
        subprocess.run(
            [executable, "admin", "create", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD],
            env=env,
            check=True,
            capture_output=True,
        )
    created = subprocess.run(
        [executable, "token", "create", "--email", ADMIN_EMAIL, "--name", "serving benchmark"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def bridgehead_server(
    executable: str, home: Path, log_disabled: bool, pair: int = 0
) -> Iterator[tuple[int, Any, int]]:
    """Start ``bridgehead server``; yields its port, a function that waits until it answers, and its pid."""
    port = free_port()
    logfile = home / f"server-{'log-off' if log_disabled else 'log-on'}-{pair}.log"
    command = [executable, "server", "--host", "127.0.0.1", "--port", str(port)]
    env = bridgehead_env(home, log_disabled)
    if log_disabled:
        env["BRIDGEHEAD_MIGRATE_ON_START"] = "false"  # the two start together; `admin create` migrated
    with process(command, env, logfile, home) as proc:

        def wait() -> None:
            wait_until_up(proc, f"http://127.0.0.1:{port}/healthz", "bridgehead server", 90, logfile)

        yield port, wait, proc.pid


def has_log_switch(python: str) -> bool:
    code = (
        "import sys; from bridgehead.settings import Settings; "
        "sys.exit(0 if 'prediction_log_disabled' in Settings.model_fields else 1)"
    )
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def logged_rows(home: Path) -> int:
    import pyarrow.parquet as pq

    root = home / "predictions" / f"endpoint={ENDPOINT}"
    return sum(pq.ParquetFile(path).metadata.num_rows for path in root.rglob("*.parquet"))


# --- report --------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def figure(results: dict[str, dict[int, dict[str, Any]]], target: str, size: int, key: str) -> float | None:
    value = results.get(target, {}).get(size, {}).get(key)
    return None if value is None else float(value)


def report(
    results: dict[str, dict[int, dict[str, Any]]],
    titles: dict[str, str],
    info: dict[str, Any],
    args: argparse.Namespace,
    sizes: dict[str, Any],
) -> dict[str, Any]:
    print()
    print(
        f"Serving benchmark ({'quick' if args.quick else 'full'}: {sizes['clients']} client processes x "
        f"{sizes['seconds']:g} s per target and request size, after {sizes['warmup']:g} s of warm-up)"
    )
    for key, value in info.items():
        print(f"  {key}: {value}")
    print()
    header = ["target"]
    for size in SIZES:
        label = "1 row" if size == 1 else f"{size} rows"
        header += [f"{label}: req/s", "rows/s", "p50 ms", "p99 ms"]
    rows = []
    for key, title in titles.items():
        if key not in results:
            continue
        row = [title]
        for size in SIZES:
            r = results[key].get(size)
            if r is None:
                row += ["-", "-", "-", "-"]
            else:
                row += [
                    f"{r['rps']:,.0f}",
                    f"{r['rows_per_s']:,.0f}",
                    f"{r['p50_ms']:.1f}",
                    f"{r['p99_ms']:.1f}",
                ]
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, ["-" * w for w in widths], *rows]:
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True))]
        print("  ".join(cells).rstrip())

    bh, off = "bridgehead", "bridgehead_log_off"
    overhead_by_size = {
        str(size): (
            None
            if figure(results, off, size, "rps") is None
            else 1 - figure(results, bh, size, "rps") / figure(results, off, size, "rps")  # type: ignore[operator]
        )
        for size in SIZES
    }
    measured = [v for v in overhead_by_size.values() if v is not None]
    summary: dict[str, Any] = {
        "speedup_1row": ratio(figure(results, bh, 1, "rps"), figure(results, "mlflow", 1, "rps")),
        "speedup_100row": ratio(figure(results, bh, 100, "rps"), figure(results, "mlflow", 100, "rps")),
        "p99_ratio": ratio(figure(results, bh, 1, "p99_ms"), figure(results, "mlflow", 1, "p99_ms")),
        "vs_naive_1row": ratio(figure(results, bh, 1, "rps"), figure(results, "naive", 1, "rps")),
        "log_overhead": max(measured) if measured else None,
    }
    print()
    print("Targets (Bridgehead with the prediction log on):")
    met: dict[str, bool] = {}
    for key, (op, goal, text) in TARGETS.items():
        value = summary[key]
        if value is None:
            state = "n/a (no switch)" if key == "log_overhead" else "not measured (no MLflow: --with-peer)"
            shown = "-"
        else:
            met[key] = value >= goal if op == ">=" else value <= goal
            state = "met" if met[key] else "NOT met"
            shown = f"{value:.1%}" if key == "log_overhead" else f"{value:.2f}x"
        print(f"  {text:<54} {shown:>8}  {state}")
    if summary["log_overhead"] is None:
        print("log_overhead: n/a (no switch)")
    else:
        parts = ", ".join(f"{s} row(s): {v:.1%}" for s, v in overhead_by_size.items() if v is not None)
        print(f"  (log overhead by request size: {parts}; the larger one is judged)")
    cpu_by_size = {
        str(size): (
            figure(results, bh, size, "cpu_ms_per_request"),
            figure(results, off, size, "cpu_ms_per_request"),
        )
        for size in SIZES
    }
    if all(on is not None and gone is not None for on, gone in cpu_by_size.values()):
        shown = ", ".join(
            f"{s} row(s): {on * 1000:.0f} / {gone * 1000:.0f} µs" for s, (on, gone) in cpu_by_size.items()
        )
        print(f"  (server CPU per request, log on / off: {shown})")
    for key, number in summary.items():
        summary[key] = None if number is None else round(number, 3)
    summary.update(
        mode="quick" if args.quick else "full",
        met=met,
        log_overhead_by_size={k: None if v is None else round(v, 3) for k, v in overhead_by_size.items()},
        # The log's cost in the server's CPU time per request (all threads), a fraction, by request size.
        log_cpu_overhead_by_size={
            k: None if on is None or gone is None else round(on / gone - 1, 3)
            for k, (on, gone) in cpu_by_size.items()
        },
        config={**sizes, "depth": DEPTH, "features": FEATURES, "request_rows": list(SIZES)},
        results={key: {str(size): r for size, r in per.items()} for key, per in results.items()},
        errors=sum(r["errors"] for per in results.values() for r in per.values()),
    )
    return summary


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# --- main ----------------------------------------------------------------------------------------------


def pause(seconds: float) -> None:
    """Between measurements: let the last one's background work (the prediction log's flush) finish."""
    time.sleep(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="20 trees, 2 clients x 3 s; no MLflow")
    parser.add_argument("--with-peer", action="store_true", help="with --quick: measure MLflow too")
    parser.add_argument("--no-peer", action="store_true", help="skip MLflow (nothing is installed)")
    parser.add_argument("--clients", type=int, help="client processes (default 8; quick 2)")
    parser.add_argument("--seconds", type=float, help="measured seconds per target and size (default 20)")
    parser.add_argument("--trees", type=int, help="trees in the model (default 100; quick 20)")
    parser.add_argument(
        "--pairs",
        type=int,
        help="log-on/log-off server pairs, started one after the other (default 3; quick 1)",
    )
    parser.add_argument(
        "--segments",
        type=int,
        help="turns each server of a pair takes per request size (default 2)",
    )
    parser.add_argument("--peer-venv", type=Path, default=HERE / ".venv-mlflow", help="venv of MLflow")
    parser.add_argument("--mlflow-version", default=MLFLOW_VERSION)
    parser.add_argument("--bridgehead", help="the bridgehead executable (default: next to this Python)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, homes)")
    parser.add_argument("--canned-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.canned_server is not None:
        serve_canned(args.canned_server)
        return
    sizes: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.clients is not None:
        sizes["clients"] = args.clients
    if args.seconds is not None:
        sizes["seconds"] = args.seconds
    if args.trees is not None:
        sizes["trees"] = args.trees
    for name in ("pairs", "segments"):
        value = getattr(args, name)
        if value is not None:
            if value < 1:
                parser.error(f"--{name} must be at least 1")
            sizes[name] = value
    with_peer = not args.no_peer and (args.with_peer or not args.quick)
    clients, warmup, seconds = sizes["clients"], sizes["warmup"], sizes["seconds"]
    settle = 0.1 if args.quick else 1.0

    work = Path(tempfile.mkdtemp(prefix="bridgehead-serving-bench-")).resolve()
    started = time.monotonic()
    results: dict[str, dict[int, dict[str, Any]]] = {}
    titles = {
        "ceiling": "client ceiling (canned answers)",
        "naive": "minimal FastAPI app (uvicorn, 1 worker)",
        "mlflow": f"MLflow {args.mlflow_version} models serve (1 worker)",
        "bridgehead": "Bridgehead, prediction log on",
        "bridgehead_log_off": "Bridgehead, prediction log off",
    }
    summary: dict[str, Any] = {}
    try:
        executable = bridgehead_executable(args.bridgehead)
        bh_python = str(Path(executable).parent / "python")
        peer_py = peer_python(args.peer_venv, args.mlflow_version) if with_peer else None
        info = machine_info()

        home = work / "bridgehead"
        home.mkdir()
        # Set-up in parallel: training the model, and Bridgehead's admin and token (two CLI start-ups).
        log(
            f"training GradientBoostingClassifier ({sizes['trees']} trees, depth {DEPTH}, {FEATURES} features); "
            "creating Bridgehead's admin and token"
        )
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            trained = pool.submit(
                run_python,
                bh_python,
                TRAIN,
                [str(work), str(sizes["trees"]), str(DEPTH), str(FEATURES), str(BODIES_PER_SIZE)],
                clean_env(),
                "training",
            )
            token_job = pool.submit(bridgehead_token, executable, home)
            switch_job = pool.submit(has_log_switch, bh_python)
            trained.result()
            token, switch = token_job.result(), switch_job.result()
        data = json.loads((work / "data.json").read_text())
        info["model"] = (
            f"GradientBoostingClassifier({sizes['trees']} trees, depth {DEPTH}), {FEATURES} float features, "
            f"held-out accuracy {data['accuracy']:.3f}, scikit-learn {data['sklearn']}"
        )
        records = {size: records_bodies(data, size) for size in SIZES}
        body_kb = {size: sum(map(len, records[size])) / len(records[size]) / 1024 for size in SIZES}
        info["request bodies"] = ", ".join(f"{size} row(s): {kb:.1f} KB" for size, kb in body_kb.items())

        # The client's own ceiling: the same processes against a server that does nothing.
        log("client ceiling: canned answers")
        with canned_server(work) as port:
            results["ceiling"] = {
                size: drive(
                    Load(port, f"/rows/{size}", records[size], size),
                    clients,
                    min(warmup, 0.3),
                    sizes["ceiling_seconds"],
                    f"ceiling {size}",
                )
                for size in SIZES
            }
        pause(settle)

        log("minimal FastAPI app")
        with naive_server(bh_python, work) as port:
            results["naive"] = {}
            for size in SIZES:
                load = Load(port, "/predict", records[size], size)
                results["naive"][size] = drive(load, clients, warmup, seconds, f"naive {size}")
                pause(settle)

        log(f"Bridgehead (home {home}; prediction-log switch {'present' if switch else 'absent'})")
        auth = {"Authorization": f"Bearer {token}"}
        # The log's cost is the difference between a log-on and a log-off server, and two processes of the
        # same code and settings differ too: on this machine by up to 5 % in throughput (checked with both
        # logs on; memory layout and hash seeds, which differ per process, are the likely reasons). So `pairs`
        # pairs are started one after the other and the figures are summed over them. Within a pair both
        # servers are up (an idle one costs nothing) and for each request size they take turns, in `segments`
        # slices each (on, off, off, on, ...), so that both meet the machine in the same states: one 20 s run
        # after the other moved the log-off figure by a third from run to run. Each server's CPU time per
        # answered request is read from /proc too.
        keys = ["bridgehead", "bridgehead_log_off"] if switch else ["bridgehead"]
        pairs = sizes["pairs"] if switch else 1
        segments = sizes["segments"] if switch else 1
        turns = pairs * segments
        parts: dict[str, dict[int, list[dict[str, Any]]]] = {
            key: {size: [] for size in SIZES} for key in keys
        }
        for pair in range(pairs):
            with contextlib.ExitStack() as stack:
                ports: dict[str, int] = {}
                pids: dict[str, int] = {}
                waits = []
                for key in keys:
                    port, wait, pid = stack.enter_context(
                        bridgehead_server(executable, home, key == "bridgehead_log_off", pair)
                    )
                    ports[key], pids[key] = port, pid
                    waits.append(wait)
                url = f"http://127.0.0.1:{ports['bridgehead']}"
                if pair == 0:
                    # The SDK process that logs the model starts with the servers (start-up, not measured).
                    env = clean_env()
                    env.update(BRIDGEHEAD_URL=url, BRIDGEHEAD_TOKEN=token)
                    register = start_python(bh_python, REGISTER, [str(work), ENDPOINT], env)
                    stack.callback(register.kill)
                for wait in waits:
                    wait()
                if pair == 0:
                    registered = finish_python(register, "logging the model through the SDK")
                    info["bridgehead model"] = (
                        f"flavor {registered['flavor']}, version {registered['version']}"
                    )
                    status, body = http_post(
                        f"{url}/api/v1/endpoints/{ENDPOINT}/deploy",
                        {
                            "model": ENDPOINT,
                            "version": str(registered["version"]),
                            "environment": "production",
                            "reason": "serving benchmark",
                        },
                        token,
                    )
                    if status != 200:
                        raise SystemExit(f"deploy answered HTTP {status}: {body[:500]!r}")
                for size in SIZES:
                    for segment in range(segments):
                        turn = pair * segments + segment
                        for key in keys if turn % 2 == 0 else keys[::-1]:
                            load = Load(ports[key], f"/serve/{ENDPOINT}/predict", records[size], size, auth)
                            parts[key][size].append(
                                run_load(
                                    load,
                                    clients,
                                    # A fresh pair's first slice warms up fully, as the first pair's.
                                    warmup if segment == 0 and size == SIZES[0] else min(warmup, 0.5),
                                    seconds / turns,
                                    f"{key} {size} ({turn + 1}/{turns})",
                                    pids[key],
                                )
                            )
                            # The log-on server writes its last second of predictions after the load stops.
                            pause(settle + (1.2 if key == "bridgehead" else 0))
            # The pair is stopped (cleanly: the log-on server flushed its buffer).
        for key in keys:
            results[key] = {}
            for size in SIZES:
                results[key][size] = summarise(parts[key][size], size, f"{key} {size}")
                spent = [part["cpu_s"] for part in parts[key][size]]
                if None not in spent:
                    # Priming requests excluded (the first one of a server loads the model).
                    requests = sum(part["answered"] - 1 for part in parts[key][size])
                    results[key][size]["cpu_ms_per_request"] = round(sum(spent) * 1000 / requests, 4)
        answered_on = sum(r["answered"] for r in results["bridgehead"].values())
        answered_rows = sum(r["answered"] * r["rows"] for r in results["bridgehead"].values())
        logged = logged_rows(home)
        summary["bridgehead_answered_requests"] = answered_on
        summary["bridgehead_answered_rows"] = answered_rows
        summary["bridgehead_logged_rows"] = logged
        log(f"Bridgehead (log on) answered {answered_rows:,} rows; its prediction log holds {logged:,}")

        if peer_py is not None:
            log(f"MLflow {args.mlflow_version}: saving the model and starting `mlflow models serve`")
            saved = run_python(
                peer_py, SAVE_FOR_MLFLOW, [str(work)], clean_env(), "mlflow.sklearn.save_model"
            )
            info["mlflow"] = (
                f"{args.mlflow_version} ({args.peer_venv}), scikit-learn {saved['sklearn']}, "
                "`mlflow models serve --env-manager local` defaults: 1 uvicorn worker, 60 s timeout"
            )
            mlflow_bodies_by_size = {size: mlflow_bodies(data, size) for size in SIZES}
            with mlflow_serve(args.peer_venv, work) as port:
                results["mlflow"] = {}
                for size in SIZES:
                    load = Load(port, "/invocations", mlflow_bodies_by_size[size], size)
                    results["mlflow"][size] = drive(load, clients, warmup, seconds, f"mlflow {size}")
                    pause(settle)

        errors = {
            f"{key} {size}": r["errors"]
            for key, per in results.items()
            for size, r in per.items()
            if r["errors"]
        }
        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        info["wall time"] = f"{time.monotonic() - started:.0f} s"
        summary = {**report(results, titles, info, args, sizes), **summary}
        complete = summary["bridgehead_logged_rows"] == summary["bridgehead_answered_rows"]
        print(
            f"Bridgehead (log on) answered {summary['bridgehead_answered_requests']:,} requests "
            f"({summary['bridgehead_answered_rows']:,} rows); its prediction log holds "
            f"{summary['bridgehead_logged_rows']:,} rows{'' if complete else ' (NOT the same)'}."
        )
        if errors:
            print(json.dumps(summary), flush=True)
            raise SystemExit(f"requests failed: {errors} (see the problems in the JSON above)")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

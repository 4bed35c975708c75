"""Bridgehead's MLflow-compatible tracking API against a real ``mlflow server``, and against the floor.

One invocation, one machine, the same client workload (``tracking_driver.py``, the mlflow client over HTTP,
one fresh client process per target and repetition) against three targets (the floor and Bridgehead in
alternation, both up, then MLflow alone):

* ``mlflow``: a real ``mlflow server`` (SQLite backend, its defaults otherwise, i.e. several uvicorn
  workers), installed on first use into its own venv ``benchmarks/.venv-mlflow``;
* ``bridgehead``: ``bridgehead server`` with a fresh SQLite home, an admin and an API token
  (``MLFLOW_TRACKING_TOKEN``);
* ``floor``: ``tracking_floor.py``, a do-nothing server with canned answers: the client's own speed.

Workload (full size): 20 runs x 50 params x 5,000 metric points via log_batch of 1,000; 1,000 single
log_metric calls; search_runs over 1,000 runs with a metric filter. ``--quick`` shrinks it to seconds.

It prints a table, then one JSON line with ``log_batch_speedup``, ``single_call_speedup``,
``search_speedup`` (MLflow time / Bridgehead time) and ``floor_ratio`` (the larger of Bridgehead's two
logging times divided by the floor's). With ``--no-peer`` the real MLflow server is skipped (nothing is
downloaded) and the speedups are null.

    .venv/bin/python benchmarks/tracking_vs_mlflow.py              # full run, ~5-10 minutes
    .venv/bin/python benchmarks/tracking_vs_mlflow.py --quick --no-peer
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DRIVER = HERE / "tracking_driver.py"
FLOOR = HERE / "tracking_floor.py"
MLFLOW_VERSION = "3.17.2"

FULL = {"runs": 20, "params": 50, "points": 5000, "batch": 1000, "singles": 1000, "search_runs": 1000}
QUICK = {"runs": 2, "params": 5, "points": 200, "batch": 100, "singles": 20, "search_runs": 20}
TARGETS = {"log_batch_speedup": 4.0, "single_call_speedup": 5.0, "search_speedup": 1.0, "floor_ratio": 1.5}
FIGURES = ("log_batch", "single", "search")

ADMIN_EMAIL = "bench@example.com"
ADMIN_PASSWORD = "benchmark-password-123"  # noqa: S105 - a throwaway admin in a throwaway home


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - http://127.0.0.1 only
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_until_up(proc: subprocess.Popen[bytes], url: str, what: str, timeout: float, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-3000:] if logfile.exists() else ""
            raise SystemExit(f"{what} exited with {proc.returncode} while starting; log tail:\n{tail}")
        with contextlib.suppress(OSError):
            if http_get(url, timeout=1.0)[0] == 200:
                return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} did not answer {url} within {timeout:.0f} s (log: {logfile})")
        time.sleep(0.25)


@contextlib.contextmanager
def process(
    command: list[str], env: dict[str, str], logfile: Path, cwd: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server in its own process group; on exit, stop that group (its workers too) and only it."""
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # Workers that outlived the parent (uvicorn, huey consumers) are in the same group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def clean_env() -> dict[str, str]:
    """The environment without tracking and Bridgehead settings inherited from the caller's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGEHEAD_", "MLFLOW_"))}
    # Usage telemetry would add network calls that have nothing to do with the workload.
    env.update(MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="true")
    return env


# --- targets -------------------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    title: str
    url: str = ""
    token: str | None = None
    verify: bool = True
    results: list[dict[str, Any]] = field(default_factory=list)
    stored_metric_rows: int | None = None

    def median(self, figure: str) -> float:
        return statistics.median(r[f"{figure}_s"] for r in self.results)

    @property
    def expected_metric_rows(self) -> int:
        return sum(r["metric_points"] for r in self.results)


@contextlib.contextmanager
def floor_server(work: Path, sizes: dict[str, int], search_params: int) -> Iterator[str]:
    port = free_port()
    matches = sum(1 for i in range(sizes["search_runs"]) if (i + 0.5) / sizes["search_runs"] > 0.5)
    command = [
        sys.executable,
        str(FLOOR),
        "--port",
        str(port),
        "--search-runs",
        str(matches),
        "--search-params",
        str(search_params),
    ]
    logfile = work / "floor.log"
    with process(command, clean_env(), logfile, work) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(proc, f"{url}/health", "the floor server", 30, logfile)
        yield url


def bridgehead_executable(given: str | None) -> str:
    candidates = (
        [given]
        if given
        else [str(Path(sys.executable).parent / "bridgehead"), str(REPO / ".venv/bin/bridgehead")]
    )
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    raise SystemExit(f"bridgehead executable not found (tried {', '.join(c for c in candidates if c)})")


@contextlib.contextmanager
def bridgehead_server(executable: str, home: Path) -> Iterator[tuple[str, str, Path]]:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    db_path = home / "bridgehead.db"
    env = clean_env()
    env.update(
        BRIDGEHEAD_HOME=str(home),
        BRIDGEHEAD_DATABASE_URL=f"sqlite:///{db_path}",
        BRIDGEHEAD_ARTIFACT_ROOT=str(home / "artifacts"),
    )
    if not db_path.exists():
        subprocess.run(
            [executable, "admin", "create", "--email", ADMIN_EMAIL, "--password", ADMIN_PASSWORD],
            env=env,
            check=True,
            capture_output=True,
        )
    created = subprocess.run(
        [executable, "token", "create", "--email", ADMIN_EMAIL, "--name", "tracking benchmark"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    token = created.stdout.strip().splitlines()[-1]
    port = free_port()
    logfile = home / "server.log"
    command = [executable, "server", "--host", "127.0.0.1", "--port", str(port)]
    with process(command, env, logfile, home) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(proc, f"{url}/healthz", "bridgehead server", 60, logfile)
        status, body = http_get(
            f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=bench-probe",
            headers={"Authorization": f"Bearer {token}"},
        )
        # 200, or MLflow's own "not found" (JSON with error_code): anything else means no MLflow API.
        if not (status == 200 or (status == 404 and b"RESOURCE_DOES_NOT_EXIST" in body)):
            raise SystemExit(
                "Bridgehead's MLflow API does not answer GET /api/2.0/mlflow/experiments/get-by-name "
                f"(HTTP {status}: {body[:200]!r}); is src/bridgehead/tracking/mlflow_api.py in place?"
            )
        yield url, token, db_path


def peer_python(venv: Path, version: str) -> Path:
    """The peer's interpreter, creating its venv and installing mlflow on first use."""
    python = venv.resolve() / "bin" / "python"
    check = [str(python), "-c", f"import mlflow, sys; sys.exit(mlflow.__version__ != {version!r})"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    log(f"installing mlflow=={version} into {venv} (first use; a few minutes)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"mlflow=={version}"], check=True)
    if subprocess.run(check, capture_output=True).returncode != 0:
        raise SystemExit(f"mlflow {version} is not importable from {python} after installing it")
    return python


@contextlib.contextmanager
def mlflow_server(venv: Path, work: Path, workers: int | None) -> Iterator[tuple[str, Path]]:
    venv, work = venv.resolve(), work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    db_path = work / "mlflow.db"
    port = free_port()
    command = [
        str(venv / "bin" / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{db_path}",
        "--artifacts-destination",
        str(work / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if workers is not None:
        command += ["--workers", str(workers)]
    env = clean_env()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    logfile = work / "server.log"
    with process(command, env, logfile, work) as proc:
        url = f"http://127.0.0.1:{port}"
        # A fresh database is migrated at start; with several workers that takes ~40-55 s on 2 vCPUs.
        wait_until_up(proc, f"{url}/health", "mlflow server", 300, logfile)
        yield url, db_path


def count_metric_rows(db_path: Path) -> int:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        return int(conn.execute("SELECT count(*) FROM metrics").fetchone()[0])


# --- driving -------------------------------------------------------------------------------------------


def client_python(given: str | None, peer: Path | None) -> str:
    """The interpreter that runs the mlflow client: the same one against every target."""
    candidates = [given] if given else [sys.executable, str(peer) if peer else None]
    for candidate in candidates:
        if (
            candidate
            and subprocess.run([candidate, "-c", "import mlflow"], capture_output=True).returncode == 0
        ):
            return candidate
    raise SystemExit("no Python with the mlflow client found; pass --client-python")


def drive(python: str, target: Target, spec: dict[str, Any]) -> dict[str, Any]:
    env = clean_env()
    env.update(
        MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="true",
        # A failing server should fail the benchmark in seconds, not after minutes of backoff.
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
    )
    if target.token:
        env["MLFLOW_TRACKING_TOKEN"] = target.token
    full_spec = {**spec, "uri": target.url, "label": target.key, "verify": target.verify}
    done = subprocess.run(
        [python, str(DRIVER), json.dumps(full_spec)], env=env, stdout=subprocess.PIPE, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"the client workload against {target.title} failed (exit {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["problems"]:
        raise SystemExit(f"{target.title} did not store what was logged: {'; '.join(result['problems'])}")
    log(
        f"  [{target.key}] log_batch {result['log_batch_s']:.2f} s, single {result['single_s']:.2f} s, "
        f"search {result['search_s'] * 1000:.0f} ms"
    )
    return result


def run_target(python: str, target: Target, spec: dict[str, Any], repeat: int) -> None:
    for i in range(repeat):
        log(f"{target.title}: workload {i + 1}/{repeat}")
        target.results.append(drive(python, target, spec))


# --- report --------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _paired_ratio(bh: Target, floor: Target, figure: str) -> float:
    """The median over repetitions of Bridgehead's time divided by the floor's in the same repetition."""
    key = f"{figure}_s"
    return statistics.median(b[key] / f[key] for b, f in zip(bh.results, floor.results, strict=True))


def fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def fmt_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def report(
    targets: dict[str, Target], sizes: dict[str, int], args: argparse.Namespace, info: dict[str, Any]
) -> dict[str, Any]:
    bh, floor, peer = targets["bridgehead"], targets["floor"], targets.get("mlflow")
    one = targets.get("mlflow_w1")
    names = {
        "log_batch": f"log_batch: {sizes['runs']} runs x ({sizes['params']} params + "
        f"{sizes['points']:,} points / {sizes['batch']:,})",
        "single": f"{sizes['singles']:,} x log_metric",
        "search": f"search_runs over {sizes['search_runs']:,} runs (median of 5)",
    }
    columns = [t for t in (peer, one, bh, floor) if t is not None]
    header = ["figure", *[t.title for t in columns], "MLflow/Bridgehead", "Bridgehead/floor (paired)"]
    rows = []
    for fig in FIGURES:
        values = {t.key: t.median(fig) for t in columns}
        rows.append(
            [
                names[fig],
                *[fmt_s(values[t.key]) for t in columns],
                fmt_x(ratio(values.get("mlflow"), values["bridgehead"])),
                fmt_x(_paired_ratio(bh, floor, fig)),
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    print(f"Tracking benchmark ({'quick' if args.quick else 'full'} size, median of {args.repeat})")
    for key, value in info.items():
        print(f"  {key}: {value}")
    print()
    for r in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())

    floor_ratio = max(_paired_ratio(bh, floor, "log_batch"), _paired_ratio(bh, floor, "single"))
    summary: dict[str, Any] = {
        "log_batch_speedup": ratio(peer.median("log_batch"), bh.median("log_batch")) if peer else None,
        "single_call_speedup": ratio(peer.median("single"), bh.median("single")) if peer else None,
        "search_speedup": ratio(peer.median("search"), bh.median("search")) if peer else None,
        "floor_ratio": floor_ratio,
    }
    met = {}
    for key, goal in TARGETS.items():
        value = summary[key]
        if value is None:
            continue
        met[key] = value <= goal if key == "floor_ratio" else (value > goal if goal == 1.0 else value >= goal)
    print()
    print("Targets (against MLflow's default `mlflow server`):")
    wording = {
        "log_batch_speedup": "log_batch >= 4x faster",
        "single_call_speedup": "single calls >= 5x faster",
        "search_speedup": "search_runs faster",
        "floor_ratio": "both logging figures within 1.5x of the floor",
    }
    for key, text in wording.items():
        value = summary[key]
        state = "not measured (--no-peer)" if value is None else ("met" if met[key] else "NOT met")
        print(f"  {text:<48} {fmt_x(value):>9}  {state}")
    print(
        f"Bridgehead stored {bh.stored_metric_rows} metric rows; the client logged {bh.expected_metric_rows}."
    )
    for key, number in summary.items():
        summary[key] = None if number is None else round(number, 3)
    summary.update(
        mode="quick" if args.quick else "full",
        repeat=args.repeat,
        sizes=sizes,
        seconds={t.key: {fig: round(t.median(fig), 4) for fig in FIGURES} for t in columns},
        met=met,
        bridgehead_metric_rows=bh.stored_metric_rows,
        expected_metric_rows=bh.expected_metric_rows,
        mlflow_metric_rows=peer.stored_metric_rows if peer else None,
    )
    return summary


def machine_info(client: str) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = subprocess.run(
        [client, "-c", "import mlflow; print(mlflow.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "mlflow client": f"{version} ({client})",
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for tests")
    parser.add_argument("--no-peer", action="store_true", help="skip the real mlflow server (no download)")
    parser.add_argument("--repeat", type=int, default=1, help="workloads per target; figures are medians")
    parser.add_argument(
        "--also-single-worker",
        action="store_true",
        help="also measure `mlflow server --workers 1` (for reference; the targets use the default)",
    )
    parser.add_argument("--peer-venv", type=Path, default=HERE / ".venv-mlflow", help="venv of the peer")
    parser.add_argument("--mlflow-version", default=MLFLOW_VERSION)
    parser.add_argument("--client-python", help="Python with the mlflow client (default: this one)")
    parser.add_argument("--bridgehead", help="the bridgehead executable (default: next to this Python)")
    parser.add_argument(
        "--bridgehead-home", type=Path, help="Bridgehead's home (default: a temporary directory); kept"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    sizes = QUICK if args.quick else FULL
    spec: dict[str, Any] = {**sizes, "search_params": 5, "search_repeats": 5}
    if args.quick:
        spec["setup_threads"] = 2
    work = Path(tempfile.mkdtemp(prefix="bridgehead-tracking-bench-"))
    started = time.monotonic()
    try:
        peer_py = None if args.no_peer else peer_python(args.peer_venv, args.mlflow_version)
        python = client_python(args.client_python, peer_py)
        info = machine_info(python)
        executable = bridgehead_executable(args.bridgehead)
        targets: dict[str, Target] = {
            "floor": Target("floor", "floor", verify=False),
            "bridgehead": Target("bridgehead", "Bridgehead"),
        }

        # The floor and Bridgehead run in alternation (floor, Bridgehead, floor, ...) with both servers up (an
        # idle server takes no CPU), so that each pair of repetitions meets the machine in the same state: on
        # a shared machine, speed drifts by tens of percent over minutes. floor_ratio is the median of the
        # pairs' ratios.
        home = args.bridgehead_home or work / "bridgehead"
        log(f"floor: do-nothing server; Bridgehead: `bridgehead server` (home {home})")
        with (
            floor_server(work, sizes, spec["search_params"]) as floor_url,
            bridgehead_server(executable, home) as (url, token, db_path),
        ):
            targets["floor"].url = floor_url
            targets["bridgehead"].url, targets["bridgehead"].token = url, token
            for i in range(args.repeat):
                for key in ("floor", "bridgehead"):
                    log(f"{targets[key].title}: workload {i + 1}/{args.repeat}")
                    targets[key].results.append(drive(python, targets[key], spec))
        targets["bridgehead"].stored_metric_rows = count_metric_rows(db_path)

        if peer_py is not None:
            peers = [("mlflow", f"MLflow {args.mlflow_version}", None)]
            if args.also_single_worker:
                peers.append(("mlflow_w1", "MLflow --workers 1", 1))
            for key, title, workers in peers:
                target = targets[key] = Target(key, title)
                log(f"{title}: starting `mlflow server` (SQLite; start-up takes up to a minute)")
                with mlflow_server(args.peer_venv, work / key, workers) as (url, db_path):
                    target.url = url
                    run_target(python, target, spec, args.repeat)
                target.stored_metric_rows = count_metric_rows(db_path)

        info["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        info["wall time"] = f"{time.monotonic() - started:.0f} s"
        summary = report(targets, sizes, args, info)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()

"""The floor for the tracking benchmark: a do-nothing MLflow REST server.

Every call the benchmark workload makes is answered with a canned, valid response, and nothing is stored, so
the time the mlflow client spends against this server is the client's own cost (building the request, HTTP
over loopback, parsing the answer). No real server can be faster from the same client.

Threaded stdlib server, HTTP/1.1 keep-alive, Nagle off, each response sent in one write. Search answers a
fixed page shaped like the runs the workload creates (``--search-runs`` of them), so that the client parses
as much as it would from a real server.

    python benchmarks/tracking_floor.py --port 5099 --search-runs 500 --search-params 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/api/2.0/mlflow/"
RUN_ID = "0" * 32
NOW = int(time.time() * 1000)


def _run_info(run_id: str = RUN_ID, status: str = "RUNNING") -> dict[str, object]:
    return {
        "run_id": run_id,
        "run_uuid": run_id,
        "run_name": "floor-run",
        "experiment_id": "1",
        "user_id": "bench",
        "status": status,
        "start_time": NOW,
        "artifact_uri": f"mlflow-artifacts:/1/{run_id}/artifacts",
        "lifecycle_stage": "active",
    }


def _search_page(runs: int, params: int) -> dict[str, object]:
    """A page shaped like what a real server returns for the workload's search runs."""
    page = []
    for i in range(runs):
        run_id = f"{i:032x}"
        page.append(
            {
                "info": {**_run_info(run_id, "FINISHED"), "end_time": NOW + 1},
                "data": {
                    "metrics": [
                        {"key": "acc", "value": 0.5 + i / (2 * max(runs, 1)), "timestamp": NOW, "step": 0},
                        {"key": "loss", "value": 1.0 - i / max(runs, 1), "timestamp": NOW, "step": 0},
                    ],
                    "params": [{"key": f"p{j}", "value": str(j)} for j in range(params)],
                    "tags": [
                        {"key": "mlflow.runName", "value": f"search-{i}"},
                        {"key": "mlflow.user", "value": "bench"},
                    ],
                },
                "inputs": {},
            }
        )
    return {"runs": page}


def _experiment() -> dict[str, object]:
    return {
        "experiment": {
            "experiment_id": "1",
            "name": "floor",
            "artifact_location": "mlflow-artifacts:/1",
            "lifecycle_stage": "active",
            "creation_time": NOW,
            "last_update_time": NOW,
            "tags": [],
        }
    }


def responses(search_runs: int, search_params: int) -> dict[tuple[str, str], tuple[int, bytes]]:
    """(method, route) -> (status, body): every answer is encoded once, before the first request."""
    canned: dict[tuple[str, str], tuple[int, object]] = {
        # The benchmark creates a fresh experiment each time: by-name answers "does not exist".
        ("GET", "experiments/get-by-name"): (
            404,
            {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Experiment not found"},
        ),
        ("POST", "experiments/create"): (200, {"experiment_id": "1"}),
        ("GET", "experiments/get"): (200, _experiment()),
        ("POST", "runs/create"): (200, {"run": {"info": _run_info(), "data": {}}}),
        ("GET", "runs/get"): (200, {"run": {"info": _run_info(), "data": {}}}),
        ("POST", "runs/update"): (200, {"run_info": _run_info(status="FINISHED")}),
        ("POST", "runs/log-batch"): (200, {}),
        ("POST", "runs/log-metric"): (200, {}),
        ("POST", "runs/log-parameter"): (200, {}),
        ("POST", "runs/set-tag"): (200, {}),
        ("POST", "runs/search"): (200, _search_page(search_runs, search_params)),
    }
    return {key: (status, json.dumps(body).encode()) for key, (status, body) in canned.items()}


_REASONS = {200: "OK", 404: "Not Found"}


class FloorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the mlflow client's requests.Session expects
    disable_nagle_algorithm = True  # TCP_NODELAY on the accepted socket
    canned: dict[tuple[str, str], tuple[int, bytes]] = {}
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)  # read and ignore: nothing is stored
        path = self.path.split("?", 1)[0]
        if path == "/health":
            status, body = 200, b"OK"
        elif path == "/__counts":
            with self.lock:
                status, body = 200, json.dumps(dict(self.counts)).encode()
        else:
            route = path[len(PREFIX) :] if path.startswith(PREFIX) else path
            status, body = self.canned.get(
                (self.command, route),
                (404, b'{"error_code": "ENDPOINT_NOT_FOUND", "message": "not in the floor server"}'),
            )
            with self.lock:
                self.counts[f"{self.command} {route}"] += 1
        # Status line, headers and body in one write: no small trailing segment for Nagle to hold back.
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.wfile.write(head.encode("latin-1") + body)

    do_GET = _answer
    do_POST = _answer
    do_PATCH = _answer
    do_DELETE = _answer
    do_PUT = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class FloorServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()


def serve(host: str, port: int, search_runs: int, search_params: int) -> None:
    FloorHandler.canned = responses(search_runs, search_params)
    with FloorServer((host, port), FloorHandler) as server:
        server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--search-runs", type=int, default=500, help="runs in the canned search page")
    parser.add_argument("--search-params", type=int, default=5, help="params per run in the search page")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.host, args.port, args.search_runs, args.search_params)


if __name__ == "__main__":
    main()

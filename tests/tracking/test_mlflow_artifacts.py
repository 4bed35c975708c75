"""The MLflow artifact proxy on a live server (raw requests over a socket, so that no client library tidies
the paths): traversal in every form MLflow itself was caught by (CVE-2023-1177, CVE-2023-6909,
CVE-2024-1560), links planted in the store, and the upload size limit."""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bridgehead.settings import Settings
from tests.tracking.mlflow_live import MAX_ARTIFACT_BYTES, MAX_BODY_BYTES, Live, live_server

pytestmark = pytest.mark.slow

PROXY = "/api/2.0/mlflow-artifacts/artifacts"
SECRET = b"outside-the-artifact-root"


@pytest.fixture
def live(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    with live_server(settings, tmp_path, monkeypatch) as server:
        yield server


def raw(live: Live, method: str, target: str, body: bytes | None = None) -> tuple[int, bytes]:
    """Send the request target exactly as written."""
    parts = urlsplit(live.url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    try:
        headers = {"Authorization": f"Bearer {live.scientist.token}"}
        conn.request(method, target, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def files_outside(root: Path, artifact_root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if artifact_root not in p.parents and p != artifact_root}


def test_traversal_is_refused_in_every_form(live: Live, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_bytes(SECRET)
    run = live.post(live.scientist, "runs/create", {"experiment_id": "0"}).json()["run"]["info"]
    eid, rid = run["experiment_id"], run["run_id"]
    base = f"{eid}/{rid}/artifacts"
    assert raw(live, "PUT", f"{PROXY}/{base}/ok.txt", b"fine")[0] == 200
    assert raw(live, "GET", f"{PROXY}/{base}/ok.txt") == (200, b"fine")

    # Links planted inside the store (by anyone with file access) that point outside it.
    run_dir = live.artifact_root / base
    os.symlink(tmp_path / "secret.txt", run_dir / "link.txt")
    os.symlink(tmp_path, run_dir / "linkdir")
    before = files_outside(tmp_path, live.artifact_root)

    attacks = [
        f"{base}/../../../../secret.txt",
        f"{base}/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        f"{base}/%2E%2E%2F%2E%2E%2F%2E%2E%2F%2E%2E%2Fsecret.txt",
        f"{base}/..%2f..%2f..%2f..%2fsecret.txt",
        f"{base}/%252e%252e/%252e%252e/%252e%252e/%252e%252e/secret.txt",
        f"{base}/..\\..\\..\\..\\secret.txt",
        f"{base}/..%5c..%5c..%5c..%5csecret.txt",
        f"{eid}/./{rid}/artifacts/ok.txt",
        f"/{tmp_path}/secret.txt",
        f"%2F{str(tmp_path).lstrip('/')}/secret.txt",
        f"{base}/file:%2F%2F{tmp_path}/secret.txt",
        f"{base}/link.txt",
        f"{base}/linkdir/secret.txt",
        f"{base}/ok.txt%00.png",
    ]
    for path in attacks:
        for method in ("GET", "PUT", "DELETE"):
            status, body = raw(live, method, f"{PROXY}/{path}", b"planted" if method == "PUT" else None)
            assert status in (400, 404), (method, path, status, body)
            assert SECRET not in body, (method, path)
            if body.startswith(b"{"):
                assert b'"error_code"' in body, (method, path, body)
        status, body = raw(live, "GET", f"{PROXY}?path={path}")
        assert status in (400, 404) or body == b"{}", (path, status, body)
        assert b"secret.txt" not in body, (path, body)

    assert files_outside(tmp_path, live.artifact_root) == before  # nothing written outside the root
    assert (tmp_path / "secret.txt").read_bytes() == SECRET  # nor changed or deleted
    assert raw(live, "GET", f"{PROXY}/{base}/ok.txt") == (200, b"fine")
    listed = httpx.get(f"{live.url}{PROXY}", params={"path": base}, headers=live.scientist.headers).json()
    assert {f["path"] for f in listed["files"]} >= {"ok.txt"}
    # The root listing would name every unit's experiments: it answers nothing.
    assert raw(live, "GET", f"{PROXY}?path=") == (200, b"{}")
    # A downloaded file is an attachment, never rendered by a browser.
    (live.artifact_root / base / "page.html").write_text("<script>alert(1)</script>")
    page = httpx.get(f"{live.url}{PROXY}/{base}/page.html", headers=live.scientist.headers)
    assert page.headers["content-type"] == "application/octet-stream"
    assert page.headers["content-disposition"].startswith("attachment")


@pytest.mark.parametrize("engine_name", ["sqlite"])  # the limits do not touch the database
def test_uploads_above_the_limit_are_refused(live: Live, tmp_path: Path) -> None:
    import mlflow
    from mlflow.exceptions import MlflowException

    run = live.post(live.scientist, "runs/create", {"experiment_id": "0"}).json()["run"]["info"]
    base = f"{run['experiment_id']}/{run['run_id']}/artifacts"
    url = f"{live.url}{PROXY}/{base}"
    headers = live.scientist.headers

    # Artifacts are not held to the JSON body limit: only to BRIDGEHEAD_MAX_ARTIFACT_BYTES.
    assert MAX_BODY_BYTES < MAX_ARTIFACT_BYTES
    exact = httpx.put(f"{url}/exact.bin", content=b"x" * MAX_ARTIFACT_BYTES, headers=headers, timeout=30)
    assert exact.status_code == 200, exact.text
    assert (live.artifact_root / base / "exact.bin").stat().st_size == MAX_ARTIFACT_BYTES

    announced = httpx.put(
        f"{url}/big.bin", content=b"x" * (MAX_ARTIFACT_BYTES + 1), headers=headers, timeout=30
    )
    assert announced.status_code == 413
    assert announced.json()["error_code"] == "RESOURCE_EXHAUSTED"
    assert "BRIDGEHEAD_MAX_ARTIFACT_BYTES" in announced.json()["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(MAX_ARTIFACT_BYTES // 65536 + 2):
            yield b"y" * 65536

    streamed = httpx.put(f"{url}/streamed.bin", content=chunks(), headers=headers, timeout=30)
    assert streamed.status_code == 413
    assert streamed.json()["error_code"] == "RESOURCE_EXHAUSTED"
    assert not (live.artifact_root / base / "big.bin").exists()
    assert not (live.artifact_root / base / "streamed.bin").exists()  # the partial file is removed

    big = tmp_path / "big.bin"
    big.write_bytes(b"z" * (MAX_ARTIFACT_BYTES + 1))
    with pytest.raises((MlflowException, OSError)) as refused:
        mlflow.MlflowClient().log_artifact(run["run_id"], str(big))
    assert "413" in str(refused.value) or "BRIDGEHEAD_MAX_ARTIFACT_BYTES" in str(refused.value)

    # JSON bodies keep the (smaller) request limit, answered in MLflow's form.
    metrics = [{"key": f"m{i}", "value": 1.0, "timestamp": 1, "step": 0} for i in range(1000)]
    body = {"run_id": run["run_id"], "metrics": metrics, "padding": "p" * MAX_BODY_BYTES}
    too_big = httpx.post(f"{live.url}/api/2.0/mlflow/runs/log-batch", json=body, headers=headers, timeout=30)
    assert too_big.status_code == 413
    assert too_big.json()["error_code"] == "RESOURCE_EXHAUSTED"

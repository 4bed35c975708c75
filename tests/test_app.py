"""The HTTP contract: one error body, never a 500 for bad input, request ids everywhere, body limits."""

from __future__ import annotations

import io
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridgehead.app import create_app
from bridgehead.logs import configure_logging
from bridgehead.settings import Settings
from tests.conftest import Member


def assert_error(response, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert isinstance(body["error"]["details"], dict)
    assert "Traceback" not in response.text


def test_malformed_json_is_400(client: TestClient, admin: Member) -> None:
    r = client.post(
        "/api/v1/business-units",
        content=b'{"slug": "x", ',
        headers={**admin.headers, "Content-Type": "application/json"},
    )
    assert_error(r, 400, "invalid_json")


@pytest.mark.parametrize(
    "body",
    [
        {"slug": 5, "name": "x"},
        {"slug": "UPPER CASE", "name": "x"},
        {"slug": "ok", "name": ""},
        {"slug": "ok", "name": "x", "unexpected": True},
        [],
        "text",
    ],
)
def test_wrong_types_and_shapes_are_422_naming_the_field(
    client: TestClient, admin: Member, body: object
) -> None:
    r = client.post("/api/v1/business-units", json=body, headers=admin.headers)
    assert_error(r, 422, "validation_failed")
    assert r.json()["error"]["details"]["errors"]


def test_unknown_ids_and_routes_are_404(client: TestClient, admin: Member) -> None:
    assert_error(client.get("/api/v1/business-units/nope", headers=admin.headers), 404, "not_found")
    assert_error(client.get("/api/v1/people/nope", headers=admin.headers), 404, "not_found")
    assert_error(
        client.patch("/api/v1/people/nope", headers=admin.headers, json={"name": "x"}), 404, "not_found"
    )
    assert_error(client.delete("/api/v1/tokens/nope", headers=admin.headers), 404, "not_found")
    assert_error(client.get("/api/v1/no-such-thing", headers=admin.headers), 404, "not_found")
    assert_error(
        client.put("/api/v1/business-units", headers=admin.headers, json={}), 405, "method_not_allowed"
    )


def test_oversize_bodies_are_413(settings: Settings) -> None:
    small = settings.model_copy(update={"max_body_bytes": 2048})
    app = create_app(small)
    with TestClient(app, base_url="https://testserver") as c:
        big = json.dumps({"slug": "x", "name": "y" * 5000})
        assert_error(
            c.post("/api/v1/business-units", content=big, headers={"Content-Type": "application/json"}),
            413,
            "payload_too_large",
        )

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(10):
                yield b"x" * 1000

        # Streamed without Content-Length: counted as it arrives.
        r = c.post("/api/v1/business-units", content=chunks(), headers={"Content-Type": "application/json"})
        assert_error(r, 413, "payload_too_large")


def test_request_id_is_echoed_and_on_every_log_line(client: TestClient, admin: Member) -> None:
    buffer = io.StringIO()
    configure_logging("INFO", stream=buffer)
    r = client.post(
        "/api/v1/business-units",
        json={"slug": "logs", "name": "Logs"},
        headers={**admin.headers, "X-Request-ID": "trace-12345678"},
    )
    assert r.headers["x-request-id"] == "trace-12345678"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    ours = [line for line in lines if line.get("path") == "/api/v1/business-units"]
    assert ours and all(line["request_id"] == "trace-12345678" for line in ours)
    assert all(line["request_id"] for line in lines if line["logger"].startswith("bridgehead"))
    # A hostile request id is replaced, not logged verbatim.
    r = client.get("/healthz", headers={"X-Request-ID": "bad id\nwith newline"})
    assert r.headers["x-request-id"] != "bad id\nwith newline"


def test_unexpected_errors_answer_500_with_the_error_body_and_no_traceback(settings: Settings) -> None:
    app: FastAPI = create_app(settings)

    @app.get("/api/v1/_boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    buffer = io.StringIO()
    with TestClient(app, base_url="https://testserver", raise_server_exceptions=False) as c:
        configure_logging("INFO", stream=buffer)
        r = c.get("/api/v1/_boom")
    assert_error(r, 500, "internal_error")
    assert "secret internals" not in r.text
    assert r.headers["x-request-id"] in r.json()["error"]["message"]
    logged = [json.loads(x) for x in buffer.getvalue().splitlines() if '"unhandled error"' in x]
    assert logged and logged[0]["request_id"] == r.headers["x-request-id"]
    assert "secret internals" in logged[0]["exception"]


def test_security_headers_on_console_and_api(client: TestClient) -> None:
    r = client.get("/login")
    assert r.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


def test_openapi_is_served_and_docs_need_no_cdn(client: TestClient) -> None:
    spec = client.get("/api/openapi.json").json()
    assert "/api/v1/business-units" in spec["paths"]
    docs = client.get("/api/docs").text
    assert "cdn" not in docs.lower() and "/api/docs/static/swagger-ui-bundle.js" in docs
    assert client.get("/api/docs/static/swagger-ui-bundle.js").status_code == 200


def test_readyz_reports_an_unreachable_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        home=tmp_path,
        database_url="postgresql+psycopg://nobody@127.0.0.1:1/none",
        secret_key="k",
        migrate_on_start=False,
    )
    app = create_app(settings)
    with TestClient(app, base_url="https://testserver") as c:
        assert c.get("/healthz").status_code == 200
        assert_error(c.get("/readyz"), 503, "store_unavailable")


def test_an_error_in_front_of_fastapi_also_answers_the_error_body(
    client: TestClient, admin: Member, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fault in a fast lane (which runs before FastAPI's own error handling) is caught by the request
    context: the caller gets the error body with the request id, in the MLflow shape on MLflow paths."""
    from bridgehead.tracking.mlflow_lane import LoggingLane

    def broken(*_args: object, **_kwargs: object) -> bool:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(LoggingLane, "_write", broken)
    r = client.post(
        "/api/2.0/mlflow/runs/log-metric", json={"run_id": "x", "key": "k", "value": 1}, headers=admin.headers
    )
    assert r.status_code == 500 and r.json()["error_code"] == "INTERNAL_ERROR"
    assert "secret internals" not in r.text and r.headers["x-request-id"] in r.json()["message"]


def test_a_lifespan_entered_twice_runs_one_job_worker_and_stops_it(settings: Settings) -> None:
    # Two clients on one app (as test tools do): one in-process job worker, and none left running after.
    import threading

    app = create_app(settings)
    with TestClient(app):
        first = app.state.job_worker
        assert first is not None and first.is_alive()
        with TestClient(app):
            assert app.state.job_worker is first
    workers = [t for t in threading.enumerate() if t.name == "bridgehead-job-worker"]
    assert not workers, f"{len(workers)} job worker threads left running"

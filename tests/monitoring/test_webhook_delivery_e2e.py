"""Webhook delivery end to end, with retries: a real HTTP receiver on 127.0.0.1 that fails on purpose (503, a
connection closed without an answer, a hang past the webhook timeout) before it accepts, or never accepts.

The platform is driven as a user drives it: the channel and the monitor are created through the API, traffic is
scored through the serving route, the monitor runs as a job and opens the incident, and the in-process job
worker delivers the notification (``monitoring.notify``), retried by the job queue. Nothing is mocked; retry
delays and the webhook timeout are made small through the server's settings
(``BRIDGEHEAD_JOBS_RETRY_BACKOFF_SECONDS``, ``BRIDGEHEAD_JOBS_POLL_SECONDS``,
``BRIDGEHEAD_WEBHOOK_TIMEOUT_SECONDS``). What docs/monitoring.md promises and is checked here:

- a failure that may pass (5xx, a lost connection, a timeout) is retried with exponential backoff, up to 8
  attempts (``BRIDGEHEAD_NOTIFICATION_MAX_ATTEMPTS``), then the delivery (the job) fails; a permanent one (404)
  fails it at once;
- the job id is the delivery id, the same ``Bridgehead-Delivery`` on every attempt; each attempt is signed anew
  (``Bridgehead-Signature: t=...,v1=HMAC-SHA256(secret, f"{t}." + body)``) with the secret shown once when the
  channel was created; the body is compact JSON with sorted keys naming the incident;
- what is recorded about a delivery is its job (``GET /api/v1/jobs/{id}``): status, attempts, max_attempts,
  the last error while a retry waits, the result once delivered;
- a delivery that is given up leaves the incident open, and the monitor goes on running.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridgehead import __version__
from bridgehead.settings import Settings
from tests.conftest import Member
from tests.monitoring.test_monitors import (  # noqa: F401  (fixtures)
    Deployed,
    applicants,
    deployed,
    engineer,
    run_and_wait,
    score,
)
from tests.tracking.pagetools import table
from tests.tracking.test_pages import sign_in

BACKOFF_S = 0.03  # first retry delay; then 0.06, 0.12, ... (8 attempts: 0.03 x 127 = 3.8 s of waiting)
TIMEOUT_S = 2.0  # webhook timeout: long enough to look at the job while an attempt hangs, short for the suite
MAX_ATTEMPTS = 8  # docs/monitoring.md: "up to BRIDGEHEAD_NOTIFICATION_MAX_ATTEMPTS attempts, 8 by default"
NOTIFY_KIND = "monitoring.notify"


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """The suite's settings (tests/conftest.py), with fast retries and a short webhook timeout; a test
    parametrized indirectly on ``settings`` sets ``notification_max_attempts`` to its parameter."""
    attempts = getattr(request, "param", None)
    return settings.model_copy(
        update={
            "jobs_retry_backoff_seconds": BACKOFF_S,
            "jobs_poll_seconds": 0.05,  # retries are found by polling (only new jobs wake the worker)
            "webhook_timeout_seconds": TIMEOUT_S,
        }
        | ({} if attempts is None else {"notification_max_attempts": attempts})
    )


# --- a receiver that fails on purpose ---------------------------------------------------------------------


@dataclass
class Attempt:
    arrived: float  # time.monotonic() when the request was read
    wall: float  # time.time() then, to judge the signature's timestamp
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    action: str  # what the receiver did with it


@dataclass
class FlakyReceiver:
    """Answers the n-th request as ``script[n]`` says (the last entry repeats): ``"200"``, ``"503"``,
    ``"404"``, ``"503 retry-after"`` (503 with ``Retry-After: 5``), ``"close"`` (reads the request and closes
    the connection without answering) or ``"hang"`` (reads it and answers nothing until the test ends)."""

    script: list[str]
    url: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)

    def snapshot(self) -> list[Attempt]:
        with self.lock:
            return list(self.attempts)

    @property
    def accepted(self) -> list[Attempt]:
        return [a for a in self.snapshot() if a.action == "200"]


@pytest.fixture
def make_receiver() -> Iterator[Callable[[list[str]], FlakyReceiver]]:
    started: list[tuple[FlakyReceiver, ThreadingHTTPServer, threading.Thread]] = []

    def make(script: list[str]) -> FlakyReceiver:
        state = FlakyReceiver(script)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with state.lock:
                    action = state.script[min(len(state.attempts), len(state.script) - 1)]
                    state.attempts.append(
                        Attempt(
                            time.monotonic(),
                            time.time(),
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            action,
                        )
                    )
                if action in ("close", "hang"):
                    if action == "hang":
                        state.release.wait(30)
                    self.close_connection = True
                    return
                status = int(action.split()[0])
                self.send_response(status)
                if action == "503 retry-after":
                    self.send_header("Retry-After", "5")
                answer = b"receiver's own page, never to be echoed"
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/bridgehead"
        started.append((state, server, thread))
        return state

    try:
        yield make
    finally:
        for state, server, thread in started:
            state.release.set()
            server.shutdown()
            server.server_close()
            thread.join(5)


# --- helpers ----------------------------------------------------------------------------------------------


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def create_webhook(client: TestClient, member: Member, url: str) -> tuple[str, str]:
    made = client.post(
        "/api/v1/notification-channels",
        json={"name": "ops hook", "kind": "webhook", "target": url, "min_severity": "warning"},
        headers=member.headers,
    )
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["kind"] == "webhook" and body["target"] == url and body["secret"]
    return body["id"], body["secret"]


def open_incident(client: TestClient, member: Member) -> tuple[str, str]:
    """Drifted traffic, a monitor with the standard rules, one run: the incident it opens, and the monitor."""
    score(client, member, applicants(600, 5, shift=True))
    made = client.post(
        "/api/v1/endpoints/credit/monitors",
        json={"name": "hourly", "window_minutes": 60},
        headers=member.headers,
    )
    assert made.status_code == 201, made.text
    result = run_and_wait(client, member, made.json()["id"])
    assert result["status"] == "succeeded" and result["breaches"] >= 1 and result["incident_id"], result
    return result["incident_id"], made.json()["id"]


def notify_jobs(client: TestClient, member: Member) -> list[dict[str, Any]]:
    page = client.get("/api/v1/jobs", params={"kind": NOTIFY_KIND}, headers=member.headers)
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def get_job(client: TestClient, member: Member, job_id: str) -> dict[str, Any]:
    answer = client.get(f"/api/v1/jobs/{job_id}", headers=member.headers)
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def finished_job(client: TestClient, member: Member, job_id: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job = get_job(client, member, job_id)
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job: dict[str, Any] = wait_for(f"delivery job {job_id} to finish", finished)
    return job


def signature_ok(secret: str, header: str, body: bytes, received_at: float) -> bool:
    """The check from docs/monitoring.md, with the standard library only."""
    fields = [item.strip().partition("=") for item in header.split(",")]
    stamps = [value for key, _, value in fields if key == "t"]
    signatures = [value for key, _, value in fields if key == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or len(signatures) != 1:
        return False
    if abs(received_at - int(stamps[0])) > 300:
        return False
    expected = hmac.new(secret.encode(), stamps[0].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signatures[0])


def check_attempts_are_one_notification(
    attempts: list[Attempt], secret: str, job_id: str, incident_id: str, monitor_id: str
) -> dict[str, Any]:
    """Every attempt carries the same delivery (the job id), body and headers, and is genuinely signed."""
    assert {a.path for a in attempts} == {"/hooks/bridgehead"}
    assert {a.headers["bridgehead-delivery"] for a in attempts} == {job_id}
    assert {a.headers["bridgehead-event"] for a in attempts} == {"incident.opened"}
    assert {a.headers["content-type"] for a in attempts} == {"application/json"}
    assert {a.headers["user-agent"] for a in attempts} == {f"bridgehead/{__version__}"}
    assert len({a.body for a in attempts}) == 1, "a retry must deliver the same notification"
    stamps = []
    for a in attempts:
        header = a.headers["bridgehead-signature"]
        assert signature_ok(secret, header, a.body, a.wall), header
        assert not signature_ok(secret + "x", header, a.body, a.wall)
        assert not signature_ok(secret, header, a.body + b" ", a.wall)
        stamp = int(header.split(",")[0].removeprefix("t="))
        assert a.wall - 5 <= stamp <= a.wall + 1  # signed when sent, each attempt anew
        stamps.append(stamp)
    assert stamps == sorted(stamps)

    body = attempts[0].body
    payload: dict[str, Any] = json.loads(body)
    # Compact, keys sorted, UTF-8: the bytes are exactly what a re-serialization of the same object gives.
    assert body == json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()
    assert payload["event"] == "incident.opened"
    assert payload["endpoint"] == "credit"
    assert payload["monitor"]["id"] == monitor_id and payload["monitor"]["name"] == "hourly"
    incident = payload["incident"]
    assert incident["id"] == incident_id
    assert incident["url"].endswith(f"/incidents/{incident_id}")
    assert incident["status"] == "open" and incident["severity"] in ("warning", "critical")
    assert incident["title"].startswith("credit / hourly: ") and incident["breaches"]
    return payload


def gaps(attempts: list[Attempt]) -> list[float]:
    return [b.arrived - a.arrived for a, b in zip(attempts, attempts[1:], strict=False)]


# --- the tests --------------------------------------------------------------------------------------------


def test_a_flaky_receiver_gets_the_incident_once_after_retries(
    client: TestClient,
    deployed: Deployed,  # noqa: F811
    make_receiver: Callable[[list[str]], FlakyReceiver],
) -> None:
    eng = deployed.engineer
    receiver = make_receiver(["503", "close", "hang", "200"])
    _, secret = create_webhook(client, eng, receiver.url)
    incident_id, monitor_id = open_incident(client, eng)

    (job,) = notify_jobs(client, eng)  # one channel, one delivery
    job_id = job["id"]
    assert job["params"]["incident_id"] == incident_id and job["max_attempts"] == MAX_ATTEMPTS

    # While the third attempt hangs, the API shows it running and why the previous one failed.
    wait_for("the third attempt", lambda: len(receiver.snapshot()) >= 3)
    during = get_job(client, eng, job_id)
    assert during["status"] == "running" and during["attempts"] == 3, during
    assert "retried while attempts remain" in during["error"] and "RemoteProtocolError" in during["error"], (
        during["error"]
    )

    done = finished_job(client, eng, job_id)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 4 and done["max_attempts"] == MAX_ATTEMPTS
    assert done["error"] == "" and done["finished_at"]
    assert (
        done["result"]["ok"] is True and done["result"]["status"] == 200 and done["result"]["error"] is None
    )

    time.sleep(10 * BACKOFF_S + 0.3)  # well past any further retry: none comes
    attempts = receiver.snapshot()
    assert [a.action for a in attempts] == ["503", "close", "hang", "200"]
    assert len(receiver.accepted) == 1  # delivered exactly once; the failed attempts share its delivery id
    check_attempts_are_one_notification(attempts, secret, job_id, incident_id, monitor_id)

    # Exponential backoff between attempts (lower bounds: a retry is never claimed before its run_after), and
    # the hung attempt was cut at BRIDGEHEAD_WEBHOOK_TIMEOUT_SECONDS, not at the default 10 s.
    first, second, third = gaps(attempts)
    assert first >= BACKOFF_S and second >= 2 * BACKOFF_S
    assert TIMEOUT_S + 4 * BACKOFF_S <= third < TIMEOUT_S + 6

    incident = client.get(f"/api/v1/incidents/{incident_id}", headers=eng.headers).json()
    assert incident["status"] == "open"
    (delivery,) = incident["notifications"]  # the incident says where its notification went, and how
    assert delivery["job_id"] == job_id and delivery["event"] == "incident.opened"
    assert delivery["channel"] == "ops hook" and delivery["kind"] == "webhook"
    assert (delivery["status"], delivery["attempts"], delivery["max_attempts"]) == (
        "succeeded",
        4,
        MAX_ATTEMPTS,
    )
    assert delivery["error"] == "" and delivery["finished"]


@pytest.mark.parametrize(
    ("settings", "expected"),
    [(None, MAX_ATTEMPTS), (3, 3)],
    indirect=["settings"],
    ids=["default", "configured"],
)
def test_a_receiver_that_keeps_failing_is_given_up_after_its_attempts_and_the_incident_stays_open(
    client: TestClient,
    settings: Settings,
    expected: int,
    deployed: Deployed,  # noqa: F811
    make_receiver: Callable[[list[str]], FlakyReceiver],
) -> None:
    """Given up after 8 attempts by default, or after BRIDGEHEAD_NOTIFICATION_MAX_ATTEMPTS (here 3)."""
    assert settings.notification_max_attempts == expected
    eng = deployed.engineer
    receiver = make_receiver(["503"])
    _, secret = create_webhook(client, eng, receiver.url)
    incident_id, monitor_id = open_incident(client, eng)
    (job,) = notify_jobs(client, eng)

    done = finished_job(client, eng, job["id"])
    assert done["status"] == "failed", done
    assert done["attempts"] == expected == done["max_attempts"]
    assert "HTTP 503" in done["error"] and done["result"] is None and done["finished_at"]
    assert "never to be echoed" not in done["error"]  # the receiver's body is never read or shown

    time.sleep(20 * BACKOFF_S + 0.3)  # many polls later (the job is failed for good): no further attempt
    attempts = receiver.snapshot()
    assert len(attempts) == expected and len(receiver.accepted) == 0
    check_attempts_are_one_notification(attempts, secret, job["id"], incident_id, monitor_id)
    for k, gap in enumerate(gaps(attempts)):
        assert gap >= BACKOFF_S * 2**k, (k, gaps(attempts))  # doubling from the base

    # Nothing else broke: the incident is open, and the monitor runs on and adds to it. The same severity is
    # not an escalation, so no second notification is queued.
    incident = client.get(f"/api/v1/incidents/{incident_id}", headers=eng.headers).json()
    assert incident["status"] == "open" and incident["occurrences"] == 1
    again = run_and_wait(client, eng, monitor_id)
    assert again["status"] == "succeeded" and again["incident_id"] == incident_id
    incident = client.get(f"/api/v1/incidents/{incident_id}", headers=eng.headers).json()
    assert incident["status"] == "open" and incident["occurrences"] == 2
    assert [j["id"] for j in notify_jobs(client, eng)] == [job["id"]]
    assert len(receiver.snapshot()) == expected
    (delivery,) = incident["notifications"]
    assert (delivery["status"], delivery["attempts"]) == ("failed", expected) and "HTTP 503" in delivery[
        "error"
    ]
    listed = client.get("/api/v1/incidents", headers=eng.headers).json()
    assert [i["notifications"] for i in listed if i["id"] == incident_id] == [
        None
    ]  # only on the incident itself
    sign_in(client, eng)
    _, rows = table(client.get(f"/incidents/{incident_id}").text, "notifications")
    assert len(rows) == 1 and rows[0][0] == "ops hook webhook" and rows[0][1] == "incident.opened"
    assert rows[0][2] == "given up" and rows[0][3] == f"{expected} / {expected}" and "HTTP 503" in rows[0][4]


def test_a_refusing_receiver_fails_the_delivery_at_once(
    client: TestClient,
    deployed: Deployed,  # noqa: F811
    make_receiver: Callable[[list[str]], FlakyReceiver],
) -> None:
    eng = deployed.engineer
    receiver = make_receiver(["404"])
    _, secret = create_webhook(client, eng, receiver.url)
    incident_id, monitor_id = open_incident(client, eng)
    (job,) = notify_jobs(client, eng)

    done = finished_job(client, eng, job["id"])
    assert done["status"] == "failed" and done["attempts"] == 1, done
    assert "HTTP 404" in done["error"] and "refused" in done["error"]

    time.sleep(10 * BACKOFF_S + 0.3)
    attempts = receiver.snapshot()
    assert [a.action for a in attempts] == ["404"]
    check_attempts_are_one_notification(attempts, secret, job["id"], incident_id, monitor_id)
    incident = client.get(f"/api/v1/incidents/{incident_id}", headers=eng.headers).json()
    assert incident["status"] == "open"


def test_retry_after_of_a_503_delays_the_retry(
    client: TestClient,
    deployed: Deployed,  # noqa: F811
    make_receiver: Callable[[list[str]], FlakyReceiver],
) -> None:
    eng = deployed.engineer
    receiver = make_receiver(["503 retry-after", "200"])
    create_webhook(client, eng, receiver.url)
    open_incident(client, eng)
    (job,) = notify_jobs(client, eng)
    done = finished_job(client, eng, job["id"])
    assert done["status"] == "succeeded" and done["attempts"] == 2, done
    (gap,) = gaps(receiver.snapshot())
    assert gap >= 5.0, f"the retry came {gap:.2f} s after a 503 with Retry-After: 5"

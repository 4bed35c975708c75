"""An incident opened by a monitor reaches an e-mail channel through the job queue and a real SMTP server
(aiosmtpd on loopback), with the server's SMTP settings."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient

from bridgehead.settings import Settings
from tests.monitoring.test_monitors import (  # noqa: F401  (fixtures)
    Deployed,
    applicants,
    deployed,
    engineer,
    run_and_wait,
    score,
)
from tests.monitoring.test_notify import Inbox, free_port


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, Controller]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller
    finally:
        controller.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp: tuple[Inbox, Controller]) -> Settings:
    _, controller = smtp
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        log_level="INFO",
        smtp_host=controller.hostname,
        smtp_port=controller.port,
        smtp_starttls=False,
        smtp_from="Bridgehead <alerts@bank.example>",
        public_url="https://bridgehead.bank.example/",
    )


def test_an_opened_incident_is_e_mailed_to_the_channel(
    client: TestClient,
    deployed: Deployed,  # noqa: F811
    smtp: tuple[Inbox, Controller],
) -> None:
    inbox, _ = smtp
    eng = deployed.engineer
    made = client.post(
        "/api/v1/notification-channels",
        json={"name": "risk team", "kind": "email", "target": "risk@bank.example, Ops <ops@bank.example>"},
        headers=eng.headers,
    )
    assert made.status_code == 201, made.text
    assert made.json()["secret"] is None  # signing secrets are for webhooks
    score(client, eng, applicants(600, 5, shift=True))
    monitor = client.post(
        "/api/v1/endpoints/credit/monitors", json={"name": "m", "window_minutes": 60}, headers=eng.headers
    ).json()
    result = run_and_wait(client, eng, monitor["id"])
    assert result["incident_id"]
    deadline = time.monotonic() + 30
    while not inbox.messages and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(inbox.messages) == 1
    envelope, message = inbox.messages[0]
    assert sorted(envelope.rcpt_tos) == ["ops@bank.example", "risk@bank.example"]
    assert message["Subject"].startswith("[Bridgehead] ") and "credit" in message["Subject"]
    body = message.get_body(preferencelist=("plain",))
    # Absolute, with the configured public URL (its trailing slash dropped): a link the reader can open.
    link = f"https://bridgehead.bank.example/incidents/{result['incident_id']}"
    assert body is not None and f"Open it in Bridgehead: {link}" in body.get_content().splitlines()

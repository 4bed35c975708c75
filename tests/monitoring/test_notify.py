"""Notification delivery against real local servers: an HTTP receiver on 127.0.0.1 and aiosmtpd. No mocks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from bridgehead import __version__
from bridgehead.errors import ValidationFailed
from bridgehead.monitoring.notify import (
    Delivery,
    SmtpSettings,
    backoff,
    channel_secret,
    send_email,
    send_webhook,
    sign,
    signature_header,
    verify,
)
from bridgehead.settings import Settings

SECRET = "whsec-test-secret"
PAYLOAD: dict[str, Any] = {
    "incident": {"id": "inc-1", "rule": "psi > 0.2"},
    "endpoint": "churn",
    "value": 0.31,
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a real HTTP receiver ---------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    base: str
    requests: list[Received] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(base="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path == "/hang":
                state.release.wait(10)
                return
            status, extra = {
                "/ok": (200, {}),
                "/accepted": (202, {}),
                "/fail": (500, {}),
                "/unavailable": (503, {"Retry-After": "7"}),
                "/throttle": (429, {"Retry-After": "3"}),
                "/missing": (404, {}),
                "/gone": (410, {}),
                "/redirect": (302, {"Location": "/ok"}),
                "/permanent-redirect": (308, {"Location": "/ok"}),
            }[self.path]
            answer = b"internal detail the sender must not echo"
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def deliver(receiver: Receiver, path: str, secret: str | list[str] = SECRET, **kwargs: Any) -> Delivery:
    kwargs.setdefault("event", "incident.opened")
    kwargs.setdefault("delivery_id", "dlv-0001")
    return send_webhook(receiver.base + path, PAYLOAD, secret, **kwargs)


def test_webhook_success_is_signed_with_headers(receiver: Receiver) -> None:
    result = deliver(receiver, "/ok")
    assert result.ok and result.status == 200 and result.error is None and not result.retryable
    assert result.elapsed_ms > 0
    (request,) = receiver.requests
    assert request.body == json.dumps(PAYLOAD, separators=(",", ":"), sort_keys=True).encode()
    assert request.headers["content-type"] == "application/json"
    assert request.headers["bridgehead-event"] == "incident.opened"
    assert request.headers["bridgehead-delivery"] == "dlv-0001"
    assert request.headers["user-agent"] == f"bridgehead/{__version__}"

    header = request.headers["bridgehead-signature"]
    t, v1 = header.split(",")
    assert t.startswith("t=") and v1.startswith("v1=")
    assert abs(int(t[2:]) - time.time()) < 60
    # The plain recipe from docs/monitoring.md gives the same digest.
    expected = hmac.new(SECRET.encode(), t[2:].encode() + b"." + request.body, hashlib.sha256).hexdigest()
    assert v1[3:] == expected

    assert verify(SECRET, header, request.body)
    assert not verify("another-secret", header, request.body)
    assert not verify(SECRET, header, request.body.replace(b"0.31", b"0.01"))
    assert not verify(SECRET, header, request.body + b" ")
    stamp = int(t[2:])
    assert verify(SECRET, header, request.body, now=stamp + 299)
    assert not verify(SECRET, header, request.body, now=stamp + 301)  # replayed later
    assert not verify(SECRET, header, request.body, now=stamp - 301)  # from the future
    assert verify(SECRET, header, request.body, now=stamp + 3000, tolerance_s=3600)

    assert deliver(receiver, "/accepted").ok


def test_webhook_key_rotation_signs_with_every_secret(receiver: Receiver) -> None:
    assert deliver(receiver, "/ok", secret=["new-secret", "old-secret"]).ok
    (request,) = receiver.requests
    header = request.headers["bridgehead-signature"]
    assert header.count("v1=") == 2
    assert verify("new-secret", header, request.body)
    assert verify("old-secret", header, request.body)
    assert verify(["unrelated", "old-secret"], header, request.body)
    assert not verify("unrelated", header, request.body)


@pytest.mark.parametrize(
    ("path", "status", "retryable", "retry_after"),
    [
        ("/fail", 500, True, None),
        ("/unavailable", 503, True, 7.0),
        ("/throttle", 429, True, 3.0),
        ("/missing", 404, False, None),
        ("/gone", 410, False, None),
    ],
)
def test_webhook_failures_are_classified(
    receiver: Receiver, path: str, status: int, retryable: bool, retry_after: float | None
) -> None:
    result = deliver(receiver, path)
    assert not result.ok
    assert result.status == status
    assert result.retryable is retryable
    assert result.retry_after_s == retry_after
    assert result.error is not None and str(status) in result.error
    assert "internal detail" not in result.error  # the receiver's body is never echoed
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("path", ["/redirect", "/permanent-redirect"])
def test_webhook_does_not_follow_redirects(receiver: Receiver, path: str) -> None:
    result = deliver(receiver, path)
    assert not result.ok and not result.retryable
    assert result.status in (302, 308)
    assert result.error is not None and "not followed" in result.error
    assert [r.path for r in receiver.requests] == [path]


def test_webhook_timeout_is_retryable(receiver: Receiver) -> None:
    started = time.perf_counter()
    result = deliver(receiver, "/hang", timeout_s=0.3)
    assert time.perf_counter() - started < 5
    assert not result.ok and result.retryable and result.status is None
    assert result.error is not None and "timed out" in result.error


def test_webhook_connection_refused_is_retryable() -> None:
    result = send_webhook(
        f"http://127.0.0.1:{free_port()}/hook", PAYLOAD, SECRET, event="incident.opened", delivery_id="d1"
    )
    assert not result.ok and result.retryable and result.status is None
    assert result.error is not None and "Connect" in result.error


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "http://",
        "https:///path",
        "example.com/hook",
        "javascript:alert(1)",
        "",
        "http://exa mple.com/",
        "http://example.com:99999/",
        "http://example.com/\r\nX-Injected: 1",
        "file:///etc/passwd",
        "http://[::1/hook",
    ],
)
def test_webhook_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValidationFailed):
        send_webhook(url, PAYLOAD, SECRET, event="incident.opened", delivery_id="d1")


def test_webhook_rejects_bad_headers_and_payloads(receiver: Receiver) -> None:
    with pytest.raises(ValidationFailed):
        deliver(receiver, "/ok", event="incident.opened\r\nX-Injected: 1")
    with pytest.raises(ValidationFailed):
        deliver(receiver, "/ok", delivery_id="")
    with pytest.raises(ValidationFailed):
        send_webhook(receiver.base + "/ok", {"x": float("nan")}, SECRET, event="e", delivery_id="d")
    with pytest.raises(ValidationFailed):
        send_webhook(receiver.base + "/ok", {"x": {1, 2}}, SECRET, event="e", delivery_id="d")
    with pytest.raises(ValidationFailed):
        deliver(receiver, "/ok", secret="")
    assert receiver.requests == []


# --- signatures, secrets, backoff -------------------------------------------------------------------------


def test_verify_rejects_malformed_headers() -> None:
    body = b'{"a":1}'
    now = 1_718_000_000
    good = signature_header(SECRET, now, body)
    assert verify(SECRET, good, body, now=now)
    digest = sign(SECRET, now, body)
    for header in [
        None,
        "",
        "garbage",
        f"v1={digest}",  # no timestamp
        f"t={now}",  # no signature
        f"t={now},v0={digest}",  # unknown scheme only
        f"t={now},t={now},v1={digest}",  # two timestamps
        f"t=-{now},v1={digest}",
        f"t={now}.5,v1={digest}",
        f"t=\uff11\uff12\uff13,v1={digest}",  # non-ASCII (full-width) digits
        f"t={now},v1={digest.upper()}",
        f"t={now},v1={digest[:-1]}",
        f"t={now + 1},v1={digest}",  # signature of another time
    ]:
        assert not verify(SECRET, header, body, now=now), header
    assert verify(SECRET, f"v0=abc, t={now} ,v1=deadbeef, v1={digest}", body, now=now)
    assert not verify("", good, body, now=now)
    assert not verify([], good, body, now=now)


def test_sign_matches_the_plain_recipe() -> None:
    body = b'{"b":2}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k", 1_700_000_000, body) == expected
    assert signature_header("k", 1_700_000_000, body) == f"t=1700000000,v1={expected}"


def test_channel_secret_is_stable_and_per_channel() -> None:
    a = channel_secret("server-key", "chan-1")
    assert a == channel_secret("server-key", "chan-1")
    assert a != channel_secret("server-key", "chan-2")
    assert a != channel_secret("other-server-key", "chan-1")
    digest = hmac.new(b"server-key", b"webhook:chan-1", hashlib.sha256).digest()
    assert a == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert len(a) == 43 and set(a) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    with pytest.raises(ValidationFailed):
        channel_secret("", "chan-1")


def test_backoff_grows_and_is_capped() -> None:
    plain = [backoff(n, jitter=False) for n in range(1, 14)]
    assert plain[:5] == [5, 10, 20, 40, 80]
    assert all(b >= a for a, b in zip(plain, plain[1:], strict=False))
    assert max(plain) == 3600 and plain[-1] == 3600
    assert backoff(10_000, jitter=False) == 3600  # no overflow
    assert backoff(3, base_s=1, cap_s=2, jitter=False) == 2

    first = [backoff(n, rng=random.Random(7)) for n in range(1, 30)]
    again = [backoff(n, rng=random.Random(7)) for n in range(1, 30)]
    assert first == again
    rng = random.Random(1)
    for n in range(1, 30):
        ceiling = min(3600, 5 * 2 ** (n - 1))
        draws = [backoff(n, rng=rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.5 * ceiling  # full jitter spreads over the whole range
    with pytest.raises(ValueError, match="starts at 1"):
        backoff(0)


# --- a real SMTP server ------------------------------------------------------------------------------------


class Inbox:
    def __init__(self, refuse: dict[str, str] | None = None) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []
        self.refuse = refuse or {}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        if "*" in self.refuse:
            return self.refuse["*"]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.content if isinstance(envelope.content, bytes) else str(envelope.content).encode()
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 Message accepted"


def authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"alerts", b"s3cret")
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, Controller]]:
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller
    finally:
        controller.stop()


def settings_for(controller: Controller, **kwargs: Any) -> SmtpSettings:
    kwargs.setdefault("starttls", False)
    kwargs.setdefault("timeout_s", 5.0)
    kwargs.setdefault("from_addr", "Bridgehead <alerts@bank.example>")
    return SmtpSettings(host=controller.hostname, port=controller.port, **kwargs)


def test_email_arrives_with_text_and_html(smtp_server: tuple[Inbox, Controller]) -> None:
    inbox, controller = smtp_server
    result = send_email(
        settings_for(controller),
        ["ops@bank.example", "Risk Team <risk@bank.example>", "ops@bank.example"],
        "[Bridgehead] Drift on churn: PSI 0.31 > 0.2",
        "Incident inc-1 opened.\nPSI 0.31 > 0.2 on column tenure.",
        "<p>Incident <b>inc-1</b> opened.</p>",
        delivery_id="dlv-0001",
    )
    assert result.ok and result.status == 250 and not result.retryable and result.error is None
    ((envelope, message),) = inbox.messages
    assert envelope.mail_from == "alerts@bank.example"
    assert envelope.rcpt_tos == ["ops@bank.example", "risk@bank.example"]
    assert message["Subject"] == "[Bridgehead] Drift on churn: PSI 0.31 > 0.2"
    assert message["From"] == "Bridgehead <alerts@bank.example>"
    assert message["To"] == "ops@bank.example, risk@bank.example"
    assert message["Message-ID"] == "<bridgehead.dlv-0001@bank.example>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert "PSI 0.31 > 0.2 on column tenure." in text.get_content()
    assert "<b>inc-1</b>" in html.get_content()


def test_email_text_only(smtp_server: tuple[Inbox, Controller]) -> None:
    inbox, controller = smtp_server
    assert send_email(settings_for(controller, from_addr="bh@localhost"), ["a@localhost"], "s", "body é").ok
    ((_, message),) = inbox.messages
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "body é"


@pytest.mark.parametrize(
    ("reply", "retryable"), [("550 5.1.1 no such user", False), ("450 4.2.1 mailbox busy", True)]
)
def test_email_refused_recipients(reply: str, retryable: bool) -> None:
    inbox = Inbox(refuse={"*": reply})
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        result = send_email(settings_for(controller), ["nobody@bank.example"], "s", "t")
    finally:
        controller.stop()
    assert not result.ok
    assert result.retryable is retryable
    assert result.status == int(reply[:3])
    assert result.error is not None and "nobody@bank.example" in result.error and reply[4:] in result.error
    assert inbox.messages == []


def test_email_partly_refused_is_not_retried() -> None:
    inbox = Inbox(refuse={"gone@bank.example": "550 5.1.1 no such user"})
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        result = send_email(settings_for(controller), ["ops@bank.example", "gone@bank.example"], "s", "t")
    finally:
        controller.stop()
    # The message went to ops@; retrying would send it to them again.
    assert not result.ok and not result.retryable and result.status == 550
    assert result.error is not None and "gone@bank.example" in result.error
    ((envelope, _),) = inbox.messages
    assert envelope.rcpt_tos == ["ops@bank.example"]


# aiosmtpd warns on every connection to a server that takes AUTH without TLS (the warning is the point here).
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
def test_email_login() -> None:
    inbox = Inbox()
    controller = Controller(
        inbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=False,  # the test server has no certificate; production logs in after STARTTLS
    )
    controller.start()
    try:
        good = send_email(
            settings_for(controller, user="alerts", password="s3cret"), ["a@bank.example"], "s", "t"
        )
        bad = send_email(
            settings_for(controller, user="alerts", password="wrong"), ["a@bank.example"], "s", "t"
        )
        anonymous = send_email(settings_for(controller), ["a@bank.example"], "s", "t")
    finally:
        controller.stop()
    assert good.ok
    assert not bad.ok and not bad.retryable and bad.status == 535
    assert not anonymous.ok and not anonymous.retryable and anonymous.status == 530
    assert len(inbox.messages) == 1


def test_email_starttls_required_but_not_offered(smtp_server: tuple[Inbox, Controller]) -> None:
    inbox, controller = smtp_server
    result = send_email(settings_for(controller, starttls=True), ["a@bank.example"], "s", "t")
    assert not result.ok and not result.retryable
    assert result.error is not None and "STARTTLS" in result.error
    assert inbox.messages == []


def test_email_closed_port_is_retryable() -> None:
    result = send_email(
        SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False), ["a@b.example"], "s", "t"
    )
    assert not result.ok and result.retryable and result.status is None
    assert result.error is not None and "Connection" in result.error


def test_email_silent_server_times_out_retryably() -> None:
    with socket.socket() as listener:  # accepts connections (backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.perf_counter()
        result = send_email(
            SmtpSettings(host="127.0.0.1", port=port, starttls=False, timeout_s=0.3),
            ["a@b.example"],
            "s",
            "t",
        )
    assert time.perf_counter() - started < 5
    assert not result.ok and result.retryable and result.status is None


@pytest.mark.parametrize(
    ("to", "subject"),
    [
        ([], "s"),
        (["no-at-sign"], "s"),
        (["a@b.example, c@d.example"], "s"),
        (["a@b.example\r\nBcc: x@evil.example"], "s"),
        (["two@@b.example"], "s"),
        (["spaced out@b.example"], "s"),
        (["a@b.example"], "line\r\nBcc: x@evil.example"),
    ],
)
def test_email_rejects_bad_input(to: list[str], subject: str) -> None:
    # Validation happens before any connection: the port is closed and never reached.
    with pytest.raises(ValidationFailed):
        send_email(SmtpSettings(host="127.0.0.1", port=free_port(), starttls=False), to, subject, "t")


def test_email_rejects_bad_sender() -> None:
    with pytest.raises(ValidationFailed):
        send_email(SmtpSettings(host="127.0.0.1", from_addr="not an address"), ["a@b.example"], "s", "t")


def test_smtp_settings_from_app_settings(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        smtp_host="mail.bank.example",
        smtp_port=2525,
        smtp_user="alerts",
        smtp_password="s3cret",
        smtp_starttls=False,
        smtp_from="Bridgehead <alerts@bank.example>",
    )
    smtp = SmtpSettings.from_settings(settings)
    assert smtp == SmtpSettings(
        host="mail.bank.example",
        port=2525,
        user="alerts",
        password="s3cret",
        starttls=False,
        from_addr="Bridgehead <alerts@bank.example>",
    )
    assert "s3cret" not in repr(smtp)
    assert Settings(home=tmp_path).webhook_timeout_seconds == 10
    with pytest.raises(ValidationFailed, match="BRIDGEHEAD_SMTP_HOST"):
        SmtpSettings.from_settings(Settings(home=tmp_path))

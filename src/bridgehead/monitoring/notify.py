"""Delivering alert notifications: signed webhooks (httpx) and e-mail (smtplib). No database here.

One call is one attempt. Neither ``send_webhook`` nor ``send_email`` raises for a failed delivery: each returns
a ``Delivery`` saying whether it worked and, if not, whether trying again may help (``retryable``). Retrying
across process restarts is the job queue's business; ``backoff`` gives the delay before the next attempt.
Bad input (a URL that is not http(s), a malformed address) raises ``ValidationFailed``: retrying cannot fix it.

Webhook signatures follow the scheme of Stripe and GitHub. The header::

    Bridgehead-Signature: t=1718000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd

carries the Unix time of signing and one or more ``v1`` values, each the hex HMAC-SHA256, under one channel
secret, of ``f"{t}."`` followed by the raw request body. Several ``v1`` values appear while a secret is being
rotated (one per secret); a receiver accepts the request when any of them matches. ``verify`` also rejects a
timestamp more than ``tolerance_s`` away from now, so a captured request cannot be replayed later.

A channel's secret is not stored: ``channel_secret`` derives it from the server's secret key and the channel's
id, so it is shown to the user once, when the channel is created, and recomputed for each delivery.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import smtplib
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr, parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from bridgehead import __version__
from bridgehead.errors import ValidationFailed

if TYPE_CHECKING:
    from bridgehead.settings import Settings

__all__ = [
    "DELIVERY_HEADER",
    "EVENT_HEADER",
    "SIGNATURE_HEADER",
    "Delivery",
    "SmtpSettings",
    "backoff",
    "channel_secret",
    "send_email",
    "send_webhook",
    "sign",
    "signature_header",
    "verify",
]

SIGNATURE_HEADER = "Bridgehead-Signature"
EVENT_HEADER = "Bridgehead-Event"
DELIVERY_HEADER = "Bridgehead-Delivery"
USER_AGENT = f"bridgehead/{__version__}"

# HTTP statuses worth another attempt besides 5xx: request timeout, too early, too many requests.
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Header values (event names, delivery ids) are printable ASCII without separators that could split a header.
_TOKEN = re.compile(r"[\x21-\x7e]{1,200}")
# A sanity check, not RFC 5322: one @, something on each side, no spaces, brackets, quotes or separators.
_ADDRESS = re.compile(r"[^@\s<>()\[\],;:\"\\]+@[^@\s<>()\[\],;:\"\\]+")


@dataclass(frozen=True)
class Delivery:
    """The outcome of one delivery attempt.

    ``status`` is the HTTP status (webhooks) or the SMTP reply code (e-mail), None when no answer came.
    ``retryable`` is meaningful only when ``ok`` is false. ``retry_after_s`` is the delay a webhook receiver
    asked for in ``Retry-After`` (429, 503), when it gave one.
    """

    ok: bool
    status: int | None
    error: str | None
    retryable: bool
    elapsed_ms: float
    retry_after_s: float | None = None


# --- signatures -------------------------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}."`` followed by ``body``, keyed by ``secret`` (UTF-8)."""
    message = f"{int(timestamp)}.".encode() + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _secrets(secret: str | Sequence[str]) -> list[str]:
    found = [secret] if isinstance(secret, str) else list(secret)
    if not found or any(not isinstance(s, str) or not s for s in found):
        raise ValidationFailed("a signing secret must be a non-empty string")
    return found


def signature_header(secret: str | Sequence[str], timestamp: int, body: bytes) -> str:
    """The ``Bridgehead-Signature`` value: ``t=<timestamp>,v1=<hex>``, one ``v1`` per secret (key rotation)."""
    parts = [f"t={int(timestamp)}"] + [f"v1={sign(s, timestamp, body)}" for s in _secrets(secret)]
    return ",".join(parts)


def verify(
    secret: str | Sequence[str],
    header_value: str | None,
    body: bytes,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> bool:
    """Whether ``header_value`` (the ``Bridgehead-Signature`` header) signs ``body`` under ``secret``.

    ``body`` must be the raw bytes received, before any JSON parsing. False, never an exception, for a
    missing or malformed header, a timestamp more than ``tolerance_s`` seconds from ``now`` (either way), or
    no matching ``v1`` value. Pass several secrets to accept the old and the new one while rotating.
    """
    if not header_value or not isinstance(header_value, str):
        return False
    timestamps: list[str] = []
    candidates: list[str] = []
    for item in header_value.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamps.append(value.strip())
        elif key == "v1":
            candidates.append(value.strip())
    if len(timestamps) != 1 or not candidates or not timestamps[0].isascii() or not timestamps[0].isdigit():
        return False
    timestamp = int(timestamps[0])
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    try:
        keys = _secrets(secret)
    except ValidationFailed:
        return False
    expected = [sign(key, timestamp, body) for key in keys]
    matched = False
    # Compare every pair (no early exit) so the time taken does not depend on which one matched.
    for candidate in candidates:
        for digest in expected:
            matched |= hmac.compare_digest(candidate.encode(), digest.encode())
    return matched


def channel_secret(server_key: str, channel_id: str) -> str:
    """The signing secret of one webhook channel: HMAC-SHA256(server_key, "webhook:" + channel_id), url-safe
    base64 without padding (43 characters). Stable for a given server key; different for every channel.
    Changing the server's secret key changes every channel's secret."""
    if not server_key or not channel_id:
        raise ValidationFailed("channel_secret needs a server key and a channel id")
    digest = hmac.new(server_key.encode(), f"webhook:{channel_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


# --- retries ----------------------------------------------------------------------------------------------


def backoff(
    attempt: int,
    base_s: float = 5.0,
    cap_s: float = 3600.0,
    *,
    jitter: bool = True,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before the next attempt, after ``attempt`` failed ones (1 after the first failure).

    Exponential with full jitter: uniform in ``[0, min(cap_s, base_s * 2 ** (attempt - 1))]``, so retries of
    many deliveries that failed together spread out instead of arriving together. ``jitter=False`` gives the
    upper end itself. Pass ``rng`` (a ``random.Random``) for a reproducible sequence.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts failed attempts and starts at 1 (got {attempt})")
    if base_s < 0 or cap_s < 0:
        raise ValueError("base_s and cap_s must not be negative")
    # The exponent is bounded so that a very high attempt number cannot overflow a float.
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 64))
    if not jitter:
        return ceiling
    return (rng or random).uniform(0.0, ceiling)


# --- webhooks ---------------------------------------------------------------------------------------------


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
        httpx.URL(url)  # what httpx itself would refuse (an invalid international host name, ...)
    except (ValueError, TypeError, AttributeError, httpx.InvalidURL) as exc:
        raise ValidationFailed(f"not a valid webhook URL: {exc}", details={"url": str(url)[:200]}) from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationFailed(
            "a webhook URL must start with http:// or https://", details={"url": str(url)[:200]}
        )
    if not host:
        raise ValidationFailed("a webhook URL must name a host", details={"url": str(url)[:200]})
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise ValidationFailed(
            "a webhook URL must not contain spaces or control characters", details={"url": str(url)[:200]}
        )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _elapsed_ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def send_webhook(
    url: str,
    payload: dict[str, Any],
    secret: str | Sequence[str],
    *,
    timeout_s: float = 10,
    event: str,
    delivery_id: str,
    client: httpx.Client | None = None,
) -> Delivery:
    """POST ``payload`` as JSON (compact, sorted keys) to ``url``, signed with ``secret``; one attempt.

    Headers: ``Content-Type: application/json``, ``Bridgehead-Signature`` (see ``signature_header``),
    ``Bridgehead-Event`` (``event``), ``Bridgehead-Delivery`` (``delivery_id``: keep it the same on every
    retry of one notification so receivers can drop duplicates) and ``User-Agent: bridgehead/<version>``.
    Redirects are not followed (a 3xx is a permanent failure). 2xx is success; 408, 425, 429, 5xx,
    connection errors and timeouts are retryable; any other status is a permanent failure. The error text
    names the status only, never the receiver's body (it could be an internal page the URL points at).

    ``timeout_s`` bounds the connect and each read and write (``BRIDGEHEAD_WEBHOOK_TIMEOUT_SECONDS`` is the
    setting callers pass). ``client`` reuses an ``httpx.Client`` (pooling, proxies, a custom CA); by default a
    new one is made, which honours the standard proxy variables (``HTTPS_PROXY``, ``NO_PROXY``).
    Raises ``ValidationFailed`` for a URL that is not http(s) with a host, an event or delivery id that cannot
    be a header value, or a payload that is not JSON.
    """
    _check_url(url)
    for name, value in (("event", event), ("delivery_id", delivery_id)):
        if not isinstance(value, str) or not _TOKEN.fullmatch(value):
            raise ValidationFailed(
                f"{name} must be 1-200 printable ASCII characters without spaces",
                details={name: str(value)[:200]},
            )
    try:
        body = json.dumps(
            payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False
        ).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"the webhook payload is not JSON: {exc}") from exc
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature_header(secret, int(time.time()), body),
        EVENT_HEADER: event,
        DELIVERY_HEADER: delivery_id,
        "User-Agent": USER_AGENT,
    }
    start = time.perf_counter()
    http = client if client is not None else httpx.Client(timeout=timeout_s, follow_redirects=False)
    try:
        # Streamed, and the body never read: a receiver cannot make us download anything.
        with http.stream(
            "POST", url, content=body, headers=headers, timeout=timeout_s, follow_redirects=False
        ) as response:
            status = response.status_code
            reason = response.reason_phrase
            retry_after = _retry_after(response.headers.get("Retry-After"))
            location = response.headers.get("Location")
    except httpx.TimeoutException as exc:
        return Delivery(
            False, None, f"timed out after {timeout_s:g} s ({type(exc).__name__})", True, _elapsed_ms(start)
        )
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError) as exc:
        return Delivery(False, None, f"{type(exc).__name__}: {exc}", False, _elapsed_ms(start))
    except httpx.TransportError as exc:
        return Delivery(False, None, f"{type(exc).__name__}: {exc}", True, _elapsed_ms(start))
    except httpx.HTTPError as exc:  # anything else httpx raises: report it, never raise
        return Delivery(False, None, f"{type(exc).__name__}: {exc}", True, _elapsed_ms(start))
    finally:
        if client is None:
            http.close()
    elapsed = _elapsed_ms(start)
    if 200 <= status < 300:
        return Delivery(True, status, None, False, elapsed)
    error = f"HTTP {status} {reason}".strip()
    if 300 <= status < 400:
        where = f" to {location[:200]}" if location else ""
        return Delivery(False, status, f"{error}: redirect{where} not followed", False, elapsed)
    retryable = status >= 500 or status in _RETRYABLE_STATUSES
    return Delivery(False, status, error, retryable, elapsed, retry_after if retryable else None)


# --- e-mail -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmtpSettings:
    """How to reach the SMTP server that sends alert e-mails (``SmtpSettings.from_settings(settings)``).

    ``starttls`` upgrades the connection with STARTTLS (certificate checked against the system's CAs) before
    logging in; the server must offer it. ``user`` set: log in with ``user`` and ``password``. Implicit TLS
    (port 465) is not supported: use the submission port (587) with STARTTLS. ``timeout_s`` bounds the
    connection and each command.
    """

    host: str
    port: int = 587
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    from_addr: str = "bridgehead@localhost"
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSettings:
        """The SMTP settings of this installation; ``ValidationFailed`` when ``smtp_host`` is not set."""
        if not settings.smtp_host:
            raise ValidationFailed("e-mail notifications need an SMTP server: set BRIDGEHEAD_SMTP_HOST")
        password = settings.smtp_password.get_secret_value() if settings.smtp_password is not None else None
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            user=settings.smtp_user,
            password=password,
            starttls=settings.smtp_starttls,
            from_addr=settings.smtp_from,
        )


def _address(value: str, what: str) -> str:
    """The bare address in ``value`` (``a@b`` or ``Name <a@b>``), after a sanity check."""
    if (
        not isinstance(value, str)
        or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)
        or len(value) > 320
    ):
        raise ValidationFailed(f"not a valid {what} e-mail address", details={what: str(value)[:200]})
    _, addr = parseaddr(value)
    if not _ADDRESS.fullmatch(addr) or (addr != value.strip() and not value.strip().endswith(f"<{addr}>")):
        raise ValidationFailed(f"not a valid {what} e-mail address", details={what: value[:200]})
    return addr


def _smtp_failure(exc: BaseException, start: float) -> Delivery:
    """Classify an smtplib or socket error: 4xx replies and lost connections retryable, 5xx permanent."""
    elapsed = _elapsed_ms(start)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        refused = "; ".join(
            f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in sorted(exc.recipients.items())
        )
        retryable = bool(codes) and all(400 <= code < 500 for code in codes)
        return Delivery(
            False, max(codes, default=None), f"all recipients refused: {refused}", retryable, elapsed
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return Delivery(False, None, f"SMTP server disconnected: {exc}", True, elapsed)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return Delivery(False, None, f"SMTP server does not support it: {exc}", False, elapsed)
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        message = f"{type(exc).__name__}: {code} {_text(exc.smtp_error)}"
        return Delivery(False, code if code > 0 else None, message, 400 <= code < 500 or code <= 0, elapsed)
    if isinstance(exc, smtplib.SMTPException):
        return Delivery(False, None, f"{type(exc).__name__}: {exc}", False, elapsed)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Delivery(False, None, f"TLS certificate rejected: {exc}", False, elapsed)
    # Connection refused, timeouts, DNS failures, resets.
    return Delivery(False, None, f"{type(exc).__name__}: {exc}", True, elapsed)


def _text(message: bytes | str) -> str:
    return message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)


def send_email(
    smtp: SmtpSettings,
    to: list[str],
    subject: str,
    text: str,
    html: str | None = None,
    *,
    delivery_id: str | None = None,
) -> Delivery:
    """Send one e-mail to ``to`` through ``smtp``; one attempt.

    Plain text, or ``multipart/alternative`` (text and HTML) when ``html`` is given; marked
    ``Auto-Submitted: auto-generated`` so vacation responders stay quiet. ``delivery_id`` makes the
    ``Message-ID`` the same on every retry of one notification. Success means the server accepted the message
    for every recipient. A 4xx reply, a lost connection or a timeout is retryable; a 5xx reply is not. When
    the server accepts some recipients and refuses others, the result is a failure that is *not* retryable
    (retrying would send the message again to those who have it) and the error names the refused ones.
    Raises ``ValidationFailed`` for no recipients, a malformed address, or a subject with a line break.
    """
    if not to:
        raise ValidationFailed("an e-mail needs at least one recipient")
    recipients = list(dict.fromkeys(_address(addr, "recipient") for addr in to))
    sender = _address(smtp.from_addr, "sender")
    if not isinstance(subject, str) or "\r" in subject or "\n" in subject:
        raise ValidationFailed("an e-mail subject must be one line")
    if delivery_id is not None and not _TOKEN.fullmatch(delivery_id):
        raise ValidationFailed("delivery_id must be 1-200 printable ASCII characters without spaces")

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = smtp.from_addr
    message["To"] = ", ".join(recipients)
    message["Date"] = format_datetime(datetime.now(UTC))
    domain = sender.rsplit("@", 1)[1]
    message["Message-ID"] = f"<bridgehead.{delivery_id or secrets.token_hex(16)}@{domain}>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")

    start = time.perf_counter()
    connection: smtplib.SMTP | None = None
    try:
        connection = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        connection.ehlo()
        if smtp.starttls:
            connection.starttls(context=ssl.create_default_context())
            connection.ehlo()
        if smtp.user:
            connection.login(smtp.user, smtp.password or "")
        refused = connection.send_message(message, from_addr=sender, to_addrs=recipients)
    except (smtplib.SMTPException, OSError) as exc:
        _close(connection, polite=False)
        return _smtp_failure(exc, start)
    # The message is accepted: a failure while saying goodbye must not turn into a retry (a duplicate).
    _close(connection, polite=True)
    elapsed = _elapsed_ms(start)
    if refused:
        names = "; ".join(f"{rcpt}: {code} {_text(msg)}" for rcpt, (code, msg) in sorted(refused.items()))
        return Delivery(
            False,
            max(code for code, _ in refused.values()),
            f"some recipients refused: {names}",
            False,
            elapsed,
        )
    return Delivery(True, 250, None, False, elapsed)


def _close(connection: smtplib.SMTP | None, *, polite: bool) -> None:
    if connection is None:
        return
    try:
        if polite:
            connection.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        connection.close()


def check_url(url: str) -> None:
    """``ValidationFailed`` unless ``url`` is a usable webhook URL (http or https, a host, no spaces)."""
    _check_url(url)


def check_address(value: str) -> str:
    """The bare address of a recipient (``a@b`` or ``Name <a@b>``); ``ValidationFailed`` when it is not one."""
    return _address(value, "recipient")

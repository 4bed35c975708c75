"""Append and verify the audit chain. Each event's hash covers its content and the previous event's hash."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from bridgehead.audit.models import AuditEvent
from bridgehead.logs import current_request_id
from bridgehead.store.base import new_id, utcnow

__all__ = ["GENESIS", "Actor", "ActorRef", "VerifyResult", "event_hash", "query", "record", "verify"]

GENESIS = "0" * 64
_PG_LOCK = 727275


class Actor(Protocol):
    @property
    def person_id(self) -> str | None: ...
    @property
    def email(self) -> str: ...


@dataclass(frozen=True)
class ActorRef:
    """An actor named outright: the CLI on the server host, start-up bootstrap, or a person signing in."""

    email: str
    person_id: str | None = None


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def event_hash(event: AuditEvent) -> str:
    at: datetime = event.at.astimezone(UTC)
    body = {
        "seq": event.seq,
        "id": event.id,
        "at": at.isoformat(timespec="microseconds"),
        "actor_id": event.actor_id,
        "actor_email": event.actor_email,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "business_unit_id": event.business_unit_id,
        "changes": event.changes,
        "request_id": event.request_id,
        "prev_hash": event.prev_hash,
    }
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode()).hexdigest()


def record(
    session: Session,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str,
    *,
    business_unit_id: str | None = None,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction, so the event and the change commit together."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
    head = session.execute(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    now = utcnow()
    event = AuditEvent(
        seq=(head.seq + 1) if head else 1,
        id=new_id(),
        at=now,
        actor_id=actor.person_id,
        actor_email=actor.email,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        business_unit_id=business_unit_id,
        changes=_canonical(changes or {}),
        request_id=current_request_id(),
        prev_hash=head.hash if head else GENESIS,
    )
    event.hash = event_hash(event)
    session.add(event)
    session.flush()
    return event


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    head_hash: str
    bad_seq: int | None = None
    bad_id: str | None = None
    reason: str | None = None


def verify(session: Session, *, batch: int = 1000) -> VerifyResult:
    """Walk the chain in order; report the first event that was edited, deleted or reordered."""
    expected_seq = 1
    prev = GENESIS
    checked = 0
    for event in _iter_events(session, batch):
        if event.seq != expected_seq:
            return VerifyResult(
                False,
                checked,
                prev,
                event.seq,
                event.id,
                f"expected event #{expected_seq} but found #{event.seq}: events were deleted or renumbered",
            )
        if event.prev_hash != prev:
            return VerifyResult(
                False,
                checked,
                prev,
                event.seq,
                event.id,
                "prev_hash does not match the previous event: events were deleted or reordered",
            )
        if event_hash(event) != event.hash:
            return VerifyResult(
                False,
                checked,
                prev,
                event.seq,
                event.id,
                "content does not match its hash: the event was edited",
            )
        prev = event.hash
        expected_seq += 1
        checked += 1
    return VerifyResult(True, checked, prev)


def _iter_events(session: Session, batch: int) -> Iterator[AuditEvent]:
    last = 0
    while True:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > last).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def query(
    *,
    actor_email: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    business_unit_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_seq: int | None = None,
) -> Select[tuple[AuditEvent]]:
    stmt = select(AuditEvent).order_by(AuditEvent.seq.desc())
    if actor_email:
        stmt = stmt.where(AuditEvent.actor_email == actor_email.lower())
    if action:
        stmt = stmt.where(AuditEvent.action.startswith(action, autoescape=True))
    if object_type:
        stmt = stmt.where(AuditEvent.object_type == object_type)
    if object_id:
        stmt = stmt.where(AuditEvent.object_id == object_id)
    if business_unit_id:
        stmt = stmt.where(AuditEvent.business_unit_id == business_unit_id)
    if since:
        stmt = stmt.where(AuditEvent.at >= since)
    if until:
        stmt = stmt.where(AuditEvent.at < until)
    if before_seq:
        stmt = stmt.where(AuditEvent.seq < before_seq)
    return stmt

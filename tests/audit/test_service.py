"""The audit chain: every mutation appends an event; any edit, deletion or reordering is detected."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from bridgehead.audit.models import AuditEvent
from bridgehead.audit.service import GENESIS, event_hash, verify
from bridgehead.store import Database
from tests.conftest import Member


def _make_events(client: TestClient, admin: Member, n: int = 4) -> None:
    for i in range(n):
        r = client.post(
            "/api/v1/business-units", headers=admin.headers, json={"slug": f"u{i}", "name": f"U{i}"}
        )
        assert r.status_code == 201


def test_events_are_chained_and_hashes_recompute(client: TestClient, admin: Member, db: Database) -> None:
    _make_events(client, admin)
    with db.session() as session:
        events = session.query(AuditEvent).order_by(AuditEvent.seq).all()
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].prev_hash == GENESIS
    for prev, cur in zip(events, events[1:], strict=False):
        assert cur.prev_hash == prev.hash
    # Independent recomputation of one hash from the documented canonical form.
    last = events[-1]
    body = {
        "seq": last.seq,
        "id": last.id,
        "at": last.at.isoformat(timespec="microseconds"),
        "actor_id": last.actor_id,
        "actor_email": last.actor_email,
        "action": last.action,
        "object_type": last.object_type,
        "object_id": last.object_id,
        "business_unit_id": last.business_unit_id,
        "changes": last.changes,
        "request_id": last.request_id,
        "prev_hash": last.prev_hash,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode()).hexdigest() == last.hash == event_hash(last)
    with db.session() as session:
        assert verify(session).ok


def test_event_records_actor_change_and_request_id(client: TestClient, admin: Member, db: Database) -> None:
    r = client.post(
        "/api/v1/business-units",
        headers={**admin.headers, "X-Request-ID": "req-audit-0001"},
        json={"slug": "cards", "name": "Cards"},
    )
    unit_id = r.json()["id"]
    with db.session() as session:
        event = session.query(AuditEvent).filter_by(object_id=unit_id).one()
    assert event.action == "business_unit.create"
    assert event.actor_email == admin.email and event.actor_id == admin.id
    assert event.changes["name"] == "Cards"
    assert event.request_id == "req-audit-0001"
    r = client.patch(
        f"/api/v1/business-units/{unit_id}", headers=admin.headers, json={"name": "Card Services"}
    )
    assert r.status_code == 200
    with db.session() as session:
        update = session.query(AuditEvent).filter_by(object_id=unit_id, action="business_unit.update").one()
    assert update.changes == {"name": {"from": "Cards", "to": "Card Services"}}


def test_failed_write_leaves_no_event(client: TestClient, admin: Member, db: Database) -> None:
    with db.session() as session:
        before = session.query(AuditEvent).count()
    r = client.post("/api/v1/business-units", headers=admin.headers, json={"slug": "platform", "name": "dup"})
    assert r.status_code == 409
    with db.session() as session:
        assert session.query(AuditEvent).count() == before


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder"])
def test_verify_names_the_first_bad_event(
    client: TestClient, admin: Member, db: Database, tamper: str
) -> None:
    _make_events(client, admin, 5)
    with db.session() as session:
        events = session.query(AuditEvent).order_by(AuditEvent.seq).all()
    target = events[3]
    with db.engine.begin() as conn:
        if tamper == "edit":
            conn.execute(
                text("UPDATE audit_events SET actor_email = 'mallory@example.com' WHERE seq = :s"),
                {"s": target.seq},
            )
        elif tamper == "delete":
            conn.execute(text("DELETE FROM audit_events WHERE seq = :s"), {"s": target.seq})
        else:
            # Swap the content of two events while keeping their positions.
            other = events[4]
            conn.execute(text("UPDATE audit_events SET seq = -1 WHERE seq = :s"), {"s": target.seq})
            conn.execute(
                text("UPDATE audit_events SET seq = :a WHERE seq = :b"), {"a": target.seq, "b": other.seq}
            )
            conn.execute(text("UPDATE audit_events SET seq = :b WHERE seq = -1"), {"b": other.seq})
    with db.session() as session:
        result = verify(session)
    assert not result.ok
    assert result.checked == 3
    if tamper == "edit":
        assert (result.bad_seq, result.bad_id) == (target.seq, target.id)
        assert "edited" in (result.reason or "")
    elif tamper == "delete":
        assert result.bad_seq == target.seq + 1
        assert "deleted" in (result.reason or "")
    else:
        assert result.bad_seq == target.seq
        assert result.bad_id == events[4].id


def test_audit_api_filters_and_pages(client: TestClient, admin: Member) -> None:
    _make_events(client, admin, 3)
    r = client.get(
        "/api/v1/audit-events", headers=admin.headers, params={"action": "business_unit.", "limit": 2}
    )
    page = r.json()
    assert r.status_code == 200 and len(page["items"]) == 2
    assert all(e["action"].startswith("business_unit.") for e in page["items"])
    seqs = [e["seq"] for e in page["items"]]
    assert seqs == sorted(seqs, reverse=True)
    r2 = client.get(
        "/api/v1/audit-events",
        headers=admin.headers,
        params={"action": "business_unit.", "limit": 2, "before_seq": page["next_before_seq"]},
    )
    assert all(e["seq"] < seqs[-1] for e in r2.json()["items"])
    r3 = client.get("/api/v1/audit-events", headers=admin.headers, params={"actor_email": admin.email})
    assert r3.json()["items"] and all(e["actor_email"] == admin.email for e in r3.json()["items"])
    assert client.get("/api/v1/audit-events/verify", headers=admin.headers).json()["ok"] is True

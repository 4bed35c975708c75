"""API tokens: shown once, stored hashed, expiring, revocable."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import update

from bridgehead.auth.models import ApiToken
from bridgehead.store import Database
from bridgehead.store.base import utcnow
from tests.conftest import Member


def test_token_is_shown_once_and_works(client: TestClient, admin: Member) -> None:
    r = client.post("/api/v1/tokens", headers=admin.headers, json={"name": "notebook", "expires_in_days": 7})
    assert r.status_code == 201
    body = r.json()
    secret = body["token"]
    assert secret.startswith(body["prefix"])
    listed = client.get("/api/v1/tokens", headers=admin.headers).json()["items"]
    assert any(t["id"] == body["id"] for t in listed)
    assert all("token" not in t for t in listed)
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["email"] == admin.email


def test_revoked_token_stops_working(client: TestClient, admin: Member) -> None:
    created = client.post("/api/v1/tokens", headers=admin.headers, json={"name": "temp"}).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/tokens/{created['id']}", headers=admin.headers).status_code == 200
    r = client.get("/api/v1/me", headers=headers)
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


def test_expired_token_is_refused(client: TestClient, admin: Member, db: Database) -> None:
    created = client.post("/api/v1/tokens", headers=admin.headers, json={"name": "short"}).json()
    with db.session(write=True) as session:
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == created["id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    r = client.get("/api/v1/me", headers={"Authorization": f"Bearer {created['token']}"})
    assert r.status_code == 401


def test_garbage_tokens_are_401_not_500(client: TestClient) -> None:
    for value in ("Bearer ", "Bearer x", "Bearer " + "a" * 5000, "Basic Zm9vOmJhcg==", "bearer"):
        r = client.get("/api/v1/me", headers={"Authorization": value})
        assert r.status_code in (401, 403), value
        assert "error" in r.json()

"""Business-unit isolation of people, and who may revoke which token."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from tests.conftest import Member, Org


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: Any = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert isinstance(body["error"]["details"], dict)
    error: dict[str, Any] = body["error"]
    return error


class People:
    """Two business units and the central team, with someone in each."""

    def __init__(self, orgs: Org) -> None:
        self.central = orgs.member(Role.ML_ENGINEER)
        self.a = orgs.member(Role.DATA_SCIENTIST, unit="unit-a")
        self.a2 = orgs.member(Role.BUSINESS_USER, unit="unit-a")
        self.b = orgs.member(Role.DATA_SCIENTIST, unit="unit-b")
        self.b2 = orgs.member(Role.AI_CHAMPION, unit="unit-b")

    @property
    def everyone(self) -> set[str]:
        return {self.central.id, self.a.id, self.a2.id, self.b.id, self.b2.id}


@pytest.fixture
def people(orgs: Org) -> People:
    return People(orgs)


def _visible_ids(client: TestClient, who: Member, **params: str) -> set[str]:
    response = client.get("/api/v1/people", headers=who.headers, params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    ids = {p["id"] for p in page["items"]}
    assert page["total"] == len(ids)
    return ids


# --- people -----------------------------------------------------------------------------------


def test_unit_member_sees_own_unit_and_central_team_only(client: TestClient, people: People) -> None:
    seen = _visible_ids(client, people.a)
    assert seen == {people.central.id, people.a.id, people.a2.id}
    assert people.b.id not in seen
    assert people.b2.id not in seen


def test_filtering_by_another_unit_reveals_nothing(client: TestClient, orgs: Org, people: People) -> None:
    assert _visible_ids(client, people.a, business_unit_id=orgs.unit("unit-b")) == set()


def test_other_units_person_is_not_found_exactly_like_an_absent_one(
    client: TestClient, people: People
) -> None:
    hidden = client.get(f"/api/v1/people/{people.b.id}", headers=people.a.headers)
    error = assert_error(hidden, 404, "not_found")
    absent_id = "0" * 32
    absent = client.get(f"/api/v1/people/{absent_id}", headers=people.a.headers)
    absent_error = assert_error(absent, 404, "not_found")
    # Same answer for "not yours" and "does not exist": only the echoed id differs.
    assert error["message"].replace(people.b.id, "ID") == absent_error["message"].replace(absent_id, "ID")
    assert error["details"] == {"person_id": people.b.id}
    assert absent_error["details"] == {"person_id": absent_id}
    assert people.b.email not in hidden.text
    # Visible people are found.
    assert client.get(f"/api/v1/people/{people.a2.id}", headers=people.a.headers).status_code == 200
    assert client.get(f"/api/v1/people/{people.central.id}", headers=people.a.headers).status_code == 200


@pytest.mark.parametrize(
    "role", [Role.ETHICS_COMPLIANCE_OFFICER, Role.AI_PROGRAM_MANAGER, Role.CHIEF_AI_OFFICER]
)
def test_central_roles_see_everyone(client: TestClient, orgs: Org, people: People, role: Role) -> None:
    # Placed in unit A on purpose: the role, not the unit, grants the organization-wide view.
    viewer = orgs.member(role, unit="unit-a")
    assert _visible_ids(client, viewer) == people.everyone | {viewer.id}
    assert client.get(f"/api/v1/people/{people.b.id}", headers=viewer.headers).status_code == 200


def test_non_central_role_in_the_central_team_sees_everyone(client: TestClient, people: People) -> None:
    # people.central is an ML engineer in the central platform team.
    assert _visible_ids(client, people.central) == people.everyone
    response = client.get(f"/api/v1/people/{people.b2.id}", headers=people.central.headers)
    assert response.status_code == 200
    assert response.json()["email"] == people.b2.email


# --- tokens -----------------------------------------------------------------------------------


def _token_id(client: TestClient, who: Member) -> str:
    response = client.get("/api/v1/tokens", headers=who.headers)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert len(items) == 1
    token_id: str = items[0]["id"]
    return token_id


def test_a_person_cannot_revoke_someone_elses_token(client: TestClient, people: People) -> None:
    victim_token = _token_id(client, people.a2)
    response = client.delete(f"/api/v1/tokens/{victim_token}", headers=people.a.headers)
    assert_error(response, 404, "not_found")
    # The token still works.
    assert client.get("/api/v1/me", headers=people.a2.headers).status_code == 200
    # ... and its owner may revoke it.
    assert client.delete(f"/api/v1/tokens/{victim_token}", headers=people.a2.headers).status_code == 200
    assert_error(client.get("/api/v1/me", headers=people.a2.headers), 401, "unauthenticated")


def test_an_admin_can_revoke_anyones_token(client: TestClient, admin: Member, people: People) -> None:
    token_id = _token_id(client, people.b)
    response = client.delete(f"/api/v1/tokens/{token_id}", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["revoked_at"] is not None
    assert response.json()["person_id"] == people.b.id
    assert_error(client.get("/api/v1/me", headers=people.b.headers), 401, "unauthenticated")
    # Revoking twice is a conflict, not a silent success.
    assert_error(client.delete(f"/api/v1/tokens/{token_id}", headers=admin.headers), 409, "conflict")


def test_a_deactivated_persons_token_stops_working(client: TestClient, admin: Member, people: People) -> None:
    assert client.get("/api/v1/me", headers=people.a.headers).status_code == 200
    response = client.patch(f"/api/v1/people/{people.a.id}", headers=admin.headers, json={"is_active": False})
    assert response.status_code == 200, response.text
    assert response.json()["is_active"] is False
    assert_error(client.get("/api/v1/me", headers=people.a.headers), 401, "unauthenticated")
    assert_error(client.get("/api/v1/people", headers=people.a.headers), 401, "unauthenticated")
    # Reactivated, the same token works again (it was never revoked).
    client.patch(f"/api/v1/people/{people.a.id}", headers=admin.headers, json={"is_active": True})
    assert client.get("/api/v1/me", headers=people.a.headers).status_code == 200

"""The Organization page's admin forms, through the real console routes."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from tests.auth.test_login import _csrf, login
from tests.conftest import PASSWORD, Member, Org


def test_admin_deactivates_and_reactivates_a_person(client: TestClient, admin: Member, orgs: Org) -> None:
    member = orgs.member(Role.DATA_ENGINEER, unit="retail")
    login(client, admin.email, PASSWORD)
    page = client.get("/organization")
    assert f'action="/organization/people/{member.id}"' in page.text
    token = _csrf(page.text)
    r = client.post(
        f"/organization/people/{member.id}", data={"is_active": "false", "csrf": token}, follow_redirects=True
    )
    assert r.status_code == 200
    assert client.get("/api/v1/me", headers=member.headers).status_code == 401
    row = re.search(rf'data-email="{re.escape(member.email)}".*?</tr>', r.text, re.S)
    assert row is not None
    assert "deactivated" in row.group(0)
    assert "Reactivate" in row.group(0)
    client.post(f"/organization/people/{member.id}", data={"is_active": "true", "csrf": token})
    assert client.get("/api/v1/me", headers=member.headers).status_code == 200


def test_the_last_admin_cannot_be_demoted(client: TestClient, admin: Member) -> None:
    r = client.patch(f"/api/v1/people/{admin.id}", headers=admin.headers, json={"role": "data_scientist"})
    assert r.status_code == 409
    assert "without an active chief AI officer" in r.json()["error"]["message"]

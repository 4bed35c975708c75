"""Access to datasets: personal data masked for readers without data.pii (profiles, top values, sample rows),
access policies by unit and role, and every access decision in the audit trail. SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from tests.conftest import Member, Org

DATASETS = "/api/v1/datasets"
CSV = (
    "customer_email,gender,score,region\n"
    + "".join(f"user{i}@example.com,{'fm'[i % 2]},{i % 7},{['north', 'south'][i % 2]}\n" for i in range(40))
).encode()


def ok(response: httpx2.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


@pytest.fixture
def people(client: TestClient, orgs: Org) -> dict[str, Any]:
    owner = orgs.member(Role.DATA_ENGINEER, unit="retail")
    dataset = ok(client.post(DATASETS, headers=owner.headers, json={"name": "customers"}), 201)
    version = ok(
        client.put(f"{DATASETS}/{dataset['id']}/upload/customers.csv", headers=owner.headers, content=CSV),
        201,
    )
    return {"owner": owner, "dataset": dataset, "version": version}


def _profile(client: TestClient, who: Member, dataset_id: str, **params: str) -> httpx2.Response:
    return client.get(f"{DATASETS}/{dataset_id}/versions/1/profile", headers=who.headers, params=params)


def _columns(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in body["profile"]["columns"]}


def test_upload_tags_personal_and_protected_columns(people: dict[str, Any]) -> None:
    tags = people["version"]["column_tags"]
    assert tags["customer_email"]["tags"] == ["pii"]
    assert "email" in tags["customer_email"]["kinds"]
    assert tags["gender"]["tags"] == ["protected"]
    assert "score" not in tags and "region" not in tags


def test_pii_is_masked_for_readers_without_the_permission(
    client: TestClient, orgs: Org, people: dict[str, Any]
) -> None:
    dataset_id = people["dataset"]["id"]
    scientist = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    masked = ok(_profile(client, scientist, dataset_id))
    assert masked["masked"] == ["customer_email"]
    email = _columns(masked)["customer_email"]
    assert email["masked"] is True
    assert {v["value"] for v in email["top_values"]} == {"•••"}
    assert email["count"] == 40 and email["null_count"] == 0  # counts stay
    assert "user1@example.com" not in str(masked)
    # Protected is not personal by itself: the fairness attribute stays readable.
    assert {v["value"] for v in _columns(masked)["gender"]["top_values"]} == {"f", "m"}
    # The sketches would give the values away as well.
    state = ok(_profile(client, scientist, dataset_id, sketches="true"))
    assert "user1@example.com" not in str(state)
    # Asking for the unmasked view without the permission is refused, not silently masked.
    refused = _profile(client, scientist, dataset_id, unmasked="true")
    assert refused.status_code == 403 and refused.json()["error"]["details"]["action"] == "data.pii"

    unmasked = ok(_profile(client, people["owner"], dataset_id, unmasked="true"))
    assert unmasked["masked"] == []
    assert "user1@example.com" in {v["value"] for v in _columns(unmasked)["customer_email"]["top_values"]}


def test_sample_rows_of_validation_reports_are_masked(
    client: TestClient, orgs: Org, people: dict[str, Any]
) -> None:
    dataset_id, owner = people["dataset"]["id"], people["owner"]
    contract = "columns:\n  customer_email: {regex: '^nobody@'}\n"
    ok(client.put(f"{DATASETS}/{dataset_id}/contract", headers=owner.headers, json={"contract": contract}))
    ok(client.post(f"{DATASETS}/{dataset_id}/versions/1/validate", headers=owner.headers), 201)
    scientist = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    seen = ok(client.get(f"{DATASETS}/{dataset_id}/validations", headers=scientist.headers))["items"][0]
    failing = next(e for e in seen["report"]["expectations"] if e["id"] == "customer_email.regex")
    assert failing["failing_count"] == 40
    assert failing["sample"] and all(row["customer_email"] == "•••" for row in failing["sample"])
    assert all(row["region"] in ("north", "south") for row in failing["sample"])
    assert seen["masked"] == ["customer_email"]
    own = ok(client.get(f"{DATASETS}/{dataset_id}/validations", headers=owner.headers))["items"][0]
    own_failing = next(e for e in own["report"]["expectations"] if e["id"] == "customer_email.regex")
    assert own_failing["sample"][0]["customer_email"].endswith("@example.com")


def test_columns_can_be_tagged_by_hand(client: TestClient, orgs: Org, people: dict[str, Any]) -> None:
    dataset_id, owner = people["dataset"]["id"], people["owner"]
    url = f"{DATASETS}/{dataset_id}/versions/1/column-tags"
    version = ok(
        client.put(url, headers=owner.headers, json={"columns": {"region": ["sensitive"], "gender": []}})
    )
    assert version["column_tags"]["region"]["tags"] == ["sensitive"]
    assert "gender" not in version["column_tags"]
    scientist = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    assert ok(_profile(client, scientist, dataset_id))["masked"] == ["customer_email", "region"]
    bad = client.put(url, headers=owner.headers, json={"columns": {"nope": ["pii"]}})
    assert bad.status_code == 404
    assert client.put(url, headers=owner.headers, json={"columns": {"region": ["secret"]}}).status_code == 422


def test_policy_grants_units_and_limits_roles(client: TestClient, orgs: Org, people: dict[str, Any]) -> None:
    dataset_id, owner = people["dataset"]["id"], people["owner"]
    outsider = orgs.member(Role.DATA_SCIENTIST, unit="wholesale")
    outsider_user = orgs.member(Role.BUSINESS_USER, unit="wholesale")
    url = f"{DATASETS}/{dataset_id}"
    assert client.get(url, headers=outsider.headers).status_code == 404

    policy = {"units": [orgs.unit("wholesale")], "roles": ["data_scientist"]}
    got = ok(client.put(f"{url}/policy", headers=owner.headers, json=policy))
    assert got["units"] == [orgs.unit("wholesale")] and got["roles"] == ["data_scientist"]
    assert ok(client.get(url, headers=outsider.headers))["name"] == "customers"
    listed = ok(client.get(DATASETS, headers=outsider.headers))["items"]
    assert [d["id"] for d in listed] == [dataset_id]
    # Same unit, but a role the policy does not name.
    assert client.get(url, headers=outsider_user.headers).status_code == 404
    assert ok(client.get(DATASETS, headers=outsider_user.headers))["items"] == []
    # The owning unit keeps reading whatever the role list says.
    colleague = orgs.member(Role.BUSINESS_USER, unit="retail")
    assert client.get(url, headers=colleague.headers).status_code == 200
    # A grant is for reading: the other unit still cannot change the dataset.
    assert client.put(f"{url}/contract", headers=outsider.headers, json={"contract": ""}).status_code == 403

    assert client.put(f"{url}/policy", headers=owner.headers, json={"units": ["nope"]}).status_code == 404
    assert client.put(f"{url}/policy", headers=owner.headers, json={"roles": ["king"]}).status_code == 422
    ok(client.put(f"{url}/policy", headers=owner.headers, json={}))
    assert client.get(url, headers=outsider.headers).status_code == 404


def test_access_decisions_are_audited(
    client: TestClient, orgs: Org, admin: Member, people: dict[str, Any]
) -> None:
    dataset_id = people["dataset"]["id"]
    outsider = orgs.member(Role.DATA_SCIENTIST, unit="wholesale")
    scientist = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    assert _profile(client, outsider, dataset_id).status_code == 404
    ok(_profile(client, scientist, dataset_id))
    ok(_profile(client, people["owner"], dataset_id))
    # A missing version of a visible dataset is not an access decision.
    assert (
        client.get(f"{DATASETS}/{dataset_id}/versions/9/profile", headers=scientist.headers).status_code
        == 404
    )
    events = ok(client.get("/api/v1/audit-events", headers=admin.headers, params={"limit": 200}))["items"]
    mine = [e for e in events if e["object_id"] == dataset_id and e["action"].startswith("dataset.access")]
    denied = [e for e in mine if e["action"] == "dataset.access.denied"]
    reads = [e for e in mine if e["action"] == "dataset.access.read"]
    assert len(denied) == 1 and denied[0]["actor_email"] == outsider.email
    by_actor = {e["actor_email"]: e["changes"]["masked"] for e in reads}
    assert by_actor == {scientist.email: ["customer_email"], people["owner"].email: []}

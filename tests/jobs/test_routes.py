"""The jobs API: business-unit isolation, who may cancel, who may download, paging and filters, the audit."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from bridgehead.audit.models import AuditEvent
from bridgehead.auth.roles import Role
from bridgehead.auth.service import principal_of
from bridgehead.jobs import service
from bridgehead.jobs.models import Job
from bridgehead.store import Database, utcnow
from tests.conftest import Member, Org
from tests.jobs.conftest import enqueue, read


def _submit(db: Database, member: Member, kind: str = "t.ok", **params: Any) -> str:
    with db.session(write=True) as session:
        principal = principal_of(session, member.id)
        return service.enqueue(session, principal, kind, params).id


def test_another_units_job_is_not_found(client: TestClient, orgs: Org, db: Database) -> None:
    author = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    job_id = _submit(db, author)
    outsider = orgs.member(Role.ML_ENGINEER, unit="insurance")
    assert client.get("/api/v1/jobs", headers=outsider.headers).json() == {"items": [], "total": 0}
    for method, url in (
        ("GET", f"/api/v1/jobs/{job_id}"),
        ("POST", f"/api/v1/jobs/{job_id}/cancel"),
        ("GET", f"/api/v1/jobs/{job_id}/output"),
    ):
        answer = client.request(method, url, headers=outsider.headers)
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"]["code"] == "not_found"
    assert read(db, job_id).status == "queued"
    # The author's unit and central staff see it.
    colleague = orgs.member(Role.BUSINESS_USER, unit="retail")
    admin = orgs.member(Role.CHIEF_AI_OFFICER)
    for viewer in (author, colleague, admin):
        listed = client.get("/api/v1/jobs", headers=viewer.headers).json()
        assert [j["id"] for j in listed["items"]] == [job_id]
        one = client.get(f"/api/v1/jobs/{job_id}", headers=viewer.headers).json()
        assert (one["kind"], one["status"], one["created_by"]) == ("t.ok", "queued", author.id)
        assert one["business_unit_id"] == orgs.unit("retail")


def test_the_author_may_cancel_a_colleague_needs_jobs_cancel(
    client: TestClient, orgs: Org, db: Database
) -> None:
    author = orgs.member(Role.BUSINESS_USER, unit="retail")
    first, second = _submit(db, author), _submit(db, author)
    reader = orgs.member(Role.AI_CHAMPION, unit="retail")
    refused = client.post(f"/api/v1/jobs/{first}/cancel", headers=reader.headers)
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == {"action": "jobs.cancel", "role": "ai_champion"}

    mine = client.post(f"/api/v1/jobs/{first}/cancel", headers=author.headers)
    assert mine.status_code == 200 and mine.json()["status"] == "cancelled"
    operator = orgs.member(Role.ML_ENGINEER, unit="retail")
    theirs = client.post(f"/api/v1/jobs/{second}/cancel", headers=operator.headers)
    assert theirs.status_code == 200 and theirs.json()["status"] == "cancelled"
    again = client.post(f"/api/v1/jobs/{second}/cancel", headers=operator.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"

    with db.session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.object_type == "job").order_by(AuditEvent.seq)
        ).all()
    assert [(e.action, e.object_id, e.actor_email) for e in events] == [
        ("job.create", first, author.email),
        ("job.create", second, author.email),
        ("job.cancel", first, author.email),
        ("job.cancel", second, operator.email),
    ]


def test_list_filters_and_pages(client: TestClient, orgs: Org, db: Database) -> None:
    member = orgs.member(Role.DATA_ENGINEER, unit="retail")
    unit = orgs.unit("retail")
    a = [enqueue(db, "t.a", {"i": i}, unit=unit) for i in range(5)]
    b = enqueue(db, "t.b", unit=unit)
    with db.session(write=True) as session:
        job = session.get(Job, a[0])
        assert job is not None
        job.status, job.finished_at = "failed", utcnow()
    headers = member.headers
    page = client.get("/api/v1/jobs", headers=headers, params={"limit": 2}).json()
    assert page["total"] == 6 and len(page["items"]) == 2
    assert page["items"][0]["id"] == b  # newest first
    rest = client.get("/api/v1/jobs", headers=headers, params={"limit": 10, "offset": 2}).json()
    assert len(rest["items"]) == 4
    seen = {j["id"] for j in page["items"]} | {j["id"] for j in rest["items"]}
    assert seen == {*a, b}
    kind = client.get("/api/v1/jobs", headers=headers, params={"kind": "t.a"}).json()
    assert kind["total"] == 5 and {j["id"] for j in kind["items"]} == set(a)
    failed = client.get("/api/v1/jobs", headers=headers, params={"status": "failed"}).json()
    assert [j["id"] for j in failed["items"]] == [a[0]]
    bad = client.get("/api/v1/jobs", headers=headers, params={"status": "exploded"})
    assert bad.status_code == 422


def test_output_is_for_the_author_and_only_once_succeeded(
    client: TestClient, orgs: Org, db: Database, app: Any
) -> None:
    author = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    job_id = _submit(db, author)
    waiting = client.get(f"/api/v1/jobs/{job_id}/output", headers=author.headers)
    assert waiting.status_code == 409 and waiting.json()["error"]["details"]["status"] == "queued"

    app.state.artifacts.put_bytes(f"jobs/{job_id}/output.bin", b"scored")
    with db.session(write=True) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = "succeeded"
        job.result = {"output": {"path": f"jobs/{job_id}/output.bin", "filename": "scored.bin"}}
    described = client.get(f"/api/v1/jobs/{job_id}", headers=author.headers).json()
    assert described["output_url"] == f"/api/v1/jobs/{job_id}/output"

    colleague = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    refused = client.get(f"/api/v1/jobs/{job_id}/output", headers=colleague.headers)
    assert refused.status_code == 403
    got = client.get(f"/api/v1/jobs/{job_id}/output", headers=author.headers)
    assert got.status_code == 200 and got.content == b"scored"
    assert got.headers["content-disposition"].startswith('attachment; filename="scored.bin"')
    with db.session() as session:
        reads = session.scalars(select(AuditEvent).where(AuditEvent.action == "job.output.read")).all()
    assert [(e.object_id, e.actor_email) for e in reads] == [(job_id, author.email)]


def test_an_output_outside_the_jobs_own_prefix_is_never_served(
    client: TestClient, orgs: Org, db: Database, app: Any
) -> None:
    author = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    job_id = _submit(db, author)
    app.state.artifacts.put_bytes("datasets/secret.csv", b"secret")
    with db.session(write=True) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = "succeeded"
        job.result = {"output": {"path": "datasets/secret.csv"}}
    answer = client.get(f"/api/v1/jobs/{job_id}/output", headers=author.headers)
    assert answer.status_code == 409 and b"secret" not in answer.content

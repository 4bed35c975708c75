"""Console sign-in: argon2 passwords, HttpOnly Secure session cookie, CSRF, throttling, sign-out."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient
from sqlalchemy import select

from bridgehead.auth.models import Person, WebSession
from bridgehead.settings import Settings
from bridgehead.store import Database
from tests.conftest import PASSWORD, Member


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "form has no csrf field"
    return match.group(1)


def login(client: TestClient, email: str, password: str, next: str = "/"):  # type: ignore[no-untyped-def]
    page = client.get("/login")
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf": _csrf(page.text), "next": next},
        follow_redirects=False,
    )


def test_login_sets_a_secure_httponly_cookie_and_opens_the_console(client: TestClient, admin: Member) -> None:
    r = login(client, admin.email, PASSWORD, next="/organization")
    assert r.status_code == 303 and r.headers["location"] == "/organization"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("bridgehead_session="))
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie
    assert client.get("/organization").status_code == 200


def test_passwords_are_argon2_hashed(admin: Member, db: Database) -> None:
    with db.session() as session:
        stored = session.scalar(select(Person.password_hash).where(Person.email == admin.email))
    assert stored is not None and stored.startswith("$argon2id$") and PASSWORD not in stored


def test_session_secret_is_stored_hashed(client: TestClient, admin: Member, db: Database) -> None:
    login(client, admin.email, PASSWORD)
    secret = client.cookies.get("bridgehead_session")
    with db.session() as session:
        rows = session.scalars(select(WebSession)).all()
    assert secret and rows and all(secret not in (w.session_hash, w.csrf_token) for w in rows)


def test_wrong_password_and_unknown_email_get_the_same_answer(client: TestClient, admin: Member) -> None:
    wrong = login(client, admin.email, "not-the-password")
    unknown = login(client, "ghost@example.com", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert (
        "E-mail or password is not correct" in wrong.text
        and "E-mail or password is not correct" in unknown.text
    )


def test_login_without_the_form_token_is_refused(client: TestClient, admin: Member) -> None:
    client.get("/login")
    r = client.post(
        "/login", data={"email": admin.email, "password": PASSWORD, "csrf": "forged"}, follow_redirects=False
    )
    assert r.status_code == 403 and "bridgehead_session" not in r.headers.get("set-cookie", "")


def test_open_redirect_after_login_is_refused(client: TestClient, admin: Member) -> None:
    for target in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        r = login(client, admin.email, PASSWORD, next=target)
        assert r.headers["location"] == "/"


def test_login_is_throttled_after_repeated_failures(
    client: TestClient, admin: Member, settings: Settings
) -> None:
    for _ in range(settings.login_max_failures):
        assert login(client, admin.email, "wrong-password-x").status_code == 401
    blocked = login(client, admin.email, PASSWORD)
    assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
    # Another account is not affected.
    assert login(client, "other@example.com", "whatever-else").status_code == 401


def test_console_forms_require_the_session_csrf_token(client: TestClient, admin: Member) -> None:
    login(client, admin.email, PASSWORD)
    page = client.get("/organization")
    token = _csrf(page.text)
    refused = client.post("/organization/units", data={"slug": "x1", "name": "X1", "csrf": "nope"})
    assert refused.status_code == 403
    ok = client.post(
        "/organization/units", data={"slug": "x1", "name": "X1", "csrf": token}, follow_redirects=False
    )
    assert ok.status_code == 303
    # Cookie-authenticated API writes need the header form of the same token.
    assert client.post("/api/v1/business-units", json={"slug": "x2", "name": "X2"}).status_code == 403
    r = client.post(
        "/api/v1/business-units", json={"slug": "x2", "name": "X2"}, headers={"X-CSRF-Token": token}
    )
    assert r.status_code == 201


def test_logout_ends_the_session_server_side(client: TestClient, admin: Member) -> None:
    login(client, admin.email, PASSWORD)
    secret = client.cookies.get("bridgehead_session")
    token = _csrf(client.get("/").text)
    r = client.post("/logout", data={"csrf": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    client.cookies.set("bridgehead_session", secret or "")
    after = client.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert after.status_code == 303 and after.headers["location"].startswith("/login")


def test_deactivated_person_cannot_sign_in(client: TestClient, admin: Member, orgs) -> None:  # type: ignore[no-untyped-def]
    from bridgehead.auth.roles import Role

    member = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    assert (
        client.patch(
            f"/api/v1/people/{member.id}", headers=admin.headers, json={"is_active": False}
        ).status_code
        == 200
    )
    assert login(client, member.email, PASSWORD).status_code == 401
    assert client.get("/api/v1/me", headers=member.headers).status_code == 401


def test_anonymous_pages_redirect_and_api_answers_401(client: TestClient) -> None:
    page = client.get("/audit", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Faudit"
    api = client.get("/api/v1/people")
    assert api.status_code == 401 and api.json()["error"]["code"] == "unauthenticated"
    assert client.get("/login").status_code == 200


def test_password_change_ends_other_sessions_and_is_audited(
    client: TestClient, admin: Member, db: Database
) -> None:
    from fastapi.testclient import TestClient as Client

    login(client, admin.email, PASSWORD)
    with Client(client.app, base_url="https://testserver") as other:
        login(other, admin.email, PASSWORD)
        assert other.get("/organization").status_code == 200
        token = _csrf(client.get("/account").text)
        wrong = client.post(
            "/account/password",
            data={
                "current_password": "nope-nope-nope",
                "new_password": "brand-new-password",
                "confirm_password": "brand-new-password",
                "csrf": token,
            },
        )
        assert wrong.status_code == 403
        ok = client.post(
            "/account/password",
            data={
                "current_password": PASSWORD,
                "new_password": "brand-new-password",
                "confirm_password": "brand-new-password",
                "csrf": token,
            },
        )
        assert ok.status_code == 200
        assert "Password changed" in ok.text
        # This session continues; the other one has ended; the new password works, the old does not.
        assert client.get("/organization").status_code == 200
        ended = other.get("/organization", headers={"Accept": "text/html"}, follow_redirects=False)
        assert ended.status_code == 303
    assert login(client, admin.email, PASSWORD).status_code == 401
    assert login(client, admin.email, "brand-new-password").status_code == 303
    r = client.get("/api/v1/audit-events", headers=admin.headers, params={"action": "person.change_password"})
    assert len(r.json()["items"]) == 1


def test_password_change_over_the_api(client: TestClient, admin: Member) -> None:
    short = client.post(
        "/api/v1/me/password",
        headers=admin.headers,
        json={"current_password": PASSWORD, "new_password": "short"},
    )
    assert short.status_code == 422
    ok = client.post(
        "/api/v1/me/password",
        headers=admin.headers,
        json={"current_password": PASSWORD, "new_password": "another-long-password"},
    )
    assert ok.status_code == 204
    assert login(client, admin.email, "another-long-password").status_code == 303


def test_cookie_authenticated_mlflow_logging_needs_the_csrf_header(client: TestClient, admin: Member) -> None:
    """The MLflow logging calls are answered by a fast lane in front of the routes; it authenticates with the
    same function as every route, so a console session needs the CSRF header there too."""
    run = client.post(
        "/api/2.0/mlflow/runs/create", json={"experiment_id": "0"}, headers=admin.headers
    ).json()["run"]["info"]["run_id"]
    login(client, admin.email, PASSWORD)
    token = _csrf(client.get("/organization").text)
    point = {"run_id": run, "key": "k", "value": 1.0, "timestamp": 1, "step": 0}
    refused = client.post("/api/2.0/mlflow/runs/log-metric", json=point)
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
    assert (
        client.post(
            "/api/2.0/mlflow/runs/log-metric", json=point, headers={"X-CSRF-Token": token}
        ).status_code
        == 200
    )
    client.cookies.clear()
    history = client.get(
        "/api/2.0/mlflow/metrics/get-history",
        params={"run_id": run, "metric_key": "k"},
        headers=admin.headers,
    ).json()["metrics"]
    assert [m["value"] for m in history] == [1.0]

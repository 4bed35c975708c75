"""All state lives in the database: two server processes on one PostgreSQL behave as one."""

from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bridgehead.settings import Settings
from bridgehead.store import Database
from tests.live import BRIDGEHEAD, bridgehead_env, running_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
def test_two_servers_share_state_sessions_and_one_audit_chain(settings: Settings, tmp_path: Path) -> None:
    env = bridgehead_env(
        home=str(tmp_path / "a"),
        database_url=settings.resolved_database_url,
        secret_key="shared-secret",
        cookie_secure="false",
    )
    subprocess.run([BRIDGEHEAD, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [BRIDGEHEAD, "admin", "create", "--email", "chief@example.com", "--password", "two-servers-password"],
        env=env,
        check=True,
        capture_output=True,
    )
    token = subprocess.run(
        [BRIDGEHEAD, "token", "create", "--email", "chief@example.com", "--name", "t"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[-1]
    env_b = {**env, "BRIDGEHEAD_HOME": str(tmp_path / "b")}
    auth = {"Authorization": f"Bearer {token}"}
    with running_server(env) as a, running_server(env_b) as b:
        created = httpx.post(
            f"{a}/api/v1/business-units", headers=auth, json={"slug": "risk", "name": "Risk"}
        )
        assert created.status_code == 201
        seen = httpx.get(f"{b}/api/v1/business-units/{created.json()['id']}", headers=auth)
        assert seen.status_code == 200 and seen.json()["name"] == "Risk"

        # A console session opened on A is valid on B; signing out on B ends it on A.
        with httpx.Client(base_url=a, follow_redirects=True) as browser:
            page = browser.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            r = browser.post(
                "/login",
                data={
                    "email": "chief@example.com",
                    "password": "two-servers-password",
                    "csrf": csrf,
                    "next": "/",
                },
            )
            assert r.status_code == 200 and "Overview" in r.text
            cookie = browser.cookies.get("bridgehead_session")
        with httpx.Client(base_url=b, cookies={"bridgehead_session": cookie or ""}) as other:
            assert other.get("/organization").status_code == 200

        # Concurrent writes through both servers keep one unbroken audit chain.
        def write(i: int) -> int:
            url = a if i % 2 else b
            return httpx.post(
                f"{url}/api/v1/business-units",
                headers=auth,
                json={"slug": f"u{i}", "name": f"U{i}"},
                timeout=30,
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(write, range(40)))
        assert statuses == [201] * 40
        verify = httpx.get(f"{b}/api/v1/audit-events/verify", headers=auth).json()
        assert verify["ok"] is True
        db = Database(settings.resolved_database_url)
        with db.engine.connect() as conn:
            count = conn.exec_driver_sql("SELECT count(*) FROM audit_events").scalar_one()
        db.dispose()
        assert verify["checked"] == count and count >= 44

"""A live `bridgehead server` for the tests that drive the real mlflow client or need a real socket."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridgehead.auth.roles import Role
from bridgehead.settings import Settings
from bridgehead.store import Database
from tests.conftest import Member, Org
from tests.live import bridgehead_env, running_server

# Small limits, so that refusals are cheap to provoke; large enough for the models logged in the tests.
MAX_ARTIFACT_BYTES = 512 * 1024
MAX_BODY_BYTES = 128 * 1024


@dataclass
class Live:
    url: str
    db: Database
    admin: Member
    scientist: Member
    artifact_root: Path

    def post(self, member: Member, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(f"{self.url}/api/2.0/mlflow/{path}", json=body, headers=member.headers, timeout=30)


@contextlib.contextmanager
def live_server(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    """A server process on this test's database (engine of the parametrization), an admin and a data
    scientist of the unit "credit", and the mlflow client pointed at the server with the scientist's token."""
    import mlflow

    db = Database(settings.resolved_database_url)
    orgs = Org(db)
    admin = orgs.member(Role.CHIEF_AI_OFFICER, email="admin@example.com")
    scientist = orgs.member(Role.DATA_SCIENTIST, unit="credit")
    artifact_root = tmp_path / "artifacts"
    env = bridgehead_env(
        home=str(settings.home),
        database_url=settings.resolved_database_url,
        artifact_root=str(artifact_root),
        secret_key="test-secret-key-not-for-production",
        log_level="WARNING",
        max_artifact_bytes=str(MAX_ARTIFACT_BYTES),
        max_body_bytes=str(MAX_BODY_BYTES),
    )
    with running_server(env, log=tmp_path / "server.log") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", scientist.token)
        # Failures surface at once instead of after minutes of retries; nothing leaves the machine.
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        monkeypatch.setenv("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
        monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
        mlflow.set_tracking_uri(url)
        try:
            yield Live(url, db, admin, scientist, artifact_root)
        finally:
            while mlflow.active_run():
                mlflow.end_run()
            mlflow.set_tracking_uri(None)
            db.dispose()

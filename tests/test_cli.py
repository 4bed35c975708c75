"""The `bridgehead` command, run as a real process against both engines."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bridgehead.settings import Settings
from bridgehead.store import Database
from bridgehead.store.migrate import head_revision
from tests.live import BRIDGEHEAD, bridgehead_env, free_port, running_server


def run(settings: Settings, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = bridgehead_env(
        home=str(settings.home), database_url=settings.resolved_database_url, secret_key="cli-test-key"
    )
    return subprocess.run(
        [BRIDGEHEAD, *args], env=env, capture_output=True, text=True, timeout=120, input=input
    )


@pytest.fixture
def migrated(settings: Settings) -> Settings:
    result = run(settings, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert f"database at revision {head_revision()}" in result.stdout
    return settings


def test_admin_token_and_audit_verify_round_trip(migrated: Settings, db: Database) -> None:
    created = run(
        migrated, "admin", "create", "--email", "Chief@Example.com", "--password", "a-long-password"
    )
    assert created.returncode == 0, created.stderr
    duplicate = run(
        migrated, "admin", "create", "--email", "chief@example.com", "--password", "a-long-password"
    )
    assert duplicate.returncode == 2 and "already exists" in duplicate.stderr

    token = run(migrated, "token", "create", "--email", "chief@example.com", "--name", "ci")
    assert token.returncode == 0, token.stderr
    secret = token.stdout.strip().splitlines()[-1]
    assert secret.startswith("bh_") and " " not in secret
    # The secret is not stored: only its SHA-256.
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM api_tokens")).scalar_one()
    assert secret not in stored and len(stored) == 64

    listed = run(migrated, "token", "list")
    assert "ci" in listed.stdout and secret not in listed.stdout

    ok = run(migrated, "audit", "verify")
    assert ok.returncode == 0 and "intact" in ok.stdout

    # Hand-edit one row: verify must fail and name it.
    with db.engine.begin() as conn:
        bad_id = conn.execute(text("SELECT id FROM audit_events WHERE seq = 2")).scalar_one()
        conn.execute(text('UPDATE audit_events SET changes = \'{"name": "forged"}\' WHERE seq = 2'))
    broken = run(migrated, "audit", "verify")
    assert broken.returncode == 1
    assert "#2" in broken.stderr and bad_id in broken.stderr


def test_token_revoke_from_cli(migrated: Settings, db: Database) -> None:
    run(migrated, "admin", "create", "--email", "a@example.com", "--password", "a-long-password")
    run(migrated, "token", "create", "--email", "a@example.com", "--name", "x")
    with db.engine.connect() as conn:
        token_id = conn.execute(text("SELECT id FROM api_tokens")).scalar_one()
    revoked = run(migrated, "token", "revoke", token_id)
    assert revoked.returncode == 0
    again = run(migrated, "token", "revoke", token_id)
    assert again.returncode == 2 and "already revoked" in again.stderr
    assert run(migrated, "token", "create", "--email", "nobody@example.com", "--name", "x").returncode == 2


def test_short_password_is_refused_with_a_clear_message(migrated: Settings) -> None:
    result = run(migrated, "admin", "create", "--email", "a@example.com", "--password", "short")
    assert result.returncode == 2 and "at least 12 characters" in result.stderr


def test_first_admin_from_environment_on_server_start(settings: Settings, tmp_path: Path) -> None:
    env = bridgehead_env(
        home=str(settings.home),
        database_url=settings.resolved_database_url,
        secret_key="k",
        admin_email="boot@example.com",
        admin_password="bootstrap-password",
    )
    with running_server(env) as url:
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    token = run(
        settings, "token", "create", "--email", "boot@example.com", "--name", "t"
    ).stdout.splitlines()[-1]
    with running_server(env) as url:  # second start: the admin exists, nothing is duplicated
        me = httpx.get(f"{url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["role"] == "chief_ai_officer"


def test_demo_seeds_an_organization_and_serves(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    port = free_port()
    env = bridgehead_env()
    log = tmp_path / "demo.log"
    with running_server(env, "demo", "--home", str(home), port=port, log=log) as url:
        # The server answers while the demo still trains; it prints the console URL when done.
        deadline = time.time() + 240
        while "console: " not in log.read_text(errors="replace"):
            assert time.time() < deadline, log.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        login = httpx.get(f"{url}/login")
        assert login.status_code == 200 and "Sign in" in login.text
        assert "ds.retail@demo.bridgehead.dev" in log.read_text()
    seeded = Database(f"sqlite:///{home / 'bridgehead.db'}")
    with seeded.engine.connect() as conn:
        units = conn.execute(
            text("SELECT count(*) FROM business_units WHERE is_central = false")
        ).scalar_one()
        roles = {r for (r,) in conn.execute(text("SELECT DISTINCT role FROM people"))}
        models = dict(
            conn.execute(
                text(
                    "SELECT m.name, count(v.id) FROM registered_models m JOIN model_versions v ON v.model_id = m.id "
                    "GROUP BY m.name"
                )
            ).all()
        )
        aliases = dict(
            conn.execute(
                text(
                    "SELECT m.name || '@' || a.alias, a.version FROM model_aliases a "
                    "JOIN registered_models m ON m.id = a.model_id"
                )
            ).all()
        )
        runs = conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
        flavors = {f for (f,) in conn.execute(text("SELECT DISTINCT flavor FROM model_versions"))}
        datasets = dict(
            conn.execute(
                text(
                    "SELECT d.name, count(v.id) FROM datasets d JOIN dataset_versions v ON v.dataset_id = d.id "
                    "GROUP BY d.name"
                )
            ).all()
        )
        validations = dict(
            conn.execute(
                text(
                    "SELECT d.name, v.passed FROM dataset_validations v JOIN datasets d ON d.id = v.dataset_id"
                )
            ).all()
        )
        derivations = conn.execute(text("SELECT transformation FROM dataset_derivations")).scalars().all()
        training_inputs = conn.execute(
            text(
                "SELECT count(*) FROM dataset_inputs i JOIN dataset_versions v ON v.digest = i.digest "
                "JOIN datasets d ON d.id = v.dataset_id AND d.name = i.name"
            )
        ).scalar_one()
        tags = conn.execute(
            text(
                "SELECT v.column_tags FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                "WHERE d.name = 'credit-applications-2026'"
            )
        ).scalar_one()
        endpoint = conn.execute(
            text("SELECT environment, revision FROM endpoints WHERE name = 'credit-risk'")
        ).one()
        served = dict(
            conn.execute(
                text(
                    "SELECT h.version, sum(h.rows) FROM prediction_hours h WHERE h.role = 'primary' GROUP BY h.version"
                )
            ).all()
        )
        feedback = dict(
            conn.execute(text("SELECT kind, count(*) FROM prediction_feedback GROUP BY kind")).all()
        )
        live_feedback = conn.execute(
            text(
                "SELECT count(*) FROM prediction_feedback WHERE kind = 'label' AND request_id NOT LIKE 'replay-%'"
            )
        ).scalar_one()
        runs_of_monitor = conn.execute(
            text("SELECT status, metrics, breaches FROM monitor_runs ORDER BY window_end_ms")
        ).all()
        incidents = conn.execute(text("SELECT severity, status, occurrences FROM incidents")).all()
    seeded.dispose()
    # Serving: the champion (v3) in production with the challenger (v2) canaried at 10 %, 2,000 requests
    # answered and logged (shut down cleanly: nothing lost), outcomes for most of them and a few overrides.
    # The replayed four weeks add 28 x 960 rows to the champion, with outcomes for about 70 % of them.
    replayed = 28 * 960
    assert tuple(endpoint) == ("production", 2)
    assert set(served) == {2, 3} and sum(served.values()) == 2000 + replayed
    assert 0.05 < served[2] / 2000 < 0.15
    assert 1200 < live_feedback < 1600 and feedback["override"] == 12
    assert 0.68 * replayed < feedback["label"] - live_feedback < 0.72 * replayed
    # Monitoring: a daily run per replayed day; accuracy falls from about 88 % to about 79 %, the first week
    # is quiet, drift, the accuracy decline and the fairness gap fire later, in one incident, acknowledged.
    assert len(runs_of_monitor) == 28 and {r[0] for r in runs_of_monitor} == {"succeeded"}

    def metrics(row: Any) -> dict[str, Any]:
        return json.loads(row[1]) if isinstance(row[1], str) else row[1]

    def breached(row: Any) -> set[str]:
        return {b["metric"] for b in (json.loads(row[2]) if isinstance(row[2], str) else row[2])}

    first_week = [metrics(r)["accuracy"] for r in runs_of_monitor[:7]]
    last_days = [metrics(r)["accuracy"] for r in runs_of_monitor[-3:]]
    assert 0.86 < sum(first_week) / 7 < 0.92 and 0.76 < sum(last_days) / 3 < 0.82
    assert not any(breached(r) for r in runs_of_monitor[:7])
    late = set().union(*(breached(r) for r in runs_of_monitor[-5:]))
    assert {"psi_max", "accuracy_decline", "demographic_parity_difference"} <= late
    assert len(incidents) == 1 and tuple(incidents[0])[:2] == ("critical", "acknowledged")
    # Data: the training data (passes its contract; PII and a protected attribute tagged), a messy export
    # (fails its contract) and its standardized derivative; the three SDK runs used the registered file.
    assert datasets == {
        "credit-applications-2026": 1,
        "branch-applications": 1,
        "branch-applications-clean": 1,
    }
    assert {k: bool(v) for k, v in validations.items()} == {
        "credit-applications-2026": True,
        "branch-applications": False,
    }
    assert derivations == ["standardize: dates, decimals, region spellings"]
    assert training_inputs == 3
    column_tags = json.loads(tags) if isinstance(tags, str) else tags
    assert column_tags["applicant_email"]["tags"] == ["pii"] and column_tags["gender"]["tags"] == [
        "protected"
    ]
    assert units == 3
    assert len(roles) == 8
    # Real models logged through the SDK (retail) and through the unchanged mlflow client (lending).
    assert models == {"credit-risk-scorer": 3, "lending-churn": 1}
    assert aliases == {
        "credit-risk-scorer@champion": 3,
        "credit-risk-scorer@challenger": 2,
        "lending-churn@champion": 1,
    }
    assert runs == 4
    assert flavors == {"sklearn"}
    # A second demo into the same home is refused rather than mixing two organizations.
    again = subprocess.run(
        [BRIDGEHEAD, "demo", "--home", str(home), "--no-serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 2 and "already holds" in again.stderr


def test_help_lists_every_command() -> None:
    result = subprocess.run([BRIDGEHEAD, "--help"], capture_output=True, text=True, timeout=60)
    for command in ("server", "db", "admin", "token", "audit", "demo"):
        assert command in result.stdout


def test_server_with_several_workers_migrates_once_and_serves(settings: Settings) -> None:
    env = bridgehead_env(home=str(settings.home), database_url=settings.resolved_database_url, secret_key="k")
    with running_server(env, "server", "--workers", "2") as url:
        for _ in range(6):
            assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}


def test_bad_settings_and_missing_schema_are_clear_errors_not_tracebacks(tmp_path: Path) -> None:
    env = bridgehead_env(home=str(tmp_path), database_url="mysql://nope")
    bad = subprocess.run([BRIDGEHEAD, "audit", "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "BRIDGEHEAD_DATABASE_URL" in bad.stderr
    assert "Traceback" not in bad.stderr
    empty = bridgehead_env(home=str(tmp_path), database_url=f"sqlite:///{tmp_path / 'empty.db'}")
    fresh = subprocess.run(
        [BRIDGEHEAD, "audit", "verify"], env=empty, capture_output=True, text=True, timeout=60
    )
    assert fresh.returncode == 2
    assert "bridgehead db upgrade" in fresh.stderr

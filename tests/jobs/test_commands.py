"""`bridgehead worker` and `bridgehead job`, run as real processes against the test's database."""

from __future__ import annotations

import subprocess

from bridgehead.settings import Settings
from bridgehead.store import Database
from tests.conftest import Org
from tests.jobs.conftest import enqueue, read
from tests.live import BRIDGEHEAD, bridgehead_env


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = bridgehead_env(
        home=str(settings.home),
        database_url=settings.resolved_database_url,
        secret_key="cli-test-key",
        jobs_retry_backoff_seconds="0",
    )
    return subprocess.run([BRIDGEHEAD, *args], env=env, capture_output=True, text=True, timeout=120)


def test_job_list_show_and_cancel(settings: Settings, orgs: Org, db: Database) -> None:
    job_id = enqueue(db, "t.nobody", {"file": "x.parquet"}, unit=orgs.central_id)
    listed = run(settings, "job", "list", "--status", "queued")
    assert listed.returncode == 0, listed.stderr
    assert job_id in listed.stdout and "t.nobody" in listed.stdout
    shown = run(settings, "job", "show", job_id)
    assert shown.returncode == 0 and '"file": "x.parquet"' in shown.stdout
    cancelled = run(settings, "job", "cancel", job_id, "--yes")
    assert cancelled.returncode == 0, cancelled.stderr
    assert read(db, job_id).status == "cancelled"
    again = run(settings, "job", "cancel", job_id, "--yes")
    assert again.returncode == 2 and "already cancelled" in again.stderr
    missing = run(settings, "job", "show", "0" * 32)
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_worker_once_runs_the_due_jobs_with_the_installed_kinds(
    settings: Settings, orgs: Org, db: Database
) -> None:
    # A batch scoring job queued by no one: the built-in handler runs and refuses it (it acts for a person).
    params = {"endpoint": "credit", "input": {"path": "jobs/x/input.parquet"}}
    job_id = enqueue(db, "serving.score", params, unit=orgs.central_id, max_attempts=2)
    done = run(settings, "worker", "--once")
    assert done.returncode == 0, done.stderr
    assert "1 job attempt(s) run" in done.stderr
    job = read(db, job_id)
    assert (job.status, job.attempts) == ("failed", 1)  # a 4xx error: not retried
    assert job.error.startswith("PermissionDenied: This job was queued by the system")
    unknown = run(settings, "worker", "--once", "--executor", "nope")
    assert unknown.returncode == 2 and "No job executor named 'nope'; installed: thread" in unknown.stderr

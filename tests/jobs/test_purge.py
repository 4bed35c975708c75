"""Retention: finished jobs past the cutoff are deleted with their files (and nothing outside their directory),
queued and running jobs never are; one audit event per purge; workers purge at start and then hourly unless the
retention is 0; `bridgehead job purge` does it now."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from bridgehead.audit.models import AuditEvent
from bridgehead.errors import StoreUnavailable
from bridgehead.jobs import service
from bridgehead.jobs.models import Job
from bridgehead.jobs.worker import RETENTION_ACTOR
from bridgehead.settings import Settings
from bridgehead.store import Database, utcnow
from bridgehead.store.artifacts import ArtifactStore
from tests.conftest import Org
from tests.jobs.conftest import SYSTEM, Workers, enqueue, read
from tests.live import BRIDGEHEAD, bridgehead_env


def _aged(db: Database, job_id: str, status: str, days: float) -> str:
    """Put a job in ``status`` with its finish time ``days`` ago (also for queued and running jobs, so that only
    their status can keep them)."""
    values: dict[str, object] = {"status": status, "finished_at": utcnow() - timedelta(days=days)}
    if status == "running":
        values.update(worker_id="busy-worker", attempts=1, heartbeat_at=utcnow())
    with db.session(write=True) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))
    return job_id


def _job(db: Database, orgs: Org, status: str, days: float) -> str:
    return _aged(db, enqueue(db, "t.ok", unit=orgs.central_id), status, days)


def _exists(db: Database, job_id: str) -> bool:
    with db.session() as session:
        return session.get(Job, job_id) is not None


def _purges(db: Database) -> list[AuditEvent]:
    with db.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "job.purge")))


def _store(settings: Settings) -> ArtifactStore:
    return ArtifactStore(settings.resolved_artifact_root)


def _files(store: ArtifactStore, job_id: str) -> None:
    store.put_bytes(f"jobs/{job_id}/input.parquet", b"in")
    store.put_bytes(f"jobs/{job_id}/output.parquet", b"out")


def test_finished_jobs_past_the_cutoff_go_with_their_files(
    settings: Settings, orgs: Org, db: Database
) -> None:
    store = _store(settings)
    old = {status: _job(db, orgs, status, 40) for status in ("succeeded", "failed", "cancelled")}
    young = _job(db, orgs, "succeeded", 5)
    queued = _job(db, orgs, "queued", 40)
    running = _job(db, orgs, "running", 40)
    for job_id in [*old.values(), young, queued, running]:
        _files(store, job_id)
    store.put_bytes("models/m1/model.onnx", b"model")

    with db.session(write=True) as session:
        purged = service.purge_finished(session, utcnow() - timedelta(days=30), artifacts=store)

    assert purged == 3
    for job_id in old.values():
        assert not _exists(db, job_id)
        assert not store.exists(f"jobs/{job_id}")
    for job_id in (young, queued, running):
        assert _exists(db, job_id)
        assert store.is_file(f"jobs/{job_id}/output.parquet") and store.is_file(
            f"jobs/{job_id}/input.parquet"
        )
    assert (read(db, queued).status, read(db, running).status) == ("queued", "running")
    assert store.get_bytes("models/m1/model.onnx") == b"model"


def test_a_purge_never_deletes_outside_the_artifact_root(
    settings: Settings, orgs: Org, db: Database, tmp_path: Path
) -> None:
    store = _store(settings)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    linked = _job(db, orgs, "succeeded", 40)
    jobs_dir = Path(settings.resolved_artifact_root) / "jobs"
    jobs_dir.mkdir(parents=True)
    (jobs_dir / linked).symlink_to(outside, target_is_directory=True)  # a link out of the root
    odd = _aged(db, enqueue(db, "t.ok", unit=orgs.central_id, job_id=".."), "failed", 40)
    store.put_bytes("other/keep.bin", b"x")

    with db.session(write=True) as session:
        assert service.purge_finished(session, utcnow() - timedelta(days=30), artifacts=store) == 2

    assert (outside / "precious.txt").read_text() == "keep me"
    assert store.get_bytes("other/keep.bin") == b"x"
    assert not _exists(db, linked) and not _exists(db, odd)


def test_a_store_error_stops_the_purge_and_keeps_the_rows(
    settings: Settings, orgs: Org, db: Database
) -> None:
    store = _store(settings)
    job_id = _job(db, orgs, "succeeded", 40)

    def away(path: str) -> None:
        raise OSError("bucket unreachable")

    store.delete = away  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable, match="bucket unreachable"):
        service.purge(db, SYSTEM, utcnow() - timedelta(days=30), artifacts=store)
    assert _exists(db, job_id)
    assert _purges(db) == []


def test_the_purge_reads_only_the_jobs_past_the_cutoff_by_its_index(db: Database) -> None:
    """The purge reads only the jobs past its cutoff, by ix_jobs_status_finished_at (migration 0009): the plan names it."""
    stmt = (
        service._purgeable(utcnow())
        .order_by(Job.finished_at, Job.id)
        .limit(service.PURGE_BATCH)
        .compile(db.engine, compile_kwargs={"literal_binds": True})
    )
    with db.engine.connect() as conn:
        if db.is_sqlite:
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {stmt}"))
        else:
            conn.exec_driver_sql(
                "SET enable_seqscan = off"
            )  # the table is tiny here: make the planner choose
            plan = " ".join(str(row[0]) for row in conn.exec_driver_sql(f"EXPLAIN {stmt}"))
    assert "ix_jobs_status_finished_at" in plan, plan


def test_a_purge_runs_in_batches_and_is_audited_once(orgs: Org, db: Database) -> None:
    ids = [_job(db, orgs, "succeeded", 40 + i) for i in range(7)]
    keep = _job(db, orgs, "failed", 1)
    cutoff = utcnow() - timedelta(days=30)

    assert service.purge(db, SYSTEM, cutoff, batch=3) == 7

    assert not any(_exists(db, job_id) for job_id in ids) and _exists(db, keep)
    (event,) = _purges(db)
    assert (event.actor_email, event.object_type) == (SYSTEM.email, "job")
    assert event.changes == {"count": 7, "finished_before": cutoff.isoformat()}
    assert service.purge(db, SYSTEM, cutoff) == 0
    assert len(_purges(db)) == 1  # nothing purged, nothing recorded


def test_the_worker_purges_when_it_starts_then_hourly(
    workers: Workers, settings: Settings, orgs: Org, db: Database
) -> None:
    assert settings.jobs_retention_days == 30
    first = _job(db, orgs, "succeeded", 31)
    young = _job(db, orgs, "succeeded", 29)
    worker = workers({})
    worker.run_once()
    assert not _exists(db, first) and _exists(db, young)
    (event,) = _purges(db)
    assert event.actor_email == RETENTION_ACTOR.email and event.changes["count"] == 1

    second = _job(db, orgs, "cancelled", 31)
    worker.run_once()
    assert _exists(db, second)  # within the hour: no purge
    worker._next_purge = 0.0  # the hour has passed
    worker.run_once()
    assert not _exists(db, second) and _exists(db, young)


def test_retention_zero_turns_the_workers_purge_off(workers: Workers, orgs: Org, db: Database) -> None:
    ancient = _job(db, orgs, "succeeded", 3650)
    worker = workers({}, jobs_retention_days=0)
    worker.run_once()
    worker.run_once()
    assert _exists(db, ancient)
    assert worker._purger is None and _purges(db) == []


def test_the_retention_setting_is_never_negative() -> None:
    assert Settings(jobs_retention_days=0).jobs_retention_days == 0
    with pytest.raises(ValidationError, match="jobs_retention_days"):
        Settings(jobs_retention_days=-1)


def _cli(
    settings: Settings, *args: str, retention: str = "30", stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    env = bridgehead_env(
        home=str(settings.home),
        database_url=settings.resolved_database_url,
        secret_key="cli-test-key",
        jobs_retention_days=retention,
    )
    return subprocess.run(
        [BRIDGEHEAD, "job", "purge", *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def test_the_purge_command(settings: Settings, orgs: Org, db: Database) -> None:
    store = _store(settings)
    old = [_job(db, orgs, "succeeded", 10), _job(db, orgs, "failed", 8)]
    young = _job(db, orgs, "succeeded", 2)
    running = _job(db, orgs, "running", 10)
    for job_id in [*old, young]:
        _files(store, job_id)

    negative = _cli(settings, "--older-than-days", "-1", "--yes")
    assert negative.returncode == 2, negative.stderr
    assert "--older-than-days must be between 0 and 36500 (got -1)" in negative.stderr
    off = _cli(settings, "--yes", retention="0")
    assert off.returncode == 0, off.stderr
    assert "retention is off" in off.stderr
    declined = _cli(settings, "--older-than-days", "5", stdin="n\n")
    assert declined.returncode == 1 and "Delete every job that finished before" in declined.stdout
    assert all(_exists(db, job_id) for job_id in [*old, young, running])

    done = _cli(settings, "--yes", retention="5")  # the default: BRIDGEHEAD_JOBS_RETENTION_DAYS
    assert done.returncode == 0, done.stderr
    assert "2 job(s) purged (finished before" in done.stdout
    assert not any(_exists(db, job_id) or store.exists(f"jobs/{job_id}") for job_id in old)
    assert _exists(db, young) and store.is_file(f"jobs/{young}/output.parquet") and _exists(db, running)
    (event,) = _purges(db)
    assert event.actor_email.startswith("cli:") and event.changes["count"] == 2

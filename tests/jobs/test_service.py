"""The queue's guarantees on both engines: a job is claimed once, retries back off, stale jobs are taken back,
cancelled jobs stay cancelled, and a worker that lost a job cannot write to it."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from bridgehead.errors import Conflict, StoreUnavailable, ValidationFailed
from bridgehead.jobs import service
from bridgehead.jobs.models import Job
from bridgehead.jobs.worker import JobContext
from bridgehead.settings import Settings
from bridgehead.store import Database, utcnow
from tests.conftest import Org
from tests.jobs.conftest import SYSTEM, Workers, enqueue, read, wait_for


def _ok(ctx: JobContext) -> dict[str, Any]:
    return {"echo": ctx.params.get("n"), "attempt": ctx.attempt}


def test_concurrent_claims_never_take_the_same_job(settings: Settings, orgs: Org, db: Database) -> None:
    ids = {enqueue(db, "t.ok", {"n": i}, unit=orgs.central_id) for i in range(40)}
    claims: list[tuple[str, str]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def claimer(name: str) -> None:
        own = Database(settings.resolved_database_url)  # its own engine, as a separate process would have
        try:
            start.wait()
            while True:
                with own.session(write=True) as session:
                    job = service.claim_next(session, name, {"t.ok"})
                if job is None:
                    return
                with lock:
                    claims.append((name, job.id))
        finally:
            own.dispose()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    claimed = [job_id for _, job_id in claims]
    assert len(claimed) == len(set(claimed)) == 40
    assert set(claimed) == ids
    for name, job_id in claims:
        job = read(db, job_id)
        assert (job.status, job.worker_id, job.attempts) == ("running", name, 1)


# SKIP LOCKED is PostgreSQL's (SQLite serializes claims on its write lock): this test runs on PostgreSQL only.
@pytest.mark.parametrize("engine_name", ["postgresql"], indirect=True)
def test_postgresql_claims_skip_a_row_another_worker_holds(
    engine_name: str, settings: Settings, orgs: Org, db: Database
) -> None:
    first = enqueue(db, "t.ok", unit=orgs.central_id)
    second = enqueue(db, "t.ok", unit=orgs.central_id)
    other = Database(settings.resolved_database_url)
    try:
        with db.session(write=True) as holding:
            mine = service.claim_next(holding, "a", {"t.ok"})
            assert mine is not None and mine.id == first
            # Worker a has not committed yet: b must not wait for it, nor take its row.
            with other.session(write=True) as session:
                theirs = service.claim_next(session, "b", {"t.ok"})
            assert theirs is not None and theirs.id == second
    finally:
        other.dispose()
    assert read(db, first).worker_id == "a" and read(db, second).worker_id == "b"


def test_only_kinds_the_worker_handles_are_claimed(orgs: Org, db: Database) -> None:
    job_id = enqueue(db, "t.other", unit=orgs.central_id)
    with db.session(write=True) as session:
        assert service.claim_next(session, "w", {"t.ok"}) is None
    assert read(db, job_id).status == "queued"


def test_failed_attempts_retry_with_exponential_backoff(workers: Workers, orgs: Org, db: Database) -> None:
    def flaky(ctx: JobContext) -> dict[str, Any]:
        if ctx.attempt < 3:
            raise RuntimeError(f"flaky {ctx.attempt}")
        return {"attempt": ctx.attempt}

    worker = workers({"t.flaky": flaky})
    job_id = enqueue(db, "t.flaky", unit=orgs.central_id, max_attempts=3)
    assert worker.run_once() == 1
    job = read(db, job_id)
    assert (job.status, job.attempts, job.error) == ("queued", 1, "RuntimeError: flaky 1")
    assert job.heartbeat_at is not None
    assert job.run_after - job.heartbeat_at == timedelta(seconds=0.5)  # the base backoff
    assert worker.run_once() == 0  # not due yet
    assert read(db, job_id).attempts == 1

    assert wait_for(lambda: utcnow() >= read(db, job_id).run_after)
    assert worker.run_once() == 1
    job = read(db, job_id)
    assert (job.status, job.attempts, job.error) == ("queued", 2, "RuntimeError: flaky 2")
    assert job.heartbeat_at is not None
    assert job.run_after - job.heartbeat_at == timedelta(seconds=1.0)  # doubled

    assert wait_for(lambda: utcnow() >= read(db, job_id).run_after)
    assert worker.run_once() == 1
    job = read(db, job_id)
    assert (job.status, job.attempts, job.result, job.error) == ("succeeded", 3, {"attempt": 3}, "")
    assert job.finished_at is not None and job.progress == 1.0


def test_a_job_fails_once_its_attempts_are_used(workers: Workers, orgs: Org, db: Database) -> None:
    def broken(ctx: JobContext) -> None:
        raise RuntimeError("still broken")

    worker = workers({"t.broken": broken}, jobs_retry_backoff_seconds=0)
    job_id = enqueue(db, "t.broken", unit=orgs.central_id, max_attempts=2)
    assert worker.run_once() == 2  # the retry was due at once and ran in the same call
    job = read(db, job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 2, "RuntimeError: still broken")
    assert job.finished_at is not None and job.result is None


def test_errors_of_the_input_are_not_retried(workers: Workers, orgs: Org, db: Database) -> None:
    def refuses(ctx: JobContext) -> None:
        raise ValidationFailed("column 'age' is missing")

    worker = workers({"t.refuses": refuses}, jobs_retry_backoff_seconds=0)
    job_id = enqueue(db, "t.refuses", unit=orgs.central_id, max_attempts=3)
    assert worker.run_once() == 1
    job = read(db, job_id)
    assert (job.status, job.attempts, job.error) == ("failed", 1, "ValidationFailed: column 'age' is missing")


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        (None, 0.5),  # the queue's own backoff
        (0.1, 0.5),  # never shorter than the backoff
        (7, 7.0),
        (86_400, service.MAX_RETRY_AFTER_S),  # capped
        ("soon", 0.5),  # not a number: ignored
        (-3, 0.5),
        (True, 0.5),
    ],
)
def test_a_handler_may_ask_for_a_longer_wait_before_the_retry(
    workers: Workers, orgs: Org, db: Database, asked: Any, expected: float
) -> None:
    def busy(ctx: JobContext) -> None:
        raise StoreUnavailable("the receiver is busy", details={"retry_after_seconds": asked})

    worker = workers({"t.busy": busy})
    job_id = enqueue(db, "t.busy", unit=orgs.central_id, max_attempts=3)
    assert worker.run_once() == 1
    job = read(db, job_id)
    assert job.status == "queued" and job.heartbeat_at is not None
    assert job.run_after - job.heartbeat_at == timedelta(seconds=expected)


def test_backoff_doubles_and_is_capped() -> None:
    assert [service.backoff_seconds(10, a) for a in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert service.backoff_seconds(10, 30) == service.BACKOFF_CAP_SECONDS


def _backdate_heartbeat(db: Database, job_id: str, seconds: float) -> None:
    with db.session(write=True) as session:
        session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_a_dead_workers_job_is_taken_back_and_its_late_result_dropped(
    workers: Workers, orgs: Org, db: Database
) -> None:
    job_id = enqueue(db, "t.ok", {"n": 7}, unit=orgs.central_id, max_attempts=3)
    with db.session(write=True) as session:
        dead = service.claim_next(session, "dead-worker", {"t.ok"})
    assert dead is not None and dead.id == job_id
    _backdate_heartbeat(db, job_id, 10)  # past jobs_stale_seconds (1 s): the worker died

    live = workers({"t.ok": _ok}, jobs_retry_backoff_seconds=0)
    assert live.run_once() == 1
    job = read(db, job_id)
    assert (job.status, job.attempts, job.worker_id) == ("succeeded", 2, live.worker_id)
    assert job.result == {"echo": 7, "attempt": 2}
    # The dead worker comes back and reports: nothing it writes lands.
    with db.session(write=True) as session:
        assert not service.complete(session, "dead-worker", job_id, 1, {"echo": "late"})
        assert not service.report_progress(session, "dead-worker", job_id, 1, 0.5)
        assert service.fail(session, "dead-worker", job_id, 1, "late", retry=True, backoff_base=0) is None
    assert read(db, job_id).result == {"echo": 7, "attempt": 2}


def test_a_live_workers_job_is_not_taken_back(workers: Workers, orgs: Org, db: Database) -> None:
    job_id = enqueue(db, "t.ok", unit=orgs.central_id)
    with db.session(write=True) as session:
        assert service.claim_next(session, "busy-worker", {"t.ok"}) is not None
    assert workers({"t.ok": _ok}).run_once() == 0
    job = read(db, job_id)
    assert (job.status, job.worker_id) == ("running", "busy-worker")


def test_a_stale_job_without_attempts_left_fails(workers: Workers, orgs: Org, db: Database) -> None:
    job_id = enqueue(db, "t.ok", unit=orgs.central_id, max_attempts=1)
    with db.session(write=True) as session:
        assert service.claim_next(session, "dead-worker", {"t.ok"}) is not None
    _backdate_heartbeat(db, job_id, 10)
    assert workers({"t.ok": _ok}).run_once() == 0
    job = read(db, job_id)
    assert job.status == "failed" and job.worker_id is None
    assert "dead-worker stopped reporting" in job.error


def test_cancelled_queued_job_never_runs(workers: Workers, orgs: Org, db: Database) -> None:
    job_id = enqueue(db, "t.ok", unit=orgs.central_id)
    with db.session(write=True) as session:
        assert service.cancel(session, SYSTEM, job_id).status == "cancelled"
    assert workers({"t.ok": _ok}).run_once() == 0
    job = read(db, job_id)
    assert (job.status, job.attempts) == ("cancelled", 0) and job.finished_at is not None
    with pytest.raises(Conflict), db.session(write=True) as session:
        service.cancel(session, SYSTEM, job_id)


def test_a_running_job_stops_when_cancelled(workers: Workers, orgs: Org, db: Database) -> None:
    started = threading.Event()
    seen: dict[str, str] = {}

    def long(ctx: JobContext) -> dict[str, Any]:
        started.set()
        try:
            for i in range(2000):
                ctx.progress(i / 2000, f"step {i}")
                threading.Event().wait(0.01)
        except Exception as exc:
            seen["stopped"] = type(exc).__name__
            raise
        return {"finished": True}

    worker = workers({"t.long": long})
    job_id = enqueue(db, "t.long", unit=orgs.central_id)
    worker.start()
    assert started.wait(30)
    assert wait_for(lambda: read(db, job_id).progress > 0)
    with db.session(write=True) as session:
        service.cancel(session, SYSTEM, job_id)
    assert wait_for(lambda: "stopped" in seen)
    assert seen["stopped"] == "JobCancelled"
    assert wait_for(lambda: not worker._running)
    job = read(db, job_id)
    assert (job.status, job.result, job.attempts) == ("cancelled", None, 1)


def test_a_stopping_worker_gives_its_jobs_back(workers: Workers, orgs: Org, db: Database) -> None:
    started = threading.Event()

    def long(ctx: JobContext) -> None:
        started.set()
        while True:
            ctx.check_cancelled()
            threading.Event().wait(0.01)

    worker = workers({"t.long": long})
    job_id = enqueue(db, "t.long", unit=orgs.central_id)
    worker.start()
    assert started.wait(30)
    worker.stop(timeout=10)
    job = read(db, job_id)
    # Back in the queue, its attempt not counted, for the next worker.
    assert (job.status, job.attempts, job.worker_id) == ("queued", 0, None)


def test_kinds_are_checked_and_jobs_belong_to_a_unit(orgs: Org, db: Database) -> None:
    with pytest.raises(ValidationFailed), db.session(write=True) as session:
        service.enqueue(session, SYSTEM, "Bad Kind!", {}, business_unit_id=orgs.central_id)
    with pytest.raises(ValidationFailed), db.session(write=True) as session:
        service.enqueue(session, SYSTEM, "t.ok", {})

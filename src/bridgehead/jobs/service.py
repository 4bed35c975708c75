"""The job queue's operations: enqueue, read and cancel (for people and the host's CLI); claim, heartbeat,
progress, complete, fail and reclaim (for workers); purge (retention, for workers and the host's CLI).

Claiming is atomic on both engines. PostgreSQL picks the next due job with ``SELECT ... FOR UPDATE SKIP
LOCKED``, so concurrent workers pick different rows without waiting for each other; SQLite write transactions
start with ``BEGIN IMMEDIATE`` (``store.db``), so claims are serialized by the database's write lock. Either way
the row is then taken with a conditional ``UPDATE ... WHERE status = 'queued'`` and counted: a job is never
claimed twice.

A worker's later writes (progress, result, failure) name the worker and the attempt; a worker that lost the job
(cancelled, or reclaimed because its heartbeat went stale) finds no row to update and its work is dropped.

Timestamps come from each process's clock (UTC): keep the hosts of servers and workers in time (NTP), since a
heartbeat is judged stale against the reclaiming process's clock.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.orm import Session

from bridgehead.audit.service import ActorRef, record
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.errors import BridgeheadError, Conflict, NotFound, StoreUnavailable, ValidationFailed
from bridgehead.jobs.models import FINISHED, STATUSES, Job
from bridgehead.store import Database
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.store.base import new_id, utcnow

__all__ = [
    "BACKOFF_CAP_SECONDS",
    "MAX_RETRY_AFTER_S",
    "PURGE_BATCH",
    "ClaimedJob",
    "backoff_seconds",
    "cancel",
    "claim_next",
    "complete",
    "enqueue",
    "fail",
    "get_job",
    "has_due",
    "has_purgeable",
    "has_stale",
    "heartbeat",
    "list_jobs",
    "purge",
    "purge_finished",
    "reclaim_stale",
    "record_output_read",
    "release",
    "report_progress",
]

BACKOFF_CAP_SECONDS = 3600.0
# The longest delay a failed attempt's `retry_after_s` may ask for: a receiver cannot park a job for days.
MAX_RETRY_AFTER_S = 3600.0
# Finished jobs deleted per transaction: SQLite's write lock is never held for long.
PURGE_BATCH = 500
_KIND = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
# A job's files live under jobs/<id>/; an id that is not one plain path segment has no such directory.
_JOB_DIR_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

log = logging.getLogger("bridgehead.jobs")

# A person through the API, or the host operator (the CLI on the server, a schedule), who sees every job.
Actor = Principal | ActorRef


@dataclass(frozen=True)
class ClaimedJob:
    """What a worker needs to run one claimed attempt of a job (plain data: it can travel to another process)."""

    id: str
    kind: str
    params: dict[str, Any]
    attempt: int
    max_attempts: int
    business_unit_id: str
    created_by: str | None
    worker_id: str


def backoff_seconds(base: float, attempt: int) -> float:
    """Delay before the retry that follows failed attempt ``attempt`` (1, 2, ...): base, 2 x base, 4 x base..."""
    return float(min(base * 2 ** max(attempt - 1, 0), BACKOFF_CAP_SECONDS))


# --- people and the CLI -----------------------------------------------------------------------------------


def enqueue(
    session: Session,
    actor: Actor,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    business_unit_id: str | None = None,
    created_by: str | None = None,
    max_attempts: int = 3,
    run_after: datetime | None = None,
    job_id: str | None = None,
    audit: bool = True,
) -> Job:
    """Queue a job. A person's job belongs to their business unit and runs on their behalf; the system names
    the unit (and, if any, the person). ``audit=False`` for frequent system jobs (scheduled monitors), whose
    outcomes are recorded by what they do."""
    if not _KIND.match(kind):
        raise ValidationFailed(
            "A job kind is 1-100 lower-case letters, digits, '.', '_' or '-'.", details={"kind": kind[:100]}
        )
    if isinstance(actor, Principal):
        business_unit_id = business_unit_id or actor.business_unit_id
        created_by = created_by or actor.person_id
    if not business_unit_id:
        raise ValidationFailed("A job belongs to a business unit; name one.", details={"kind": kind})
    if max_attempts < 1:
        raise ValidationFailed("A job needs at least one attempt.", details={"max_attempts": max_attempts})
    now = utcnow()
    job = Job(
        id=job_id or new_id(),
        kind=kind,
        business_unit_id=business_unit_id,
        created_by=created_by,
        status="queued",
        params=params or {},
        result=None,
        error="",
        progress=0.0,
        progress_message="",
        attempts=0,
        max_attempts=max_attempts,
        created_at=now,
        run_after=run_after or now,
    )
    session.add(job)
    session.flush()
    if audit:
        record(
            session, actor, "job.create", "job", job.id,
            business_unit_id=business_unit_id, changes={"kind": kind, "params": job.params},
        )  # fmt: skip
    return job


def _visible(viewer: Principal | None) -> Any:
    stmt = select(Job)
    if viewer is not None and not viewer.sees_all_units:
        stmt = stmt.where(Job.business_unit_id == viewer.business_unit_id)
    return stmt


def list_jobs(
    session: Session,
    viewer: Principal | None,
    *,
    kind: str | None = None,
    status: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[Job], int]:
    """Jobs of the viewer's unit (every unit for central staff and the host's CLI), newest first, and their
    total."""
    if viewer is not None:
        require(viewer, Action.JOBS_READ)
    if status is not None and status not in STATUSES:
        raise ValidationFailed(
            f"Unknown status {status!r}; use one of {', '.join(STATUSES)}.", details={"status": status}
        )
    stmt = _visible(viewer)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if status:
        stmt = stmt.where(Job.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Job.created_at.desc(), Job.id).limit(limit).offset(offset)).all()
    return rows, int(total)


def get_job(session: Session, viewer: Principal | None, job_id: str, *, lock: bool = False) -> Job:
    """A job the viewer may see; another unit's answers "not found", as one that does not exist."""
    if viewer is not None:
        require(viewer, Action.JOBS_READ)
    stmt = _visible(viewer).where(Job.id == job_id)
    found: Job | None = session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None:
        raise NotFound(f"Job {job_id!r} not found.", details={"job_id": job_id})
    return found


def cancel(session: Session, actor: Actor, job_id: str) -> Job:
    """Cancel a queued or running job. A running job's worker sees it at its next progress report or heartbeat
    and stops; whatever it produces afterwards is dropped. Its author may always cancel a job; cancelling
    someone else's takes ``jobs.cancel``."""
    viewer = actor if isinstance(actor, Principal) else None
    job = get_job(session, viewer, job_id, lock=True)
    if viewer is not None and job.created_by != viewer.person_id:
        require(viewer, Action.JOBS_CANCEL)
    if job.status in FINISHED:
        raise Conflict(
            f"Job {job_id!r} is already {job.status}.", details={"job_id": job_id, "status": job.status}
        )
    before = job.status
    job.status = "cancelled"
    job.finished_at = utcnow()
    session.flush()
    record(
        session, actor, "job.cancel", "job", job.id,
        business_unit_id=job.business_unit_id, changes={"kind": job.kind, "status": {"from": before, "to": "cancelled"}},
    )  # fmt: skip
    return job


def record_output_read(session: Session, principal: Principal, job: Job) -> None:
    """Audits a download of a job's output (scored inputs may hold personal data)."""
    record(
        session, principal, "job.output.read", "job", job.id,
        business_unit_id=job.business_unit_id, changes={"kind": job.kind},
    )  # fmt: skip


# --- workers ------------------------------------------------------------------------------------------------


def _due(kinds: Collection[str], now: datetime) -> Any:
    return select(Job.id).where(Job.status == "queued", Job.run_after <= now, Job.kind.in_(sorted(kinds)))


def has_due(session: Session, kinds: Collection[str]) -> bool:
    """Whether a job of these kinds waits to be claimed: a cheap read, so that an idle worker's poll never takes
    SQLite's write lock."""
    if not kinds:
        return False
    return session.scalar(_due(kinds, utcnow()).limit(1)) is not None


def claim_next(session: Session, worker_id: str, kinds: Collection[str]) -> ClaimedJob | None:
    """Take the oldest due job of these kinds for this worker (in a write session), or None."""
    if not kinds:
        return None
    now = utcnow()
    stmt = _due(kinds, now).order_by(Job.run_after, Job.created_at, Job.id).limit(1)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    for _ in range(5):
        job_id = session.scalar(stmt)
        if job_id is None:
            return None
        taken = cast(
            CursorResult[Any],
            session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status == "queued")
                .values(
                    status="running",
                    worker_id=worker_id,
                    attempts=Job.attempts + 1,
                    started_at=now,
                    heartbeat_at=now,
                    progress=0.0,
                    progress_message="",
                )
                .execution_options(synchronize_session=False)
            ),
        )
        if taken.rowcount == 1:
            row = session.execute(
                select(
                    Job.kind, Job.params, Job.attempts, Job.max_attempts, Job.business_unit_id, Job.created_by
                ).where(Job.id == job_id)
            ).one()
            return ClaimedJob(
                id=job_id,
                kind=row.kind,
                params=dict(row.params or {}),
                attempt=row.attempts,
                max_attempts=row.max_attempts,
                business_unit_id=row.business_unit_id,
                created_by=row.created_by,
                worker_id=worker_id,
            )
    return None


def _owned(job_id: str, worker_id: str, attempt: int) -> Any:
    return (
        (Job.id == job_id)
        & (Job.status == "running")
        & (Job.worker_id == worker_id)
        & (Job.attempts == attempt)
    )


def _update(session: Session, where: Any, **values: Any) -> int:
    result = cast(
        CursorResult[Any],
        session.execute(
            update(Job).where(where).values(**values).execution_options(synchronize_session=False)
        ),
    )
    return int(result.rowcount)


def heartbeat(session: Session, worker_id: str, claims: Sequence[tuple[str, int]]) -> set[str]:
    """Mark this worker's running jobs alive; returns the ids (of ``claims``: id, attempt) still its own."""
    now = utcnow()
    mine = set()
    for job_id, attempt in claims:
        if _update(session, _owned(job_id, worker_id, attempt), heartbeat_at=now):
            mine.add(job_id)
    return mine


def report_progress(
    session: Session, worker_id: str, job_id: str, attempt: int, fraction: float, message: str = ""
) -> bool:
    """Record progress (0..1) and a heartbeat; False when the job is no longer this worker's (cancelled or
    reclaimed), which tells the handler to stop."""
    fraction = min(max(float(fraction), 0.0), 1.0) if fraction == fraction else 0.0
    return bool(
        _update(
            session,
            _owned(job_id, worker_id, attempt),
            progress=fraction,
            progress_message=message[:500],
            heartbeat_at=utcnow(),
        )
    )


def complete(
    session: Session, worker_id: str, job_id: str, attempt: int, result: dict[str, Any] | None
) -> bool:
    now = utcnow()
    return bool(
        _update(
            session,
            _owned(job_id, worker_id, attempt),
            status="succeeded",
            result=result,
            error="",
            progress=1.0,
            finished_at=now,
            heartbeat_at=now,
        )
    )


def fail(
    session: Session,
    worker_id: str,
    job_id: str,
    attempt: int,
    error: str,
    *,
    retry: bool,
    backoff_base: float,
    retry_after_s: float | None = None,
) -> str | None:
    """Record a failed attempt: back to the queue after a backoff while attempts remain and ``retry`` (the
    failure may pass), else failed. ``retry_after_s`` (what the other side asked for, e.g. an HTTP
    ``Retry-After``) lengthens the backoff, up to ``MAX_RETRY_AFTER_S``; it never shortens it. Returns the new
    status, or None when the job was no longer this worker's."""
    job: Job | None = session.scalar(select(Job).where(_owned(job_id, worker_id, attempt)).with_for_update())
    if job is None:
        return None
    now = utcnow()
    job.error = error[:10_000]
    job.heartbeat_at = now
    if retry and job.attempts < job.max_attempts:
        job.status = "queued"
        job.worker_id = None
        delay = backoff_seconds(backoff_base, job.attempts)
        if retry_after_s is not None and math.isfinite(retry_after_s):
            delay = max(delay, min(retry_after_s, MAX_RETRY_AFTER_S))
        job.run_after = now + timedelta(seconds=delay)
    else:
        job.status = "failed"
        job.finished_at = now
    session.flush()
    return job.status


def release(session: Session, worker_id: str, job_id: str, attempt: int) -> bool:
    """Give a job back to the queue without using up its attempt (the worker is shutting down)."""
    return bool(
        _update(
            session,
            _owned(job_id, worker_id, attempt),
            status="queued",
            worker_id=None,
            attempts=Job.attempts - 1,
            run_after=utcnow(),
            progress_message="released by a worker that stopped",
        )
    )


def reclaim_stale(session: Session, stale_seconds: float, backoff_base: float) -> list[str]:
    """Take back running jobs whose worker stopped marking them alive (it died or lost the database): queued
    again after a backoff while attempts remain, failed otherwise. Returns their ids."""
    now = utcnow()
    stmt = select(Job).where(
        Job.status == "running", Job.heartbeat_at < now - timedelta(seconds=stale_seconds)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    reclaimed = []
    for job in session.scalars(stmt.limit(100)):
        job.error = (
            f"Worker {job.worker_id} stopped reporting (last heartbeat {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC); "
            f"attempt {job.attempts} of {job.max_attempts} abandoned."
        )
        if job.attempts < job.max_attempts:
            job.status = "queued"
            job.run_after = now + timedelta(seconds=backoff_seconds(backoff_base, job.attempts))
        else:
            job.status = "failed"
            job.finished_at = now
        job.worker_id = None
        reclaimed.append(job.id)
    session.flush()
    return reclaimed


def has_stale(session: Session, stale_seconds: float) -> bool:
    """Whether any running job's heartbeat is stale (a read, before taking the write lock to reclaim)."""
    cutoff = utcnow() - timedelta(seconds=stale_seconds)
    found = session.scalar(select(Job.id).where(Job.status == "running", Job.heartbeat_at < cutoff).limit(1))
    return found is not None


# --- retention ----------------------------------------------------------------------------------------------


def _purgeable(older_than: datetime) -> Any:
    # Finished is final (cancel refuses it, a worker's late writes need a running row): these never run again.
    return select(Job.id).where(Job.status.in_(FINISHED), Job.finished_at < older_than)


def has_purgeable(session: Session, older_than: datetime) -> bool:
    """Whether a job finished before ``older_than`` is left (a read, before taking the write lock to purge)."""
    return session.scalar(_purgeable(older_than).limit(1)) is not None


def _remove_files(artifacts: ArtifactStore, job_id: str) -> None:
    if not _JOB_DIR_ID.match(job_id):
        return
    try:
        artifacts.delete(f"jobs/{job_id}")
    except BridgeheadError as exc:
        if exc.status >= 500:
            raise
        # The store refused the path (a link out of its root): what it points to is not Bridgehead's to delete.
        log.warning("job %s: files not removed: %s", job_id, exc.message)
    except Exception as exc:
        raise StoreUnavailable(
            f"Could not remove the files of job {job_id} from the artifact store: {exc}",
            details={"job_id": job_id},
        ) from exc


def purge_finished(
    session: Session,
    older_than: datetime,
    *,
    artifacts: ArtifactStore | None = None,
    limit: int = PURGE_BATCH,
) -> int:
    """Delete up to ``limit`` jobs that finished (succeeded, failed or cancelled) before ``older_than``, oldest
    first, in the caller's transaction, with their files under ``jobs/<id>/`` in ``artifacts``; queued and
    running jobs are never touched. Returns how many were deleted.

    Files go first: should the transaction then fail, the rows stay (their output answers "no longer in the
    artifact store") and the next purge takes them, whereas files whose row is gone would never be found
    again. A store error stops the purge (StoreUnavailable) with this batch's rows kept."""
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware (UTC)")
    stmt = _purgeable(older_than).order_by(Job.finished_at, Job.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)  # another worker purging at the same time takes others
    ids = list(session.scalars(stmt))
    if not ids:
        return 0
    if artifacts is not None:
        for job_id in ids:
            _remove_files(artifacts, job_id)
    deleted = cast(
        CursorResult[Any],
        session.execute(
            delete(Job)
            .where(Job.id.in_(ids), Job.status.in_(FINISHED), Job.finished_at < older_than)
            .execution_options(synchronize_session=False)
        ),
    )
    return int(deleted.rowcount)


def purge(
    db: Database,
    actor: Actor,
    older_than: datetime,
    *,
    artifacts: ArtifactStore | None = None,
    batch: int = PURGE_BATCH,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Purge every job that finished before ``older_than`` (``purge_finished``), one write transaction per
    batch, and record one ``job.purge`` audit event for the run when any was deleted (also when a later batch
    fails: what was deleted stays deleted). ``should_stop`` is asked between batches (a worker shutting down).
    Returns how many were deleted."""
    with db.session() as session:
        if not has_purgeable(session, older_than):
            return 0
    total = 0
    try:
        while True:
            with db.session(write=True) as session:
                deleted = purge_finished(session, older_than, artifacts=artifacts, limit=batch)
            total += deleted
            if deleted < batch or (should_stop is not None and should_stop()):
                return total
    finally:
        if total:
            with db.session(write=True) as session:
                record(
                    session, actor, "job.purge", "job", "*",
                    changes={"count": total, "finished_before": older_than.isoformat()},
                )  # fmt: skip

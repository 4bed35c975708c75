"""Workers: claim due jobs from the database and run them through an executor.

- **Job kinds** (``JobKinds``): name -> handler. Plugins contribute theirs through the ``register_job_kinds``
  hook; a worker claims only the kinds it has a handler for.
- **Handlers** receive a ``JobContext``: the job's params, a progress callback, a cancellation check and a
  database session factory (plus the artifact store, the settings and resources shared between jobs).
- **Executors** run what a worker claims. The built-in ``thread`` executor runs jobs in threads of the worker's
  process; others (Ray) plug in through the ``register_executors`` hook and ``BRIDGEHEAD_JOBS_EXECUTOR``. An
  executor is handed the claimed job (plain data) and the in-process runner; a distributed executor runs
  ``run_claimed`` remotely instead, with an environment built from the same settings.
- **The worker loop** never stops over a job: a handler's exception fails (or retries) that job alone, and a
  failure of the loop itself (the database away) is logged and retried at the next poll. While jobs run, the
  loop marks them alive every ``BRIDGEHEAD_JOBS_HEARTBEAT_SECONDS``; a worker that dies leaves stale heartbeats,
  and any worker takes those jobs back after ``BRIDGEHEAD_JOBS_STALE_SECONDS``.
- **Retention**: about once an hour (and when it starts), a worker deletes the jobs that finished more than
  ``BRIDGEHEAD_JOBS_RETENTION_DAYS`` ago, with their files (``service.purge``), on a thread of its own: a long
  first purge never holds up claiming or heartbeats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

import pluggy
from sqlalchemy.orm import Session

from bridgehead.audit.service import ActorRef
from bridgehead.auth.service import Principal, principal_of
from bridgehead.errors import BridgeheadError, JobCancelled, PermissionDenied, ValidationFailed
from bridgehead.jobs import service
from bridgehead.jobs.service import ClaimedJob
from bridgehead.settings import Settings
from bridgehead.store import Database, utcnow
from bridgehead.store.artifacts import ArtifactStore

__all__ = [
    "Executor",
    "Handler",
    "JobContext",
    "JobKinds",
    "ThreadExecutor",
    "Worker",
    "WorkerEnv",
    "executors",
    "make_executor",
    "run_claimed",
]

log = logging.getLogger("bridgehead.jobs")

Handler = Callable[["JobContext"], dict[str, Any] | None]
# At most this often a handler's progress reports are written (each write is also a heartbeat).
PROGRESS_WRITE_SECONDS = 0.25
# How often a worker purges finished jobs past retention: the cutoff moves by the hour, so more often is waste.
PURGE_EVERY_SECONDS = 3600.0
# Who the audit trail names for the purges workers run.
RETENTION_ACTOR = ActorRef(email="jobs@bridgehead")


class JobKinds:
    """The job kinds a worker can run: name -> handler."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = dict(handlers or {})

    def register_kind(self, name: str, handler: Handler) -> None:
        """Add (or replace) the handler of a kind."""
        self._handlers[name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> frozenset[str]:
        return frozenset(self._handlers)

    @classmethod
    def from_plugins(cls, pm: pluggy.PluginManager) -> JobKinds:
        """Every kind registered through ``register_job_kinds``; later plugins win over built-ins."""
        kinds = cls()
        for batch in reversed(pm.hook.register_job_kinds()):
            for name, handler in batch.items():
                kinds.register_kind(name, handler)
        return kinds


@dataclass
class WorkerEnv:
    """What handlers run against: the settings, the database, the artifact store and the plugins; and
    ``resources``, things handlers keep between jobs of one worker (loaded models, for one)."""

    settings: Settings
    db: Database
    artifacts: ArtifactStore
    plugins: pluggy.PluginManager
    resources: dict[str, Any] = field(default_factory=dict)
    owns_db: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, plugins: pluggy.PluginManager | None = None) -> WorkerEnv:
        """A standalone worker's environment (``bridgehead worker``, or a remote executor's process)."""
        from bridgehead.hookspecs import plugin_manager

        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url),
            artifacts=ArtifactStore(settings.resolved_artifact_root),
            plugins=plugins or plugin_manager(),
            owns_db=True,
        )

    def close(self) -> None:
        if self.owns_db:
            self.db.dispose()


class JobContext:
    """What a handler gets: the job, a progress callback, a cancellation check, a session factory."""

    def __init__(
        self,
        env: WorkerEnv,
        job: ClaimedJob,
        cancelled: threading.Event | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.env = env
        self.job = job
        self._cancelled = cancelled or threading.Event()
        self._stopping = stopping or threading.Event()
        self._last_write = 0.0

    @property
    def job_id(self) -> str:
        return self.job.id

    @property
    def kind(self) -> str:
        return self.job.kind

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    @property
    def attempt(self) -> int:
        return self.job.attempt

    @property
    def settings(self) -> Settings:
        return self.env.settings

    @property
    def artifacts(self) -> ArtifactStore:
        return self.env.artifacts

    @property
    def resources(self) -> dict[str, Any]:
        return self.env.resources

    @contextlib.contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A database transaction (``Database.session``): committed at the end of the block when ``write``."""
        with self.env.db.session(write=write) as session:
            yield session

    def principal(self, session: Session) -> Principal:
        """The person the job runs for, with their role and unit as they are now (PermissionDenied when they
        were deactivated). Jobs the system queued on nobody's behalf have none."""
        if self.job.created_by is None:
            raise PermissionDenied("This job was queued by the system, not on behalf of a person.")
        return principal_of(session, self.job.created_by)

    @property
    def cancelled(self) -> bool:
        """The job was cancelled, taken back from this worker, or the worker is stopping: stop soon."""
        return self._cancelled.is_set() or self._stopping.is_set()

    def check_cancelled(self) -> None:
        """Raise JobCancelled when the handler should stop (call it between units of work)."""
        if self.cancelled:
            raise JobCancelled("The job was cancelled.", details={"job_id": self.job.id})

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress (0..1, and what is being done); raises JobCancelled when the job should stop.
        Written at most every quarter second (and always at 1.0), each write also a heartbeat."""
        self.check_cancelled()
        now = time.monotonic()
        if fraction < 1.0 and now - self._last_write < PROGRESS_WRITE_SECONDS:
            return
        self._last_write = now
        job = self.job
        try:
            with self.env.db.session(write=True) as session:
                mine = service.report_progress(session, job.worker_id, job.id, job.attempt, fraction, message)
        except (
            BridgeheadError
        ) as exc:  # progress is advisory: the work goes on, the heartbeat covers liveness
            log.warning("job %s: progress not recorded: %s", job.id, exc.message)
            return
        if not mine:
            self._cancelled.set()
            self.check_cancelled()


# --- executors --------------------------------------------------------------------------------------------


class Executor(Protocol):
    """Runs the jobs a worker claims. ``slots``: how many at once. ``submit`` is handed the claimed job and the
    worker's in-process runner; it returns a future that completes when the attempt has ended (its outcome is
    recorded in the database by the runner, not carried by the future)."""

    slots: int

    def submit(self, job: ClaimedJob, run: Callable[[ClaimedJob], None]) -> Future[None]: ...

    def shutdown(self, wait: bool = True) -> None: ...


class ThreadExecutor:
    """The built-in executor: jobs run in a pool of threads of the worker's own process."""

    def __init__(self, slots: int = 2) -> None:
        self.slots = slots
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="bridgehead-job")

    @classmethod
    def from_settings(cls, settings: Settings) -> ThreadExecutor:
        return cls(settings.jobs_concurrency)

    def submit(self, job: ClaimedJob, run: Callable[[ClaimedJob], None]) -> Future[None]:
        return self._pool.submit(run, job)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


ExecutorFactory = Callable[[Settings], Executor]


def executors(pm: pluggy.PluginManager) -> dict[str, ExecutorFactory]:
    """Every executor factory registered through ``register_executors``; later plugins win."""
    found: dict[str, ExecutorFactory] = {}
    for batch in reversed(pm.hook.register_executors()):
        found.update(batch)
    return found


def make_executor(pm: pluggy.PluginManager, settings: Settings, name: str | None = None) -> Executor:
    """The executor named (default: ``BRIDGEHEAD_JOBS_EXECUTOR``)."""
    chosen = name or settings.jobs_executor
    factories = executors(pm)
    if chosen not in factories:
        raise ValidationFailed(
            f"No job executor named {chosen!r}; installed: {', '.join(sorted(factories)) or 'none'}.",
            details={"executor": chosen, "installed": sorted(factories)},
        )
    return factories[chosen](settings)


# --- running one attempt ----------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = exc.message if isinstance(exc, BridgeheadError) else str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_claimed(
    env: WorkerEnv,
    kinds: JobKinds,
    job: ClaimedJob,
    cancelled: threading.Event | None = None,
    stopping: threading.Event | None = None,
) -> str:
    """Run one claimed attempt to its end and record its outcome; never raises. Returns what happened:
    succeeded, retry, failed, cancelled, released or lost (the job was no longer this worker's).

    Retried (while attempts remain, after a backoff): unexpected exceptions and Bridgehead errors of status 5xx
    (a store away). Failed at once: Bridgehead errors of status 4xx, which retrying cannot fix (bad input, a
    missing model, a permission the job's author lost)."""
    context = JobContext(env, job, cancelled, stopping)
    handler = kinds.get(job.kind)
    backoff = env.settings.jobs_retry_backoff_seconds
    db = env.db
    try:
        if handler is None:
            raise ValidationFailed(f"This worker has no handler for job kind {job.kind!r}.")
        result = handler(context)
        if result is not None and not isinstance(result, dict):
            raise ValidationFailed(
                f"The {job.kind} handler returned {type(result).__name__}, not a JSON object."
            )
        if result is not None:
            try:
                json.dumps(result)
            except (TypeError, ValueError) as exc:
                raise ValidationFailed(f"The {job.kind} handler's result is not JSON: {exc}") from exc
    except JobCancelled:
        if stopping is not None and stopping.is_set() and not (cancelled is not None and cancelled.is_set()):
            return _record(
                db, job, "released", lambda s: service.release(s, job.worker_id, job.id, job.attempt)
            )
        log.info("job %s (%s) stopped: cancelled or taken back", job.id, job.kind)
        return "cancelled"
    except Exception as exc:
        retry = not (isinstance(exc, BridgeheadError) and exc.status < 500)
        message = _describe(exc)
        log.warning(
            "job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempt, message, exc_info=retry
        )

        retry_after = _retry_after(exc)

        def failed(session: Session) -> str | None:
            return service.fail(
                session, job.worker_id, job.id, job.attempt, message, retry=retry, backoff_base=backoff,
                retry_after_s=retry_after,
            )  # fmt: skip

        return _record(db, job, "failed", failed)
    return _record(
        db, job, "succeeded", lambda s: service.complete(s, job.worker_id, job.id, job.attempt, result)
    )


def _retry_after(exc: BaseException) -> float | None:
    """The delay a handler's error asks for before the next attempt: ``details["retry_after_seconds"]`` of a
    BridgeheadError (a webhook receiver's ``Retry-After``), when it is a number of seconds."""
    value = exc.details.get("retry_after_seconds") if isinstance(exc, BridgeheadError) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return None
    return float(value)


def _record(db: Database, job: ClaimedJob, outcome: str, write: Callable[[Session], Any]) -> str:
    try:
        with db.session(write=True) as session:
            written = write(session)
    except Exception:  # the database is away: the heartbeat goes stale and the job is taken back later
        log.exception("job %s: could not record %s", job.id, outcome)
        return "lost"
    if not written:
        log.info(
            "job %s: %s dropped, the job is no longer this worker's (cancelled or taken back)",
            job.id,
            outcome,
        )
        return "lost"
    if outcome == "failed" and written == "queued":
        return "retry"
    return outcome


# --- the worker loop --------------------------------------------------------------------------------------


@dataclass
class _Running:
    job: ClaimedJob
    future: Future[None]
    cancelled: threading.Event


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    """Polls the queue, claims due jobs up to the executor's slots, runs them, keeps them alive, and takes back
    jobs whose worker died. ``start``/``stop`` run it in a background thread (the server's in-process
    worker); ``run_forever`` in the calling thread (``bridgehead worker``); ``run_once`` until nothing is
    due (``bridgehead worker --once``, tests)."""

    def __init__(
        self, env: WorkerEnv, kinds: JobKinds, executor: Executor, *, worker_id: str | None = None
    ) -> None:
        self.env = env
        self.kinds = kinds
        self.executor = executor
        self.worker_id = worker_id or new_worker_id()
        settings = env.settings
        self.poll_seconds = settings.jobs_poll_seconds
        self.heartbeat_seconds = settings.jobs_heartbeat_seconds
        self.stale_seconds = settings.jobs_stale_seconds
        self.backoff_seconds = settings.jobs_retry_backoff_seconds
        self.retention_days = settings.jobs_retention_days
        self._running: dict[str, _Running] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_heartbeat = 0.0
        self._next_reclaim = 0.0
        self._next_purge = 0.0
        self._purger: threading.Thread | None = None

    # -- life cycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run_forever, name="bridgehead-job-worker", daemon=True)
        self._thread.start()
        log.info("job worker %s started (kinds: %s)", self.worker_id, ", ".join(sorted(self.kinds.names())))

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for due jobs now (a job was just queued through this process)."""
        self._wake.set()

    def request_stop(self) -> None:
        """Stop claiming and ask running handlers to stop, without waiting (safe in a signal handler)."""
        self._stopping.set()
        self._stop.set()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; ask running handlers to stop (their jobs go back to the queue, attempt not counted)
        and wait up to ``timeout`` seconds for them. A handler still running then is left to finish; its job
        is taken back by another worker once its heartbeat goes stale."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._purger is not None:
            self._purger.join(timeout)  # it stops after its current batch
        pending = [r.future for r in self._running.values()]
        if pending:
            wait_futures(pending, timeout=timeout)
        self.executor.shutdown(wait=False)
        log.info("job worker %s stopped", self.worker_id)

    def run_forever(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                claimed = self._tick()
            except Exception:  # the loop outlives anything: a database away, a bug in an executor
                log.exception("job worker %s: poll failed; retrying", self.worker_id)
                claimed = 0
            if claimed and len(self._running) < self.executor.slots:
                continue  # more may be due
            self._wake.wait(min(self.poll_seconds, self.heartbeat_seconds))

    def run_once(self) -> int:
        """Run jobs until none is due and none runs (and a purge it started has ended); returns how many
        attempts ended."""
        ended = 0
        while True:
            claimed = self._tick()
            ended += self._reap()
            if not self._running and not claimed:
                if self._purger is not None:
                    self._purger.join()
                return ended
            futures = [r.future for r in self._running.values()]
            if futures:
                wait_futures(futures, timeout=self.heartbeat_seconds, return_when="FIRST_COMPLETED")
            ended += self._reap()

    # -- one poll

    def _tick(self) -> int:
        now = time.monotonic()
        self._reap()
        if now >= self._next_reclaim:
            self._next_reclaim = now + self.heartbeat_seconds
            self._reclaim()
        if self.retention_days > 0 and now >= self._next_purge and not self._purging():
            self._next_purge = now + PURGE_EVERY_SECONDS
            self._purger = threading.Thread(target=self._purge, name="bridgehead-job-purge", daemon=True)
            self._purger.start()
        if self._running and now >= self._next_heartbeat:
            self._next_heartbeat = now + self.heartbeat_seconds
            self._heartbeat()
        return self._claim()

    def _reclaim(self) -> None:
        db = self.env.db
        with db.session() as session:
            if not service.has_stale(session, self.stale_seconds):
                return
        with db.session(write=True) as session:
            taken = service.reclaim_stale(session, self.stale_seconds, self.backoff_seconds)
        for job_id in taken:
            log.warning("job %s taken back: its worker stopped reporting", job_id)

    def _purging(self) -> bool:
        return self._purger is not None and self._purger.is_alive()

    def _purge(self) -> None:
        """Retention, on the purge thread. A failure (the database or the artifact store away) is logged and
        left to the next hour's purge; what was deleted before it stays deleted."""
        older_than = utcnow() - timedelta(days=self.retention_days)
        try:
            purged = service.purge(
                self.env.db, RETENTION_ACTOR, older_than,
                artifacts=self.env.artifacts, should_stop=self._stop.is_set,
            )  # fmt: skip
        except Exception:
            log.exception("job worker %s: purging finished jobs failed; next try in an hour", self.worker_id)
            return
        if purged:
            log.info(
                "purged %d job(s) that finished before %s", purged, f"{older_than:%Y-%m-%d %H:%M:%S} UTC"
            )

    def _heartbeat(self) -> None:
        claims = [(r.job.id, r.job.attempt) for r in self._running.values()]
        with self.env.db.session(write=True) as session:
            mine = service.heartbeat(session, self.worker_id, claims)
        for job_id, running in list(self._running.items()):
            if job_id not in mine:
                running.cancelled.set()  # cancelled or taken back: the handler stops at its next check

    def _claim(self) -> int:
        kinds = self.kinds.names()
        claimed = 0
        db = self.env.db
        while not self._stop.is_set() and len(self._running) < self.executor.slots:
            with db.session() as session:
                if not service.has_due(session, kinds):
                    break
            with db.session(write=True) as session:
                job = service.claim_next(session, self.worker_id, kinds)
            if job is None:
                break
            self._submit(job)
            claimed += 1
        return claimed

    def _submit(self, job: ClaimedJob) -> None:
        cancelled = threading.Event()

        def run(claimed: ClaimedJob) -> None:
            run_claimed(self.env, self.kinds, claimed, cancelled, self._stopping)

        log.info("job %s (%s) attempt %d claimed by %s", job.id, job.kind, job.attempt, self.worker_id)
        try:
            future = self.executor.submit(job, run)
        except Exception as exc:  # the executor refused it: give the job back, do not lose it
            log.exception("job %s: the executor refused it", job.id)
            message = _describe(exc)

            def refused(session: Session) -> str | None:
                return service.fail(
                    session, job.worker_id, job.id, job.attempt, message, retry=True,
                    backoff_base=self.backoff_seconds,
                )  # fmt: skip

            _record(self.env.db, job, "failed", refused)
            return
        self._running[job.id] = _Running(job, future, cancelled)
        future.add_done_callback(lambda _: self._wake.set())

    def _reap(self) -> int:
        done = [job_id for job_id, r in self._running.items() if r.future.done()]
        for job_id in done:
            running = self._running.pop(job_id)
            error = running.future.exception()
            if error is not None:  # run_claimed never raises; an executor's own failure lands here
                log.error("job %s: the executor failed: %s", job_id, _describe(error))
        return len(done)

"""``bridgehead worker`` (run jobs) and ``bridgehead job`` (list, show, cancel, purge): commands for the host,
which read the database named by the server's settings, like ``bridgehead token``."""

from __future__ import annotations

import contextlib
import getpass
import json
import signal
import socket
from datetime import timedelta
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console as RichConsole
from rich.table import Table

from bridgehead.audit.service import ActorRef
from bridgehead.errors import BridgeheadError
from bridgehead.jobs import service
from bridgehead.jobs.models import STATUSES, Job
from bridgehead.settings import Settings
from bridgehead.store import Database, utcnow
from bridgehead.store.artifacts import ArtifactStore

__all__ = ["job_app", "worker"]

job_app = typer.Typer(
    help="Background jobs (batch scoring, monitors): list, show, cancel, purge. Reads the server's database.",
    no_args_is_help=True,
)
out = RichConsole(soft_wrap=True)
err = RichConsole(stderr=True, soft_wrap=True)

JobIdArg = Annotated[str, typer.Argument(help="The job's id (from `bridgehead job list`).")]


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        for problem in exc.errors():
            field = ".".join(str(x) for x in problem["loc"])
            err.print(f"[red]error:[/red] setting BRIDGEHEAD_{field.upper()}: {problem['msg']}")
        raise typer.Exit(2) from None


def _check_schema(db: Database) -> None:
    from bridgehead.store.migrate import current_revision, head_revision

    revision = current_revision(db)
    if revision != head_revision():
        _fail(
            f"the database at {db.engine.url.render_as_string()} is at revision {revision or 'none'}, not "
            f"{head_revision()}; run `bridgehead db upgrade` (or start the server) first."
        )


def _actor() -> ActorRef:
    return ActorRef(email=f"cli:{getpass.getuser()}@{socket.gethostname()}")


def worker(
    executor: Annotated[
        str | None,
        typer.Option(
            help="Executor that runs the jobs: thread (built in) or one a plugin registers. "
            "Default: BRIDGEHEAD_JOBS_EXECUTOR."
        ),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Run the jobs that are due now, wait for them, then exit.")
    ] = False,
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, max=256, help="Jobs run at the same time (default: BRIDGEHEAD_JOBS_CONCURRENCY)."
        ),
    ] = None,
) -> None:
    """Run a job worker: claim queued jobs (batch scoring, monitors) from the server's database and run them,
    until interrupted (Ctrl-C or SIGTERM: running jobs are asked to stop and go back to the queue). Run as
    many as you like, on as many hosts as share the database and the artifact store; each job runs once.
    Set BRIDGEHEAD_JOBS_INPROCESS_WORKER=false on the servers when dedicated workers do the work."""
    from bridgehead.jobs.worker import JobKinds, Worker, WorkerEnv, make_executor

    overrides: dict[str, Any] = {} if concurrency is None else {"jobs_concurrency": concurrency}
    settings = _settings(**overrides)
    env = WorkerEnv.from_settings(settings)
    try:
        _check_schema(env.db)
        kinds = JobKinds.from_plugins(env.plugins)
        running = Worker(env, kinds, make_executor(env.plugins, settings, executor))
        if once:
            ended = running.run_once()
            running.stop()
            err.print(f"{ended} job attempt(s) run")
            return
        signal.signal(signal.SIGTERM, lambda *_: running.request_stop())
        err.print(
            f"worker {running.worker_id} running {', '.join(sorted(kinds.names())) or 'no'} jobs "
            f"({settings.jobs_executor if executor is None else executor} executor, "
            f"{running.executor.slots} at a time); Ctrl-C to stop"
        )
        with contextlib.suppress(KeyboardInterrupt):
            running.run_forever()
        running.stop()
    except BridgeheadError as exc:
        _fail(exc.message)
    finally:
        env.close()


def _database() -> Database:
    db = Database(_settings().resolved_database_url)
    _check_schema(db)
    return db


def _when(value: Any) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value is not None else ""


@job_app.command("list")
def list_command(
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind, e.g. serving.score.")] = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only jobs in this state: {', '.join(STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Most jobs shown, newest first.")] = 50,
) -> None:
    """Jobs of every business unit, newest first: state, progress, attempts."""
    db = _database()
    try:
        with db.session() as session:
            rows, total = service.list_jobs(session, None, kind=kind, status=status, limit=limit)
            table = Table(title=f"{len(rows)} of {total} job(s)")
            table.add_column("id", no_wrap=True, min_width=32)
            table.add_column("kind", no_wrap=True)
            for heading in ("status", "progress", "attempts", "created", "finished"):
                table.add_column(heading)
            for j in rows:
                table.add_row(
                    j.id, j.kind, j.status, f"{j.progress:.0%}", f"{j.attempts}/{j.max_attempts}",
                    _when(j.created_at), _when(j.finished_at),
                )  # fmt: skip
        out.print(table)
    except BridgeheadError as exc:
        _fail(exc.message)
    finally:
        db.dispose()


def _show(job: Job) -> None:
    out.print(f"[bold]{job.id}[/bold]  {job.kind}  {job.status}")
    fields = {
        "business unit": job.business_unit_id,
        "created by": job.created_by or "(system)",
        "progress": f"{job.progress:.0%} {job.progress_message}".strip(),
        "attempts": f"{job.attempts} of {job.max_attempts}",
        "created": _when(job.created_at),
        "run after": _when(job.run_after),
        "started": _when(job.started_at),
        "finished": _when(job.finished_at),
        "heartbeat": _when(job.heartbeat_at),
        "worker": job.worker_id or "",
        "params": json.dumps(job.params, sort_keys=True),
        "result": json.dumps(job.result, sort_keys=True) if job.result is not None else "",
        "error": job.error,
    }
    for name, value in fields.items():
        if value:
            out.print(f"  {name}: {value}")


@job_app.command("show")
def show_command(job_id: JobIdArg) -> None:
    """One job: state, progress, attempts, timestamps, params, result and error."""
    db = _database()
    try:
        with db.session() as session:
            _show(service.get_job(session, None, job_id))
    except BridgeheadError as exc:
        _fail(exc.message)
    finally:
        db.dispose()


@job_app.command("cancel")
def cancel_command(
    job_id: JobIdArg,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Cancel a queued or running job (audited as the CLI user); a running job stops at its next progress
    report."""
    if not yes:
        typer.confirm(f"Cancel job {job_id}?", abort=True)
    db = _database()
    try:
        with db.session(write=True) as session:
            job = service.cancel(session, _actor(), job_id)
            out.print(f"job {job.id} cancelled")
    except BridgeheadError as exc:
        _fail(exc.message)
    finally:
        db.dispose()


# Keeps the cutoff a representable date (and matches BRIDGEHEAD_JOBS_RETENTION_DAYS's bound).
_MAX_DAYS = 36500


@job_app.command("purge")
def purge_command(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            help="Delete the jobs that finished more than this many days ago; 0: every finished job. "
            "Default: BRIDGEHEAD_JOBS_RETENTION_DAYS.",
            show_default=False,
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete finished jobs (succeeded, failed or cancelled) older than the retention, with their files under
    jobs/<id>/ in the artifact store; queued and running jobs are never touched. Workers do this about once an
    hour on their own; this runs it now. Prints how many were deleted; audited (job.purge) as the CLI user."""
    settings = _settings()
    days = settings.jobs_retention_days if older_than_days is None else older_than_days
    if not 0 <= days <= _MAX_DAYS:
        _fail(f"--older-than-days must be between 0 and {_MAX_DAYS} (got {days}).")
    if older_than_days is None and days == 0:
        err.print(
            "retention is off (BRIDGEHEAD_JOBS_RETENTION_DAYS=0): nothing purged; "
            "pass --older-than-days to purge anyway"
        )
        return
    older_than = utcnow() - timedelta(days=days)
    db = _database()
    try:
        purged = 0
        with db.session() as session:
            waiting = service.has_purgeable(session, older_than)
        if waiting:
            if not yes:
                typer.confirm(
                    f"Delete every job that finished before {_when(older_than)} UTC, and its files?",
                    abort=True,
                )
            artifacts = ArtifactStore(settings.resolved_artifact_root)
            purged = service.purge(db, _actor(), older_than, artifacts=artifacts)
        out.print(f"{purged} job(s) purged (finished before {_when(older_than)} UTC)")
    except BridgeheadError as exc:
        _fail(exc.message)
    finally:
        db.dispose()

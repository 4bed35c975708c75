"""Registers the jobs API, the built-in ``thread`` executor, the ``bridgehead worker`` and ``bridgehead job``
commands, and the server's in-process worker (started with the server, stopped with it)."""

from __future__ import annotations

import logging
from typing import Any

import typer
from fastapi import FastAPI

from bridgehead.hookspecs import hookimpl
from bridgehead.jobs.worker import JobKinds, ThreadExecutor, Worker, WorkerEnv, make_executor
from bridgehead.web import Console

log = logging.getLogger("bridgehead.jobs")


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    from bridgehead.jobs.routes import router

    app.include_router(router)


@hookimpl
def register_executors() -> dict[str, Any]:
    return {"thread": ThreadExecutor.from_settings}


@hookimpl
def startup(app: FastAPI) -> None:
    settings = app.state.settings
    running: Worker | None = getattr(app.state, "job_worker", None)
    if running is not None and running.is_alive():
        return  # the lifespan entered twice (two test clients on one app): one worker, stopped once
    app.state.job_worker = None
    # A standalone inference process (`bridgehead serve`) answers predictions and nothing else.
    if not settings.jobs_inprocess_worker or settings.serve_endpoint:
        return
    plugins = app.state.plugins
    env = WorkerEnv(
        settings=settings,
        db=app.state.db,
        artifacts=app.state.artifacts,
        plugins=plugins,
        resources=app.state.job_resources,
    )
    worker = Worker(env, JobKinds.from_plugins(plugins), make_executor(plugins, settings))
    worker.start()
    app.state.job_worker = worker


@hookimpl
def shutdown(app: FastAPI) -> None:
    worker: Worker | None = getattr(app.state, "job_worker", None)
    if worker is not None:
        worker.stop()
        app.state.job_worker = None


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from bridgehead.jobs.commands import job_app, worker

    cli.command("worker")(worker)
    cli.add_typer(job_app, name="job")


def wake(app: Any) -> None:
    """Tell this process's worker that a job was just queued (no wait for its next poll)."""
    worker: Worker | None = getattr(app.state, "job_worker", None)
    if worker is not None:
        worker.wake()

"""Fixtures for the jobs kernel: an app without its in-process worker (the tests drive their own workers), test
job kinds, and helpers to queue jobs and read them back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridgehead.audit.service import ActorRef
from bridgehead.hookspecs import plugin_manager
from bridgehead.jobs import service
from bridgehead.jobs.models import Job
from bridgehead.jobs.worker import Handler, JobKinds, ThreadExecutor, Worker, WorkerEnv
from bridgehead.settings import Settings
from bridgehead.store import Database
from bridgehead.store.artifacts import ArtifactStore

SYSTEM = ActorRef(email="test:jobs")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        log_level="INFO",
        jobs_inprocess_worker=False,
        jobs_poll_seconds=0.02,
        jobs_heartbeat_seconds=0.05,
        jobs_stale_seconds=1.0,
        jobs_retry_backoff_seconds=0.5,
    )


class Workers:
    """Builds workers on the test's database, each with its own engine (as separate processes would have),
    and stops them at the end."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started: list[Worker] = []
        self.envs: list[WorkerEnv] = []

    def __call__(
        self, handlers: dict[str, Handler], *, slots: int = 2, worker_id: str | None = None, **overrides: Any
    ) -> Worker:
        settings = self.settings.model_copy(update=overrides) if overrides else self.settings
        env = WorkerEnv(
            settings=settings,
            db=Database(settings.resolved_database_url),
            artifacts=ArtifactStore(settings.resolved_artifact_root),
            plugins=plugin_manager(load_entry_points=False),
            owns_db=True,
        )
        self.envs.append(env)
        worker = Worker(env, JobKinds(handlers), ThreadExecutor(slots), worker_id=worker_id)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:
            worker.stop(timeout=10)
        for env in self.envs:
            env.close()


@pytest.fixture
def workers(settings: Settings, client: Any) -> Iterator[Workers]:
    """``client`` first: its start-up migrates the database."""
    made = Workers(settings)
    yield made
    made.close()


def enqueue(
    db: Database, kind: str, params: dict[str, Any] | None = None, *, unit: str, **options: Any
) -> str:
    with db.session(write=True) as session:
        return service.enqueue(session, SYSTEM, kind, params, business_unit_id=unit, **options).id


def read(db: Database, job_id: str) -> Job:
    with db.session() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()

"""Workers: a failing job never stops one, two workers share a queue without running a job twice, executors
and job kinds plug in through the hooks, and the server runs its own worker."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient

import bridgehead.app
from bridgehead.errors import ValidationFailed
from bridgehead.hookspecs import hookimpl, plugin_manager
from bridgehead.jobs.service import ClaimedJob
from bridgehead.jobs.worker import JobContext, JobKinds, ThreadExecutor, executors, make_executor
from bridgehead.settings import Settings
from bridgehead.store import Database
from tests.conftest import Org
from tests.jobs.conftest import Workers, enqueue, read, wait_for


def _boom(ctx: JobContext) -> None:
    raise RuntimeError(f"boom {ctx.params['n']}")


def _ok(ctx: JobContext) -> dict[str, Any]:
    return {"n": ctx.params["n"]}


def test_a_failing_job_does_not_stop_the_worker(workers: Workers, orgs: Org, db: Database) -> None:
    worker = workers({"t.boom": _boom, "t.ok": _ok})
    ids = [
        enqueue(db, "t.boom" if i % 2 == 0 else "t.ok", {"n": i}, unit=orgs.central_id, max_attempts=1)
        for i in range(6)
    ]
    worker.start()
    assert wait_for(lambda: all(read(db, i).status in ("succeeded", "failed") for i in ids))
    for n, job_id in enumerate(ids):
        job = read(db, job_id)
        if n % 2 == 0:
            assert (job.status, job.error) == ("failed", f"RuntimeError: boom {n}")
        else:
            assert (job.status, job.result) == ("succeeded", {"n": n})
    # Still alive, and still working.
    assert worker.is_alive()
    later = enqueue(db, "t.ok", {"n": 99}, unit=orgs.central_id)
    worker.wake()
    assert wait_for(lambda: read(db, later).status == "succeeded")


def test_a_result_that_is_not_json_fails_the_job_alone(workers: Workers, orgs: Org, db: Database) -> None:
    def odd(ctx: JobContext) -> Any:
        return {"when": object()}

    worker = workers({"t.odd": odd, "t.ok": _ok})
    bad = enqueue(db, "t.odd", unit=orgs.central_id)
    good = enqueue(db, "t.ok", {"n": 1}, unit=orgs.central_id)
    assert worker.run_once() == 2
    assert read(db, bad).status == "failed" and "not JSON" in read(db, bad).error
    assert read(db, good).status == "succeeded"


def test_two_workers_run_each_job_exactly_once(workers: Workers, orgs: Org, db: Database) -> None:
    runs: list[tuple[str, str]] = []
    lock = threading.Lock()

    def record(ctx: JobContext) -> dict[str, Any]:
        with lock:
            runs.append((ctx.job_id, ctx.job.worker_id))
        threading.Event().wait(0.01)
        return {"ran_on": ctx.job.worker_id}

    first = workers({"t.rec": record}, slots=3, worker_id="worker-1")
    second = workers({"t.rec": record}, slots=3, worker_id="worker-2")
    ids = {enqueue(db, "t.rec", unit=orgs.central_id) for _ in range(30)}
    first.start()
    second.start()
    assert wait_for(lambda: all(read(db, i).status == "succeeded" for i in ids), timeout=60)
    ran = [job_id for job_id, _ in runs]
    assert len(ran) == len(set(ran)) == 30 and set(ran) == ids
    for job_id, worker_id in runs:
        job = read(db, job_id)
        assert job.attempts == 1 and job.worker_id == worker_id and job.result == {"ran_on": worker_id}


class _Inline:
    """An executor from a plugin: runs each job in the claiming thread, counting what it ran."""

    def __init__(self, settings: Settings) -> None:
        self.slots = 1
        self.ran: list[str] = []

    def submit(self, job: ClaimedJob, run: Any) -> Future[None]:
        future: Future[None] = Future()
        self.ran.append(job.id)
        run(job)
        future.set_result(None)
        return future

    def shutdown(self, wait: bool = True) -> None:
        pass


class _InlinePlugin:
    @hookimpl
    def register_executors(self) -> dict[str, Any]:
        return {"inline": _Inline}

    @hookimpl
    def register_job_kinds(self) -> dict[str, Any]:
        return {"t.plugged": _ok}


def test_executors_and_kinds_plug_in_through_the_hooks(workers: Workers, orgs: Org, db: Database) -> None:
    pm = plugin_manager(load_entry_points=False)
    assert set(executors(pm)) == {"thread"}
    pm.register(_InlinePlugin())
    assert set(executors(pm)) == {"thread", "inline"}
    kinds = JobKinds.from_plugins(pm)
    assert {"serving.score", "t.plugged"} <= kinds.names()

    settings = workers.settings.model_copy(update={"jobs_executor": "inline"})
    executor = make_executor(pm, settings)
    assert isinstance(executor, _Inline)
    assert isinstance(make_executor(pm, settings, "thread"), ThreadExecutor)
    with pytest.raises(ValidationFailed) as refused:
        make_executor(pm, settings, "ray")
    assert refused.value.details["installed"] == ["inline", "thread"]

    worker = workers({})
    worker.kinds, worker.executor = kinds, executor
    job_id = enqueue(db, "t.plugged", {"n": 5}, unit=orgs.central_id)
    assert worker.run_once() == 1
    assert executor.ran == [job_id]
    assert read(db, job_id).result == {"n": 5}


def test_the_server_runs_an_in_process_worker(
    settings: Settings, orgs: Org, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = plugin_manager(load_entry_points=False)
    pm.register(_InlinePlugin())
    monkeypatch.setattr(bridgehead.app, "plugin_manager", lambda: pm)
    app = bridgehead.app.create_app(settings.model_copy(update={"jobs_inprocess_worker": True}))
    with TestClient(app):
        worker = app.state.job_worker
        assert worker is not None and worker.is_alive()
        job_id = enqueue(db, "t.plugged", {"n": 3}, unit=orgs.central_id)
        assert wait_for(lambda: read(db, job_id).status == "succeeded")
    assert app.state.job_worker is None and not worker.is_alive()  # stopped with the server


def test_no_in_process_worker_when_turned_off(app: Any, client: TestClient) -> None:
    assert app.state.job_worker is None

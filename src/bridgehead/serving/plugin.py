"""Registers the deployments API, the inference routes and pages, the runtime and the prediction log, the batch
scoring job kind, and the default ``check_transition`` (allow everything; governance plugs in its own)."""

from __future__ import annotations

import importlib
import logging
from typing import Any

import pyarrow as pa
import typer
from fastapi import FastAPI

from bridgehead.hookspecs import flavors, hookimpl
from bridgehead.serving.batching import MicroBatcher
from bridgehead.serving.lane import InferenceLane
from bridgehead.serving.metrics import InferenceMetrics
from bridgehead.serving.predlog import PredictionLog
from bridgehead.serving.runtime import ModelRuntime
from bridgehead.serving.service import EndpointCache
from bridgehead.web import Console

ROUTERS = ("bridgehead.serving.routes", "bridgehead.serving.invoke", "bridgehead.serving.pages")
log = logging.getLogger("bridgehead.serving")


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)
    setup_runtime(app)


def setup_inference(app: FastAPI) -> None:
    """A standalone inference process (``bridgehead serve``): the inference routes and nothing else."""
    app.include_router(importlib.import_module("bridgehead.serving.invoke").router)
    setup_runtime(app)


def setup_runtime(app: FastAPI) -> None:
    """The model cache, the prediction log and the metrics of this process."""
    settings = app.state.settings
    plugins = app.state.plugins
    app.state.runtime = ModelRuntime(
        app.state.artifacts,
        lambda: flavors(plugins),
        frozenset(settings.trusted_flavors),
        onnx=settings.serving_onnx,
    )
    # The in-process job worker scores batch jobs with the models this process already loaded.
    app.state.job_resources["serving.runtime"] = app.state.runtime
    db = app.state.db

    def aggregate(table: pa.Table) -> None:
        from bridgehead.serving.service import add_hours

        with db.session(write=True) as session:
            add_hours(session, table)

    app.state.inference_metrics = InferenceMetrics()
    app.state.micro_batcher = MicroBatcher(app.state.runtime.predict, settings.serving_batch_rows)
    app.state.endpoint_cache = EndpointCache(settings.endpoint_cache_seconds)
    # Successful inference calls are answered before FastAPI's machinery (see serving.lane).
    app.state.fast_lanes.append((InferenceLane, {"fastapi": app}))
    app.state.predlog = PredictionLog(
        settings.resolved_prediction_log_dir,
        flush_interval_s=settings.prediction_log_flush_seconds,
        max_buffer_rows=settings.prediction_log_buffer_rows,
        on_flush=aggregate,
    )


@hookimpl
def startup(app: FastAPI) -> None:
    app.state.predlog.start()


@hookimpl
def shutdown(app: FastAPI) -> None:
    app.state.predlog.close()


@hookimpl
def check_transition(
    session: Any,
    principal: Any,
    endpoint: Any,
    action: str,
    current: dict[str, Any],
    proposed: dict[str, Any],
) -> str | None:
    return None


@hookimpl
def register_job_kinds() -> dict[str, Any]:
    from bridgehead.serving.batch import SCORE_KIND, score_job

    return {SCORE_KIND: score_job}


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from bridgehead.serving.commands import endpoint_app, score, serve

    cli.add_typer(endpoint_app, name="endpoint")
    cli.command("serve")(serve)
    cli.command("score")(score)

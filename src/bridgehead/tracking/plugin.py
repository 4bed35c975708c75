"""Registers the tracking API (native and MLflow-compatible) and the Experiments pages."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

from bridgehead.hookspecs import hookimpl
from bridgehead.web import Console

# Modules that expose a ``router``; each is added when present, so the area grows module by module.
ROUTERS = ("bridgehead.tracking.routes", "bridgehead.tracking.mlflow_api", "bridgehead.tracking.pages")


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)
    from bridgehead.tracking.mlflow_lane import LoggingLane

    # Added before the app's own middleware, so it runs inside the request envelope and the body limit.
    app.add_middleware(LoggingLane, db=app.state.db)

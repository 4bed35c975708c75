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

    # In front of FastAPI's routing, inside the request context and the body limit (see BridgeheadApp).
    app.state.fast_lanes.append((LoggingLane, {"db": app.state.db, "tokens": app.state.token_cache}))

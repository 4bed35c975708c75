"""Registers the datasets API and the Data pages."""

from __future__ import annotations

import importlib

from fastapi import FastAPI

from bridgehead.hookspecs import hookimpl
from bridgehead.web import Console

ROUTERS = ("bridgehead.data.routes", "bridgehead.data.pages")


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)

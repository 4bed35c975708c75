"""Registers the audit API and console page."""

from __future__ import annotations

from fastapi import FastAPI

from bridgehead.audit import pages, routes
from bridgehead.hookspecs import hookimpl
from bridgehead.web import Console


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    app.include_router(routes.router)
    app.include_router(pages.router)

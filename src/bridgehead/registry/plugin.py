"""Registers the registry API, the Models pages and the built-in flavors."""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import FastAPI

from bridgehead.hookspecs import hookimpl
from bridgehead.registry.flavors import BuiltinFlavors
from bridgehead.web import Console

ROUTERS = ("bridgehead.registry.routes", "bridgehead.registry.pages")


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)


@hookimpl
def register_flavors() -> list[Any]:
    return list(BuiltinFlavors.flavors)

"""The one plugin seam. Built-in features register through these hooks exactly as third-party plugins do
(installed packages declare an entry point in the ``bridgehead`` group)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer
    from fastapi import FastAPI

    from bridgehead.web import Console

__all__ = ["hookimpl", "hookspec", "plugin_manager"]

hookspec = pluggy.HookspecMarker("bridgehead")
hookimpl = pluggy.HookimplMarker("bridgehead")

DEFAULT_PLUGINS = (
    "bridgehead.org.plugin",
    "bridgehead.auth.plugin",
    "bridgehead.audit.plugin",
    "bridgehead.web.plugin",
)


class Specs:
    @hookspec
    def register_routes(self, app: FastAPI, console: Console) -> None:
        """Add JSON API routers and console pages to the app."""

    @hookspec
    def register_commands(self, cli: typer.Typer) -> None:
        """Add sub-commands to the ``bridgehead`` CLI."""


def plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    import importlib

    pm = pluggy.PluginManager("bridgehead")
    pm.add_hookspecs(Specs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        pm.load_setuptools_entrypoints("bridgehead")
    return pm

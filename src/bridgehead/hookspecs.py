"""The one plugin seam. Built-in features register through these hooks exactly as third-party plugins do
(installed packages declare an entry point in the ``bridgehead`` group)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import typer
    from fastapi import FastAPI

    from bridgehead.web import Console

__all__ = ["flavors", "hookimpl", "hookspec", "plugin_manager"]

hookspec = pluggy.HookspecMarker("bridgehead")
hookimpl = pluggy.HookimplMarker("bridgehead")

DEFAULT_PLUGINS = (
    "bridgehead.org.plugin",
    "bridgehead.auth.plugin",
    "bridgehead.audit.plugin",
    "bridgehead.jobs.plugin",
    "bridgehead.tracking.plugin",
    "bridgehead.registry.plugin",
    "bridgehead.data.plugin",
    "bridgehead.serving.plugin",
    "bridgehead.monitoring.plugin",
    "bridgehead.web.plugin",
)


class Specs:
    @hookspec
    def register_routes(self, app: FastAPI, console: Console) -> None:
        """Add JSON API routers and console pages to the app."""

    @hookspec
    def startup(self, app: FastAPI) -> None:
        """The server is starting (after migrations): start background workers kept in ``app.state``."""

    @hookspec
    def shutdown(self, app: FastAPI) -> None:
        """The server is stopping: flush and stop what ``startup`` started. Called in reverse order."""

    @hookspec
    def register_commands(self, cli: typer.Typer) -> None:
        """Add sub-commands to the ``bridgehead`` CLI."""

    @hookspec
    def register_flavors(self) -> list[Any]:  # type: ignore[empty-body]
        """Model flavors (see bridgehead.registry.flavors.Flavor): how models are saved and loaded."""

    @hookspec
    def register_job_kinds(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Background job kinds: name -> handler (``bridgehead.jobs.worker.Handler``), a callable that takes a
        ``JobContext`` and returns the job's result (a JSON object) or None. Workers claim only the kinds they
        have a handler for."""

    @hookspec
    def register_executors(self) -> dict[str, Any]:  # type: ignore[empty-body]
        """Job executors: name -> factory taking the ``Settings`` and returning a ``bridgehead.jobs.worker.Executor``
        (what runs the jobs a worker claims: threads of its process, or a distributed engine such as Ray).
        ``BRIDGEHEAD_JOBS_EXECUTOR`` chooses one by name."""

    @hookspec
    def check_transition(
        self,
        session: Any,
        principal: Any,
        endpoint: Any,
        action: str,
        current: dict[str, Any],
        proposed: dict[str, Any],
    ) -> str | None:
        """Every deployment change (deploy, traffic, promote, rollback, retire) passes through here before it
        is written: return a reason to refuse it, or None to allow. ``endpoint`` is the
        ``serving.models.Endpoint`` row; ``current`` and ``proposed`` are traffic policies
        (``serving.routing.TrafficPolicy.to_config()``; ``current`` is empty for a new endpoint). Governance
        (risk tier, approvals) plugs in here."""


def plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    import importlib

    pm = pluggy.PluginManager("bridgehead")
    pm.add_hookspecs(Specs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    if load_entry_points:
        pm.load_setuptools_entrypoints("bridgehead")
    return pm


def flavors(pm: pluggy.PluginManager) -> dict[str, Any]:
    """Every registered flavor by name; plugins registered later win over built-ins of the same name."""
    found: dict[str, Any] = {}
    for batch in reversed(pm.hook.register_flavors()):
        for flavor in batch:
            found[flavor.name] = flavor
    return found

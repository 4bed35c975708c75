"""Console shell: templates, navigation, page helpers shared by every domain's pages."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from bridgehead import __version__
from bridgehead.auth.roles import ROLE_LABELS, Role
from bridgehead.settings import Settings

__all__ = ["AREAS", "Console"]

# (key, label, path, one-line purpose) — the product's areas in the order of the AI system's flow.
AREAS: list[tuple[str, str, str, str]] = [
    (
        "portfolio",
        "Portfolio",
        "/portfolio",
        "Use cases from intake to value: prioritisation, stage gates, KPIs.",
    ),
    ("data", "Data", "/data", "Datasets, versions, profiles, data contracts, lineage and PII tags."),
    (
        "experiments",
        "Experiments",
        "/experiments",
        "Runs, parameters and metrics, from the SDK or unchanged MLflow code.",
    ),
    ("models", "Models", "/models", "Registered models, versions, aliases and lineage."),
    ("deployments", "Deployments", "/deployments", "Endpoints, canaries, traffic splits and rollbacks."),
    (
        "monitoring",
        "Monitoring",
        "/monitoring",
        "Drift, performance decay and bias in production; incidents.",
    ),
    (
        "governance",
        "Governance",
        "/governance",
        "EU AI Act risk tiers, fairness audits, model cards, approvals.",
    ),
    ("organization", "Organization", "/organization", "Business units, people and their roles."),
    ("audit", "Audit", "/audit", "The tamper-evident trail of every change."),
]

_PACKAGE = Path(str(files("bridgehead")))


class Console:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        template_dirs = [str(_PACKAGE / "web" / "templates")]
        template_dirs += [str(p) for p in sorted(_PACKAGE.glob("*/templates")) if "web" not in p.parts[-2:]]
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(d) for d in template_dirs]),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(
            areas=AREAS,
            version=__version__,
            role_labels={r.value: label for r, label in ROLE_LABELS.items()},
            roles=list(Role),
        )
        self.env.filters["when"] = lambda dt: "" if dt is None else dt.strftime("%Y-%m-%d %H:%M UTC")

    def render(self, request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("principal", getattr(request.state, "principal", None))
        context.setdefault("active", "")
        context["request"] = request
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def redirect_to_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    def error_page(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status=status, status_code=status, message=message)

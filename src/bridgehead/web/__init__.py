"""Console shell: templates, navigation, page helpers shared by every domain's pages."""

from __future__ import annotations

import math
import posixpath
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape

from bridgehead import __version__
from bridgehead.auth.roles import ROLE_LABELS, Role
from bridgehead.errors import NotFound
from bridgehead.settings import Settings
from bridgehead.store.artifacts import ArtifactStore

__all__ = ["AREAS", "INLINE_IMAGES", "Console", "file_response"]

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
    ("incidents", "Incidents", "/incidents", "Alerts raised by monitors: acknowledge, investigate, resolve."),
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
# Raster images may be shown inline (previews); everything else is sent as an attachment, so that an uploaded
# HTML or SVG file never renders on the console's origin.
INLINE_IMAGES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
}


def file_response(store: ArtifactStore, path: str, *, inline: bool = False) -> Response:
    """Stream one file of the artifact store to the browser. ``path`` must already be a checked store path."""
    if not store.is_file(path):
        raise NotFound("No such file.", details={"path": path})
    name = posixpath.basename(path)
    media = INLINE_IMAGES.get(posixpath.splitext(name)[1].lower()) if inline else None
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    disposition = (
        f"{'inline' if media else 'attachment'}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"
    )
    return StreamingResponse(
        store.iter_bytes(path),
        media_type=media or "application/octet-stream",
        headers={"Content-Disposition": disposition, "Cache-Control": "private, no-store"},
    )


def _plotly_version() -> str:
    try:
        return version("plotly")
    except PackageNotFoundError:  # pragma: no cover - plotly is a dependency
        return "0"


def format_ms(ms: int | None) -> str:
    """Epoch milliseconds (the tracking tables' time unit) as a UTC timestamp."""
    if ms is None:
        return ""
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):  # a client may log any 64-bit number as a time
        return str(ms)


def format_ago(ms: int | None) -> str:
    if ms is None:
        return "never"
    seconds = max(0, int(datetime.now(UTC).timestamp() - ms / 1000))
    for size, unit in (
        (86400 * 365, "year"),
        (86400 * 30, "month"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
    ):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def format_duration(start_ms: int | None, end_ms: int | None) -> str:
    if start_ms is None or end_ms is None or end_ms < start_ms:
        return ""
    seconds = (end_ms - start_ms) / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_number(value: float | int | str | None) -> str:
    """A metric for reading: four significant digits, exact integers kept, NaN and infinities named."""
    if value is None or isinstance(value, str):
        return value or ""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    magnitude = abs(number)
    if not 1e-3 <= magnitude < 1e9:
        return f"{number:.4g}"
    decimals = max(0, 3 - math.floor(math.log10(magnitude)))
    text = f"{number:,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def format_size(size: int | None) -> str:
    if size is None:
        return ""
    amount = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if amount < 1024 or unit == "GB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TB"  # pragma: no cover


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
            plotly_version=_plotly_version(),
        )
        self.env.filters["when"] = lambda dt: "" if dt is None else dt.strftime("%Y-%m-%d %H:%M UTC")
        self.env.filters.update(
            ms=format_ms, ago=format_ago, duration=format_duration, num=format_number, filesize=format_size
        )

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

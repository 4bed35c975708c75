"""Registers the console shell: home, the areas still to come, static assets (plotly.js from its wheel)."""

from __future__ import annotations

import gzip
import re
from importlib.util import find_spec
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from bridgehead.audit.models import AuditEvent
from bridgehead.auth.deps import PagePrincipal, db_of
from bridgehead.auth.models import Person
from bridgehead.hookspecs import hookimpl
from bridgehead.org.models import BusinessUnit
from bridgehead.web import AREAS, Console

router = APIRouter(include_in_schema=False)
_BUILT = {
    "data",
    "experiments",
    "models",
    "deployments",
    "monitoring",
    "incidents",
    "organization",
    "audit",
}


# Charts use the plotly.js bundled in the installed plotly wheel: no CDN, no copy in this repository.
def _plotly_js() -> Path:
    # find_spec locates the package without importing it (importing plotly's Python side is slow).
    spec = find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:  # pragma: no cover - plotly is a dependency
        raise RuntimeError("The plotly package is not installed; the console's charts need it.")
    return Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"


PLOTLY_JS = _plotly_js()
# plotly.js appends some bundled CSS (maplibre's) as an inline <style>, which the CSP refuses, unless an
# element with that style's id is already in the page. The console draws no maps: chart pages carry empty
# placeholders with these ids (read from the installed bundle, so that upgrades keep working).
_INLINE_STYLE = re.compile(
    rb'getElementById\("([0-9a-f]{16,64})"\)\)\{var [\w$]+=document\.createElement\("style"\)'
)


def plotly_inline_style_ids() -> list[str]:
    return sorted({m.decode() for m in _INLINE_STYLE.findall(PLOTLY_JS.read_bytes())})


# The URL carries plotly's version (?v=), so a year-long immutable cache is safe across upgrades.
_LONG_CACHE = {"Cache-Control": "public, max-age=31536000, immutable"}


@router.get("/")
def home(request: Request, principal: PagePrincipal) -> Response:
    with db_of(request).session() as session:
        stats = {
            "units": session.scalar(select(func.count()).select_from(BusinessUnit)) or 0,
            "people": session.scalar(
                select(func.count()).select_from(Person).where(Person.is_active.is_(True))
            )
            or 0,
            "events": session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
        }
    console: Console = request.app.state.console
    return console.render(request, "home.html", active="home", stats=stats, built=_BUILT)


def _area_page(key: str, label: str, purpose: str) -> None:
    @router.get(f"/{key}", name=f"area_{key}")
    def area(request: Request, principal: PagePrincipal) -> Response:
        console: Console = request.app.state.console
        return console.render(request, "area.html", active=key, label=label, purpose=purpose)


for _key, _label, _path, _purpose in AREAS:
    if _key not in _BUILT:
        _area_page(_key, _label, _purpose)


@router.get("/static/vendor/plotly.min.js")
def plotly_js(request: Request) -> Response:
    if "gzip" not in request.headers.get("accept-encoding", ""):
        return FileResponse(PLOTLY_JS, media_type="text/javascript", headers=_LONG_CACHE)
    # 4.8 MB minified, 1.4 MB gzipped: compressed once per app, on first use.
    state = request.app.state
    if getattr(state, "plotly_gzip", None) is None:
        state.plotly_gzip = gzip.compress(PLOTLY_JS.read_bytes(), compresslevel=6, mtime=0)
    return Response(
        state.plotly_gzip,
        media_type="text/javascript",
        headers={**_LONG_CACHE, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
    )


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    console.env.globals["plotly_inline_style_ids"] = plotly_inline_style_ids()
    # The router first: its /static/vendor/ route must be matched before the /static mount.
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")

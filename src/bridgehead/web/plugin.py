"""Registers the console shell: home, the areas still to come, static assets."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from bridgehead.audit.models import AuditEvent
from bridgehead.auth.deps import PagePrincipal, db_of
from bridgehead.auth.models import Person
from bridgehead.hookspecs import hookimpl
from bridgehead.org.models import BusinessUnit
from bridgehead.web import AREAS, Console

router = APIRouter(include_in_schema=False)
_BUILT = {"organization", "audit"}


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


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    app.include_router(router)

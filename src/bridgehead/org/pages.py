"""Console: the Organization page (units, people, roles); admins invite and assign."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from bridgehead.auth.deps import PagePrincipal, check_form_csrf, db_of, forget_tokens
from bridgehead.auth.roles import Action, Role
from bridgehead.auth.service import require
from bridgehead.errors import BridgeheadError
from bridgehead.org import service
from bridgehead.org.schemas import PersonCreate, PersonUpdate, UnitCreate
from bridgehead.web import Console

router = APIRouter(include_in_schema=False)


def _page(
    request: Request,
    principal: PagePrincipal,
    *,
    error: str | None = None,
    status: int = 200,
    unit: str | None = None,
    notice: str | None = None,
) -> Response:
    require(principal, Action.ORG_READ)
    with db_of(request).session() as session:
        units = service.list_units(session)
        people, total = service.list_people(session, principal, business_unit_id=unit or None, limit=500)
        counts = service.count_people_by_unit(session, principal)
    console: Console = request.app.state.console
    return console.render(
        request,
        "organization.html",
        status=status,
        active="organization",
        units=units,
        people=people,
        total=total,
        counts=counts,
        unit_names={u.id: u.name for u in units},
        selected_unit=unit or "",
        can_manage=principal.can(Action.PERSON_MANAGE),
        can_manage_units=principal.can(Action.UNIT_MANAGE),
        error=error,
        notice=notice or request.query_params.get("notice"),
        roles=list(Role),
    )


@router.get("/organization")
def organization(request: Request, principal: PagePrincipal, unit: str | None = None) -> Response:
    return _page(request, principal, unit=unit)


def _done(message: str) -> Response:
    return RedirectResponse(f"/organization?notice={quote(message)}", status_code=303)


def _fail(request: Request, principal: PagePrincipal, exc: Exception) -> Response:
    if isinstance(exc, BridgeheadError):
        return _page(request, principal, error=exc.message, status=exc.status)
    assert isinstance(exc, ValidationError)
    first = exc.errors()[0]
    field = ".".join(str(x) for x in first["loc"])
    return _page(request, principal, error=f"{field}: {first['msg']}", status=422)


@router.post("/organization/units")
def create_unit(
    request: Request,
    principal: PagePrincipal,
    slug: Annotated[str, Form(max_length=200)] = "",
    name: Annotated[str, Form(max_length=400)] = "",
    description: Annotated[str, Form(max_length=4000)] = "",
    csrf: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.UNIT_MANAGE)
    try:
        body = UnitCreate(slug=slug, name=name, description=description)
        with db_of(request).session(write=True) as session:
            unit = service.create_unit(session, principal, body.slug, body.name, body.description)
    except (BridgeheadError, ValidationError) as exc:
        return _fail(request, principal, exc)
    return _done(f"Business unit {unit.name} created.")


@router.post("/organization/people")
def invite_person(
    request: Request,
    principal: PagePrincipal,
    email: Annotated[str, Form(max_length=320)] = "",
    name: Annotated[str, Form(max_length=400)] = "",
    role: Annotated[str, Form(max_length=60)] = "",
    business_unit_id: Annotated[str, Form(max_length=64)] = "",
    csrf: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.PERSON_MANAGE)
    try:
        body = PersonCreate(email=email, name=name, role=role, business_unit_id=business_unit_id)
        with db_of(request).session(write=True) as session:
            person, generated = service.invite_person(
                session,
                principal,
                email=str(body.email),
                name=body.name,
                role=body.role,
                business_unit_id=body.business_unit_id,
            )
    except (BridgeheadError, ValidationError) as exc:
        return _fail(request, principal, exc)
    # Rendered in the POST response, not redirected: the password must not land in a URL or history.
    message = f"{person.name} invited. One-time password (shown once, pass it on securely): {generated}"
    return _page(request, principal, notice=message)


@router.post("/organization/people/{person_id}")
def update_person(
    request: Request,
    principal: PagePrincipal,
    person_id: str,
    role: Annotated[str, Form(max_length=60)] = "",
    business_unit_id: Annotated[str, Form(max_length=64)] = "",
    is_active: Annotated[str, Form(max_length=10)] = "",
    csrf: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.PERSON_MANAGE)
    try:
        body = PersonUpdate(
            role=role or None,
            business_unit_id=business_unit_id or None,
            is_active={"true": True, "false": False}.get(is_active),
        )
        with db_of(request).session(write=True) as session:
            person = service.update_person(
                session, principal, person_id, **body.model_dump(exclude_none=True)
            )
    except (BridgeheadError, ValidationError) as exc:
        return _fail(request, principal, exc)
    forget_tokens(request)
    return _done(f"{person.name} updated.")

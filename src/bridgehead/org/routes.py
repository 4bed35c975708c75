"""JSON API: /api/v1/business-units, /api/v1/people, /api/v1/me."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from bridgehead.auth.deps import ApiPrincipal, db_of, forget_tokens
from bridgehead.auth.roles import Action, Role
from bridgehead.auth.service import require
from bridgehead.errors import error_responses
from bridgehead.org import service
from bridgehead.org.schemas import (
    PersonCreate,
    PersonCreated,
    PersonOut,
    PersonUpdate,
    UnitCreate,
    UnitOut,
    UnitUpdate,
)
from bridgehead.schemas import Page

router = APIRouter(prefix="/api/v1", tags=["organization"])
ERRORS = error_responses()

Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


@router.get("/me", response_model=PersonOut, responses=ERRORS)
def me(request: Request, principal: ApiPrincipal) -> PersonOut:
    """The authenticated person."""
    with db_of(request).session() as session:
        return PersonOut.model_validate(service.get_person(session, principal, principal.person_id))


@router.get("/business-units", response_model=Page[UnitOut], responses=ERRORS)
def list_units(request: Request, principal: ApiPrincipal) -> Page[UnitOut]:
    require(principal, Action.ORG_READ)
    with db_of(request).session() as session:
        units = [UnitOut.model_validate(u) for u in service.list_units(session)]
    return Page[UnitOut](items=units, total=len(units))


@router.post("/business-units", status_code=201, response_model=UnitOut, responses=ERRORS)
def create_unit(request: Request, principal: ApiPrincipal, body: UnitCreate) -> UnitOut:
    require(principal, Action.UNIT_MANAGE)
    with db_of(request).session(write=True) as session:
        unit = service.create_unit(session, principal, body.slug, body.name, body.description)
        return UnitOut.model_validate(unit)


@router.get("/business-units/{unit_id}", response_model=UnitOut, responses=ERRORS)
def get_unit(request: Request, principal: ApiPrincipal, unit_id: str) -> UnitOut:
    require(principal, Action.ORG_READ)
    with db_of(request).session() as session:
        return UnitOut.model_validate(service.get_unit(session, unit_id))


@router.patch("/business-units/{unit_id}", response_model=UnitOut, responses=ERRORS)
def update_unit(request: Request, principal: ApiPrincipal, unit_id: str, body: UnitUpdate) -> UnitOut:
    require(principal, Action.UNIT_MANAGE)
    with db_of(request).session(write=True) as session:
        unit = service.update_unit(session, principal, unit_id, **body.model_dump(exclude_unset=True))
        return UnitOut.model_validate(unit)


@router.get("/people", response_model=Page[PersonOut], responses=ERRORS)
def list_people(
    request: Request,
    principal: ApiPrincipal,
    business_unit_id: str | None = None,
    role: Role | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[PersonOut]:
    """People you may see: your unit and the central team, or everyone for central roles."""
    require(principal, Action.ORG_READ)
    with db_of(request).session() as session:
        rows, total = service.list_people(
            session, principal, business_unit_id=business_unit_id, role=role, limit=limit, offset=offset
        )
        return Page[PersonOut](items=[PersonOut.model_validate(p) for p in rows], total=total)


@router.post("/people", status_code=201, response_model=PersonCreated, responses=ERRORS)
def invite_person(request: Request, principal: ApiPrincipal, body: PersonCreate) -> PersonCreated:
    """Invite a person with a role in a business unit (admins)."""
    require(principal, Action.PERSON_MANAGE)
    with db_of(request).session(write=True) as session:
        person, generated = service.invite_person(
            session,
            principal,
            email=str(body.email),
            name=body.name,
            role=body.role,
            business_unit_id=body.business_unit_id,
            password=body.password,
        )
        out = PersonCreated.model_validate(person)
    out.initial_password = generated
    return out


@router.get("/people/{person_id}", response_model=PersonOut, responses=ERRORS)
def get_person(request: Request, principal: ApiPrincipal, person_id: str) -> PersonOut:
    require(principal, Action.ORG_READ)
    with db_of(request).session() as session:
        return PersonOut.model_validate(service.get_person(session, principal, person_id))


@router.patch("/people/{person_id}", response_model=PersonOut, responses=ERRORS)
def update_person(request: Request, principal: ApiPrincipal, person_id: str, body: PersonUpdate) -> PersonOut:
    """Change a person's role, unit, name or active state (admins)."""
    require(principal, Action.PERSON_MANAGE)
    with db_of(request).session(write=True) as session:
        person = service.update_person(session, principal, person_id, **body.model_dump(exclude_unset=True))
        updated = PersonOut.model_validate(person)
    forget_tokens(request)
    return updated

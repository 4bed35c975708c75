"""Operations on business units and people. Plain functions taking a session and an actor."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from bridgehead.audit.service import Actor, ActorRef, record
from bridgehead.auth.models import Person
from bridgehead.auth.roles import Role
from bridgehead.auth.service import Principal, hash_password
from bridgehead.errors import AlreadyExists, Conflict, NotFound, ValidationFailed
from bridgehead.org.models import BusinessUnit
from bridgehead.settings import Settings
from bridgehead.store import Database

__all__ = [
    "CENTRAL_SLUG",
    "bootstrap_admin",
    "count_people_by_unit",
    "create_admin",
    "create_unit",
    "ensure_central_unit",
    "get_person",
    "get_unit",
    "invite_person",
    "list_people",
    "list_units",
    "update_person",
    "update_unit",
]

CENTRAL_SLUG = "platform"


def _unit_dict(unit: BusinessUnit) -> dict[str, Any]:
    return {
        "slug": unit.slug,
        "name": unit.name,
        "description": unit.description,
        "is_central": unit.is_central,
    }


def _person_dict(person: Person) -> dict[str, Any]:
    return {
        "email": person.email,
        "name": person.name,
        "role": person.role,
        "business_unit_id": person.business_unit_id,
        "is_active": person.is_active,
    }


def _diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {k: {"from": before[k], "to": after[k]} for k in after if before.get(k) != after[k]}


# --- business units ---------------------------------------------------------------------------


def ensure_central_unit(session: Session, actor: Actor) -> BusinessUnit:
    unit = session.scalar(select(BusinessUnit).where(BusinessUnit.is_central.is_(True)))
    if unit is None:
        unit = BusinessUnit(
            slug=CENTRAL_SLUG,
            name="AI Platform (central)",
            is_central=True,
            description="The central platform team that runs Bridgehead for the organization.",
        )
        session.add(unit)
        session.flush()
        record(
            session,
            actor,
            "business_unit.create",
            "business_unit",
            unit.id,
            business_unit_id=unit.id,
            changes=_unit_dict(unit),
        )
    return unit


def list_units(session: Session) -> Sequence[BusinessUnit]:
    return session.scalars(
        select(BusinessUnit).order_by(BusinessUnit.is_central.desc(), BusinessUnit.name)
    ).all()


def get_unit(session: Session, unit_id: str) -> BusinessUnit:
    unit = session.get(BusinessUnit, unit_id)
    if unit is None:
        unit = session.scalar(select(BusinessUnit).where(BusinessUnit.slug == unit_id))
    if unit is None:
        raise NotFound(f"Business unit {unit_id!r} does not exist.", details={"business_unit_id": unit_id})
    return unit


def create_unit(session: Session, actor: Actor, slug: str, name: str, description: str = "") -> BusinessUnit:
    if session.scalar(select(BusinessUnit).where(BusinessUnit.slug == slug)) is not None:
        raise AlreadyExists(f"A business unit with slug {slug!r} already exists.", details={"slug": slug})
    unit = BusinessUnit(slug=slug, name=name, description=description, is_central=False)
    session.add(unit)
    session.flush()
    record(
        session,
        actor,
        "business_unit.create",
        "business_unit",
        unit.id,
        business_unit_id=unit.id,
        changes=_unit_dict(unit),
    )
    return unit


def update_unit(session: Session, actor: Actor, unit_id: str, **fields: Any) -> BusinessUnit:
    unit = get_unit(session, unit_id)
    before = _unit_dict(unit)
    for key, value in fields.items():
        if value is not None:
            setattr(unit, key, value)
    changes = _diff(before, _unit_dict(unit))
    if changes:
        record(
            session,
            actor,
            "business_unit.update",
            "business_unit",
            unit.id,
            business_unit_id=unit.id,
            changes=changes,
        )
    return unit


# --- people -----------------------------------------------------------------------------------


def _visible_people(principal: Principal) -> Any:
    """Non-central people see their own unit and the central team; central roles see everyone."""
    stmt = select(Person)
    if not principal.sees_all_units:
        central = select(BusinessUnit.id).where(BusinessUnit.is_central.is_(True)).scalar_subquery()
        stmt = stmt.where(
            or_(Person.business_unit_id == principal.business_unit_id, Person.business_unit_id == central)
        )
    return stmt


def list_people(
    session: Session,
    principal: Principal,
    *,
    business_unit_id: str | None = None,
    role: Role | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[Person], int]:
    stmt = _visible_people(principal)
    if business_unit_id:
        stmt = stmt.where(Person.business_unit_id == business_unit_id)
    if role:
        stmt = stmt.where(Person.role == role.value)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Person.name, Person.email).limit(limit).offset(offset)).all()
    return rows, total


def count_people_by_unit(session: Session, principal: Principal) -> dict[str, int]:
    """Active people per business unit, among those the principal may see."""
    visible = _visible_people(principal).where(Person.is_active.is_(True)).subquery()
    rows = session.execute(
        select(visible.c.business_unit_id, func.count()).group_by(visible.c.business_unit_id)
    )
    return {unit_id: count for unit_id, count in rows}


def get_person(session: Session, principal: Principal, person_id: str) -> Person:
    person: Person | None = session.scalar(_visible_people(principal).where(Person.id == person_id))
    if person is None:
        # Same answer for "absent" and "not yours", so other units' people cannot be probed.
        raise NotFound(f"Person {person_id!r} does not exist.", details={"person_id": person_id})
    return person


def invite_person(
    session: Session,
    actor: Actor,
    *,
    email: str,
    name: str,
    role: Role,
    business_unit_id: str,
    password: str | None = None,
) -> tuple[Person, str | None]:
    email = email.strip().lower()
    unit = get_unit(session, business_unit_id)
    if session.scalar(select(Person).where(Person.email == email)) is not None:
        raise AlreadyExists(f"A person with e-mail {email!r} already exists.", details={"email": email})
    generated = None if password else secrets.token_urlsafe(12)
    person = Person(
        email=email,
        name=name,
        role=role.value,
        business_unit_id=unit.id,
        password_hash=hash_password(password or generated or ""),
        is_active=True,
    )
    session.add(person)
    session.flush()
    record(
        session,
        actor,
        "person.invite",
        "person",
        person.id,
        business_unit_id=unit.id,
        changes=_person_dict(person),
    )
    return person, generated


def _active_admins(session: Session) -> int:
    return (
        session.scalar(
            select(func.count())
            .select_from(Person)
            .where(Person.role == Role.CHIEF_AI_OFFICER.value, Person.is_active.is_(True))
        )
        or 0
    )


def update_person(session: Session, actor: Actor, person_id: str, **fields: Any) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise NotFound(f"Person {person_id!r} does not exist.", details={"person_id": person_id})
    before = _person_dict(person)
    if fields.get("business_unit_id") is not None:
        fields["business_unit_id"] = get_unit(session, fields["business_unit_id"]).id
    if isinstance(fields.get("role"), Role):
        fields["role"] = fields["role"].value
    for key, value in fields.items():
        if value is not None:
            setattr(person, key, value)
    session.flush()
    if before["role"] == Role.CHIEF_AI_OFFICER.value and before["is_active"] and _active_admins(session) == 0:
        raise Conflict("This would leave the organization without an active chief AI officer (admin).")
    changes = _diff(before, _person_dict(person))
    if changes:
        record(
            session,
            actor,
            "person.update",
            "person",
            person.id,
            business_unit_id=person.business_unit_id,
            changes=changes,
        )
    return person


def create_admin(
    session: Session, actor: Actor, email: str, password: str, name: str | None = None
) -> Person:
    email = email.strip().lower()
    if "@" not in email:
        raise ValidationFailed("Give a valid e-mail address.", details={"email": email})
    if session.scalar(select(Person).where(Person.email == email)) is not None:
        raise AlreadyExists(f"A person with e-mail {email!r} already exists.", details={"email": email})
    central = ensure_central_unit(session, actor)
    person, _ = invite_person(
        session,
        actor,
        email=email,
        name=name or email.split("@")[0],
        role=Role.CHIEF_AI_OFFICER,
        business_unit_id=central.id,
        password=password,
    )
    return person


def bootstrap_admin(db: Database, settings: Settings) -> None:
    """On start: create the first admin from BRIDGEHEAD_ADMIN_EMAIL / _PASSWORD if that person is absent."""
    if not settings.admin_email or settings.admin_password is None:
        return
    with db.session(write=True) as session:
        email = settings.admin_email.strip().lower()
        if session.scalar(select(Person).where(Person.email == email)) is None:
            create_admin(
                session, ActorRef("system:bootstrap"), email, settings.admin_password.get_secret_value()
            )

"""Token operations shared by the API and the CLI."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridgehead.audit.service import Actor, record
from bridgehead.auth.models import ApiToken, Person
from bridgehead.auth.service import issue_token
from bridgehead.errors import Conflict, NotFound
from bridgehead.store.base import utcnow

__all__ = ["create_token", "list_tokens", "revoke_token"]


def create_token(
    session: Session, actor: Actor, person: Person, name: str, days: int
) -> tuple[ApiToken, str]:
    token, secret = issue_token(session, person, name, days)
    record(
        session,
        actor,
        "token.create",
        "api_token",
        token.id,
        business_unit_id=person.business_unit_id,
        changes={"person_id": person.id, "name": name, "expires_at": token.expires_at.isoformat()},
    )
    return token, secret


def list_tokens(session: Session, person_id: str | None = None) -> Sequence[ApiToken]:
    stmt = select(ApiToken).order_by(ApiToken.created_at.desc())
    if person_id is not None:
        stmt = stmt.where(ApiToken.person_id == person_id)
    return session.scalars(stmt).all()


def revoke_token(session: Session, actor: Actor, token_id: str, *, owner_id: str | None = None) -> ApiToken:
    """Revoke; with ``owner_id`` only that person's token may be revoked (others look absent)."""
    token = session.get(ApiToken, token_id)
    if token is None or (owner_id is not None and token.person_id != owner_id):
        raise NotFound(f"Token {token_id!r} does not exist.", details={"token_id": token_id})
    if token.revoked_at is not None:
        raise Conflict("The token is already revoked.", details={"token_id": token_id})
    token.revoked_at = utcnow()
    person = session.get(Person, token.person_id)
    record(
        session,
        actor,
        "token.revoke",
        "api_token",
        token.id,
        business_unit_id=person.business_unit_id if person else None,
        changes={"name": token.name},
    )
    return token


def find_person(session: Session, email: str) -> Person:
    person = session.scalar(select(Person).where(Person.email == email.strip().lower()))
    if person is None:
        raise NotFound(f"No person with e-mail {email!r}.", details={"email": email})
    return person

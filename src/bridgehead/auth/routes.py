"""JSON API: /api/v1/tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request

from bridgehead.audit.service import record
from bridgehead.auth import tokens
from bridgehead.auth.deps import SESSION_COOKIE, ApiPrincipal, db_of, forget_tokens
from bridgehead.auth.models import Person
from bridgehead.auth.roles import Action
from bridgehead.auth.schemas import PasswordChange, TokenCreate, TokenCreated, TokenOut
from bridgehead.auth.service import change_password, require
from bridgehead.errors import NotFound, error_responses
from bridgehead.schemas import Page

router = APIRouter(prefix="/api/v1", tags=["tokens"])
ERRORS = error_responses()


@router.get("/tokens", response_model=Page[TokenOut], responses=ERRORS)
def list_tokens(request: Request, principal: ApiPrincipal, person_id: str | None = None) -> Page[TokenOut]:
    """Your tokens; admins may list another person's with ``person_id``."""
    owner = principal.person_id
    if person_id is not None and person_id != principal.person_id:
        require(principal, Action.TOKEN_MANAGE_ANY)
        owner = person_id
    with db_of(request).session() as session:
        rows = [TokenOut.model_validate(t) for t in tokens.list_tokens(session, owner)]
    return Page[TokenOut](items=rows, total=len(rows))


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=ERRORS)
def create_token(request: Request, principal: ApiPrincipal, body: TokenCreate) -> TokenCreated:
    """Create a token for yourself. The secret is in the response only."""
    require(principal, Action.TOKEN_CREATE_OWN)
    days = body.expires_in_days or request.app.state.settings.token_default_days
    with db_of(request).session(write=True) as session:
        person = session.get(Person, principal.person_id)
        if person is None:
            raise NotFound("Your account no longer exists.")
        token, secret = tokens.create_token(session, principal, person, body.name, days)
        return TokenCreated(**TokenOut.model_validate(token).model_dump(), token=secret)


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses=ERRORS)
def revoke_token(request: Request, principal: ApiPrincipal, token_id: str) -> TokenOut:
    """Revoke one of your tokens (admins: anyone's)."""
    owner = None if principal.can(Action.TOKEN_MANAGE_ANY) else principal.person_id
    with db_of(request).session(write=True) as session:
        revoked = TokenOut.model_validate(tokens.revoke_token(session, principal, token_id, owner_id=owner))
    forget_tokens(request)
    return revoked


@router.post("/me/password", status_code=204, responses=ERRORS)
def change_my_password(request: Request, principal: ApiPrincipal, body: PasswordChange) -> None:
    """Change your own password; your other console sessions end."""
    with db_of(request).session(write=True) as session:
        person = change_password(
            session,
            principal,
            body.current_password,
            body.new_password,
            keep_session=request.cookies.get(SESSION_COOKIE),
        )
        record(
            session,
            principal,
            "person.change_password",
            "person",
            person.id,
            business_unit_id=person.business_unit_id,
            changes={"password": "changed"},
        )

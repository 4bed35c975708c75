"""Request-time authentication for the JSON API and the console."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.orm import Session

from bridgehead.auth.service import Principal, authenticate_session, authenticate_token, csrf_matches
from bridgehead.errors import PermissionDenied, Unauthenticated
from bridgehead.store import Database

__all__ = [
    "BEARER",
    "SESSION_COOKIE",
    "ApiPrincipal",
    "PagePrincipal",
    "db_of",
    "forget_tokens",
    "get_db",
    "principal_for",
]

SESSION_COOKIE = "bridgehead_session"
_SAFE = {"GET", "HEAD", "OPTIONS"}
_bearer = HTTPBearer(auto_error=False, description="An API token: `bridgehead token create`.")
# For routes that authenticate inside their own work (``principal_for``) but document the scheme:
# ``dependencies=[Depends(BEARER)]``.
BEARER = _bearer


def db_of(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


get_db = db_of


def forget_tokens(request: Request) -> None:
    """After a committed revocation, deactivation or role change: the hot lanes' cached tokens are dropped,
    so that this process applies the change to the next request (other processes within
    ``token_cache_seconds``)."""
    cache = getattr(request.app.state, "token_cache", None)
    if cache is not None:
        cache.clear()


def principal_for(request: Request, session: Session) -> Principal:
    """Who is calling the JSON API: a bearer token, or a console session cookie (unsafe methods must also
    carry the session's CSRF token). Raises Unauthenticated or PermissionDenied. Shared by the
    ``ApiPrincipal`` dependency and the MLflow logging lane (``tracking.mlflow_lane``), which authenticates in
    the session it writes with."""
    scheme, secret = get_authorization_scheme_param(request.headers.get("authorization"))
    if scheme.lower() == "bearer" and secret:
        principal = authenticate_token(session, secret)
    elif cookie := request.cookies.get(SESSION_COOKIE):
        principal = authenticate_session(session, cookie)
        # A browser sends the cookie on any site's request; unsafe calls must prove they come from our pages.
        if request.method not in _SAFE and not csrf_matches(
            principal.csrf_token, request.headers.get("x-csrf-token")
        ):
            raise PermissionDenied("Missing or wrong X-CSRF-Token header for a cookie-authenticated request.")
    else:
        raise Unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")
    request.state.principal = principal
    return principal


def _api_principal(
    request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    # ``_bearer`` documents the scheme in the OpenAPI spec; ``principal_for`` reads the header itself.
    with db_of(request).session() as session:
        return principal_for(request, session)


def _page_principal(request: Request) -> Principal:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise Unauthenticated("Sign in to use the console.")
    with db_of(request).session() as session:
        principal = authenticate_session(session, cookie)
    request.state.principal = principal
    return principal


ApiPrincipal = Annotated[Principal, Depends(_api_principal)]
PagePrincipal = Annotated[Principal, Depends(_page_principal)]


def check_form_csrf(principal: Principal, token: str | None) -> None:
    if not csrf_matches(principal.csrf_token, token):
        raise PermissionDenied(
            "The form has expired or did not come from this site. Reload the page and retry."
        )

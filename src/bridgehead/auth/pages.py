"""Console sign-in and sign-out."""

from __future__ import annotations

import secrets
from typing import Annotated
from urllib.parse import urlparse

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from bridgehead.audit.service import ActorRef, record
from bridgehead.auth.deps import SESSION_COOKIE, PagePrincipal, check_form_csrf, db_of
from bridgehead.auth.service import authenticate_password, change_password, create_session, end_session
from bridgehead.errors import BridgeheadError
from bridgehead.web import Console

LOGIN_CSRF_COOKIE = "bridgehead_login_csrf"
router = APIRouter(include_in_schema=False)


def _signer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(request.app.state.secret_key, salt="login-csrf")


def _safe_next(target: str | None) -> str:
    # Only same-site paths: an open redirect after login is a phishing aid.
    if not target or not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
        return "/"
    return target


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _login_form(
    request: Request,
    *,
    error: str | None = None,
    status: int = 200,
    email: str = "",
    next: str | None = None,
) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = _console(request).render(
        request,
        "login.html",
        status=status,
        error=error,
        email=email,
        csrf=_signer(request).dumps(nonce),
        next=_safe_next(next if next is not None else request.query_params.get("next")),
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        nonce,
        httponly=True,
        samesite="strict",
        secure=request.app.state.settings.cookie_secure,
        max_age=3600,
    )
    return response


@router.get("/login")
def login_page(request: Request) -> Response:
    return _login_form(request)


@router.post("/login")
def login(
    request: Request,
    email: Annotated[str, Form(max_length=320)] = "",
    password: Annotated[str, Form(max_length=1000)] = "",
    csrf: Annotated[str, Form(max_length=500)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    settings = request.app.state.settings
    try:
        nonce = _signer(request).loads(csrf, max_age=3600)
    except BadSignature:
        nonce = None
    if not nonce or not secrets.compare_digest(str(nonce), request.cookies.get(LOGIN_CSRF_COOKIE, "")):
        return _login_form(
            request,
            error="The sign-in form expired. Please try again.",
            status=403,
            email=email,
            next=next,
        )
    db = db_of(request)
    client = request.client.host if request.client else ""
    refused: BridgeheadError | None = None
    # Its own transaction, so a failed attempt is recorded even though sign-in is refused: the
    # error is caught inside the block, which therefore commits instead of rolling back.
    with db.session(write=True) as session:
        try:
            person = authenticate_password(
                session,
                email,
                password,
                client=client,
                max_failures=settings.login_max_failures,
                window=settings.login_window_seconds,
            )
        except BridgeheadError as exc:
            refused = exc
    if refused is not None:
        return _login_form(request, error=refused.message, status=refused.status, email=email, next=next)
    if person is None:
        return _login_form(
            request, error="E-mail or password is not correct.", status=401, email=email, next=next
        )
    with db.session(write=True) as session:
        _, secret = create_session(session, person, settings.session_max_age_seconds)
        record(
            session,
            ActorRef(email=person.email, person_id=person.id),
            "session.login",
            "person",
            person.id,
            business_unit_id=person.business_unit_id,
            changes={"client": client},
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        httponly=True,
        samesite="lax",
        secure=settings.cookie_secure,
        max_age=settings.session_max_age_seconds,
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(
    request: Request, principal: PagePrincipal, csrf: Annotated[str, Form(max_length=500)] = ""
) -> Response:
    check_form_csrf(principal, csrf)
    with db_of(request).session(write=True) as session:
        end_session(session, request.cookies.get(SESSION_COOKIE, ""))
        record(
            session,
            principal,
            "session.logout",
            "person",
            principal.person_id,
            business_unit_id=principal.business_unit_id,
        )
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/account")
def account_page(request: Request, principal: PagePrincipal) -> Response:
    return _console(request).render(request, "account.html", active="account")


@router.post("/account/password")
def account_password(
    request: Request,
    principal: PagePrincipal,
    current_password: Annotated[str, Form(max_length=1000)] = "",
    new_password: Annotated[str, Form(max_length=1000)] = "",
    confirm_password: Annotated[str, Form(max_length=1000)] = "",
    csrf: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    check_form_csrf(principal, csrf)
    console = _console(request)
    if new_password != confirm_password:
        return console.render(
            request,
            "account.html",
            status=422,
            active="account",
            error="The new password and its confirmation differ.",
        )
    try:
        with db_of(request).session(write=True) as session:
            person = change_password(
                session,
                principal,
                current_password,
                new_password,
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
    except BridgeheadError as exc:
        return console.render(request, "account.html", status=exc.status, active="account", error=exc.message)
    return console.render(
        request,
        "account.html",
        active="account",
        notice="Password changed. Your other sessions were signed out.",
    )

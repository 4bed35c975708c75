"""Who is calling: passwords, API tokens, console sessions, login throttling, and what they may see."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from bridgehead.auth.models import ApiToken, LoginAttempt, Person, WebSession
from bridgehead.auth.roles import CENTRAL_ROLES, Action, Role, allowed
from bridgehead.caching import RefreshAheadCache
from bridgehead.errors import PermissionDenied, TooManyRequests, Unauthenticated, ValidationFailed
from bridgehead.org.models import BusinessUnit
from bridgehead.store.base import utcnow

__all__ = [
    "TOKEN_PREFIX",
    "Principal",
    "TokenCache",
    "authenticate_password",
    "authenticate_session",
    "authenticate_token",
    "change_password",
    "create_session",
    "end_session",
    "hash_password",
    "issue_token",
    "principal_of",
    "require",
    "verify_password",
]

TOKEN_PREFIX = "bh_"  # noqa: S105
_hasher = PasswordHasher()
# Verified against when the e-mail is unknown, so a miss costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("bridgehead-timing-equaliser")
MIN_PASSWORD_LENGTH = 12


@dataclass(frozen=True)
class Principal:
    """An authenticated person, as seen by one request."""

    person_id: str
    email: str
    name: str
    role: Role
    business_unit_id: str
    unit_is_central: bool
    via: str  # "token" or "session"
    csrf_token: str | None = None

    @property
    def sees_all_units(self) -> bool:
        return self.role in CENTRAL_ROLES or self.unit_is_central

    def can(self, action: Action) -> bool:
        return allowed(self.role, action)

    def can_see_unit(self, business_unit_id: str | None) -> bool:
        return self.sees_all_units or business_unit_id == self.business_unit_id


def require(principal: Principal, action: Action) -> None:
    if not principal.can(action):
        raise PermissionDenied(
            f"Your role ({principal.role.value}) may not perform {action.value}.",
            details={"action": action.value, "role": principal.role.value},
        )


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(
            f"Password must have at least {MIN_PASSWORD_LENGTH} characters.", details={"field": "password"}
        )
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _principal(session: Session, person: Person, via: str, csrf: str | None = None) -> Principal:
    unit = session.get(BusinessUnit, person.business_unit_id)
    return Principal(
        person_id=person.id,
        email=person.email,
        name=person.name,
        role=Role(person.role),
        business_unit_id=person.business_unit_id,
        unit_is_central=bool(unit and unit.is_central),
        via=via,
        csrf_token=csrf,
    )


def principal_of(session: Session, person_id: str, via: str = "job") -> Principal:
    """A person as a principal, read now: for work done later on their behalf (a background job), which must
    not outlive their deactivation or keep a role they no longer have."""
    person = session.get(Person, person_id)
    if person is None or not person.is_active:
        raise PermissionDenied(
            "The person on whose behalf this runs is deactivated or no longer exists.",
            details={"person_id": person_id},
        )
    return _principal(session, person, via)


# --- API tokens -------------------------------------------------------------------------------


def issue_token(session: Session, person: Person, name: str, days: int) -> tuple[ApiToken, str]:
    """Create a token; the secret is returned once and only its hash is stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        person_id=person.id,
        name=name,
        token_hash=_sha256(secret),
        prefix=secret[:10],
        expires_at=utcnow() + timedelta(days=days),
    )
    session.add(token)
    session.flush()
    return token, secret


# Every API request runs this: one statement, built once (so SQLAlchemy compiles it once), reading plain
# columns rather than three ORM objects. That is about a quarter of the cost of the three lookups.
_TOKEN_LOOKUP = (
    select(
        ApiToken.revoked_at,
        ApiToken.expires_at,
        Person.id,
        Person.email,
        Person.name,
        Person.role,
        Person.business_unit_id,
        Person.is_active,
        BusinessUnit.is_central,
    )
    .outerjoin(Person, Person.id == ApiToken.person_id)
    .outerjoin(BusinessUnit, BusinessUnit.id == Person.business_unit_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def authenticate_token(session: Session, secret: str) -> Principal:
    # On the session's connection: a Core statement needs none of the ORM's execution layer.
    row = session.connection().execute(_TOKEN_LOOKUP, {"token_hash": _sha256(secret)}).one_or_none()
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise Unauthenticated("The API token is unknown, expired or revoked. Create a new one.")
    if row.id is None or not row.is_active:
        raise Unauthenticated("The token's owner is deactivated.")
    return Principal(
        person_id=row.id,
        email=row.email,
        name=row.name,
        role=Role(row.role),
        business_unit_id=row.business_unit_id,
        unit_is_central=bool(row.is_central),
        via="token",
    )


class TokenCache:
    """Bearer tokens this process has authenticated, kept for ``ttl`` seconds (setting
    ``token_cache_seconds``), so that the high-frequency lanes (inference, and MLflow's metric, param and tag
    logging) answer a known caller without reading the token from the database. A revocation, expiry,
    deactivation or role change made through this process clears the cache at once (and a read that started
    before it cannot put the old caller back: see `caching`); one made through another process reaches these
    lanes within ``ttl``, sooner for a busy token, whose entry is refreshed ahead. Every other route
    authenticates on each request. Console sessions are never cached. Keys are SHA-256 digests, never the
    secret itself."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._entries: RefreshAheadCache[str, Principal] = RefreshAheadCache(ttl)

    @staticmethod
    def _key(authorization: str | None) -> str | None:
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        return _sha256(authorization[7:].strip())

    def stamp(self) -> int:
        """Take before authenticating a token to `put`."""
        return self._entries.stamp()

    def get(self, authorization: str | None) -> Principal | None:
        key = self._key(authorization)
        return self._entries.get(key) if key is not None else None

    def holds(self, key: str) -> bool:
        """Whether an entry (fresh or not) is kept under this key."""
        return key in self._entries

    def claim_refresh(self, authorization: str | None) -> bool:
        """True, for one caller only, when this token's entry is fresh but due for a refresh: that caller
        should authenticate it again and `put` it back (or `forget` it if it is no longer valid)."""
        key = self._key(authorization)
        return key is not None and self._entries.claim_refresh(key)

    def put(self, authorization: str | None, principal: Principal, stamp: int) -> None:
        key = self._key(authorization)
        if key is not None and principal.via == "token":
            self._entries.put(key, principal, stamp)

    def forget(self, authorization: str | None) -> None:
        """Drop this token's entry (a refresh found it revoked, expired or its owner changed)."""
        key = self._key(authorization)
        if key is not None:
            self._entries.forget(key)

    def clear(self) -> None:
        self._entries.clear()


# --- passwords and console sessions -----------------------------------------------------------


def _throttled(session: Session, email: str, max_failures: int, window: int) -> bool:
    since = utcnow() - timedelta(seconds=window)
    last_success = session.scalar(
        select(func.max(LoginAttempt.attempted_at)).where(
            LoginAttempt.email == email, LoginAttempt.succeeded.is_(True), LoginAttempt.attempted_at >= since
        )
    )
    floor: datetime = max(since, last_success) if last_success else since
    failures = session.scalar(
        select(func.count())
        .select_from(LoginAttempt)
        .where(
            LoginAttempt.email == email, LoginAttempt.succeeded.is_(False), LoginAttempt.attempted_at >= floor
        )
    )
    return (failures or 0) >= max_failures


def authenticate_password(
    session: Session, email: str, password: str, *, client: str, max_failures: int, window: int
) -> Person | None:
    """Check a password and record the attempt; ``None`` when it is wrong. Too many recent failures lock
    the e-mail for the window (TooManyRequests). The caller commits, so failures are kept."""
    email = email.strip().lower()
    if _throttled(session, email, max_failures, window):
        raise TooManyRequests(
            "Too many failed sign-ins for this account. Wait a few minutes and try again.",
            details={"retry_after_seconds": window},
        )
    person = session.scalar(select(Person).where(Person.email == email))
    ok = verify_password(person.password_hash if person else None, password)
    ok = ok and person is not None and person.is_active
    session.add(LoginAttempt(email=email, client=client[:100], succeeded=ok))
    session.flush()
    return person if ok else None


def create_session(session: Session, person: Person, max_age: int) -> tuple[WebSession, str]:
    secret = secrets.token_urlsafe(32)
    web = WebSession(
        session_hash=_sha256(secret),
        person_id=person.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + timedelta(seconds=max_age),
    )
    session.add(web)
    session.flush()
    return web, secret


def authenticate_session(session: Session, secret: str) -> Principal:
    web = session.scalar(select(WebSession).where(WebSession.session_hash == _sha256(secret)))
    if web is None or web.ended_at is not None or web.expires_at <= utcnow():
        raise Unauthenticated("Your session has ended. Sign in again.")
    person = session.get(Person, web.person_id)
    if person is None or not person.is_active:
        raise Unauthenticated("Your account is deactivated.")
    return _principal(session, person, "session", web.csrf_token)


def end_session(session: Session, secret: str) -> WebSession | None:
    web = session.scalar(select(WebSession).where(WebSession.session_hash == _sha256(secret)))
    if web is not None and web.ended_at is None:
        web.ended_at = utcnow()
    return web


def change_password(
    session: Session, principal: Principal, current: str, new: str, *, keep_session: str | None = None
) -> Person:
    """Self-service password change. Every other console session of the person ends."""
    person = session.get(Person, principal.person_id)
    if person is None or not verify_password(person.password_hash, current):
        raise PermissionDenied("The current password is not correct.", details={"field": "current_password"})
    if current == new:
        raise ValidationFailed(
            "Choose a password different from the current one.", details={"field": "new_password"}
        )
    person.password_hash = hash_password(new)
    keep = _sha256(keep_session) if keep_session else None
    for web in session.scalars(
        select(WebSession).where(WebSession.person_id == person.id, WebSession.ended_at.is_(None))
    ):
        if web.session_hash != keep:
            web.ended_at = utcnow()
    return person


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected and given and hmac.compare_digest(expected, given))

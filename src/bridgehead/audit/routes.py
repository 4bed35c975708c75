"""JSON API: /api/v1/audit-events (ethics & compliance officers and admins)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import AfterValidator, AwareDatetime

from bridgehead.audit import service
from bridgehead.audit.schemas import AuditEventOut, AuditPage, VerifyOut
from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import require
from bridgehead.errors import error_responses

router = APIRouter(prefix="/api/v1", tags=["audit"])
ERRORS = error_responses()


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+05:00 is before the first representable instant
        raise ValueError("date-time is out of range once converted to UTC") from exc


# The audit trail stores UTC; a bound must say which instant it means (RFC 3339 requires the offset).
UtcBound = Annotated[AwareDatetime, AfterValidator(_as_utc)]


@router.get("/audit-events", response_model=AuditPage, responses=ERRORS)
def list_events(
    request: Request,
    principal: ApiPrincipal,
    actor_email: Annotated[str | None, Query(max_length=320)] = None,
    action: Annotated[
        str | None, Query(max_length=80, description="Exact action or a prefix, e.g. 'person.'")
    ] = None,
    object_type: Annotated[str | None, Query(max_length=60)] = None,
    object_id: Annotated[str | None, Query(max_length=64)] = None,
    business_unit_id: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[
        UtcBound | None, Query(description="Events at or after this instant (with offset).")
    ] = None,
    until: Annotated[UtcBound | None, Query(description="Events before this instant (with offset).")] = None,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditPage:
    """Newest first; page with ``before_seq=next_before_seq``."""
    require(principal, Action.AUDIT_READ)
    stmt = service.query(
        actor_email=actor_email,
        action=action,
        object_type=object_type,
        object_id=object_id,
        business_unit_id=business_unit_id,
        since=since,
        until=until,
        before_seq=before_seq,
    )
    with db_of(request).session() as session:
        rows = session.scalars(stmt.limit(limit + 1)).all()
        items = [AuditEventOut.model_validate(r) for r in rows[:limit]]
    return AuditPage(items=items, next_before_seq=items[-1].seq if len(rows) > limit else None)


@router.get("/audit-events/verify", response_model=VerifyOut, responses=ERRORS)
def verify_chain(request: Request, principal: ApiPrincipal) -> VerifyOut:
    """Recompute the hash chain and report the first edited, deleted or reordered event."""
    require(principal, Action.AUDIT_READ)
    with db_of(request).session() as session:
        return VerifyOut(**dataclasses.asdict(service.verify(session)))

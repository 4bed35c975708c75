"""JSON API: /api/v1/audit-events (ethics & compliance officers and admins)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from bridgehead.audit import service
from bridgehead.audit.schemas import AuditEventOut, AuditPage, VerifyOut
from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import require
from bridgehead.errors import error_responses

router = APIRouter(prefix="/api/v1", tags=["audit"])
ERRORS = error_responses()


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
    since: datetime | None = None,
    until: datetime | None = None,
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

"""Console: the Audit page — filterable trail and chain verification."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from bridgehead.audit import service
from bridgehead.auth.deps import PagePrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import require
from bridgehead.web import Console

router = APIRouter(include_in_schema=False)
PAGE = 50


@router.get("/audit")
def audit_page(
    request: Request,
    principal: PagePrincipal,
    actor: Annotated[str, Query(max_length=320)] = "",
    action: Annotated[str, Query(max_length=80)] = "",
    object_type: Annotated[str, Query(max_length=60)] = "",
    days: Annotated[int, Query(ge=0, le=3650)] = 0,
    before_seq: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    verify: bool = False,
) -> Response:
    require(principal, Action.AUDIT_READ)
    since = datetime.now(UTC) - timedelta(days=days) if days else None
    stmt = service.query(
        actor_email=actor or None,
        action=action or None,
        object_type=object_type or None,
        since=since,
        before_seq=before_seq,
    )
    with db_of(request).session() as session:
        rows = session.scalars(stmt.limit(PAGE + 1)).all()
        result = service.verify(session) if verify else None
    console: Console = request.app.state.console
    return console.render(
        request,
        "audit.html",
        active="audit",
        events=rows[:PAGE],
        next_before_seq=rows[PAGE - 1].seq if len(rows) > PAGE else None,
        filters={"actor": actor, "action": action, "object_type": object_type, "days": days},
        verification=result,
    )

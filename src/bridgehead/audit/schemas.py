"""Response bodies for the audit trail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class AuditEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    seq: int
    id: str
    at: datetime
    actor_id: str | None
    actor_email: str
    action: str
    object_type: str
    object_id: str
    business_unit_id: str | None
    changes: dict[str, Any]
    request_id: str | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next_before_seq: int | None


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    head_hash: str
    bad_seq: int | None
    bad_id: str | None
    reason: str | None

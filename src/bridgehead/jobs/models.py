"""The job queue: one row per job, claimed by one worker at a time.

The row is the whole protocol between the server, which enqueues, and the workers, which claim: status moves
``queued -> running -> succeeded | failed | cancelled`` (or back to ``queued`` for a retry). The worker id and
the attempt number on the row fence a worker that lost the job (its heartbeat went stale, or the job was
cancelled): its late progress, result or failure no longer match and are dropped.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bridgehead.store.base import Base, new_id, utcnow

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


class Job(Base):
    __tablename__ = "jobs"
    # The claim query: due queued jobs, oldest first.
    __table_args__ = (
        Index("ix_jobs_status_run_after", "status", "run_after"),
        # Retention (`service.purge`) reads only the jobs past the cutoff, by this index, not every finished job.
        Index("ix_jobs_status_finished_at", "status", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(100), index=True)
    business_unit_id: Mapped[str] = mapped_column(ForeignKey("business_units.id"), index=True)
    # The person on whose behalf it runs (None: the system, e.g. a schedule or the host's CLI).
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(20), default="queued")
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    error: Mapped[str] = mapped_column(Text, default="")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str] = mapped_column(String(500), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Not claimed before this instant: now for a new job, later for a retry (backoff) or a scheduled one.
    run_after: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    worker_id: Mapped[str | None] = mapped_column(String(200), default=None)

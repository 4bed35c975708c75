"""Response bodies of the jobs API, and how a job row becomes one."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from bridgehead.jobs.models import Job
from bridgehead.store.artifacts import safe_relative_path

__all__ = ["JobOut", "Status", "job_out", "output_of"]

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobOut(BaseModel):
    id: str
    kind: str = Field(description="What the job does, e.g. serving.score.")
    business_unit_id: str
    created_by: str | None = Field(description="The person it runs for; null for jobs the system queued.")
    status: Status
    params: dict[str, Any]
    result: dict[str, Any] | None = Field(description="What the job produced, once it succeeded.")
    error: str = Field(description="Why the last attempt failed (kept while a retry waits).")
    progress: float = Field(ge=0, le=1)
    progress_message: str
    attempts: int = Field(description="Attempts started so far.")
    max_attempts: int
    created_at: datetime
    run_after: datetime = Field(description="Not started before this instant (retries wait with a backoff).")
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None = Field(description="When its worker last reported it alive.")
    worker_id: str | None
    output_url: str | None = Field(
        default=None, description="Where to download the job's output file, once it succeeded and has one."
    )


def output_of(job: Job) -> dict[str, Any] | None:
    """The output file a succeeded job left in the artifact store, under its own ``jobs/<id>/`` prefix."""
    output = (job.result or {}).get("output") if job.status == "succeeded" else None
    if not isinstance(output, dict) or not isinstance(output.get("path"), str):
        return None
    path = safe_relative_path(output["path"])
    if not path.startswith(f"jobs/{job.id}/"):
        return None
    return {**output, "path": path}


def job_out(job: Job) -> JobOut:
    return JobOut(
        id=job.id,
        kind=job.kind,
        business_unit_id=job.business_unit_id,
        created_by=job.created_by,
        status=job.status,
        params=job.params or {},
        result=job.result,
        error=job.error,
        progress=min(max(job.progress, 0.0), 1.0),
        progress_message=job.progress_message,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        created_at=job.created_at,
        run_after=job.run_after,
        started_at=job.started_at,
        finished_at=job.finished_at,
        heartbeat_at=job.heartbeat_at,
        worker_id=job.worker_id,
        output_url=f"/api/v1/jobs/{job.id}/output" if output_of(job) else None,
    )

"""JSON API: /api/v1/jobs (list, read, cancel, download the output).

Reading needs ``jobs.read`` and follows the job's business unit (another unit's job answers 404); a job's author
may cancel it, cancelling a colleague's needs ``jobs.cancel``. Output files are for the job's author: they hold
the inputs the author sent or could read.
"""

from __future__ import annotations

import posixpath
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from bridgehead.auth.deps import ApiPrincipal, db_of
from bridgehead.errors import Conflict, NotFound, PermissionDenied, error_responses
from bridgehead.jobs import service
from bridgehead.jobs.models import Job
from bridgehead.jobs.schemas import JobOut, Status, job_out, output_of
from bridgehead.schemas import Page
from bridgehead.store.artifacts import ArtifactStore

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["jobs"])
ERRORS = error_responses()

JobId = Annotated[str, Path(min_length=1, max_length=32)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=10_000_000)]


@router.get("/jobs", response_model=Page[JobOut], responses=ERRORS)
def list_jobs(
    request: Request,
    principal: ApiPrincipal,
    kind: Annotated[str | None, Query(max_length=100, description="Only jobs of this kind.")] = None,
    status: Annotated[Status | None, Query(description="Only jobs in this state.")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[JobOut]:
    """Jobs of the caller's business unit (every unit for central staff), newest first."""
    with db_of(request).session() as session:
        rows, total = service.list_jobs(
            session, principal, kind=kind, status=status, limit=limit, offset=offset
        )
        return Page[JobOut](items=[job_out(j) for j in rows], total=total)


@router.get("/jobs/{job_id}", response_model=JobOut, responses=ERRORS)
def get_job(request: Request, principal: ApiPrincipal, job_id: JobId) -> JobOut:
    """One job: its state, progress, attempts, error and result."""
    with db_of(request).session() as session:
        return job_out(service.get_job(session, principal, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobOut, responses=ERRORS)
def cancel_job(request: Request, principal: ApiPrincipal, job_id: JobId) -> JobOut:
    """Cancel a queued or running job (409 once it has finished). A running job stops at its next progress
    report; nothing it produces afterwards is kept."""
    with db_of(request).session(write=True) as session:
        return job_out(service.cancel(session, principal, job_id))


@router.get(
    "/jobs/{job_id}/output",
    responses={
        **ERRORS,
        200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
    },
    response_class=StreamingResponse,
)
def job_output(request: Request, principal: ApiPrincipal, job_id: JobId) -> StreamingResponse:
    """Download the file a succeeded job produced (a batch scoring job's Parquet output), as an attachment.
    Only the job's author may (403 for others who see the job); 409 while it has none."""
    store: ArtifactStore = request.app.state.artifacts
    with db_of(request).session() as session:
        job = service.get_job(session, principal, job_id)
        if job.created_by is not None and job.created_by != principal.person_id:
            raise PermissionDenied(
                "Only the person who submitted this job may download its output.", details={"job_id": job_id}
            )
        output = output_of(job)
        if output is None:
            raise Conflict(
                f"Job {job_id!r} has no output to download ({job.status}).",
                details={"job_id": job_id, "status": job.status},
            )
    if not store.is_file(output["path"]):
        raise NotFound("The job's output is no longer in the artifact store.", details={"job_id": job_id})
    with db_of(request).session(write=True) as session:
        service.record_output_read(session, principal, session.get(Job, job_id) or job)
    name = str(output.get("filename") or posixpath.basename(output["path"]))
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\;' else "_" for c in name)
    return StreamingResponse(
        store.iter_bytes(output["path"]),
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}",
            "Cache-Control": "private, no-store",
        },
    )

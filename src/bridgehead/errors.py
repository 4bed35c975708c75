"""One error hierarchy. Each class carries its HTTP status and stable code; the app maps them once."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExists",
    "BadRequest",
    "BridgeheadError",
    "Conflict",
    "JobCancelled",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "StoreUnavailable",
    "TooManyRequests",
    "Unauthenticated",
    "ValidationFailed",
    "error_responses",
]


class BridgeheadError(Exception):
    """Base of every error Bridgehead raises on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class BadRequest(BridgeheadError):
    status = 400
    code = "bad_request"


class Unauthenticated(BridgeheadError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(BridgeheadError):
    status = 403
    code = "permission_denied"


class NotFound(BridgeheadError):
    status = 404
    code = "not_found"


class AlreadyExists(BridgeheadError):
    status = 409
    code = "already_exists"


class Conflict(BridgeheadError):
    status = 409
    code = "conflict"


class JobCancelled(Conflict):
    """A job was cancelled (or taken from this worker) while it ran: raised inside its handler to stop it."""

    code = "job_cancelled"


class PayloadTooLarge(BridgeheadError):
    status = 413
    code = "payload_too_large"


class ValidationFailed(BridgeheadError):
    status = 422
    code = "validation_failed"


class TooManyRequests(BridgeheadError):
    status = 429
    code = "too_many_requests"


class StoreUnavailable(BridgeheadError):
    """The database or artifact store could not be reached; safe to retry."""

    status = 503
    code = "store_unavailable"


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Not authenticated",
    403: "Not permitted",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    422: "Invalid input",
    429: "Throttled",
    503: "Store unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting the error body for the given statuses."""
    from bridgehead.schemas import ErrorBody

    wanted = statuses or (400, 401, 403, 404, 409, 422)
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS.get(s, "Error")} for s in wanted}

"""The HTTP client rebuilds Bridgehead errors from error bodies, whatever produced them."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest

from bridgehead import errors
from bridgehead.client import Client, error_from_response


def answer(status: int, body: Any = None, text: str = "") -> httpx.Response:
    if body is not None:
        return httpx.Response(status, json=body)
    return httpx.Response(status, text=text)


def body(code: str, message: str = "m", **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", errors.BadRequest),
        (401, "unauthenticated", errors.Unauthenticated),
        (403, "permission_denied", errors.PermissionDenied),
        (404, "not_found", errors.NotFound),
        (409, "already_exists", errors.AlreadyExists),
        (409, "conflict", errors.Conflict),
        (413, "payload_too_large", errors.PayloadTooLarge),
        (422, "validation_failed", errors.ValidationFailed),
        (429, "too_many_requests", errors.TooManyRequests),
        (503, "store_unavailable", errors.StoreUnavailable),
        (500, "internal_error", errors.BridgeheadError),
    ],
)
def test_codes_map_to_their_classes(status: int, code: str, cls: type[errors.BridgeheadError]) -> None:
    error = error_from_response(answer(status, body(code, "what happened", field="x")))
    assert type(error) is cls
    assert (error.message, error.details) == ("what happened", {"field": "x"})


def test_codes_without_a_class_map_by_status_and_keep_the_code() -> None:
    error = error_from_response(answer(400, body("invalid_json")))
    assert type(error) is errors.BadRequest and error.details["code"] == "invalid_json"
    error = error_from_response(answer(405, body("method_not_allowed")))
    assert type(error) is errors.BridgeheadError and error.details["code"] == "method_not_allowed"


def test_bodies_that_are_not_bridgehead_errors() -> None:
    error = error_from_response(answer(502, text="<html>Bad Gateway</html>"))
    assert type(error) is errors.StoreUnavailable and "Bad Gateway" in error.message
    error = error_from_response(answer(404, {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "x"}))
    assert type(error) is errors.NotFound


def test_requests_carry_the_token_and_non_finite_metrics_as_strings() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    client = Client("https://bh.example/", "bh_secret", http=http)
    metrics = [
        {"key": k, "value": v} for k, v in (("a", math.nan), ("b", math.inf), ("c", -math.inf), ("d", 1))
    ]
    client.log_batch("run/1", metrics=metrics)
    request = seen[0]
    assert str(request.url) == "https://bh.example/api/v1/runs/run%2F1/log-batch"
    assert request.headers["authorization"] == "Bearer bh_secret"
    sent = json.loads(request.content)
    assert [m["value"] for m in sent["metrics"]] == ["NaN", "Infinity", "-Infinity", 1.0]
    client.close()  # the caller's client is not closed by ours
    assert not http.is_closed

"""Request and response bodies of the deployments API and the native prediction protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

VersionRef = Field(
    min_length=1,
    max_length=255,
    description='A version number ("3"), an alias ("champion") or "latest".',
    examples=["3", "champion"],
)
Reason = Field(
    default="", max_length=2000, description="Why: kept in the endpoint's history and the audit trail."
)
ModelName = Field(min_length=1, max_length=250)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeployIn(_Strict):
    model: str = ModelName
    version: str = VersionRef
    environment: Literal["staging", "production"] | None = Field(
        default=None, description="Required on the first deploy of an endpoint (default staging)."
    )
    strategy: Literal["replace", "canary", "ab", "shadow"] = "replace"
    weight: float | None = Field(
        default=None, gt=0, lt=100, description="Traffic % for canary (default 10) and ab (default 50)."
    )
    business_unit_id: str | None = Field(default=None, max_length=32)
    description: str | None = Field(default=None, max_length=5000)
    reason: str = Reason


class RouteIn(_Strict):
    model: str = ModelName
    version: str = VersionRef
    weight: float = Field(ge=0, le=100)


class ShadowIn(_Strict):
    model: str = ModelName
    version: str = VersionRef


class TrafficIn(_Strict):
    routes: list[RouteIn] = Field(min_length=1, max_length=20)
    shadows: list[ShadowIn] = Field(default_factory=list, max_length=20)
    reason: str = Reason


class PromoteIn(_Strict):
    model: str | None = Field(default=None, min_length=1, max_length=250)
    version: str | None = Field(default=None, min_length=1, max_length=255)
    reason: str = Reason


class ReasonIn(_Strict):
    reason: str = Reason


class InvokersIn(_Strict):
    units: list[str] = Field(default_factory=list, max_length=200)
    roles: list[str] = Field(default_factory=list, max_length=20)


class ScoreJobIn(_Strict):
    """A batch scoring job over a registered dataset version whose data was uploaded to Bridgehead."""

    dataset_id: str = Field(min_length=1, max_length=32)
    version: int = Field(ge=1, le=2_147_483_647)


class RouteOut(BaseModel):
    model: str
    version: int
    version_id: str
    weight: float = Field(
        description="% of traffic answered (routes); 100 for shadows, which get a copy of all."
    )
    role: Literal["route", "shadow"]


class EndpointOut(BaseModel):
    id: str
    name: str
    environment: str
    business_unit_id: str
    description: str
    status: str
    revision: int
    routes: list[RouteOut]
    invokers: dict[str, list[str]]
    url: str
    created_at: datetime
    updated_at: datetime


class RevisionOut(BaseModel):
    revision: int
    source_revision: int
    action: str
    routes: list[RouteOut]
    reason: str
    author_id: str | None
    created_at: datetime


class HourOut(BaseModel):
    hour: datetime
    model: str
    version: int
    role: str
    requests: int
    rows: int
    errors: int
    mean_latency_ms: float
    max_latency_ms: float
    p50_latency_ms: float | None
    p99_latency_ms: float | None


class StatsOut(BaseModel):
    endpoint: str
    hours: list[HourOut]
    feedback: dict[str, int]


class FeedbackItem(_Strict):
    request_id: str = Field(
        min_length=1, max_length=64, description="A prediction id as returned in `ids` by the predict call."
    )
    kind: Literal["label", "override"] = "label"
    value: Any = Field(description="The true outcome (label) or the decision that replaced the model's.")
    reason: str = Field(default="", max_length=2000, description="Required for overrides.")


class FeedbackIn(_Strict):
    items: list[FeedbackItem] = Field(min_length=1, max_length=10_000)


class FeedbackOut(BaseModel):
    created: int
    updated: int


class PredictOut(BaseModel):
    request_id: str
    ids: list[str] = Field(description="One prediction id per row: what feedback refers to.")
    predictions: list[Any]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = None
    model: str
    version: int | None = Field(description="The version that answered, when one answered every row.")
    versions: list[int] = Field(description="The version that answered each row.")

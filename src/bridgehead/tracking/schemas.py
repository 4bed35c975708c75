"""Request and response bodies of the native tracking API (/api/v1/experiments, /api/v1/runs).

The SDK (bridgehead.client) validates the server's answers with the same models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

Visibility = Literal["private", "organization"]
ViewType = Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"]
RunStatus = Literal["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"]

# Both engines store 64-bit integers; anything wider must be refused before it reaches them.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
Key = Annotated[str, Field(min_length=1, max_length=250)]
TagValue = Annotated[str, Field(max_length=8000)]
ParamValue = Annotated[str, Field(max_length=6000)]


def _as_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+05:00 is before the first representable instant
        raise ValueError("date-time is out of range once converted to UTC") from exc


# An instant must say which one it means (RFC 3339 requires the offset).
UtcTime = Annotated[AwareDatetime, AfterValidator(_as_utc)]


def ms_to_datetime(ms: int) -> datetime:
    """Epoch milliseconds (as stored, and as MLflow clients send them) to a UTC time; clamped to the years
    datetime can represent, since MLflow clients may send any number."""
    seconds = min(max(ms / 1000, -62_135_596_800), 253_402_300_799)
    return datetime.fromtimestamp(seconds, UTC)


def datetime_to_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Verbatim(BaseModel):
    """Logged values are kept exactly as sent (no whitespace stripping)."""

    model_config = ConfigDict(extra="forbid")


# --- experiments ------------------------------------------------------------------------------


class ExperimentCreate(_In):
    name: str = Field(min_length=1, max_length=500, description="Unique across the organization.")
    description: str = Field(default="", max_length=20_000)
    business_unit_id: str | None = Field(
        default=None, min_length=1, max_length=32, description="Owning unit; default: your own."
    )
    use_case_id: str | None = Field(default=None, min_length=1, max_length=64)
    visibility: Visibility = Field(
        default="private",
        description="private: the owning unit and central staff; organization: everyone may read it.",
    )
    tags: dict[Key, TagValue] = Field(default_factory=dict, max_length=100)


class ExperimentUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=20_000)


class TagSet(_Verbatim):
    value: TagValue


class ExperimentOut(BaseModel):
    id: str
    name: str
    business_unit_id: str
    visibility: str
    owner_id: str | None
    use_case_id: str | None
    description: str
    artifact_location: str
    lifecycle_stage: str
    created_at: datetime
    updated_at: datetime
    tags: dict[str, str]


# --- runs -------------------------------------------------------------------------------------


class RunCreate(_In):
    experiment_id: str = Field(
        default="0", min_length=1, max_length=32, description="Default: the org-wide Default experiment."
    )
    name: str | None = Field(default=None, min_length=1, max_length=250, description="Default: generated.")
    start_time: UtcTime | None = Field(default=None, description="Default: now.")
    parent_run_id: str | None = Field(default=None, min_length=1, max_length=32, description="Nested runs.")
    tags: dict[Key, TagValue] = Field(default_factory=dict, max_length=100)


class RunUpdate(_In):
    status: RunStatus | None = None
    end_time: UtcTime | None = None
    name: str | None = Field(default=None, min_length=1, max_length=250)


class LatestMetricOut(BaseModel):
    # JSON has no NaN or infinities: they travel as the strings "NaN", "Infinity", "-Infinity", as in MLflow.
    model_config = ConfigDict(ser_json_inf_nan="strings")
    key: str
    value: float
    step: int
    timestamp_ms: int


class DatasetInputOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    name: str
    digest: str
    source_type: str
    source: str
    schema_: str = Field(alias="schema", description="JSON text, e.g. the columns and their types.")
    profile: str
    context: str


class RunOut(BaseModel):
    id: str
    experiment_id: str
    business_unit_id: str
    name: str
    status: str
    lifecycle_stage: str
    start_time: datetime
    end_time: datetime | None
    author_id: str | None
    user_name: str
    parent_run_id: str | None
    artifact_uri: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[LatestMetricOut] = Field(description="The latest value of each metric.")
    inputs: list[DatasetInputOut]


class RunSearch(_In):
    experiment_ids: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=100, description="Empty: every experiment you may see."
    )
    filter: str | None = Field(
        default=None,
        max_length=4000,
        description="MLflow's grammar, e.g. `metrics.auc > 0.8 AND params.model = 'gbm'`.",
    )
    order_by: list[Annotated[str, Field(min_length=1, max_length=300)]] = Field(
        default_factory=list, max_length=10, description="e.g. `metrics.auc DESC`, `start_time`."
    )
    view_type: ViewType = "ACTIVE_ONLY"
    limit: int = Field(default=100, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=10_000_000)


class MetricPointIn(_Verbatim):
    key: Key
    value: float = Field(description="NaN and infinities are kept.")
    step: Int64 = 0
    timestamp_ms: Int64 | None = Field(default=None, description="Epoch milliseconds; default: now.")


class LogBatch(_Verbatim):
    metrics: list[MetricPointIn] = Field(default_factory=list, max_length=1000)
    params: dict[Key, ParamValue] = Field(
        default_factory=dict, max_length=100, description="A param's value may not change once logged."
    )
    tags: dict[Key, TagValue] = Field(default_factory=dict, max_length=100)


class MetricPoint(BaseModel):
    # JSON has no NaN or infinities: they travel as the strings "NaN", "Infinity", "-Infinity", as in MLflow.
    model_config = ConfigDict(ser_json_inf_nan="strings")
    value: float
    step: int
    timestamp_ms: int


class MetricHistory(BaseModel):
    key: str
    items: list[MetricPoint]
    total: int


class DatasetIn(_Verbatim):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=500)
    digest: str = Field(min_length=1, max_length=64, description="e.g. the SHA-256 of the content.")
    source_type: str = Field(default="", max_length=40, description="e.g. local, s3, pandas.")
    source: str = Field(default="", max_length=4000, description="Where the data came from (a URI).")
    schema_: str = Field(default="", alias="schema", max_length=200_000, description="JSON text.")
    profile: str = Field(default="", max_length=200_000, description="JSON text.")
    context: str = Field(default="", max_length=40, description="e.g. training, validation, test.")


class LogInputs(_Verbatim):
    datasets: list[DatasetIn] = Field(min_length=1, max_length=100)


# --- artifacts --------------------------------------------------------------------------------


class ArtifactEntry(BaseModel):
    path: str = Field(description="Relative to the run's artifact root.")
    is_dir: bool
    size: int


class ArtifactList(BaseModel):
    root_uri: str
    path: str
    files: list[ArtifactEntry]


class ArtifactWritten(BaseModel):
    path: str
    size: int

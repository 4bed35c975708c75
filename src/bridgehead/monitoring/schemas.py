"""Request and response bodies of the monitoring API: monitors, runs, incidents, notification channels."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridgehead.jobs.schemas import Status

Severity = Literal["info", "warning", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RuleIn(_Strict):
    metric: str = Field(
        min_length=1,
        max_length=300,
        description="A report metric: drift_share, dataset_drift, psi_max, psi:<column>, accuracy_decline, "
        "f1_decline, roc_auc, demographic_parity_difference, disparate_impact_ratio, "
        "fairness:<attribute>:<gap>, confidence_mean, override_rate...",
    )
    op: Literal[">", ">=", "<", "<="]
    threshold: float = Field(allow_inf_nan=False)
    severity: Severity = "warning"


class ColumnOverrideIn(_Strict):
    test: str | None = Field(default=None, max_length=40, description="ks, chisquare, z, wasserstein, ...")
    threshold: float | None = Field(default=None, allow_inf_nan=False)


class MonitorSettingsIn(_Strict):
    columns: dict[str, ColumnOverrideIn] | None = Field(
        default=None, description="Per-column test/threshold."
    )
    drift_share: float | None = Field(default=None, gt=0, le=1, description="Dataset drift at this share.")
    protected: list[str] | None = Field(
        default=None, description="Protected attributes (default: input columns tagged 'protected')."
    )
    positive: Any | None = Field(default=None, description="The positive class (default 1).")
    baseline: dict[str, float] | None = Field(default=None, description="Overrides the registered metrics.")
    task: Literal["classification", "regression"] | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class MonitorIn(_Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    description: str = Field(default="", max_length=5000)
    every_minutes: int | None = Field(default=None, ge=1, le=44640, description="60 = hourly, 1440 = daily.")
    every_rows: int | None = Field(default=None, ge=1, le=10**12, description="Run after this many new rows.")
    window_minutes: int = Field(default=1440, ge=1, le=527040, description="The window each run looks at.")
    reference_version_id: str | None = Field(
        default=None, max_length=32, description="A profiled dataset version; default: the training data."
    )
    target_column: str | None = Field(default=None, max_length=250)
    settings: MonitorSettingsIn = Field(default_factory=MonitorSettingsIn)
    rules: list[RuleIn] | None = Field(default=None, max_length=100, description="Default: the standard set.")


class MonitorPatch(_Strict):
    """Only the fields sent change. Null clears a field that may be empty (one of the two schedules, the
    reference, the target, the settings, the owner); the others take a value, and null is refused for them."""

    # Not nullable: the default only stands for "not sent" (pydantic does not validate defaults).
    description: str = Field(default=None, max_length=5000)  # type: ignore[assignment]
    every_minutes: int | None = Field(default=None, ge=1, le=44640)
    every_rows: int | None = Field(default=None, ge=1, le=10**12)
    window_minutes: int = Field(default=None, ge=1, le=527040)  # type: ignore[assignment]
    reference_version_id: str | None = Field(default=None, max_length=32)
    target_column: str | None = Field(default=None, max_length=250)
    settings: MonitorSettingsIn | None = None
    rules: list[RuleIn] = Field(default=None, max_length=100)  # type: ignore[arg-type]
    enabled: bool = Field(default=None)  # type: ignore[assignment]
    owner_id: str | None = Field(default=None, max_length=32)


class RunSummary(BaseModel):
    id: str
    status: str
    trigger: str
    window_start: datetime
    window_end: datetime
    rows: int
    metrics: dict[str, Any]
    breaches: list[dict[str, Any]]
    error: str
    incident_id: str | None


class RunOut(RunSummary):
    monitor_id: str
    report: dict[str, Any]


class MonitorOut(BaseModel):
    id: str
    endpoint: str
    name: str
    description: str
    business_unit_id: str
    every_minutes: int | None
    every_rows: int | None
    window_minutes: int
    reference_version_id: str | None
    target_column: str | None
    settings: dict[str, Any]
    rules: list[dict[str, Any]]
    enabled: bool
    owner_id: str | None
    next_run: datetime | None
    last_run: datetime | None
    created: datetime


class MonitorDetail(MonitorOut):
    runs: list[RunSummary]


class JobRef(BaseModel):
    job_id: str
    status: str


class NotificationOut(BaseModel):
    """One delivery of the incident's notification to one channel: the job that delivers it, retried with
    backoff (``succeeded`` means delivered)."""

    job_id: str
    channel_id: str
    channel: str | None = Field(description="The channel's name; null once the channel was deleted.")
    kind: str | None = Field(description="webhook or email; null once the channel was deleted.")
    event: str = Field(description="incident.opened or incident.escalated")
    status: Status
    attempts: int
    max_attempts: int
    error: str = Field(description="Why the last attempt failed (empty once delivered).")
    queued: datetime
    finished: datetime | None


class IncidentOut(BaseModel):
    id: str
    title: str
    severity: str
    status: str
    endpoint: str | None
    monitor_id: str
    business_unit_id: str
    owner_id: str | None
    opened: datetime
    acknowledged: datetime | None
    resolved: datetime | None
    seconds_to_acknowledge: float | None
    seconds_to_resolve: float | None
    resolution: str
    occurrences: int
    breaches: list[dict[str, Any]]
    run_ids: list[str]
    notifications: list[NotificationOut] | None = Field(
        default=None,
        description="Its notifications' deliveries, oldest first: in the answers about one incident, null in lists.",
    )


class AcknowledgeIn(_Strict):
    note: str = Field(default="", max_length=2000)


class ResolveIn(_Strict):
    resolution: str = Field(
        min_length=1, max_length=5000, description="What was done: retrained, rolled back..."
    )


class AssignIn(_Strict):
    owner_id: str = Field(min_length=1, max_length=32)


class ChannelIn(_Strict):
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["webhook", "email"]
    target: str = Field(
        min_length=1, max_length=2000, description="The webhook URL, or e-mail addresses (a,b)."
    )
    min_severity: Severity = "warning"


class ChannelOut(BaseModel):
    id: str
    name: str
    kind: str
    target: str
    min_severity: str
    enabled: bool
    business_unit_id: str
    created: datetime


class ChannelCreated(ChannelOut):
    secret: str | None = Field(
        default=None,
        description="The webhook's signing secret: shown once, not stored (derived on the server).",
    )

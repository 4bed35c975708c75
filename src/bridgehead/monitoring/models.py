"""Tables for monitors, their runs (each with its report), incidents and notification channels.

A monitor watches one endpoint: on a schedule (every N minutes) or every N predicted rows it reads a window of
the prediction log, compares it with a reference (a dataset version's stored profile), measures quality on the
labels that came back and fairness by protected attribute, and evaluates its rules. A breached rule opens an
incident, or adds to the one already open for that monitor; notifications go to the unit's channels.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridgehead.store.base import Base, new_id


class Monitor(Base):
    __tablename__ = "monitors"
    __table_args__ = (UniqueConstraint("endpoint_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id"), index=True)
    business_unit_id: Mapped[str] = mapped_column(ForeignKey("business_units.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    # Schedule: every N minutes, or as soon as N new rows were predicted (checked every minute).
    every_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    every_rows: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The window a run looks at: the last N minutes of predictions.
    window_minutes: Mapped[int] = mapped_column(Integer, default=1440)
    # The reference: a dataset version (its stored profile); None = the serving version's training data.
    reference_version_id: Mapped[str | None] = mapped_column(String(32), default=None)
    # The reference's label column, for prediction drift; None = the one column that is not a model input.
    target_column: Mapped[str | None] = mapped_column(String(250), default=None)
    # Overrides: {"columns": {name: {"test", "threshold"}}, "drift_share", "protected": [...], "positive"}.
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"metric", "op", "threshold", "severity"}]; see monitoring.rules.
    rules: Mapped[list[Any]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | deleted
    owner_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    next_run_ms: Mapped[int | None] = mapped_column(BigInteger, default=None, index=True)
    last_run_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # Rows the endpoint had predicted when the last run was scheduled (for every_rows).
    rows_at_last_run: Mapped[int] = mapped_column(BigInteger, default=0)


class MonitorRun(Base):
    __tablename__ = "monitor_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    monitor_id: Mapped[str] = mapped_column(ForeignKey("monitors.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))  # succeeded | failed
    trigger: Mapped[str] = mapped_column(String(20), default="schedule")  # schedule | rows | manual
    window_start_ms: Mapped[int] = mapped_column(BigInteger)
    window_end_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    started_ms: Mapped[int] = mapped_column(BigInteger)
    finished_ms: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    # The flat metrics rules look at, and the rules that were breached.
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    breaches: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # The whole report (monitoring.report), for the report page and its HTML/JSON export.
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    incident_id: Mapped[str | None] = mapped_column(String(32), default=None)


class Incident(Base):
    __tablename__ = "incidents"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    monitor_id: Mapped[str] = mapped_column(ForeignKey("monitors.id"), index=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id"), index=True)
    business_unit_id: Mapped[str] = mapped_column(ForeignKey("business_units.id"), index=True)
    title: Mapped[str] = mapped_column(String(300))
    severity: Mapped[str] = mapped_column(String(20))  # info | warning | critical
    status: Mapped[str] = mapped_column(
        String(20), default="open", index=True
    )  # open | acknowledged | resolved
    owner_id: Mapped[str | None] = mapped_column(String(32), default=None)
    opened_ms: Mapped[int] = mapped_column(BigInteger)
    acknowledged_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    acknowledged_by: Mapped[str | None] = mapped_column(String(32), default=None)
    resolved_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    resolved_by: Mapped[str | None] = mapped_column(String(32), default=None)
    resolution: Mapped[str] = mapped_column(Text, default="")
    # Evidence: the runs that breached (ids, oldest first) and the latest breaches.
    run_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    breaches: Mapped[list[Any]] = mapped_column(JSON, default=list)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    last_seen_ms: Mapped[int] = mapped_column(BigInteger)


class NotificationChannel(Base):
    __tablename__ = "notification_channels"
    __table_args__ = (UniqueConstraint("business_unit_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    business_unit_id: Mapped[str] = mapped_column(ForeignKey("business_units.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))  # webhook | email
    # The webhook URL, or the e-mail addresses (comma-separated).
    target: Mapped[str] = mapped_column(String(2000))
    min_severity: Mapped[str] = mapped_column(String(20), default="warning")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)

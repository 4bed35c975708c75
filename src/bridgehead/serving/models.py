"""Tables for endpoints, their configuration history, hourly prediction aggregates and feedback.

The predictions themselves are not in the database: they go to Parquet files (``serving.predlog``), which
monitoring reads in chunks. The database keeps what one look needs: which versions serve where with what
traffic, every configuration the endpoint has had (for rollback and audit), per-hour counts and latencies, and
the feedback attached to request ids.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridgehead.store.base import Base, new_id


class Endpoint(Base):
    __tablename__ = "endpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # The name is the URL: /serve/{name}/predict. Unique across the organization.
    name: Mapped[str] = mapped_column(String(100), unique=True)
    business_unit_id: Mapped[str] = mapped_column(ForeignKey("business_units.id"), index=True)
    environment: Mapped[str] = mapped_column(String(20), default="staging")
    description: Mapped[str] = mapped_column(Text, default="")
    # The traffic policy in force (serving.routing.TrafficPolicy.to_config()).
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    # Changing the salt reshuffles sticky assignments; kept stable otherwise.
    salt: Mapped[str] = mapped_column(String(32), default=new_id)
    # Who may invoke beyond the endpoint's own unit and central staff: {"units": [...], "roles": [...]}.
    invokers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="active")
    owner_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class EndpointRevision(Base):
    """Every configuration the endpoint has had, in order; rollback restores the one before the current."""

    __tablename__ = "endpoint_revisions"
    __table_args__ = (UniqueConstraint("endpoint_id", "revision"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    # The revision whose configuration this one put in force: itself, or for a rollback the restored one's.
    source_revision: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class PredictionHour(Base):
    """Per endpoint, hour, version and role: requests, rows, errors (rows), and the requests' latency (sum, max,
    histogram)."""

    __tablename__ = "prediction_hours"

    endpoint_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    hour_ms: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    model_name: Mapped[str] = mapped_column(String(250), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    role: Mapped[str] = mapped_column(String(10), primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_sum_ms: Mapped[float] = mapped_column(Float, default=0.0)
    latency_max_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # Counts per latency bucket (serving.runtime.LATENCY_BUCKETS_MS), for percentiles in the console.
    latency_buckets: Mapped[list[Any]] = mapped_column(JSON, default=list)


class Feedback(Base):
    """Ground truth ("label") or a human decision that replaced the model's ("override", with a reason)."""

    __tablename__ = "prediction_feedback"
    __table_args__ = (UniqueConstraint("endpoint_id", "request_id", "kind"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("endpoints.id"), index=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    value: Mapped[Any] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)

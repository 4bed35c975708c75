"""Tables for experiments and runs. Times are epoch milliseconds, as in MLflow, so both APIs share them."""

from __future__ import annotations

import time
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    insert,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column

from bridgehead.org.models import BusinessUnit
from bridgehead.store.base import Base, new_id

# MLflow clients log to experiment "0" when none is set: one org-wide "Default" experiment, owned by the
# central unit and created with it (see the listener at the end of this module).
DEFAULT_EXPERIMENT_ID = "0"

# SQLite only auto-increments an INTEGER primary key; PostgreSQL gets a 64-bit one.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(500), unique=True)
    business_unit_id: Mapped[str] = mapped_column(ForeignKey("business_units.id"), index=True)
    visibility: Mapped[str] = mapped_column(String(20), default="private")
    owner_id: Mapped[str | None] = mapped_column(String(32), default=None)
    use_case_id: Mapped[str | None] = mapped_column(String(64), default=None)
    description: Mapped[str] = mapped_column(Text, default="")
    artifact_location: Mapped[str] = mapped_column(String(1000))
    lifecycle_stage: Mapped[str] = mapped_column(String(20), default="active")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class ExperimentTag(Base):
    __tablename__ = "experiment_tags"

    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (Index("ix_runs_experiment_start", "experiment_id", "start_ms"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"))
    business_unit_id: Mapped[str] = mapped_column(String(32), index=True)
    name: Mapped[str] = mapped_column(String(250))
    status: Mapped[str] = mapped_column(String(20), default="RUNNING")
    start_ms: Mapped[int] = mapped_column(BigInteger)
    end_ms: Mapped[int | None] = mapped_column(BigInteger, default=None)
    author_id: Mapped[str | None] = mapped_column(String(32), default=None)
    user_name: Mapped[str] = mapped_column(String(320), default="")
    source_name: Mapped[str] = mapped_column(String(1000), default="")
    source_type: Mapped[str] = mapped_column(String(40), default="")
    parent_run_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    lifecycle_stage: Mapped[str] = mapped_column(String(20), default="active")
    artifact_uri: Mapped[str] = mapped_column(String(1000))


class Param(Base):
    __tablename__ = "params"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RunTag(Base):
    __tablename__ = "run_tags"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Metric(Base):
    """Full history. NaN is kept as a flag (SQLite stores NaN as NULL); infinities are stored as they are."""

    __tablename__ = "metrics"
    # A point is its own key: one row per identical point (MLflow stores a re-logged point once), and the key's
    # prefix (run, key, step) serves histories. On SQLite the table is that key's B-tree alone (WITHOUT ROWID):
    # a point is written once, not to a table and again to a unique index (a 1,000-point batch: 3.6 -> 2.6 ms,
    # the file half the size).
    __table_args__ = (
        PrimaryKeyConstraint("run_id", "key", "step", "timestamp_ms", "value", "is_nan"),
        {"sqlite_with_rowid": False},
    )

    # No foreign key: checking it cost SQLite more than the insert of a 1,000-point batch itself. The one
    # writer, tracking.service.log_batch, checks the run in the same transaction; runs are never deleted.
    run_id: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(250))
    step: Mapped[int] = mapped_column(BigInteger, default=0)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    value: Mapped[float] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    model_id: Mapped[str | None] = mapped_column(String(40), default=None)


class LatestMetric(Base):
    """The latest value per (run, key) by (step, timestamp): what run search filters and sorts on."""

    __tablename__ = "latest_metrics"
    __table_args__ = (Index("ix_latest_metrics_key_value", "key", "value"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(250), primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    is_nan: Mapped[bool] = mapped_column(Boolean, default=False)
    timestamp_ms: Mapped[int] = mapped_column(BigInteger)
    step: Mapped[int] = mapped_column(BigInteger)


class DatasetInput(Base):
    """A dataset a run consumed (name, digest, source, schema), as logged by either API."""

    __tablename__ = "dataset_inputs"
    __table_args__ = (UniqueConstraint("run_id", "name", "digest", "context"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), index=True)
    name: Mapped[str] = mapped_column(String(500))
    digest: Mapped[str] = mapped_column(String(64))
    source_type: Mapped[str] = mapped_column(String(40), default="")
    source: Mapped[str] = mapped_column(Text, default="")
    schema_json: Mapped[str] = mapped_column(Text, default="")
    profile_json: Mapped[str] = mapped_column(Text, default="")
    context: Mapped[str] = mapped_column(String(40), default="")


class LoggedModel(Base):
    """MLflow 3's logged model: the artifacts of one model logged from a run, before registration."""

    __tablename__ = "logged_models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiments.id"), index=True)
    source_run_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    name: Mapped[str] = mapped_column(String(500))
    model_type: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(40), default="LOGGED_MODEL_PENDING")
    artifact_uri: Mapped[str] = mapped_column(String(1000))
    creator_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


@event.listens_for(BusinessUnit, "after_insert")
def _default_experiment_with_central_unit(_mapper: Any, connection: Connection, unit: BusinessUnit) -> None:
    """The Default experiment exists from the moment the central unit does, in the same transaction."""
    if unit.is_central:
        table = cast(Table, Experiment.__table__)
        exists = connection.scalar(select(table.c.id).where(table.c.id == DEFAULT_EXPERIMENT_ID))
        if exists is None:
            ms = int(time.time() * 1000)
            connection.execute(
                insert(table).values(
                    id=DEFAULT_EXPERIMENT_ID,
                    name="Default",
                    business_unit_id=unit.id,
                    visibility="organization",
                    artifact_location=f"mlflow-artifacts:/{DEFAULT_EXPERIMENT_ID}",
                    created_ms=ms,
                    updated_ms=ms,
                    lifecycle_stage="active",
                    description="",
                )
            )

"""Tables for datasets, their immutable versions, contract validations and derivations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bridgehead.store.base import Base, new_id


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("business_unit_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(250))
    business_unit_id: Mapped[str] = mapped_column(ForeignKey("business_units.id"), index=True)
    visibility: Mapped[str] = mapped_column(String(20), default="private")
    owner_id: Mapped[str | None] = mapped_column(String(32), default=None)
    description: Mapped[str] = mapped_column(Text, default="")
    source_system: Mapped[str] = mapped_column(String(250), default="")
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The current data contract, as its author wrote it (YAML); empty when none is declared.
    contract: Mapped[str] = mapped_column(Text, default="")
    created_ms: Mapped[int] = mapped_column(BigInteger)
    updated_ms: Mapped[int] = mapped_column(BigInteger)


class DatasetGrant(Base):
    """The dataset's access policy, one row per rule: kind "unit" lets that business unit read it; kind "role"
    restricts readers outside the owning unit and central staff to the roles listed."""

    __tablename__ = "dataset_grants"

    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    value: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_number"),
        UniqueConstraint("dataset_id", "digest", name="uq_dataset_versions_digest"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(64), index=True)
    location: Mapped[str] = mapped_column(String(2000), default="")
    # "stored": the bytes are in Bridgehead's artifact store (uploaded); "external": the location is the
    # client's (a path on its machine or a URL) and the server never reads it.
    storage: Mapped[str] = mapped_column(String(20), default="external")
    format: Mapped[str] = mapped_column(String(20), default="")
    schema: Mapped[list[Any]] = mapped_column(JSON, default=list)
    row_count: Mapped[int | None] = mapped_column(BigInteger, default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The mergeable profile (sketches included) as JSON text; empty when only metadata is known.
    profile: Mapped[str] = mapped_column(Text, default="")
    column_tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    origin: Mapped[str] = mapped_column(String(20), default="api")
    author_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class DatasetDerivation(Base):
    """version <- parent version, with the transformation that made it (lineage between datasets)."""

    __tablename__ = "dataset_derivations"

    version_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    parent_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True, index=True)
    transformation: Mapped[str] = mapped_column(String(500), default="")


class Validation(Base):
    """One contract validation: of a registered version, or of a file checked before registering."""

    __tablename__ = "dataset_validations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"), index=True)
    version_id: Mapped[str | None] = mapped_column(
        ForeignKey("dataset_versions.id"), default=None, index=True
    )
    location: Mapped[str] = mapped_column(String(2000), default="")
    passed: Mapped[bool] = mapped_column(default=False)
    failed_count: Mapped[int] = mapped_column(Integer, default=0)
    report: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    contract: Mapped[str] = mapped_column(Text, default="")
    author_id: Mapped[str | None] = mapped_column(String(32), default=None)
    created_ms: Mapped[int] = mapped_column(BigInteger)

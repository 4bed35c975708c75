"""Request and response bodies of the datasets API (/api/v1/datasets); the SDK validates answers with them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bridgehead.data.contracts import ContractReport

Visibility = Literal["private", "organization"]
Key = Annotated[str, Field(min_length=1, max_length=250)]
TagValue = Annotated[str, Field(max_length=8000)]
DATASET_NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,249}$"
Format = Literal["parquet", "csv", "jsonl", "arrow"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class DatasetCreate(_In):
    name: str = Field(min_length=1, max_length=250, pattern=DATASET_NAME, description="Unique in its unit.")
    description: str = Field(default="", max_length=20_000)
    source_system: str = Field(default="", max_length=250, description="Where the data comes from.")
    tags: dict[Key, TagValue] = Field(default_factory=dict, max_length=100)
    business_unit_id: str | None = Field(default=None, min_length=1, max_length=32)
    visibility: Visibility = "private"
    contract: str | None = Field(default=None, max_length=200_000, description="A data contract (YAML).")


class DatasetUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=250, pattern=DATASET_NAME)
    description: str | None = Field(default=None, max_length=20_000)
    source_system: str | None = Field(default=None, max_length=250)
    tags: dict[Key, TagValue] | None = Field(default=None, max_length=100)
    visibility: Visibility | None = None


class ColumnSchema(BaseModel):
    name: str = Field(max_length=1000)
    type: str = Field(max_length=1000)


class ParentRef(_In):
    version_id: str = Field(min_length=1, max_length=32)
    transformation: str = Field(default="", max_length=500)


Tag = Literal["pii", "sensitive", "protected"]


class ColumnTags(BaseModel):
    tags: list[Tag] = Field(max_length=3)
    kinds: list[Annotated[str, Field(max_length=60)]] = Field(default_factory=list, max_length=20)
    reasons: list[Annotated[str, Field(max_length=500)]] = Field(default_factory=list, max_length=20)
    source: str = Field(default="detected", max_length=20)


class VersionCreate(_In):
    digest: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="SHA-256 of the file's bytes.")
    location: str = Field(default="", max_length=2000, description="Where the data lives (path or URL).")
    format: Format | None = None
    columns: list[ColumnSchema] | None = Field(default=None, max_length=10_000)
    row_count: int | None = Field(default=None, ge=0)
    size_bytes: int | None = Field(default=None, ge=0)
    profile: dict[str, Any] | None = Field(default=None, description="A Bridgehead profile (with sketches).")
    parents: list[ParentRef] = Field(default_factory=list, max_length=100)
    column_tags: dict[Annotated[str, Field(max_length=1000)], ColumnTags] | None = Field(
        default=None, max_length=10_000, description="Personal-data tags the client detected, per column."
    )


class DatasetOut(BaseModel):
    id: str
    name: str
    business_unit_id: str
    visibility: str
    owner_id: str | None
    description: str
    source_system: str
    tags: dict[str, str]
    has_contract: bool
    latest_version: int | None = None
    created_at: datetime
    updated_at: datetime


class Derivation(BaseModel):
    version_id: str
    transformation: str


class VersionOut(BaseModel):
    id: str
    dataset_id: str
    version: int
    digest: str
    location: str
    storage: str
    format: str
    columns: list[ColumnSchema]
    row_count: int | None
    size_bytes: int | None
    has_profile: bool
    column_tags: dict[str, ColumnTags] = Field(default_factory=dict)
    origin: str
    author_id: str | None
    parents: list[Derivation] = Field(default_factory=list)
    created_at: datetime


class VersionCreated(VersionOut):
    created: bool = Field(description="False when a version with this digest already existed.")


class DatasetDetail(DatasetOut):
    versions: list[VersionOut]


class ProfileOut(BaseModel):
    dataset_id: str
    version: int
    profile: dict[str, Any] = Field(description="Per-column summary; with sketches=true also the sketches.")
    masked: list[str] = Field(default_factory=list, description="Columns whose values were hidden from you.")


class ContractIn(_In):
    contract: str = Field(max_length=200_000, description="YAML (or JSON) contract; empty removes it.")


class ContractOut(BaseModel):
    dataset_id: str
    contract: str
    expectations: int


class ValidationIn(_In):
    version: int | None = Field(default=None, ge=1, le=2_147_483_647)
    location: str = Field(default="", max_length=2000)
    report: ContractReport


class ValidationOut(BaseModel):
    id: str
    dataset_id: str
    version: int | None
    location: str
    passed: bool
    failed_count: int
    report: ContractReport
    masked: list[str] = Field(default_factory=list, description="Columns whose values were hidden from you.")
    created_at: datetime
    author_id: str | None


class ColumnTagsIn(_In):
    columns: dict[Annotated[str, Field(min_length=1, max_length=1000)], list[Tag]] = Field(
        max_length=10_000, description="column -> tags (replacing that column's tags; [] clears them)"
    )


class PolicyIn(_In):
    units: list[Annotated[str, Field(min_length=1, max_length=32)]] = Field(
        default_factory=list, max_length=1000
    )
    roles: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=20
    )


class PolicyOut(BaseModel):
    dataset_id: str
    visibility: str
    units: list[str]
    roles: list[str]


class LineageNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(description="type:id")
    type: Literal["dataset_version", "run", "model_version", "endpoint"]
    label: str


class LineageEdge(BaseModel):
    source: str
    target: str
    kind: Literal["derived", "input", "produced", "deployed"]
    label: str = ""


class LineageGraph(BaseModel):
    nodes: list[LineageNode]
    edges: list[LineageEdge]
    truncated: bool = Field(description="True when the graph was cut at 500 nodes.")

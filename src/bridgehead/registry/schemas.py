"""Request and response bodies of the native registry API (/api/v1/registered-models).

The SDK (bridgehead.client) validates the server's answers with the same models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Visibility = Literal["private", "organization"]
Key = Annotated[str, Field(min_length=1, max_length=250)]
TagValue = Annotated[str, Field(max_length=8000)]
VersionNumber = Annotated[int, Field(ge=1, le=2_147_483_647)]
MODEL_NAME = r"^[^/:]+$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ModelCreate(_In):
    name: str = Field(min_length=1, max_length=250, pattern=MODEL_NAME, description="Unique; no '/' or ':'.")
    description: str = Field(default="", max_length=20_000)
    tags: dict[Key, TagValue] = Field(default_factory=dict, max_length=100)
    business_unit_id: str | None = Field(
        default=None, min_length=1, max_length=32, description="Owning unit; default: your own."
    )
    use_case_id: str | None = Field(default=None, min_length=1, max_length=64)
    visibility: Visibility = Field(
        default="private",
        description="private: the owning unit and central staff; organization: everyone may read and load it.",
    )


class ModelUpdate(_In):
    description: str | None = Field(default=None, max_length=20_000)
    tags: dict[Key, TagValue] | None = Field(default=None, max_length=100, description="Replaces all tags.")
    use_case_id: str | None = Field(default=None, min_length=1, max_length=64)


class VersionOut(BaseModel):
    name: str
    version: int
    source: str
    run_id: str | None
    flavor: str
    signature: dict[str, Any]
    sha256: str = Field(
        description="SHA-256 over the sorted (path, file SHA-256) lines of the model's files."
    )
    status: str
    stage: str
    description: str
    tags: dict[str, Any]
    metrics: dict[str, Any] = Field(description="The run's latest metrics when the version was registered.")
    datasets: list[Any] = Field(description="The run's dataset inputs when the version was registered.")
    aliases: list[str]
    user_name: str
    created_at: datetime
    updated_at: datetime


class ModelOut(BaseModel):
    id: str
    name: str
    business_unit_id: str
    visibility: str
    owner_id: str | None
    use_case_id: str | None
    description: str
    tags: dict[str, Any]
    aliases: dict[str, int]
    latest_version: int | None
    created_at: datetime
    updated_at: datetime


class ModelDetail(ModelOut):
    versions: list[VersionOut] = Field(description="Newest first.")


class VersionCreate(_In):
    run_id: str | None = Field(default=None, min_length=1, max_length=32)
    artifact_path: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        description="With run_id: the model directory inside the run's artifacts (e.g. `model`).",
    )
    source: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Instead of run_id + artifact_path: `runs:/<run id>/<path>`, `models:/m-…` or "
        "`mlflow-artifacts:/…`.",
    )
    description: str = Field(default="", max_length=20_000)
    tags: dict[Key, TagValue] = Field(default_factory=dict, max_length=100)

    @model_validator(mode="after")
    def _one_source(self) -> VersionCreate:
        if self.source is None and not (self.run_id and self.artifact_path):
            raise ValueError("give either source, or run_id and artifact_path")
        if self.source is not None and self.artifact_path is not None:
            raise ValueError("give either source or artifact_path, not both")
        return self


class VersionUpdate(_In):
    description: str | None = Field(default=None, max_length=20_000)
    tags: dict[Key, TagValue] | None = Field(default=None, max_length=100, description="Replaces all tags.")


class AliasSet(_In):
    version: VersionNumber


class AliasOut(BaseModel):
    name: str
    alias: str
    version: int


class VersionFile(BaseModel):
    path: str = Field(description="Relative to the version's model directory.")
    size: int


class VersionFiles(BaseModel):
    files: list[VersionFile]


class LineageRun(BaseModel):
    id: str
    name: str
    status: str
    experiment_id: str
    experiment_name: str | None
    start_time: datetime
    end_time: datetime | None
    params: dict[str, str]
    metrics: dict[str, Any]


class LineageDataset(BaseModel):
    name: str
    digest: str
    source: str
    context: str


class Lineage(BaseModel):
    name: str
    version: int
    sha256: str
    source: str
    run_id: str | None
    run: LineageRun | None = Field(description="Null when the run is gone or not visible to you.")
    datasets: list[LineageDataset] = Field(description="Recorded when the version was registered.")
    deployments: list[dict[str, Any]] = Field(
        description="The active endpoints serving this version now: endpoint, environment, role (route or "
        "shadow) and traffic weight (%)."
    )

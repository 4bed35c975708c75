"""MLflow's wire format for the MLflow REST adapter: request shapes, page tokens and the JSON of each object.

Field names and shapes are MLflow's protobuf JSON (snake_case; ids and model version numbers as strings;
times in epoch milliseconds; NaN and infinities as the strings "NaN", "Infinity", "-Infinity", which is how
the client's protobuf JSON encodes them in both directions). Pure: no database session, no routes.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bridgehead.errors import BadRequest
from bridgehead.registry.models import ModelVersion, RegisteredModel
from bridgehead.store import Database
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking.models import DatasetInput, Experiment, LatestMetric, LoggedModel, Metric, Run
from bridgehead.tracking.service import RunData, json_number, metric_value

__all__ = [
    "Body",
    "Int64",
    "KeyValue",
    "artifacts_of",
    "db",
    "decode_page_token",
    "experiment_json",
    "kv_dict",
    "kv_list",
    "logged_model_json",
    "metric_json",
    "model_version_json",
    "number",
    "ok",
    "page",
    "page_token",
    "registered_model_json",
    "run_info_json",
    "run_json",
]

MLFLOW_VERSION = "3.17.2"


# MLflow's int64 fields (times, steps): larger numbers are refused as bad input before reaching the database.
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class Body(BaseModel):
    """Base of request bodies: unknown fields (the client sends deprecated twins such as ``run_uuid``) are
    ignored and numbers are accepted where MLflow declares strings (ids)."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class KeyValue(Body):
    key: str
    value: str = ""


def db(request: Request) -> Database:
    found: Database = request.app.state.db
    return found


def artifacts_of(request: Request) -> ArtifactStore:
    found: ArtifactStore = request.app.state.artifacts
    return found


def ok(content: dict[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(content or {})


def kv_dict(items: Iterable[KeyValue | tuple[str, str]], what: str) -> dict[str, str]:
    """``[{key, value}]`` (or (key, value) pairs) as a dict; the same key twice with different values is
    refused, as MLflow does."""
    found: dict[str, str] = {}
    for item in items:
        key, value = (item.key, item.value) if isinstance(item, KeyValue) else item
        if key in found and found[key] != value:
            raise BadRequest(
                f"Duplicate {what} keys have been submitted with different values: {key!r}.",
                details={"key": key},
            )
        found[key] = value
    return found


def kv_list(values: dict[str, Any]) -> list[dict[str, str]]:
    return [{"key": k, "value": str(v)} for k, v in values.items()]


def number(value: float, is_nan: bool = False) -> float | str:
    """A double as protobuf JSON writes it: NaN and infinities as strings."""
    return json_number(metric_value(value, is_nan))


# --- paging -----------------------------------------------------------------------------------


def decode_page_token(token: str | None) -> int:
    """The offset an opaque page token stands for (base64 of a small JSON object)."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode() + b"=" * (-len(token) % 4)))
        offset = int(data["offset"])
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("Invalid page_token.", details={"page_token": token[:100]}) from exc
    if offset < 0:
        raise BadRequest("Invalid page_token.", details={"page_token": token[:100]})
    return offset


def page_token(offset: int) -> str:
    """The opaque token of the page that starts at ``offset``."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def page(rows: list[Any], limit: int, offset: int) -> tuple[list[Any], str | None]:
    """Given up to ``limit + 1`` rows from ``offset``: the page, and the token of the next one if any."""
    if len(rows) > limit:
        return rows[:limit], page_token(offset + limit)
    return rows, None


# --- objects ----------------------------------------------------------------------------------


def experiment_json(exp: Experiment, tags: dict[str, str]) -> dict[str, Any]:
    return {
        "experiment_id": exp.id,
        "name": exp.name,
        "artifact_location": exp.artifact_location,
        "lifecycle_stage": exp.lifecycle_stage,
        "creation_time": exp.created_ms,
        "last_update_time": exp.updated_ms,
        "tags": kv_list(tags),
    }


def run_info_json(run: Run) -> dict[str, Any]:
    info: dict[str, Any] = {
        "run_id": run.id,
        "run_uuid": run.id,
        "run_name": run.name,
        "experiment_id": run.experiment_id,
        "user_id": run.user_name,
        "status": run.status,
        "start_time": run.start_ms,
        "artifact_uri": run.artifact_uri,
        "lifecycle_stage": run.lifecycle_stage,
    }
    if run.end_ms is not None:
        info["end_time"] = run.end_ms
    return info


def metric_json(m: LatestMetric | Metric, *, run_id: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "key": m.key,
        "value": number(m.value, m.is_nan),
        "timestamp": m.timestamp_ms,
        "step": m.step,
    }
    model_id = getattr(m, "model_id", None)
    if model_id:
        found["model_id"] = model_id
    if run_id:
        found["run_id"] = run_id
    return found


def _dataset_input_json(d: DatasetInput) -> dict[str, Any]:
    dataset = {"name": d.name, "digest": d.digest, "source_type": d.source_type, "source": d.source}
    if d.schema_json:
        dataset["schema"] = d.schema_json
    if d.profile_json:
        dataset["profile"] = d.profile_json
    tags = [{"key": "mlflow.data.context", "value": d.context}] if d.context else []
    return {"tags": tags, "dataset": dataset}


def run_json(run: Run, data: RunData, outputs: list[LoggedModel]) -> dict[str, Any]:
    return {
        "info": run_info_json(run),
        "data": {
            "metrics": [metric_json(m) for m in data.metrics],
            "params": kv_list(data.params),
            "tags": kv_list(data.tags),
        },
        "inputs": {"dataset_inputs": [_dataset_input_json(d) for d in data.inputs], "model_inputs": []},
        "outputs": {"model_outputs": [{"model_id": m.id, "step": 0} for m in outputs]},
    }


def logged_model_json(model: LoggedModel, metrics: list[Metric]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "model_id": model.id,
        "experiment_id": model.experiment_id,
        "name": model.name,
        "creation_timestamp_ms": model.created_ms,
        "last_updated_timestamp_ms": model.updated_ms,
        "artifact_uri": model.artifact_uri,
        "status": model.status,
        "model_type": model.model_type,
        "tags": kv_list(model.tags),
    }
    if model.source_run_id:
        info["source_run_id"] = model.source_run_id
    return {
        "info": info,
        "data": {
            "params": kv_list(model.params),
            "metrics": [metric_json(m, run_id=model.source_run_id) for m in metrics],
        },
    }


def model_version_json(version: ModelVersion, name: str, aliases: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": name,
        "version": str(version.version),
        "creation_timestamp": version.created_ms,
        "last_updated_timestamp": version.updated_ms,
        "user_id": version.user_name,
        "current_stage": version.stage,
        "description": version.description,
        "source": version.source,
        "status": version.status,
        "tags": kv_list(version.tags),
        "run_link": "",
        "aliases": sorted(aliases),
    }
    if version.run_id:
        found["run_id"] = version.run_id
    if version.logged_model_id:
        found["model_id"] = version.logged_model_id
    return found


def registered_model_json(
    model: RegisteredModel, latest: list[ModelVersion], aliases: dict[str, int]
) -> dict[str, Any]:
    by_version: dict[int, list[str]] = {}
    for alias, number_ in aliases.items():
        by_version.setdefault(number_, []).append(alias)
    return {
        "name": model.name,
        "creation_timestamp": model.created_ms,
        "last_updated_timestamp": model.updated_ms,
        "description": model.description,
        "latest_versions": [model_version_json(v, model.name, by_version.get(v.version, [])) for v in latest],
        "tags": kv_list(model.tags),
        "aliases": [{"alias": a, "version": str(v)} for a, v in sorted(aliases.items())],
    }

"""A thin, typed HTTP client over Bridgehead's native API (/api/v1). The fluent SDK (bridgehead.sdk) sits on it.

Errors come back as the same ``BridgeheadError`` classes the server raised, rebuilt from the error body::

    client = Client("https://bridgehead.bank.example", token)
    try:
        client.get_experiment("42")
    except NotFound:
        ...

Pass ``http=`` to reuse an ``httpx.Client`` (connection pooling, proxies, custom CA) or, in tests, starlette's
``TestClient``, which is an httpx client bound to the app in process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from bridgehead import errors
from bridgehead.data.schemas import (
    ContractOut,
    DatasetDetail,
    DatasetOut,
    ProfileOut,
    ValidationOut,
    VersionCreated,
)
from bridgehead.monitoring.schemas import (
    ChannelCreated,
    ChannelOut,
    IncidentOut,
    JobRef,
    MonitorDetail,
    MonitorOut,
)
from bridgehead.monitoring.schemas import RunOut as MonitorRunOut
from bridgehead.registry.schemas import (
    AliasOut,
    Lineage,
    ModelDetail,
    ModelOut,
    VersionFiles,
    VersionOut,
)
from bridgehead.schemas import Page
from bridgehead.serving.schemas import EndpointOut, FeedbackOut, PredictOut, RevisionOut
from bridgehead.tracking.schemas import (
    ArtifactList,
    ArtifactWritten,
    ExperimentOut,
    MetricHistory,
    RunOut,
)

__all__ = ["Client", "error_from_response"]

M = TypeVar("M", bound=BaseModel)
CHUNK = 1 << 20

# Error codes the server writes that have no class of their own, by the class that carries their status.
_BY_STATUS: dict[int, type[errors.BridgeheadError]] = {
    400: errors.BadRequest,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.ValidationFailed,
    429: errors.TooManyRequests,
    502: errors.StoreUnavailable,
    503: errors.StoreUnavailable,
    504: errors.StoreUnavailable,
}


def _codes() -> dict[str, type[errors.BridgeheadError]]:
    found: dict[str, type[errors.BridgeheadError]] = {}
    pending: list[type[errors.BridgeheadError]] = [errors.BridgeheadError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def error_from_response(response: httpx.Response) -> errors.BridgeheadError:
    """The Bridgehead error an error response describes: the class named by its code, else by its status."""
    try:
        body = response.json()
        error = body["error"]
        code, message = str(error["code"]), str(error["message"])
        details = dict(error.get("details") or {})
    except (ValueError, KeyError, TypeError):
        code, message, details = "", f"HTTP {response.status_code}: {response.text[:300]}", {}
    cls = _codes().get(code) if code else None
    if cls is None or cls.status != response.status_code:
        cls = _BY_STATUS.get(response.status_code, errors.BridgeheadError)
        if code:
            details.setdefault("code", code)
    return cls(message, details=details)


def _json_number(value: Any) -> float | str:
    """JSON has no NaN or infinities; the API takes them as "NaN", "Infinity" and "-Infinity"."""
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def _path(segment: str) -> str:
    return quote(segment, safe="")


def _file_path(path: str) -> str:
    return quote(path, safe="/")


class Client:
    """Bridgehead's native API. Every method raises a ``BridgeheadError`` subclass on an error answer."""

    def __init__(
        self, url: str, token: str, *, http: httpx.Client | None = None, timeout: float = 60.0
    ) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "bridgehead-sdk"}
        self._owns_http = http is None
        self.http = http if http is not None else httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ----------------------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            response = self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise errors.StoreUnavailable(
                f"Could not reach Bridgehead at {self.url}: {exc}", details={"url": self.url}
            ) from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    def _json(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(self.request(method, path, **kwargs).json())

    def _page(self, model: type[M], method: str, path: str, **kwargs: Any) -> Page[M]:
        return Page[model].model_validate(self.request(method, path, **kwargs).json())  # type: ignore[valid-type]

    # --- experiments --------------------------------------------------------------------------

    def list_experiments(
        self,
        *,
        name: str | None = None,
        name_like: str | None = None,
        view_type: str = "ACTIVE_ONLY",
        limit: int = 100,
        offset: int = 0,
    ) -> Page[ExperimentOut]:
        params: dict[str, Any] = {"view_type": view_type, "limit": limit, "offset": offset}
        if name is not None:
            params["name"] = name
        if name_like is not None:
            params["name_like"] = name_like
        return self._page(ExperimentOut, "GET", "/api/v1/experiments", params=params)

    def create_experiment(
        self,
        name: str,
        *,
        description: str = "",
        business_unit_id: str | None = None,
        use_case_id: str | None = None,
        visibility: str = "private",
        tags: Mapping[str, str] | None = None,
    ) -> ExperimentOut:
        body = {
            "name": name,
            "description": description,
            "business_unit_id": business_unit_id,
            "use_case_id": use_case_id,
            "visibility": visibility,
            "tags": dict(tags or {}),
        }
        return self._json(ExperimentOut, "POST", "/api/v1/experiments", json=body)

    def get_experiment(self, experiment_id: str) -> ExperimentOut:
        return self._json(ExperimentOut, "GET", f"/api/v1/experiments/{_path(experiment_id)}")

    def update_experiment(
        self, experiment_id: str, *, name: str | None = None, description: str | None = None
    ) -> ExperimentOut:
        body = {k: v for k, v in {"name": name, "description": description}.items() if v is not None}
        return self._json(ExperimentOut, "PATCH", f"/api/v1/experiments/{_path(experiment_id)}", json=body)

    def delete_experiment(self, experiment_id: str) -> None:
        self.request("DELETE", f"/api/v1/experiments/{_path(experiment_id)}")

    def restore_experiment(self, experiment_id: str) -> ExperimentOut:
        return self._json(ExperimentOut, "POST", f"/api/v1/experiments/{_path(experiment_id)}/restore")

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> ExperimentOut:
        path = f"/api/v1/experiments/{_path(experiment_id)}/tags/{_file_path(key)}"
        return self._json(ExperimentOut, "PUT", path, json={"value": value})

    def delete_experiment_tag(self, experiment_id: str, key: str) -> None:
        self.request("DELETE", f"/api/v1/experiments/{_path(experiment_id)}/tags/{_file_path(key)}")

    # --- runs ---------------------------------------------------------------------------------

    def create_run(
        self,
        experiment_id: str = "0",
        *,
        name: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> RunOut:
        body = {
            "experiment_id": experiment_id,
            "name": name,
            "parent_run_id": parent_run_id,
            "tags": dict(tags or {}),
        }
        return self._json(RunOut, "POST", "/api/v1/runs", json=body)

    def get_run(self, run_id: str) -> RunOut:
        return self._json(RunOut, "GET", f"/api/v1/runs/{_path(run_id)}")

    def update_run(
        self, run_id: str, *, status: str | None = None, end_time: str | None = None, name: str | None = None
    ) -> RunOut:
        body = {
            k: v for k, v in {"status": status, "end_time": end_time, "name": name}.items() if v is not None
        }
        return self._json(RunOut, "PATCH", f"/api/v1/runs/{_path(run_id)}", json=body)

    def delete_run(self, run_id: str) -> None:
        self.request("DELETE", f"/api/v1/runs/{_path(run_id)}")

    def restore_run(self, run_id: str) -> RunOut:
        return self._json(RunOut, "POST", f"/api/v1/runs/{_path(run_id)}/restore")

    def search_runs(
        self,
        experiment_ids: Iterable[str] = (),
        *,
        filter: str | None = None,
        order_by: Iterable[str] = (),
        view_type: str = "ACTIVE_ONLY",
        limit: int = 100,
        offset: int = 0,
    ) -> Page[RunOut]:
        body = {
            "experiment_ids": list(experiment_ids),
            "filter": filter,
            "order_by": list(order_by),
            "view_type": view_type,
            "limit": limit,
            "offset": offset,
        }
        return self._page(RunOut, "POST", "/api/v1/runs/search", json=body)

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: Iterable[Mapping[str, Any]] = (),
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """``metrics``: dicts with ``key``, ``value`` and optionally ``step`` and ``timestamp_ms``. NaN and
        infinities are sent as the strings the API takes for them."""
        points = [{**m, "value": _json_number(m["value"])} for m in metrics]
        body = {"metrics": points, "params": dict(params or {}), "tags": dict(tags or {})}
        self.request("POST", f"/api/v1/runs/{_path(run_id)}/log-batch", json=body)

    def metric_history(self, run_id: str, key: str, *, limit: int = 25_000, offset: int = 0) -> MetricHistory:
        path = f"/api/v1/runs/{_path(run_id)}/metrics/{_file_path(key)}"
        return self._json(MetricHistory, "GET", path, params={"limit": limit, "offset": offset})

    def log_inputs(self, run_id: str, datasets: Iterable[Mapping[str, Any]]) -> None:
        self.request("POST", f"/api/v1/runs/{_path(run_id)}/inputs", json={"datasets": list(datasets)})

    # --- run artifacts ------------------------------------------------------------------------

    def upload_artifact(self, run_id: str, path: str, data: bytes | Path | IO[bytes]) -> ArtifactWritten:
        """Upload one file; a ``Path`` or file object is streamed in chunks, never read whole."""
        url = f"/api/v1/runs/{_path(run_id)}/artifacts/{_file_path(path)}"
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(data, bytes):
            return self._json(ArtifactWritten, "PUT", url, content=data, headers=headers)
        if isinstance(data, Path):
            with data.open("rb") as handle:
                headers["Content-Length"] = str(data.stat().st_size)
                return self._json(ArtifactWritten, "PUT", url, content=_chunks(handle), headers=headers)
        return self._json(ArtifactWritten, "PUT", url, content=_chunks(data), headers=headers)

    def list_artifacts(self, run_id: str, path: str | None = None) -> ArtifactList:
        params = {"path": path} if path else {}
        return self._json(ArtifactList, "GET", f"/api/v1/runs/{_path(run_id)}/artifacts", params=params)

    def download_artifact(self, run_id: str, path: str, target: Path) -> Path:
        return self._download(f"/api/v1/runs/{_path(run_id)}/artifacts/{_file_path(path)}", {}, target)

    # --- registry -----------------------------------------------------------------------------

    def list_registered_models(
        self, *, name_like: str | None = None, limit: int = 100, offset: int = 0
    ) -> Page[ModelOut]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if name_like is not None:
            params["name_like"] = name_like
        return self._page(ModelOut, "GET", "/api/v1/registered-models", params=params)

    def create_registered_model(
        self,
        name: str,
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        business_unit_id: str | None = None,
        use_case_id: str | None = None,
        visibility: str = "private",
    ) -> ModelDetail:
        body = {
            "name": name,
            "description": description,
            "tags": dict(tags or {}),
            "business_unit_id": business_unit_id,
            "use_case_id": use_case_id,
            "visibility": visibility,
        }
        return self._json(ModelDetail, "POST", "/api/v1/registered-models", json=body)

    def get_registered_model(self, name: str) -> ModelDetail:
        return self._json(ModelDetail, "GET", f"/api/v1/registered-models/{_path(name)}")

    def update_registered_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
        use_case_id: str | None = None,
    ) -> ModelDetail:
        body: dict[str, Any] = {"description": description, "use_case_id": use_case_id}
        body["tags"] = None if tags is None else dict(tags)
        body = {k: v for k, v in body.items() if v is not None}
        return self._json(ModelDetail, "PATCH", f"/api/v1/registered-models/{_path(name)}", json=body)

    def delete_registered_model(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/registered-models/{_path(name)}")

    def create_model_version(
        self,
        name: str,
        *,
        run_id: str | None = None,
        artifact_path: str | None = None,
        source: str | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> VersionOut:
        body = {
            "run_id": run_id,
            "artifact_path": artifact_path,
            "source": source,
            "description": description,
            "tags": dict(tags or {}),
        }
        return self._json(VersionOut, "POST", f"/api/v1/registered-models/{_path(name)}/versions", json=body)

    def list_model_versions(self, name: str, *, limit: int = 100, offset: int = 0) -> Page[VersionOut]:
        path = f"/api/v1/registered-models/{_path(name)}/versions"
        return self._page(VersionOut, "GET", path, params={"limit": limit, "offset": offset})

    def get_model_version(self, name: str, version: int) -> VersionOut:
        return self._json(VersionOut, "GET", self._version(name, version))

    def update_model_version(
        self,
        name: str,
        version: int,
        *,
        description: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> VersionOut:
        body: dict[str, Any] = {}
        if description is not None:
            body["description"] = description
        if tags is not None:
            body["tags"] = dict(tags)
        return self._json(VersionOut, "PATCH", self._version(name, version), json=body)

    def delete_model_version(self, name: str, version: int) -> None:
        self.request("DELETE", self._version(name, version))

    def set_alias(self, name: str, alias: str, version: int) -> AliasOut:
        path = f"/api/v1/registered-models/{_path(name)}/aliases/{_path(alias)}"
        return self._json(AliasOut, "PUT", path, json={"version": version})

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", f"/api/v1/registered-models/{_path(name)}/aliases/{_path(alias)}")

    def get_version_by_alias(self, name: str, alias: str) -> VersionOut:
        return self._json(
            VersionOut, "GET", f"/api/v1/registered-models/{_path(name)}/aliases/{_path(alias)}"
        )

    def list_version_files(self, name: str, version: int, path: str | None = None) -> VersionFiles:
        params = {"path": path} if path else {}
        return self._json(VersionFiles, "GET", f"{self._version(name, version)}/artifacts", params=params)

    def download_version_file(self, name: str, version: int, path: str, target: Path) -> Path:
        return self._download(f"{self._version(name, version)}/download", {"path": path}, target)

    def version_lineage(self, name: str, version: int) -> Lineage:
        return self._json(Lineage, "GET", f"{self._version(name, version)}/lineage")

    def announce_trusted_load(self, name: str, version: int) -> None:
        """Tell the server a code-executing format is about to be loaded: it refuses unless it trusts the
        format, and records the load in the audit trail."""
        self.request("POST", f"{self._version(name, version)}/trusted-load")

    # --- datasets -----------------------------------------------------------------------------

    def list_datasets(self, *, q: str | None = None, limit: int = 50, offset: int = 0) -> Page[DatasetOut]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if q:
            params["q"] = q
        return self._page(DatasetOut, "GET", "/api/v1/datasets", params=params)

    def create_dataset(self, name: str, **fields: Any) -> DatasetDetail:
        body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
        return self._json(DatasetDetail, "POST", "/api/v1/datasets", json=body)

    def get_dataset(self, dataset_id: str) -> DatasetDetail:
        return self._json(DatasetDetail, "GET", f"/api/v1/datasets/{_path(dataset_id)}")

    def find_dataset(self, name: str) -> DatasetOut | None:
        """The visible dataset with exactly this name (your unit's first), or None."""
        matches = [d for d in self.list_datasets(q=name, limit=1000).items if d.name == name]
        return matches[0] if matches else None

    def register_dataset_version(self, dataset_id: str, **body: Any) -> VersionCreated:
        return self._json(VersionCreated, "POST", f"/api/v1/datasets/{_path(dataset_id)}/versions", json=body)

    def upload_dataset_version(
        self, dataset_id: str, filename: str, data: Path | IO[bytes], *, format: str | None = None
    ) -> VersionCreated:
        params = {"format": format} if format else {}
        url = f"/api/v1/datasets/{_path(dataset_id)}/upload/{_path(filename)}"
        if isinstance(data, Path):
            with data.open("rb") as handle:
                return self._json(VersionCreated, "PUT", url, content=_chunks(handle), params=params)
        return self._json(VersionCreated, "PUT", url, content=_chunks(data), params=params)

    def dataset_profile(self, dataset_id: str, version: int, *, sketches: bool = False) -> ProfileOut:
        url = f"/api/v1/datasets/{_path(dataset_id)}/versions/{int(version)}/profile"
        return self._json(ProfileOut, "GET", url, params={"sketches": str(sketches).lower()})

    def get_dataset_contract(self, dataset_id: str) -> ContractOut:
        return self._json(ContractOut, "GET", f"/api/v1/datasets/{_path(dataset_id)}/contract")

    def set_dataset_contract(self, dataset_id: str, contract: str) -> ContractOut:
        url = f"/api/v1/datasets/{_path(dataset_id)}/contract"
        return self._json(ContractOut, "PUT", url, json={"contract": contract})

    def record_validation(
        self, dataset_id: str, report: Mapping[str, Any], *, version: int | None = None, location: str = ""
    ) -> ValidationOut:
        body = {"report": dict(report), "version": version, "location": location}
        return self._json(
            ValidationOut, "POST", f"/api/v1/datasets/{_path(dataset_id)}/validations", json=body
        )

    def validate_dataset_version(self, dataset_id: str, version: int) -> ValidationOut:
        """Validate an uploaded version against its dataset's contract on the server (the report is kept)."""
        url = f"/api/v1/datasets/{_path(dataset_id)}/versions/{int(version)}/validate"
        return self._json(ValidationOut, "POST", url)

    # --- endpoints ----------------------------------------------------------------------------

    def list_endpoints(self, *, environment: str | None = None) -> list[EndpointOut]:
        params = {"environment": environment} if environment else {}
        data = self.request("GET", "/api/v1/endpoints", params=params).json()
        return [EndpointOut.model_validate(e) for e in data]

    def get_endpoint(self, name: str) -> EndpointOut:
        return self._json(EndpointOut, "GET", f"/api/v1/endpoints/{_path(name)}")

    def deploy(self, endpoint: str, model: str, version: str | int, **options: Any) -> EndpointOut:
        """Deploy ``model`` version (number, alias or "latest") to ``endpoint``; options: environment,
        strategy (replace, canary, ab, shadow), weight, description, reason, business_unit_id."""
        body = {
            "model": model,
            "version": str(version),
            **{k: v for k, v in options.items() if v is not None},
        }
        return self._json(EndpointOut, "POST", f"/api/v1/endpoints/{_path(endpoint)}/deploy", json=body)

    def set_traffic(
        self,
        endpoint: str,
        routes: Sequence[tuple[str, str | int, float]],
        shadows: Sequence[tuple[str, str | int]] = (),
        reason: str = "",
    ) -> EndpointOut:
        body = {
            "routes": [{"model": m, "version": str(v), "weight": w} for m, v, w in routes],
            "shadows": [{"model": m, "version": str(v)} for m, v in shadows],
            "reason": reason,
        }
        return self._json(EndpointOut, "PUT", f"/api/v1/endpoints/{_path(endpoint)}/traffic", json=body)

    def promote(
        self, endpoint: str, *, model: str | None = None, version: str | int | None = None, reason: str = ""
    ) -> EndpointOut:
        body: dict[str, Any] = {"reason": reason}
        if model is not None:
            body["model"] = model
        if version is not None:
            body["version"] = str(version)
        return self._json(EndpointOut, "POST", f"/api/v1/endpoints/{_path(endpoint)}/promote", json=body)

    def rollback(self, endpoint: str, *, reason: str = "") -> EndpointOut:
        url = f"/api/v1/endpoints/{_path(endpoint)}/rollback"
        return self._json(EndpointOut, "POST", url, json={"reason": reason})

    def retire(self, endpoint: str, *, reason: str = "") -> EndpointOut:
        return self._json(
            EndpointOut, "POST", f"/api/v1/endpoints/{_path(endpoint)}/retire", json={"reason": reason}
        )

    def endpoint_revisions(self, endpoint: str) -> list[RevisionOut]:
        data = self.request("GET", f"/api/v1/endpoints/{_path(endpoint)}/revisions").json()
        return [RevisionOut.model_validate(r) for r in data]

    def predict(
        self, endpoint: str, records: Sequence[Mapping[str, Any]], *, keys: Sequence[str] | None = None
    ) -> PredictOut:
        body: dict[str, Any] = {"records": [dict(r) for r in records]}
        if keys is not None:
            body["keys"] = list(keys)
        return self._json(PredictOut, "POST", f"/serve/{_path(endpoint)}/predict", json=body)

    def feedback(self, endpoint: str, items: Sequence[Mapping[str, Any]]) -> FeedbackOut:
        body = {"items": [dict(i) for i in items]}
        return self._json(FeedbackOut, "POST", f"/serve/{_path(endpoint)}/feedback", json=body)

    # --- monitoring ---------------------------------------------------------------------------

    def create_monitor(self, endpoint: str, name: str, **body: Any) -> MonitorOut:
        """Watch an endpoint (see ``MonitorIn``: every_minutes or every_rows, window_minutes, rules...)."""
        path = f"/api/v1/endpoints/{_path(endpoint)}/monitors"
        return self._json(MonitorOut, "POST", path, json={"name": name, **body})

    def list_monitors(self, *, endpoint: str | None = None) -> list[MonitorOut]:
        params = {"endpoint": endpoint} if endpoint else {}
        data = self.request("GET", "/api/v1/monitors", params=params).json()
        return [MonitorOut.model_validate(m) for m in data]

    def get_monitor(self, monitor_id: str) -> MonitorDetail:
        return self._json(MonitorDetail, "GET", f"/api/v1/monitors/{_path(monitor_id)}")

    def update_monitor(self, monitor_id: str, **changes: Any) -> MonitorOut:
        return self._json(MonitorOut, "PATCH", f"/api/v1/monitors/{_path(monitor_id)}", json=changes)

    def delete_monitor(self, monitor_id: str) -> None:
        self.request("DELETE", f"/api/v1/monitors/{_path(monitor_id)}")

    def run_monitor(self, monitor_id: str) -> JobRef:
        """Queue a run now; follow it with ``get_job``."""
        return self._json(JobRef, "POST", f"/api/v1/monitors/{_path(monitor_id)}/run")

    def get_monitor_run(self, run_id: str) -> MonitorRunOut:
        return self._json(MonitorRunOut, "GET", f"/api/v1/monitor-runs/{_path(run_id)}")

    def download_report(self, run_id: str, target: Path, *, fmt: str = "html") -> Path:
        """The run's report as a standalone HTML file (or JSON with ``fmt="json"``)."""
        return self._download(
            f"/api/v1/monitor-runs/{_path(run_id)}/report.{'json' if fmt == 'json' else 'html'}", {}, target
        )

    def list_incidents(self, *, status: str | None = None, endpoint: str | None = None) -> list[IncidentOut]:
        params = {k: v for k, v in (("status", status), ("endpoint", endpoint)) if v}
        data = self.request("GET", "/api/v1/incidents", params=params).json()
        return [IncidentOut.model_validate(i) for i in data]

    def get_incident(self, incident_id: str) -> IncidentOut:
        return self._json(IncidentOut, "GET", f"/api/v1/incidents/{_path(incident_id)}")

    def acknowledge_incident(self, incident_id: str, note: str = "") -> IncidentOut:
        path = f"/api/v1/incidents/{_path(incident_id)}/acknowledge"
        return self._json(IncidentOut, "POST", path, json={"note": note})

    def resolve_incident(self, incident_id: str, resolution: str) -> IncidentOut:
        path = f"/api/v1/incidents/{_path(incident_id)}/resolve"
        return self._json(IncidentOut, "POST", path, json={"resolution": resolution})

    def create_channel(
        self, name: str, kind: str, target: str, *, min_severity: str = "warning"
    ) -> ChannelCreated:
        body = {"name": name, "kind": kind, "target": target, "min_severity": min_severity}
        return self._json(ChannelCreated, "POST", "/api/v1/notification-channels", json=body)

    def list_channels(self) -> list[ChannelOut]:
        data = self.request("GET", "/api/v1/notification-channels").json()
        return [ChannelOut.model_validate(c) for c in data]

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _version(name: str, version: int) -> str:
        return f"/api/v1/registered-models/{_path(name)}/versions/{int(version)}"

    def _download(self, path: str, params: dict[str, str], target: Path) -> Path:
        """Stream a file to ``target``, never holding it whole in memory."""
        target.parent.mkdir(parents=True, exist_ok=True)
        headers = self._headers
        try:
            with self.http.stream("GET", f"{self.url}{path}", params=params, headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                with target.open("wb") as handle:
                    for chunk in response.iter_bytes(CHUNK):
                        handle.write(chunk)
        except httpx.TransportError as exc:
            raise errors.StoreUnavailable(f"Could not reach Bridgehead at {self.url}: {exc}") from exc
        return target


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk

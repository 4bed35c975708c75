"""The fluent SDK, ``import bridgehead as bh``: log runs, datasets and models, and load registered models.

    bh.set_experiment("churn")
    with bh.start_run() as run:
        bh.log_params({"C": 0.5})
        for step, loss in enumerate(losses):
            bh.log_metric("loss", loss, step=step)
        bh.log_model(model, "model", registered_model_name="churn")
    model = bh.load_model("models:/churn@champion")

It talks to the server named by ``BRIDGEHEAD_URL`` with the token in ``BRIDGEHEAD_TOKEN`` (or to the client
given to ``set_client``). Like MLflow's fluent API it keeps process-wide state: the client, the current
experiment and the stack of active runs.

Metrics are queued and sent by a background thread in batches (every second, or at 1000 points), and on
``end_run`` and process exit. A failed batch is reported by the next SDK call on that run, or by ``end_run``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bridgehead.client import Client
from bridgehead.errors import (
    AlreadyExists,
    BadRequest,
    BridgeheadError,
    Conflict,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from bridgehead.registry.flavors import MANIFEST, directory_sha256, read_manifest
from bridgehead.registry.schemas import VersionOut
from bridgehead.tracking.schemas import ExperimentOut, RunOut

__all__ = [
    "ActiveRun",
    "DatasetInfo",
    "ModelInfo",
    "active_run",
    "end_run",
    "get_client",
    "load_model",
    "log_artifact",
    "log_artifacts",
    "log_dataset",
    "log_metric",
    "log_metrics",
    "log_model",
    "log_param",
    "log_params",
    "set_client",
    "set_experiment",
    "set_tag",
    "set_tags",
    "start_run",
]

log = logging.getLogger("bridgehead.sdk")

FLUSH_INTERVAL_SECONDS = 1.0
BATCH_POINTS = 1000  # also the server's limit per log-batch call
_CHUNK = 1 << 20


# --- process state ----------------------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.client: Client | None = None
        self.experiment_id: str | None = None
        self.runs: list[ActiveRun] = []
        self.exit_hook = False


_state = _State()


def set_client(client: Client | None) -> None:
    """Use this client from now on (``None``: build one from BRIDGEHEAD_URL and BRIDGEHEAD_TOKEN again).
    The current experiment is forgotten: its id belongs to the previous server."""
    with _state.lock:
        _state.client = client
        _state.experiment_id = None


def get_client() -> Client:
    """The client in use: the one given to ``set_client``, else one for BRIDGEHEAD_URL and BRIDGEHEAD_TOKEN."""
    with _state.lock:
        if _state.client is None:
            from bridgehead.settings import Settings

            settings = Settings()
            if not settings.url or settings.token is None:
                raise BadRequest(
                    "The SDK does not know which server to use: set BRIDGEHEAD_URL and BRIDGEHEAD_TOKEN, or "
                    "call bridgehead.set_client(bridgehead.Client(url, token))."
                )
            _state.client = Client(settings.url, settings.token.get_secret_value())
        return _state.client


# --- experiments ------------------------------------------------------------------------------


def set_experiment(name: str) -> ExperimentOut:
    """Log the next runs to the experiment with this name, creating it (private to your unit) if needed."""
    client = get_client()
    found = client.list_experiments(name=name, view_type="ALL").items
    if not found:
        try:
            found = [client.create_experiment(name)]
        except AlreadyExists:
            # Created meanwhile by someone else, or it exists in a unit you cannot see.
            found = client.list_experiments(name=name, view_type="ALL").items
            if not found:
                raise
    experiment = found[0]
    if experiment.lifecycle_stage != "active":
        raise BadRequest(
            f"Experiment '{name}' is deleted; restore it (POST /api/v1/experiments/{experiment.id}/restore) "
            "or choose another name.",
            details={"experiment_id": experiment.id},
        )
    with _state.lock:
        _state.experiment_id = experiment.id
    return experiment


# --- runs -------------------------------------------------------------------------------------


class _MetricQueue:
    """Metric points waiting to be sent for one run; a daemon thread sends them in batches."""

    def __init__(self, client: Client, run_id: str) -> None:
        self._client = client
        self._run_id = run_id
        self._cond = threading.Condition()
        self._points: list[dict[str, Any]] = []
        self._send = threading.Lock()  # one sender at a time keeps the points in order
        self._error: BaseException | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, points: list[dict[str, Any]]) -> None:
        self.raise_pending()
        with self._cond:
            if self._closed:
                raise BadRequest(f"Run {self._run_id} has ended; start a new run to log metrics.")
            self._points.extend(points)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name=f"bridgehead-metrics-{self._run_id[:8]}", daemon=True
                )
                self._thread.start()
            if len(self._points) >= BATCH_POINTS:
                self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closed or len(self._points) >= BATCH_POINTS, timeout=FLUSH_INTERVAL_SECONDS
                )
                if self._closed:
                    return  # close() sends what is left, in the caller's thread
            try:
                self.flush()
            except Exception as exc:  # kept for the next call on this run: a thread cannot raise to the user
                with self._cond:
                    if self._error is None:
                        self._error = exc

    def flush(self) -> None:
        """Send every queued point now, in batches; raises the first failure."""
        with self._send:
            while True:
                with self._cond:
                    batch = self._points[:BATCH_POINTS]
                    del self._points[:BATCH_POINTS]
                if not batch:
                    return
                try:
                    self._client.log_batch(self._run_id, metrics=batch)
                except BridgeheadError as exc:
                    exc.add_note(f"{len(batch)} metric points of run {self._run_id} were not stored.")
                    raise

    def raise_pending(self) -> None:
        with self._cond:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop the thread, send the rest, and raise the first error the thread or this last flush met."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            pending, self._error = self._error, None
        try:
            self.flush()
        except Exception as exc:
            if pending is None:
                raise
            pending.add_note(f"A later flush failed too: {exc}")
        if pending is not None:
            raise pending


class ActiveRun:
    """A run started by ``start_run``; as a context manager it ends FINISHED, or FAILED on an exception."""

    def __init__(self, client: Client, info: RunOut) -> None:
        self.client = client
        self.info = info
        self.id = info.id
        self.experiment_id = info.experiment_id
        self.name = info.name
        self.metrics = _MetricQueue(client, info.id)

    def __repr__(self) -> str:
        return f"<ActiveRun {self.name} ({self.id})>"

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is None:
            _end(self, "FINISHED")
            return
        try:
            _end(self, "FAILED")
        except BridgeheadError as flush_error:
            # The exception that ended the block matters more; keep it, and say what else went wrong.
            exc.add_note(f"Ending run {self.id} also failed: {flush_error}")


def start_run(
    run_name: str | None = None,
    nested: bool = False,
    *,
    experiment_id: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> ActiveRun:
    """Start a run in the current experiment (see ``set_experiment``; default: the org-wide Default one).
    With ``nested=True`` it becomes a child of the active run."""
    client = get_client()
    with _state.lock:
        parent = _state.runs[-1] if _state.runs else None
        if parent is not None and not nested:
            raise BadRequest(
                f"Run {parent.id} is already active: end it with bridgehead.end_run(), or start this one "
                "with nested=True.",
                details={"run_id": parent.id},
            )
        experiment = experiment_id or _state.experiment_id or "0"
        info = client.create_run(
            experiment,
            name=run_name,
            parent_run_id=parent.id if parent is not None else None,
            tags=dict(tags or {}),
        )
        run = ActiveRun(client, info)
        _state.runs.append(run)
        if not _state.exit_hook:
            atexit.register(_end_all_at_exit)
            _state.exit_hook = True
    return run


def active_run() -> ActiveRun | None:
    with _state.lock:
        return _state.runs[-1] if _state.runs else None


def end_run(status: str = "FINISHED") -> None:
    """End the innermost active run (no-op without one): send its queued metrics, then set its status.
    Raises the first error met while sending metrics, after the run has been ended."""
    run = active_run()
    if run is not None:
        _end(run, status)


def _end(run: ActiveRun, status: str) -> None:
    with _state.lock:
        # Children first: ending a parent ends the runs nested in it.
        while run in _state.runs and _state.runs[-1] is not run:
            _end(_state.runs[-1], status)
        if run in _state.runs:
            _state.runs.remove(run)
    error: BaseException | None = None
    try:
        run.metrics.close()
    except BridgeheadError as exc:
        error = exc
    try:
        run.client.update_run(run.id, status=status)
    except BridgeheadError as exc:
        if error is None:
            raise
        error.add_note(f"Setting the run's status to {status} failed too: {exc.message}")
    if error is not None:
        raise error


def _end_all_at_exit() -> None:
    while (run := active_run()) is not None:
        try:
            _end(run, "FINISHED")
        except Exception:  # nobody is left to raise to
            log.exception("bridgehead: ending run %s at exit failed", run.id)
            with _state.lock:
                if run in _state.runs:
                    _state.runs.remove(run)


def _run() -> ActiveRun:
    run = active_run()
    if run is None:
        raise BadRequest("No active run: start one with bridgehead.start_run().")
    run.metrics.raise_pending()
    return run


# --- logging ----------------------------------------------------------------------------------


def log_param(key: str, value: Any) -> None:
    log_params({key: value})


def log_params(params: Mapping[str, Any]) -> None:
    """Log params (values are stored as text; a param's value may not change once logged)."""
    run = _run()
    items = [(str(k), str(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):
        run.client.log_batch(run.id, params=dict(items[start : start + 100]))


def set_tag(key: str, value: Any) -> None:
    set_tags({key: value})


def set_tags(tags: Mapping[str, Any]) -> None:
    run = _run()
    items = [(str(k), str(v)) for k, v in tags.items()]
    for start in range(0, len(items), 100):
        run.client.log_batch(run.id, tags=dict(items[start : start + 100]))


def _point(key: str, value: Any, step: int | None, timestamp_ms: int) -> dict[str, Any]:
    # The server's rules, checked here so that one bad key cannot sink a whole batch later.
    if not isinstance(key, str) or not key or len(key) > 250:
        raise ValidationFailed(
            "A metric key must be a string of 1 to 250 characters.", details={"key": str(key)}
        )
    if key.startswith("/") or ".." in key.split("/"):
        raise ValidationFailed(f"Metric key {key!r} is not a valid name.", details={"key": key})
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(
            f"Metric {key!r} needs a number, got {value!r}.", details={"key": key}
        ) from exc
    return {"key": key, "value": number, "step": int(step or 0), "timestamp_ms": timestamp_ms}


def log_metric(key: str, value: float, step: int | None = None, *, timestamp_ms: int | None = None) -> None:
    """Queue one point of a metric's history (``step`` defaults to 0; the time is taken now)."""
    run = _run()
    run.metrics.add([_point(key, value, step, timestamp_ms or int(time.time() * 1000))])


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    run = _run()
    now = int(time.time() * 1000)
    run.metrics.add([_point(k, v, step, now) for k, v in metrics.items()])


def log_artifact(local_path: str | Path, artifact_path: str | None = None) -> None:
    """Upload a file as ``<artifact_path>/<file name>``, or a directory as ``<artifact_path>/<dir name>/…``."""
    path = Path(local_path)
    target = "/".join(p for p in (artifact_path, path.name) if p)
    if path.is_dir():
        log_artifacts(path, target)
    else:
        run = _run()
        run.client.upload_artifact(run.id, target, path)


def log_artifacts(local_dir: str | Path, artifact_path: str | None = None) -> None:
    """Upload the contents of a directory under ``artifact_path`` (default: the run's artifact root)."""
    run = _run()
    root = Path(local_dir)
    if not root.is_dir():
        raise BadRequest(f"{root} is not a directory.")
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        run.client.upload_artifact(run.id, f"{artifact_path}/{rel}" if artifact_path else rel, file)


# --- datasets ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    digest: str
    source: str
    source_type: str
    schema: dict[str, Any]
    context: str


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _arrow_schema(schema: Any) -> dict[str, Any]:
    return {"columns": [{"name": f.name, "type": str(f.type)} for f in schema]}


def _file_schema(path: Path) -> dict[str, Any]:
    """The columns of a tabular file (Parquet, CSV, Arrow/Feather) as pyarrow reads them; {} otherwise."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return _arrow_schema(pq.read_schema(path))
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pacsv

            options = pacsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
            with pacsv.open_csv(path, parse_options=options) as reader:
                return _arrow_schema(reader.schema)
        if suffix in (".arrow", ".feather", ".ipc"):
            import pyarrow.feather as feather

            return _arrow_schema(feather.read_table(path).schema)
    except Exception as exc:  # an unreadable file is still a dataset; it just has no schema
        log.debug("no schema for %s: %s", path, exc)
    return {}


def _describe(data: Any) -> tuple[str, dict[str, Any], str, str]:
    """(SHA-256 of the content, schema, source, source type) of a DataFrame, Arrow table, array or path."""
    module = type(data).__module__.split(".")[0]
    if isinstance(data, str | Path):
        path = Path(data)
        if path.is_dir():
            digest = directory_sha256(path)
            schema: dict[str, Any] = {"files": sum(1 for p in path.rglob("*") if p.is_file())}
        elif path.is_file():
            digest = _file_sha256(path)
            schema = _file_schema(path)
        else:
            raise NotFound(f"No such file or directory: {path}")
        return digest, schema, path.resolve().as_uri(), "local"
    if module == "pandas":
        import pandas as pd

        h = hashlib.sha256()
        h.update(json.dumps([[str(c), str(t)] for c, t in data.dtypes.items()]).encode())
        try:
            h.update(pd.util.hash_pandas_object(data, index=True).to_numpy().tobytes())
        except TypeError:  # unhashable cells (lists, dicts): fall back to their text
            h.update(data.to_csv().encode())
        columns = [{"name": str(c), "type": str(t)} for c, t in data.dtypes.items()]
        return h.hexdigest(), {"columns": columns, "rows": len(data)}, "", "pandas"
    if module == "pyarrow":
        import pyarrow as pa

        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, data.schema) as writer:
            writer.write_table(data)
        digest = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
        return digest, {**_arrow_schema(data.schema), "rows": data.num_rows}, "", "pyarrow"
    if module == "numpy":
        import numpy as np

        array = np.ascontiguousarray(data)
        h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        h.update(array.tobytes())
        return h.hexdigest(), {"dtype": str(array.dtype), "shape": list(array.shape)}, "", "numpy"
    raise BadRequest(
        f"Cannot log a {type(data).__name__} as a dataset: pass a pandas DataFrame, a pyarrow Table, a numpy "
        "array, or a path."
    )


def log_dataset(
    data: Any, name: str | None = None, context: str = "training", *, source: str | None = None
) -> DatasetInfo:
    """Record that the active run used a dataset: its SHA-256 digest, schema, source and context."""
    run = _run()
    digest, schema, found_source, source_type = _describe(data)
    if name is None:
        name = Path(data).name if isinstance(data, str | Path) else "dataset"
    info = DatasetInfo(name, digest, source or found_source, source_type, schema, context)
    run.client.log_inputs(
        run.id,
        [
            {
                "name": info.name,
                "digest": info.digest,
                "source_type": info.source_type,
                "source": info.source,
                "schema": json.dumps(info.schema),
                "context": info.context,
            }
        ],
    )
    return info


# --- models -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelInfo:
    artifact_path: str
    model_uri: str
    flavor: str
    sha256: str
    registered_model_name: str | None = None
    registered_model_version: int | None = None


@functools.lru_cache(maxsize=1)
def _flavors() -> dict[str, Any]:
    from bridgehead.hookspecs import flavors, plugin_manager

    return flavors(plugin_manager())


def _choose_flavor(model: Any, name: str | None) -> Any:
    available = _flavors()
    if name is not None:
        if name not in available:
            raise BadRequest(f"No flavor named {name!r}; known: {', '.join(sorted(available))}.")
        return available[name]
    for flavor in available.values():
        if flavor.accepts(model):
            return flavor
    raise BadRequest(
        f"No flavor accepts a {type(model).__module__}.{type(model).__name__}. Convert it (e.g. to ONNX), or "
        "pass flavor='pickle' to store it in a format that is only loaded where it is trusted.",
        details={"flavors": sorted(available)},
    )


def _jsonable(example: Any) -> Any:
    if hasattr(example, "to_dict"):  # pandas
        return example.to_dict(orient="split")
    if hasattr(example, "tolist"):  # numpy
        return example.tolist()
    return example


def _infer_signature(example: Any) -> dict[str, Any]:
    if example is None:
        return {}
    if hasattr(example, "dtypes") and hasattr(example, "columns"):
        return {"inputs": [{"name": str(c), "type": str(t)} for c, t in example.dtypes.items()]}
    if hasattr(example, "dtype") and hasattr(example, "shape"):
        return {"inputs": {"type": "tensor", "dtype": str(example.dtype), "shape": [-1, *example.shape[1:]]}}
    return {}


def log_model(
    model: Any,
    name: str,
    registered_model_name: str | None = None,
    *,
    signature: dict[str, Any] | None = None,
    input_example: Any = None,
    flavor: str | None = None,
) -> ModelInfo:
    """Save ``model`` with the first flavor that accepts it (or the named one) and upload it to the active
    run under ``<name>/`` with a ``bridgehead-model.json`` manifest. With ``registered_model_name``,
    register it as the next version of that model (created if missing)."""
    from bridgehead.store.artifacts import safe_relative_path

    run = _run()
    artifact_path = safe_relative_path(name)
    chosen = _choose_flavor(model, flavor)
    with tempfile.TemporaryDirectory(prefix="bridgehead-model-") as tmp:
        directory = Path(tmp)
        saved = chosen.save(model, directory)
        files = list(saved.files)
        if input_example is not None:
            (directory / "input_example.json").write_text(json.dumps(_jsonable(input_example), default=str))
            files.append("input_example.json")
        manifest = {
            "flavor": saved.flavor,
            "files": files,
            "meta": saved.meta,
            "signature": signature if signature is not None else _infer_signature(input_example),
        }
        (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        digest = directory_sha256(directory)
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            run.client.upload_artifact(
                run.id, f"{artifact_path}/{file.relative_to(directory).as_posix()}", file
            )
    info = ModelInfo(artifact_path, f"runs:/{run.id}/{artifact_path}", saved.flavor, digest)
    if registered_model_name is None:
        return info
    # The version records the run's latest metrics: send the queued ones first.
    run.metrics.flush()
    try:
        run.client.get_registered_model(registered_model_name)
    except NotFound:
        with contextlib.suppress(AlreadyExists):  # created meanwhile
            run.client.create_registered_model(registered_model_name)
    version = run.client.create_model_version(
        registered_model_name, run_id=run.id, artifact_path=artifact_path
    )
    if version.sha256 != digest:
        raise Conflict(
            "The server recorded a different SHA-256 for the model's files than was uploaded.",
            details={"uploaded": digest, "recorded": version.sha256},
        )
    return ModelInfo(
        artifact_path, info.model_uri, saved.flavor, digest, registered_model_name, version.version
    )


def _resolve(client: Client, uri: str) -> VersionOut:
    if not uri.startswith("models:/"):
        raise BadRequest("Model URIs look like models:/<name>/<version> or models:/<name>@<alias>.")
    rest = uri.removeprefix("models:/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return client.get_version_by_alias(name, alias)
    name, _, ref = rest.rpartition("/")
    if not name:
        raise BadRequest("Model URIs look like models:/<name>/<version> or models:/<name>@<alias>.")
    if ref == "latest":
        latest = client.get_registered_model(name).latest_version
        if latest is None:
            raise NotFound(f"Model {name} has no versions.", details={"name": name})
        return client.get_model_version(name, latest)
    if not ref.isdigit():
        raise BadRequest(f"Model version must be a number, 'latest' or '@<alias>', got {ref!r}.")
    return client.get_model_version(name, int(ref))


def load_model(uri: str) -> Any:
    """Load ``models:/<name>/<version>``, ``models:/<name>@<alias>`` or ``models:/<name>/latest``.

    The files are downloaded, their SHA-256 checked against the one recorded at registration, and the model
    loaded with its flavor. Formats that execute code when loaded (pickle) are refused unless
    BRIDGEHEAD_TRUSTED_FLAVORS names them both here and on the server, which audits the load."""
    from bridgehead.settings import Settings
    from bridgehead.store.artifacts import safe_relative_path

    client = get_client()
    version = _resolve(client, uri)
    files = client.list_version_files(version.name, version.version).files
    with tempfile.TemporaryDirectory(prefix="bridgehead-load-") as tmp:
        directory = Path(tmp)
        for f in files:
            # The listing comes from the server; never let it place a file outside the directory.
            client.download_version_file(
                version.name, version.version, f.path, directory / safe_relative_path(f.path)
            )
        if directory_sha256(directory) != version.sha256:
            raise Conflict(
                "The model's files do not match the SHA-256 recorded at registration; refusing to load.",
                details={"model": version.name, "version": version.version, "expected": version.sha256},
            )
        manifest = read_manifest(directory)
        flavor_name = str(manifest.get("flavor"))
        flavor = _flavors().get(flavor_name)
        if flavor is None:
            raise BadRequest(f"No flavor plugin can load {flavor_name!r}.", details={"flavor": flavor_name})
        if not flavor.safe:
            if flavor.name not in Settings().trusted_flavors:
                raise PermissionDenied(
                    f"The '{flavor.name}' format executes code when loaded; set BRIDGEHEAD_TRUSTED_FLAVORS="
                    f"'[\"{flavor.name}\"]' to load it anyway.",
                    details={"flavor": flavor.name},
                )
            client.announce_trusted_load(version.name, version.version)
        return flavor.load(directory, dict(manifest.get("meta") or {}))

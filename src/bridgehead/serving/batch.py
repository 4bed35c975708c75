"""Batch scoring: a file of any size scored in chunks into a Parquet file, in bounded memory.

One loop (``write_scored``) serves both ways of scoring a file: ``bridgehead score`` on the user's machine (with
a progress bar, through an endpoint or a model loaded locally) and the ``serving.score`` background job, which a
worker runs for ``POST /api/v1/endpoints/{name}/score-jobs``: it reads the uploaded file or the dataset version
from the artifact store, scores it with the endpoint's current serving version through the serving runtime
(the same verified loading and signature checks as online inference) and writes ``jobs/<job id>/output.parquet``
into the artifact store, reporting progress as it goes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bridgehead.errors import BadRequest, Conflict, ValidationFailed
from bridgehead.jobs.worker import JobContext
from bridgehead.serving import protocols
from bridgehead.serving.routing import TrafficPolicy
from bridgehead.serving.runtime import LoadedModel, ModelRuntime

__all__ = [
    "SCORE_KIND",
    "Scorer",
    "model_scorer",
    "output_path",
    "score_job",
    "serving_version",
    "write_scored",
]

SCORE_KIND = "serving.score"
RUNTIME_RESOURCE = "serving.runtime"

# One chunk of input -> the columns to append to it (prediction, probabilities, version...), one value per row.
Scorer = Callable[[pa.RecordBatch], dict[str, list[Any]]]


def scored_table(batch: pa.RecordBatch, columns: dict[str, list[Any]]) -> pa.Table:
    """The chunk's input columns followed by the scorer's."""
    table = pa.Table.from_batches([batch])
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values))
    return table


def write_scored(
    batches: Iterable[pa.RecordBatch],
    scorer: Scorer,
    sink: Any,
    *,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Score each chunk and append it with the scorer's columns to a Parquet file (zstd); returns the rows
    written. ``sink`` is a path or a writable binary file; nothing is written when there are no rows. Only one
    chunk is held at a time, so memory is bounded by the chunk size whatever the file's."""
    writer: pq.ParquetWriter | None = None
    written = 0
    try:
        for batch in batches:
            table = scored_table(batch, scorer(batch))
            if writer is None:
                writer = pq.ParquetWriter(sink, table.schema, compression="zstd")
            writer.write_table(table)
            written += batch.num_rows
            if on_rows is not None:
                on_rows(batch.num_rows)
    finally:
        if writer is not None:
            writer.close()
    return written


def model_scorer(loaded: LoadedModel) -> Scorer:
    """Scores chunks with a version loaded by the serving runtime: the chunk is checked against (and cast to)
    the version's signature, as online requests are. Columns the signature does not name (an id, say) are
    carried to the output but not given to the model."""

    def scorer(batch: pa.RecordBatch) -> dict[str, list[Any]]:
        try:
            frame = batch.to_pandas()
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise BadRequest(f"A chunk of the input cannot be read as a table: {exc}") from exc
        if loaded.signature is not None:
            wanted = set(loaded.signature.columns)
            frame = protocols.validate_frame(
                frame[[c for c in frame.columns if c in wanted]], loaded.signature
            )
        result = ModelRuntime.predict(loaded, frame)
        out: dict[str, list[Any]] = {"prediction": result.predictions}
        if result.probabilities is not None:
            out["probabilities"] = result.probabilities
        out["version"] = [loaded.version] * len(frame)
        return out

    return scorer


def serving_version(policy: dict[str, Any]) -> str:
    """The version id that answers most of the endpoint's traffic (the champion during a canary); shadows are
    not run by batch scoring."""
    if not policy:
        raise Conflict("The endpoint serves no version.")
    routes = TrafficPolicy.from_config(policy).routes
    return max(routes, key=lambda r: r.weight).version_id


def output_path(job_id: str) -> str:
    return f"jobs/{job_id}/output.parquet"


def _runtime(ctx: JobContext) -> ModelRuntime:
    """The worker's model runtime: the server's own (models already loaded for online inference) in the
    in-process worker, else one kept for the worker's later jobs."""
    found = ctx.resources.get(RUNTIME_RESOURCE)
    if found is None:
        from bridgehead.hookspecs import flavors

        settings = ctx.settings
        plugins = ctx.env.plugins
        found = ModelRuntime(
            ctx.artifacts,
            lambda: flavors(plugins),
            frozenset(settings.trusted_flavors),
            onnx=settings.serving_onnx,
        )
        ctx.resources[RUNTIME_RESOURCE] = found
    runtime: ModelRuntime = found
    return runtime


def score_job(ctx: JobContext) -> dict[str, Any]:
    """The ``serving.score`` job: params ``endpoint``, ``input`` (``path`` and ``format`` in the artifact store)
    and ``batch_rows``. Runs as the person who submitted it, who must still be allowed to invoke the endpoint."""
    from bridgehead.data.readers import open_source
    from bridgehead.serving import service

    params = ctx.params
    source = params.get("input")
    if not isinstance(params.get("endpoint"), str) or not isinstance(source, dict) or "path" not in source:
        raise ValidationFailed("A serving.score job names an endpoint and an input path.", details=params)
    name, source_path = params["endpoint"], str(source["path"])
    batch_rows = int(params.get("batch_rows") or 10_000)
    runtime = _runtime(ctx)
    with ctx.session() as session:
        principal = ctx.principal(session)
        endpoint = service.endpoint_for_invoke(session, principal, name)
        loaded = runtime.get(session, principal, serving_version(endpoint.policy))
    store = ctx.artifacts
    fs, full, local = store.locate(source_path)
    opened = open_source(full, source.get("format") or None, filesystem=None if local else fs)
    try:
        total: int | None = int(opened.dataset.count_rows())
    except (pa.ArrowException, OSError, ValueError):
        total = None
    target = output_path(ctx.job_id)
    _, out_full, _ = store.locate(target)
    store.fs.makedirs(posixpath.dirname(out_full), exist_ok=True)
    done = 0

    def advance(rows: int) -> None:
        nonlocal done
        done += rows
        of = f" of {total:,}" if total else ""
        ctx.progress(done / total if total else 0.0, f"{done:,}{of} rows scored")

    ctx.progress(0.0, f"scoring with {loaded.model_name} v{loaded.version}")
    try:
        with store.fs.open(out_full, "wb") as handle:
            rows = write_scored(opened.batches(batch_rows), model_scorer(loaded), handle, on_rows=advance)
    except BaseException:
        store.delete(target)  # a failed or cancelled attempt leaves no partial output
        raise
    if rows == 0:
        store.delete(target)
        raise BadRequest("The input has no rows to score.", details={"endpoint": name})
    ctx.progress(1.0, f"{rows:,} rows scored")
    return {
        "rows": rows,
        "model": loaded.model_name,
        "version": loaded.version,
        "version_id": loaded.version_id,
        "output": {
            "path": target,
            "format": "parquet",
            "filename": f"{name}-{ctx.job_id}-scored.parquet",
        },
    }

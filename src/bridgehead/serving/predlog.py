"""The prediction log: every prediction request, recorded off the request path, in Parquet partitioned by hour.

Layout (hive style, UTC)::

    root/endpoint=<endpoint>/date=YYYY-MM-DD/hour=HH/part-<flush ts_ms>-<uuid8>.parquet

One row per scored input row. Columns: the fixed `SCHEMA` (request id, endpoint, model name and version, role,
timestamp, latency, status, routing key, row index in its request), then ``inputs``, a struct with one *typed*
field per model input (so monitoring reads a feature as a column, without parsing), and ``outputs``, a struct
of ``prediction``, ``probabilities`` (classifiers) and ``error`` (a failed shadow). Input and output field
types follow the model, so two files may differ there; readers unify them (Arrow's permissive promotion).

The inference path hands over a `PredictionBatch` per request: its input frame and predictions as they are,
a few microseconds whatever the request's size. Encoding to Arrow happens at flush time, for many requests
at once. `PredictionRecord` (one row, inputs and outputs as JSON objects) is the general way for other writers.

`PredictionLog.record` only appends to an in-memory buffer under a lock; a daemon thread writes the buffer every
``flush_interval_s`` seconds, or as soon as it holds ``max_buffer_rows`` rows. Each flush groups the rows by
(endpoint, hour) and writes one file per group atomically: the file is written as ``*.tmp`` in its final
directory, fsynced, then renamed with `os.replace` (and the directory fsynced), so a reader sees a whole file
or none. Readers (`read_log`, `recent`) only look at ``part-*.parquet`` and never at ``*.tmp`` leftovers.

Durability, for a row whose `record` call returned (it is *acknowledged*):

* Clean shutdown (`PredictionLog.close`, or leaving the ``with`` block) loses nothing: close stops the thread
  and writes everything still buffered. If that final write fails, close raises `StoreUnavailable`, the rows
  stay in `PredictionLog.pending`, and calling close again retries.
* On ``kill -9`` (or a crash of the process), the rows acknowledged since the last successful flush are lost:
  at most about one flush interval (plus the time the flush in progress takes). Files already renamed into
  place are complete and readable; an interrupted write leaves at most a ``*.tmp`` file, which readers ignore.
* If a write fails (disk full, permissions, a file in the way), the rows of that group stay buffered and are
  retried at the next interval; the error goes to the ``bridgehead.serving`` logger and the thread carries on.
  Groups of other endpoints or hours are written meanwhile. While writes keep failing the buffer is capped at
  ``OVERFLOW_FACTOR * max_buffer_rows`` rows: beyond that the *oldest* rows are dropped and counted in
  `PredictionLog.dropped`, so a broken disk cannot take the serving process down with it.
* A row that Arrow cannot encode (a string with a lone surrogate, a record whose inputs are not a JSON
  object) would block its whole group forever; such a record, or such a request's batch, is logged, its rows
  counted in `PredictionLog.rejected` and skipped, and the rest of the group is written.

``on_flush(table)`` is called once per file with the table written, after that file is durably in place, on
the thread that flushed (the background thread, or the caller of `flush`/`close`). It should be quick. An exception in it is logged and
swallowed: the file is written and its rows are not retried.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bridgehead.errors import StoreUnavailable, ValidationFailed
from bridgehead.serving.protocols import is_float_frame

__all__ = [
    "COLUMNS",
    "OVERFLOW_FACTOR",
    "ROLES",
    "SCHEMA",
    "STATUSES",
    "FloatInputs",
    "PredictionBatch",
    "PredictionLog",
    "PredictionRecord",
    "partition_dir",
    "read_log",
    "recent",
    "row_ids",
    "validate_endpoint",
]

log = logging.getLogger("bridgehead.serving")

ROLES = ("primary", "shadow")
STATUSES = ("ok", "error")
# While writes keep failing, the buffer holds at most this many times max_buffer_rows; the oldest rows go first.
OVERFLOW_FACTOR = 10

_TS = pa.timestamp("ms", tz="UTC")
# The columns every file has; after them come ``inputs`` (a struct: one typed field per model input) and
# ``outputs`` (a struct: ``prediction``, ``probabilities`` for classifiers, ``error`` when scoring failed), whose
# field types follow the model and may differ from file to file.
SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("endpoint", pa.string(), nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("version", pa.int32(), nullable=False),
        pa.field("role", pa.string(), nullable=False),
        pa.field("ts", _TS, nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),
        pa.field("row", pa.int32(), nullable=False),
    ]
)
COLUMNS = (*SCHEMA.names, "inputs", "outputs")

# No dictionary encoding: on model inputs (mostly distinct numbers) it cost three quarters of the write time and
# made the file larger; on the columns whose values repeat (endpoint, model, role, status) Snappy stores the
# repeats almost as compactly (a flush of 90,000 rows: 16.3 MB against 16.2 MB) without hashing every value.
# Min/max statistics only for the log's own columns (time, version, ...), by which a query engine skips row groups;
# none for the model's inputs and outputs: on that flush they took a sixth of the encoding time.
_STATISTICS_COLUMNS = list(SCHEMA.names)
# Snappy: on a flush of model inputs and probabilities (mostly distinct floats) zstd took twice as long for files
# a tenth smaller; the log is written all day, on the serving machine.
_COMPRESSION = "snappy"

_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS
# Up to 9999-12-31T23:59:59.999Z, the last instant a date=YYYY-MM-DD directory can name.
_MAX_TS_MS = 253_402_300_800_000
_INT32 = 2**31
_ENDPOINT = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}")
_DATE_DIR = re.compile(r"date=(\d{4})-(\d{2})-(\d{2})")
_HOUR_DIR = re.compile(r"hour=(\d{2})")
_STR_FIELDS = ("request_id", "model_name", "inputs", "outputs", "key")
# What Arrow raises for a value it cannot encode (UnicodeEncodeError is a ValueError), and json for bad text.
_ENCODE_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError, RecursionError)


def validate_endpoint(endpoint: str) -> str:
    """The endpoint name if it is a slug safe to use as a directory name; else `ValidationFailed`."""
    if not isinstance(endpoint, str) or not _ENDPOINT.fullmatch(endpoint) or ".." in endpoint:
        raise ValidationFailed(
            f"invalid endpoint name {endpoint!r}: use 1-100 of a-z, 0-9, '-', '_', '.', starting with a letter "
            "or digit, without '..'",
            details={"endpoint": endpoint if isinstance(endpoint, str) else repr(endpoint)},
        )
    return endpoint


@dataclass(frozen=True, slots=True)
class PredictionRecord:
    """One row of the prediction log: one input row of one request, as one model version answered it.

    Validated on construction, so a record that reaches the buffer can always be written.
    """

    request_id: str
    endpoint: str
    model_name: str
    version: int
    # "primary": the answer returned to the caller; "shadow": logged for comparison, never returned.
    role: str
    # Epoch milliseconds (UTC) when the request was received; decides the hour partition.
    ts_ms: int
    latency_ms: float
    # JSON text of one input row (an object column -> value).
    inputs: str
    # JSON text of the prediction for that row, e.g. {"prediction": 1, "probabilities": [0.2, 0.8]}.
    outputs: str
    status: str = "ok"
    key: str = ""
    # The row's index in its request (a request's first row is 0; requests are counted by it).
    row: int = 0

    def __len__(self) -> int:  # rows, as for a batch
        return 1

    def __post_init__(self) -> None:
        validate_endpoint(self.endpoint)
        for name in _STR_FIELDS:
            if not isinstance(getattr(self, name), str):
                raise ValidationFailed(f"prediction record: {name} must be a string", details={"field": name})
        if self.role not in ROLES:
            raise ValidationFailed(
                f"prediction record: role must be one of {', '.join(ROLES)}, not {self.role!r}",
                details={"field": "role"},
            )
        if self.status not in STATUSES:
            raise ValidationFailed(
                f"prediction record: status must be one of {', '.join(STATUSES)}, not {self.status!r}",
                details={"field": "status"},
            )
        if (
            isinstance(self.version, bool)
            or not isinstance(self.version, int)
            or not -_INT32 <= self.version < _INT32
        ):
            raise ValidationFailed(
                "prediction record: version must be a 32-bit integer", details={"field": "version"}
            )
        if (
            isinstance(self.ts_ms, bool)
            or not isinstance(self.ts_ms, int)
            or not 0 <= self.ts_ms < _MAX_TS_MS
        ):
            raise ValidationFailed(
                "prediction record: ts_ms must be epoch milliseconds between 1970 and 9999",
                details={"field": "ts_ms"},
            )
        if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int | float):
            raise ValidationFailed(
                "prediction record: latency_ms must be a number", details={"field": "latency_ms"}
            )


_FIELDS = tuple(PredictionRecord.__dataclass_fields__)


class FloatInputs(NamedTuple):
    """A request's inputs when every column is float64: the column names and the rows as one array."""

    columns: pd.Index
    values: np.ndarray[Any, np.dtype[np.float64]]

    def __len__(self) -> int:  # rows, as for a frame
        return len(self.values)


@dataclass(slots=True)
class PredictionBatch:
    """The rows of one scored request as one role answered them, kept as the inference path has them: the
    input frame and the predictions. Encoding to Arrow happens when the log is flushed, off the request path,
    for the whole flush at once (a request costs the log a few microseconds whatever its size).

    The caller hands the frame over: it must not change it afterwards. Built by trusted code (the inference
    path), so only cheap checks run here; the endpoint name was checked when the endpoint was created.
    """

    # One id per row; or the request id alone, and the rows are named by `row_ids` (the inference path: a
    # request's rows need not be kept as a hundred strings until the flush).
    ids: Sequence[str] | str
    endpoint: str
    # One per row; or one for every row (a request one version answered, the common case).
    model_names: Sequence[str] | str
    versions: Sequence[int] | int | np.integer[Any]
    role: str
    ts_ms: int
    latency_ms: float
    # One row per id, one column per model input (typed columns in the file). An all-float frame from the
    # parser is kept as `FloatInputs` (its names and its array): a frame is a dozen objects, and a second of
    # them held in memory slowed the whole serving process measurably.
    inputs: pd.DataFrame | FloatInputs
    # One per row; None when the whole batch failed (then ``error`` says why).
    predictions: Sequence[Any] | None = None
    probabilities: Sequence[Sequence[float]] | None = None
    keys: Sequence[str] | None = None
    status: str = "ok"
    error: str | None = None

    def __post_init__(self) -> None:
        validate_endpoint(self.endpoint)
        if isinstance(self.inputs, pd.DataFrame) and is_float_frame(self.inputs):
            self.inputs = FloatInputs(self.inputs.columns, self.inputs.to_numpy())
        if self.role not in ROLES or self.status not in STATUSES:
            raise ValidationFailed(
                "prediction batch: unknown role or status", details={"role": self.role, "status": self.status}
            )
        n = len(self.inputs)
        if (
            (not isinstance(self.ids, str) and len(self.ids) != n)
            or (not isinstance(self.model_names, str) and len(self.model_names) != n)
            or (not isinstance(self.versions, _ONE_VERSION) and len(self.versions) != n)
            or (self.predictions is not None and len(self.predictions) != n)
            or (self.probabilities is not None and len(self.probabilities) != n)
            or (self.keys is not None and len(self.keys) != n)
        ):
            raise ValidationFailed("prediction batch: every column needs one value per row")

    def __len__(self) -> int:
        return len(self.inputs)


def row_ids(request_id: str, rows: int) -> list[str]:
    """The ids of a request's rows: the request id for a single row, ``<request id>.<row>`` otherwise (the
    ids an answer lists, and feedback refers to)."""
    return [request_id] if rows == 1 else [f"{request_id}.{i}" for i in range(rows)]


_Item = PredictionRecord | PredictionBatch
# A batch's single version for all its rows: a Python or a numpy integer.
_ONE_VERSION = (int, np.integer)


def partition_dir(root: Path, endpoint: str, ts_ms: int) -> Path:
    """The directory holding the rows of ``endpoint`` received in the hour of ``ts_ms``."""
    at = datetime.fromtimestamp(ts_ms // _HOUR_MS * _HOUR_MS / 1000, tz=UTC)
    return Path(root) / f"endpoint={validate_endpoint(endpoint)}" / f"date={at:%Y-%m-%d}" / f"hour={at:%H}"


def _json_object(text: str, what: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object")
    return value


def _struct(rows: list[dict[str, Any]]) -> pa.Array:
    """A struct column from dicts (types inferred by Arrow); rows without any field give a struct with none,
    which Parquet cannot store, so such a column keeps one all-null placeholder field."""
    array = pa.array(rows)
    if not pa.types.is_struct(array.type):
        raise ValueError(f"expected objects, got {array.type}")
    if array.type.num_fields == 0:
        return pa.StructArray.from_arrays([pa.nulls(len(rows), pa.null())], names=["_"])
    return array


def _records_table(records: Sequence[PredictionRecord]) -> pa.Table:
    meta = pa.Table.from_arrays(
        [
            pa.array([r.request_id for r in records], pa.string()),
            pa.array([r.endpoint for r in records], pa.string()),
            pa.array([r.model_name for r in records], pa.string()),
            pa.array([r.version for r in records], pa.int32()),
            pa.array([r.role for r in records], pa.string()),
            pa.array([r.ts_ms for r in records], _TS),
            pa.array([r.latency_ms for r in records], pa.float64()),
            pa.array([r.status for r in records], pa.string()),
            pa.array([r.key for r in records], pa.string()),
            pa.array([r.row for r in records], pa.int32()),
        ],
        schema=SCHEMA,
    )
    inputs = _struct([_json_object(r.inputs, "inputs") for r in records])
    outputs = _struct([_json_object(r.outputs, "outputs") for r in records])
    return meta.append_column("inputs", inputs).append_column("outputs", outputs)


def _inputs_array(frame: pd.DataFrame, rows: int) -> pa.Array:
    columns = [str(c) for c in frame.columns]
    if not columns:
        return pa.StructArray.from_arrays([pa.nulls(rows, pa.null())], names=["_"])
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    # pandas 3 hands strings over as large_string; the log keeps one string type, so files unify.
    arrays = [
        a.cast(pa.string()) if pa.types.is_large_string(a.type) or pa.types.is_string_view(a.type) else a
        for a in batch.columns
    ]
    return pa.StructArray.from_arrays(arrays, names=columns)


def _shape(batch: PredictionBatch, names: dict[int, tuple[Any, ...]]) -> tuple[Any, ...]:
    """Batches of the same shape (input columns, output fields) are encoded together. ``names``: the column
    names of the Index objects seen so far, by id."""
    columns = batch.inputs.columns
    listed = names.get(id(columns))
    if listed is None:
        listed = names[id(columns)] = tuple(columns.tolist())
    return (
        listed,
        batch.predictions is None,
        batch.probabilities is None,
        batch.error is None,
    )


def _batches_table(batches: Sequence[PredictionBatch]) -> pa.Table:
    """The rows of requests of one shape (`_shape`) as one table, each column built once for all of them: a
    conversion per request costs about a millisecond (pandas to Arrow), one for a thousand requests about ten."""
    counts = np.fromiter((len(b) for b in batches), np.int64, len(batches))
    n = int(counts.sum())
    # Row i of the table belongs to batch owner[i]; per-batch values are spread over their rows with `take`.
    owner = pa.array(np.repeat(np.arange(len(batches), dtype=np.int64), counts))
    starts = np.cumsum(counts) - counts
    row = pa.array((np.arange(n, dtype=np.int64) - np.repeat(starts, counts)).astype(np.int32))

    def spread(values: list[Any], type_: pa.DataType) -> pa.Array:
        return pa.array(values, type_).take(owner)

    def rows(column: Callable[[PredictionBatch], Sequence[Any]]) -> list[Any]:
        return list(itertools.chain.from_iterable(column(b) for b in batches))

    def per_row(
        column: Callable[[PredictionBatch], Sequence[Any] | Any],
        one: type | tuple[type, ...],
        type_: pa.DataType,
        expand: Callable[[Any, int], Sequence[Any]] = lambda value, rows: [value] * rows,
    ) -> pa.Array:
        # A batch gives one value for all its rows (spread over them: the cheap case), or one per row.
        values = [column(b) for b in batches]
        if all(isinstance(v, one) for v in values):
            return spread(values, type_)
        chained = itertools.chain.from_iterable(
            expand(v, len(b)) if isinstance(v, one) else v for v, b in zip(values, batches, strict=True)
        )
        return pa.array(list(chained), type_)

    def ids() -> pa.Array:
        # A batch that gave its request id has its rows named as `row_ids` names them, by Arrow.
        if not all(isinstance(b.ids, str) for b in batches):
            return per_row(lambda b: b.ids, str, pa.string(), row_ids)
        request = spread([b.ids for b in batches], pa.string())
        single = counts == 1
        if bool(single.all()):
            return request
        named = pc.binary_join_element_wise(request, pc.cast(row, pa.string()), ".")
        return named if not single.any() else pc.if_else(pa.array(np.repeat(single, counts)), request, named)

    first = batches[0]
    meta = pa.Table.from_arrays(
        [
            ids(),
            pa.repeat(pa.scalar(first.endpoint, pa.string()), n)
            if all(b.endpoint == first.endpoint for b in batches)
            else spread([b.endpoint for b in batches], pa.string()),
            per_row(lambda b: b.model_names, str, pa.string()),
            per_row(lambda b: b.versions, _ONE_VERSION, pa.int32()),
            spread([b.role for b in batches], pa.string()),
            spread([b.ts_ms for b in batches], _TS),
            spread([float(b.latency_ms) for b in batches], pa.float64()),
            spread([b.status for b in batches], pa.string()),
            pa.repeat(pa.scalar("", pa.string()), n)
            if all(b.keys is None for b in batches)
            else pa.array(rows(lambda b: b.keys if b.keys is not None else [""] * len(b)), pa.string()),
            row,
        ],
        schema=SCHEMA,
    )
    fields: list[pa.Array] = []
    names: list[str] = []
    if first.predictions is not None:
        # Every batch of a shape has predictions when the first has (`_shape`).
        fields.append(_predictions_array([b.predictions for b in batches]))
        names.append("prediction")
    if first.probabilities is not None:
        stacked = _stacked_probabilities(batches)
        fields.append(
            stacked
            if stacked is not None
            else pa.array(rows(lambda b: b.probabilities or []), pa.list_(pa.float64()))
        )
        names.append("probabilities")
    if first.error is not None:
        fields.append(spread([b.error for b in batches], pa.string()))
        names.append("error")
    if not fields:
        fields, names = [pa.nulls(n, pa.null())], ["_"]
    outputs = pa.StructArray.from_arrays(fields, names=names)
    return meta.append_column("inputs", _batches_inputs(batches, n)).append_column("outputs", outputs)


def _float_array(values: np.ndarray[Any, np.dtype[np.float64]]) -> pa.Array:
    """A float column as Arrow, NaN as missing (as pandas-to-Arrow stores it); without NaN, no copy."""
    missing = np.isnan(values)
    return pa.array(values, pa.float64(), mask=missing) if missing.any() else pa.array(values, pa.float64())


def _batches_inputs(batches: Sequence[PredictionBatch], n: int) -> pa.Array:
    """The model inputs of batches of one shape as one struct column (one typed field per input)."""
    parts = [b.inputs for b in batches]
    if all(isinstance(p, FloatInputs) for p in parts):
        # The common case, without pandas (whose conversion starts a thread pool per call): the requests'
        # arrays stacked column by column in one copy, then each column handed to Arrow as it is.
        floats = cast(list[FloatInputs], parts)
        names = [str(c) for c in floats[0].columns]
        if not names:
            return pa.StructArray.from_arrays([pa.nulls(n, pa.null())], names=["_"])
        # Written into a row-major array, so that each column is contiguous (numpy would keep the inputs' order).
        by_column = np.empty((len(names), n), np.float64)
        np.concatenate([p.values.T for p in floats], axis=1, out=by_column)
        return pa.StructArray.from_arrays([_float_array(column) for column in by_column], names=names)
    frames = [p if isinstance(p, pd.DataFrame) else pd.DataFrame(p.values, columns=p.columns) for p in parts]
    return _inputs_array(frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True), n)


def _stacked_probabilities(batches: Sequence[PredictionBatch]) -> pa.Array | None:
    """Class probabilities, a list per row, from the requests' arrays in one step when every request handed
    over an array of the same width (the inference path does); None otherwise (then they go row by row)."""
    arrays = [b.probabilities for b in batches]
    if not all(isinstance(a, np.ndarray) and a.ndim == 2 for a in arrays):
        return None
    matrices = cast(list[np.ndarray[Any, Any]], arrays)
    if len({m.shape[1] for m in matrices}) != 1:
        return None
    values = np.concatenate(matrices).astype(np.float64, copy=False)
    offsets = np.arange(len(values) + 1, dtype=np.int32) * values.shape[1]
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.ravel()))


def _first_id(item: _Item) -> str:
    if isinstance(item, PredictionRecord):
        return item.request_id
    if isinstance(item.ids, str):
        return item.ids
    return item.ids[0] if len(item) else ""


def _table(group: Sequence[_Item]) -> pa.Table:
    """A group of `_encode`: records, or batches of one shape."""
    if isinstance(group[0], PredictionRecord):
        return _records_table(cast(Sequence[PredictionRecord], group))
    return _batches_table(cast(Sequence[PredictionBatch], group))


def _predictions_array(parts: Sequence[Any]) -> pa.Array:
    """The requests' predictions as one column: their arrays joined in one step when every request handed over
    the model's array of one kind (the inference path does), else value by value."""
    arrays = [p for p in parts if isinstance(p, np.ndarray)]
    if len(arrays) == len(parts) and len({a.dtype for a in arrays}) == 1 and arrays[0].dtype.kind in "biuf":
        return pa.array(np.concatenate(arrays))
    values = list(
        itertools.chain.from_iterable(p.tolist() if isinstance(p, np.ndarray) else p for p in parts)
    )
    try:
        return pa.array(values)
    except (pa.ArrowException, TypeError, ValueError):
        # Mixed kinds (a model answering numbers and text): kept as JSON text, one per row.
        return pa.array([json.dumps(p, default=str) for p in values], pa.string())


def _by_schema(tables: list[pa.Table]) -> list[pa.Table]:
    """Tables of the same schema concatenated (cheap: no copy), in first-seen order."""
    groups: dict[pa.Schema, list[pa.Table]] = {}
    for table in tables:
        groups.setdefault(table.schema, []).append(table)
    return [pa.concat_tables(group) if len(group) > 1 else group[0] for group in groups.values()]


def _concat(tables: list[pa.Table]) -> list[pa.Table]:
    """As few tables as the types allow: one when the input and output columns have a common type (Arrow's
    permissive promotion: an integer column meets a float one as float, a missing field is null), otherwise
    the tables as they are (one file each)."""
    if len(tables) == 1:
        return tables
    try:
        return [pa.concat_tables(tables, promote_options="permissive")]
    except (pa.ArrowException, ValueError, TypeError):
        return tables


def _fsync_dir(path: Path) -> None:
    # A rename or a new entry is only durable once its directory is synced; POSIX only.
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    if path.is_dir():
        return
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():
                raise
        _fsync_dir(directory.parent)


def _write_atomic(table: pa.Table, directory: Path) -> Path:
    _ensure_dir(directory)
    name = f"part-{time.time_ns() // 1_000_000}-{uuid.uuid4().hex[:8]}.parquet"
    final = directory / name
    tmp = directory / f"{name}.tmp"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(
                table,
                fh,
                compression=_COMPRESSION,
                use_dictionary=False,
                write_statistics=_STATISTICS_COLUMNS,
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    try:
        _fsync_dir(directory)
    except OSError as exc:
        # The file is complete and visible; failing here would write its rows a second time on retry.
        log.warning("prediction log: could not fsync %s after writing %s: %s", directory, name, exc)
    return final


class PredictionLog:
    """A buffered, thread-safe writer of prediction records; see the module docstring for its guarantees."""

    def __init__(
        self,
        root: Path,
        *,
        flush_interval_s: float = 1.0,
        max_buffer_rows: int = 200_000,
        on_flush: Callable[[pa.Table], None] | None = None,
    ) -> None:
        if not flush_interval_s > 0:
            raise ValidationFailed(
                "flush_interval_s must be positive", details={"flush_interval_s": flush_interval_s}
            )
        if max_buffer_rows < 1:
            raise ValidationFailed(
                "max_buffer_rows must be at least 1", details={"max_buffer_rows": max_buffer_rows}
            )
        self.root = Path(root)
        self.flush_interval_s = flush_interval_s
        self.max_buffer_rows = max_buffer_rows
        self._on_flush = on_flush
        self._capacity = OVERFLOW_FACTOR * max_buffer_rows
        self._lock = threading.Lock()
        # One flush at a time, so the thread and an explicit flush() never write the same rows twice.
        self._write_lock = threading.Lock()
        self._buffer: deque[_Item] = deque()
        self._rows = 0  # rows in the buffer
        self._inflight = 0
        self._written = 0
        self._dropped = 0
        self._rejected = 0
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background flusher (a daemon thread). Calling it again does nothing."""
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the prediction log is closed")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="bridgehead-predlog", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the flusher and write everything buffered. Idempotent; afterwards `record` raises.

        Raises `StoreUnavailable` if the final write fails; the rows stay pending and close() can be retried.
        """
        with self._lock:
            self._closed = True
            thread = self._thread
        self._stop.set()
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.flush()

    def __enter__(self) -> PredictionLog:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the request path ------------------------------------------------------------------------------------

    def record(self, items: Iterable[PredictionRecord | PredictionBatch]) -> None:
        """Buffer records (one row each) or batches (one request's rows) for the next flush. Never does IO;
        raises `StoreUnavailable` once the log is closed."""
        batch = items if isinstance(items, list | tuple) else list(items)
        rows = 0
        for r in batch:
            if isinstance(r, PredictionBatch):
                rows += len(r)
            elif isinstance(r, PredictionRecord):
                rows += 1
            else:
                raise ValidationFailed(
                    f"expected PredictionRecord or PredictionBatch, got {type(r).__name__}"
                )
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the prediction log is closed")
            self._buffer.extend(batch)
            self._rows += rows
            self._trim()
            if self._rows >= self.max_buffer_rows:
                self._wake.set()

    def _trim(self) -> None:
        # Past the capacity (writes failing), the oldest rows go first; a batch goes whole. Under the lock.
        while self._rows > self._capacity and self._buffer:
            gone = self._buffer.popleft()
            n = len(gone)
            self._rows -= n
            self._dropped += n

    @property
    def pending(self) -> int:
        """Rows acknowledged but not yet in a file (buffered, or being written right now)."""
        with self._lock:
            return self._rows + self._inflight

    @property
    def written(self) -> int:
        """Rows written to files since this log was created."""
        with self._lock:
            return self._written

    @property
    def dropped(self) -> int:
        """Oldest rows discarded because the buffer passed OVERFLOW_FACTOR x max_buffer_rows (writes failing)."""
        with self._lock:
            return self._dropped

    @property
    def rejected(self) -> int:
        """Rows skipped because Arrow could not encode them (logged one by one)."""
        with self._lock:
            return self._rejected

    # -- writing ---------------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write everything buffered now, one file per (endpoint, hour) (more if the column types of the
        requests in it cannot be unified); return the number of rows written.

        If some groups cannot be written, the others still are, the failed rows go back to the buffer, and
        `StoreUnavailable` is raised.
        """
        with self._write_lock:
            with self._lock:
                if not self._buffer:
                    return 0
                batch = list(self._buffer)
                self._buffer.clear()
                self._inflight, self._rows = self._rows, 0
            groups: dict[tuple[str, int], list[_Item]] = {}
            for r in batch:
                groups.setdefault((r.endpoint, r.ts_ms // _HOUR_MS), []).append(r)
            total = 0
            done: set[tuple[str, int]] = set()
            errors: list[str] = []
            try:
                for group_key, items in groups.items():
                    try:
                        total += self._write_group(group_key, items)
                    except Exception as exc:
                        where = partition_dir(self.root, group_key[0], group_key[1] * _HOUR_MS)
                        errors.append(f"{where}: {exc}")
                    else:
                        done.add(group_key)
            finally:
                # Also on an interruption (KeyboardInterrupt in a caller's flush): keep every row not written.
                self._requeue([r for r in batch if (r.endpoint, r.ts_ms // _HOUR_MS) not in done])
            if errors:
                raise StoreUnavailable(
                    f"prediction log: {len(errors)} of {len(groups)} files could not be written: {errors[0]}",
                    details={"errors": errors, "written": total},
                )
            return total

    def _write_group(self, group_key: tuple[str, int], items: list[_Item]) -> int:
        tables, rejected = self._encode(items)
        directory = partition_dir(self.root, group_key[0], group_key[1] * _HOUR_MS)
        written = 0
        # All files of the group are written before any counts: a failure retries the whole group.
        paths = [_write_atomic(table, directory) for table in tables]
        for table in tables:
            written += table.num_rows
        with self._lock:
            self._inflight -= written + rejected
            self._written += written
        if self._on_flush is not None:
            for path, table in zip(paths, tables, strict=True):
                try:
                    self._on_flush(table)
                except Exception:
                    log.exception("prediction log: on_flush failed for %s", path)
        return written

    def _encode(self, items: list[_Item]) -> tuple[list[pa.Table], int]:
        """The group's rows as tables, and how many rows were rejected (Arrow could not encode them, or a
        record's inputs/outputs were not JSON objects); each rejected record or batch is logged."""
        tables: list[pa.Table] = []
        rejected = 0
        groups: list[list[_Item]] = []
        records: list[_Item] = [r for r in items if isinstance(r, PredictionRecord)]
        if records:
            groups.append(records)
        shapes: dict[tuple[Any, ...], list[_Item]] = {}
        # The inference path labels its frames with shared Index objects (`protocols.column_index`): each
        # distinct one is listed once per flush, not once a request (a fifth of the encoding time of a flush
        # of 100-row requests). The batches keep their indexes alive, so an id stays theirs meanwhile.
        names: dict[int, tuple[Any, ...]] = {}
        for b in items:
            if isinstance(b, PredictionBatch):
                shapes.setdefault(_shape(b, names), []).append(b)
        groups.extend(shapes.values())
        for group in groups:
            try:
                tables.append(_table(group))
            except _ENCODE_ERRORS:
                # One record's or request's values (or types that do not mix) spoil the group: each on its
                # own, so only that one is rejected.
                for item in group:
                    try:
                        tables.append(_table([item]))
                    except _ENCODE_ERRORS as exc:
                        rejected += len(item)
                        self._reject(_first_id(item), item.endpoint, len(item), exc)
        return (_concat(_by_schema(tables)) if tables else []), rejected

    def _reject(self, request_id: str, endpoint: str, rows: int, exc: BaseException) -> None:
        log.error("prediction log: rejected %d rows of request %r of %s: %s", rows, request_id, endpoint, exc)
        with self._lock:
            self._rejected += rows

    def _requeue(self, items: list[_Item]) -> None:
        with self._lock:
            self._inflight = 0
            if not items:
                return
            # Failed rows are older than anything recorded during the flush: they go first, and go first if
            # the capacity forces a drop.
            rows = sum(len(r) for r in items)
            self._buffer.extendleft(reversed(items))
            self._rows += rows
            self._trim()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if failures:
                # Back off a whole interval after a failure, even if record() signals a full buffer.
                self._stop.wait(self.flush_interval_s)
            else:
                self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception as exc:
                failures += 1
                log.error(
                    "prediction log: flush failed (%d in a row), %d rows pending, %d dropped; retrying in %.1fs: %s",
                    failures,
                    self.pending,
                    self.dropped,
                    self.flush_interval_s,
                    exc,
                    exc_info=failures == 1,
                )
            else:
                if failures:
                    log.info("prediction log: flush succeeded again after %d failures", failures)
                failures = 0


# -- reading -------------------------------------------------------------------------------------------------


def _hour_dirs(endpoint_dir: Path, start_ms: int | None, end_ms: int | None) -> list[tuple[int, Path]]:
    """(hour start ms, directory) of the hour partitions that can hold rows in [start_ms, end_ms), oldest first."""
    hours: list[tuple[int, Path]] = []
    for day_dir in endpoint_dir.iterdir():
        m = _DATE_DIR.fullmatch(day_dir.name)
        if not m:
            continue
        try:
            day_ms = int(datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=UTC).timestamp()) * 1000
        except ValueError:
            continue
        if (end_ms is not None and day_ms >= end_ms) or (
            start_ms is not None and day_ms + _DAY_MS <= start_ms
        ):
            continue
        if not day_dir.is_dir():
            continue
        for hour_dir in day_dir.iterdir():
            h = _HOUR_DIR.fullmatch(hour_dir.name)
            if not h or int(h[1]) > 23:
                continue
            hour_ms = day_ms + int(h[1]) * _HOUR_MS
            if (end_ms is not None and hour_ms >= end_ms) or (
                start_ms is not None and hour_ms + _HOUR_MS <= start_ms
            ):
                continue
            if hour_dir.is_dir():
                hours.append((hour_ms, hour_dir))
    hours.sort(key=lambda item: item[0])
    return hours


def _part_files(hour_dir: Path) -> list[Path]:
    # Only complete files: a *.tmp is a write in progress, or the leftover of one that was killed.
    return sorted(p for p in hour_dir.iterdir() if p.name.startswith("part-") and p.name.endswith(".parquet"))


def _unreadable(path: Path, exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"cannot read prediction log file {path}: {exc}", details={"file": str(path)})


def read_log(
    root: Path,
    endpoint: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    columns: list[str] | None = None,
    batch_rows: int = 65_536,
) -> Iterator[pa.RecordBatch]:
    """Stream the rows of ``endpoint`` with ``start_ms <= ts < end_ms`` as record batches of at most ``batch_rows``.

    Hour partitions outside the range are never opened; rows are filtered by ``ts`` only in the first and last
    hour. Batches come hour by hour, oldest hour first; within an hour, in file order (not sorted by ``ts``).
    An endpoint with no log yields nothing. Arguments are checked when called, not when iterated.
    """
    validate_endpoint(endpoint)
    wanted = list(COLUMNS) if columns is None else list(columns)
    unknown = [c for c in wanted if c not in COLUMNS]
    if not wanted or unknown:
        raise ValidationFailed(
            f"unknown prediction log columns {unknown}; choose from {', '.join(COLUMNS)}",
            details={"columns": wanted},
        )
    if batch_rows < 1:
        raise ValidationFailed("batch_rows must be at least 1", details={"batch_rows": batch_rows})
    return _read(Path(root) / f"endpoint={endpoint}", start_ms, end_ms, wanted, batch_rows)


def _read(
    endpoint_dir: Path, start_ms: int | None, end_ms: int | None, columns: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    if not endpoint_dir.is_dir():
        return
    lower = pa.scalar(start_ms, _TS) if start_ms is not None else None
    upper = pa.scalar(end_ms, _TS) if end_ms is not None else None
    for hour_ms, hour_dir in _hour_dirs(endpoint_dir, start_ms, end_ms):
        whole_hour = (start_ms is None or hour_ms >= start_ms) and (
            end_ms is None or hour_ms + _HOUR_MS <= end_ms
        )
        read_columns = columns if whole_hour or "ts" in columns else [*columns, "ts"]
        for path in _part_files(hour_dir):
            try:
                parquet = pq.ParquetFile(path)
            except FileNotFoundError:
                continue  # removed (retention) between listing and reading
            except (OSError, pa.ArrowException) as exc:
                raise _unreadable(path, exc) from exc
            with parquet:
                batches = parquet.iter_batches(batch_size=batch_rows, columns=read_columns)
                while True:
                    try:
                        batch = next(batches)
                    except StopIteration:
                        break
                    except (OSError, pa.ArrowException) as exc:
                        raise _unreadable(path, exc) from exc
                    if not whole_hour:
                        ts = batch.column("ts")
                        mask = None
                        if lower is not None:
                            mask = pc.greater_equal(ts, lower)
                        if upper is not None:
                            below = pc.less(ts, upper)
                            mask = below if mask is None else pc.and_(mask, below)
                        batch = batch.filter(mask).select(columns)
                    if batch.num_rows:
                        yield batch


def recent(root: Path, endpoint: str, limit: int = 50) -> list[dict[str, Any]]:
    """The ``limit`` newest rows of ``endpoint``, newest first, as dicts (``ts`` is an aware UTC datetime;
    ``inputs`` and ``outputs`` as JSON text, an output's empty fields left out).

    Reads hour partitions from the newest back, and stops as soon as they hold ``limit`` rows: every row of a
    newer hour is newer than any row of an older one. Only the newest ``limit`` rows of each file become Python.
    """
    validate_endpoint(endpoint)
    if limit < 0:
        raise ValidationFailed("limit must not be negative", details={"limit": limit})
    endpoint_dir = Path(root) / f"endpoint={endpoint}"
    if limit == 0 or not endpoint_dir.is_dir():
        return []
    found: list[dict[str, Any]] = []
    rows = 0
    for _, hour_dir in reversed(_hour_dirs(endpoint_dir, None, None)):
        for path in _part_files(hour_dir):
            try:
                table = pq.read_table(path)
            except FileNotFoundError:
                continue
            except (OSError, pa.ArrowException) as exc:
                raise _unreadable(path, exc) from exc
            rows += table.num_rows
            order = pc.sort_indices(table, sort_keys=[("ts", "descending")])
            found.extend(_as_text(row) for row in table.take(order.slice(0, limit)).to_pylist())
        if rows >= limit:
            break
    found.sort(key=lambda r: r["ts"], reverse=True)
    return found[:limit]


def _as_text(row: dict[str, Any]) -> dict[str, Any]:
    inputs, outputs = row.get("inputs"), row.get("outputs")
    if isinstance(inputs, dict):
        row["inputs"] = json.dumps({k: v for k, v in inputs.items() if k != "_"}, default=str)
    if isinstance(outputs, dict):
        row["outputs"] = json.dumps({k: v for k, v in outputs.items() if v is not None}, default=str)
    return row

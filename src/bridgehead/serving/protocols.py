"""Request and response shapes for online inference: every request becomes a pandas DataFrame.

Three JSON protocols and three binary batch formats are understood, none of them tied to an HTTP framework:

* ``native``: ``{"records": [{col: value}, ...], "keys": [...], "id": "..."}`` (keys and id optional), or
  a bare list of records. ``keys`` are per-row routing keys (see :mod:`bridgehead.serving.routing`).
* ``mlflow``: what ``mlflow models serve`` accepts on ``/invocations``: a JSON object with exactly one of
  ``dataframe_split``, ``dataframe_records``, ``instances``, ``inputs`` (``params`` and other keys are
  ignored, as MLflow does), or a CSV body. The response is ``{"predictions": [...]}``.
* ``v2``: the Open Inference Protocol (KServe, Triton, MLServer) JSON request: one tensor per column
  (shape ``[n]`` or ``[n, 1]``, named as the column), or a single ``[n, k]`` tensor whose columns follow
  the signature's column order.
* Arrow IPC (stream or file) and Parquet bodies, for ``native`` and ``mlflow``.

A model's stored signature (Bridgehead's manifest or MLflow's MLmodel form) becomes a :class:`Signature`,
and :func:`validate_frame` checks a parsed frame against it: every problem names its column.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import io
import itertools
import json
import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bridgehead.errors import BadRequest, PayloadTooLarge, ValidationFailed

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "ColumnSpec",
    "OutputSpec",
    "ParsedRequest",
    "Protocol",
    "Signature",
    "column_index",
    "is_float_frame",
    "mlflow_response",
    "parse_body",
    "v2_metadata",
    "v2_response",
    "validate_frame",
]

Protocol = Literal["native", "mlflow", "v2"]
Kind = Literal["bool", "int", "uint", "float", "string", "binary", "datetime", "any"]

JSON = "application/json"
CSV = "text/csv"
ARROW_STREAM = "application/vnd.apache.arrow.stream"
ARROW_FILE = "application/vnd.apache.arrow.file"
PARQUET = "application/vnd.apache.parquet"
PARQUET_X = "application/x-parquet"
_TABULAR = (JSON, CSV, ARROW_STREAM, ARROW_FILE, PARQUET, PARQUET_X)
ACCEPTED_CONTENT_TYPES: dict[str, tuple[str, ...]] = {"native": _TABULAR, "mlflow": _TABULAR, "v2": (JSON,)}
"""Media types each protocol accepts (parameters other than ``charset=utf-8`` are ignored)."""

MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_NATIVE_KEYS = {"records", "keys", "id"}
_V2_KEYS = {"id", "parameters", "inputs", "outputs"}
_V2_INPUT_KEYS = {"name", "shape", "datatype", "data", "parameters"}


# --- parsed requests ---------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ParsedRequest:
    """A request as a frame, with optional per-row routing keys and the client's request id."""

    frame: pd.DataFrame
    keys: list[str | None] | None = None
    request_id: str | None = None
    # The rows x columns float64 array the frame was built from, when every value of every record was a
    # float (`_numeric_records`), else None. The prediction log keeps it as the request's inputs: asking
    # pandas for it again cost about 10 µs a request on a busy server. Whoever changes the frame's columns
    # (a key column taken out) drops it.
    values: np.ndarray[Any, np.dtype[np.float64]] | None = None


def parse_body(
    content_type: str,
    body: bytes,
    protocol: Protocol,
    columns: list[str] | None,
    *,
    signature: Signature | None = None,
    max_rows: int | None = None,
) -> ParsedRequest:
    """Parse a request body of the given protocol into a frame (not yet validated: see validate_frame).

    ``columns`` (the signature's column order; defaults to the signature's) names the values of row-shaped
    inputs: MLflow ``instances``/``inputs`` lists of lists and a single ``[n, k]`` v2 tensor. Without it
    such columns are numbered 0..k-1. ``signature`` also makes CSV read its string columns as text.

    Raises BadRequest for an unaccepted content type (details: content_type, accepted), malformed JSON
    (with the parser's position) or binary bodies, and shapes the protocol does not allow;
    ValidationFailed for empty input and for data that contradicts its own declared shape or type;
    PayloadTooLarge above ``max_rows``."""
    if columns is None and signature is not None:
        columns = signature.columns
    media = _media_type(content_type, protocol)
    if media == JSON:
        parsed = _parse_json_document(_load_json(body), protocol, columns)
    elif media == CSV:
        parsed = ParsedRequest(_read_csv(body, signature))
    elif media in (ARROW_STREAM, ARROW_FILE):
        parsed = ParsedRequest(_read_arrow(body, stream=media == ARROW_STREAM))
    else:
        parsed = ParsedRequest(_read_parquet(body))
    rows = len(parsed.frame)
    if rows == 0:
        raise ValidationFailed("The request has no rows to predict.", details={"rows": 0})
    if max_rows is not None and rows > max_rows:
        raise PayloadTooLarge(
            f"The request has {rows} rows; at most {max_rows} are allowed per request.",
            details={"rows": rows, "max_rows": max_rows},
        )
    return parsed


def _media_type(content_type: str, protocol: Protocol) -> str:
    accepted = ACCEPTED_CONTENT_TYPES[protocol]
    media, *params = (part.strip() for part in (content_type or "").split(";"))
    media = media.lower()
    charset = next(
        (p.partition("=")[2].strip().strip('"').lower() for p in params if p.lower().startswith("charset=")),
        "",
    )
    if media not in accepted:
        raise BadRequest(
            f"Unsupported content type {content_type!r} for the {protocol} protocol; accepted: {', '.join(accepted)}.",
            details={"content_type": content_type, "accepted": list(accepted)},
        )
    if charset not in ("", "utf-8", "utf8"):
        raise BadRequest(
            f"Unsupported charset {charset!r}: request bodies must be UTF-8.",
            details={"content_type": content_type, "accepted": list(accepted)},
        )
    return media


def _load_json(body: bytes) -> Any:
    try:
        # orjson parses about five times faster; it refuses what Python's parser accepts or explains better
        # (NaN and Infinity literals, lone surrogates, integers past 64 bits, malformed bodies), which then
        # goes through Python's parser for the same answer as before.
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(
            f"The body is not valid UTF-8 (byte {e.start}).", details={"position": e.start, "error": e.reason}
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BadRequest(
            f"Malformed JSON at line {e.lineno} column {e.colno} (char {e.pos}): {e.msg}.",
            details={"line": e.lineno, "col": e.colno, "position": e.pos, "error": e.msg},
        ) from None
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply.", details={"error": "too deep"}) from None


def _parse_json_document(doc: Any, protocol: Protocol, columns: list[str] | None) -> ParsedRequest:
    if protocol == "native":
        return _parse_native(doc)
    if protocol == "mlflow":
        return ParsedRequest(_parse_mlflow(doc, columns))
    return _parse_v2(doc, columns)


# --- native ------------------------------------------------------------------------------------------------


def _parse_native(doc: Any) -> ParsedRequest:
    keys_raw: Any = None
    request_id: str | None = None
    if isinstance(doc, list):
        records = doc
    elif isinstance(doc, dict):
        unknown = sorted(set(doc) - _NATIVE_KEYS)
        if unknown or "records" not in doc:
            raise BadRequest(
                "A native request is a list of records or an object with 'records' (and optionally 'keys' "
                f"and 'id'); {'unexpected ' + ', '.join(map(repr, unknown)) if unknown else 'no records'}.",
                details={"accepted": sorted(_NATIVE_KEYS), "received": sorted(doc)},
            )
        records = doc["records"]
        keys_raw = doc.get("keys")
        request_id = _request_id(doc.get("id"))
    else:
        raise BadRequest("A native request is a JSON list of records or an object with 'records'.")
    frame, values = _records_frame(records, "records")
    keys = None if keys_raw is None else _keys(keys_raw, len(frame))
    return ParsedRequest(frame, keys, request_id, values)


def _keys(raw: Any, rows: int) -> list[str | None]:
    if not isinstance(raw, list):
        raise ValidationFailed(
            "'keys' must be a list with one key (string or null) per record.", details={"field": "keys"}
        )
    if len(raw) != rows:
        raise ValidationFailed(
            f"'keys' has {len(raw)} entries for {rows} records.",
            details={"field": "keys", "keys": len(raw), "rows": rows},
        )
    for i, k in enumerate(raw):
        if k is not None and not isinstance(k, str):
            raise ValidationFailed(
                f"keys[{i}] must be a string or null, got {_type_name(k)}.", details={"field": f"keys[{i}]"}
            )
    return cast(list[str | None], raw)


def _request_id(raw: Any) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise BadRequest(f"'id' must be a string, got {_type_name(raw)}.", details={"field": "id"})
    return raw


def _records_frame(
    records: Any, where: str
) -> tuple[pd.DataFrame, np.ndarray[Any, np.dtype[np.float64]] | None]:
    """The records as a frame, and the float64 array it was built from when every value was a float."""
    if not isinstance(records, list):
        raise BadRequest(f"'{where}' must be a list of records (objects).", details={"field": where})
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise BadRequest(
                f"{where}[{i}] must be an object of column -> value, got {_type_name(r)}.",
                details={"field": f"{where}[{i}]"},
            )
    if not records:
        return pd.DataFrame(), None
    numeric = _numeric_records(records)
    if numeric is not None:
        return numeric
    return _pandas(lambda: pd.DataFrame.from_records(records), where), None


def _numeric_records(
    records: list[dict[str, Any]],
) -> tuple[pd.DataFrame, np.ndarray[Any, np.dtype[np.float64]]] | None:
    """The common case built directly: every record has the same keys in the same order and only floats.
    The same frame as ``from_records`` (float64 columns) in a fraction of the time; anything else takes the
    general way."""
    columns = list(records[0])
    width = len(columns)
    if not width or any(len(r) != width for r in records):
        return None
    values = operator.itemgetter(*columns)
    try:
        rows = [values(r) for r in records] if width > 1 else [(values(r),) for r in records]
    except KeyError:
        return None
    if set(map(type, itertools.chain.from_iterable(rows))) != {float}:
        return None
    array = np.asarray(rows, dtype=np.float64)
    return pd.DataFrame(array, columns=column_index(tuple(columns))), array


@functools.lru_cache(maxsize=256)
def column_index(columns: tuple[str, ...]) -> pd.Index:
    """A frame's column labels, built once per column list: pandas infers a new Index from a list on every
    frame (about 50 µs for 20 names), and an object-dtype Index lists its names fastest. Indexes are immutable,
    so frames can share one.

    Only this module's float fast path (`_numeric_records`, `_all_floats`) labels frames with these indexes,
    and only frames whose every column is float64; nothing changes a parsed frame's column types in place, so
    `is_float_frame` can tell such a frame by its labels."""
    return pd.Index(columns, dtype=object)


def is_float_frame(frame: pd.DataFrame) -> bool:
    """Whether every column of the frame is float64, known without building its dtypes (see `column_index`);
    False only means "not known"."""
    columns = frame.columns
    return columns.dtype == object and columns is column_index(tuple(columns.tolist()))


# --- mlflow ------------------------------------------------------------------------------------------------


def _parse_mlflow(doc: Any, columns: list[str] | None) -> pd.DataFrame:
    accepted = ", ".join(MLFLOW_FORMATS)
    if not isinstance(doc, dict):
        raise BadRequest(
            f"An MLflow scoring request is a JSON object with exactly one of {accepted}; received a "
            f"{_type_name(doc)}.",
            details={"accepted": list(MLFLOW_FORMATS)},
        )
    found = [k for k in MLFLOW_FORMATS if k in doc]
    if len(found) != 1:
        raise BadRequest(
            f"An MLflow scoring request needs exactly one of {accepted}; received "
            f"{', '.join(map(repr, found or sorted(doc))) or 'an empty object'}.",
            details={"accepted": list(MLFLOW_FORMATS), "received": sorted(doc)},
        )
    fmt = found[0]
    data = doc[fmt]
    if fmt == "dataframe_split":
        return _split_frame(data)
    if fmt == "dataframe_records":
        if not isinstance(data, list):
            raise BadRequest(
                f"dataframe_records must be a list of records, got {_type_name(data)}.",
                details={"field": fmt},
            )
        return _pandas(lambda: pd.DataFrame(data=data), fmt)
    # instances and inputs (TF-serving style): rows, records, a single column, or columns.
    if isinstance(data, dict):
        return _columns_frame(data, fmt)
    if isinstance(data, list):
        return _list_frame(data, fmt, columns)
    raise BadRequest(
        f"'{fmt}' must be a list (of rows, records or values) or an object of column -> values, got "
        f"{_type_name(data)}.",
        details={"field": fmt},
    )


def _split_frame(data: Any) -> pd.DataFrame:
    if not isinstance(data, dict):
        raise BadRequest(
            f"dataframe_split must be an object, got {_type_name(data)}.",
            details={"field": "dataframe_split"},
        )
    extra = sorted(set(data) - {"columns", "data", "index"})
    if "data" not in data or extra:
        raise BadRequest(
            "dataframe_split must have a 'data' field and optionally 'columns' and 'index'"
            + (f"; unexpected {', '.join(map(repr, extra))}." if extra else "."),
            details={"field": "dataframe_split", "received": sorted(data)},
        )
    return _pandas(
        lambda: pd.DataFrame(index=data.get("index"), columns=data.get("columns"), data=data["data"]),
        "dataframe_split",
    )


def _pandas(build: Any, where: str) -> pd.DataFrame:
    try:
        return build()
    except (ValueError, TypeError, AssertionError) as e:
        raise BadRequest(
            f"'{where}' is not a valid table: {e}", details={"field": where, "error": str(e)}
        ) from None


def _list_frame(data: list[Any], where: str, columns: list[str] | None) -> pd.DataFrame:
    if not data:
        return pd.DataFrame()
    if all(isinstance(x, dict) for x in data):
        return pd.DataFrame.from_records(data)
    if all(isinstance(x, list) for x in data):
        widths = {len(x) for x in data}
        if len(widths) != 1:
            raise BadRequest(
                f"The rows of '{where}' have different lengths ({', '.join(map(str, sorted(widths)))}).",
                details={"field": where},
            )
        width = widths.pop()
        if columns is None:
            return pd.DataFrame(data)
        if width != len(columns):
            raise ValidationFailed(
                f"The rows of '{where}' have {width} values but the signature has {len(columns)} columns "
                f"({', '.join(columns)}).",
                details={
                    "field": where,
                    "problem": "width",
                    "got": width,
                    "expected": len(columns),
                    "columns": columns,
                },
            )
        return pd.DataFrame(data, columns=columns)
    if not any(isinstance(x, list | dict) for x in data):
        # A list of values is one column (MLflow maps it onto the signature's only column).
        name: Any = columns[0] if columns is not None and len(columns) == 1 else 0
        return pd.DataFrame({name: data})
    raise BadRequest(f"'{where}' mixes rows, records and values; send one kind.", details={"field": where})


def _columns_frame(data: dict[str, Any], where: str) -> pd.DataFrame:
    if not data:
        return pd.DataFrame()
    values = {name: v if isinstance(v, list) else [v] for name, v in data.items()}
    first, n = next((name, len(v)) for name, v in values.items())
    for name, v in values.items():
        if len(v) != n:
            raise ValidationFailed(
                f"Column '{name}' has {len(v)} values but column '{first}' has {n} (in '{where}').",
                details={"column": name, "problem": "length", "got": len(v), "expected": n},
            )
    return pd.DataFrame(values)


# --- Open Inference Protocol v2 ----------------------------------------------------------------------------

# datatype -> (numpy dtype, kind of JSON value accepted)
_V2_DATATYPES: dict[str, tuple[str, Kind]] = {
    "BOOL": ("bool", "bool"),
    "INT8": ("int8", "int"),
    "INT16": ("int16", "int"),
    "INT32": ("int32", "int"),
    "INT64": ("int64", "int"),
    "UINT8": ("uint8", "uint"),
    "UINT16": ("uint16", "uint"),
    "UINT32": ("uint32", "uint"),
    "UINT64": ("uint64", "uint"),
    "FP16": ("float16", "float"),
    "FP32": ("float32", "float"),
    "FP64": ("float64", "float"),
    "BYTES": ("object", "string"),
}


@dataclass
class _Tensor:
    name: str
    shape: list[int]
    values: np.ndarray[Any, Any] = field(repr=False)


def _parse_v2(doc: Any, columns: list[str] | None) -> ParsedRequest:
    if not isinstance(doc, dict):
        raise BadRequest(f"An inference request is a JSON object with 'inputs', got {_type_name(doc)}.")
    unknown = sorted(set(doc) - _V2_KEYS)
    if unknown:
        raise BadRequest(
            f"Unexpected field(s) {', '.join(map(repr, unknown))} in the inference request; allowed: "
            f"{', '.join(sorted(_V2_KEYS))}.",
            details={"accepted": sorted(_V2_KEYS), "received": sorted(doc)},
        )
    request_id = _request_id(doc.get("id"))
    if "parameters" in doc and not isinstance(doc["parameters"], dict):
        raise BadRequest("'parameters' must be an object.", details={"field": "parameters"})
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest("An inference request needs a non-empty 'inputs' list.", details={"field": "inputs"})
    tensors = [_v2_tensor(item, i) for i, item in enumerate(inputs)]
    names = [t.name for t in tensors]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ValidationFailed(
                f"Input '{name}' is given twice.", details={"input": name, "problem": "duplicate"}
            )
    return ParsedRequest(_v2_frame(tensors, columns), None, request_id)


def _v2_tensor(item: Any, i: int) -> _Tensor:
    if not isinstance(item, dict):
        raise BadRequest(f"inputs[{i}] must be an object.", details={"field": f"inputs[{i}]"})
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(
            f"inputs[{i}] needs a 'name' (a non-empty string).", details={"field": f"inputs[{i}].name"}
        )
    where: dict[str, Any] = {"input": name}
    unknown = sorted(set(item) - _V2_INPUT_KEYS)
    missing = sorted({"shape", "datatype", "data"} - set(item))
    if unknown or missing:
        raise BadRequest(
            f"Input '{name}' "
            + (
                f"lacks {', '.join(map(repr, missing))}"
                if missing
                else f"has unexpected {', '.join(map(repr, unknown))}"
            )
            + "; an input has name, shape, datatype, data and optionally parameters.",
            details={**where, "missing": missing, "unexpected": unknown},
        )
    params = item.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise BadRequest(f"The parameters of input '{name}' must be an object.", details=where)
    if params and "binary_data_size" in params:
        raise BadRequest(
            f"Input '{name}' uses the binary tensor data extension, which is not supported; send JSON data.",
            details=where,
        )
    shape = item["shape"]
    if (
        not isinstance(shape, list)
        or not shape
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)
    ):
        raise ValidationFailed(
            f"Input '{name}' has an invalid shape {shape!r}: a list of non-negative integers.",
            details={**where, "problem": "shape", "shape": shape},
        )
    datatype = item["datatype"]
    if datatype not in _V2_DATATYPES:
        raise ValidationFailed(
            f"Input '{name}' has unsupported datatype {datatype!r}; supported: {', '.join(_V2_DATATYPES)}.",
            details={**where, "problem": "datatype", "datatype": datatype},
        )
    data = item["data"]
    flat = list(_flatten(data)) if isinstance(data, list) else [data]
    expected = math.prod(shape)
    if len(flat) != expected:
        raise ValidationFailed(
            f"Input '{name}' has {len(flat)} values but its shape {shape} needs {expected}.",
            details={**where, "problem": "shape", "shape": shape, "values": len(flat)},
        )
    dtype, kind = _V2_DATATYPES[datatype]
    for pos, value in enumerate(flat):
        problem = _json_value_problem(value, kind, dtype)
        if problem:
            raise ValidationFailed(
                f"Input '{name}' is {datatype} but value {pos} is {problem}.",
                details={
                    **where,
                    "problem": "wrong_type",
                    "expected": datatype,
                    "got": problem,
                    "position": pos,
                },
            )
    values = np.array(flat, dtype=object if kind == "string" else dtype).reshape(shape)
    return _Tensor(name, shape, values)


def _flatten(data: list[Any]) -> Iterator[Any]:
    """Values of nested lists in row-major order (iteratively: nesting depth is the client's choice)."""
    stack = [iter(data)]
    while stack:
        for x in stack[-1]:
            if isinstance(x, list):
                stack.append(iter(x))
                break
            yield x
        else:
            stack.pop()


def _json_value_problem(value: Any, kind: Kind, dtype: str) -> str:
    """Why ``value`` (from JSON) cannot be an element of a tensor of this kind; empty when it can."""
    if kind == "bool":
        return "" if isinstance(value, bool) else _describe(value)
    if kind == "string":
        return "" if isinstance(value, str) else _describe(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _describe(value)
    if kind == "float":
        return ""
    if isinstance(value, float) and not value.is_integer():
        return f"{_describe(value)} (not a whole number)"
    lo, hi = _INT_RANGES[dtype]
    if not lo <= value <= hi:
        return f"{_describe(value)} (out of range for {dtype})"
    return ""


_INT_RANGES = {
    name: (int(np.iinfo(name).min), int(np.iinfo(name).max))
    for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
}


def _v2_frame(tensors: list[_Tensor], columns: list[str] | None) -> pd.DataFrame:
    if len(tensors) == 1:
        t = tensors[0]
        matrix = len(t.shape) == 2 and (t.shape[1] != 1 or (columns is not None and t.name not in columns))
        if matrix:
            k = t.shape[1]
            if columns is not None and len(columns) != k:
                raise ValidationFailed(
                    f"Input '{t.name}' has {k} columns but the signature has {len(columns)} "
                    f"({', '.join(columns)}).",
                    details={
                        "input": t.name,
                        "problem": "width",
                        "got": k,
                        "expected": len(columns),
                        "columns": columns,
                    },
                )
            return pd.DataFrame(t.values, columns=columns)
    rows = None
    frame: dict[str, np.ndarray[Any, Any]] = {}
    for t in tensors:
        if len(t.shape) > 2 or (len(t.shape) == 2 and t.shape[1] != 1):
            raise ValidationFailed(
                f"Input '{t.name}' has shape {t.shape}; with one tensor per column each must be [n] or [n, 1] "
                "(a single [n, k] tensor is read in the signature's column order).",
                details={"input": t.name, "problem": "shape", "shape": t.shape},
            )
        if rows is None:
            rows = t.shape[0]
        elif t.shape[0] != rows:
            raise ValidationFailed(
                f"Input '{t.name}' has {t.shape[0]} rows but '{tensors[0].name}' has {rows}.",
                details={"input": t.name, "problem": "shape", "shape": t.shape, "rows": rows},
            )
        frame[t.name] = t.values.reshape(-1)
    return pd.DataFrame(frame)


# --- binary and CSV bodies ---------------------------------------------------------------------------------


def _read_csv(body: bytes, signature: Signature | None) -> pd.DataFrame:
    text_columns = (
        {c.name: "str" for c in signature.inputs if c.kind in ("string", "binary")} if signature else {}
    )
    try:
        return pd.read_csv(io.BytesIO(body), dtype=text_columns or None)
    except pd.errors.EmptyDataError:
        raise BadRequest(
            "The CSV body is empty: it needs a header row.", details={"error": "empty"}
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise BadRequest(f"The body is not valid CSV: {e}", details={"error": str(e)}) from None


def _read_arrow(body: bytes, *, stream: bool) -> pd.DataFrame:
    what = "Arrow IPC stream" if stream else "Arrow IPC file"
    try:
        if stream:
            table = pa.ipc.open_stream(pa.py_buffer(body)).read_all()
        else:
            table = pa.ipc.open_file(pa.py_buffer(body)).read_all()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise BadRequest(f"The body is not a valid {what}: {e}", details={"error": str(e)}) from None
    return _to_pandas(table, what)


def _read_parquet(body: bytes) -> pd.DataFrame:
    try:
        table = pq.read_table(pa.BufferReader(body))
    except (pa.ArrowException, OSError, ValueError) as e:
        raise BadRequest(f"The body is not a valid Parquet file: {e}", details={"error": str(e)}) from None
    return _to_pandas(table, "Parquet file")


def _to_pandas(table: pa.Table, what: str) -> pd.DataFrame:
    try:
        return table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise BadRequest(f"The {what} cannot be read as a table: {e}", details={"error": str(e)}) from None


# --- signatures --------------------------------------------------------------------------------------------

# MLflow column types: kind, dtype the column is cast to, Open Inference Protocol datatype.
_MLFLOW_TYPES: dict[str, tuple[Kind, str]] = {
    "boolean": ("bool", "bool"),
    "integer": ("int", "int32"),
    "long": ("int", "int64"),
    "float": ("float", "float32"),
    "double": ("float", "float64"),
    "string": ("string", "str"),
    "binary": ("binary", "object"),
    "datetime": ("datetime", "datetime64[ns]"),
}


@dataclass(frozen=True)
class ColumnSpec:
    """One input column: its name, its type as stored, and what it is checked and cast to."""

    name: str
    type: str
    kind: Kind
    dtype: str
    required: bool = True

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol datatype of the column."""
        return _v2_datatype(self.kind, self.dtype)


@dataclass(frozen=True)
class OutputSpec:
    """One output of the model as the signature describes it (name may be absent, shape -1 per row)."""

    name: str | None
    datatype: str
    shape: tuple[int, ...] = (-1,)


@dataclass(frozen=True)
class Signature:
    """Column-based model signature, normalized from Bridgehead's or MLflow's stored form."""

    inputs: tuple[ColumnSpec, ...]
    outputs: tuple[OutputSpec, ...] = ()

    @property
    def columns(self) -> list[str]:
        return [c.name for c in self.inputs]

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> Signature | None:
        """The signature of a registered version, or None when it has no named columns to validate.

        Bridgehead's manifest: ``{"inputs": [{"name": "age", "type": "float64"}, ...]}`` (pandas dtype
        names; a name -> type object works too). MLflow's MLmodel: ``{"inputs": "<JSON list of
        {"type": "double", "name": "age", "required": true}>", "outputs": "..."}``. Tensor-based, unnamed
        or empty signatures give None."""
        if not stored or not isinstance(stored, Mapping):
            return None
        raw_inputs, mlflow_form = _decode_side(stored.get("inputs"))
        if raw_inputs is None:
            return None
        inputs = []
        for col in raw_inputs:
            if not isinstance(col, dict) or _is_tensor(col) or not isinstance(col.get("name"), str):
                return None
            type_name = col.get("type")
            kind, dtype = _column_type(type_name, mlflow_form)
            inputs.append(
                ColumnSpec(
                    col["name"], _type_label(type_name), kind, dtype, col.get("required", True) is not False
                )
            )
        if not inputs:
            return None
        return cls(tuple(inputs), _outputs(stored.get("outputs")))


def _decode_side(raw: Any) -> tuple[list[Any] | None, bool]:
    """A signature side as a list of specs, and whether it is MLflow's (JSON string) form."""
    mlflow_form = isinstance(raw, str)
    if mlflow_form:
        try:
            raw = json.loads(raw)
        except ValueError:
            return None, True
    if isinstance(raw, dict):
        if _is_tensor(raw):
            return [raw], mlflow_form
        return [{"name": k, "type": v} for k, v in raw.items()], mlflow_form
    if isinstance(raw, list):
        return raw, mlflow_form
    return None, mlflow_form


def _is_tensor(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") == "tensor" or "tensor-spec" in spec or "dtype" in spec


def _type_label(type_name: Any) -> str:
    return type_name if isinstance(type_name, str) else json.dumps(type_name, sort_keys=True)


def _column_type(type_name: Any, mlflow_form: bool) -> tuple[Kind, str]:
    """(kind, dtype) of a stored column type. MLflow names first for its form; pandas dtype names first for
    Bridgehead's (where "float" is float64, as pandas reads it), falling back to MLflow's names. Composite
    MLflow types (array, object, map, any) and unknown names are not type-checked."""
    if not isinstance(type_name, str):
        return "any", "object"
    if mlflow_form and type_name in _MLFLOW_TYPES:
        return _MLFLOW_TYPES[type_name]
    try:
        dtype = pd.api.types.pandas_dtype(type_name)
    except (TypeError, ValueError):
        return _MLFLOW_TYPES.get(type_name, ("any", "object"))
    if pd.api.types.is_bool_dtype(dtype):
        return "bool", "bool"
    if pd.api.types.is_signed_integer_dtype(dtype):
        return "int", _numpy_name(dtype)
    if pd.api.types.is_unsigned_integer_dtype(dtype):
        return "uint", _numpy_name(dtype)
    if pd.api.types.is_float_dtype(dtype):
        return "float", _numpy_name(dtype)
    if isinstance(dtype, pd.StringDtype):
        return "string", "str"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime", str(dtype)
    return "any", "object"  # object, category, ...: presence only


def _numpy_name(dtype: Any) -> str:
    """numpy name of a numeric pandas dtype (Int64 -> int64, int32[pyarrow] -> int32)."""
    return str(np.dtype(getattr(dtype, "numpy_dtype", dtype)))


def _outputs(raw: Any) -> tuple[OutputSpec, ...]:
    specs, mlflow_form = _decode_side(raw)
    outputs = []
    for spec in specs or []:
        if not isinstance(spec, dict):
            continue
        name = spec.get("name") if isinstance(spec.get("name"), str) else None
        if _is_tensor(spec):
            tensor = spec.get("tensor-spec", spec)
            shape = tensor.get("shape") if isinstance(tensor, dict) else None
            dims = (
                tuple(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else (-1,)
            )
            outputs.append(
                OutputSpec(
                    name, _numpy_datatype(tensor.get("dtype") if isinstance(tensor, dict) else None), dims
                )
            )
        else:
            kind, dtype = _column_type(spec.get("type"), mlflow_form)
            outputs.append(OutputSpec(name, _v2_datatype(kind, dtype)))
    return tuple(outputs)


def _v2_datatype(kind: Kind, dtype: str) -> str:
    if kind == "bool":
        return "BOOL"
    if kind in ("int", "uint", "float"):
        return _numpy_datatype(dtype)
    return "BYTES"


def _numpy_datatype(dtype: Any) -> str:
    try:
        d = np.dtype(dtype)
    except TypeError:
        return "BYTES"
    bits = d.itemsize * 8
    return {"b": "BOOL", "i": f"INT{bits}", "u": f"UINT{bits}", "f": f"FP{bits}"}.get(d.kind, "BYTES")


# --- frame validation --------------------------------------------------------------------------------------


def validate_frame(
    frame: pd.DataFrame, signature: Signature | None, *, allow_nan: bool = False
) -> pd.DataFrame:
    """The frame checked against the signature, in its column order and cast to its types.

    Every missing (required), unexpected, mistyped or null-holding column is found; ValidationFailed names
    the first in its message and details (column, problem, and expected/got/row where they apply) and
    lists all of them in ``details["columns"]`` and ``details["problems"]``. Ints are accepted in float
    columns and whole floats in int columns. Nulls are allowed with ``allow_nan`` and in optional columns;
    an int column holding nulls stays float64 and a bool column becomes pandas' nullable boolean. Without
    a signature the frame is returned as is."""
    if signature is None:
        return frame
    fast = _all_floats(frame, signature, allow_nan)
    if fast is not None:
        return fast
    problems: list[dict[str, Any]] = []
    names = [str(c) for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    for name in duplicated:
        problems.append(_problem(name, "duplicate", f"Column '{name}' is given more than once"))
    by_name = {str(c): c for c in frame.columns}
    out: dict[str, pd.Series] = {}
    for spec in signature.inputs:
        if spec.name in duplicated:
            continue
        if spec.name not in by_name:
            if spec.required:
                problems.append(
                    _problem(spec.name, "missing", f"Column '{spec.name}' is missing", expected=spec.type)
                )
            continue
        series, problem = _check_column(frame[by_name[spec.name]], spec, allow_nan or not spec.required)
        if problem:
            problems.append(problem)
        else:
            out[spec.name] = series
    expected = set(signature.columns)
    for name in names:
        if name not in expected and name not in duplicated:
            problems.append(
                _problem(
                    name, "unexpected", f"Column '{name}' is unexpected: the signature has no such column"
                )
            )
    if problems:
        first = problems[0]
        message = first.pop("message")
        for p in problems[1:]:
            p.pop("message")
        if len(problems) > 1:
            others = ", ".join(f"'{p['column']}' ({p['problem']})" for p in problems[1:])
            message += f" (and {len(problems) - 1} more: {others})"
        raise ValidationFailed(
            message, details={**first, "columns": [p["column"] for p in problems], "problems": problems}
        )
    return pd.DataFrame(out, index=frame.index)


def _all_floats(frame: pd.DataFrame, signature: Signature, allow_nan: bool) -> pd.DataFrame | None:
    """The common case, checked in microseconds: every column is a required float64 column of the signature,
    the frame has exactly those columns, all numeric (not bool) and, unless allowed, without NaN. Anything
    else returns None and goes through the full check, which also finds and names the problems."""
    columns = signature.columns
    names = frame.columns.tolist()
    if len(names) != len(columns) or set(names) != set(columns):
        return None
    if any(spec.kind != "float" or spec.dtype != "float64" or not spec.required for spec in signature.inputs):
        return None
    # One array for all columns: numpy's common type of the columns says whether all are numbers (bool, text,
    # dates or pandas' extension types make it something else), without building the frame's dtypes.
    values = frame.to_numpy()
    if values.dtype.kind not in "fiu":
        return None
    if names == columns and is_float_frame(frame):
        # Built by `_numeric_records` (float64 columns, here in the signature's order) or already checked
        # here: nothing to convert or copy.
        return frame if allow_nan or not np.isnan(values).any() else None
    if values.dtype != np.float64:
        values = values.astype(np.float64)
    if not allow_nan and np.isnan(values).any():
        return None
    if names != columns:
        values = values[:, [names.index(c) for c in columns]]
    return pd.DataFrame(values, columns=column_index(tuple(columns)), index=frame.index, copy=False)


def _problem(column: str, problem: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"column": column, "problem": problem, "message": message, **extra}


def _check_column(s: pd.Series, spec: ColumnSpec, nulls_ok: bool) -> tuple[pd.Series, dict[str, Any] | None]:
    null = np.asarray(s.isna(), dtype=bool)
    values = s[~null]
    bad = _first_bad_value(values, spec)
    if bad is not None:
        pos, got = bad
        row = int(np.flatnonzero(~null)[pos])
        return s, _problem(
            spec.name,
            "wrong_type",
            f"Column '{spec.name}' expects {spec.type}, got {got} at row {row}",
            expected=spec.type,
            got=got,
            row=row,
        )
    if null.any() and not nulls_ok:
        row = int(np.argmax(null))
        return s, _problem(
            spec.name, "nan", f"Column '{spec.name}' has a missing value (NaN or null) at row {row}", row=row
        )
    try:
        return _cast(s, spec, has_nulls=bool(null.any())), None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. dates that parse but do not fit the unit
        return s, _problem(
            spec.name,
            "wrong_type",
            f"Column '{spec.name}' cannot be converted to {spec.type}: {e}",
            expected=spec.type,
            got=str(s.dtype),
        )


def _first_bad_value(values: pd.Series, spec: ColumnSpec) -> tuple[int, str] | None:
    """Position (among the non-null values) and description of the first value the column cannot hold."""
    kind = spec.kind
    if kind == "any" or len(values) == 0:
        return None
    dtype = values.dtype
    if kind in ("int", "uint", "float"):
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            return _numeric_range_problem(values.to_numpy(), spec)
        if not pd.api.types.is_object_dtype(dtype):
            return 0, _describe(values.iloc[0])
        for pos, v in enumerate(values):
            if isinstance(v, bool | np.bool_) or not isinstance(v, int | float | np.integer | np.floating):
                return pos, _describe(v)
        return _numeric_range_problem(values.to_numpy(), spec)
    if kind == "bool":
        if pd.api.types.is_bool_dtype(dtype):
            return None
        return next(
            ((p, _describe(v)) for p, v in enumerate(values) if not isinstance(v, bool | np.bool_)), None
        )
    if kind == "string":
        if isinstance(dtype, pd.StringDtype):
            return None
        return next(((p, _describe(v)) for p, v in enumerate(values) if not isinstance(v, str)), None)
    if kind == "binary":
        for pos, v in enumerate(values):
            if isinstance(v, bytes):
                continue
            if not isinstance(v, str):
                return pos, _describe(v)
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                return pos, f"{_describe(v)} (not base64)"
        return None
    # datetime
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return None
    for pos, v in enumerate(values):
        if isinstance(v, dt.datetime | dt.date | np.datetime64):
            continue
        if not isinstance(v, str):
            return pos, _describe(v)
        try:
            pd.to_datetime(v, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            return pos, f"{_describe(v)} (not an ISO 8601 date)"
    return None


def _numeric_range_problem(array: np.ndarray[Any, Any], spec: ColumnSpec) -> tuple[int, str] | None:
    if spec.kind == "float":
        return None
    floats = array.astype(np.float64) if array.dtype == object else array
    if floats.dtype.kind == "f":
        fraction = ~np.isfinite(floats) | (np.mod(floats, 1) != 0)
        if fraction.any():
            pos = int(np.argmax(fraction))
            return pos, f"{_describe(array[pos])} (not a whole number)"
    lo, hi = _INT_RANGES[spec.dtype]
    for pos, v in enumerate(array.tolist()):
        if not lo <= v <= hi:
            return pos, f"{_describe(array[pos])} (out of range for {spec.dtype})"
    return None


def _cast(s: pd.Series, spec: ColumnSpec, *, has_nulls: bool) -> pd.Series:
    kind = spec.kind
    if kind == "any":
        return s
    if kind in ("int", "uint"):
        return s.astype("float64") if has_nulls else s.astype(spec.dtype)
    if kind == "float":
        return s.astype(spec.dtype)
    if kind == "bool":
        return s.astype("boolean") if has_nulls else s.astype(bool)
    if kind == "string":
        return s if isinstance(s.dtype, pd.StringDtype) else s.astype("str")
    if kind == "binary":
        return s.map(lambda v: base64.b64decode(v) if isinstance(v, str) else v)
    parsed = s if pd.api.types.is_datetime64_any_dtype(s.dtype) else pd.to_datetime(s, format="ISO8601")
    return parsed.astype(spec.dtype)


def _describe(value: Any) -> str:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_type_name(value)} {text}"


def _type_name(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "bool"
    if isinstance(value, int | np.integer):
        return "int"
    if isinstance(value, float | np.floating):
        return "float"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# --- responses ---------------------------------------------------------------------------------------------


def mlflow_response(predictions: Any) -> dict[str, Any]:
    """``{"predictions": [...]}`` as MLflow's scoring server writes it: arrays as (nested) lists, a
    DataFrame or Series as records. Non-finite floats become null (strict JSON)."""
    if isinstance(predictions, pd.DataFrame):
        body: Any = predictions.to_dict(orient="records")
    elif isinstance(predictions, pd.Series):
        body = pd.DataFrame(predictions).to_dict(orient="records")
    else:
        body = predictions
    return {"predictions": _jsonable(body)}


def v2_response(
    *,
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    predictions: Any,
    probabilities: Any = None,
) -> dict[str, Any]:
    """An Open Inference Protocol response: ``predict`` ([n], or [n, k] for several outputs) and, when
    probabilities are given, ``predict_proba`` ([n, k], FP64). Data is flattened in row-major order."""
    values = _as_array(predictions)
    datatype, data = _tensor_data(values)
    outputs: list[dict[str, Any]] = [
        {"name": "predict", "shape": list(values.shape), "datatype": datatype, "data": data}
    ]
    if probabilities is not None:
        proba = np.asarray(probabilities, dtype=np.float64)
        if proba.ndim == 1:
            proba = proba.reshape(-1, 1)
        outputs.append(
            {
                "name": "predict_proba",
                "shape": list(proba.shape),
                "datatype": "FP64",
                "data": _jsonable(proba.reshape(-1).tolist()),
            }
        )
    response: dict[str, Any] = {"model_name": model_name}
    if model_version is not None:
        response["model_version"] = model_version
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = outputs
    return response


def _as_array(predictions: Any) -> np.ndarray[Any, Any]:
    if isinstance(predictions, pd.DataFrame):
        values = np.asarray(predictions.to_numpy())
        return values.reshape(-1) if values.shape[1] == 1 else values
    return np.asarray(predictions.to_numpy() if isinstance(predictions, pd.Series) else predictions)


def _tensor_data(values: np.ndarray[Any, Any]) -> tuple[str, list[Any]]:
    flat = values.reshape(-1)
    if values.dtype.kind in "biuf":
        return _numpy_datatype(values.dtype), _jsonable(flat.tolist())
    if values.dtype.kind == "M":
        return "BYTES", [None if pd.isna(v) else pd.Timestamp(v).isoformat() for v in flat]
    items = [v.item() if isinstance(v, np.generic) else v for v in flat.tolist()]
    if items and all(isinstance(v, bool) for v in items):
        return "BOOL", items
    if items and all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        return "INT64", items
    if items and all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        return "FP64", _jsonable([float(v) for v in items])
    return "BYTES", [v if isinstance(v, str) else _bytes_text(v) for v in items]


def _bytes_text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    return str(v)


def _jsonable(obj: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, NaN/inf as null, bytes base64 (as MLflow)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, str | bool | int):
        return obj
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, bytes | bytearray):
        return base64.encodebytes(bytes(obj)).decode("ascii")
    if isinstance(obj, pd.Timestamp | dt.date | dt.datetime | dt.time):
        return obj.isoformat()
    if obj is pd.NaT or obj is pd.NA:
        return None
    return obj


# --- model metadata ----------------------------------------------------------------------------------------


def v2_metadata(
    name: str,
    versions: Sequence[str],
    signature: Signature | Mapping[str, Any] | None,
    *,
    probabilities: bool = False,
) -> dict[str, Any]:
    """The body of ``GET /v2/models/{name}``: inputs from the signature's columns (or its single tensor),
    outputs from the signature's outputs (``predict``), plus ``predict_proba`` when the model has one.
    What the signature does not say is left out rather than guessed."""
    stored = signature if isinstance(signature, Mapping) else None
    parsed = signature if isinstance(signature, Signature) else Signature.from_stored(stored)
    if parsed is not None:
        inputs = [{"name": c.name, "datatype": c.datatype, "shape": [-1]} for c in parsed.inputs]
        outputs_spec = parsed.outputs
    else:
        inputs = _tensor_inputs(stored)
        outputs_spec = _outputs(stored.get("outputs")) if stored else ()
    outputs: list[dict[str, Any]] = []
    if len(outputs_spec) == 1:
        outputs.append(
            {"name": "predict", "datatype": outputs_spec[0].datatype, "shape": list(outputs_spec[0].shape)}
        )
    elif outputs_spec:
        types = {o.datatype for o in outputs_spec}
        outputs.append(
            {
                "name": "predict",
                "datatype": types.pop() if len(types) == 1 else "BYTES",
                "shape": [-1, len(outputs_spec)],
            }
        )
    if probabilities:
        outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, -1]})
    return {
        "name": name,
        "versions": list(versions),
        "platform": "bridgehead",
        "inputs": inputs,
        "outputs": outputs,
    }


def _tensor_inputs(stored: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    specs, _ = _decode_side(stored.get("inputs")) if stored else (None, False)
    inputs = []
    for i, spec in enumerate(specs or []):
        if not isinstance(spec, dict) or not _is_tensor(spec):
            return []
        tensor = spec.get("tensor-spec", spec)
        if not isinstance(tensor, dict):
            return []
        shape = tensor.get("shape")
        dims = shape if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else [-1]
        name = (
            spec.get("name") if isinstance(spec.get("name"), str) else ("input" if i == 0 else f"input-{i}")
        )
        inputs.append({"name": name, "datatype": _numpy_datatype(tensor.get("dtype")), "shape": dims})
    return inputs

"""Request parsing, signature validation and response shapes, on the real request shapes.

MLflow bodies are built the way MLflow's own client helpers build them and parsed side by side with MLflow's
scoring server (``mlflow.pyfunc.scoring_server.invocations`` with a stand-in model that keeps what it was
given). Open Inference Protocol bodies are written out exactly as the KServe v2 REST spec shows them."""

from __future__ import annotations

import base64
import io
import json
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from bridgehead.errors import BadRequest, BridgeheadError, PayloadTooLarge, ValidationFailed
from bridgehead.serving.protocols import (
    ACCEPTED_CONTENT_TYPES,
    ColumnSpec,
    OutputSpec,
    Signature,
    is_float_frame,
    mlflow_response,
    parse_body,
    v2_metadata,
    v2_response,
    validate_frame,
)

JSON_CT = "application/json"
COLUMNS = ["age", "n", "name"]


def body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


@pytest.fixture(scope="module")
def people() -> pd.DataFrame:
    return pd.DataFrame({"age": [31.5, 47.0, 22.25], "n": [1, 2, 3], "name": ["ann", "bo", "cy"]})


@pytest.fixture(scope="module")
def mlflow_signature(people: pd.DataFrame) -> dict[str, Any]:
    """The signature as MLflow stores it in MLmodel (sides as JSON strings)."""
    from mlflow.models import infer_signature

    with warnings.catch_warnings():
        # MLflow's advice about integer columns and missing values; as an error it makes inference give up.
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        stored: dict[str, Any] = infer_signature(people, np.array([0, 1, 1])).to_dict()
    assert "double" in stored["inputs"]
    return stored


# --- MLflow's scoring server, for side-by-side parsing --------------------------------------------------------


class _Metadata:
    def _is_signature_from_type_hint(self) -> bool:
        return False

    def get_params_schema(self) -> None:
        return None


class _KeepInput:
    """Stands in for a pyfunc model: keeps what the scoring server passes to predict."""

    metadata = _Metadata()

    def __init__(self) -> None:
        self.data: Any = None
        self.params: Any = None

    def predict(self, data: Any, params: Any = None) -> np.ndarray[Any, Any]:
        self.data, self.params = data, params
        return np.zeros(1)


def mlflow_parses(raw: bytes, content_type: str = JSON_CT, schema: Any = None) -> Any:
    from mlflow.pyfunc import scoring_server

    model = _KeepInput()
    result = scoring_server.invocations(raw, content_type, model, schema)
    assert result.status == 200, result.response
    return model.data


def mlflow_refuses(raw: bytes, content_type: str = JSON_CT) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    try:
        result = scoring_server.invocations(raw, content_type, _KeepInput(), None)
    except MlflowException as e:
        return e.message
    assert result.status != 200, "MLflow accepted the body"
    return result.response


def as_frame(mlflow_data: Any, columns: list[str] | None = None) -> pd.DataFrame:
    """What pyfunc's schema enforcement makes of the parsed input: dicts of arrays and arrays become frames."""
    if isinstance(mlflow_data, pd.DataFrame):
        return mlflow_data
    return pd.DataFrame(mlflow_data, columns=columns)


# --- content types and malformed bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, protocol",
    [("text/plain", "native"), ("application/xml", "mlflow"), ("text/csv", "v2"), ("", "native")],
)
def test_unaccepted_content_type(content_type: str, protocol: Any) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(content_type, b"[]", protocol, None)
    assert info.value.details["content_type"] == content_type
    assert info.value.details["accepted"] == list(ACCEPTED_CONTENT_TYPES[protocol])
    for accepted in ACCEPTED_CONTENT_TYPES[protocol]:
        assert accepted in info.value.message


def test_content_type_parameters() -> None:
    doc = body([{"a": 1}])
    assert len(parse_body("Application/JSON; charset=UTF-8", doc, "native", None).frame) == 1
    with pytest.raises(BadRequest, match="UTF-8") as info:
        parse_body("application/json; charset=latin-1", doc, "native", None)
    assert info.value.details["content_type"] == "application/json; charset=latin-1"


@pytest.mark.parametrize("protocol", ["native", "mlflow", "v2"])
def test_malformed_json_reports_the_position(protocol: Any) -> None:
    raw = b'{"records": [\n  {"a": 1},\n  {"a": 2,}\n]}'
    with pytest.raises(BadRequest) as info:
        parse_body(JSON_CT, raw, protocol, None)
    d = info.value.details
    assert (d["line"], d["col"]) == (3, 11)
    assert raw[d["position"] : d["position"] + 1] == b"}"
    assert "line 3 column 11" in info.value.message


def test_absurdly_nested_json() -> None:
    with pytest.raises(BadRequest, match="nested too deeply"):
        parse_body(JSON_CT, b"[" * 100_000 + b"]" * 100_000, "v2", None)


def test_body_that_is_not_utf8() -> None:
    with pytest.raises(BadRequest, match="UTF-8") as info:
        parse_body(JSON_CT, b'[{"a": "\xff"}]', "native", None)
    assert info.value.details["position"] == 8


# --- native --------------------------------------------------------------------------------------------------


def test_native_records_keys_and_id() -> None:
    doc = {
        "records": [{"age": 30, "name": "a"}, {"age": 41.5, "name": "b"}],
        "keys": ["user-1", None],
        "id": "r-9",
    }
    parsed = parse_body(JSON_CT, body(doc), "native", None)
    assert parsed.frame.to_dict("records") == doc["records"]
    assert parsed.keys == ["user-1", None]
    assert parsed.request_id == "r-9"


@pytest.mark.parametrize(
    "records",
    [
        [{"a": 1.5, "b": 2.0}, {"a": 3.0, "b": 4.25}],  # all floats: the fast path
        [{"a": 1.5, "b": 2.0}, {"b": 4.25, "a": 3.0}],  # keys in another order: matched by name
        [{"a": 1.5}],  # one column
        [{"a": 1.5, "b": 2.0}, {"a": 3.0}],  # a key missing
        [{"a": 1.5}, {"a": 3.0, "c": 1.0}],  # an extra key
        [{"a": 1.5, "b": 2}, {"a": 3.0, "b": 4.0}],  # an int among floats
        [{"a": 1.5, "b": True}, {"a": 3.0, "b": 4.0}],  # a bool among floats
        [{"a": 1.5, "b": None}, {"a": 3.0, "b": 4.0}],  # a null
        [{"a": 1.5, "b": "x"}, {"a": 3.0, "b": 4.0}],  # text
    ],
)
def test_native_records_parse_as_pandas_from_records(records: list[dict[str, Any]]) -> None:
    """Whatever path a body takes (all-float records are built directly, anything else by pandas), the frame
    is the one pandas builds from the same records, column types included."""
    frame = parse_body(JSON_CT, body({"records": records}), "native", None).frame
    expected = pd.DataFrame.from_records(records)
    all_floats = all(isinstance(v, float) for r in records for v in r.values())
    same_keys = all(r.keys() == records[0].keys() for r in records)
    # The fast path takes exactly the all-float records with the same keys, and says so.
    assert is_float_frame(frame) == (all_floats and same_keys)
    assert frame.columns.tolist() == expected.columns.tolist()
    for column in expected.columns:
        assert frame[column].dtype == expected[column].dtype, column
        assert frame[column].tolist() == pytest.approx(expected[column].tolist(), nan_ok=True), column


def test_nan_literals_are_still_read_as_python_reads_them_and_lone_surrogates_are_refused() -> None:
    # orjson refuses both; Python's parser accepts them, so such a body takes that way.
    parsed = parse_body(JSON_CT, b'{"records": [{"a": NaN, "b": 1.0}]}', "native", None)
    assert np.isnan(parsed.frame["a"].iloc[0])
    # A lone surrogate is valid JSON but no text a frame can hold: a clear 400, not a server error.
    with pytest.raises(BadRequest, match="records"):
        parse_body(JSON_CT, b'{"records": [{"a": 1.0, "b": "\\ud800"}]}', "native", None)


def test_native_bare_list() -> None:
    parsed = parse_body(JSON_CT, body([{"x": 1}, {"x": 2}]), "native", None)
    assert parsed.frame["x"].tolist() == [1, 2]
    assert parsed.keys is None and parsed.request_id is None


@pytest.mark.parametrize(
    "doc, error, field",
    [
        ({"records": [{"a": 1}], "keys": ["k", "l"]}, ValidationFailed, "keys"),
        ({"records": [{"a": 1}], "keys": "k"}, ValidationFailed, "keys"),
        ({"records": [{"a": 1}, {"a": 2}], "keys": ["k", 7]}, ValidationFailed, "keys[1]"),
        ({"records": {"a": [1]}}, BadRequest, "records"),
        ({"records": [{"a": 1}, [2]]}, BadRequest, "records[1]"),
        ({"records": [{"a": 1}], "id": 5}, BadRequest, "id"),
    ],
)
def test_native_refusals(doc: Any, error: type[BridgeheadError], field: str) -> None:
    with pytest.raises(error) as info:
        parse_body(JSON_CT, body(doc), "native", None)
    assert info.value.details["field"] == field


def test_native_unknown_fields_and_missing_records() -> None:
    with pytest.raises(BadRequest, match="'rows'") as info:
        parse_body(JSON_CT, body({"rows": [{"a": 1}]}), "native", None)
    assert info.value.details["accepted"] == ["id", "keys", "records"]
    with pytest.raises(BadRequest, match="no records"):
        parse_body(JSON_CT, body({"keys": []}), "native", None)
    with pytest.raises(BadRequest, match="list of records"):
        parse_body(JSON_CT, body("hello"), "native", None)


# --- MLflow scoring protocol ---------------------------------------------------------------------------------


def mlflow_bodies(df: pd.DataFrame) -> dict[str, bytes]:
    """Each JSON shape as MLflow documents and builds it (mlflow.models.convert_input_example_to_serving_input
    and proto_json_utils.dump_input_data write dataframe_split for frames and 'inputs' for dicts)."""
    from mlflow.models import convert_input_example_to_serving_input
    from mlflow.utils.proto_json_utils import dump_input_data

    columns = {c: df[c].tolist() for c in df.columns}
    with warnings.catch_warnings():
        # MLflow 3.17 compares the columns with a range(), which pandas 3 deprecates.
        warnings.filterwarnings("ignore", "Operation with range is deprecated", pd.errors.Pandas4Warning)
        split_example = convert_input_example_to_serving_input(df)
    return {
        "dataframe_split": split_example.encode(),
        "dataframe_split (dump_input_data)": dump_input_data(df).encode(),
        "dataframe_split with params": dump_input_data(df, params={"temperature": 0.5}).encode(),
        "dataframe_records": body({"dataframe_records": df.to_dict(orient="records")}),
        "instances (records)": body({"instances": df.to_dict(orient="records")}),
        "inputs (columns)": convert_input_example_to_serving_input(columns).encode(),
        "inputs (columns) with params": body({"inputs": columns, "params": {"k": 1}}),
    }


@pytest.mark.parametrize(
    "shape",
    [
        "dataframe_split",
        "dataframe_split (dump_input_data)",
        "dataframe_split with params",
        "dataframe_records",
        "instances (records)",
        "inputs (columns)",
        "inputs (columns) with params",
    ],
)
def test_mlflow_json_shapes_parse_as_mlflow_does(shape: str, people: pd.DataFrame) -> None:
    raw = mlflow_bodies(people)[shape]
    ours = parse_body(JSON_CT, raw, "mlflow", None).frame
    theirs = as_frame(mlflow_parses(raw))
    # MLflow keeps strings from 'instances'/'inputs' as numpy unicode arrays; the values are the same.
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=shape.startswith("dataframe"))
    pd.testing.assert_frame_equal(ours, people, check_dtype=False)
    assert list(ours.dtypes[:2]) == [np.float64, np.int64]


def test_mlflow_with_schema_casts_like_mlflow(people: pd.DataFrame, mlflow_signature: dict[str, Any]) -> None:
    """With the model's schema MLflow casts while parsing; validate_frame ends at the same frame."""
    from mlflow.models.signature import ModelSignature

    schema = ModelSignature.from_dict(mlflow_signature).inputs
    raw = body(
        {"dataframe_records": [{"age": 31, "n": 1.0, "name": "ann"}, {"age": 47, "n": 2.0, "name": "bo"}]}
    )
    theirs = mlflow_parses(raw, schema=schema)
    ours = validate_frame(
        parse_body(JSON_CT, raw, "mlflow", None).frame, Signature.from_stored(mlflow_signature)
    )
    pd.testing.assert_frame_equal(ours, theirs, check_dtype=False)
    assert ours.dtypes.to_dict() == theirs.dtypes.to_dict() | {"name": ours.dtypes["name"]}
    assert list(ours.dtypes[:2]) == [np.float64, np.int64]


def test_mlflow_dataframe_split_keeps_the_index() -> None:
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    doc = {"dataframe_split": {"columns": ["a", "b"], "index": [10, 20], "data": [[1, "x"], [2, "y"]]}}
    ours = parse_body(JSON_CT, body(doc), "mlflow", None).frame
    pd.testing.assert_frame_equal(ours, infer_and_parse_data(doc))
    assert list(ours.index) == [10, 20]


def test_mlflow_rows_follow_the_signature_order() -> None:
    """'instances'/'inputs' as lists of rows take their column names from the signature."""
    rows = [[31.5, 1, 0.5], [47.0, 2, 1.5]]
    cols = ["age", "n", "score"]
    for key in ("instances", "inputs"):
        raw = body({key: rows})
        ours = parse_body(JSON_CT, raw, "mlflow", cols).frame
        assert list(ours.columns) == cols and ours.to_numpy().tolist() == rows
        # MLflow hands the model the same array; pyfunc names its columns in the schema's order.
        pd.testing.assert_frame_equal(ours, as_frame(mlflow_parses(raw), cols), check_dtype=False)
        assert list(parse_body(JSON_CT, raw, "mlflow", None).frame.columns) == [0, 1, 2]
    with pytest.raises(ValidationFailed, match="3 values but the signature has 2 columns") as info:
        parse_body(JSON_CT, body({"inputs": rows}), "mlflow", ["age", "n"])
    assert info.value.details["columns"] == ["age", "n"]


def test_mlflow_list_of_values_is_the_single_column() -> None:
    raw = body({"inputs": [1.5, 2.5, 3.5]})
    assert parse_body(JSON_CT, raw, "mlflow", ["x"]).frame.to_dict("list") == {"x": [1.5, 2.5, 3.5]}
    assert parse_body(JSON_CT, raw, "mlflow", None).frame[0].tolist() == [1.5, 2.5, 3.5]


def test_mlflow_inputs_of_scalars_are_one_row() -> None:
    parsed = parse_body(JSON_CT, body({"inputs": {"age": 31.5, "name": "ann"}}), "mlflow", None)
    assert parsed.frame.to_dict("records") == [{"age": 31.5, "name": "ann"}]


def test_mlflow_columns_of_different_lengths_name_the_column() -> None:
    with pytest.raises(ValidationFailed, match="Column 'name'") as info:
        parse_body(JSON_CT, body({"inputs": {"age": [1, 2], "name": ["a"]}}), "mlflow", None)
    assert info.value.details["column"] == "name"


@pytest.mark.parametrize(
    "doc, words",
    [
        (
            {"dataframe_split": {"columns": ["a"], "data": [[1]]}, "dataframe_records": [{"a": 1}]},
            "exactly one",
        ),
        ({"data": [[1]]}, "exactly one"),
        ({}, "exactly one"),
        ([{"a": 1}], "JSON object"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1]], "dtype": "x"}}, "'dtype'"),
        ({"dataframe_split": [[1]]}, "must be an object"),
        ({"dataframe_records": {"a": [1]}}, "list of records"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}, "not a valid table"),
        ({"inputs": "text"}, "must be a list"),
    ],
)
def test_mlflow_refusals_match_mlflow(doc: Any, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(JSON_CT, body(doc), "mlflow", None)
    assert words in info.value.message
    if "exactly one" in words or "JSON object" in words:
        for key in ("dataframe_split", "dataframe_records", "instances", "inputs"):
            assert key in info.value.message
        assert info.value.details["accepted"] == [
            "dataframe_split",
            "dataframe_records",
            "instances",
            "inputs",
        ]
    if not (isinstance(doc, dict) and "inputs" in doc):  # MLflow passes a string 'inputs' on to the model
        mlflow_refuses(body(doc))


def test_mlflow_csv_parses_as_mlflow_does(people: pd.DataFrame) -> None:
    raw = people.to_csv(index=False).encode()
    ours = parse_body("text/csv", raw, "mlflow", None).frame
    pd.testing.assert_frame_equal(ours, mlflow_parses(raw, "text/csv"))
    pd.testing.assert_frame_equal(ours, people)


def test_csv_reads_signature_string_columns_as_text() -> None:
    sig = Signature.from_stored({"inputs": [{"name": "zip", "type": "str"}, {"name": "n", "type": "int64"}]})
    raw = b"zip,n\n02134,1\n10001,2\n"
    assert parse_body("text/csv", raw, "native", None).frame["zip"].tolist() == [2134, 10001]
    parsed = parse_body("text/csv", raw, "native", None, signature=sig)
    assert parsed.frame["zip"].tolist() == ["02134", "10001"]
    assert validate_frame(parsed.frame, sig)["n"].tolist() == [1, 2]


def test_mlflow_parquet_parses_as_mlflow_does(people: pd.DataFrame) -> None:
    raw = people.to_parquet()
    ours = parse_body("application/vnd.apache.parquet", raw, "mlflow", None).frame
    pd.testing.assert_frame_equal(ours, mlflow_parses(raw, "application/vnd.apache.parquet"))


# --- Open Inference Protocol v2 ------------------------------------------------------------------------------


def test_v2_one_tensor_per_column() -> None:
    """The request of the KServe v2 spec's example, with one named tensor per column."""
    doc = {
        "id": "42",
        "inputs": [
            {"name": "age", "shape": [3], "datatype": "FP32", "data": [31.5, 47, 22.25]},
            {"name": "n", "shape": [3, 1], "datatype": "INT64", "data": [[1], [2], [3]]},
            {"name": "name", "shape": [3], "datatype": "BYTES", "data": ["ann", "bo", "cy"]},
            {"name": "member", "shape": [3], "datatype": "BOOL", "data": [True, False, True]},
        ],
        "outputs": [{"name": "predict"}],
    }
    parsed = parse_body(JSON_CT, body(doc), "v2", None)
    assert parsed.request_id == "42"
    assert parsed.frame.to_dict("list") == {
        "age": [31.5, 47.0, 22.25],
        "n": [1, 2, 3],
        "name": ["ann", "bo", "cy"],
        "member": [True, False, True],
    }
    assert [str(t) for t in parsed.frame.dtypes] == ["float32", "int64", "str", "bool"]


@pytest.mark.parametrize("nested", [False, True])
def test_v2_single_matrix_follows_the_signature(nested: bool) -> None:
    data: list[Any] = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    doc = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [2, 4],
                "datatype": "FP64",
                "data": data if nested else [v for row in data for v in row],
            }
        ]
    }
    cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = parse_body(JSON_CT, body(doc), "v2", cols).frame
    assert list(frame.columns) == cols and frame.to_numpy().tolist() == data
    # Without a column signature (a tensor model), the columns are numbered.
    assert list(parse_body(JSON_CT, body(doc), "v2", None).frame.columns) == [0, 1, 2, 3]
    with pytest.raises(
        ValidationFailed, match="Input 'input-0' has 4 columns but the signature has 3"
    ) as info:
        parse_body(JSON_CT, body(doc), "v2", cols[:3])
    assert info.value.details["input"] == "input-0"


def test_v2_single_n_by_1_tensor() -> None:
    doc = {"inputs": [{"name": "x", "shape": [2, 1], "datatype": "FP32", "data": [1, 2]}]}
    assert list(parse_body(JSON_CT, body(doc), "v2", ["x", "y"]).frame.columns) == ["x"]  # a column
    assert list(parse_body(JSON_CT, body(doc), "v2", ["age"]).frame.columns) == ["age"]  # the only column


def _tensor(
    name: str = "age", shape: Any = (2,), datatype: str = "FP64", data: Any = (1.0, 2.0)
) -> dict[str, Any]:
    return {"name": name, "shape": list(shape), "datatype": datatype, "data": list(data)}


@pytest.mark.parametrize(
    "inputs, words",
    [
        ([_tensor(data=[1.0, 2.0, 3.0])], "has 3 values but its shape [2] needs 2"),
        ([_tensor(shape=[2, 2], data=[[1.0, 2.0], [3.0]])], "has 3 values but its shape [2, 2] needs 4"),
        ([_tensor(datatype="FP32", data=[1.0, "2"])], "is FP32 but value 1 is string '2'"),
        ([_tensor(datatype="FP64", data=[1.0, True])], "is FP64 but value 1 is bool True"),
        ([_tensor(datatype="INT64", data=[1, 1.5])], "not a whole number"),
        ([_tensor(datatype="INT8", data=[1, 300])], "out of range for int8"),
        ([_tensor(datatype="UINT16", data=[-1, 3])], "out of range for uint16"),
        ([_tensor(datatype="BOOL", data=[True, 1])], "is BOOL but value 1 is int 1"),
        ([_tensor(datatype="BYTES", data=["a", 1])], "is BYTES but value 1 is int 1"),
        ([_tensor(datatype="FP8")], "unsupported datatype 'FP8'"),
        ([_tensor(shape=[2, 2, 1], data=[1.0, 2.0, 3.0, 4.0]), _tensor("n")], "[n] or [n, 1]"),
        ([_tensor("n"), _tensor(shape=[3], data=[1.0, 2.0, 3.0])], "has 3 rows but 'n' has 2"),
        ([_tensor(shape=[-1])], "invalid shape"),
        ([_tensor(), _tensor()], "given twice"),
    ],
)
def test_v2_refusals_name_the_input(inputs: list[dict[str, Any]], words: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_body(JSON_CT, body({"inputs": inputs}), "v2", None)
    assert words in info.value.message
    assert "Input 'age'" in info.value.message
    assert info.value.details["input"] == "age"


@pytest.mark.parametrize(
    "doc, words",
    [
        ({"inputs": []}, "non-empty 'inputs'"),
        ({"inputs": [_tensor()], "model": "x"}, "'model'"),
        ({"inputs": [{"name": "age", "shape": [2], "data": [1, 2]}]}, "lacks 'datatype'"),
        ({"inputs": [{**_tensor(), "parameters": {"binary_data_size": 16}}]}, "binary tensor data extension"),
        ({"inputs": [_tensor()], "id": 7}, "'id' must be a string"),
        ([_tensor()], "JSON object"),
    ],
)
def test_v2_malformed_requests(doc: Any, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body(JSON_CT, body(doc), "v2", None)
    assert words in info.value.message


def test_v2_every_datatype() -> None:
    types = [
        "BOOL",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    ]
    data = {"BOOL": [True, False], "BYTES": ["a", "b"]}
    inputs = [_tensor(t.lower(), datatype=t, data=data.get(t, [1, 2])) for t in types]
    frame = parse_body(JSON_CT, body({"inputs": inputs}), "v2", None).frame
    assert [str(t) for t in frame.dtypes] == [
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "str",
    ]  # fmt: skip


# --- binary bodies -------------------------------------------------------------------------------------------


def arrow_stream(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=2):
            writer.write_batch(batch)
    return sink.getvalue()


def arrow_file(df: pd.DataFrame) -> bytes:
    table = pa.Table.from_pandas(df, preserve_index=False)
    sink = io.BytesIO()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


@pytest.mark.parametrize(
    "content_type, encode",
    [
        ("application/vnd.apache.arrow.stream", arrow_stream),
        ("application/vnd.apache.arrow.file", arrow_file),
        ("application/vnd.apache.parquet", lambda df: df.to_parquet(index=False)),
        ("application/x-parquet", lambda df: df.to_parquet(index=False)),
    ],
)
@pytest.mark.parametrize("protocol", ["native", "mlflow"])
def test_binary_batches(content_type: str, encode: Any, protocol: Any, people: pd.DataFrame) -> None:
    parsed = parse_body(content_type, encode(people), protocol, None)
    pd.testing.assert_frame_equal(parsed.frame, people)
    assert parsed.keys is None


@pytest.mark.parametrize(
    "content_type, words",
    [
        ("application/vnd.apache.arrow.stream", "not a valid Arrow IPC stream"),
        ("application/vnd.apache.arrow.file", "not a valid Arrow IPC file"),
        ("application/vnd.apache.parquet", "not a valid Parquet file"),
        ("application/x-parquet", "not a valid Parquet file"),
    ],
)
@pytest.mark.parametrize("raw", [b"", b"not arrow at all, not parquet either", "truncated"])
def test_corrupt_binary_bodies(content_type: str, words: str, raw: Any, people: pd.DataFrame) -> None:
    if raw == "truncated":
        whole = arrow_file(people) if "arrow.file" in content_type else arrow_stream(people)
        raw = (people.to_parquet() if "parquet" in content_type else whole)[:-40]
    with pytest.raises(BadRequest, match=words):
        parse_body(content_type, raw, "native", None)


def test_arrow_is_not_for_v2(people: pd.DataFrame) -> None:
    with pytest.raises(BadRequest) as info:
        parse_body("application/vnd.apache.arrow.stream", arrow_stream(people), "v2", None)
    assert info.value.details["accepted"] == ["application/json"]


# --- empty and oversized input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type, raw, protocol",
    [
        (JSON_CT, body([]), "native"),
        (JSON_CT, body({"records": []}), "native"),
        (JSON_CT, body({"dataframe_records": []}), "mlflow"),
        (JSON_CT, body({"dataframe_split": {"columns": ["a"], "data": []}}), "mlflow"),
        (JSON_CT, body({"instances": []}), "mlflow"),
        (JSON_CT, body({"inputs": {"a": []}}), "mlflow"),
        (JSON_CT, body({"inputs": [_tensor(shape=[0], data=[])]}), "v2"),
        ("text/csv", b"a,b\n", "mlflow"),
        (
            "application/vnd.apache.parquet",
            pd.DataFrame({"a": pd.Series([], dtype="float64")}).to_parquet(),
            "native",
        ),
    ],
)
def test_empty_input_is_refused(content_type: str, raw: bytes, protocol: Any) -> None:
    with pytest.raises(ValidationFailed, match="no rows") as info:
        parse_body(content_type, raw, protocol, None)
    assert info.value.details == {"rows": 0}


def test_csv_without_header_or_malformed() -> None:
    with pytest.raises(BadRequest, match="empty"):
        parse_body("text/csv", b"", "mlflow", None)
    with pytest.raises(BadRequest, match="not valid CSV"):
        parse_body("text/csv", b'a,b\n1,"unterminated\n', "mlflow", None)


def test_row_limit() -> None:
    with pytest.raises(PayloadTooLarge) as info:
        parse_body(JSON_CT, body([{"a": i} for i in range(11)]), "native", None, max_rows=10)
    assert info.value.details == {"rows": 11, "max_rows": 10}
    assert (
        len(parse_body(JSON_CT, body([{"a": i} for i in range(10)]), "native", None, max_rows=10).frame) == 10
    )


# --- signatures ----------------------------------------------------------------------------------------------


def test_signature_from_mlflow_mlmodel(mlflow_signature: dict[str, Any]) -> None:
    assert isinstance(mlflow_signature["inputs"], str)  # the real stored form
    sig = Signature.from_stored(mlflow_signature)
    assert sig is not None
    assert sig.inputs == (
        ColumnSpec("age", "double", "float", "float64"),
        ColumnSpec("n", "long", "int", "int64"),
        ColumnSpec("name", "string", "string", "str"),
    )
    assert sig.outputs == (OutputSpec(None, "INT64", (-1,)),)


def test_signature_from_mlflow_every_column_type() -> None:
    from mlflow.types import ColSpec, Schema

    schema = Schema(
        [
            ColSpec("boolean", "b"),
            ColSpec("integer", "i"),
            ColSpec("long", "l"),
            ColSpec("float", "f"),
            ColSpec("double", "d"),
            ColSpec("string", "s"),
            ColSpec("binary", "raw"),
            ColSpec("datetime", "when", required=False),
        ]
    )
    sig = Signature.from_stored({"inputs": schema.to_json()})
    assert sig is not None
    assert [(c.kind, c.dtype, c.datatype) for c in sig.inputs] == [
        ("bool", "bool", "BOOL"),
        ("int", "int32", "INT32"),
        ("int", "int64", "INT64"),
        ("float", "float32", "FP32"),
        ("float", "float64", "FP64"),
        ("string", "str", "BYTES"),
        ("binary", "object", "BYTES"),
        ("datetime", "datetime64[ns]", "BYTES"),
    ]
    assert [c.required for c in sig.inputs][-2:] == [True, False]


def test_signature_from_bridgehead_manifest(people: pd.DataFrame) -> None:
    from bridgehead.sdk import _infer_signature  # what log_model stores for a DataFrame input example

    stored = _infer_signature(
        people.assign(flag=[True, False, True], small=np.array([1, 2, 3], dtype=np.int8))
    )
    sig = Signature.from_stored(stored)
    assert sig is not None
    assert [(c.name, c.kind, c.dtype) for c in sig.inputs] == [
        ("age", "float", "float64"),
        ("n", "int", "int64"),
        ("name", "string", "str"),
        ("flag", "bool", "bool"),
        ("small", "int", "int8"),
    ]
    assert Signature.from_stored({"inputs": {"age": "float64", "n": "Int64"}}) == Signature(
        (ColumnSpec("age", "float64", "float", "float64"), ColumnSpec("n", "Int64", "int", "int64"))
    )


@pytest.mark.parametrize(
    "stored",
    [
        None,
        {},
        {"inputs": None},
        {"inputs": []},
        {"inputs": '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]'},
        {"inputs": {"type": "tensor", "dtype": "float64", "shape": [-1, 4]}},  # the SDK's form for arrays
        {"inputs": '[{"type": "double"}, {"type": "double"}]'},  # unnamed columns
        {"inputs": "not json"},
    ],
)
def test_signatures_without_columns(stored: Any) -> None:
    assert Signature.from_stored(stored) is None


def test_signature_from_the_sdk_array_form() -> None:
    from bridgehead.sdk import _infer_signature

    assert Signature.from_stored(_infer_signature(np.zeros((3, 4)))) is None


# --- validate_frame ------------------------------------------------------------------------------------------

SIG = Signature(
    (
        ColumnSpec("age", "double", "float", "float64"),
        ColumnSpec("n", "long", "int", "int64"),
        ColumnSpec("name", "string", "string", "str"),
        ColumnSpec("member", "boolean", "bool", "bool"),
    )
)
GOOD = {"age": 30.5, "n": 2, "name": "ann", "member": True}


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    return parse_body(JSON_CT, body(list(rows)), "native", None).frame


def refuse(df: pd.DataFrame, sig: Signature = SIG, **kw: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        validate_frame(df, sig, **kw)
    return info.value


def test_valid_frame_is_reordered_and_cast() -> None:
    df = frame(
        {"member": False, "name": "bo", "n": 3.0, "age": 41},
        {"member": True, "name": "cy", "n": 4, "age": 2.5},
    )
    out = validate_frame(df, SIG)
    assert list(out.columns) == ["age", "n", "name", "member"]
    assert [str(t) for t in out.dtypes] == ["float64", "int64", "str", "bool"]
    assert out.to_dict("records") == [
        {"age": 41.0, "n": 3, "name": "bo", "member": False},
        {"age": 2.5, "n": 4, "name": "cy", "member": True},
    ]


def test_missing_column() -> None:
    err = refuse(frame({k: v for k, v in GOOD.items() if k != "n"}))
    assert err.message == "Column 'n' is missing"
    assert err.details["column"] == "n" and err.details["problem"] == "missing"


def test_unexpected_column() -> None:
    err = refuse(frame({**GOOD, "zip": "02134"}))
    assert err.message.startswith("Column 'zip' is unexpected")
    assert (err.details["column"], err.details["problem"]) == ("zip", "unexpected")


@pytest.mark.parametrize(
    "column, value, got",
    [
        ("age", "abc", "string 'abc'"),
        ("age", True, "bool True"),
        ("n", 1.5, "float 1.5 (not a whole number)"),
        ("n", "3", "string '3'"),
        ("n", False, "bool False"),
        ("member", 1, "int 1"),
        ("member", "true", "string 'true'"),
        ("name", 5, "int 5"),
        ("name", [1, 2], "list [1, 2]"),
    ],
)
def test_wrong_type(column: str, value: Any, got: str) -> None:
    err = refuse(frame(GOOD, {**GOOD, column: value}))
    assert f"Column '{column}'" in err.message and got in err.message
    assert err.details["column"] == column
    assert err.details["problem"] == "wrong_type"
    assert err.details["expected"] == next(c.type for c in SIG.inputs if c.name == column)
    assert err.details["got"] == got
    assert err.details["row"] == 1


def test_whole_columns_of_the_wrong_type() -> None:
    """Columns pandas typed as a whole (bool, str, float) are refused too, at the first row."""
    err = refuse(frame({**GOOD, "age": True}, {**GOOD, "age": False}))
    assert (err.details["column"], err.details["got"], err.details["row"]) == ("age", "bool True", 0)
    err = refuse(frame({**GOOD, "member": 1.0}, {**GOOD, "member": 0.0}))
    assert (err.details["column"], err.details["got"]) == ("member", "float 1.0")
    err = refuse(frame({**GOOD, "n": 1.0}, {**GOOD, "n": 2.25}))
    assert (err.details["column"], err.details["row"]) == ("n", 1)


def test_int_ranges() -> None:
    sig = Signature((ColumnSpec("i", "integer", "int", "int32"), ColumnSpec("u", "uint8", "uint", "uint8")))
    assert validate_frame(frame({"i": 2**31 - 1, "u": 255}), sig).dtypes.tolist() == [np.int32, np.uint8]
    err = refuse(frame({"i": 2**31, "u": 1}), sig)
    assert (err.details["column"], err.details["got"]) == ("i", "int 2147483648 (out of range for int32)")
    err = refuse(frame({"i": 1, "u": -1}), sig)
    assert err.details["column"] == "u" and "out of range" in err.message


@pytest.mark.parametrize("column", ["age", "n", "name", "member"])
def test_nan_names_the_column_and_row(column: str) -> None:
    err = refuse(frame(GOOD, GOOD, {**GOOD, column: None}))
    assert err.message == f"Column '{column}' has a missing value (NaN or null) at row 2"
    assert err.details == {
        "column": column,
        "problem": "nan",
        "row": 2,
        "columns": [column],
        "problems": [{"column": column, "problem": "nan", "row": 2}],
    }


def test_a_record_without_the_key_is_a_nan() -> None:
    err = refuse(frame(GOOD, {k: v for k, v in GOOD.items() if k != "age"}))
    assert (err.details["column"], err.details["problem"], err.details["row"]) == ("age", "nan", 1)


def test_allow_nan() -> None:
    out = validate_frame(
        frame(GOOD, {"age": None, "n": None, "name": None, "member": None}), SIG, allow_nan=True
    )
    assert out.isna().sum().tolist() == [1, 1, 1, 1]
    assert [str(t) for t in out.dtypes] == ["float64", "float64", "str", "boolean"]


def test_many_bad_columns_first_and_all() -> None:
    df = frame(
        {"n": 1.5, "age": "x", "member": 1, "extra": 0}, {"n": 2, "age": 3, "member": True, "extra": 1}
    )
    err = refuse(df)
    assert err.message.startswith("Column 'age' expects double, got string 'x' at row 0 (and 4 more: ")
    assert err.details["column"] == "age"
    assert err.details["columns"] == ["age", "n", "name", "member", "extra"]
    assert [p["problem"] for p in err.details["problems"]] == [
        "wrong_type",
        "wrong_type",
        "missing",
        "wrong_type",
        "unexpected",
    ]
    for column in err.details["columns"]:
        assert f"'{column}'" in err.message


def test_optional_columns() -> None:
    sig = Signature(
        (
            ColumnSpec("a", "double", "float", "float64"),
            ColumnSpec("b", "double", "float", "float64", required=False),
        )
    )
    assert list(validate_frame(frame({"a": 1}), sig).columns) == ["a"]
    assert validate_frame(frame({"a": 1, "b": None}), sig)["b"].isna().all()


def test_datetime_and_binary_columns() -> None:
    sig = Signature.from_stored(
        {"inputs": json.dumps([{"name": "when", "type": "datetime"}, {"name": "raw", "type": "binary"}])}
    )
    assert sig is not None
    payload = base64.b64encode(b"\x00\x01bytes").decode()
    out = validate_frame(frame({"when": "2024-03-01T12:30:00", "raw": payload}), sig)
    assert out["when"].dtype == "datetime64[ns]" and out["when"][0] == pd.Timestamp("2024-03-01 12:30")
    assert out["raw"][0] == b"\x00\x01bytes"
    err = refuse(frame({"when": "last tuesday", "raw": payload}), sig)
    assert err.details["column"] == "when" and "ISO 8601" in err.details["got"]
    err = refuse(frame({"when": "2024-03-01", "raw": "!!"}), sig)
    assert err.details["column"] == "raw" and "base64" in err.details["got"]


def test_non_string_column_names() -> None:
    """Rows without a signature order come back numbered; the error still names the column."""
    df = parse_body(JSON_CT, body({"inputs": [[1.0, 2, "a", True]]}), "mlflow", None).frame
    err = refuse(df)
    assert err.details["column"] == "age" and err.details["columns"][-4:] == ["0", "1", "2", "3"]


def test_duplicate_columns() -> None:
    df = parse_body(
        JSON_CT, body({"dataframe_split": {"columns": ["age", "age"], "data": [[1, 2]]}}), "mlflow", None
    ).frame
    err = refuse(df)
    assert (err.details["column"], err.details["problem"]) == ("age", "duplicate")


def test_no_signature_no_validation() -> None:
    df = frame({"anything": "goes"})
    assert validate_frame(df, None) is df


def test_end_to_end_v2_with_the_mlflow_signature(mlflow_signature: dict[str, Any]) -> None:
    sig = Signature.from_stored(mlflow_signature)
    doc = {
        "inputs": [
            _tensor("name", [1], "BYTES", ["ann"]),
            _tensor("n", [1], "INT32", [3]),
            _tensor("age", [1], "FP32", [30]),
        ]
    }
    out = validate_frame(parse_body(JSON_CT, body(doc), "v2", None, signature=sig).frame, sig)
    assert out.to_dict("records") == [{"age": 30.0, "n": 3, "name": "ann"}]
    assert [str(t) for t in out.dtypes] == ["float64", "int64", "str"]


# --- responses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "predictions",
    [
        np.array([0, 1, 1]),
        np.array([0.25, 1.5]),
        np.array(["setosa", "virginica"], dtype=object),
        np.array([[0.1, 0.9], [0.8, 0.2]]),
        pd.DataFrame({"label": [1, 0], "score": [0.9, 0.2]}),
        pd.Series([1.5, 2.5], name="y"),
        [1, 2, 3],
    ],
)
def test_mlflow_response_matches_mlflow(predictions: Any) -> None:
    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = io.StringIO()
    predictions_to_json(predictions, out)
    assert mlflow_response(predictions) == json.loads(out.getvalue())
    json.dumps(mlflow_response(predictions), allow_nan=False)


def test_mlflow_response_has_no_nan() -> None:
    assert mlflow_response(np.array([1.0, np.nan, np.inf])) == {"predictions": [1.0, None, None]}


def test_v2_response() -> None:
    res = v2_response(
        model_name="iris",
        model_version="3",
        request_id="42",
        predictions=np.array(["setosa", "virginica"], dtype=object),
        probabilities=np.array([[0.9, 0.05, 0.05], [0.0, 0.1, 0.9]]),
    )
    assert res == {
        "model_name": "iris",
        "model_version": "3",
        "id": "42",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["setosa", "virginica"]},
            {
                "name": "predict_proba",
                "shape": [2, 3],
                "datatype": "FP64",
                "data": [0.9, 0.05, 0.05, 0.0, 0.1, 0.9],
            },
        ],
    }
    json.dumps(res, allow_nan=False)


@pytest.mark.parametrize(
    "predictions, datatype, data",
    [
        (np.array([1, 0]), "INT64", [1, 0]),
        (np.array([1, 0], dtype=np.int32), "INT32", [1, 0]),
        (np.array([0.5, 1.0], dtype=np.float32), "FP32", [0.5, 1.0]),
        (np.array([True, False]), "BOOL", [True, False]),
        (pd.Series([2.5, 3.5]), "FP64", [2.5, 3.5]),
        (pd.DataFrame({"y": [1, 2]}), "INT64", [1, 2]),
        ([1, 2], "INT64", [1, 2]),
        (np.array([1, 2.5], dtype=object), "FP64", [1.0, 2.5]),
        (np.array([np.nan, 1.0]), "FP64", [None, 1.0]),
    ],
)
def test_v2_response_datatypes(predictions: Any, datatype: str, data: list[Any]) -> None:
    res = v2_response(model_name="m", model_version=None, request_id=None, predictions=predictions)
    assert res == {
        "model_name": "m",
        "outputs": [{"name": "predict", "shape": [2], "datatype": datatype, "data": data}],
    }


def test_v2_response_two_outputs() -> None:
    res = v2_response(
        model_name="m",
        model_version="1",
        request_id=None,
        predictions=pd.DataFrame({"a": [1, 2], "b": [3, 4]}),
    )
    assert res["outputs"] == [{"name": "predict", "shape": [2, 2], "datatype": "INT64", "data": [1, 3, 2, 4]}]


def test_v2_metadata_from_mlflow_signature(mlflow_signature: dict[str, Any]) -> None:
    expected_inputs = [
        {"name": "age", "datatype": "FP64", "shape": [-1]},
        {"name": "n", "datatype": "INT64", "shape": [-1]},
        {"name": "name", "datatype": "BYTES", "shape": [-1]},
    ]
    meta = v2_metadata("people", ["1", "2"], mlflow_signature, probabilities=True)
    assert meta == {
        "name": "people",
        "versions": ["1", "2"],
        "platform": "bridgehead",
        "inputs": expected_inputs,
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, -1]},
        ],
    }
    parsed = Signature.from_stored(mlflow_signature)
    assert v2_metadata("people", ["1", "2"], parsed, probabilities=True) == meta


def test_v2_metadata_from_tensor_and_empty_signatures() -> None:
    from mlflow.models import infer_signature

    stored = infer_signature(np.zeros((2, 4)), np.array([0.5, 1.5])).to_dict()
    meta = v2_metadata("iris", ["7"], stored)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    # Nothing known: nothing guessed.
    assert v2_metadata("x", ["1"], None)["inputs"] == [] and v2_metadata("x", ["1"], {})["outputs"] == []
    bridgehead = {"inputs": {"type": "tensor", "dtype": "float32", "shape": [-1, 3]}}
    assert v2_metadata("x", ["1"], bridgehead)["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 3]}
    ]

"""Opening tabular files (pure): every kind of bad file is a BadRequest naming the file (and the column where
one is to blame), and the four formats holding the same data read alike."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from bridgehead.data.profile import profile_batches
from bridgehead.data.readers import DataSource, detect_format, open_source
from bridgehead.errors import BadRequest


def read_all(location: Path | str, fmt: str | None = None) -> tuple[DataSource, int]:
    """Opens and streams the whole file (errors may surface only while reading)."""
    source = open_source(str(location), fmt)
    return source, profile_batches(source.schema, source.batches()).row_count


def bad(location: Path | str, fmt: str | None = None) -> BadRequest:
    with pytest.raises(BadRequest) as raised:
        read_all(location, fmt)
    error = raised.value
    assert error.status == 400 and error.code == "bad_request"
    return error


@pytest.fixture
def table() -> pa.Table:
    rng = np.random.default_rng(3)
    n = 1_000
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "amount": pa.array(rng.normal(100, 15, n)),
            "region": pa.array(rng.choice(["north", "south", "east"], n)),
            "flag": pa.array(rng.random(n) < 0.5),
            "day": pa.array(
                [dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 99, n)]
            ),
        }
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.parquet"
    error = bad(path)
    assert error.details["file"] == str(path)
    assert str(path) in error.message


def test_truncated_parquet(tmp_path: Path, table: pa.Table) -> None:
    whole = tmp_path / "whole.parquet"
    pq.write_table(table, whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(data[: len(data) // 2])
    assert read_all(whole)[1] == table.num_rows  # the intact file reads
    error = bad(cut)
    assert error.details == {"file": str(cut), "format": "parquet"}
    assert str(cut) in error.message and "parquet" in error.message


def test_text_file_named_parquet(tmp_path: Path) -> None:
    path = tmp_path / "notes.parquet"
    path.write_text("id,amount\n1,2\n" * 50)
    error = bad(path)
    assert error.details["file"] == str(path) and error.details["format"] == "parquet"
    assert "column" not in error.details


def test_json_lines_whose_column_changes_type(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"a": 1, "b": "x"}) + "\n" + json.dumps({"a": "x", "b": "y"}) + "\n")
    error = bad(path)
    assert error.details["file"] == str(path)
    assert error.details["column"] == "a"
    assert "'a'" in error.message


def test_csv_whose_column_changes_type_after_the_first_block(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("id,count,label\n")
        i = 0
        while handle.tell() < 2_500_000:  # well past pyarrow's 1 MiB inference block
            handle.write(f"{i},{i * 7},x{i % 10}\n")
            i += 1
        handle.write(f"{i},abc,x0\n")
    # pyarrow infers int64 from the first block and meets "abc" only while streaming.
    source = open_source(str(path))
    assert source.schema.field("count").type == pa.int64()
    error = bad(path)
    assert error.details == {"file": str(path), "format": "csv", "column": "count"}
    assert "'count'" in error.message and "mixes types" in error.message


def test_unknown_suffix_without_magic_bytes(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "export.dat"
    path.write_text("a,b\n1,2\n")
    error = bad(path)
    assert error.details == {"file": str(path)}
    assert "cannot tell the format" in error.message and ".parquet" in error.message
    # With magic bytes the suffix is not needed; with a declared format neither is.
    magic = tmp_path / "export.bin"
    pq.write_table(table, magic)
    assert detect_format(str(magic)) == "parquet"
    assert read_all(magic)[1] == table.num_rows
    assert read_all(path, "csv")[1] == 1


def test_unknown_declared_format(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    error = bad(path, "excel")
    assert "'excel'" in error.message and "parquet, csv, jsonl, arrow" in error.message


def test_declared_format_that_does_not_match_the_bytes(tmp_path: Path, table: pa.Table) -> None:
    path = tmp_path / "data.parquet"
    pq.write_table(table, path)
    error = bad(path, "arrow")
    assert error.details["file"] == str(path) and error.details["format"] == "arrow"


def test_csv_with_a_header_only_opens_with_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b\n")
    source, rows = read_all(path)
    assert source.schema.names == ["a", "b"] and rows == 0


def test_the_four_formats_read_alike(tmp_path: Path, table: pa.Table) -> None:
    files = {
        "parquet": tmp_path / "same.parquet",
        "csv": tmp_path / "same.csv",
        "jsonl": tmp_path / "same.jsonl",
        "arrow": tmp_path / "same.arrow",
    }
    pq.write_table(table, files["parquet"], row_group_size=300)
    pacsv.write_csv(table, files["csv"])
    with files["jsonl"].open("w") as handle:
        for row in table.to_pylist():
            handle.write(json.dumps({**row, "day": row["day"].isoformat()}) + "\n")
    feather.write_feather(table, files["arrow"])

    kinds: dict[str, dict[str, str]] = {}
    for fmt, path in files.items():
        source = open_source(str(path))
        assert source.format == fmt
        profile = profile_batches(source.schema, source.batches(batch_rows=256))
        assert profile.row_count == table.num_rows, fmt
        kinds[fmt] = {name: col.kind for name, col in profile.columns.items()}
        assert all(col.count == table.num_rows for col in profile.columns.values()), fmt
        assert profile.columns["id"].min == 0 and profile.columns["id"].max == table.num_rows - 1, fmt
        assert source.lazy().select("id").collect().height == table.num_rows, fmt
    expected = {
        "id": "numeric",
        "amount": "numeric",
        "region": "string",
        "flag": "boolean",
        "day": "datetime",
    }
    assert kinds == dict.fromkeys(files, expected)

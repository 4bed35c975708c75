"""The prediction log: real files, real threads, a real process killed with SIGKILL."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bridgehead.errors import StoreUnavailable, ValidationFailed
from bridgehead.serving.predlog import (
    SCHEMA,
    FloatInputs,
    PredictionBatch,
    PredictionLog,
    PredictionRecord,
    partition_dir,
    read_log,
    recent,
    row_ids,
)
from bridgehead.serving.protocols import column_index

HOUR = 3_600_000
MINUTE = 60_000
T0 = int(datetime(2024, 5, 6, 10, 0, tzinfo=UTC).timestamp() * 1000)  # 10:00 UTC


def rec(i: int, *, endpoint: str = "churn", ts_ms: int = T0, **fields: Any) -> PredictionRecord:
    values: dict[str, Any] = {
        "request_id": f"r{i}",
        "endpoint": endpoint,
        "model_name": "churn-model",
        "version": 3,
        "role": "primary",
        "ts_ms": ts_ms,
        "latency_ms": 1.5 + i,
        "inputs": json.dumps({"x": i, "city": "Lyon"}),
        "outputs": json.dumps({"prediction": i % 2, "probabilities": [0.25, 0.75]}),
    }
    values.update(fields)
    return PredictionRecord(**values)


def read_all(root: Path, endpoint: str, **kwargs: Any) -> pa.Table:
    tables = [pa.Table.from_batches([b]) for b in read_log(root, endpoint, **kwargs)]
    return pa.concat_tables(tables, promote_options="permissive")


def plain(row: dict[str, Any]) -> dict[str, Any]:
    """A row read back, with the empty fields of its inputs and outputs left out (files unify their types)."""
    out = dict(row)
    for name in ("inputs", "outputs"):
        value = out.get(name)
        if isinstance(value, str):
            value = json.loads(value)
        if isinstance(value, dict):
            out[name] = {k: v for k, v in value.items() if v is not None}
    return out


def ids(root: Path, endpoint: str) -> list[str]:
    return [
        b for batch in read_log(root, endpoint, columns=["request_id"]) for b in batch.column(0).to_pylist()
    ]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def as_row(r: PredictionRecord) -> dict[str, Any]:
    return {
        "request_id": r.request_id,
        "endpoint": r.endpoint,
        "model_name": r.model_name,
        "version": r.version,
        "role": r.role,
        "ts": datetime.fromtimestamp(r.ts_ms / 1000, tz=UTC),
        "latency_ms": r.latency_ms,
        "inputs": json.loads(r.inputs),
        "outputs": json.loads(r.outputs),
        "status": r.status,
        "key": r.key,
        "row": r.row,
    }


# 1 -----------------------------------------------------------------------------------------------------------


def test_records_are_written_and_read_back_exactly_in_hour_partitions(tmp_path: Path) -> None:
    records = [
        rec(0, ts_ms=T0 + 5 * MINUTE),
        rec(1, ts_ms=T0 + 59 * MINUTE + 59_999, role="shadow", version=4, key="customer-9"),
        rec(2, ts_ms=T0 + HOUR, status="error", outputs=json.dumps({"error": "bad input"})),
        rec(
            3, endpoint="fraud.v2", ts_ms=T0 + 10, model_name="fraud", version=2_000_000_000, latency_ms=0.125
        ),
        rec(
            4, endpoint="fraud.v2", ts_ms=T0 + HOUR + 1, inputs=json.dumps({"amount": 12.5, "note": "café ✓"})
        ),
    ]
    log = PredictionLog(tmp_path)
    log.record(records)
    assert log.pending == 5

    assert log.flush() == 5
    assert log.pending == 0 and log.written == 5

    files = sorted(tmp_path.rglob("*"))
    parquet = [p for p in files if p.is_file()]
    assert {p.parent.relative_to(tmp_path).as_posix() for p in parquet} == {
        "endpoint=churn/date=2024-05-06/hour=10",
        "endpoint=churn/date=2024-05-06/hour=11",
        "endpoint=fraud.v2/date=2024-05-06/hour=10",
        "endpoint=fraud.v2/date=2024-05-06/hour=11",
    }
    assert len(parquet) == 4  # one file per (endpoint, hour), nothing else (no *.tmp left behind)
    for path in parquet:
        assert re.fullmatch(r"part-\d{13}-[0-9a-f]{8}\.parquet", path.name)
        schema = pq.read_schema(path)
        assert pa.schema(list(schema)[: len(SCHEMA)]).equals(SCHEMA)
        assert schema.names[len(SCHEMA) :] == ["inputs", "outputs"]
        assert pa.types.is_struct(schema.field("inputs").type)
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"
    assert (
        partition_dir(tmp_path, "churn", T0 + HOUR + 5) == tmp_path / "endpoint=churn/date=2024-05-06/hour=11"
    )

    churn = read_all(tmp_path, "churn")
    assert [plain(r) for r in churn.to_pylist()] == [as_row(r) for r in records[:3]]
    fraud = read_all(tmp_path, "fraud.v2")
    assert [plain(r) for r in fraud.to_pylist()] == [as_row(r) for r in records[3:]]
    assert plain(fraud.to_pylist()[1])["inputs"] == {"amount": 12.5, "note": "café ✓"}
    # Inputs are typed columns, not text: a feature is read as a column.
    assert churn.column("inputs").type.field("x").type == pa.int64()


# 2 -----------------------------------------------------------------------------------------------------------


def test_close_flushes_everything_buffered_despite_a_long_interval(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=60.0)
    log.start()
    log.record([rec(i) for i in range(1000)])
    assert log.pending == 1000
    assert not list(tmp_path.rglob("*.parquet"))

    started = time.monotonic()
    log.close()
    assert time.monotonic() - started < 30  # did not sit out the 60 s interval

    assert log.pending == 0
    assert sorted(ids(tmp_path, "churn")) == sorted(f"r{i}" for i in range(1000))
    with pytest.raises(StoreUnavailable):
        log.record([rec(1000)])
    with pytest.raises(StoreUnavailable):
        log.start()
    log.close()  # idempotent
    assert len(ids(tmp_path, "churn")) == 1000


def test_leaving_the_with_block_flushes(tmp_path: Path) -> None:
    with PredictionLog(tmp_path, flush_interval_s=60.0) as log:
        log.record([rec(i) for i in range(3)])
    assert ids(tmp_path, "churn") == ["r0", "r1", "r2"]


# 3 -----------------------------------------------------------------------------------------------------------


def test_background_thread_flushes_within_the_interval(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=0.2)
    log.start()
    log.start()  # idempotent
    try:
        log.record([rec(i) for i in range(10)])
        assert wait_for(lambda: log.written == 10), "the flusher thread never wrote the rows"
        assert log.pending == 0
        assert sorted(ids(tmp_path, "churn")) == sorted(f"r{i}" for i in range(10))
    finally:
        log.close()


def test_a_full_buffer_wakes_the_thread_before_the_interval(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_interval_s=60.0, max_buffer_rows=100)
    log.start()
    try:
        log.record([rec(i) for i in range(150)])
        assert wait_for(lambda: log.written == 150), "reaching max_buffer_rows did not trigger a flush"
        assert len(ids(tmp_path, "churn")) == 150
    finally:
        log.close()


# 4 -----------------------------------------------------------------------------------------------------------


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    flushed: list[str] = []
    log = PredictionLog(
        tmp_path,
        flush_interval_s=0.05,
        max_buffer_rows=2_000,  # capacity 20,000: nothing may be dropped
        on_flush=lambda table: flushed.extend(table.column("request_id").to_pylist()),
    )
    log.start()
    barrier = threading.Barrier(9)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(2_000):
                log.record([rec(i, request_id=f"t{t}-{i}", ts_ms=T0 + (i % 3) * HOUR)])
        except BaseException as exc:
            errors.append(exc)

    def flusher() -> None:
        # Explicit flushes racing the background thread.
        try:
            barrier.wait()
            while not done.is_set():
                log.flush()
        except BaseException as exc:
            errors.append(exc)

    writers = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    extra = threading.Thread(target=flusher)
    for thread in [*writers, extra]:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    extra.join()
    log.close()

    assert errors == []
    on_disk = ids(tmp_path, "churn")
    expected = {f"t{t}-{i}" for t in range(8) for i in range(2_000)}
    assert len(on_disk) == 16_000
    assert set(on_disk) == expected
    assert sorted(flushed) == sorted(on_disk)
    assert log.dropped == 0 and log.written == 16_000


# 5 -----------------------------------------------------------------------------------------------------------

CHILD = """
import sys, time
from pathlib import Path
from bridgehead.serving.predlog import PredictionLog, PredictionRecord

log = PredictionLog(Path(sys.argv[1]), flush_interval_s=0.2)
log.start()
n = 0
while True:
    now = int(time.time() * 1000)
    log.record([
        PredictionRecord(request_id=f"r{n + i}", endpoint="killed", model_name="m", version=1, role="primary",
                         ts_ms=now, latency_ms=1.0, inputs='{"x": 1}', outputs='{"prediction": 0}')
        for i in range(25)
    ])
    n += 25
    print(n, time.time(), flush=True)  # acknowledged: record() returned for rows r0 .. r{n-1}
    time.sleep(0.005)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_kill_9_loses_at_most_the_last_flush_interval(tmp_path: Path) -> None:
    root = tmp_path / "log"
    lines: list[str] = []
    with open(tmp_path / "child.err", "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(target=lambda: lines.extend(stdout), daemon=True)
        reader.start()
        try:
            assert wait_for(lambda: bool(lines), timeout=120), (tmp_path / "child.err").read_text()
            time.sleep(2.0)
            killed_at = time.time()
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=60)
            reader.join(timeout=60)
            stdout.close()
    assert proc.returncode == -signal.SIGKILL

    slack = 0.2 + 1.0  # flush interval + generous slack for a loaded machine
    acknowledged = [line.split() for line in lines if line.endswith("\n")]
    safe = max((int(n) for n, at in acknowledged if float(at) < killed_at - slack), default=0)
    assert safe > 0, "the child acknowledged nothing early enough to check"

    files = list(root.rglob("*.parquet"))
    assert files
    for path in files:
        pq.read_table(path)  # every complete file is readable: no torn writes
    # A torn write can only ever be a *.tmp; readers must not look at it.
    (files[0].parent / "part-1-deadbeef.parquet.tmp").write_bytes(b"PAR1 half a file")
    on_disk = ids(root, "killed")
    assert len(on_disk) == len(set(on_disk))
    missing = {f"r{i}" for i in range(safe)} - set(on_disk)
    assert not missing, f"{len(missing)} rows acknowledged more than {slack}s before the kill are lost"


# 6 -----------------------------------------------------------------------------------------------------------


def test_a_failed_write_keeps_the_rows_and_other_endpoints_are_written(tmp_path: Path) -> None:
    blocker = tmp_path / "endpoint=churn"
    blocker.write_text("a file where the endpoint directory should be")
    log = PredictionLog(tmp_path, flush_interval_s=60.0)
    log.record([rec(i) for i in range(5)] + [rec(i, endpoint="fraud") for i in range(5, 10)])

    with pytest.raises(StoreUnavailable):
        log.flush()
    assert log.pending == 5
    assert sorted(ids(tmp_path, "fraud")) == [f"r{i}" for i in range(5, 10)]

    blocker.unlink()
    assert log.flush() == 5
    assert log.pending == 0
    assert sorted(ids(tmp_path, "churn")) == [f"r{i}" for i in range(5)]
    assert sorted(ids(tmp_path, "fraud")) == [f"r{i}" for i in range(5, 10)]  # not written twice
    log.close()


def test_the_background_thread_retries_failed_writes_until_they_succeed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "endpoint=churn"
    blocker.write_text("in the way")
    log = PredictionLog(tmp_path, flush_interval_s=0.1)
    with caplog.at_level(logging.ERROR, logger="bridgehead.serving"):
        log.start()
        try:
            log.record([rec(i) for i in range(50)])
            assert wait_for(lambda: sum("flush failed" in r.getMessage() for r in caplog.records) >= 2)
            assert log.pending == 50 and log.written == 0

            blocker.unlink()
            assert wait_for(lambda: log.written == 50), "the thread stopped retrying"
        finally:
            log.close()
    assert sorted(ids(tmp_path, "churn")) == sorted(f"r{i}" for i in range(50))
    assert log.dropped == 0


def test_an_on_flush_error_is_logged_and_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def on_flush(table: pa.Table) -> None:
        calls.append(table.num_rows)
        raise RuntimeError("database is down")

    log = PredictionLog(tmp_path, on_flush=on_flush)
    log.record([rec(i, ts_ms=T0 + (i % 2) * HOUR) for i in range(10)])
    with caplog.at_level(logging.ERROR, logger="bridgehead.serving"):
        assert log.flush() == 10
    assert calls == [5, 5]  # once per file, after it was written
    assert any("on_flush failed" in r.getMessage() for r in caplog.records)
    assert log.pending == 0
    assert log.flush() == 0  # not retried, so never duplicated
    assert sorted(ids(tmp_path, "churn")) == sorted(f"r{i}" for i in range(10))


def test_the_buffer_drops_the_oldest_rows_past_ten_times_max_buffer_rows(tmp_path: Path) -> None:
    blocker = tmp_path / "endpoint=churn"
    blocker.write_text("in the way")
    log = PredictionLog(tmp_path, max_buffer_rows=10)  # capacity 100
    log.record([rec(i) for i in range(100)])
    with pytest.raises(StoreUnavailable):
        log.flush()
    assert log.pending == 100 and log.dropped == 0

    log.record([rec(i) for i in range(100, 130)])
    assert log.pending == 100 and log.dropped == 30

    blocker.unlink()
    assert log.flush() == 100
    assert sorted(ids(tmp_path, "churn")) == sorted(f"r{i}" for i in range(30, 130))


def test_a_row_arrow_cannot_encode_is_rejected_alone(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.record([rec(0), rec(1, inputs='{"x": "\ud800"}'), rec(2)])
    assert log.flush() == 2
    assert log.rejected == 1 and log.pending == 0
    assert ids(tmp_path, "churn") == ["r0", "r2"]


# 7 -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["../x", "A B", "", "a/b", "x..y", ".hidden", "-x", "ok\n", "a" * 101])
def test_bad_endpoint_names_are_refused(tmp_path: Path, endpoint: str) -> None:
    with pytest.raises(ValidationFailed):
        rec(0, endpoint=endpoint)
    with pytest.raises(ValidationFailed):
        read_log(tmp_path, endpoint)  # refused when called, before any iteration
    with pytest.raises(ValidationFailed):
        recent(tmp_path, endpoint)
    with pytest.raises(ValidationFailed):
        partition_dir(tmp_path, endpoint, T0)
    assert list(tmp_path.iterdir()) == []


def test_good_endpoint_names_and_record_fields_are_checked(tmp_path: Path) -> None:
    for endpoint in ("churn", "fraud.v2", "a_b-c", "7", "a" * 100):
        assert rec(0, endpoint=endpoint).endpoint == endpoint
    for bad in (
        {"role": "canary"},
        {"status": "maybe"},
        {"version": 2**31},
        {"version": True},
        {"ts_ms": -1},
    ):
        with pytest.raises(ValidationFailed):
            rec(0, **bad)
    with pytest.raises(ValidationFailed):
        PredictionLog(tmp_path).record(["not a record"])  # type: ignore[list-item]


# 8 -----------------------------------------------------------------------------------------------------------


def timed_records() -> list[PredictionRecord]:
    # 10:00, 10:30, 10:59, 11:00, 11:30, 13:15 (no 12:xx partition at all)
    offsets = [0, 30 * MINUTE, 59 * MINUTE, HOUR, HOUR + 30 * MINUTE, 3 * HOUR + 15 * MINUTE]
    return [rec(i, ts_ms=T0 + off) for i, off in enumerate(offsets)]


def test_read_log_filters_by_time_and_streams_in_batches(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.record(timed_records())
    log.flush()

    def window(start: int | None, end: int | None) -> list[str]:
        batches = read_log(tmp_path, "churn", start_ms=start, end_ms=end, columns=["request_id"])
        return [i for batch in batches for i in batch.column(0).to_pylist()]

    assert window(T0 + 30 * MINUTE, T0 + HOUR + 30 * MINUTE) == ["r1", "r2", "r3"]  # end is exclusive
    assert window(T0 + HOUR, None) == ["r3", "r4", "r5"]
    assert window(None, T0 + 30 * MINUTE + 1) == ["r0", "r1"]
    assert window(T0 + 2 * HOUR, T0 + 3 * HOUR) == []
    assert window(None, None) == [f"r{i}" for i in range(6)]

    narrow = list(read_log(tmp_path, "churn", start_ms=T0 + 1, columns=["latency_ms", "status"]))
    assert all(b.schema.names == ["latency_ms", "status"] for b in narrow)
    assert sum(b.num_rows for b in narrow) == 5

    small = list(read_log(tmp_path, "churn", batch_rows=2))
    assert all(b.num_rows <= 2 for b in small) and sum(b.num_rows for b in small) == 6
    assert list(read_log(tmp_path, "nobody")) == []
    with pytest.raises(ValidationFailed):
        read_log(tmp_path, "churn", columns=["request_id", "secret"])

    # Hour partitions outside the window are never opened: a corrupt file at 13:xx only matters when 13:xx is read.
    (partition_dir(tmp_path, "churn", T0 + 3 * HOUR) / "part-2-0badf11e.parquet").write_bytes(b"not parquet")
    assert window(T0, T0 + 3 * HOUR) == ["r0", "r1", "r2", "r3", "r4"]
    with pytest.raises(StoreUnavailable):
        window(T0 + 3 * HOUR, None)


def test_recent_returns_the_newest_rows_first_reading_only_the_newest_hours(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    records = timed_records()
    log.record(records[3:] + records[:3])  # arrival order must not matter
    log.flush()

    newest = recent(tmp_path, "churn", limit=3)
    assert [r["request_id"] for r in newest] == ["r5", "r4", "r3"]
    assert plain(newest[0]) == as_row(records[5])
    assert isinstance(newest[0]["inputs"], str)  # JSON text, as the console shows it
    assert [r["request_id"] for r in recent(tmp_path, "churn")] == ["r5", "r4", "r3", "r2", "r1", "r0"]
    assert recent(tmp_path, "churn", limit=0) == []
    assert recent(tmp_path, "nobody") == []

    # The 10:xx partition is not needed for the 3 newest rows, so a corrupt file there goes unnoticed.
    (partition_dir(tmp_path, "churn", T0) / "part-2-0badf11e.parquet").write_bytes(b"not parquet")
    assert [r["request_id"] for r in recent(tmp_path, "churn", limit=3)] == ["r5", "r4", "r3"]
    with pytest.raises(StoreUnavailable):
        recent(tmp_path, "churn", limit=4)


# 9: batches, as the inference path hands them over ------------------------------------------------------------


def batch(
    first: int, frame: pd.DataFrame, *, ts_ms: int = T0, role: str = "primary", **fields: Any
) -> PredictionBatch:
    n = len(frame)
    values: dict[str, Any] = {
        "ids": [f"b{first + i}" for i in range(n)],
        "endpoint": "churn",
        "model_names": ["churn-model"] * n,
        "versions": [3] * n,
        "role": role,
        "ts_ms": ts_ms,
        "latency_ms": 2.5,
        "inputs": frame,
        "predictions": [i % 2 for i in range(n)],
        "probabilities": [[0.5 - i / 10, 0.5 + i / 10] for i in range(n)],
    }
    values.update(fields)
    return PredictionBatch(**values)


def test_a_batch_is_written_with_typed_input_and_output_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "income": [52_000.5, float("nan"), 31_000.0],
            "age": [41, 35, 29],
            "city": ["Lyon", None, "Gdańsk"],
            "member": [True, False, True],
        }
    )
    log = PredictionLog(tmp_path)
    log.record([batch(0, frame, keys=["k0", "k1", "k2"]), rec(9)])
    assert log.pending == 4
    assert log.flush() == 4 and log.written == 4

    [path] = [p for p in tmp_path.rglob("*.parquet")]  # records and batches of one hour share a file
    table = pq.read_table(path)
    inputs = table.schema.field("inputs").type
    assert inputs.field("income").type == pa.float64() and inputs.field("age").type == pa.int64()
    assert inputs.field("city").type == pa.string() and inputs.field("member").type == pa.bool_()
    outputs = table.schema.field("outputs").type
    assert outputs.field("prediction").type == pa.int64()
    assert outputs.field("probabilities").type == pa.list_(pa.float64())

    rows = {r["request_id"]: r for r in table.to_pylist()}
    b1 = rows["b1"]
    assert (b1["row"], b1["key"], b1["version"], b1["latency_ms"], b1["status"]) == (1, "k1", 3, 2.5, "ok")
    assert b1["inputs"]["income"] is None  # NaN is a missing value
    assert b1["inputs"]["age"] == 35 and b1["inputs"]["city"] is None and b1["inputs"]["member"] is False
    assert b1["outputs"]["prediction"] == 1 and b1["outputs"]["probabilities"] == [0.4, 0.6]
    assert rows["b2"]["inputs"]["city"] == "Gdańsk"
    assert rows["r9"]["inputs"]["x"] == 9 and rows["r9"]["inputs"]["age"] is None  # unified with the batch
    assert table.column("ts").to_pylist()[0] == datetime.fromtimestamp(T0 / 1000, tz=UTC)


def test_files_keep_statistics_for_the_log_columns_only_and_no_dictionaries(tmp_path: Path) -> None:
    frame = pd.DataFrame({"income": [52_000.5, 31_000.0, 47_250.0], "city": ["Lyon", "Lyon", "Gdańsk"]})
    log = PredictionLog(tmp_path)
    log.record([batch(0, frame)])
    assert log.flush() == 3

    [path] = list(tmp_path.rglob("*.parquet"))
    meta = pq.ParquetFile(path).metadata
    group = meta.row_group(0)
    chunks = {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}
    # A query engine can skip row groups by time and version; the model's columns carry no min/max.
    ts = chunks["ts"].statistics
    assert ts is not None and ts.has_min_max
    assert ts.min == datetime.fromtimestamp(T0 / 1000, tz=UTC)
    assert chunks["version"].statistics is not None and chunks["version"].statistics.has_min_max
    for name in ("inputs.income", "inputs.city", "outputs.prediction"):
        stats = chunks[name].statistics
        assert stats is None or not stats.has_min_max, name
    # Repeated values (endpoint, city) are left to Snappy: no column has a dictionary page.
    assert all(chunk.dictionary_page_offset is None for chunk in chunks.values())
    assert all(chunk.compression == "SNAPPY" for chunk in chunks.values())


def test_batches_whose_types_differ_are_unified_or_written_apart(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.record(
        [
            batch(0, pd.DataFrame({"x": [1, 2]})),
            batch(2, pd.DataFrame({"x": [0.5]})),  # int and float: one file, a float column
        ]
    )
    assert log.flush() == 3
    [one] = list(tmp_path.rglob("*.parquet"))
    assert pq.read_table(one).column("inputs").type.field("x").type == pa.float64()

    later = T0 + HOUR
    log.record(
        [
            batch(3, pd.DataFrame({"x": [1.5]}), ts_ms=later),
            batch(4, pd.DataFrame({"x": ["text"]}), ts_ms=later),  # no common type: two files
        ]
    )
    assert log.flush() == 2
    files = list(partition_dir(tmp_path, "churn", later).glob("*.parquet"))
    assert len(files) == 2
    assert sorted(ids(tmp_path, "churn")) == ["b0", "b1", "b2", "b3", "b4"]
    assert [r["request_id"] for r in recent(tmp_path, "churn", limit=10)][:2] in (["b3", "b4"], ["b4", "b3"])


def test_a_shadow_batch_that_failed_keeps_its_error(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    log.record(
        [
            batch(0, frame),
            batch(
                0,
                frame,
                role="shadow",
                predictions=None,
                probabilities=None,
                status="error",
                error="the model failed: boom",
            ),
        ]
    )
    assert log.flush() == 4
    shadow = [plain(r) for r in read_all(tmp_path, "churn").to_pylist() if r["role"] == "shadow"]
    assert [r["outputs"] for r in shadow] == [{"error": "the model failed: boom"}] * 2
    assert [r["status"] for r in shadow] == ["error", "error"]
    assert [r["request_id"] for r in shadow] == ["b0", "b1"]  # the primary's ids, to compare answers


def test_a_batch_arrow_cannot_encode_is_rejected_whole_and_the_rest_is_written(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path)
    log.record(
        [
            batch(0, pd.DataFrame({"note": ["fine"]})),
            batch(1, pd.DataFrame({"note": pd.Series(["ok", "bad \ud800"], dtype=object)})),
            batch(3, pd.DataFrame({"note": ["fine too"]})),
        ]
    )
    assert log.flush() == 2
    assert log.rejected == 2 and log.pending == 0
    assert sorted(ids(tmp_path, "churn")) == ["b0", "b3"]


def test_buffer_capacity_counts_rows_and_drops_oldest_batches_whole(tmp_path: Path) -> None:
    blocker = tmp_path / "endpoint=churn"
    blocker.write_text("in the way")
    log = PredictionLog(tmp_path, max_buffer_rows=5)  # capacity 50 rows
    frame = pd.DataFrame({"x": [float(i) for i in range(10)]})
    log.record([batch(i * 10, frame) for i in range(5)])
    with pytest.raises(StoreUnavailable):
        log.flush()
    assert log.pending == 50 and log.dropped == 0
    log.record([batch(50, frame.iloc[:3].reset_index(drop=True))])
    assert log.pending == 43 and log.dropped == 10  # the oldest request went, all of its rows

    blocker.unlink()
    assert log.flush() == 43
    assert sorted(ids(tmp_path, "churn")) == sorted(f"b{i}" for i in [*range(10, 50), 50, 51, 52])


def test_a_batch_needs_one_value_per_row() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(ValidationFailed):
        batch(0, frame, versions=[3])
    with pytest.raises(ValidationFailed):
        batch(0, frame, keys=["only one"])
    with pytest.raises(ValidationFailed):
        batch(0, frame, endpoint="../escape")


def test_many_requests_of_one_shape_are_encoded_together_each_row_keeping_its_own_fields(
    tmp_path: Path,
) -> None:
    # A flush builds each column once for all the requests of one shape; every row must still carry its own
    # request's id, row index, key, version, role, time, latency, inputs and outputs.
    log = PredictionLog(tmp_path)
    sizes = [1, 3, 1, 2, 5, 1]
    expected: dict[str, dict[str, Any]] = {}
    first = 0
    for k, n in enumerate(sizes):
        frame = pd.DataFrame({"a": [float(first + i) for i in range(n)], "b": [k * 10 + i for i in range(n)]})
        role = "shadow" if k % 3 == 2 else "primary"
        keys = [f"key{k}.{i}" for i in range(n)] if k % 2 else None
        log.record(
            [
                batch(
                    first,
                    frame,
                    ts_ms=T0 + k,
                    role=role,
                    latency_ms=float(k),
                    versions=[k] * n,
                    keys=keys,
                    predictions=[k * 100 + i for i in range(n)],
                )
            ]
        )
        for i in range(n):
            expected[f"b{first + i}"] = {
                "row": i,
                "key": keys[i] if keys else "",
                "version": k,
                "role": role,
                "ts": datetime.fromtimestamp((T0 + k) / 1000, tz=UTC),
                "latency_ms": float(k),
                "inputs": {"a": float(first + i), "b": k * 10 + i},
                "prediction": k * 100 + i,
                "probabilities": [0.5 - i / 10, 0.5 + i / 10],
            }
        first += n
    assert log.flush() == sum(sizes)
    [path] = list(tmp_path.rglob("*.parquet"))
    got = {
        r["request_id"]: {
            "row": r["row"],
            "key": r["key"],
            "version": r["version"],
            "role": r["role"],
            "ts": r["ts"],
            "latency_ms": r["latency_ms"],
            "inputs": r["inputs"],
            "prediction": r["outputs"]["prediction"],
            "probabilities": r["outputs"]["probabilities"],
        }
        for r in pq.read_table(path).to_pylist()
    }
    assert got == expected


def test_float_frames_from_the_parser_are_stacked_with_nan_as_missing(tmp_path: Path) -> None:
    # All-float request frames (the parser's fast path) are stacked as one array at flush time; the file
    # must hold the same values, NaN as a missing value, as when each frame is converted on its own.
    from bridgehead.serving.protocols import is_float_frame, parse_body

    bodies = [
        b'{"records": [{"a": 1.5, "b": 2.0}]}',
        b'{"records": [{"a": NaN, "b": 4.0}, {"a": 5.0, "b": 6.5}]}',
    ]
    frames = [parse_body("application/json", body, "native", None).frame for body in bodies]
    assert all(is_float_frame(f) for f in frames)
    log = PredictionLog(tmp_path)
    batches = [batch(0, frames[0]), batch(1, frames[1])]
    assert all(isinstance(b.inputs, FloatInputs) for b in batches)  # kept as names and an array, not a frame
    log.record(batches)
    assert log.flush() == 3
    table = read_all(tmp_path, "churn")
    assert table.column("inputs").type == pa.struct([("a", pa.float64()), ("b", pa.float64())])
    inputs = {r["request_id"]: r["inputs"] for r in table.to_pylist()}
    assert inputs == {"b0": {"a": 1.5, "b": 2.0}, "b1": {"a": None, "b": 4.0}, "b2": {"a": 5.0, "b": 6.5}}


def test_rows_of_one_request_answered_by_two_models_keep_their_own_model(tmp_path: Path) -> None:
    # A request split by an A/B policy: each row names the model and version that answered it.
    log = PredictionLog(tmp_path)
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0]})
    log.record(
        [
            batch(0, frame, model_names=["champion", "challenger", "champion"], versions=[3, 4, 3]),
            batch(3, frame.iloc[:1]),
        ]
    )
    assert log.flush() == 4
    rows = {r["request_id"]: (r["model_name"], r["version"]) for r in read_all(tmp_path, "churn").to_pylist()}
    assert rows == {
        "b0": ("champion", 3),
        "b1": ("challenger", 4),
        "b2": ("champion", 3),
        "b3": ("churn-model", 3),
    }


def test_probabilities_handed_over_as_arrays_or_lists_are_stored_alike(tmp_path: Path) -> None:
    # The inference path hands one array per request (rows x classes); other writers may hand lists.
    log = PredictionLog(tmp_path)
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    log.record(
        [
            batch(0, frame, probabilities=np.array([[0.25, 0.75], [0.5, 0.5]])),
            batch(2, frame, probabilities=np.array([[1.0, 0.0], [0.125, 0.875]])),
        ]
    )
    log.record(
        [
            batch(4, frame.iloc[:1], probabilities=[[0.3, 0.7]]),
            batch(5, frame.iloc[:1], probabilities=np.array([[0.6, 0.4]])),
        ]
    )
    assert log.flush() == 6
    got = {r["request_id"]: r["outputs"]["probabilities"] for r in read_all(tmp_path, "churn").to_pylist()}
    assert got == {
        "b0": [0.25, 0.75],
        "b1": [0.5, 0.5],
        "b2": [1.0, 0.0],
        "b3": [0.125, 0.875],
        "b4": [0.3, 0.7],
        "b5": [0.6, 0.4],
    }


def test_predictions_handed_over_as_arrays_or_lists_are_stored_alike(tmp_path: Path) -> None:
    """The inference path hands the model's array of predictions; other writers hand lists. A flush of arrays
    of one kind joins them in one step; arrays of other kinds, or mixed with lists, go value by value; values
    of mixed kinds are kept as JSON text, never rejected."""

    def written(*parts: Any) -> pa.Table:
        root = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        log = PredictionLog(root)
        frame = pd.DataFrame({"x": [1.0, 2.0]})
        log.record([batch(2 * i, frame, predictions=p) for i, p in enumerate(parts)])
        assert log.flush() == 2 * len(parts)
        assert log.rejected == 0
        return read_all(root, "churn")

    def predictions(table: pa.Table) -> dict[str, Any]:
        return {r["request_id"]: r["outputs"]["prediction"] for r in table.to_pylist()}

    as_arrays = written(np.array([0, 1]), np.array([1, 1]))
    as_lists = written([0, 1], [1, 1])
    assert as_arrays.schema.field("outputs").type == as_lists.schema.field("outputs").type
    assert predictions(as_arrays) == predictions(as_lists) == {"b0": 0, "b1": 1, "b2": 1, "b3": 1}

    mixed = written(np.array([0.5, float("nan")]), [2.5, 1.0])
    got = predictions(mixed)
    assert got["b0"] == 0.5 and got["b1"] != got["b1"] and (got["b2"], got["b3"]) == (2.5, 1.0)
    assert predictions(written(np.array([True, False]), np.array([False, False]))) == {
        "b0": True,
        "b1": False,
        "b2": False,
        "b3": False,
    }
    assert predictions(written(np.array(["yes", "no"]), np.array(["no", "no"]))) == {
        "b0": "yes",
        "b1": "no",
        "b2": "no",
        "b3": "no",
    }
    # Numbers and text from one model: JSON text per row.
    assert predictions(written(np.array([1, "a"], dtype=object), np.array([2, 3]))) == {
        "b0": "1",
        "b1": '"a"',
        "b2": "2",
        "b3": "3",
    }


def test_requests_handed_over_by_request_id_with_one_model_name_their_rows_as_the_answer_does(
    tmp_path: Path,
) -> None:
    # The inference path hands over a request's id, model and version once; the file must name each row as the
    # answer did (`row_ids`) and give every row the model and version, also when such requests share a flush
    # with requests that list theirs row by row.
    from bridgehead.serving.protocols import parse_body

    def body(values: list[float]) -> pd.DataFrame:
        records = ",".join(f'{{"a": {v}, "b": {v * 2}}}' for v in values)
        return parse_body("application/json", f'{{"records": [{records}]}}'.encode(), "native", None).frame

    def compact(
        request_id: str, values: list[float], model: str = "champion", version: int = 7
    ) -> PredictionBatch:
        return batch(0, body(values), ids=request_id, model_names=model, versions=version)

    log = PredictionLog(tmp_path)
    # Each flush takes another way of naming rows: all of many rows, all single rows, a mix, and with a
    # request that lists its own.
    flushes = [
        [compact("req-a", [1.0, 2.0, 3.0]), compact("req-c", [5.0, 6.0], "challenger", 8)],
        [compact("req-b", [4.0])],
        [compact("req-e", [11.0]), compact("req-f", [12.0, 13.0])],
        [compact("req-d", [7.0, 8.0]), batch(10, body([9.0, 10.0]))],
        [batch(0, body([14.0]), ids="req-g", model_names="champion", versions=np.int64(7))],
    ]
    for items in flushes:
        log.record(items)
        assert log.flush() == sum(len(b) for b in items)
    table = read_all(tmp_path, "churn")
    got = {
        r["request_id"]: (r["row"], r["model_name"], r["version"], r["inputs"]["a"])
        for r in table.to_pylist()
    }
    assert row_ids("req-a", 3) == ["req-a.0", "req-a.1", "req-a.2"] and row_ids("req-b", 1) == ["req-b"]
    assert got == {
        "req-a.0": (0, "champion", 7, 1.0),
        "req-a.1": (1, "champion", 7, 2.0),
        "req-a.2": (2, "champion", 7, 3.0),
        "req-b": (0, "champion", 7, 4.0),
        "req-c.0": (0, "challenger", 8, 5.0),
        "req-c.1": (1, "challenger", 8, 6.0),
        "req-d.0": (0, "champion", 7, 7.0),
        "req-d.1": (1, "champion", 7, 8.0),
        "b10": (0, "churn-model", 3, 9.0),
        "b11": (1, "churn-model", 3, 10.0),
        "req-e": (0, "champion", 7, 11.0),
        "req-f.0": (0, "champion", 7, 12.0),
        "req-f.1": (1, "champion", 7, 13.0),
        "req-g": (0, "champion", 7, 14.0),
    }
    assert table.column("version").type == pa.int32()


def test_requests_sharing_an_index_object_or_not_are_grouped_by_their_column_names(tmp_path: Path) -> None:
    """The inference path labels its float frames with shared Index objects (`protocols.column_index`), and a
    flush lists each object's names once; requests with other objects of the same names still join them, and
    requests of other names keep theirs."""
    shared_ab, shared_ac = column_index(("a", "b")), column_index(("a", "c"))

    def floats(columns: pd.Index, rows: list[list[float]]) -> FloatInputs:
        return FloatInputs(columns, np.array(rows))

    log = PredictionLog(tmp_path)
    log.record(
        [
            batch(0, floats(shared_ab, [[0.0, 1.0]])),
            batch(1, floats(shared_ac, [[1.0, 2.0], [1.5, 2.5]])),
            batch(3, floats(pd.Index(["a", "b"], dtype=object), [[3.0, 4.0]])),  # another Index object
            batch(4, floats(shared_ab, [[4.0, 5.0]])),
            batch(5, floats(shared_ac, [[5.0, 6.0]])),
        ]
    )
    assert log.flush() == 6
    rows = {r["request_id"]: plain(r)["inputs"] for r in read_all(tmp_path, "churn").to_pylist()}
    assert rows == {
        "b0": {"a": 0.0, "b": 1.0},
        "b1": {"a": 1.0, "c": 2.0},
        "b2": {"a": 1.5, "c": 2.5},
        "b3": {"a": 3.0, "b": 4.0},
        "b4": {"a": 4.0, "b": 5.0},
        "b5": {"a": 5.0, "c": 6.0},
    }

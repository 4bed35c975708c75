"""Data contracts (pure): every expectation kind against a reference computation on the same data, the
standardization clean-ups, and the messages of contracts that do not parse."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bridgehead.data.contracts import (
    SAMPLE_ROWS,
    ContractReport,
    ExpectationResult,
    parse_contract,
    standardize,
    validate_frame,
)

N = 5_000
NOW = dt.datetime(2024, 6, 30, 12, 0, tzinfo=dt.UTC)


def result(report: ContractReport, expectation_id: str) -> ExpectationResult:
    found = [e for e in report.expectations if e.id == expectation_id]
    assert len(found) == 1, [e.id for e in report.expectations]
    return found[0]


def check(frame: pl.LazyFrame, contract: str, now: dt.datetime = NOW) -> ContractReport:
    return validate_frame(frame, parse_contract(contract), now=now)


@pytest.fixture(scope="module")
def table() -> pa.Table:
    rng = np.random.default_rng(11)
    income = rng.normal(50_000, 20_000, N)
    income_nulls = rng.random(N) < 0.03
    ids = np.array([f"A-{i:08d}" for i in range(N)], dtype=object)
    picked = rng.choice(N, 47, replace=False)
    ids[picked[:40]] = "A-BAD"  # breaks the regex; also 39 surplus duplicates
    ids[picked[40:]] = None
    regions = rng.choice(
        ["north", "south", "east", "west", "up", "down"], N, p=[0.3, 0.3, 0.2, 0.1, 0.06, 0.04]
    )
    return pa.table(
        {
            "applicant_id": pa.array(ids, type=pa.string()),
            "income": pa.array(income, mask=income_nulls),
            "age": pa.array(rng.integers(10, 100, N)),
            "region": pa.array(regions),
            "applied_on": pa.array(
                [dt.date(2024, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 180, N)]
            ),
        }
    )


@pytest.fixture(scope="module")
def parquet(table: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contracts") / "applicants.parquet"
    pq.write_table(table, path, row_group_size=1_000)
    return path


@pytest.fixture
def lazy(parquet: Path) -> pl.LazyFrame:
    return pl.scan_parquet(parquet)


@pytest.fixture(scope="module")
def reference(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def test_not_null_counts_the_nulls_and_samples_them(lazy: pl.LazyFrame, reference: pd.DataFrame) -> None:
    report = check(lazy, "columns: {applicant_id: {nullable: false}, age: {nullable: false}}")
    bad = result(report, "applicant_id.not_null")
    assert bad.failing_count == int(reference["applicant_id"].isna().sum()) == 7
    assert not bad.passed and not report.passed
    assert len(bad.sample) == SAMPLE_ROWS
    assert all(row["applicant_id"] is None for row in bad.sample)
    assert set(bad.sample[0]) == set(reference.columns)  # whole rows, to see what else is there
    good = result(report, "age.not_null")
    assert good.passed and good.failing_count == 0 and good.sample == []
    assert [e.id for e in report.failed] == ["applicant_id.not_null"]
    assert report.row_count == N


def test_max_null_share_passes_under_and_fails_over_the_share(
    lazy: pl.LazyFrame, reference: pd.DataFrame
) -> None:
    share = float(reference["income"].isna().mean())
    assert 0.01 < share < 0.05
    passing = result(check(lazy, "columns: {income: {max_null_share: 0.05}}"), "income.max_null_share")
    assert passing.passed and passing.failing_count == 0
    assert passing.observed == pytest.approx(share)
    failing = result(check(lazy, "columns: {income: {max_null_share: 0.01}}"), "income.max_null_share")
    assert not failing.passed
    assert failing.failing_count == int(reference["income"].isna().sum())
    assert failing.observed == pytest.approx(share)
    assert "income" in failing.message and "1.00%" in failing.message
    assert failing.sample and all(row["income"] is None for row in failing.sample)


@pytest.mark.parametrize(("low", "high"), [(18, None), (None, 65), (18, 65)])
def test_range_counts_values_outside_the_bounds(
    lazy: pl.LazyFrame, reference: pd.DataFrame, low: int | None, high: int | None
) -> None:
    bounds = ", ".join(f"{k}: {v}" for k, v in (("min", low), ("max", high)) if v is not None)
    report = check(lazy, f"columns: {{age: {{{bounds}}}}}")
    got = result(report, "age.range")
    age = reference["age"]
    outside = (age < (low if low is not None else -np.inf)) | (age > (high if high is not None else np.inf))
    assert got.failing_count == int(outside.sum()) > 0
    assert not got.passed and got.expected == [low, high]
    low = low if low is not None else -(10**9)
    high = high if high is not None else 10**9
    assert got.sample and all(not (low <= row["age"] <= high) for row in got.sample)


def test_range_on_a_float_column_ignores_nulls(lazy: pl.LazyFrame, reference: pd.DataFrame) -> None:
    got = result(check(lazy, "columns: {income: {min: 0}}"), "income.range")
    assert got.failing_count == int((reference["income"] < 0).sum()) > 0
    assert all(row["income"] < 0 for row in got.sample)
    assert result(check(lazy, "columns: {income: {min: -1e9, max: 1e9}}"), "income.range").passed


def test_allowed_values(lazy: pl.LazyFrame, reference: pd.DataFrame) -> None:
    report = check(lazy, "columns: {region: {allowed_values: [north, south, east, west]}}")
    got = result(report, "region.allowed_values")
    outside = ~reference["region"].isin(["north", "south", "east", "west"])
    assert got.failing_count == int(outside.sum()) > 0
    assert {row["region"] for row in got.sample} <= {"up", "down"}
    assert got.expected == ["north", "south", "east", "west"]
    wide = "columns: {region: {allowed_values: [north, south, east, west, up, down]}}"
    assert result(check(lazy, wide), "region.allowed_values").passed


def test_allowed_values_on_integers_and_nulls_are_not_failures() -> None:
    frame = pl.LazyFrame({"n": [1, 2, 3, None, 2]})
    got = result(check(frame, "columns: {n: {allowed_values: [1, 2]}}"), "n.allowed_values")
    assert got.failing_count == 1 and got.sample == [{"n": 3}]


def test_allowed_values_on_booleans_and_floats() -> None:
    frame = pl.LazyFrame({"flag": [True, False, None], "f": [1.0, 2.0, 3.0]})
    report = check(frame, "columns: {flag: {allowed_values: [true, false]}, f: {allowed_values: [1, 2]}}")
    assert result(report, "flag.allowed_values").failing_count == 0
    assert result(report, "f.allowed_values").failing_count == 1


def test_regex(lazy: pl.LazyFrame, reference: pd.DataFrame) -> None:
    got = result(check(lazy, 'columns: {applicant_id: {regex: "^A-[0-9]{8}$"}}'), "applicant_id.regex")
    ids = reference["applicant_id"]
    expected = int((ids.notna() & ~ids.fillna("").str.fullmatch(r"A-[0-9]{8}")).sum())
    assert got.failing_count == expected == 40
    assert got.sample and {row["applicant_id"] for row in got.sample} == {"A-BAD"}


def test_unique_counts_surplus_duplicates(lazy: pl.LazyFrame, reference: pd.DataFrame) -> None:
    got = result(check(lazy, "columns: {applicant_id: {unique: true}}"), "applicant_id.unique")
    present = reference["applicant_id"].dropna()
    assert got.failing_count == int(present.duplicated().sum()) == 39
    assert {row["applicant_id"] for row in got.sample} == {"A-BAD"}
    assert len(got.sample) == SAMPLE_ROWS
    small = pl.LazyFrame({"u": [1, 2, 2, 3, 3, 3, None, None], "k": list(range(8))})
    got = result(check(small, "columns: {u: {unique: true}}"), "u.unique")
    assert got.failing_count == 3  # one surplus 2, two surplus 3s; nulls are not duplicates
    assert sorted(row["u"] for row in got.sample) == [2, 2, 3, 3, 3]
    assert result(check(small, "columns: {k: {unique: true}}"), "k.unique").passed


def test_type(lazy: pl.LazyFrame) -> None:
    contract = """
    columns:
      applicant_id: {type: string}
      income: {type: number}
      age: {type: integer}
      applied_on: {type: date}
      region: {type: integer}
    """
    report = check(lazy, contract)
    for name in ("applicant_id", "income", "age", "applied_on"):
        assert result(report, f"{name}.type").passed, name
    wrong = result(report, "region.type")
    assert not wrong.passed and wrong.observed == "String"
    assert "region" in wrong.message and "integer" in wrong.message
    assert not result(check(lazy, "columns: {income: {type: integer}}"), "income.type").passed
    assert not result(check(lazy, "columns: {age: {type: float}}"), "age.type").passed


def test_present_reports_a_missing_column(lazy: pl.LazyFrame) -> None:
    report = check(lazy, "columns: {branch: {type: string, nullable: false, min: 1}, age: {}}")
    present = result(report, "branch.present")
    assert not present.passed and present.observed is False
    assert "branch" in present.message and "missing" in present.message
    assert not result(report, "branch.type").passed
    # Only presence and type apply to a missing column.
    assert {e.id for e in report.expectations} == {"branch.present", "branch.type", "age.present"}
    assert result(report, "age.present").passed and not report.passed


def test_optional_column_may_be_missing() -> None:
    report = check(pl.LazyFrame({"a": [1]}), "columns: {note: {required: false, type: string}}")
    assert result(report, "note.present").passed
    assert report.passed


@pytest.mark.parametrize(
    ("rows", "passed"),
    [("{min: 1000}", True), ("{min: 5001}", False), ("{max: 5000}", True), ("{max: 4999}", False)],
)
def test_row_count(lazy: pl.LazyFrame, rows: str, passed: bool) -> None:
    report = check(lazy, f"rows: {rows}")
    got = result(report, "rows")
    assert got.observed == N and got.passed is passed and report.passed is passed
    assert got.failing_count == 0
    assert ("5000 rows" in got.message) is not passed


def test_freshness_on_dates_and_timestamps(lazy: pl.LazyFrame, reference: pd.DataFrame) -> None:
    newest = max(reference["applied_on"])
    contract = "columns: {applied_on: {type: date}}\nfreshness: {column: applied_on, max_age: 3d}"
    # A date counts until the end of its day.
    end_of_day = dt.datetime.combine(newest, dt.time.max, tzinfo=dt.UTC)
    fresh = result(check(lazy, contract, now=end_of_day + dt.timedelta(days=3)), "applied_on.freshness")
    assert fresh.passed and fresh.observed == end_of_day.isoformat()
    stale = result(
        check(lazy, contract, now=end_of_day + dt.timedelta(days=3, seconds=1)), "applied_on.freshness"
    )
    assert not stale.passed and "3d" in stale.message

    stamps = pl.LazyFrame({"at": [dt.datetime(2024, 6, 1), dt.datetime(2024, 6, 29, 0, 0), None]})
    rule = "freshness: {column: at, max_age: 36h}"
    assert result(check(stamps, rule, now=dt.datetime(2024, 6, 30, 12, tzinfo=dt.UTC)), "at.freshness").passed
    late = result(check(stamps, rule, now=dt.datetime(2024, 6, 30, 12, 1, tzinfo=dt.UTC)), "at.freshness")
    assert not late.passed and late.observed == "2024-06-29T00:00:00+00:00"
    empty = pl.LazyFrame({"at": pl.Series([None, None], dtype=pl.Datetime)})
    assert not result(check(empty, rule), "at.freshness").passed


def test_all_expectations_run_together_and_passing_report(lazy: pl.LazyFrame) -> None:
    contract = """
    columns:
      applicant_id: {type: string}
      income: {type: number, max_null_share: 0.05}
      age: {type: integer, nullable: false, min: 10, max: 99}
      region: {allowed_values: [north, south, east, west, up, down]}
    rows: {min: 1, max: 10000}
    freshness: {column: applied_on, max_age: 1w}
    """
    with pytest.raises(ValueError, match="freshness column 'applied_on'"):
        parse_contract(contract)
    report = check(lazy, contract.replace("freshness: {column: applied_on", "freshness: {column: age"))
    assert [e.id for e in report.failed] == ["age.freshness"]  # an integer is not a date
    ok = check(lazy, contract.replace("    freshness: {column: applied_on, max_age: 1w}\n", ""))
    assert ok.passed and ok.failed == [] and ok.row_count == N
    assert (
        parse_contract(contract.split("    freshness")[0]).expectation_count() == len(ok.expectations) == 12
    )


# -- standardization --------------------------------------------------------------------------------------


def test_standardize_parses_dates_written_day_first() -> None:
    contract = parse_contract("columns: {d: {type: date, standardize: {date_format: '%d/%m/%Y'}}}")
    frame = pl.LazyFrame({"d": ["31/12/2024", "01/02/2023", "not a date", None], "other": [1, 2, 3, 4]})
    out = standardize(frame, contract).collect()
    assert out.schema["d"] == pl.Date and out.schema["other"] == pl.Int64
    assert out["d"].to_list() == [dt.date(2024, 12, 31), dt.date(2023, 2, 1), None, None]
    report = validate_frame(standardize(frame, contract), contract)
    assert result(report, "d.type").passed
    assert not result(validate_frame(frame, contract), "d.type").passed  # as text it was not a date


def test_standardize_reads_european_numbers(tmp_path: Path) -> None:
    path = tmp_path / "amounts.csv"
    path.write_text('amount\n"1.234,5"\n"12,25"\n"1.000.000"\n7\n\n')
    contract = parse_contract(
        "columns: {amount: {type: number, min: 0, max: 1000000, "
        "standardize: {decimal_separator: ',', thousands_separator: '.'}}}"
    )
    raw = pl.scan_csv(path, infer_schema=False)
    out = standardize(raw, contract).collect()
    assert out.schema["amount"] == pl.Float64
    assert out["amount"].to_list() == [1234.5, 12.25, 1_000_000.0, 7.0, None]
    assert validate_frame(standardize(raw, contract), contract).passed
    assert not result(validate_frame(raw, contract), "amount.type").passed


def test_standardize_canonicalizes_category_spellings() -> None:
    contract_text = """
    columns:
      region:
        type: string
        allowed_values: [north, south, east, west]
        standardize: {strip: true, case: lower, map: {n: north, s: south}}
    """
    contract = parse_contract(contract_text)
    frame = pl.LazyFrame({"region": [" North", "SOUTH ", "n", "S", "East", "west", None]})
    assert result(validate_frame(frame, contract), "region.allowed_values").failing_count == 5
    cleaned = standardize(frame, contract)
    assert cleaned.collect()["region"].to_list() == ["north", "south", "north", "south", "east", "west", None]
    report = validate_frame(cleaned, contract)
    assert report.passed, report.failed


def test_the_documented_standardize_example_canonicalizes_regions() -> None:
    contract = parse_contract(
        "columns: {region: {type: string, allowed_values: [north, south, east, west], "
        "standardize: {case: lower, strip: true, map: {N: north, S: south}}}}"
    )
    frame = pl.LazyFrame({"region": ["N", " S ", "EAST", "west"]})
    assert validate_frame(standardize(frame, contract), contract).passed


def test_standardize_keeps_integers_with_thousands_separators_integers() -> None:
    contract = parse_contract("columns: {n: {type: integer, standardize: {thousands_separator: ','}}}")
    frame = pl.LazyFrame({"n": ["1,234", "5"]})
    out = standardize(frame, contract).collect()
    assert out["n"].to_list() == [1234, 5]
    assert validate_frame(standardize(frame, contract), contract).passed


def test_standardize_leaves_other_columns_alone() -> None:
    contract = parse_contract("columns: {a: {type: integer}, b: {standardize: {strip: true}}}")
    frame = pl.LazyFrame({"a": [" 1"], "b": [" x "], "c": [" y "]})
    out = standardize(frame, contract).collect()
    assert out.to_dicts() == [{"a": " 1", "b": "x", "c": " y "}]


# -- invalid contracts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("columns: [a", "not valid YAML"),
        ("- a\n- b", "a contract is a mapping"),
        ("colums: {a: {}}", "colums"),
        ("columns: {a: {nulable: false}}", "nulable"),
        ("columns: {a: {regex: '([a-z'}}", "invalid regular expression"),
        ("columns: {a: {min: 5, max: 1}}", "min is greater than max"),
        ("freshness: {column: a, max_age: soon}", "max_age must be a number and a unit"),
        ("freshness: {column: a, max_age: 3y}", "max_age must be a number and a unit"),
        ("columns: {a: {type: text}}", "'number', 'integer'"),
        ("columns: {a: {max_null_share: 1.5}}", "max_null_share"),
        (
            "columns: {a: {standardize: {decimal_separator: ',', thousands_separator: ','}}}",
            "must differ",
        ),
        ("columns: {a: {}}\nfreshness: {column: b, max_age: 1d}", "freshness column 'b'"),
    ],
)
def test_invalid_contracts_raise_readable_value_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        parse_contract(text)
    assert "Traceback" not in str(raised.value)


def test_empty_contract_has_no_expectations() -> None:
    assert parse_contract("").expectation_count() == 0
    assert validate_frame(pl.LazyFrame({"a": [1]}), parse_contract("")).passed

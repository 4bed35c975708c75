"""Data contracts: declarative expectations per dataset, validated in one streaming pass (pure; polars).

A contract is YAML (or the same structure as JSON through the API)::

    columns:
      applicant_id: {type: string, nullable: false, unique: true, regex: "^A-[0-9]{8}$"}
      income:       {type: number, max_null_share: 0.05, min: 0, max: 10000000}
      region:       {type: string, allowed_values: [north, south, east, west],
                     standardize: {case: lower, strip: true, map: {N: north, S: south}}}
      applied_on:   {type: date, standardize: {date_format: "%d/%m/%Y"}}
      amount:       {type: number, standardize: {decimal_separator: ",", thousands_separator: "."}}
    rows: {min: 1000, max: 10000000}
    freshness: {column: applied_on, max_age: 30d}

Every expectation becomes one polars aggregate counting the rows that break it; all of them run in a single
streaming query, so memory stays bounded and the file is read once. Only for failing expectations a second,
limited query fetches a few sample rows.

Why not Great Expectations or pandera: on the 5 M-row benchmark file Great Expectations (pandas) takes 28-38 s
and 3 GB; pandera's polars backend is fast but collects the whole frame and reports every failing row, where a
gate in a pipeline needs failing counts and a handful of examples from files larger than memory. The
expectations here compile to plain polars expressions, which is the engine pandera's polars backend uses too.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ColumnRule",
    "Contract",
    "ContractReport",
    "ExpectationResult",
    "Standardize",
    "parse_contract",
    "standardize",
    "validate_frame",
]

ColumnType = Literal["number", "integer", "float", "string", "boolean", "date", "datetime"]
SAMPLE_ROWS = 5
_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class Standardize(BaseModel):
    """Clean-ups applied on ingest, before validation: the usual mess across source systems."""

    model_config = ConfigDict(extra="forbid")

    strip: bool = False
    case: Literal["lower", "upper", "title"] | None = None
    map: dict[str, str] = Field(default_factory=dict, description="spelling -> canonical value")
    date_format: str | None = Field(None, description="strptime format of dates/times written as text")
    decimal_separator: Literal[".", ","] | None = None
    thousands_separator: Literal[".", ",", " ", "'", "_"] | None = None

    @model_validator(mode="after")
    def _separators_differ(self) -> Standardize:
        if self.decimal_separator and self.decimal_separator == self.thousands_separator:
            raise ValueError("decimal_separator and thousands_separator must differ")
        return self


class ColumnRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ColumnType | None = None
    required: bool = True
    nullable: bool = True
    max_null_share: float | None = Field(None, ge=0, le=1)
    min: float | None = None
    max: float | None = None
    allowed_values: list[str | int | float | bool] | None = None
    regex: str | None = None
    unique: bool = False
    standardize: Standardize | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _range_ordered(self) -> ColumnRule:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self


class RowRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)


class FreshnessRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    column: str
    max_age: str = Field(description="e.g. 36h, 7d, 2w")

    @field_validator("max_age")
    @classmethod
    def _age_parses(cls, value: str) -> str:
        if not _AGE.match(value):
            raise ValueError("max_age must be a number and a unit among s, m, h, d, w (e.g. 7d)")
        return value

    def delta(self) -> dt.timedelta:
        match = _AGE.match(self.max_age)
        assert match is not None  # checked by the validator
        return dt.timedelta(**{_AGE_UNITS[match.group(2)]: int(match.group(1))})


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    columns: dict[str, ColumnRule] = Field(default_factory=dict)
    rows: RowRule | None = None
    freshness: FreshnessRule | None = None

    @model_validator(mode="after")
    def _freshness_column_declared(self) -> Contract:
        if self.freshness and self.columns and self.freshness.column not in self.columns:
            raise ValueError(
                f"freshness column {self.freshness.column!r} is not among the contract's columns"
            )
        return self

    def expectation_count(self) -> int:
        return len(_expectations(self, None))


class ExpectationResult(BaseModel):
    id: str
    column: str | None
    expectation: str
    passed: bool
    failing_count: int
    observed: Any = None
    expected: Any = None
    message: str = ""
    sample: list[dict[str, Any]] = Field(default_factory=list)


class ContractReport(BaseModel):
    passed: bool
    row_count: int
    expectations: list[ExpectationResult]

    @property
    def failed(self) -> list[ExpectationResult]:
        return [e for e in self.expectations if not e.passed]


def parse_contract(text: str) -> Contract:
    """A contract from YAML (JSON is YAML too). Raises ValueError with a readable message."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"the contract is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("a contract is a mapping with 'columns', 'rows' and 'freshness'")
    return Contract.model_validate(data)


# -- standardization ---------------------------------------------------------------------------------------


def standardize(frame: pl.LazyFrame, contract: Contract) -> pl.LazyFrame:
    """Applies the contract's `standardize` blocks; columns without one pass through unchanged."""
    schema = frame.collect_schema()
    exprs = []
    for name, rule in contract.columns.items():
        if rule.standardize is None or name not in schema:
            continue
        exprs.append(_standardized(pl.col(name), schema[name], rule).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def _standardized(col: pl.Expr, dtype: pl.DataType, rule: ColumnRule) -> pl.Expr:
    std = rule.standardize
    assert std is not None
    # Already in the target type (a file standardized before, or a typed source): nothing to parse.
    if std.date_format and (dtype == pl.Date or isinstance(dtype, pl.Datetime)):
        return col
    if (std.decimal_separator or std.thousands_separator) and dtype.is_numeric():
        return col
    text = col if dtype == pl.String else col.cast(pl.String)
    touched = False
    if std.strip:
        text, touched = text.str.strip_chars(), True
    if std.map:  # exact spellings first ...
        text, touched = text.replace(std.map), True
    if std.case:
        change = {"lower": str.lower, "upper": str.upper, "title": str.title}[std.case]
        text = {
            "lower": text.str.to_lowercase,
            "upper": text.str.to_uppercase,
            "title": text.str.to_titlecase,
        }[std.case]()
        touched = True
        if std.map:  # ... then the same spellings in the chosen case, so {N: north} also maps "n"
            text = text.replace({change(k): v for k, v in std.map.items()})
    if std.thousands_separator:
        text, touched = text.str.replace_all(std.thousands_separator, "", literal=True), True
    if std.decimal_separator == ",":
        text, touched = text.str.replace_all(",", ".", literal=True), True
    if std.date_format:
        kind = pl.Date if rule.type == "date" else pl.Datetime
        return text.str.strptime(kind, std.date_format, strict=False)
    if rule.type == "integer" and (dtype == pl.String or touched):
        return text.cast(pl.Int64, strict=False)
    wants_number = std.decimal_separator or std.thousands_separator or rule.type in ("number", "float")
    if wants_number and (dtype == pl.String or touched):
        return text.cast(pl.Float64, strict=False)
    return text if touched or dtype == pl.String else col


# -- validation --------------------------------------------------------------------------------------------

_TYPE_CHECKS: dict[str, Any] = {
    "number": lambda d: d.is_numeric(),
    "integer": lambda d: d.is_integer(),
    "float": lambda d: d.is_float(),
    "string": lambda d: d in (pl.String, pl.Categorical) or isinstance(d, pl.Enum),
    "boolean": lambda d: d == pl.Boolean,
    "date": lambda d: d == pl.Date or isinstance(d, pl.Datetime),
    "datetime": lambda d: isinstance(d, pl.Datetime) or d == pl.Date,
}


class _Expectation:
    """One check: an aggregate counting failing rows (None for schema-only checks) and a row filter."""

    def __init__(
        self,
        id: str,
        column: str | None,
        expectation: str,
        expected: Any,
        count: pl.Expr | None = None,
        failing_rows: pl.Expr | None = None,
    ) -> None:
        self.id, self.column, self.expectation, self.expected = id, column, expectation, expected
        self.count, self.failing_rows = count, failing_rows
        self.required = True


def _expectations(contract: Contract, schema: pl.Schema | None) -> list[_Expectation]:
    out: list[_Expectation] = []
    for name, rule in contract.columns.items():
        c = pl.col(name)
        out.append(_Expectation(f"{name}.present", name, "present", rule.required))
        if rule.type:
            typed = _Expectation(f"{name}.type", name, "type", rule.type)
            typed.required = rule.required
            out.append(typed)
        if schema is not None and name not in schema:
            continue  # only the presence check applies to a missing column
        dtype: pl.DataType = schema[name] if schema is not None else pl.String()
        if not rule.nullable:
            out.append(_Expectation(f"{name}.not_null", name, "not_null", True, c.null_count(), c.is_null()))
        if rule.max_null_share is not None:
            out.append(
                _Expectation(
                    f"{name}.max_null_share", name, "max_null_share", rule.max_null_share, c.null_count()
                )
            )
        if rule.min is not None or rule.max is not None:
            numeric = (
                c
                if (dtype.is_numeric() if schema is not None else True)
                else c.cast(pl.Float64, strict=False)
            )
            bad = pl.lit(False)
            if rule.min is not None:
                bad = bad | (numeric < rule.min)
            if rule.max is not None:
                bad = bad | (numeric > rule.max)
            if schema is not None and dtype.is_float():
                bad = bad & ~c.is_nan()  # NaN is a missing value, as in pandas, not an out-of-range one
            bad = bad.fill_null(False)
            out.append(_Expectation(f"{name}.range", name, "range", [rule.min, rule.max], bad.sum(), bad))
        if rule.allowed_values is not None:
            bad = ~_allowed(c, dtype, rule.allowed_values) & c.is_not_null()
            out.append(
                _Expectation(
                    f"{name}.allowed_values", name, "allowed_values", rule.allowed_values, bad.sum(), bad
                )
            )
        if rule.regex is not None:
            bad = (~_as_text(c, dtype).str.contains(rule.regex)).fill_null(False)
            out.append(_Expectation(f"{name}.regex", name, "regex", rule.regex, bad.sum(), bad))
        if rule.unique:
            surplus = c.drop_nulls().len() - c.drop_nulls().n_unique()
            out.append(_Expectation(f"{name}.unique", name, "unique", True, surplus, None))
    if contract.rows is not None:
        out.append(_Expectation("rows", None, "row_count", [contract.rows.min, contract.rows.max]))
    if contract.freshness is not None:
        f = contract.freshness
        out.append(
            _Expectation(f"{f.column}.freshness", f.column, "freshness", f.max_age, pl.col(f.column).max())
        )
    return out


def _allowed(col: pl.Expr, dtype: pl.DataType, values: list[Any]) -> pl.Expr:
    """Membership compared in the column's own terms: numbers as numbers, booleans as booleans."""
    if dtype == pl.Boolean:
        truth = {"true": True, "false": False, "1": True, "0": False}
        wanted = {v if isinstance(v, bool) else truth.get(str(v).lower()) for v in values} - {None}
        return col.is_in(list(wanted))
    if dtype.is_numeric():
        numbers = []
        for v in values:
            try:
                numbers.append(float(v))
            except (TypeError, ValueError):
                continue
        return col.cast(pl.Float64).is_in(numbers)
    return _as_text(col, dtype).is_in([str(v) for v in values])


def _as_text(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    if dtype == pl.String:
        return col
    if dtype == pl.Boolean:
        return pl.when(col).then(pl.lit("true")).when(~col).then(pl.lit("false")).otherwise(None)
    return col.cast(pl.String)


def validate_frame(frame: pl.LazyFrame, contract: Contract, now: dt.datetime | None = None) -> ContractReport:
    """Validates a (lazy) frame against a contract. Standardization is the caller's choice (`standardize`)."""
    schema = frame.collect_schema()
    checks = _expectations(contract, schema)
    aggregates = [pl.len().alias("__rows")]
    for i, check in enumerate(checks):
        if check.count is not None:
            aggregates.append(check.count.alias(f"__{i}"))
    row = frame.select(aggregates).collect(engine="streaming").row(0, named=True)
    rows = int(row["__rows"])
    now = now or dt.datetime.now(dt.UTC)
    results = [_judge(check, row.get(f"__{i}"), rows, schema, now) for i, check in enumerate(checks)]
    for check, result in zip(checks, results, strict=True):
        if not result.passed and result.failing_count:
            result.sample = _sample(frame, check, schema)
    return ContractReport(passed=all(r.passed for r in results), row_count=rows, expectations=results)


def _judge(
    check: _Expectation, value: Any, rows: int, schema: pl.Schema, now: dt.datetime
) -> ExpectationResult:
    r = ExpectationResult(
        id=check.id,
        column=check.column,
        expectation=check.expectation,
        expected=check.expected,
        passed=True,
        failing_count=0,
    )
    name = check.column
    if check.expectation == "present":
        r.observed = name in schema
        r.passed = bool(r.observed) or not check.expected
        r.message = "" if r.observed else f"column {name!r} is missing"
    elif check.expectation == "type":
        if name is None or name not in schema:
            r.observed, r.passed = None, not check.required
            r.message = "" if r.passed else f"column {name!r} is missing"
        else:
            dtype = schema[name]
            r.observed = str(dtype)
            r.passed = bool(_TYPE_CHECKS[str(check.expected)](dtype))
            r.message = "" if r.passed else f"column {name!r} is {dtype}, expected {check.expected}"
    elif check.expectation == "max_null_share":
        share = (value or 0) / rows if rows else 0.0
        r.observed, r.failing_count = share, int(value or 0)
        r.passed = share <= check.expected
        r.message = (
            "" if r.passed else f"{share:.2%} of {name!r} is null (at most {check.expected:.2%} allowed)"
        )
        if r.passed:
            r.failing_count = 0
    elif check.expectation == "row_count":
        low, high = check.expected
        r.observed = rows
        r.passed = (low is None or rows >= low) and (high is None or rows <= high)
        r.message = "" if r.passed else f"{rows} rows, expected between {low} and {high}"
    elif check.expectation == "freshness":
        r.observed, r.passed, r.message = _freshness(value, check.expected, now)
    else:
        count = int(value or 0)
        r.failing_count, r.observed, r.passed = count, count, count == 0
        if count:
            r.message = f"{count} row{'s' if count != 1 else ''} of {name!r} break {check.expectation}"
    return r


def _freshness(newest: Any, max_age: str, now: dt.datetime) -> tuple[Any, bool, str]:
    if newest is None:
        return None, False, "no values to judge freshness by"
    if isinstance(newest, dt.datetime):
        stamp = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
    elif isinstance(newest, dt.date):
        stamp = dt.datetime.combine(newest, dt.time.max, tzinfo=dt.UTC)
    else:
        return str(newest), False, "the freshness column is neither a date nor a timestamp"
    age = now - stamp
    limit = FreshnessRule(column="_", max_age=max_age).delta()
    ok = age <= limit
    return stamp.isoformat(), ok, "" if ok else f"newest value is {age} old (at most {max_age} allowed)"


def _sample(frame: pl.LazyFrame, check: _Expectation, schema: pl.Schema) -> list[dict[str, Any]]:
    if check.expectation == "unique" and check.column:
        col = pl.col(check.column)
        repeated = (
            frame.group_by(check.column)
            .agg(pl.len().alias("__n"))
            .filter(pl.col("__n") > 1)
            .head(SAMPLE_ROWS)
        )
        rows = frame.join(repeated.select(col), on=check.column, how="semi").head(SAMPLE_ROWS)
    elif check.expectation == "max_null_share" and check.column:
        rows = frame.filter(pl.col(check.column).is_null()).head(SAMPLE_ROWS)
    elif check.failing_rows is not None:
        rows = frame.filter(check.failing_rows).head(SAMPLE_ROWS)
    else:
        return []
    return [_jsonable(r) for r in rows.collect(engine="streaming").to_dicts()]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dt.date | dt.datetime | dt.time):
            out[key] = value.isoformat()
        elif isinstance(value, bytes):
            out[key] = value.hex()
        elif isinstance(value, float) and value != value:
            out[key] = None
        else:
            out[key] = value
    return out

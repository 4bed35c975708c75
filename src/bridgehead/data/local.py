"""Profiling and validating data where it lives (the CLI's and the SDK's side of dataset registration)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from bridgehead.data.contracts import Contract, ContractReport, standardize, validate_frame
from bridgehead.data.pii import detect_columns
from bridgehead.data.profile import Profile, Profiler
from bridgehead.data.readers import DataSource, file_digest, open_source
from bridgehead.errors import BadRequest

__all__ = ["Described", "describe", "mixed_type_columns", "standardize_location", "validate_location"]

Progress = Callable[[int], None]


@dataclass
class Described:
    """What a client sends to register a version: the digest, where it is, and the profile."""

    location: str
    format: str
    digest: str
    size_bytes: int | None
    profile: Profile
    column_tags: dict[str, dict[str, Any]]

    def registration(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "location": self.location,
            "format": self.format,
            "size_bytes": self.size_bytes,
            "row_count": self.profile.row_count,
            "profile": self.profile.to_state(),
            "column_tags": self.column_tags,
        }


def _absolute(location: str) -> str:
    return location if "://" in location else str(Path(location).resolve())


def describe(location: str, fmt: str | None = None, *, progress: Progress | None = None) -> Described:
    """Digest and profile of a file in one go; ``progress`` is called with the rows of each batch."""
    source = open_source(location, fmt)
    column_tags: dict[str, dict[str, Any]] = {}
    with Profiler(source.schema) as profiler:
        for batch in source.batches():
            if profiler.profile.row_count == 0:
                column_tags = detect_columns(batch)  # personal data, judged on the first rows
            profiler.update(batch)
            if progress is not None:
                progress(batch.num_rows)
    profile = profiler.profile
    if profile.row_count == 0:
        raise BadRequest(
            f"{location} has no rows; a dataset version needs at least one.", details={"file": location}
        )
    mixed = mixed_type_columns(source, profile)
    if mixed:
        names = ", ".join(repr(m) for m in mixed)
        raise BadRequest(
            f"{location}: column {names} mixes numbers and text; clean the column (a contract's standardize "
            "block can) or quote every value as text",
            details={"file": location, "column": mixed[0]},
        )
    size = os.path.getsize(location) if "://" not in location else None
    return Described(_absolute(location), source.format, file_digest(location), size, profile, column_tags)


def mixed_type_columns(source: DataSource, profile: Profile) -> list[str]:
    """Text columns of CSV/JSON files whose values are mostly numbers with some text among them: a reader
    infers "string" for the whole column, which hides the problem from every later check."""
    if source.format not in ("csv", "jsonl"):
        return []
    mixed = []
    for col in profile.columns.values():
        if col.kind != "string" or col.top is None or not col.top.counts:
            continue
        numeric = sum(c for v, c in col.top.counts.items() if _is_number(v))
        shown = sum(col.top.counts.values())
        if shown - numeric > 0 and numeric / shown >= 0.5:
            mixed.append(col.name)
    return mixed


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def validate_location(location: str, contract: Contract, fmt: str | None = None) -> ContractReport:
    """Validates a file (after the contract's standardization) where it lives."""
    source = open_source(location, fmt)
    frame: pl.LazyFrame = standardize(source.lazy(), contract)
    try:
        return validate_frame(frame, contract)
    except pl.exceptions.PolarsError as exc:
        raise BadRequest(f"cannot validate {location}: {exc}", details={"file": location}) from exc


def standardize_location(location: str, contract: Contract, output: Path, fmt: str | None = None) -> int:
    """Writes the contract's standardization of a file as Parquet (streaming); returns the rows written."""
    source = open_source(location, fmt)
    frame: pl.LazyFrame = standardize(source.lazy(), contract)
    try:
        frame.sink_parquet(output)
    except pl.exceptions.PolarsError as exc:
        raise BadRequest(f"cannot standardize {location}: {exc}", details={"file": location}) from exc
    return int(pl.scan_parquet(output).select(pl.len()).collect().item())

"""The SDK's dataset functions (``bh.register_dataset``, ``bh.validate_data``), exported by ``bridgehead``."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bridgehead.data.contracts import Contract, ContractReport, parse_contract, standardize, validate_frame
from bridgehead.data.local import describe, validate_location
from bridgehead.data.schemas import VersionCreated
from bridgehead.errors import BadRequest

__all__ = ["register_dataset", "validate_data"]


def _to_arrow(data: Any) -> Any:
    """A pandas or polars DataFrame, or a pyarrow Table, as a pyarrow Table."""
    import pyarrow as pa

    module = type(data).__module__.split(".")[0]
    if isinstance(data, pa.Table):
        return data
    if module == "pandas":
        return pa.Table.from_pandas(data, preserve_index=False)
    if module == "polars":
        return data.to_arrow()
    raise BadRequest(
        f"Cannot register a {type(data).__name__}: pass a path, a pandas or polars DataFrame, or a pyarrow Table."
    )


def register_dataset(
    data: Any,
    name: str,
    *,
    description: str | None = None,
    source_system: str | None = None,
    contract: str | None = None,
    format: str | None = None,
) -> VersionCreated:
    """Register ``data`` as a new version of the dataset ``name`` (created in your unit if new).

    A path (or fsspec URL) is profiled here, streaming, and only its digest, schema and profile go to the
    server: the file stays where it is. A DataFrame or Arrow table is written as Parquet and uploaded into
    Bridgehead's artifact store, which profiles it. The same content again returns the existing version.
    """
    from bridgehead.sdk import get_client

    client = get_client()
    found = client.find_dataset(name)
    if found is None:
        dataset_id = client.create_dataset(
            name, description=description, source_system=source_system, contract=contract
        ).id
    else:
        dataset_id = found.id
        if contract is not None:
            client.set_dataset_contract(dataset_id, contract)
    if isinstance(data, str | Path):
        described = describe(str(data), format)
        return client.register_dataset_version(dataset_id, **described.registration())
    import pyarrow.parquet as pq

    table = _to_arrow(data)
    with tempfile.TemporaryDirectory(prefix="bridgehead-") as tmp:
        path = Path(tmp) / f"{name.replace(' ', '_')}.parquet"
        pq.write_table(table, path)
        return client.upload_dataset_version(dataset_id, path.name, path)


def validate_data(data: Any, contract: str | Contract) -> ContractReport:
    """Validate a path or DataFrame against a contract (YAML text or a parsed Contract), here, without a server."""
    import polars as pl

    checked = parse_contract(contract) if isinstance(contract, str) else contract
    if isinstance(data, str | Path):
        return validate_location(str(data), checked)
    return validate_frame(standardize(pl.from_arrow(_to_arrow(data)).lazy(), checked), checked)  # type: ignore[union-attr]

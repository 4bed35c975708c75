"""``bridgehead data``: profile, validate and register data files where they live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console as RichConsole
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridgehead.data.contracts import Contract, ContractReport, parse_contract
from bridgehead.data.local import Described, describe, standardize_location, validate_location
from bridgehead.data.profile import Profile
from bridgehead.errors import BridgeheadError

__all__ = ["data_cli"]

data_cli = typer.Typer(
    help="Datasets: profile and validate files, register versions with the server.", no_args_is_help=True
)
out = RichConsole(soft_wrap=True)
err = RichConsole(stderr=True, soft_wrap=True)

PathArg = Annotated[str, typer.Argument(help="A file (Parquet, CSV, JSON lines, Arrow) or an fsspec URL.")]
FormatOpt = Annotated[
    str | None, typer.Option("--format", help="parquet, csv, jsonl or arrow (default: from the name/bytes).")
]


def _fail(exc: BridgeheadError) -> None:
    err.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(2)


def _client() -> Any:
    from bridgehead.sdk import get_client

    return get_client()


def _describe(location: str, fmt: str | None) -> Described:
    with Progress(
        TextColumn("profiling {task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(Path(location).name, total=None)
        return describe(location, fmt, progress=lambda rows: progress.advance(task, rows))


def _profile_table(profile: Profile) -> Table:
    table = Table(title=f"{profile.row_count:,} rows")
    for heading in ("column", "type", "nulls", "distinct", "min", "max", "mean", "top values"):
        table.add_column(heading, overflow="fold")
    for col in profile.summary()["columns"]:
        top = ", ".join(f"{v['value']} ({v['count']:,})" for v in col.get("top_values", [])[:3])
        table.add_row(
            col["name"],
            col["kind"],
            f"{col['null_share']:.1%}",
            f"{col.get('distinct', '')}",
            _short(col.get("min")),
            _short(col.get("max")),
            _short(col.get("mean")),
            top,
        )
    return table


def _short(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _report_table(report: ContractReport) -> Table:
    table = Table(title=f"{'PASSED' if report.passed else 'FAILED'}: {report.row_count:,} rows")
    for heading in ("expectation", "result", "failing rows", "detail"):
        table.add_column(heading, overflow="fold")
    for e in report.expectations:
        mark = "[green]pass[/green]" if e.passed else "[red]FAIL[/red]"
        table.add_row(e.id, mark, f"{e.failing_count:,}" if e.failing_count else "", e.message)
    return table


@data_cli.command("profile")
def profile_command(
    path: PathArg,
    format: FormatOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile summary as JSON.")] = False,
) -> None:
    """Profile a file locally (nothing is sent anywhere): counts, nulls, distinct values, ranges, quantiles,
    top values. Streams the file in batches, so files larger than memory work."""
    try:
        described = _describe(path, format)
    except BridgeheadError as exc:
        _fail(exc)
        return
    if as_json:
        out.print_json(json.dumps(described.profile.summary()))
    else:
        out.print(_profile_table(described.profile))


def _contract(contract_file: Path | None, dataset: str | None) -> tuple[Contract, str, Any]:
    """The contract to check: the file given, else the dataset's own (fetched from the server)."""
    found = None
    if dataset:
        found = _client().find_dataset(dataset)
        if found is None:
            err.print(f"[red]error:[/red] no dataset named {dataset!r} is visible to you.")
            raise typer.Exit(2)
    if contract_file is not None:
        text = contract_file.read_text()
    elif found is not None:
        text = _client().get_dataset_contract(found.id).contract
        if not text:
            err.print(f"[red]error:[/red] dataset {dataset!r} has no contract; pass --contract FILE.")
            raise typer.Exit(2)
    else:
        err.print("[red]error:[/red] give --contract FILE, or --dataset NAME to use that dataset's contract.")
        raise typer.Exit(2)
    try:
        return parse_contract(text), text, found
    except ValueError as exc:
        err.print(f"[red]error:[/red] the contract is not valid: {exc}")
        raise typer.Exit(2) from None


@data_cli.command("validate")
def validate_command(
    path: PathArg,
    contract: Annotated[
        Path | None, typer.Option(help="Contract YAML file.", exists=True, dir_okay=False)
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(help="Use this dataset's contract (unless --contract) and record the report."),
    ] = None,
    format: FormatOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Validate a file against a data contract. Exits 1 when any expectation fails (a pipeline gate), 2 on
    an error. With --dataset the report is recorded on the server (BRIDGEHEAD_URL, BRIDGEHEAD_TOKEN)."""
    checked, _, found = _contract(contract, dataset)
    try:
        with err.status(f"validating {path}…"):
            report = validate_location(path, checked, format)
        if found is not None:
            _client().record_validation(found.id, report.model_dump(mode="json"), location=str(path))
    except BridgeheadError as exc:
        _fail(exc)
        return
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        out.print(_report_table(report))
        for e in report.failed:
            if e.sample:
                out.print(f"[bold]{e.id}[/bold] sample rows: {json.dumps(e.sample[:3], default=str)}")
    if not report.passed:
        raise typer.Exit(1)


@data_cli.command("standardize")
def standardize_command(
    path: PathArg,
    contract: Annotated[
        Path, typer.Option(help="Contract YAML with standardize blocks.", exists=True, dir_okay=False)
    ],
    output: Annotated[Path, typer.Option(help="Where to write the cleaned data (Parquet).", dir_okay=False)],
    format: FormatOpt = None,
) -> None:
    """Apply the contract's standardization (date formats, decimal separators, category spellings, case,
    whitespace) to a file and write the result as Parquet, streaming: the clean-up on ingest. Values no rule
    can parse become null, for the contract to report. Register the output as its own dataset version."""
    try:
        checked = parse_contract(contract.read_text())
    except ValueError as exc:
        err.print(f"[red]error:[/red] the contract is not valid: {exc}")
        raise typer.Exit(2) from None
    try:
        with err.status(f"standardizing {path}…"):
            rows = standardize_location(path, checked, output, format)
    except BridgeheadError as exc:
        _fail(exc)
        return
    out.print(f"wrote {rows:,} rows to {output}")


@data_cli.command("register")
def register_command(
    path: PathArg,
    name: Annotated[str, typer.Option(help="Dataset name (created in your unit if new).")],
    format: FormatOpt = None,
    description: Annotated[str | None, typer.Option(help="Description, for a new dataset.")] = None,
    source_system: Annotated[str | None, typer.Option(help="Source system, for a new dataset.")] = None,
    contract: Annotated[
        Path | None,
        typer.Option(help="Contract YAML to declare on the dataset.", exists=True, dir_okay=False),
    ] = None,
    upload: Annotated[
        bool, typer.Option(help="Upload the file into Bridgehead's artifact store instead of referencing it.")
    ] = False,
) -> None:
    """Register a file as a new version of a dataset: its content digest, schema and profile (computed
    here, streaming) go to the server; the file stays where it is unless --upload. Registering the same
    bytes again returns the existing version."""
    try:
        client = _client()
        found = client.find_dataset(name)
        dataset_id = found.id if found else None
        if dataset_id is None:
            text = contract.read_text() if contract else None
            created = client.create_dataset(
                name, description=description, source_system=source_system, contract=text
            )
            dataset_id = created.id
        elif contract is not None:
            client.set_dataset_contract(dataset_id, contract.read_text())
        if upload:
            with err.status(f"uploading {path}…"):
                version = client.upload_dataset_version(
                    dataset_id, Path(path).name, Path(path), format=format
                )
        else:
            described = _describe(path, format)
            version = client.register_dataset_version(dataset_id, **described.registration())
    except BridgeheadError as exc:
        _fail(exc)
        return
    state = "registered" if version.created else "already registered"
    out.print(
        f"{name} version {version.version} {state}: {version.row_count:,} rows, sha256 {version.digest[:12]}…"
    )

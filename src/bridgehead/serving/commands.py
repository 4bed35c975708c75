"""``bridgehead endpoint``: deploy, change traffic, promote, roll back and inspect endpoints (over the API)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console as RichConsole
from rich.table import Table

from bridgehead.errors import BridgeheadError
from bridgehead.serving.schemas import EndpointOut

__all__ = ["endpoint_app", "score", "serve"]

endpoint_app = typer.Typer(
    help="Endpoints: deploy model versions, canary, A/B, shadow, promote, roll back.", no_args_is_help=True
)
out = RichConsole(soft_wrap=True)
err = RichConsole(stderr=True, soft_wrap=True)

Name = Annotated[str, typer.Argument(help="The endpoint's name (its URL is /serve/<name>/predict).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why: kept in the history and the audit trail.")]


def _client() -> Any:
    from bridgehead.sdk import get_client

    return get_client()


def _fail(exc: BridgeheadError) -> None:
    err.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(2)


def _show(endpoint: EndpointOut) -> None:
    table = Table(
        title=f"{endpoint.name} ({endpoint.environment}, revision {endpoint.revision}, {endpoint.status})"
    )
    for heading in ("model", "version", "traffic", "role"):
        table.add_column(heading)
    for r in endpoint.routes:
        table.add_row(r.model, str(r.version), f"{r.weight:g} %" if r.role == "route" else "copy", r.role)
    out.print(table)
    out.print(f"URL: {endpoint.url}")


@endpoint_app.command("list")
def list_command(
    environment: Annotated[str | None, typer.Option(help="staging or production")] = None,
) -> None:
    """Endpoints you can see, with the versions serving them."""
    try:
        found = _client().list_endpoints(environment=environment)
    except BridgeheadError as exc:
        _fail(exc)
        return
    table = Table()
    for heading in ("endpoint", "environment", "status", "serving"):
        table.add_column(heading)
    for e in found:
        serving = ", ".join(
            f"{r.model} v{r.version} {r.weight:g}%"
            if r.role == "route"
            else f"{r.model} v{r.version} (shadow)"
            for r in e.routes
        )
        table.add_row(e.name, e.environment, e.status, serving)
    out.print(table)


@endpoint_app.command("show")
def show_command(name: Name) -> None:
    """One endpoint: versions, traffic, URL."""
    try:
        _show(_client().get_endpoint(name))
    except BridgeheadError as exc:
        _fail(exc)


@endpoint_app.command("deploy")
def deploy_command(
    name: Name,
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help='Version number, alias (e.g. "champion") or "latest".')],
    environment: Annotated[
        str | None, typer.Option(help="staging or production (first deploy only; default staging).")
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(help="replace (all traffic), canary, ab or shadow (gets a logged copy of requests)."),
    ] = "replace",
    weight: Annotated[
        float | None, typer.Option(help="Traffic % for canary (default 10) or ab (50).")
    ] = None,
    reason: ReasonOpt = "",
) -> None:
    """Deploy a model version to an endpoint (created on first deploy). The server loads the version first
    and refuses the deploy, leaving the endpoint unchanged, if it cannot serve it."""
    try:
        endpoint = _client().deploy(
            name, model, version, environment=environment, strategy=strategy, weight=weight, reason=reason
        )
    except BridgeheadError as exc:
        _fail(exc)
        return
    _show(endpoint)


@endpoint_app.command("traffic")
def traffic_command(
    name: Name,
    route: Annotated[
        list[str],
        typer.Option("--route", help="MODEL:VERSION=WEIGHT, repeated; weights sum to 100."),
    ],
    shadow: Annotated[list[str] | None, typer.Option("--shadow", help="MODEL:VERSION, repeated.")] = None,
    reason: ReasonOpt = "",
) -> None:
    """Set the whole traffic split, e.g. --route credit:3=90 --route credit:4=10."""
    try:
        routes = []
        for spec in route:
            target, _, weight = spec.rpartition("=")
            model, _, version = target.rpartition(":")
            if not model or not version or not weight:
                raise typer.BadParameter(f"{spec!r}: expected MODEL:VERSION=WEIGHT", param_hint="--route")
            routes.append((model, version, float(weight)))
        shadows = []
        for spec in shadow or []:
            model, _, version = spec.rpartition(":")
            if not model or not version:
                raise typer.BadParameter(f"{spec!r}: expected MODEL:VERSION", param_hint="--shadow")
            shadows.append((model, version))
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--route") from exc
    try:
        _show(_client().set_traffic(name, routes, shadows, reason=reason))
    except BridgeheadError as exc:
        _fail(exc)


@endpoint_app.command("promote")
def promote_command(
    name: Name,
    model: Annotated[str | None, typer.Option(help="Model of the version to promote.")] = None,
    version: Annotated[str | None, typer.Option(help="Version to promote (default: the challenger).")] = None,
    reason: ReasonOpt = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Give one version all the traffic: the named one, or the challenger (canary or shadow)."""
    if not yes:
        typer.confirm(f"Promote on {name}? All traffic will go to one version.", abort=True)
    try:
        _show(_client().promote(name, model=model, version=version, reason=reason))
    except BridgeheadError as exc:
        _fail(exc)


@endpoint_app.command("rollback")
def rollback_command(
    name: Name,
    reason: ReasonOpt = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Restore the configuration in force before the current one (repeat to go further back)."""
    if not yes:
        typer.confirm(f"Roll {name} back to its previous configuration?", abort=True)
    try:
        _show(_client().rollback(name, reason=reason))
    except BridgeheadError as exc:
        _fail(exc)


@endpoint_app.command("retire")
def retire_command(
    name: Name,
    reason: ReasonOpt = "",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Take the endpoint out of service (answers 409 until deployed again)."""
    if not yes:
        typer.confirm(f"Retire {name}? It stops answering predictions.", abort=True)
    try:
        _show(_client().retire(name, reason=reason))
    except BridgeheadError as exc:
        _fail(exc)


@endpoint_app.command("history")
def history_command(name: Name) -> None:
    """Every configuration the endpoint has had, newest first."""
    try:
        revisions = _client().endpoint_revisions(name)
    except BridgeheadError as exc:
        _fail(exc)
        return
    table = Table(title=name)
    for heading in ("revision", "action", "serving", "reason", "when"):
        table.add_column(heading)
    for r in revisions:
        serving = ", ".join(
            f"{x.model} v{x.version} {x.weight:g}%"
            if x.role == "route"
            else f"{x.model} v{x.version} (shadow)"
            for x in r.routes
        )
        table.add_row(
            str(r.revision), r.action, serving, r.reason, r.created_at.strftime("%Y-%m-%d %H:%M:%S")
        )
    out.print(table)


def serve(
    endpoint: Annotated[str, typer.Argument(help="The endpoint this process answers for.")],
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: BRIDGEHEAD_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: BRIDGEHEAD_PORT or 8080).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Run a standalone inference server for one endpoint: only its /serve/..., /v2/... and /metrics routes.
    It reads the deployment from the shared database on every request, so a promote or rollback made anywhere
    takes effect on the next request without a restart; run as many as you like behind a load balancer."""
    import os
    import tempfile

    import uvicorn

    from bridgehead.serving.models import Endpoint
    from bridgehead.settings import Settings
    from bridgehead.store import Database

    settings = Settings()
    db = Database(settings.resolved_database_url)
    try:
        with db.session() as session:
            from sqlalchemy import select

            found = session.scalar(select(Endpoint).where(Endpoint.name == endpoint))
    except BridgeheadError as exc:
        _fail(exc)
        return
    finally:
        db.dispose()
    if found is None or found.status != "active":
        err.print(
            f"[red]error:[/red] no active endpoint named {endpoint!r} in {settings.resolved_database_url}; "
            "deploy a model to it first (`bridgehead endpoint deploy`)."
        )
        raise typer.Exit(2)
    # The workers build their settings from the environment.
    os.environ["BRIDGEHEAD_SERVE_ENDPOINT"] = endpoint
    os.environ["BRIDGEHEAD_MIGRATE_ON_START"] = "false"
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bridgehead-metrics-")
    err.print(
        f"serving {endpoint} on http://{host or settings.host}:{port or settings.port} ({workers} worker(s))"
    )
    uvicorn.run(
        "bridgehead.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_config=None,
        access_log=False,
    )


def score(
    target: Annotated[
        str,
        typer.Argument(
            help="An endpoint name (scored by the server) or a model URI models:/NAME@ALIAS (locally)."
        ),
    ],
    input_path: Annotated[
        str, typer.Argument(metavar="INPUT", help="Parquet, CSV, JSON lines or Arrow file/URL.")
    ],
    output_path: Annotated[Path, typer.Argument(help="Parquet file to write.")],
    batch_rows: Annotated[int, typer.Option(min=1, max=100_000, help="Rows per request / chunk.")] = 10_000,
    key_column: Annotated[
        str | None, typer.Option(help="Column whose value is the routing key (sticky A/B assignment).")
    ] = None,
) -> None:
    """Score a file of any size in chunks (bounded memory) and write the inputs with `prediction`,
    `probabilities`, `version` and `prediction_id` columns to a Parquet file."""
    from bridgehead.data.readers import open_source

    try:
        source = open_source(input_path)
        scorer = (
            _local_scorer(target) if target.startswith("models:/") else _remote_scorer(target, key_column)
        )
        total = _count_rows(source)
        written = _score_file(source, scorer, output_path, batch_rows, total)
    except BridgeheadError as exc:
        _fail(exc)
        return
    err.print(f"scored {written:,} rows into {output_path}")


def _count_rows(source: Any) -> int | None:
    try:
        return int(source.dataset.count_rows())
    except Exception:
        return None


def _score_file(source: Any, scorer: Any, output: Path, batch_rows: int, total: int | None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from bridgehead.serving.batch import write_scored

    tmp = output.with_name(output.name + ".partial")
    try:
        with Progress(
            TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
        ) as progress:
            task = progress.add_task("rows", total=total)
            output.parent.mkdir(parents=True, exist_ok=True)
            written = write_scored(
                source.batches(batch_rows),
                scorer,
                str(tmp),
                on_rows=lambda rows: progress.advance(task, rows),
            )
        if written:
            tmp.replace(output)  # the output appears whole or not at all
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _remote_scorer(endpoint: str, key_column: str | None) -> Any:
    import pyarrow as pa

    client = _client()
    url = f"/serve/{endpoint}/predict"

    def scorer(batch: pa.RecordBatch) -> dict[str, list[Any]]:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as stream:
            stream.write_batch(batch)
        headers = {"content-type": "application/vnd.apache.arrow.stream"}
        params = {"key_column": key_column} if key_column else {}
        answer = client.request(
            "POST", url, content=sink.getvalue().to_pybytes(), headers=headers, params=params
        ).json()
        out: dict[str, list[Any]] = {
            "prediction": answer["predictions"],
            "version": answer["versions"],
            "prediction_id": answer["ids"],
        }
        if answer.get("probabilities") is not None:
            out["probabilities"] = answer["probabilities"]
        return out

    return scorer


def _local_scorer(uri: str) -> Any:
    import numpy as np

    from bridgehead import sdk

    model = sdk.load_model(uri)

    def scorer(batch: Any) -> dict[str, list[Any]]:
        frame = batch.to_pandas()
        x = frame if hasattr(model, "feature_names_in_") else frame.to_numpy()
        out: dict[str, list[Any]] = {"prediction": np.asarray(model.predict(x)).tolist()}
        if hasattr(model, "predict_proba"):
            out["probabilities"] = np.asarray(model.predict_proba(x), dtype=float).tolist()
        return out

    return scorer

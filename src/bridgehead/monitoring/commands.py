"""``bridgehead monitor`` (watch endpoints, run, read reports) and ``bridgehead incident`` (the inbox), over
the API like every other command (``BRIDGEHEAD_URL``, ``BRIDGEHEAD_TOKEN``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console as RichConsole
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from bridgehead.errors import BridgeheadError

__all__ = ["incident_app", "monitor_app"]

monitor_app = typer.Typer(
    help="Monitors: watch an endpoint for drift, performance decay and bias; run them; read their reports.",
    no_args_is_help=True,
)
incident_app = typer.Typer(
    help="Incidents opened by monitors: list, acknowledge, resolve.", no_args_is_help=True
)
out = RichConsole(soft_wrap=True)
err = RichConsole(stderr=True, soft_wrap=True)

MonitorId = Annotated[str, typer.Argument(help="The monitor's id (see `bridgehead monitor list`).")]
IncidentId = Annotated[str, typer.Argument(help="The incident's id (see `bridgehead incident list`).")]


def _client() -> Any:
    from bridgehead.sdk import get_client

    return get_client()


def _fail(exc: BridgeheadError) -> None:
    err.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(2)


def _schedule(m: Any) -> str:
    if m.every_rows:
        return f"every {m.every_rows:,} rows"
    minutes = m.every_minutes or 0
    return {60: "hourly", 1440: "daily"}.get(minutes, f"every {minutes} min")


@monitor_app.command("list")
def list_command(
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's monitors.")] = None,
) -> None:
    """Monitors you can see: endpoint, schedule, window, last run."""
    try:
        found = _client().list_monitors(endpoint=endpoint)
    except BridgeheadError as exc:
        _fail(exc)
        return
    table = Table()
    for heading in ("id", "endpoint", "name", "schedule", "window", "last run", "enabled"):
        table.add_column(heading)
    for m in found:
        last = m.last_run.strftime("%Y-%m-%d %H:%M") if m.last_run else "never"
        table.add_row(m.id, m.endpoint, m.name, _schedule(m), f"{m.window_minutes} min", last, str(m.enabled))
    out.print(table)


@monitor_app.command("create")
def create_command(
    endpoint: Annotated[str, typer.Argument(help="The endpoint to watch.")],
    name: Annotated[str, typer.Option(help="A name for the monitor.")] = "drift",
    every_minutes: Annotated[
        int | None, typer.Option(help="Run every N minutes (60 hourly, 1440 daily).")
    ] = None,
    every_rows: Annotated[int | None, typer.Option(help="Run after every N predicted rows instead.")] = None,
    window_minutes: Annotated[int, typer.Option(help="The window each run reads.")] = 1440,
    reference: Annotated[
        str | None, typer.Option(help="A profiled dataset version id (default: the model's training data).")
    ] = None,
    rules: Annotated[
        Path | None, typer.Option(help="A JSON file with the rules (default: the standard set).", exists=True)
    ] = None,
) -> None:
    """Watch an endpoint for drift, performance decay and bias."""
    body: dict[str, Any] = {"window_minutes": window_minutes}
    if every_minutes is not None:
        body["every_minutes"] = every_minutes
    if every_rows is not None:
        body["every_rows"] = every_rows
    if reference:
        body["reference_version_id"] = reference
    if rules is not None:
        body["rules"] = json.loads(rules.read_text(encoding="utf-8"))
    try:
        m = _client().create_monitor(endpoint, name, **body)
    except BridgeheadError as exc:
        _fail(exc)
        return
    out.print(f"Monitor [bold]{m.id}[/bold] watches {m.endpoint} {_schedule(m)} over {m.window_minutes} min.")
    for r in m.rules:
        out.print(f"  rule: {r['metric']} {r['op']} {r['threshold']:g} → {r['severity']}")


@monitor_app.command("show")
def show_command(monitor_id: MonitorId) -> None:
    """A monitor, its rules and its latest runs."""
    try:
        m = _client().get_monitor(monitor_id)
    except BridgeheadError as exc:
        _fail(exc)
        return
    out.print(f"[bold]{m.name}[/bold] on {m.endpoint}: {_schedule(m)}, window {m.window_minutes} min")
    table = Table(title="runs")
    for heading in ("run", "window end", "status", "rows", "drifted", "accuracy", "breaches"):
        table.add_column(heading)
    for r in m.runs[:20]:
        table.add_row(
            r.id,
            r.window_end.strftime("%Y-%m-%d %H:%M"),
            r.status if not r.error else f"{r.status}: {r.error[:60]}",
            f"{r.rows:,}",
            str(int(r.metrics.get("drifted_columns", 0))),
            f"{r.metrics['accuracy']:.3f}" if "accuracy" in r.metrics else "—",
            ", ".join(b["metric"] for b in r.breaches) or "—",
        )
    out.print(table)


@monitor_app.command("run")
def run_command(
    monitor_id: MonitorId,
    wait: Annotated[bool, typer.Option(help="Wait for the run and print its summary.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 600,
) -> None:
    """Run a monitor now (in the background on the server); wait for it by default."""
    try:
        client = _client()
        job = client.run_monitor(monitor_id)
        if not wait:
            out.print(f"Queued job {job.job_id}.")
            return
        deadline = time.monotonic() + timeout
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err, transient=True) as bar:
            task = bar.add_task("running the monitor…")
            while True:
                state = client.request("GET", f"/api/v1/jobs/{job.job_id}").json()
                bar.update(task, description=f"{state['status']} {state.get('progress_message') or ''}")
                if state["status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
    except BridgeheadError as exc:
        _fail(exc)
        return
    result = state.get("result") or {}
    if state["status"] != "succeeded":
        err.print(f"[red]{state['status']}[/red]: {state.get('error') or 'timed out waiting'}")
        raise typer.Exit(1)
    if result.get("status") == "failed":
        err.print(f"[red]the run failed:[/red] {result.get('error')}")
        raise typer.Exit(1)
    out.print(
        f"Run {result.get('run_id')}: {result.get('rows', 0):,} rows, {result.get('breaches', 0)} rules breached"
        + (f", incident {result['incident_id']}" if result.get("incident_id") else "")
    )


@monitor_app.command("report")
def report_command(
    run_id: Annotated[str, typer.Argument(help="The run's id (see `bridgehead monitor show`).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the report.")] = Path(
        "drift-report.html"
    ),
    json_format: Annotated[bool, typer.Option("--json", help="JSON instead of standalone HTML.")] = False,
) -> None:
    """Download a run's report as a standalone HTML file (or JSON)."""
    try:
        path = _client().download_report(run_id, output, fmt="json" if json_format else "html")
    except BridgeheadError as exc:
        _fail(exc)
        return
    out.print(f"Wrote {path}")


@incident_app.command("list")
def incidents_command(
    status: Annotated[str | None, typer.Option(help="open, acknowledged or resolved")] = None,
    endpoint: Annotated[str | None, typer.Option(help="Only this endpoint's incidents.")] = None,
) -> None:
    """Incidents you can see, newest first."""
    try:
        found = _client().list_incidents(status=status, endpoint=endpoint)
    except BridgeheadError as exc:
        _fail(exc)
        return
    table = Table()
    for heading in ("id", "severity", "status", "endpoint", "title", "opened", "seen"):
        table.add_column(heading)
    for i in found:
        table.add_row(
            i.id,
            i.severity,
            i.status,
            i.endpoint or "",
            i.title,
            i.opened.strftime("%Y-%m-%d %H:%M"),
            f"{i.occurrences} times",
        )
    out.print(table)


@incident_app.command("ack")
def ack_command(
    incident_id: IncidentId, note: Annotated[str, typer.Option(help="What you are doing about it.")] = ""
) -> None:
    """Acknowledge an open incident (you become its owner if it had none)."""
    try:
        i = _client().acknowledge_incident(incident_id, note)
    except BridgeheadError as exc:
        _fail(exc)
        return
    out.print(f"Acknowledged after {i.seconds_to_acknowledge:.0f} s: {i.title}")


@incident_app.command("resolve")
def resolve_command(
    incident_id: IncidentId,
    resolution: Annotated[str, typer.Option(help="What was done: retrained, rolled back, false alarm...")],
) -> None:
    """Resolve an incident, saying how."""
    try:
        i = _client().resolve_incident(incident_id, resolution)
    except BridgeheadError as exc:
        _fail(exc)
        return
    out.print(f"Resolved after {i.seconds_to_resolve:.0f} s: {i.title}")

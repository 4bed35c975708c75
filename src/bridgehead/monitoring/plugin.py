"""Registers the monitoring API and console, the `bridgehead monitor` and `bridgehead incident` commands, and
three job kinds: ``monitoring.tick`` (queue the monitors that are due, then queue the next tick),
``monitoring.run`` (one run of one monitor) and ``monitoring.notify`` (deliver one notification; retried
with backoff by the queue)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import typer
from fastapi import FastAPI

from bridgehead.errors import BadRequest, BridgeheadError, NotFound, StoreUnavailable
from bridgehead.hookspecs import hookimpl
from bridgehead.web import Console

log = logging.getLogger("bridgehead.monitoring")


@hookimpl
def register_routes(app: FastAPI, console: Console) -> None:
    from bridgehead.monitoring.pages import router as pages
    from bridgehead.monitoring.routes import router

    app.include_router(router)
    app.include_router(pages)


@hookimpl
def register_job_kinds() -> dict[str, Any]:
    from bridgehead.monitoring import service

    return {service.RUN_KIND: handle_run, service.TICK_KIND: handle_tick, service.NOTIFY_KIND: handle_notify}


@hookimpl
def startup(app: FastAPI) -> None:
    """Make sure a scheduling tick is waiting (one for the whole installation, whichever server queues it)."""
    settings = app.state.settings
    if settings.serve_endpoint:
        return
    from sqlalchemy import select

    from bridgehead.monitoring import service
    from bridgehead.org.models import BusinessUnit

    try:
        with app.state.db.session(write=True) as session:
            unit = session.scalar(select(BusinessUnit.id).where(BusinessUnit.is_central.is_(True)))
            if unit is not None:
                service.ensure_tick(session, unit, settings.monitor_tick_seconds)
    except BridgeheadError as exc:
        # The server still starts (/readyz says what is wrong); creating a monitor queues the tick again.
        log.warning("monitoring: could not queue the scheduling tick: %s", exc.message)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from bridgehead.monitoring.commands import incident_app, monitor_app

    cli.add_typer(monitor_app, name="monitor")
    cli.add_typer(incident_app, name="incident")


# --- job handlers -------------------------------------------------------------------------------------------


def handle_run(ctx: Any) -> dict[str, Any]:
    """One run: computed in a read transaction, recorded (and the incident opened) in a short write one."""
    from bridgehead.monitoring import service

    params = ctx.params
    with ctx.session() as session:
        run = service.compute_run(
            session,
            str(params["monitor_id"]),
            log_root=ctx.settings.resolved_prediction_log_dir,
            trigger=str(params.get("trigger", "schedule")),
            end_ms=params.get("end_ms"),
        )
        session.expunge_all()
    with ctx.session(write=True) as session:
        recorded = service.record_run(session, run, notify_attempts=ctx.settings.notification_max_attempts)
        return {
            "run_id": recorded.id,
            "status": recorded.status,
            "error": recorded.error,
            "rows": recorded.rows,
            "breaches": len(recorded.breaches or []),
            "incident_id": recorded.incident_id,
        }


def handle_tick(ctx: Any) -> dict[str, Any]:
    """Queue the due monitors, then the next tick (this job is finishing, so it does not count as waiting)."""
    from bridgehead.monitoring import service

    with ctx.session(write=True) as session:
        queued = service.tick(session)
        service.ensure_tick(
            session, ctx.job.business_unit_id, ctx.settings.monitor_tick_seconds, exclude=ctx.job_id
        )
    if queued:
        log.info("monitoring: queued %d monitor runs", len(queued))
    return {"queued": queued}


def handle_notify(ctx: Any) -> dict[str, Any]:
    """Deliver one notification. A failure that may pass (timeouts, 5xx, 429, SMTP 4xx) is raised as
    StoreUnavailable, so the queue retries it with backoff; a permanent one (404, SMTP 5xx) as BadRequest."""
    from bridgehead.monitoring import notify, service
    from bridgehead.monitoring.models import Incident, NotificationChannel

    params = ctx.params
    with ctx.session() as session:
        channel = session.get(NotificationChannel, params["channel_id"])
        incident = session.get(Incident, params["incident_id"])
        if channel is None or incident is None:
            raise NotFound("The channel or the incident of this notification no longer exists.")
        payload = service.incident_payload(
            session, incident, str(params.get("event", "incident.opened")), ctx.settings.public_url or ""
        )
        kind, target, channel_id = channel.kind, channel.target, channel.id
    if kind == "webhook":
        delivery = notify.send_webhook(
            target,
            payload,
            notify.channel_secret(ctx.settings.resolved_secret_key(), channel_id),
            timeout_s=ctx.settings.webhook_timeout_seconds,
            event=payload["event"],
            delivery_id=ctx.job_id,
        )
    else:
        inc = payload["incident"]
        text = (
            f"{inc['severity'].upper()}: {inc['title']}\n\nOpened {inc['opened']} · {inc['occurrences']} "
            f"occurrence(s)\n\nBreached:\n"
            + "\n".join(
                f"- {b['metric']} {b['op']} {b['threshold']} (seen {b.get('value')})" for b in inc["breaches"]
            )
            + f"\n\nOpen it in Bridgehead: {inc['url']}\n"
        )
        delivery = notify.send_email(
            notify.SmtpSettings.from_settings(ctx.settings),
            service.addresses(target),
            f"[Bridgehead] {inc['severity']}: {inc['title']}",
            text,
        )
    result: dict[str, Any] = {
        "ok": delivery.ok,
        "status": delivery.status,
        "error": delivery.error,
        "at": datetime.now(UTC).isoformat(),
        "payload_bytes": len(json.dumps(payload)),
    }
    if delivery.ok:
        return result
    if delivery.retryable:
        if delivery.retry_after_s is not None:
            result["retry_after_seconds"] = delivery.retry_after_s  # the queue waits at least this long
        raise StoreUnavailable(
            f"Notification not delivered (retried while attempts remain): {delivery.error}", details=result
        )
    raise BadRequest(f"Notification refused by the receiver: {delivery.error}", details=result)

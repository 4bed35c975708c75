"""Endpoints and their traffic: deploy, change traffic, promote, roll back, retire; feedback.

Every change is one call, checked against the permission matrix and the endpoint's unit, passed through the
``check_transition`` hook (governance fills it; by default it allows everything), written as a new revision of
the endpoint's configuration and audited in the same transaction.

Rollback walks back through history: each revision remembers which revision's configuration it put in force
(``source_revision``); a rollback restores the configuration in force before that one. Two rollbacks in a row
therefore go two configurations back, not back and forth.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import select
from sqlalchemy.orm import Session

from bridgehead.audit.service import record
from bridgehead.auth.roles import Action, Role
from bridgehead.auth.service import Principal, require
from bridgehead.caching import RefreshAheadCache
from bridgehead.errors import AlreadyExists, BadRequest, Conflict, NotFound, ValidationFailed
from bridgehead.org.models import BusinessUnit
from bridgehead.registry import service as registry
from bridgehead.registry.models import ModelVersion, RegisteredModel
from bridgehead.serving.models import Endpoint, EndpointRevision, Feedback
from bridgehead.serving.routing import Route, TrafficPolicy
from bridgehead.tracking import service as tracking

__all__ = [
    "ENVIRONMENTS",
    "STRATEGIES",
    "EndpointCache",
    "EndpointView",
    "RouteInfo",
    "add_feedback",
    "can_invoke",
    "deploy",
    "describe",
    "endpoint_for_invoke",
    "get_endpoint",
    "list_endpoints",
    "promote",
    "resolve_version",
    "retire",
    "revisions",
    "rollback",
    "set_invokers",
    "set_traffic",
]

ENVIRONMENTS = ("staging", "production")
STRATEGIES = ("replace", "canary", "ab", "shadow")
# The audit event of each kind of change (spelled out so that every event name appears in the code).
AUDIT_EVENTS = {
    "deploy": "endpoint.deploy",
    "traffic": "endpoint.traffic",
    "promote": "endpoint.promote",
    "rollback": "endpoint.rollback",
    "retire": "endpoint.retire",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")

# Checks a version can be loaded and served before the change is written (the runtime loads it); raising
# refuses the deploy and leaves the endpoint as it was.
Verifier = Callable[[ModelVersion], None]


def _check_name(name: str) -> str:
    if not _NAME.match(name) or ".." in name:
        raise ValidationFailed(
            "Endpoint names are 1-100 lower-case letters, digits, '.', '_' or '-', starting with a letter or "
            "digit (they become URLs: /serve/<name>/predict).",
            details={"name": name},
        )
    return name


def _visible(principal: Principal) -> Any:
    stmt = select(Endpoint)
    if not principal.sees_all_units:
        stmt = stmt.where(Endpoint.business_unit_id == principal.business_unit_id)
    return stmt


def list_endpoints(
    session: Session, principal: Principal, *, environment: str | None = None, include_retired: bool = False
) -> Sequence[Endpoint]:
    require(principal, Action.SERVING_READ)
    stmt = _visible(principal)
    if environment:
        stmt = stmt.where(Endpoint.environment == environment)
    if not include_retired:
        stmt = stmt.where(Endpoint.status == "active")
    return session.scalars(stmt.order_by(Endpoint.environment, Endpoint.name)).all()


def get_endpoint(session: Session, principal: Principal, name: str) -> Endpoint:
    require(principal, Action.SERVING_READ)
    found: Endpoint | None = session.scalar(_visible(principal).where(Endpoint.name == name))
    if found is None:
        raise NotFound(f"Endpoint {name!r} not found.", details={"endpoint": name})
    return found


def can_invoke(principal: Principal, endpoint: Endpoint | EndpointView) -> bool:
    if not principal.can(Action.SERVING_INVOKE):
        return False
    if principal.can_see_unit(endpoint.business_unit_id):
        return True
    grants = endpoint.invokers or {}
    return principal.business_unit_id in grants.get("units", []) or principal.role.value in grants.get(
        "roles", []
    )


def endpoint_for_invoke(session: Session, principal: Principal, name: str) -> Endpoint:
    """The endpoint a caller may invoke. Endpoints the caller may not use answer "not found", as elsewhere."""
    found: Endpoint | None = session.scalar(select(Endpoint).where(Endpoint.name == name))
    if found is None or not can_invoke(principal, found):
        raise NotFound(f"Endpoint {name!r} not found.", details={"endpoint": name})
    if found.status != "active":
        raise Conflict(f"Endpoint {name!r} is retired.", details={"endpoint": name})
    return found


def resolve_version(session: Session, principal: Principal, model: str, ref: str | int) -> ModelVersion:
    """A version by number ("3"), alias ("champion") or "latest"."""
    text = str(ref).strip()
    if text.isdigit():
        return registry.get_version(session, principal, model, int(text))
    if text == "latest":
        return registry.resolve_uri(session, principal, f"models:/{model}/latest")
    if not text:
        raise ValidationFailed("Name a version: a number, an alias or 'latest'.", details={"version": text})
    return registry.get_version_by_alias(session, principal, model, text)


def _route(version: ModelVersion, weight: float) -> Route:
    return Route(version_id=version.id, version=version.version, weight=weight)


def _policy(endpoint: Endpoint) -> TrafficPolicy | None:
    return TrafficPolicy.from_config(endpoint.policy) if endpoint.policy else None


def _write(
    session: Session,
    principal: Principal,
    hooks: Any,
    endpoint: Endpoint,
    action: str,
    proposed: TrafficPolicy,
    reason: str,
    *,
    source_revision: int | None = None,
) -> Endpoint:
    current = endpoint.policy or {}
    config = proposed.to_config()
    refusals = [r for r in hooks.check_transition(
        session=session, principal=principal, endpoint=endpoint, action=action, current=current, proposed=config
    ) if r]  # fmt: skip
    if refusals:
        raise Conflict(
            f"The {action} was refused: {'; '.join(refusals)}",
            details={"endpoint": endpoint.name, "action": action, "reasons": refusals},
        )
    revision = endpoint.revision + 1
    endpoint.policy = config
    endpoint.revision = revision
    endpoint.updated_ms = tracking.now_ms()
    session.add(
        EndpointRevision(
            endpoint_id=endpoint.id,
            revision=revision,
            source_revision=source_revision or revision,
            action=action,
            policy=config,
            reason=reason,
            author_id=principal.person_id,
            created_ms=endpoint.updated_ms,
        )
    )
    record(
        session,
        principal,
        AUDIT_EVENTS[action],
        "endpoint",
        endpoint.id,
        business_unit_id=endpoint.business_unit_id,
        changes={
            "name": endpoint.name,
            "revision": revision,
            "from": current,
            "to": config,
            "reason": reason,
        },
    )
    session.flush()
    return endpoint


def _writable(session: Session, principal: Principal, name: str) -> Endpoint:
    require(principal, Action.SERVING_DEPLOY)
    endpoint = get_endpoint(session, principal, name)
    tracking.check_writable(principal, endpoint.business_unit_id, "endpoint")
    if endpoint.status != "active":
        raise Conflict(f"Endpoint {name!r} is retired.", details={"endpoint": name})
    return endpoint


def deploy(
    session: Session,
    principal: Principal,
    hooks: Any,
    *,
    endpoint: str,
    model: str,
    version: str | int,
    environment: str | None = None,
    strategy: str = "replace",
    weight: float | None = None,
    business_unit_id: str | None = None,
    description: str | None = None,
    reason: str = "",
    verify: Verifier | None = None,
) -> Endpoint:
    """Deploy a model version to an endpoint (created on first deploy). ``strategy``: ``replace`` (all
    traffic to the version), ``canary`` (``weight`` %, default 10, to the version; the rest keeps its current
    split), ``ab`` (the same with default 50), ``shadow`` (the version gets a copy of every request; its answers
    are logged, never returned)."""
    require(principal, Action.SERVING_DEPLOY)
    name = _check_name(endpoint)
    if strategy not in STRATEGIES:
        raise ValidationFailed(
            f"Unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.",
            details={"strategy": strategy},
        )
    if environment is not None and environment not in ENVIRONMENTS:
        raise ValidationFailed(
            f"Unknown environment {environment!r}; use one of {', '.join(ENVIRONMENTS)}.",
            details={"environment": environment},
        )
    found = resolve_version(session, principal, model, version)
    existing: Endpoint | None = session.scalar(select(Endpoint).where(Endpoint.name == name))
    if existing is not None and not principal.can_see_unit(existing.business_unit_id):
        raise AlreadyExists(f"An endpoint named {name!r} already exists.", details={"endpoint": name})
    if existing is None or existing.status != "active":
        if strategy != "replace":
            raise ValidationFailed(
                f"Endpoint {name!r} has nothing deployed yet: the first deploy uses strategy 'replace'.",
                details={"strategy": strategy},
            )
        if existing is None:
            existing = _create(
                session, principal, name, environment or "staging", business_unit_id, description
            )
        else:  # a retired endpoint comes back into service
            tracking.check_writable(principal, existing.business_unit_id, "endpoint")
            existing.status = "active"
            existing.policy = {}
        proposed = TrafficPolicy(routes=(_route(found, 100.0),))
    else:
        tracking.check_writable(principal, existing.business_unit_id, "endpoint")
        if environment is not None and environment != existing.environment:
            raise ValidationFailed(
                f"Endpoint {name!r} is in {existing.environment}; an environment is a separate endpoint "
                f"(e.g. {name}-{environment}).",
                details={"environment": environment, "endpoint_environment": existing.environment},
            )
        current = _policy(existing)
        assert current is not None
        proposed = _apply(current, found, strategy, weight)
    if description is not None:
        existing.description = description
    if verify is not None:
        verify(found)
    return _write(session, principal, hooks, existing, "deploy", proposed, reason)


def _create(
    session: Session,
    principal: Principal,
    name: str,
    environment: str,
    business_unit_id: str | None,
    description: str | None,
) -> Endpoint:
    unit = business_unit_id or principal.business_unit_id
    if not principal.can_see_unit(unit) or session.get(BusinessUnit, unit) is None:
        raise NotFound(f"Business unit {unit!r} does not exist.", details={"business_unit_id": unit})
    ms = tracking.now_ms()
    endpoint = Endpoint(
        name=name,
        business_unit_id=unit,
        environment=environment,
        description=description or "",
        policy={},
        revision=0,
        invokers={},
        status="active",
        owner_id=principal.person_id,
        created_ms=ms,
        updated_ms=ms,
    )
    tracking.add_unique(
        session,
        endpoint,
        AlreadyExists(f"An endpoint named {name!r} already exists.", details={"endpoint": name}),
    )
    return endpoint


def _apply(
    current: TrafficPolicy, version: ModelVersion, strategy: str, weight: float | None
) -> TrafficPolicy:
    others = tuple(r for r in current.routes if r.version_id != version.id)
    shadows = tuple(s for s in current.shadows if s.version_id != version.id)
    if strategy == "replace":
        return TrafficPolicy(routes=(_route(version, 100.0),), shadows=shadows, sticky=current.sticky)
    if strategy == "shadow":
        if not others:
            raise ValidationFailed(
                f"Version {version.version} serves all the traffic already; it cannot also be its own shadow."
            )
        return TrafficPolicy(routes=others, shadows=(*shadows, _route(version, 100.0)), sticky=current.sticky)
    share = weight if weight is not None else (10.0 if strategy == "canary" else 50.0)
    if not 0 < share < 100:
        raise ValidationFailed(
            f"A {strategy} weight is a percentage strictly between 0 and 100, got {share}.",
            details={"weight": share},
        )
    if not others:
        raise ValidationFailed(
            f"Version {version.version} already serves all the traffic; deploy another version as the "
            f"{strategy}.",
        )
    total = sum(r.weight for r in others)
    scaled = tuple(Route(r.version_id, r.version, r.weight / total * (100.0 - share)) for r in others)
    return TrafficPolicy(routes=(*scaled, _route(version, share)), shadows=shadows, sticky=current.sticky)


def set_traffic(
    session: Session,
    principal: Principal,
    hooks: Any,
    name: str,
    *,
    routes: Sequence[tuple[str, str | int, float]],
    shadows: Sequence[tuple[str, str | int]] = (),
    reason: str = "",
    verify: Verifier | None = None,
) -> Endpoint:
    """Set the whole split at once: ``routes`` are (model, version, weight %) summing to 100; ``shadows``
    are (model, version)."""
    endpoint = _writable(session, principal, name)
    current = _policy(endpoint)
    new_routes = []
    served = (
        {r.version_id for r in current.routes} | {s.version_id for s in current.shadows} if current else set()
    )
    for model, ref, weight in routes:
        found = resolve_version(session, principal, model, ref)
        if verify is not None and found.id not in served:
            verify(found)
        new_routes.append(_route(found, float(weight)))
    new_shadows = []
    for model, ref in shadows:
        found = resolve_version(session, principal, model, ref)
        if verify is not None and found.id not in served:
            verify(found)
        new_shadows.append(_route(found, 100.0))
    proposed = TrafficPolicy.from_config(
        TrafficPolicy(
            routes=tuple(new_routes),
            shadows=tuple(new_shadows),
            sticky=current.sticky if current else True,
        ).to_config()
    )  # from_config validates: weights sum to 100, no duplicates, no version both route and shadow
    return _write(session, principal, hooks, endpoint, "traffic", proposed, reason)


def promote(
    session: Session,
    principal: Principal,
    hooks: Any,
    name: str,
    *,
    model: str | None = None,
    version: str | int | None = None,
    reason: str = "",
) -> Endpoint:
    """Give one version all the traffic: the named one, or by default the challenger (the route with the
    smallest share when several serve, else the first shadow)."""
    endpoint = _writable(session, principal, name)
    current = _policy(endpoint)
    assert current is not None
    if version is not None:
        if model is None:
            model = _model_name(session, current.routes[0].version_id)
        target_version = resolve_version(session, principal, model, version)
        candidates = {r.version_id for r in current.routes} | {s.version_id for s in current.shadows}
        if target_version.id not in candidates:
            raise ValidationFailed(
                f"{model} version {target_version.version} does not serve endpoint {name!r}; deploy it first.",
                details={"model": model, "version": target_version.version},
            )
        target = _route(target_version, 100.0)
    elif len(current.routes) > 1:
        smallest = min(current.routes, key=lambda r: r.weight)
        target = Route(smallest.version_id, smallest.version, 100.0)
    elif current.shadows:
        first = current.shadows[0]
        target = Route(first.version_id, first.version, 100.0)
    else:
        raise ValidationFailed(
            f"Endpoint {name!r} has a single version and no challenger; there is nothing to promote."
        )
    shadows = tuple(s for s in current.shadows if s.version_id != target.version_id)
    proposed = TrafficPolicy(routes=(target,), shadows=shadows, sticky=current.sticky)
    return _write(session, principal, hooks, endpoint, "promote", proposed, reason)


def rollback(session: Session, principal: Principal, hooks: Any, name: str, *, reason: str = "") -> Endpoint:
    """Restore the configuration in force before the current one."""
    endpoint = _writable(session, principal, name)
    latest = session.scalar(
        select(EndpointRevision).where(
            EndpointRevision.endpoint_id == endpoint.id, EndpointRevision.revision == endpoint.revision
        )
    )
    source = latest.source_revision if latest is not None else 0
    previous = session.scalar(
        select(EndpointRevision).where(
            EndpointRevision.endpoint_id == endpoint.id, EndpointRevision.revision == source - 1
        )
    )
    if previous is None or not previous.policy:
        raise Conflict(
            f"Endpoint {name!r} has no earlier configuration to roll back to.", details={"endpoint": name}
        )
    proposed = TrafficPolicy.from_config(previous.policy)
    return _write(
        session,
        principal,
        hooks,
        endpoint,
        "rollback",
        proposed,
        reason,
        source_revision=previous.source_revision,
    )


def retire(session: Session, principal: Principal, hooks: Any, name: str, *, reason: str = "") -> Endpoint:
    """Take the endpoint out of service: it answers 409 until deployed again. History and logs stay."""
    endpoint = _writable(session, principal, name)
    current = _policy(endpoint)
    assert current is not None
    _write(session, principal, hooks, endpoint, "retire", current, reason)
    endpoint.status = "retired"
    session.flush()
    return endpoint


def set_invokers(
    session: Session, principal: Principal, name: str, *, units: Sequence[str], roles: Sequence[str]
) -> Endpoint:
    """Who may call the endpoint besides its own unit and central staff."""
    endpoint = _writable(session, principal, name)
    for unit in units:
        if session.get(BusinessUnit, unit) is None:
            raise NotFound(f"Business unit {unit!r} does not exist.", details={"business_unit_id": unit})
    known = {r.value for r in Role}
    for role in roles:
        if role not in known:
            raise ValidationFailed(f"Unknown role {role!r}.", details={"role": role, "known": sorted(known)})
    before = endpoint.invokers or {}
    endpoint.invokers = {"units": sorted(set(units)), "roles": sorted(set(roles))}
    endpoint.updated_ms = tracking.now_ms()
    record(
        session,
        principal,
        "endpoint.invokers",
        "endpoint",
        endpoint.id,
        business_unit_id=endpoint.business_unit_id,
        changes={"name": endpoint.name, "from": before, "to": endpoint.invokers},
    )
    session.flush()
    return endpoint


def revisions(session: Session, principal: Principal, name: str) -> Sequence[EndpointRevision]:
    endpoint = get_endpoint(session, principal, name)
    return session.scalars(
        select(EndpointRevision)
        .where(EndpointRevision.endpoint_id == endpoint.id)
        .order_by(EndpointRevision.revision.desc())
    ).all()


# --- reading a policy with model names --------------------------------------------------------------


@dataclass(frozen=True)
class RouteInfo:
    version_id: str
    model: str
    version: int
    weight: float
    role: str  # "route" or "shadow"


def _model_name(session: Session, version_id: str) -> str:
    name = session.scalar(
        select(RegisteredModel.name)
        .join(ModelVersion, ModelVersion.model_id == RegisteredModel.id)
        .where(ModelVersion.id == version_id)
    )
    if name is None:
        raise NotFound("A version this endpoint serves no longer exists.", details={"version_id": version_id})
    return str(name)


def describe(session: Session, policy: dict[str, Any]) -> list[RouteInfo]:
    """The policy's routes and shadows with their model names."""
    if not policy:
        return []
    parsed = TrafficPolicy.from_config(policy)
    ids = [r.version_id for r in parsed.routes] + [s.version_id for s in parsed.shadows]
    names: dict[str, str] = dict(
        session.execute(  # type: ignore[arg-type]
            select(ModelVersion.id, RegisteredModel.name)
            .join(RegisteredModel, ModelVersion.model_id == RegisteredModel.id)
            .where(ModelVersion.id.in_(ids))
        ).all()
    )
    return [RouteInfo(r.version_id, names.get(r.version_id, "?"), r.version, r.weight, "route") for r in parsed.routes] + [
        RouteInfo(s.version_id, names.get(s.version_id, "?"), s.version, 100.0, "shadow") for s in parsed.shadows
    ]  # fmt: skip


# --- feedback -------------------------------------------------------------------------------------------

FEEDBACK_KINDS = ("label", "override")


def add_feedback(
    session: Session, principal: Principal, name: str, items: Sequence[dict[str, Any]]
) -> tuple[int, int]:
    """Attach ground truth or human overrides to prediction ids. A later item for the same id and kind
    replaces the earlier one. Returns (created, updated)."""
    require(principal, Action.SERVING_FEEDBACK)
    endpoint = get_endpoint(session, principal, name)
    if not can_invoke(principal, endpoint):
        raise NotFound(f"Endpoint {name!r} not found.", details={"endpoint": name})
    created = updated = 0
    ms = tracking.now_ms()
    for index, item in enumerate(items):
        kind = item["kind"]
        if kind == "override" and not str(item.get("reason") or "").strip():
            raise ValidationFailed(
                "An override needs a reason (who decided what, and why).", details={"index": index}
            )
        existing = session.scalar(
            select(Feedback).where(
                Feedback.endpoint_id == endpoint.id,
                Feedback.request_id == item["request_id"],
                Feedback.kind == kind,
            )
        )
        if existing is None:
            session.add(
                Feedback(
                    endpoint_id=endpoint.id,
                    request_id=item["request_id"],
                    kind=kind,
                    value=item["value"],
                    reason=str(item.get("reason") or ""),
                    author_id=principal.person_id,
                    created_ms=ms,
                )
            )
            created += 1
        else:
            existing.value = item["value"]
            existing.reason = str(item.get("reason") or "")
            existing.author_id = principal.person_id
            existing.created_ms = ms
            updated += 1
    if not items:
        raise BadRequest("Send at least one feedback item.")
    overrides = sum(1 for i in items if i["kind"] == "override")
    if overrides:
        record(
            session,
            principal,
            "endpoint.override",
            "endpoint",
            endpoint.id,
            business_unit_id=endpoint.business_unit_id,
            changes={"name": endpoint.name, "overrides": overrides},
        )
    session.flush()
    return created, updated


# --- hourly aggregates, written by the prediction log after each flush ------------------------------------


_HourKey = tuple[str, int, str, int, str]  # endpoint name, hour (epoch ms), model name, version, role
_NOT_CONSTANT = object()


def _constant(column: pa.ChunkedArray) -> Any:
    """The column's value if every row holds it (and it is not null), else `_NOT_CONSTANT`."""
    if not len(column) or not column[0].is_valid:
        return _NOT_CONSTANT
    first = column[0]
    return (
        first.as_py() if pc.all(pc.equal(column, first), skip_nulls=False).as_py() is True else _NOT_CONSTANT
    )


def _hour_totals(meta: pa.Table) -> dict[_HourKey, list[Any]]:
    """[requests, rows, errors, latency sum, latency max, latency histogram] per (endpoint, hour, model,
    version, role). A request's latency is counted on its first row, in the histogram's buckets (a latency
    equal to a bound belongs to that bound's bucket)."""
    from bridgehead.serving.runtime import LATENCY_BUCKETS_MS

    bounds = np.asarray(LATENCY_BUCKETS_MS)
    hours = pc.multiply(pc.divide(meta.column("ts").cast(pa.int64()), 3_600_000), 3_600_000)
    errors = pc.cast(pc.not_equal(meta.column("status"), "ok"), pa.int64())
    first = pc.equal(meta.column("row"), 0)
    # A log file holds one endpoint and hour, and nearly always one model version in one role: then no
    # grouping is needed (grouping every row cost more than half of this function).
    key = tuple(
        _constant(c)
        for c in (
            meta.column("endpoint"),
            hours,
            meta.column("model_name"),
            meta.column("version"),
            meta.column("role"),
        )
    )
    if _NOT_CONSTANT not in key:
        latencies = pc.filter(meta.column("latency_ms"), first)
        highest = pc.max(latencies).as_py()
        buckets = np.bincount(
            np.searchsorted(bounds, latencies.to_numpy(), side="left"), minlength=len(bounds) + 1
        )
        return {
            cast(_HourKey, key): [
                len(latencies),
                meta.num_rows,
                pc.sum(errors).as_py() or 0,
                pc.sum(latencies).as_py() or 0.0,
                highest if highest is not None else 0.0,
                buckets.tolist(),
            ]
        }
    keyed = pa.table(
        {
            "endpoint": meta.column("endpoint"),
            "hour": hours,
            "model_name": meta.column("model_name"),
            "version": meta.column("version"),
            "role": meta.column("role"),
            "error": errors,
            "first": first,
            "latency_ms": meta.column("latency_ms"),
        }
    )
    group = ["endpoint", "hour", "model_name", "version", "role"]
    firsts = keyed.filter(keyed.column("first"))
    bucket = np.searchsorted(bounds, firsts.column("latency_ms").to_numpy(), side="left")
    columns = {f"b{i}": (bucket == i).astype(np.int64) for i in range(len(bounds) + 1)}
    for name, values in columns.items():
        firsts = firsts.append_column(name, pa.array(values))
    latencies_by_group = {
        tuple(g[c] for c in group): g
        for g in firsts.group_by(group, use_threads=False)
        .aggregate(
            [("latency_ms", "count"), ("latency_ms", "sum"), ("latency_ms", "max")]
            + [(name, "sum") for name in columns]
        )
        .to_pylist()
    }
    totals: dict[_HourKey, list[Any]] = {}
    for g in (
        keyed.group_by(group, use_threads=False).aggregate([("error", "count"), ("error", "sum")]).to_pylist()
    ):
        lat = latencies_by_group.get(tuple(g[c] for c in group))
        totals[(g["endpoint"], g["hour"], g["model_name"], g["version"], g["role"])] = [
            lat["latency_ms_count"] if lat else 0,
            g["error_count"],
            g["error_sum"],
            lat["latency_ms_sum"] if lat else 0.0,
            lat["latency_ms_max"] if lat else 0.0,
            [lat[f"{name}_sum"] for name in columns] if lat else [0] * len(columns),
        ]
    return totals


def add_hours(session: Session, table: pa.Table) -> None:
    """Fold a prediction-log file's rows into the per-hour aggregates. A request's latency counts once (on its
    first row); rows and errors count per row."""
    from bridgehead.serving.models import PredictionHour

    by_name = _hour_totals(
        table.select(["endpoint", "ts", "model_name", "version", "role", "status", "row", "latency_ms"])
    )
    ids: dict[str, str] = {
        name: endpoint_id
        for name, endpoint_id in session.execute(
            select(Endpoint.name, Endpoint.id).where(Endpoint.name.in_({key[0] for key in by_name}))
        ).all()
    }
    totals = {(ids[key[0]], *key[1:]): values for key, values in by_name.items() if key[0] in ids}
    for (endpoint_id, hour, model, version, role), (reqs, rows, errs, lat, mx, hist) in totals.items():
        row = session.get(PredictionHour, (endpoint_id, hour, model, version, role))
        if row is None:
            session.add(
                PredictionHour(
                    endpoint_id=endpoint_id,
                    hour_ms=hour,
                    model_name=model,
                    version=version,
                    role=role,
                    requests=reqs,
                    rows=rows,
                    errors=errs,
                    latency_sum_ms=lat,
                    latency_max_ms=mx,
                    latency_buckets=hist,
                )
            )
        else:
            row.requests += reqs
            row.rows += rows
            row.errors += errs
            row.latency_sum_ms += lat
            row.latency_max_ms = max(row.latency_max_ms, mx)
            old = list(row.latency_buckets or [0] * len(hist))
            row.latency_buckets = [a + b for a, b in zip(old, hist, strict=False)]
    session.flush()


def record_inputs_read(session: Session, principal: Principal, endpoint: Endpoint, rows: int) -> None:
    """Audits that someone saw logged prediction inputs (which may hold personal data) in the console."""
    record(
        session,
        principal,
        "endpoint.inputs.read",
        "endpoint",
        endpoint.id,
        business_unit_id=endpoint.business_unit_id,
        changes={"name": endpoint.name, "rows": rows},
    )


# --- lineage: which endpoints serve a version ----------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    endpoint_id: str
    endpoint: str
    environment: str
    business_unit_id: str
    role: str  # "route" or "shadow"
    weight: float


def serving_version(session: Session, principal: Principal, version_id: str) -> list[Serving]:
    """The active endpoints (visible to the principal) whose current traffic includes the version."""
    found = []
    for endpoint in session.scalars(_visible(principal).where(Endpoint.status == "active")):
        policy = endpoint.policy or {}
        for role, key in (("route", "routes"), ("shadow", "shadows")):
            for r in policy.get(key, []):
                if r.get("version_id") == version_id:
                    weight = float(r.get("weight", 100.0))
                    found.append(
                        Serving(
                            endpoint.id,
                            endpoint.name,
                            endpoint.environment,
                            endpoint.business_unit_id,
                            role,
                            weight,
                        )
                    )
    return found


def versions_served(session: Session, principal: Principal, endpoint_id: str) -> list[tuple[str, str, float]]:
    """(version id, role, weight) of an endpoint's current traffic, if the principal may see it."""
    endpoint: Endpoint | None = session.scalar(_visible(principal).where(Endpoint.id == endpoint_id))
    if endpoint is None or not endpoint.policy:
        return []
    policy = endpoint.policy
    return [(r["version_id"], "route", float(r.get("weight", 0))) for r in policy.get("routes", [])] + [
        (r["version_id"], "shadow", 100.0) for r in policy.get("shadows", [])
    ]


# --- the endpoints as inference sees them: cached for a moment ------------------------------------------


@dataclass(frozen=True)
class EndpointView:
    """What inference needs of an endpoint, read once and shared by the requests of the next moment."""

    id: str
    name: str
    business_unit_id: str
    environment: str
    status: str
    invokers: dict[str, Any]
    salt: str
    policy: TrafficPolicy


class EndpointCache:
    """Endpoints by name for inference, each kept ``ttl`` seconds and refreshed ahead (see `caching`). Changes
    made through this process's API are seen at once (the routes invalidate, and a read that started before
    cannot put the old endpoint back); changes made elsewhere (another server, a standalone ``bridgehead
    serve``) within ``ttl``. Keeps the hot path to one database read: the caller's token."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._entries: RefreshAheadCache[str, EndpointView | None] = RefreshAheadCache(ttl)

    def invalidate(self, name: str | None = None) -> None:
        if name is None:
            self._entries.clear()
        else:
            self._entries.forget(name)

    def get(self, session: Session, name: str) -> EndpointView | None:
        # A cached "no such endpoint" is None too, and reads again: unknown names are rare and cheap to read.
        view = self._entries.get(name)
        return view if view is not None else self.load(session, name)

    def load(self, session: Session, name: str) -> EndpointView | None:
        """Read the endpoint from the database and keep it for ``ttl`` (None: there is no such endpoint)."""
        stamp = self._entries.stamp()
        found: Endpoint | None = session.scalar(select(Endpoint).where(Endpoint.name == name))
        view = None
        if found is not None:
            view = EndpointView(
                id=found.id,
                name=found.name,
                business_unit_id=found.business_unit_id,
                environment=found.environment,
                status=found.status,
                invokers=dict(found.invokers or {}),
                salt=found.salt,
                policy=TrafficPolicy.from_config(found.policy),
            )
        self._entries.put(name, view, stamp)
        return view

    def peek(self, name: str) -> EndpointView | None:
        """The cached endpoint if it is still fresh, without touching the database."""
        return self._entries.get(name)

    def claim_refresh(self, name: str) -> bool:
        """True, for one caller only, when the endpoint's entry is fresh but due: that caller should `load` it."""
        return self._entries.claim_refresh(name)

    def for_invoke(self, session: Session | None, principal: Principal, name: str) -> EndpointView:
        """The endpoint a caller may invoke; others answer "not found", a retired one 409. Without a session
        only a fresh cached entry is used (the caller checked ``peek`` first)."""
        view = self.get(session, name) if session is not None else self.peek(name)
        if view is None or not can_invoke(principal, view):
            raise NotFound(f"Endpoint {name!r} not found.", details={"endpoint": name})
        if view.status != "active":
            raise Conflict(f"Endpoint {name!r} is retired.", details={"endpoint": name})
        return view

"""Console: Data — the datasets list, a dataset's versions, access policy, contract editor and validation
reports, a version's profile (a card and charts per column) with its column tags, and the lineage graph.

Everything goes through the data service with the same permissions and the same masking as the JSON API:
values of columns tagged pii or sensitive are hidden from readers without data.pii, and every read of values
(profiles, validation samples) is audited, as is a refused read of a dataset that exists."""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bridgehead.auth.deps import PagePrincipal, check_form_csrf, db_of
from bridgehead.auth.models import Person
from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.data import lineage, service
from bridgehead.data.models import Dataset, DatasetVersion, Validation
from bridgehead.data.pii import TAGS
from bridgehead.errors import BridgeheadError, NotFound
from bridgehead.org import service as org
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.web import Console

router = APIRouter(include_in_schema=False)

PAGE = 50
MAX_VALIDATIONS = 50
MAX_COLUMNS = 300  # column cards (and tag rows) on a version page
MAX_CHARTS = 60
CATEGORICAL_INTS = 30  # integer columns with at most this many distinct values also get a top-values chart

DatasetId = Annotated[str, Path(min_length=1, max_length=32)]
Number = Annotated[int, Path(ge=1, le=2_147_483_647)]
NodeRef = Annotated[
    str,
    Query(
        min_length=3,
        max_length=100,
        pattern=r"^(dataset|dataset_version|run|model_version|endpoint):[A-Za-z0-9_\-]{1,64}$",
    ),
]
Depth = Annotated[int, Query(ge=1, le=10)]
Csrf = Annotated[str, Form(max_length=500)]


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _units(session: Session) -> dict[str, str]:
    return {u.id: u.name for u in org.list_units(session)}


def _people(session: Session, ids: Sequence[str | None]) -> dict[str, str]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    return dict(session.execute(select(Person.id, Person.name).where(Person.id.in_(wanted))).tuples().all())


def _can_write(principal: Principal, dataset: Dataset) -> bool:
    return principal.can(Action.DATA_WRITE) and principal.can_see_unit(dataset.business_unit_id)


@contextlib.contextmanager
def _audit_denials(request: Request, principal: Principal, dataset_id: str, what: str) -> Iterator[None]:
    """As the API does: a read refused with "not found" for a dataset that exists is audited (in its own
    transaction, since the refusal rolls the reader's back)."""
    try:
        yield
    except NotFound as exc:
        if exc.details.get("dataset_id") == dataset_id:
            with db_of(request).session(write=True) as session:
                service.record_denied(session, principal, dataset_id, what)
        raise


def _done(url: str, message: str) -> Response:
    return RedirectResponse(f"{url}?notice={quote(message)}", status_code=303)


def tag_counts(version: DatasetVersion) -> dict[str, int]:
    """How many of the version's columns carry each tag (pii, sensitive, protected)."""
    counts = dict.fromkeys(TAGS, 0)
    for entry in (version.column_tags or {}).values():
        for tag in entry.get("tags", []):
            if tag in counts:
                counts[tag] += 1
    return {k: v for k, v in counts.items() if v}


# --- datasets list -----------------------------------------------------------------------------------------


def _latest_versions(session: Session, dataset_ids: Sequence[str]) -> dict[str, DatasetVersion]:
    if not dataset_ids:
        return {}
    newest = (
        select(DatasetVersion.dataset_id, func.max(DatasetVersion.version).label("n"))
        .where(DatasetVersion.dataset_id.in_(dataset_ids))
        .group_by(DatasetVersion.dataset_id)
        .subquery()
    )
    rows = session.scalars(
        select(DatasetVersion).join(
            newest,
            (DatasetVersion.dataset_id == newest.c.dataset_id) & (DatasetVersion.version == newest.c.n),
        )
    ).all()
    return {v.dataset_id: v for v in rows}


def _latest_validations(session: Session, dataset_ids: Sequence[str]) -> dict[str, Validation]:
    if not dataset_ids:
        return {}
    rows = session.scalars(
        select(Validation)
        .where(Validation.dataset_id.in_(dataset_ids))
        .order_by(Validation.dataset_id, Validation.created_ms.desc(), Validation.id)
    ).all()
    latest: dict[str, Validation] = {}
    for row in rows:
        latest.setdefault(row.dataset_id, row)
    return latest


@router.get("/data")
def datasets_page(
    request: Request,
    principal: PagePrincipal,
    q: Annotated[str, Query(max_length=200)] = "",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    require(principal, Action.DATA_READ)
    with db_of(request).session() as session:
        _, total = service.list_datasets(session, principal, limit=1, offset=0)
        datasets, matching = service.list_datasets(
            session, principal, q=q.strip() or None, limit=PAGE, offset=(page - 1) * PAGE
        )
        ids = [d.id for d in datasets]
        latest = _latest_versions(session, ids)
        validations = _latest_validations(session, ids)
        units = _units(session)
    return _console(request).render(
        request,
        "datasets.html",
        active="data",
        datasets=datasets,
        total=total,
        matching=matching,
        latest=latest,
        validations=validations,
        units=units,
        q=q,
        page=page,
        first=(page - 1) * PAGE + 1,
        has_next=page * PAGE < matching,
        can_write=principal.can(Action.DATA_WRITE),
        server=str(request.base_url).rstrip("/"),
    )


# --- lineage (declared before /data/{dataset_id}) ------------------------------------------------------------

BOX_W, BOX_H, GAP_X, GAP_Y, PAD, HEAD = 176, 58, 118, 22, 16, 30
KIND_TITLES = {"run": "Runs", "model_version": "Model versions", "endpoint": "Endpoints"}


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1] + "…"


def _node_href(node: dict[str, Any]) -> str:
    kind, _, ident = node["id"].partition(":")
    if kind == "dataset_version":
        return f"/data/{node['dataset_id']}/versions/{node['version']}"
    if kind == "run":
        return f"/runs/{ident}"
    if kind == "endpoint":
        return f"/deployments/{quote(str(node['name']), safe='')}"
    return f"/models/{quote(str(node['model']), safe='')}/versions/{node['version']}"


def _node_detail(node: dict[str, Any]) -> str:
    if node["type"] == "dataset_version":
        rows = node.get("rows")
        parts = [
            f"{rows:,} rows" if isinstance(rows, int) else "rows unknown",
            str(node.get("digest", ""))[:8],
        ]
        return " · ".join(p for p in parts if p)
    if node["type"] == "run":
        return f"run · {str(node.get('status', '')).lower()}"
    if node["type"] == "endpoint":
        return f"endpoint · {node.get('status', '')}"
    return "registered model version"


def lineage_layout(graph: dict[str, Any], focus: set[str]) -> dict[str, Any]:
    """Positions for an SVG drawing of the graph, left to right: dataset versions (derived ones to the right
    of their parents), then runs, then model versions, then the endpoints serving them. Within a column, nodes sit near their parents."""
    nodes = {n["id"]: n for n in graph["nodes"]}
    edges = [e for e in graph["edges"] if e["source"] in nodes and e["target"] in nodes]
    depth = {k: 0 for k, n in nodes.items() if n["type"] == "dataset_version"}
    for _ in range(len(depth)):  # longest derivation path; a cycle cannot loop forever
        changed = False
        for e in edges:
            linked = e["kind"] == "derived" and e["source"] in depth and e["target"] in depth
            if linked and depth[e["target"]] < depth[e["source"]] + 1:
                depth[e["target"]] = depth[e["source"]] + 1
                changed = True
        if not changed:
            break
    data_columns = max(depth.values(), default=-1) + 1
    has_runs = any(n["type"] == "run" for n in nodes.values())
    has_models = any(n["type"] == "model_version" for n in nodes.values())
    after_data = {
        "run": 0,
        "model_version": int(has_runs),
        "endpoint": int(has_runs) + int(has_models),
    }
    raw_column = {
        k: depth[k] if n["type"] == "dataset_version" else data_columns + after_data.get(n["type"], 0)
        for k, n in nodes.items()
    }
    used = sorted(set(raw_column.values()))
    column = {k: used.index(c) for k, c in raw_column.items()}
    parents: dict[str, list[str]] = {}
    for e in edges:
        parents.setdefault(e["target"], []).append(e["source"])
    order: dict[str, float] = {}
    columns: list[list[str]] = [[] for _ in used]
    for index in range(len(used)):
        members = [k for k in nodes if column[k] == index]

        def rank(key: str) -> tuple[float, str]:
            placed = [order[p] for p in parents.get(key, []) if p in order]
            return (sum(placed) / len(placed) if placed else math.inf, nodes[key]["label"].lower())

        members.sort(key=rank)
        for position, key in enumerate(members):
            order[key] = position
        columns[index] = members
    tallest = max((len(c) for c in columns), default=0)
    height = HEAD + 2 * PAD + max(tallest * BOX_H + (tallest - 1) * GAP_Y, BOX_H)
    width = 2 * PAD + len(columns) * BOX_W + max(len(columns) - 1, 0) * GAP_X
    boxes: dict[str, dict[str, Any]] = {}
    headers = []
    for index, members in enumerate(columns):
        x = PAD + index * (BOX_W + GAP_X)
        span = len(members) * BOX_H + (len(members) - 1) * GAP_Y
        top = HEAD + PAD + ((tallest * BOX_H + (tallest - 1) * GAP_Y) - span) / 2
        kinds = {nodes[k]["type"] for k in members}
        if kinds == {"dataset_version"}:
            title = "Datasets" if index == 0 else "Derived datasets"
        else:
            title = KIND_TITLES.get(next(iter(kinds)), "") if len(kinds) == 1 else ""
        headers.append({"x": x, "title": title})
        for position, key in enumerate(members):
            node = nodes[key]
            boxes[key] = {
                "id": key,
                "type": node["type"],
                "x": x,
                "y": round(top + position * (BOX_H + GAP_Y), 1),
                "label": _clip(str(node["label"]), 23),
                "full": str(node["label"]),
                "detail": _clip(_node_detail(node), 28),
                "href": _node_href(node),
                "current": key in focus,
            }
    lines = []
    for e in edges:
        a, b = boxes[e["source"]], boxes[e["target"]]
        x1, y1 = a["x"] + BOX_W, a["y"] + BOX_H / 2
        x2, y2 = b["x"], b["y"] + BOX_H / 2
        if x2 <= x1:  # same column (should not happen): leave from the bottom, arrive at the top
            x1, y1, x2, y2 = a["x"] + BOX_W / 2, a["y"] + BOX_H, b["x"] + BOX_W / 2, b["y"]
            d = f"M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}"
        else:
            bend = (x2 - x1) / 2
            d = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2 - 2:.1f},{y2:.1f}"
        label = e.get("label") or ""
        lines.append(
            {
                "d": d,
                "kind": e["kind"],
                "label": _clip(label, 20),
                "full": label,
                "lx": round((x1 + x2) / 2, 1),
                "ly": round((y1 + y2) / 2 - 6, 1),
                "source": nodes[e["source"]]["label"],
                "target": nodes[e["target"]]["label"],
            }
        )
    return {
        "width": width,
        "height": height,
        "box_w": BOX_W,
        "box_h": BOX_H,
        "nodes": list(boxes.values()),
        "edges": lines,
        "headers": headers,
    }


def _lineage(request: Request, principal: Principal, node: str, depth: int) -> Response:
    require(principal, Action.DATA_READ)
    kind, _, ident = node.partition(":")
    dataset = None
    with db_of(request).session() as session:
        if kind == "dataset":
            dataset = service.get_dataset(session, principal, ident)
        graph = lineage.lineage(session, principal, kind, ident, depth=depth).as_dict()
    if kind == "dataset":
        focus = {n["id"] for n in graph["nodes"] if n.get("dataset_id") == ident}
        title = dataset.name if dataset else ident
    else:
        focus = {node}
        title = next((str(n["label"]) for n in graph["nodes"] if n["id"] == node), ident)
    return _console(request).render(
        request,
        "lineage.html",
        active="data",
        node=node,
        kind=kind,
        dataset=dataset,
        title=title,
        depth=depth,
        graph=graph,
        layout=lineage_layout(graph, focus),
        openlineage=f"/api/v1/lineage/openlineage?node={quote(node)}&depth={depth}",
    )


@router.get("/data/lineage")
def lineage_page(request: Request, principal: PagePrincipal, node: NodeRef, depth: Depth = 3) -> Response:
    return _lineage(request, principal, node, depth)


# --- a dataset ---------------------------------------------------------------------------------------------


def _validation_view(session: Session, principal: Principal, v: Validation) -> dict[str, Any]:
    found = session.get(DatasetVersion, v.version_id) if v.version_id else None
    masked = service.masked_columns(principal, found)
    report = service.mask_report(copy.deepcopy(v.report), masked)
    expectations = report.get("expectations", [])
    for e in expectations:
        sample = e.get("sample") or []
        e["sample_columns"] = list(dict.fromkeys(k for row in sample for k in row))
    return {
        "row": v,
        "version": found.version if found is not None else None,
        "masked": masked,
        "row_count": report.get("row_count"),
        "expectations": sorted(expectations, key=lambda e: (bool(e.get("passed")), e.get("id", ""))),
    }


def _dataset_page(
    request: Request,
    principal: Principal,
    dataset_id: str,
    *,
    status: int = 200,
    error: str | None = None,
    contract_text: str | None = None,
) -> Response:
    require(principal, Action.DATA_READ)
    with (
        _audit_denials(request, principal, dataset_id, "dataset"),
        db_of(request).session(write=True) as session,
    ):
        dataset = service.get_dataset(session, principal, dataset_id)
        versions = service.list_versions(session, dataset)
        derivations = service.derivations_of(session, [v.id for v in versions])
        rows = service.list_validations(session, dataset, limit=MAX_VALIDATIONS)
        validations = [_validation_view(session, principal, v) for v in rows]
        masked = sorted({c for v in validations for c in v["masked"]})
        # Validation reports carry sample rows: a read of values, audited like the API's.
        service.record_read(session, principal, dataset, "validation reports", masked=masked)
        policy = service.policy_of(session, dataset)
        units = _units(session)
        people = _people(
            session,
            [dataset.owner_id, *(v.author_id for v in versions), *(v.author_id for v in rows)],
        )
        expectations = service.expectation_count(dataset)
    writable = _can_write(principal, dataset)
    return _console(request).render(
        request,
        "dataset.html",
        status=status,
        active="data",
        dataset=dataset,
        versions=versions,
        derived={k: len(v) for k, v in derivations.items()},
        tag_counts={v.id: tag_counts(v) for v in versions},
        validations=validations,
        policy=policy,
        units=units,
        people=people,
        unit_name=units.get(dataset.business_unit_id, dataset.business_unit_id),
        expectations=expectations,
        contract=dataset.contract if contract_text is None else contract_text,
        can_write=writable,
        error=error,
        notice=request.query_params.get("notice") if not error else None,
    )


@router.get("/data/{dataset_id}")
def dataset_page(request: Request, principal: PagePrincipal, dataset_id: DatasetId) -> Response:
    return _dataset_page(request, principal, dataset_id)


@router.get("/data/{dataset_id}/lineage")
def dataset_lineage_page(
    request: Request, principal: PagePrincipal, dataset_id: DatasetId, depth: Depth = 3
) -> Response:
    return _lineage(request, principal, f"dataset:{dataset_id}", depth)


def _refusal(exc: BridgeheadError) -> bool:
    """Errors answered with the error page (not found, not allowed), not shown on the dataset page."""
    return isinstance(exc, NotFound) or (exc.status == 403 and "action" in exc.details)


@router.post("/data/{dataset_id}/contract")
def save_contract(
    request: Request,
    principal: PagePrincipal,
    dataset_id: DatasetId,
    contract: Annotated[str, Form(max_length=200_000)] = "",
    csrf: Csrf = "",
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.DATA_WRITE)
    try:
        with db_of(request).session(write=True) as session:
            dataset = service.set_contract(session, principal, dataset_id, contract.replace("\r\n", "\n"))
            count = service.expectation_count(dataset)
    except BridgeheadError as exc:
        if _refusal(exc):
            raise
        return _dataset_page(
            request, principal, dataset_id, status=exc.status, error=exc.message, contract_text=contract
        )
    message = (
        f"Contract saved: {count} expectation{'s' if count != 1 else ''}." if count else "Contract removed."
    )
    return _done(f"/data/{dataset_id}", message)


@router.post("/data/{dataset_id}/versions/{version}/validate")
def validate_version(
    request: Request, principal: PagePrincipal, dataset_id: DatasetId, version: Number, csrf: Csrf = ""
) -> Response:
    check_form_csrf(principal, csrf)
    require(principal, Action.DATA_WRITE)
    store: ArtifactStore = request.app.state.artifacts
    try:
        with db_of(request).session(write=True) as session:
            dataset = service.writable_dataset(session, principal, dataset_id)
            found = service.get_version(session, dataset, version)
            row = service.validate_stored_version(session, principal, dataset, found, store)
            passed, failed = row.passed, row.failed_count
    except BridgeheadError as exc:
        if _refusal(exc):
            raise
        return _dataset_page(request, principal, dataset_id, status=exc.status, error=exc.message)
    outcome = "passed" if passed else f"failed {failed} expectation{'s' if failed != 1 else ''}"
    return _done(f"/data/{dataset_id}", f"Version {version} validated: {outcome}.")


# --- a version's profile -----------------------------------------------------------------------------------


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def histogram_chart(column: dict[str, Any]) -> dict[str, Any] | None:
    """Bars between the histogram's edges; dates (epoch seconds in the profile) on a date axis."""
    hist = column.get("histogram") or {}
    edges, counts = hist.get("edges") or [], hist.get("counts") or []
    if len(edges) != len(counts) + 1 or not counts:
        return None
    bounds = [_finite(e) for e in edges]
    if any(b is None for b in bounds):
        return None
    lo = [b for b in bounds[:-1] if b is not None]
    hi = [b for b in bounds[1:] if b is not None]
    widths = [h - low for low, h in zip(lo, hi, strict=True)]
    dates = column.get("kind") == "datetime"
    try:
        x: list[Any] = (
            [_iso((low + h) / 2) for low, h in zip(lo, hi, strict=True)]
            if dates
            else [(low + h) / 2 for low, h in zip(lo, hi, strict=True)]
        )
    except (OverflowError, OSError, ValueError):
        return None
    return {
        "kind": "histogram",
        "title": column["name"],
        "x_title": column["name"],
        "y_title": "rows",
        "dates": dates,
        "series": [
            {
                "name": column["name"],
                "x": x,
                "y": [_finite(c) or 0 for c in counts],
                "width": [w * 1000 if dates else w for w in widths],
                "low": [_iso(v) if dates else v for v in lo],
                "high": [_iso(v) if dates else v for v in hi],
            }
        ],
    }


def top_values_chart(column: dict[str, Any]) -> dict[str, Any] | None:
    top = [t for t in column.get("top_values") or [] if t.get("value") is not None]
    if not top or max(int(t["count"]) for t in top) <= 1:
        return None  # nothing repeats (identifiers): a bar per value would say nothing
    return {
        "kind": "bars",
        "title": column["name"],
        "x_title": "rows",
        "series": [
            {
                "name": column["name"],
                "x": [int(t["count"]) for t in top],
                "y": [_clip(str(t["value"]), 40) for t in top],
            }
        ],
    }


def _readable_time(value: Any) -> Any:
    """A profile's ISO timestamp for reading: the date alone at midnight, else to the second, in UTC."""
    if not isinstance(value, str) or "T" not in value:
        return value
    day, _, rest = value.partition("T")
    rest = rest.removesuffix("+00:00")
    return day if rest in ("00:00:00", "00:00:00.000000") else f"{day} {rest[:8]} UTC"


def column_charts(column: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(caption, spec) for a column: a histogram for numbers and dates, the most frequent values for text,
    booleans and integers with few distinct values. Masked columns get none (their values are hidden)."""
    if column.get("masked"):
        return []
    charts: list[tuple[str, dict[str, Any]]] = []
    if column.get("kind") in ("numeric", "datetime"):
        spec = histogram_chart(column)
        if spec:
            charts.append(("Distribution", spec))
    kind = column.get("kind")
    integer = kind == "numeric" and "int" in str(column.get("type", "")).lower()
    if kind in ("string", "boolean") or (integer and (column.get("distinct") or 0) <= CATEGORICAL_INTS):
        spec = top_values_chart(column)
        if spec:
            height = 22 * len(spec["series"][0]["y"]) + 50
            spec["height"] = max(120, min(height, 480))
            charts.append(("Most frequent values", spec))
    return charts


@router.get("/data/{dataset_id}/versions/{version}")
def version_page(
    request: Request, principal: PagePrincipal, dataset_id: DatasetId, version: Number
) -> Response:
    require(principal, Action.DATA_READ)
    with (
        _audit_denials(request, principal, dataset_id, "profile"),
        db_of(request).session(write=True) as session,
    ):
        dataset = service.get_dataset(session, principal, dataset_id)
        found = service.get_version(session, dataset, version)
        masked = service.masked_columns(principal, found)
        profile = service.load_profile(found)
        summary: dict[str, Any] = (
            service.mask_summary(profile.summary(), masked)
            if profile is not None
            else {"row_count": found.row_count, "columns": []}
        )
        service.record_read(session, principal, dataset, f"profile of version {found.version}", masked=masked)
        parents = []
        for d in service.derivations_of(session, [found.id]).get(found.id, []):
            parent = session.get(DatasetVersion, d.parent_id)
            if parent is None:
                continue
            try:  # a parent in a dataset this reader may not see is left out, as lineage does
                owner = service.get_dataset(session, principal, parent.dataset_id)
            except NotFound:
                continue
            parents.append((owner, parent, d.transformation))
        people = _people(session, [found.author_id])
        units = _units(session)
        newest = service.latest_version_numbers(session, [dataset.id]).get(dataset.id)
    columns = summary.get("columns", [])
    for column in columns:
        if column.get("kind") == "datetime":
            column["min"], column["max"] = (
                _readable_time(column.get("min")),
                _readable_time(column.get("max")),
            )
    charts: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    drawn = 0
    for column in columns[:MAX_COLUMNS]:
        if drawn >= MAX_CHARTS:
            break
        charts[column["name"]] = column_charts(column)[: MAX_CHARTS - drawn]
        drawn += len(charts[column["name"]])
    schema = [{"name": c["name"], "type": c["type"]} for c in found.schema or []]
    tag_columns = [c["name"] for c in columns] or [c["name"] for c in schema]
    return _console(request).render(
        request,
        "dataset_version.html",
        active="data",
        dataset=dataset,
        v=found,
        newest=newest,
        unit_name=units.get(dataset.business_unit_id, dataset.business_unit_id),
        author=people.get(found.author_id or "", ""),
        parents=parents,
        summary=summary,
        columns=columns[:MAX_COLUMNS],
        more_columns=max(0, len(columns) - MAX_COLUMNS),
        schema=schema,
        charts=charts,
        has_charts=drawn > 0,
        masked=masked,
        column_tags=found.column_tags or {},
        tag_columns=tag_columns[:MAX_COLUMNS],
        tags=TAGS,
        tag_counts=tag_counts(found),
        can_write=_can_write(principal, dataset),
        notice=request.query_params.get("notice"),
    )


@router.post("/data/{dataset_id}/versions/{version}/column-tags")
def save_column_tags(
    request: Request,
    principal: PagePrincipal,
    dataset_id: DatasetId,
    version: Number,
    column: Annotated[list[str] | None, Form(max_length=1000)] = None,
    tag: Annotated[list[str] | None, Form(max_length=1100)] = None,
    csrf: Csrf = "",
) -> Response:
    """The form lists every column it shows (``column``) and the ticked boxes as ``tag:column`` (``tag``);
    only the columns whose tags changed are set, so untouched detected tags keep their kinds and reasons."""
    check_form_csrf(principal, csrf)
    require(principal, Action.DATA_WRITE)
    wanted: dict[str, set[str]] = {name: set() for name in column or []}
    for item in tag or []:
        name_of_tag, _, name = item.partition(":")
        if name in wanted:
            wanted[name].add(name_of_tag)
    base = f"/data/{dataset_id}/versions/{version}"
    with db_of(request).session(write=True) as session:
        dataset = service.writable_dataset(session, principal, dataset_id)
        found = service.get_version(session, dataset, version)
        current = found.column_tags or {}
        changes = {
            name: sorted(chosen)
            for name, chosen in wanted.items()
            if chosen != set(current.get(name, {}).get("tags", []))
        }
        if changes:
            service.set_column_tags(session, principal, dataset, found, changes)
    if not changes:
        return _done(base, "No column tags changed.")
    return _done(base, f"Tags of {len(changes)} column{'s' if len(changes) != 1 else ''} saved.")

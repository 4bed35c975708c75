"""Console: Experiments — the experiment list, an experiment's runs table, the run page, run comparison and
artifact downloads. Visibility (business units) comes from the tracking service: what a person may not see
answers 404, exactly like something that does not exist."""

from __future__ import annotations

import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from bridgehead.auth.deps import PagePrincipal, db_of
from bridgehead.auth.roles import Action
from bridgehead.auth.service import require
from bridgehead.errors import BadRequest
from bridgehead.org import service as org
from bridgehead.registry import service as registry
from bridgehead.store.artifacts import ArtifactStore, safe_relative_path
from bridgehead.tracking import service
from bridgehead.tracking.models import Metric, Run
from bridgehead.web import INLINE_IMAGES, Console, file_response

router = APIRouter(include_in_schema=False)

PAGE = 50
MAX_COMPARE = 12
MAX_CHARTS = 24
MAX_POINTS = 2000
MAX_FILES = 500
DEFAULT_METRIC_COLUMNS = 4
DEFAULT_PARAM_COLUMNS = 2
# Runs-table columns that sort by a run attribute (MLflow's attribute names).
SORTABLE_ATTRIBUTES = {"start_time": "Started", "run_name": "Run", "status": "Status", "user_id": "User"}
SYSTEM_TAG_PREFIXES = ("mlflow.", "bridgehead.")
FILTER_EXAMPLES = (
    "metrics.val_auc > 0.8",
    "params.model = 'gbm'",
    "attributes.status = 'FINISHED'",
    "tags.team LIKE 'retail%'",
)


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def _store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.artifacts
    return store


def _run_dir(run: Run) -> str | None:
    """The run's artifact directory inside Bridgehead's artifact store, or None when it lives elsewhere."""
    prefix = "mlflow-artifacts:/"
    if not run.artifact_uri.startswith(prefix):
        return None
    return run.artifact_uri.removeprefix(prefix).strip("/") or None


def _units(session: Any) -> dict[str, str]:
    return {u.id: u.name for u in org.list_units(session)}


# --- charts -----------------------------------------------------------------------------------


def _finite(m: Metric) -> float | None:
    # JSON has no NaN or infinity; plotly leaves a gap at null.
    return None if m.is_nan or math.isinf(m.value) else m.value


def _thin(history: list[Metric]) -> list[Metric]:
    """At most MAX_POINTS points, evenly strided, always keeping the last one."""
    if len(history) <= MAX_POINTS:
        return history
    picked = history[:: math.ceil(len(history) / MAX_POINTS)]
    return picked if picked[-1] is history[-1] else [*picked, history[-1]]


def line_chart(title: str, series: Sequence[tuple[str, int, list[Metric]]]) -> dict[str, Any]:
    """Overlaid histories (name, colour index, points). X is the step, unless a series logged several
    values at one step: then seconds since each series' first value."""
    by_step = all(len(h) <= 1 or len({m.step for m in h}) > 1 for _, _, h in series)
    out = []
    for name, color, history in series:
        points = _thin(history)
        if by_step:
            x: list[float] = [m.step for m in points]
        else:
            start = history[0].timestamp_ms
            x = [round((m.timestamp_ms - start) / 1000, 3) for m in points]
        out.append({"name": name, "color": color, "x": x, "y": [_finite(m) for m in points]})
    x_title = "step" if by_step else "seconds since first value"
    return {"kind": "line", "title": title, "x_title": x_title, "series": out}


def dot_chart(key: str, points: Sequence[tuple[str, int, float | None]]) -> dict[str, Any]:
    """One value per run (label, colour index, value), drawn as a dot per run on a shared value axis: small
    differences between good runs stay visible, which bars from zero would flatten."""
    return {
        "kind": "dots",
        "title": key,
        "x_title": "",
        "series": [
            {
                "name": key,
                "x": [value for _, _, value in points],
                "y": [label for label, _, _ in points],
                "colors": [color for _, color, _ in points],
            }
        ],
    }


# --- experiments ------------------------------------------------------------------------------


@router.get("/experiments")
def experiments_page(
    request: Request,
    principal: PagePrincipal,
    q: Annotated[str, Query(max_length=200)] = "",
    unit: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        experiments = service.search_experiments(session, principal, limit=5000)
        activity = service.experiment_activity(session, [e.id for e in experiments])
        units = _units(session)
    # The org-wide "Default" experiment only earns a row once something was logged to it.
    experiments = [e for e in experiments if e.id != service.DEFAULT_EXPERIMENT_ID or activity[e.id].runs]
    total_runs = sum(activity[e.id].runs for e in experiments)
    running = sum(activity[e.id].running for e in experiments)
    unit_ids = sorted({e.business_unit_id for e in experiments}, key=lambda u: units.get(u, u))
    shown = [
        e
        for e in experiments
        if (not q or q.lower() in e.name.lower()) and (not unit or e.business_unit_id == unit)
    ]
    shown.sort(key=lambda e: activity[e.id].last_ms or e.updated_ms, reverse=True)
    return _console(request).render(
        request,
        "experiments.html",
        active="experiments",
        experiments=shown,
        total=len(experiments),
        total_runs=total_runs,
        running=running,
        activity=activity,
        units=units,
        unit_ids=unit_ids,
        q=q,
        unit=unit,
        server=str(request.base_url).rstrip("/"),
    )


@dataclass
class RunsQuery:
    """The runs table's state, as carried in the page's query string."""

    filter: str = ""
    metrics: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    chosen: bool = False
    sort: str = "attributes.start_time"
    desc: bool = True
    page: int = 1

    def url(self, base: str, **changes: Any) -> str:
        state = {**self.__dict__, **changes}
        pairs: list[tuple[str, Any]] = []
        if state["filter"]:
            pairs.append(("filter", state["filter"]))
        if state["chosen"]:
            pairs.append(("cols", "1"))
            pairs += [("metric", k) for k in state["metrics"]]
            pairs += [("param", k) for k in state["params"]]
        if state["sort"] != "attributes.start_time" or not state["desc"]:
            pairs += [("sort", state["sort"]), ("dir", "desc" if state["desc"] else "asc")]
        if state["page"] > 1:
            pairs.append(("page", state["page"]))
        return f"{base}?{urlencode(pairs)}" if pairs else base

    def sort_url(self, base: str, column: str) -> str:
        # A first click sorts metrics highest first and times newest first, text A-Z; a second reverses.
        if column == self.sort:
            return self.url(base, desc=not self.desc, page=1)
        return self.url(
            base, sort=column, desc=column.startswith(("metrics.", "attributes.start_time")), page=1
        )

    def order_by(self) -> str:
        entity, _, key = self.sort.partition(".")
        return f"{entity}.`{key}` {'DESC' if self.desc else 'ASC'}"


def _sort_column(sort: str, metric_keys: list[str], param_keys: list[str]) -> str:
    entity, _, key = sort.partition(".")
    if (
        (entity == "metrics" and key in metric_keys)
        or (entity == "params" and key in param_keys)
        or (entity == "attributes" and key in SORTABLE_ATTRIBUTES)
    ) and "`" not in key:
        return sort
    return "attributes.start_time"


@router.get("/experiments/{experiment_id}")
def experiment_page(
    request: Request,
    principal: PagePrincipal,
    experiment_id: str,
    filter: Annotated[str, Query(max_length=2000)] = "",
    metric: Annotated[list[str] | None, Query()] = None,
    param: Annotated[list[str] | None, Query()] = None,
    cols: Annotated[str, Query(max_length=5)] = "",
    sort: Annotated[str, Query(max_length=300)] = "",
    dir: Annotated[str, Query(max_length=4)] = "desc",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    require(principal, Action.TRACKING_READ)
    db = db_of(request)
    with db.session() as session:
        experiment = service.get_experiment(session, principal, experiment_id)
        metric_keys, param_keys = service.experiment_keys(session, experiment.id)
        activity = service.experiment_activity(session, [experiment.id])[experiment.id]
        tags = service.experiment_tags(session, experiment.id)
        units = _units(session)
    chosen = cols == "1"
    state = RunsQuery(
        filter=filter.strip(),
        metrics=[k for k in metric_keys if k in (metric or [])]
        if chosen
        else metric_keys[:DEFAULT_METRIC_COLUMNS],
        params=[k for k in param_keys if k in (param or [])]
        if chosen
        else param_keys[:DEFAULT_PARAM_COLUMNS],
        chosen=chosen,
        sort=_sort_column(sort or "attributes.start_time", metric_keys, param_keys),
        desc=dir != "asc",
        page=page,
    )
    error = None
    runs: Sequence[Run] = []
    data: dict[str, service.RunData] = {}
    try:
        # A session of its own: on PostgreSQL a failed statement spoils the rest of its transaction.
        with db.session() as session:
            runs = service.search_runs(
                session,
                principal,
                [experiment.id],
                filter_string=state.filter or None,
                order_by=[state.order_by()],
                limit=PAGE + 1,
                offset=(page - 1) * PAGE,
            )
            data = service.run_data(session, [r.id for r in runs[:PAGE]])
    except BadRequest as exc:
        error = f"The filter could not be applied: {exc.message}"
    base = f"/experiments/{experiment.id}"
    # The User column earns its width when several people logged the runs shown, or when sorting by it.
    show_user = len({r.user_name for r in runs[:PAGE]}) > 1 or state.sort == "attributes.user_id"
    latest = {
        rid: {m.key: service.metric_value(m.value, m.is_nan) for m in d.metrics} for rid, d in data.items()
    }
    return _console(request).render(
        request,
        "experiment.html",
        status=400 if error else 200,
        active="experiments",
        experiment=experiment,
        tags={k: v for k, v in tags.items() if not k.startswith(SYSTEM_TAG_PREFIXES)},
        unit_name=units.get(experiment.business_unit_id, experiment.business_unit_id),
        activity=activity,
        runs=runs[:PAGE],
        show_user=show_user,
        fixed_columns=6 if show_user else 5,
        data=data,
        latest=latest,
        has_next=len(runs) > PAGE,
        state=state,
        base=base,
        metric_keys=metric_keys,
        param_keys=param_keys,
        sortable=SORTABLE_ATTRIBUTES,
        examples=FILTER_EXAMPLES,
        filter_error=error,
        first=(page - 1) * PAGE + 1,
        server=str(request.base_url).rstrip("/"),
    )


# --- runs -------------------------------------------------------------------------------------


def _unique_labels(runs: Sequence[Run]) -> dict[str, str]:
    """Run names for legends and bar labels; a repeated name gets its id's first characters."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
    return {r.id: r.name if seen[r.name] == 1 else f"{r.name} ({r.id[:6]})" for r in runs}


@router.get("/runs/compare")
def compare_page(
    request: Request,
    principal: PagePrincipal,
    ids: Annotated[list[str] | None, Query()] = None,
    only_diff: Annotated[bool, Query(alias="diff")] = False,
) -> Response:
    require(principal, Action.TRACKING_READ)
    wanted = list(dict.fromkeys(i.strip() for i in (ids or []) if i.strip()))
    if len(wanted) < 2:
        raise BadRequest("Select two or more runs to compare: tick them in an experiment's runs table.")
    if len(wanted) > MAX_COMPARE:
        raise BadRequest(f"Compare at most {MAX_COMPARE} runs at a time.")
    with db_of(request).session() as session:
        runs = [service.get_run(session, principal, rid) for rid in wanted]
        experiments = {
            eid: service.get_experiment(session, principal, eid) for eid in {r.experiment_id for r in runs}
        }
        data = service.run_data(session, wanted)
        histories = service.metric_histories(session, wanted)
    labels = _unique_labels(runs)
    colors = {r.id: i for i, r in enumerate(runs)}
    param_rows: list[tuple[str, list[str | None], bool]] = []
    param_keys = sorted({k for d in data.values() for k in d.params})
    for key in param_keys:
        texts = [data[r.id].params.get(key) for r in runs]
        differs = len(set(texts)) > 1
        if differs or not only_diff:
            param_rows.append((key, texts, differs))
    latest = {
        r.id: {m.key: service.metric_value(m.value, m.is_nan) for m in data[r.id].metrics} for r in runs
    }
    metric_keys = sorted({k for values in latest.values() for k in values})
    metric_rows: list[tuple[str, list[float | None], bool, tuple[float, float] | None]] = []
    charts: list[tuple[str, dict[str, Any]]] = []
    for key in metric_keys:
        values = [latest[r.id].get(key) for r in runs]
        present = [v for v in values if v is not None and not math.isnan(v)]
        differs = len(set(present)) > 1 or len(present) != len(values)
        best = (min(present), max(present)) if len(present) > 1 and differs else None
        if differs or not only_diff:
            metric_rows.append((key, values, differs, best))
        if len(charts) >= MAX_CHARTS:
            continue
        series = [(labels[r.id], colors[r.id], histories[r.id].get(key, [])) for r in runs]
        if any(len(h) > 1 for _, _, h in series):
            charts.append((key, line_chart(key, [s for s in series if s[2]])))
        else:
            points = [(label, color, _finite(h[-1])) for label, color, h in series if h]
            charts.append((key, dot_chart(key, points)))
    return _console(request).render(
        request,
        "run_compare.html",
        active="experiments",
        runs=runs,
        labels=labels,
        colors=colors,
        experiments=experiments,
        param_rows=param_rows,
        metric_rows=metric_rows,
        charts=charts,
        only_diff=only_diff,
        differing=sum(1 for _, _, d in param_rows if d),
        param_total=len(param_keys),
        ids_query=urlencode([("ids", r.id) for r in runs]),
    )


@router.get("/runs/{run_id}")
def run_page(request: Request, principal: PagePrincipal, run_id: str) -> Response:
    require(principal, Action.TRACKING_READ)
    with db_of(request).session() as session:
        run = service.get_run(session, principal, run_id)
        experiment = service.get_experiment(session, principal, run.experiment_id)
        data = service.run_data(session, [run.id])[run.id]
        histories = service.metric_histories(session, [run.id])[run.id]
        parent = (
            service.run_names(session, principal, [run.parent_run_id]).get(run.parent_run_id)
            if run.parent_run_id
            else None
        )
        children = service.child_runs(session, principal, run.id)
        versions = registry.versions_from_run(session, principal, run.id)
        units = _units(session)
    directory = _run_dir(run)
    files = _store(request).walk(directory) if directory else []
    charts = [
        (key, line_chart(key, [(key, 0, history)]))
        for key, history in sorted(histories.items())
        if len(history) > 1
    ][:MAX_CHARTS]
    images = [path for path, _ in files if posixpath.splitext(path)[1].lower() in INLINE_IMAGES][:12]
    tags = dict(sorted(data.tags.items()))
    return _console(request).render(
        request,
        "run.html",
        active="experiments",
        run=run,
        experiment=experiment,
        unit_name=units.get(run.business_unit_id, run.business_unit_id),
        params=dict(sorted(data.params.items())),
        metrics=sorted(data.metrics, key=lambda m: m.key),
        latest={m.key: service.metric_value(m.value, m.is_nan) for m in data.metrics},
        history_sizes={k: len(v) for k, v in histories.items()},
        user_tags={k: v for k, v in tags.items() if not k.startswith(SYSTEM_TAG_PREFIXES)},
        system_tags={k: v for k, v in tags.items() if k.startswith(SYSTEM_TAG_PREFIXES)},
        note=tags.get("mlflow.note.content", ""),
        inputs=data.inputs,
        charts=charts,
        more_charts=max(0, sum(1 for h in histories.values() if len(h) > 1) - MAX_CHARTS),
        files=files[:MAX_FILES],
        more_files=max(0, len(files) - MAX_FILES),
        images=images,
        in_store=directory is not None,
        parent=parent,
        children=children,
        versions=versions,
    )


@router.get("/runs/{run_id}/artifacts/{path:path}")
def download_artifact(
    request: Request, principal: PagePrincipal, run_id: str, path: str, inline: bool = False
) -> Response:
    """One file of a run's artifacts. The run's visibility is checked first; the path may not leave the
    run's directory (the artifact store refuses '..', absolute paths, encodings and links that escape)."""
    require(principal, Action.TRACKING_READ)
    relative = safe_relative_path(path)
    with db_of(request).session() as session:
        run = service.get_run(session, principal, run_id)
    directory = _run_dir(run)
    if directory is None:
        raise BadRequest("This run's artifacts are not stored in Bridgehead's artifact store.")
    return file_response(_store(request), f"{directory}/{relative}", inline=inline)

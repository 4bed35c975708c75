"""Lineage: datasets -> runs -> model versions (-> deployments -> monitors, filled by the serving and monitoring
issues), and dataset -> derived dataset with the transformation named. Also exported as OpenLineage events.

The graph is not stored separately: each edge is read from the record that makes it true (a run's dataset
inputs, a model version's source run, a version's derivations), so lineage can never disagree with them.
Only nodes the caller may see are returned; an edge to an invisible node is left out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridgehead.auth.roles import Action
from bridgehead.auth.service import Principal, require
from bridgehead.data.models import Dataset, DatasetDerivation, DatasetVersion
from bridgehead.errors import BadRequest, NotFound
from bridgehead.registry.models import ModelVersion, RegisteredModel
from bridgehead.tracking import service as tracking
from bridgehead.tracking.models import DatasetInput, Experiment, Run

__all__ = ["NODE_TYPES", "Graph", "lineage", "openlineage_events"]

NODE_TYPES = ("dataset", "dataset_version", "run", "model_version", "endpoint")
PRODUCER = "https://github.com/bridgehead-ai/bridgehead"
RUN_EVENT_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
SCHEMA_FACET = "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet"
MAX_NODES = 500


@dataclass
class Graph:
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: list[dict[str, str]] = field(default_factory=list)
    truncated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"nodes": list(self.nodes.values()), "edges": self.edges, "truncated": self.truncated}


class _Walker:
    def __init__(self, session: Session, principal: Principal) -> None:
        self.session, self.principal = session, principal
        self.graph = Graph()
        self._seen_edges: set[tuple[str, str]] = set()

    # -- visibility-checked loaders ------------------------------------------------------------------------

    def dataset_version(self, version_id: str) -> tuple[Dataset, DatasetVersion] | None:
        from bridgehead.data.service import get_dataset

        version = self.session.get(DatasetVersion, version_id)
        if version is None:
            return None
        try:
            return get_dataset(self.session, self.principal, version.dataset_id), version
        except NotFound:
            return None

    def run(self, run_id: str) -> Run | None:
        try:
            return tracking.get_run(self.session, self.principal, run_id)
        except NotFound:
            return None

    def model_version(self, version_id: str) -> tuple[RegisteredModel, ModelVersion] | None:
        version = self.session.get(ModelVersion, version_id)
        if version is None:
            return None
        stmt = tracking.visible(select(RegisteredModel), RegisteredModel, self.principal)
        model = self.session.scalar(stmt.where(RegisteredModel.id == version.model_id))
        return (model, version) if model is not None else None

    # -- nodes and edges -----------------------------------------------------------------------------------

    def add_node(self, key: str, **attrs: Any) -> None:
        if key not in self.graph.nodes:
            self.graph.nodes[key] = {"id": key, **attrs}

    def add_edge(self, source: str, target: str, kind: str, label: str = "") -> None:
        if (source, target) not in self._seen_edges:
            self._seen_edges.add((source, target))
            self.graph.edges.append({"source": source, "target": target, "kind": kind, "label": label})

    def node_for(self, key: str) -> bool:
        kind, _, ident = key.partition(":")
        if kind == "dataset_version":
            found = self.dataset_version(ident)
            if found is None:
                return False
            dataset, version = found
            self.add_node(
                key, type=kind, label=f"{dataset.name} v{version.version}", dataset_id=dataset.id,
                version=version.version, digest=version.digest, rows=version.row_count,
            )  # fmt: skip
        elif kind == "run":
            run = self.run(ident)
            if run is None:
                return False
            self.add_node(key, type=kind, label=run.name, experiment_id=run.experiment_id, status=run.status)
        elif kind == "model_version":
            found_mv = self.model_version(ident)
            if found_mv is None:
                return False
            model, mv = found_mv
            self.add_node(
                key, type=kind, label=f"{model.name} v{mv.version}", model=model.name, version=mv.version
            )
        elif kind == "endpoint":
            from bridgehead.serving.models import Endpoint

            endpoint = self.session.get(Endpoint, ident)
            if endpoint is None or not self.principal.can_see_unit(endpoint.business_unit_id):
                return False
            self.add_node(
                key, type=kind, label=f"{endpoint.name} ({endpoint.environment})", name=endpoint.name,
                environment=endpoint.environment, status=endpoint.status,
            )  # fmt: skip
        else:
            return False
        return True

    def neighbours(self, key: str) -> list[tuple[str, str, str, str]]:
        """(source, target, kind, label) edges touching the node, before visibility checks."""
        kind, _, ident = key.partition(":")
        s = self.session
        out: list[tuple[str, str, str, str]] = []
        if kind == "dataset_version":
            version = s.get(DatasetVersion, ident)
            if version is None:
                return out
            dataset = s.get(Dataset, version.dataset_id)
            for d in s.scalars(select(DatasetDerivation).where(DatasetDerivation.version_id == ident)):
                out.append((f"dataset_version:{d.parent_id}", key, "derived", d.transformation))
            for d in s.scalars(select(DatasetDerivation).where(DatasetDerivation.parent_id == ident)):
                out.append((key, f"dataset_version:{d.version_id}", "derived", d.transformation))
            stmt = select(DatasetInput.run_id, DatasetInput.context).where(
                DatasetInput.digest == version.digest, DatasetInput.name == (dataset.name if dataset else "")
            )
            for run_id, context in s.execute(stmt):
                run = s.get(Run, run_id)
                if (
                    run is not None
                    and dataset is not None
                    and run.business_unit_id == dataset.business_unit_id
                ):
                    out.append((key, f"run:{run_id}", "input", context))
        elif kind == "run":
            run = s.get(Run, ident)
            if run is None:
                return out
            for name, digest, context in s.execute(
                select(DatasetInput.name, DatasetInput.digest, DatasetInput.context).where(
                    DatasetInput.run_id == ident
                )
            ):
                versions = (
                    select(DatasetVersion.id)
                    .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                    .where(
                        Dataset.business_unit_id == run.business_unit_id,
                        Dataset.name == name,
                        DatasetVersion.digest == digest.lower(),
                    )
                )
                for version_id in s.scalars(versions):
                    out.append((f"dataset_version:{version_id}", key, "input", context))
            for mv_id in s.scalars(select(ModelVersion.id).where(ModelVersion.run_id == ident)):
                out.append((key, f"model_version:{mv_id}", "produced", ""))
        elif kind == "model_version":
            from bridgehead.serving.service import serving_version

            mv = s.get(ModelVersion, ident)
            if mv is not None and mv.run_id:
                out.append((f"run:{mv.run_id}", key, "produced", ""))
            for served in serving_version(s, self.principal, ident):
                label = "shadow" if served.role == "shadow" else f"{served.weight:g} %"
                out.append((key, f"endpoint:{served.endpoint_id}", "deployed", label))
        elif kind == "endpoint":
            from bridgehead.serving.service import versions_served

            for version_id, role, weight in versions_served(s, self.principal, ident):
                label = "shadow" if role == "shadow" else f"{weight:g} %"
                out.append((f"model_version:{version_id}", key, "deployed", label))
        return out


def _start_keys(session: Session, kind: str, ident: str) -> list[str]:
    if kind not in NODE_TYPES:
        raise BadRequest(f"node type must be one of {', '.join(NODE_TYPES)}.", details={"type": kind})
    if kind == "dataset":
        ids = session.scalars(select(DatasetVersion.id).where(DatasetVersion.dataset_id == ident)).all()
        return [f"dataset_version:{i}" for i in ids]
    return [f"{kind}:{ident}"]


def lineage(session: Session, principal: Principal, kind: str, ident: str, *, depth: int = 3) -> Graph:
    """Upstream and downstream of a node, ``depth`` edges away at most (nodes the caller may see)."""
    require(principal, Action.DATA_READ)
    require(principal, Action.TRACKING_READ)
    walker = _Walker(session, principal)
    if kind == "dataset":
        from bridgehead.data.service import get_dataset

        get_dataset(session, principal, ident)  # not found / not visible -> 404
    starts = [key for key in _start_keys(session, kind, ident) if walker.node_for(key)]
    if not starts and kind != "dataset":
        raise NotFound(
            f"No {kind.replace('_', ' ')} {ident!r} that you may see.", details={"node": f"{kind}:{ident}"}
        )
    queue = deque((key, 0) for key in starts)
    expanded: set[str] = set()
    while queue:
        key, distance = queue.popleft()
        if key in expanded or distance >= depth:
            continue
        expanded.add(key)
        for source, target, edge_kind, label in walker.neighbours(key):
            other = target if source == key else source
            if other not in walker.graph.nodes:
                if len(walker.graph.nodes) >= MAX_NODES:
                    walker.graph.truncated = True
                    continue
                if not walker.node_for(other):
                    continue
            walker.add_edge(source, target, edge_kind, label)
            queue.append((other, distance + 1))
    return walker.graph


# -- OpenLineage ----------------------------------------------------------------------------------------------


def _run_uuid(ident: str) -> str:
    try:
        return str(uuid.UUID(hex=ident))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bridgehead:{ident}"))


def _iso(ms: int | None) -> str:
    stamp = dt.datetime.fromtimestamp((ms or 0) / 1000, tz=dt.UTC)
    return stamp.isoformat().replace("+00:00", "Z")


def _dataset_ref(session: Session, node: dict[str, Any], namespace: str) -> dict[str, Any]:
    version = session.get(DatasetVersion, node["id"].partition(":")[2])
    ref: dict[str, Any] = {"namespace": namespace, "name": node["label"].replace(" v", "@v"), "facets": {}}
    if version is not None and version.schema:
        ref["facets"]["schema"] = {
            "_producer": PRODUCER,
            "_schemaURL": SCHEMA_FACET,
            "fields": [{"name": c["name"], "type": c["type"]} for c in version.schema],
        }
    return ref


def openlineage_events(session: Session, graph: Graph, namespace: str = "bridgehead") -> list[dict[str, Any]]:
    """One COMPLETE RunEvent per run (inputs: dataset versions; outputs: model versions) and one per dataset
    derivation (job named after the transformation), following the OpenLineage 2-0-2 spec."""
    events: list[dict[str, Any]] = []
    nodes = graph.nodes
    for key, node in nodes.items():
        if node["type"] != "run":
            continue
        run = session.get(Run, key.partition(":")[2])
        if run is None:
            continue
        experiment = session.get(Experiment, run.experiment_id)
        inputs = [
            _dataset_ref(session, nodes[e["source"]], f"{namespace}://datasets")
            for e in graph.edges
            if e["target"] == key and e["kind"] == "input"
        ]
        outputs = [
            {
                "namespace": f"{namespace}://models",
                "name": nodes[e["target"]]["label"].replace(" v", "/"),
                "facets": {},
            }
            for e in graph.edges
            if e["source"] == key and e["kind"] == "produced"
        ]
        events.append(
            {
                "eventType": "COMPLETE"
                if run.status == "FINISHED"
                else ("FAIL" if run.status == "FAILED" else "RUNNING"),
                "eventTime": _iso(run.end_ms or run.start_ms),
                "producer": PRODUCER,
                "schemaURL": RUN_EVENT_SCHEMA,
                "run": {"runId": _run_uuid(run.id), "facets": {}},
                "job": {
                    "namespace": f"{namespace}://experiments",
                    "name": f"{experiment.name if experiment else run.experiment_id}/{run.name}",
                    "facets": {},
                },
                "inputs": inputs,
                "outputs": outputs,
            }
        )
    for edge in graph.edges:
        if edge["kind"] != "derived":
            continue
        child = session.get(DatasetVersion, edge["target"].partition(":")[2])
        events.append(
            {
                "eventType": "COMPLETE",
                "eventTime": _iso(child.created_ms if child else None),
                "producer": PRODUCER,
                "schemaURL": RUN_EVENT_SCHEMA,
                "run": {"runId": _run_uuid(f"{edge['source']}->{edge['target']}"), "facets": {}},
                "job": {
                    "namespace": f"{namespace}://transformations",
                    "name": edge["label"] or "derivation",
                    "facets": {},
                },
                "inputs": [_dataset_ref(session, nodes[edge["source"]], f"{namespace}://datasets")],
                "outputs": [_dataset_ref(session, nodes[edge["target"]], f"{namespace}://datasets")],
            }
        )
    return events

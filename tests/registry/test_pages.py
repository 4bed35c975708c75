"""The Models console: model list, versions, aliases, a version's lineage, signature and files, downloads
and business-unit isolation, on SQLite and PostgreSQL. Model files are real skops-saved scikit-learn models."""

from __future__ import annotations

import html as htmllib
import json
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import bridgehead
from bridgehead.auth.roles import Role
from bridgehead.registry import service as registry
from bridgehead.store import Database
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import service as tracking
from tests.conftest import Member, Org
from tests.tracking.pagetools import islands, table
from tests.tracking.seed import (
    T0,
    RunSpec,
    curve,
    log_run,
    principal_for,
    register,
    run_dir,
    save_sklearn_model,
)
from tests.tracking.test_pages import HTML, sign_in

SIGNATURE = {
    "inputs": json.dumps(
        [
            {"type": "double", "name": "tenure_months", "required": True},
            {"type": "string", "name": "segment", "required": False},
        ]
    ),
    "outputs": json.dumps([{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]),
}
DATASET = {"name": "customers-2024q4", "digest": "9f8e7d6c5b4a", "source": "s3://lake/customers.parquet"}


@dataclass
class Models:
    retail: Member
    lending: Member
    run_v1: str
    run_v2: str
    lending_run: str
    v2_bytes: bytes
    v2_dir: str


@pytest.fixture
def models(orgs: Org, db: Database, app: FastAPI) -> Models:
    retail = orgs.member(Role.DATA_SCIENTIST, unit="retail", email="ds.retail@example.com")
    lending = orgs.member(Role.DATA_SCIENTIST, unit="lending", email="ds.lending@example.com")
    me = principal_for(db, retail.token)
    other = principal_for(db, lending.token)
    store: ArtifactStore = app.state.artifacts
    with db.session(write=True) as session:
        churn = tracking.create_experiment(session, me, "churn-prediction").id
        credit = tracking.create_experiment(session, other, "credit-default").id
    run_v1 = log_run(
        db,
        me,
        churn,
        RunSpec("logreg-baseline", {"model": "logreg"}, {"val_auc": [0.84], "f1": [0.71]}),
        start_ms=T0,
    )
    run_v2 = log_run(
        db,
        me,
        churn,
        RunSpec(
            "gbm-depth4",
            {"model": "gbm"},
            {"val_auc": curve(0.91, 8), "f1": [0.78], "precision": [0.8], "recall": [0.76]},
            datasets=[{**DATASET, "context": "training"}],
        ),
        start_ms=T0 + 3_600_000,
    )
    lending_run = log_run(
        db, other, credit, RunSpec("pd-glm", {"model": "glm"}, {"gini": [0.61]}), start_ms=T0
    )
    save_sklearn_model(store, f"{run_dir(db, me, run_v1)}/model", seed=1)
    v2_dir = f"{run_dir(db, me, run_v2)}/model"
    v2_bytes = save_sklearn_model(store, v2_dir, signature=SIGNATURE, seed=2)
    save_sklearn_model(store, f"{run_dir(db, other, lending_run)}/model", seed=3)
    register(db, me, store, "churn-classifier", run_v1, description="Flags customers likely to leave.")
    register(db, me, store, "churn-classifier", run_v2)
    register(db, other, store, "credit-pd", lending_run)
    register(db, other, store, "credit-pd-shared", lending_run, visibility="organization")
    with db.session(write=True) as session:
        registry.set_alias(session, me, "churn-classifier", "champion", 2)
        registry.set_alias(session, me, "churn-classifier", "baseline", 1)
    return Models(retail, lending, run_v1, run_v2, lending_run, v2_bytes, v2_dir)


def test_model_list_shows_latest_version_aliases_and_counts(client: TestClient, models: Models) -> None:
    sign_in(client, models.retail)
    page = client.get("/models")
    assert page.status_code == 200
    head, rows = table(page.text, "models")
    assert head[0] == ["Model", "Business unit", "Latest version", "Aliases", "Versions", "Updated"]
    by_name = {row[0].split(" ")[0]: row for row in rows}
    assert sorted(by_name) == ["churn-classifier", "credit-pd-shared"]  # credit-pd is private to lending
    churn = by_name["churn-classifier"]
    assert churn[0] == "churn-classifier Flags customers likely to leave."
    assert churn[1] == "Retail"
    assert churn[2] == "v2 sklearn"
    assert churn[3] == "@baseline v1 @champion v2"
    assert churn[4] == "2"
    assert by_name["credit-pd-shared"][1] == "Lending shared organization-wide"
    assert 'href="/models/churn-classifier/versions/2"' in page.text

    filtered = client.get("/models", params={"q": "SHARED"})
    assert [r[0] for r in table(filtered.text, "models")[1]] == ["credit-pd-shared"]


def test_empty_model_list_explains_how_to_register(client: TestClient, orgs: Org) -> None:
    sign_in(client, orgs.member(Role.DATA_SCIENTIST, unit="insurance"))
    page = client.get("/models")
    assert page.status_code == 200
    assert "Register your first model" in page.text
    assert 'registered_model_name="churn-classifier"' in htmllib.unescape(page.text)


def test_model_page_lists_versions_with_lineage_and_digest(
    client: TestClient, models: Models, db: Database
) -> None:
    sign_in(client, models.retail)
    page = client.get("/models/churn-classifier")
    assert page.status_code == 200
    head, rows = table(page.text, "versions")
    assert head[0] == [
        "Version",
        "Flavor",
        "Source run",
        "Metrics at registration",
        "SHA-256",
        "Author",
        "Registered",
    ]
    assert [r[0] for r in rows] == ["v2 @champion", "v1 @baseline"]
    v2, v1 = rows
    assert v2[1] == "sklearn"
    assert v2[2] == "gbm-depth4"
    assert v2[3] == "f1 0.78 precision 0.8 recall 0.76 +1"
    assert v1[3] == "f1 0.71 val_auc 0.84"
    assert v2[5] == "ds.retail"
    with db.session() as session:
        digest = registry.get_version(
            session, principal_for(db, models.retail.token), "churn-classifier", 2
        ).sha256
    assert len(digest) == 64 and v2[4] == digest[:12]
    assert f'title="{digest}"' in page.text
    assert f'href="/runs/{models.run_v2}"' in page.text
    assert "Flags customers likely to leave." in page.text
    aliases = page.text.split('id="aliases"')[1].split("</section>")[0]
    assert "@baseline" in aliases and "@champion" in aliases
    assert 'href="/models/churn-classifier/versions/2"' in aliases


def test_version_page_shows_lineage_signature_and_files(client: TestClient, models: Models) -> None:
    sign_in(client, models.retail)
    page = client.get("/models/churn-classifier/versions/2")
    assert page.status_code == 200
    text = page.text
    lineage = text.split('id="lineage"')[1].split("</ol>")[0]
    nodes = [
        htmllib.unescape(" ".join(n.split("</li>")[0].split())) for n in lineage.split('<li class="node')[1:]
    ]
    assert "Datasets" in nodes[0] and "customers-2024q4" in nodes[0] and "training" in nodes[0]
    assert f'<a class="strong" href="/runs/{models.run_v2}">gbm-depth4</a>' in nodes[1]
    assert "churn-prediction" in nodes[1]
    assert "v2" in nodes[2] and "sklearn" in nodes[2]
    assert "Deployments" in nodes[3] and "Not deployed" in nodes[3]
    assert "@champion" in text and "models:/churn-classifier@champion" in text
    assert (
        f'<span class="muted">v{bridgehead.__version__}</span>' in text
    )  # the shell's version, not the model's

    assert table(text, "signature-inputs")[1] == [
        ["tenure_months", "double", ""],
        ["segment", "string", "optional"],
    ]
    assert table(text, "signature-outputs")[1] == [["—", "tensor int64", "shape (-1,)"]]
    metrics = dict(tuple(r) for r in table(text, "version-metrics")[1])
    assert metrics == {"f1": "0.78", "precision": "0.8", "recall": "0.76", "val_auc": "0.91"}

    files = table(text, "files")[1]
    assert [f[0] for f in files] == ["bridgehead-model.json", "model.skops"]
    assert files[1][1].endswith(("KB", "B"))
    assert 'href="/models/churn-classifier/versions/2/files/model.skops" download' in text
    assert 'id="sha256"' in text
    assert not islands(text)  # no charts on this page

    v1 = client.get("/models/churn-classifier/versions/1").text
    assert "No signature was recorded." in v1
    assert "No datasets were recorded on the source run." in v1


def test_verify_compares_the_files_with_the_recorded_digest(
    client: TestClient, models: Models, app: FastAPI
) -> None:
    sign_in(client, models.retail)
    ok = client.get("/models/churn-classifier/versions/2", params={"verify": "true"})
    assert "The files match the SHA-256 recorded at registration." in ok.text
    store: ArtifactStore = app.state.artifacts
    store.put_bytes(f"{models.v2_dir}/model.skops", b"tampered")
    bad = client.get("/models/churn-classifier/versions/2", params={"verify": "true"})
    assert 'id="verify-result"' in bad.text and "no longer match" in bad.text


def test_file_download_returns_the_model_bytes(client: TestClient, models: Models) -> None:
    sign_in(client, models.retail)
    r = client.get("/models/churn-classifier/versions/2/files/model.skops")
    assert r.status_code == 200
    assert r.content == models.v2_bytes
    assert r.headers["content-disposition"].startswith('attachment; filename="model.skops"')
    manifest = client.get("/models/churn-classifier/versions/2/files/bridgehead-model.json")
    assert manifest.json()["flavor"] == "sklearn"
    assert client.get("/models/churn-classifier/versions/2/files/nothing.bin").status_code == 404
    assert client.get("/models/churn-classifier/versions/9/files/model.skops").status_code == 404
    assert client.get("/models/churn-classifier/versions/two/files/model.skops").status_code == 400


def test_file_paths_cannot_leave_the_version(client: TestClient, models: Models) -> None:
    sign_in(client, models.retail)
    for path in (
        "%2e%2e/%2e%2e/%2e%2e/secret",
        "..%2f..%2fmodel%2fmodel.skops",
        "model.skops%2f..%2f..%2f..%2f..%2fbridgehead.db",
        "%5c..%5c..%5cbridgehead.db",
        "/etc/passwd",
    ):
        r = client.get(f"/models/churn-classifier/versions/1/files/{path}")
        assert r.status_code == 400, (path, r.text)


def test_another_units_private_model_is_404(client: TestClient, models: Models) -> None:
    sign_in(client, models.retail)
    for path in (
        "/models/credit-pd",
        "/models/credit-pd/versions/1",
        "/models/credit-pd/versions/1/files/model.skops",
    ):
        r = client.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert "pd-glm" not in r.text
    sign_in(client, models.lending)
    assert client.get("/models/churn-classifier").status_code == 404
    assert client.get("/models/churn-classifier/versions/2/files/model.skops").status_code == 404
    names = sorted(r[0].split(" ")[0] for r in table(client.get("/models").text, "models")[1])
    assert names == ["credit-pd", "credit-pd-shared"]


def test_shared_model_hides_the_private_run_behind_it(client: TestClient, models: Models) -> None:
    sign_in(client, models.retail)
    model = client.get("/models/credit-pd-shared")
    assert model.status_code == 200
    assert table(model.text, "versions")[1][0][2] == "not visible"
    assert "pd-glm" not in model.text
    version = client.get("/models/credit-pd-shared/versions/1")
    assert "belongs to a business unit you cannot see" in version.text
    assert "pd-glm" not in version.text and "gini" in version.text  # metrics were snapshotted at registration
    files = client.get("/models/credit-pd-shared/versions/1/files/model.skops")
    assert files.status_code == 200


def test_run_page_links_the_versions_registered_from_it(client: TestClient, models: Models) -> None:
    sign_in(client, models.retail)
    page = client.get(f"/runs/{models.run_v2}")
    rows = table(page.text, "versions")[1]
    assert rows[0][:3] == ["churn-classifier", "v2", "sklearn"]
    assert 'href="/models/churn-classifier/versions/2"' in page.text


def test_models_pages_need_a_signed_in_person(client: TestClient, models: Models) -> None:
    r = client.get("/models/churn-classifier", headers=HTML, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fmodels%2Fchurn-classifier"
    assert client.get("/models/churn-classifier/versions/1/files/model.skops").status_code == 401

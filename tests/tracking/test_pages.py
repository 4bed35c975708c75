"""The Experiments console: experiment list, runs table (columns, filter, sort, pages), run page, compare,
artifact downloads and business-unit isolation, on SQLite and PostgreSQL."""

from __future__ import annotations

import html as htmllib
import re
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from bridgehead.store import Database
from bridgehead.store.artifacts import ArtifactStore
from bridgehead.tracking import pages
from bridgehead.tracking import service as tracking
from tests.auth.test_login import login
from tests.conftest import PASSWORD, Member, Org
from tests.tracking.pagetools import flash_error, islands, table
from tests.tracking.seed import T0, RunSpec, curve, log_run, principal_for, run_dir

HTML = {"Accept": "text/html"}
LOSS = [0.69, 0.52, 0.44, 0.39, 0.36, 0.34, 0.33, 0.32, 0.315, 0.31]


@dataclass
class World:
    retail: Member
    lending: Member
    viewer: Member
    churn: str
    credit: str
    gbm_a: str
    gbm_b: str
    logreg: str
    child: str
    credit_run: str


@pytest.fixture
def world(orgs: Org, db: Database, app: FastAPI) -> World:
    retail = orgs.member(Role.DATA_SCIENTIST, unit="retail", email="ds.retail@example.com")
    lending = orgs.member(Role.DATA_SCIENTIST, unit="lending", email="ds.lending@example.com")
    viewer = orgs.member(Role.BUSINESS_USER, unit="retail", email="viewer.retail@example.com")
    me = principal_for(db, retail.token)
    other = principal_for(db, lending.token)
    with db.session(write=True) as session:
        churn = tracking.create_experiment(
            session, me, "churn-prediction", description="Which customers leave in the next 90 days."
        ).id
        credit = tracking.create_experiment(session, other, "credit-default").id
    dataset = {"name": "customers-2024q4", "digest": "a1b2c3d4e5f6", "source": "s3://lake/customers.parquet"}
    gbm_a = log_run(
        db,
        me,
        churn,
        RunSpec(
            "gbm-depth4",
            {"model": "gbm", "max_depth": "4", "learning_rate": "0.1"},
            {"val_auc": curve(0.91, 10), "loss": LOSS, "accuracy": [0.88]},
            tags={"team": "retail-analytics", "mlflow.note.content": "Baseline with depth 4."},
            datasets=[{**dataset, "context": "training"}],
        ),
        start_ms=T0,
    )
    gbm_b = log_run(
        db,
        me,
        churn,
        RunSpec(
            "gbm-depth6",
            {"model": "gbm", "max_depth": "6", "learning_rate": "0.1"},
            {"val_auc": curve(0.89, 10, seed=1.0), "loss": [v + 0.02 for v in LOSS], "accuracy": [0.86]},
        ),
        start_ms=T0 + 3_600_000,
    )
    logreg = log_run(
        db,
        me,
        churn,
        RunSpec("logreg", {"model": "logreg", "C": "1.0"}, {"val_auc": [0.84], "accuracy": [0.81]}, "FAILED"),
        start_ms=T0 + 7_200_000,
    )
    child = log_run(
        db,
        me,
        churn,
        RunSpec("fold-1", {"model": "gbm", "fold": "1"}, {"val_auc": [0.9]}, parent=gbm_a),
        start_ms=T0 + 60_000,
    )
    credit_run = log_run(
        db, other, credit, RunSpec("pd-baseline", {"model": "glm"}, {"gini": [0.61]}), start_ms=T0
    )
    store: ArtifactStore = app.state.artifacts
    base = run_dir(db, me, gbm_a)
    store.put_bytes(f"{base}/notes/summary.txt", b"depth 4 wins on AUC\n")
    store.put_bytes(f"{base}/plots/roc.png", b"\x89PNG\r\n\x1a\n fake image bytes")
    store.put_bytes(f"{run_dir(db, other, credit_run)}/secret.txt", b"lending only")
    return World(retail, lending, viewer, churn, credit, gbm_a, gbm_b, logreg, child, credit_run)


def sign_in(client: TestClient, member: Member) -> None:
    client.cookies.clear()
    assert login(client, member.email, PASSWORD).status_code == 303


def run_rows(html: str) -> list[list[str]]:
    return table(html, "runs")[1]


def run_names(html: str) -> list[str]:
    return [row[1].removesuffix(" child") for row in run_rows(html)]


def test_pages_need_a_signed_in_person(client: TestClient, world: World) -> None:
    for path in ("/experiments", f"/experiments/{world.churn}", f"/runs/{world.gbm_a}"):
        r = client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    r = client.get(f"/runs/{world.gbm_a}/artifacts/notes/summary.txt", follow_redirects=False)
    assert r.status_code == 401


def test_experiment_list_shows_visible_experiments_with_counts(client: TestClient, world: World) -> None:
    sign_in(client, world.viewer)
    page = client.get("/experiments")
    assert page.status_code == 200
    _, rows = table(page.text, "experiments")
    assert [r[0].split(" Which")[0] for r in rows] == ["churn-prediction"]
    assert rows[0][1] == "Retail"
    assert rows[0][3] == "4"  # runs, the nested one included
    assert "credit-default" not in page.text

    sign_in(client, world.lending)
    _, rows = table(client.get("/experiments").text, "experiments")
    assert [r[0] for r in rows] == ["credit-default"]


def test_empty_experiment_list_explains_how_to_log_a_run(client: TestClient, orgs: Org) -> None:
    newcomer = orgs.member(Role.DATA_SCIENTIST, unit="insurance")
    sign_in(client, newcomer)
    page = client.get("/experiments")
    assert page.status_code == 200
    assert "Log your first run" in page.text
    assert "MLFLOW_TRACKING_URI=https://testserver" in page.text
    assert "mlflow.set_experiment(" in htmllib.unescape(page.text)


def test_runs_table_shows_the_chosen_metric_and_param_columns(client: TestClient, world: World) -> None:
    sign_in(client, world.retail)
    default = client.get(f"/experiments/{world.churn}")
    head, _ = table(default.text, "runs")
    # Without a choice: the first metrics and params, alphabetically.
    assert head[0][1:] == ["Metrics", "Parameters"]
    assert [h.rstrip("↕↓↑") for h in head[1][5:]] == [
        "accuracy",
        "loss",
        "val_auc",
        "C",
        "fold",
    ]

    chosen = client.get(
        f"/experiments/{world.churn}", params={"cols": "1", "metric": "val_auc", "param": "model"}
    )
    head, rows = table(chosen.text, "runs")
    assert [h.rstrip("↕↓↑") for h in head[1]] == [
        "",
        "Run",
        "Status",
        "Started",
        "Duration",
        "val_auc",
        "model",
    ]
    by_name = {r[1].removesuffix(" child"): r for r in rows}
    assert by_name["gbm-depth4"][5:] == ["0.91", "gbm"]
    assert by_name["logreg"][5:] == ["0.84", "logreg"]
    assert by_name["logreg"][2] == "failed" and by_name["gbm-depth4"][2] == "finished"
    assert by_name["gbm-depth4"][4] == "7m 00s"
    assert 'name="ids" value="' in chosen.text and 'form="compare-form"' in chosen.text

    nothing = client.get(f"/experiments/{world.churn}", params={"cols": "1"})
    head, _ = table(nothing.text, "runs")
    assert len(head) == 1 and len(head[0]) == 5


def test_the_user_column_appears_when_several_people_logged_runs(
    client: TestClient, world: World, db: Database, admin: Member
) -> None:
    sign_in(client, world.retail)
    head, _ = table(client.get(f"/experiments/{world.churn}").text, "runs")
    assert "User↕" not in head[-1]  # one person logged every run
    log_run(db, principal_for(db, admin.token), world.churn, RunSpec("admin-check", {}, {}), start_ms=T0)
    head, rows = table(client.get(f"/experiments/{world.churn}").text, "runs")
    assert head[-1][5] == "User↕"
    assert {row[5] for row in rows} == {"ds.retail", "admin"}


def test_filter_narrows_the_runs_and_a_bad_filter_says_why(client: TestClient, world: World) -> None:
    sign_in(client, world.retail)
    url = f"/experiments/{world.churn}"
    gbm = client.get(url, params={"filter": "params.model = 'gbm' and metrics.val_auc > 0.895"})
    assert gbm.status_code == 200
    assert sorted(run_names(gbm.text)) == ["fold-1", "gbm-depth4"]
    assert "params.model = &#39;gbm&#39; and metrics.val_auc &gt; 0.895" in gbm.text

    failed = client.get(url, params={"filter": "attributes.status = 'FAILED'"})
    assert run_names(failed.text) == ["logreg"]

    none = client.get(url, params={"filter": "metrics.val_auc > 0.99"})
    assert "No runs match this filter." in none.text

    for bad, why in [
        ("metrics.val_auc >", "Missing value"),
        ("colour.red = 'x'", "Invalid entity type"),
        ("params.model = 'gbm' or params.model = 'x'", "OR is not supported"),
        ("metrics.val_auc = 'high'", "need a number"),
    ]:
        r = client.get(url, params={"filter": bad})
        assert r.status_code == 400, bad
        message = htmllib.unescape(flash_error(r.text))
        assert message.startswith("The filter could not be applied:") and why in message, message
        assert 'class="mono invalid"' in r.text
        assert "Fix the filter to see runs." in r.text


def test_runs_sort_by_a_metric_and_page(
    client: TestClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(client, world.retail)
    url = f"/experiments/{world.churn}"
    best_first = client.get(url, params={"sort": "metrics.val_auc", "dir": "desc"})
    assert run_names(best_first.text) == ["gbm-depth4", "fold-1", "gbm-depth6", "logreg"]
    worst_first = client.get(url, params={"sort": "metrics.val_auc", "dir": "asc"})
    assert run_names(worst_first.text) == ["logreg", "gbm-depth6", "fold-1", "gbm-depth4"]
    by_name = client.get(url, params={"sort": "attributes.run_name", "dir": "asc"})
    assert run_names(by_name.text) == ["fold-1", "gbm-depth4", "gbm-depth6", "logreg"]
    # An unknown column falls back to the start time instead of failing.
    oldest = client.get(url, params={"sort": "metrics.nope`; drop", "dir": "asc"})
    assert oldest.status_code == 200 and run_names(oldest.text)[0] == "gbm-depth4"
    assert run_names(client.get(url).text)[0] == "logreg"  # newest first by default

    monkeypatch.setattr(pages, "PAGE", 3)
    first = client.get(url, params={"sort": "attributes.run_name", "dir": "asc"})
    assert run_names(first.text) == ["fold-1", "gbm-depth4", "gbm-depth6"]
    assert "Runs 1\u20133 of 4" in first.text and 'rel="next"' in first.text
    second = client.get(url, params={"sort": "attributes.run_name", "dir": "asc", "page": "2"})
    assert run_names(second.text) == ["logreg"]
    assert "Runs 4\u20134 of 4" in second.text and 'rel="next"' not in second.text


def test_run_page_shows_params_metrics_charts_inputs_artifacts_and_family(
    client: TestClient, world: World
) -> None:
    sign_in(client, world.viewer)
    page = client.get(f"/runs/{world.gbm_a}")
    assert page.status_code == 200
    text = page.text
    assert table(text, "params")[1] == [["learning_rate", "0.1"], ["max_depth", "4"], ["model", "gbm"]]
    metrics = {row[0]: row for row in table(text, "metrics")[1]}
    assert metrics["val_auc"][1:4] == ["0.91", "9", "10"]
    assert metrics["accuracy"][1:4] == ["0.88", "0", "1"]
    assert table(text, "datasets")[1][0][:2] == ["customers-2024q4", "training"]
    assert table(text, "tags")[1] == [["team", "retail-analytics"]]
    assert "Baseline with depth 4." in text
    files = [row[0] for row in table(text, "artifacts")[1]]
    assert files == ["notes/summary.txt", "plots/roc.png"]
    assert f'href="/runs/{world.gbm_a}/artifacts/notes/summary.txt" download' in text
    assert f'src="/runs/{world.gbm_a}/artifacts/plots/roc.png?inline=true"' in text
    assert table(text, "children")[1][0][0] == "fold-1"
    assert "No model version was registered from this run." in text

    # One chart per metric with a history; single values stay in the table.
    charts = {spec["title"]: spec for spec in islands(text).values()}
    assert sorted(charts) == ["loss", "val_auc"]
    auc = charts["val_auc"]
    assert auc["kind"] == "line" and auc["x_title"] == "step"
    assert auc["series"][0]["x"] == list(range(10))
    assert auc["series"][0]["y"] == curve(0.91, 10)
    assert charts["loss"]["series"][0]["y"] == LOSS
    assert text.count('data-chart="chart-') == 2
    assert '<script src="/static/vendor/plotly.min.js?v=' in text and "/static/charts.js" in text

    child = client.get(f"/runs/{world.child}").text
    assert f'<a href="/runs/{world.gbm_a}">gbm-depth4</a>' in child


def test_chart_data_is_valid_json_without_nan_and_cannot_close_its_script(
    client: TestClient, world: World, db: Database
) -> None:
    me = principal_for(db, world.retail.token)
    with db.session(write=True) as session:
        tracking.log_batch(
            session,
            me,
            world.gbm_b,
            metrics=[
                tracking.MetricIn("odd</script><b>", v, T0 + i, i)
                for i, v in enumerate([1.0, float("nan"), float("inf"), 2.0])
            ],
        )
    sign_in(client, world.retail)
    text = client.get(f"/runs/{world.gbm_b}").text
    assert "odd</script><b>" not in text
    odd = next(s for s in islands(text).values() if s["title"] == "odd</script><b>")
    assert odd["series"][0]["y"] == [1.0, None, None, 2.0]


def test_compare_highlights_differing_params_and_overlays_histories(client: TestClient, world: World) -> None:
    sign_in(client, world.retail)
    r = client.get(
        "/runs/compare", params=[("ids", world.gbm_a), ("ids", world.gbm_b), ("ids", world.logreg)]
    )
    assert r.status_code == 200
    text = r.text
    head, rows = table(text, "compare-params")
    assert head[0] == ["Parameter", "gbm-depth4", "gbm-depth6", "logreg"]
    by_key = {row[0].removesuffix(" differs"): row for row in rows}
    assert by_key["max_depth"][1:] == ["4", "6", "—"]
    assert by_key["learning_rate"][1:] == ["0.1", "0.1", "—"]
    assert 'class="diff" data-key="max_depth"' in text
    assert 'class="diff" data-key="model"' in text
    assert 'class="diff" data-key="learning_rate"' in text  # missing in one run: that differs too
    assert "4 of 4 parameters differ." in text

    metrics = {row[0]: row[1:] for row in table(text, "compare-metrics")[1]}
    assert metrics["val_auc"] == ["0.91 ▲", "0.89", "0.84 ▼"]

    charts = {spec["title"]: spec for spec in islands(text).values()}
    assert sorted(charts) == ["accuracy", "loss", "val_auc"]
    auc = charts["val_auc"]
    assert auc["kind"] == "line"
    assert [s["name"] for s in auc["series"]] == ["gbm-depth4", "gbm-depth6", "logreg"]
    assert [s["color"] for s in auc["series"]] == [0, 1, 2]
    assert auc["series"][0]["y"] == curve(0.91, 10)
    assert auc["series"][1]["y"] == curve(0.89, 10, seed=1.0)
    assert auc["series"][2] == {"name": "logreg", "color": 2, "x": [0], "y": [0.84]}
    assert [s["name"] for s in charts["loss"]["series"]] == ["gbm-depth4", "gbm-depth6"]
    # Metrics logged once per run compare as one dot per run.
    accuracy = charts["accuracy"]
    assert accuracy["kind"] == "dots"
    assert accuracy["series"][0]["y"] == ["gbm-depth4", "gbm-depth6", "logreg"]
    assert accuracy["series"][0]["x"] == [0.88, 0.86, 0.81]
    assert accuracy["series"][0]["colors"] == [0, 1, 2]

    only = client.get(
        "/runs/compare", params=[("ids", world.gbm_a), ("ids", world.gbm_b), ("diff", "true")]
    ).text
    keys = [row[0].removesuffix(" differs") for row in table(only, "compare-params")[1]]
    assert keys == ["max_depth"]
    assert "1 of 3 parameters differs" in only


def test_compare_needs_two_visible_runs(client: TestClient, world: World) -> None:
    sign_in(client, world.retail)
    assert client.get("/runs/compare", params={"ids": world.gbm_a}).status_code == 400
    assert client.get("/runs/compare").status_code == 400
    hidden = client.get("/runs/compare", params=[("ids", world.gbm_a), ("ids", world.credit_run)])
    assert hidden.status_code == 404


def test_artifact_download_streams_the_bytes(client: TestClient, world: World) -> None:
    sign_in(client, world.viewer)
    r = client.get(f"/runs/{world.gbm_a}/artifacts/notes/summary.txt")
    assert r.status_code == 200
    assert r.content == b"depth 4 wins on AUC\n"
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"].startswith('attachment; filename="summary.txt"')
    image = client.get(f"/runs/{world.gbm_a}/artifacts/plots/roc.png", params={"inline": "true"})
    assert image.headers["content-type"] == "image/png"
    assert image.headers["content-disposition"].startswith("inline;")
    # Only raster images are ever shown inline.
    text = client.get(f"/runs/{world.gbm_a}/artifacts/notes/summary.txt", params={"inline": "true"})
    assert text.headers["content-disposition"].startswith("attachment;")
    assert client.get(f"/runs/{world.gbm_a}/artifacts/notes/missing.txt").status_code == 404
    assert client.get(f"/runs/{world.gbm_a}/artifacts/notes").status_code == 404


def test_artifact_paths_cannot_leave_the_run(client: TestClient, world: World, db: Database) -> None:
    other = run_dir(db, principal_for(db, world.lending.token), world.credit_run)
    sign_in(client, world.retail)
    for path, status in [
        ("%2e%2e/%2e%2e/%2e%2e/{other}/secret.txt", 400),
        ("..%2f..%2f..%2f{other}%2fsecret.txt", 400),
        ("notes/%2E%2E/%2E%2E/%2E%2E/%2E%2E/{other}/secret.txt", 400),
        ("notes%5c..%5c..%5c..%5c{other}%5csecret.txt", 400),
        ("/etc/passwd", 400),
        ("%2Fetc%2Fpasswd", 400),
        # Plain dot segments never reach the route: the client (as browsers do) resolves them first.
        ("../../../{other}/secret.txt", 404),
    ]:
        raw = f"/runs/{world.gbm_a}/artifacts/" + path.format(other=other)
        r = client.get(raw)
        assert r.status_code == status, (raw, r.text)
        assert b"lending only" not in r.content


def test_another_units_private_experiment_and_runs_are_404(client: TestClient, world: World) -> None:
    sign_in(client, world.retail)
    for path in (
        f"/experiments/{world.credit}",
        f"/runs/{world.credit_run}",
        f"/runs/{world.credit_run}/artifacts/secret.txt",
    ):
        r = client.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert "lending only" not in r.text and "pd-baseline" not in r.text
    sign_in(client, world.lending)
    assert client.get(f"/runs/{world.gbm_a}").status_code == 404
    assert client.get(f"/runs/{world.gbm_a}/artifacts/notes/summary.txt").status_code == 404
    assert client.get(f"/experiments/{world.churn}").status_code == 404
    _, rows = table(client.get("/experiments").text, "experiments")
    assert [r[0] for r in rows] == ["credit-default"]


def test_admin_sees_every_unit(client: TestClient, world: World, admin: Member) -> None:
    sign_in(client, admin)
    _, rows = table(client.get("/experiments").text, "experiments")
    assert sorted(r[0].split(" Which")[0] for r in rows) == ["churn-prediction", "credit-default"]
    assert client.get(f"/runs/{world.credit_run}").status_code == 200


def test_empty_experiment_shows_how_to_log_to_it(client: TestClient, world: World, db: Database) -> None:
    with db.session(write=True) as session:
        exp = tracking.create_experiment(session, principal_for(db, world.retail.token), "fresh-idea").id
    sign_in(client, world.retail)
    page = client.get(f"/experiments/{exp}")
    assert page.status_code == 200
    assert "No runs yet" in page.text
    assert 'mlflow.set_experiment("fresh-idea")' in htmllib.unescape(page.text)


def test_plotly_is_served_from_the_installed_wheel_with_long_caching(client: TestClient) -> None:
    plain = client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert plain.headers["content-type"].startswith("text/javascript")
    assert (
        "immutable" in plain.headers["cache-control"] and "max-age=31536000" in plain.headers["cache-control"]
    )
    assert plain.content.lstrip().startswith(b"/**\n* plotly.js v")
    zipped = client.get("/static/vendor/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # httpx decompresses
    assert client.get("/static/charts.js").status_code == 200
    assert client.get("/static/charts.css").status_code == 200


def test_odd_values_do_not_break_the_pages(client: TestClient, world: World, db: Database) -> None:
    me = principal_for(db, world.retail.token)
    odd = log_run(
        db,
        me,
        world.churn,
        RunSpec("odd <b>run</b>", {"blob": "x" * 5000}, {"huge": [1e300], "nan": [float("nan")]}),
        start_ms=2**62,
    )
    sign_in(client, world.retail)
    listing = client.get(f"/experiments/{world.churn}", params={"cols": "1", "metric": ["huge", "nan"]})
    assert listing.status_code == 200
    row = next(r for r in run_rows(listing.text) if r[1].startswith("odd"))
    assert row[1] == "odd <b>run</b>" and row[5:] == ["1e+300", "NaN"]
    assert "<b>run</b>" not in listing.text
    page = client.get(f"/runs/{odd}")
    assert page.status_code == 200
    assert "x" * 5000 in page.text


def test_experiment_list_searches_by_name_and_unit(client: TestClient, world: World, admin: Member) -> None:
    sign_in(client, admin)
    _, rows = table(client.get("/experiments", params={"q": "CREDIT"}).text, "experiments")
    assert [r[0] for r in rows] == ["credit-default"]
    page = client.get("/experiments").text
    lending = re.search(r'<option value="([^"]+)"\s*>Lending</option>', page)
    assert lending, "unit filter lists the units that own experiments"
    _, rows = table(client.get("/experiments", params={"unit": lending.group(1)}).text, "experiments")
    assert [r[0] for r in rows] == ["credit-default"]
    _, rows = table(client.get("/experiments", params={"q": "nothing-like-this"}).text, "experiments")
    assert rows == [["No experiments match these filters."]]

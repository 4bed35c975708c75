"""The Data console: datasets list, a dataset's page (versions, access, contract editor, validation reports), a
version's profile with charts and column tags, and the lineage graph, through the real console routes, with
the API's permissions and masking. SQLite and PostgreSQL."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bridgehead.auth.roles import Role
from bridgehead.data import pages
from tests.auth.test_login import _csrf
from tests.conftest import Member, Org
from tests.data.test_access import CSV, ok
from tests.data.test_lineage import _pipeline
from tests.tracking.pagetools import flash_error, islands, table
from tests.tracking.test_pages import HTML, sign_in

DATASETS = "/api/v1/datasets"
FAILING_CONTRACT = "columns:\n  customer_email: {regex: '^nobody@'}\n  score: {type: integer, min: 0}\n"


class People:
    def __init__(self, orgs: Org) -> None:
        self.owner = orgs.member(Role.DATA_ENGINEER, unit="retail")  # may see personal data
        self.scientist = orgs.member(Role.DATA_SCIENTIST, unit="retail")  # may not
        self.user = orgs.member(Role.BUSINESS_USER, unit="retail")
        self.outsider = orgs.member(Role.DATA_SCIENTIST, unit="lending")


@pytest.fixture
def people(orgs: Org) -> People:
    return People(orgs)


@pytest.fixture
def dataset(client: TestClient, people: People) -> dict[str, Any]:
    body = {
        "name": "customers",
        "description": "Current-account customers, one row each.",
        "source_system": "core-banking",
        "tags": {"domain": "retail"},
    }
    created: dict[str, Any] = ok(client.post(DATASETS, headers=people.owner.headers, json=body), 201)
    url = f"{DATASETS}/{created['id']}/upload/customers.csv"
    ok(client.put(url, headers=people.owner.headers, content=CSV), 201)
    return created


def test_pages_need_a_signed_in_person(client: TestClient, dataset: dict[str, Any]) -> None:
    for path in ("/data", f"/data/{dataset['id']}", f"/data/{dataset['id']}/versions/1"):
        r = client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_datasets_list_shows_latest_version_contract_and_validation(
    client: TestClient, people: People, dataset: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ok(client.post(DATASETS, headers=people.owner.headers, json={"name": "branches"}), 201)
    ok(client.post(DATASETS, headers=people.outsider.headers, json={"name": "loans"}), 201)
    sign_in(client, people.scientist)
    page = client.get("/data")
    assert page.status_code == 200
    head, rows = table(page.text, "datasets")
    assert head[0] == [
        "Dataset",
        "Business unit",
        "Latest version",
        "Rows",
        "Contract",
        "Latest validation",
        "Updated",
    ]
    by_name = {row[0].split(" ")[0]: row for row in rows}
    assert sorted(by_name) == ["branches", "customers"]  # loans belongs to lending
    customers = by_name["customers"]
    assert customers[0] == "customers Current-account customers, one row each."
    assert customers[1:6] == ["Retail", "v1 csv", "40", "no", "never"]
    assert by_name["branches"][2] == "no versions"
    assert f'href="/data/{dataset["id"]}/versions/1"' in page.text
    assert 'href="/data" class="active"' in page.text

    ok(
        client.put(
            f"{DATASETS}/{dataset['id']}/contract",
            headers=people.owner.headers,
            json={"contract": FAILING_CONTRACT},
        )
    )
    ok(client.post(f"{DATASETS}/{dataset['id']}/versions/1/validate", headers=people.owner.headers), 201)
    row = next(r for r in table(client.get("/data").text, "datasets")[1] if r[0].startswith("customers"))
    assert row[4] == "yes" and row[5].startswith("failed 1 expectation")

    filtered = client.get("/data", params={"q": "CURRENT-ACCOUNT"})
    assert [r[0].split(" ")[0] for r in table(filtered.text, "datasets")[1]] == ["customers"]
    none = client.get("/data", params={"q": "nothing-like-this"})
    assert "No datasets match" in none.text

    monkeypatch.setattr(pages, "PAGE", 1)
    first = client.get("/data")
    assert len(table(first.text, "datasets")[1]) == 1 and 'rel="next"' in first.text
    second = client.get("/data", params={"page": 2})
    assert [r[0].split(" ")[0] for r in table(second.text, "datasets")[1]] == ["customers"]
    assert "Datasets 2\N{EN DASH}2 of 2" in second.text and 'rel="next"' not in second.text


def test_empty_list_explains_how_to_register(client: TestClient, people: People) -> None:
    sign_in(client, people.scientist)
    page = client.get("/data")
    assert page.status_code == 200 and "Register your first dataset" in page.text


def test_dataset_page_shows_versions_access_and_contract_editor(
    client: TestClient, people: People, dataset: dict[str, Any], orgs: Org
) -> None:
    policy = {"units": [orgs.unit("lending")], "roles": ["data_scientist"]}
    ok(client.put(f"{DATASETS}/{dataset['id']}/policy", headers=people.owner.headers, json=policy))
    sign_in(client, people.scientist)
    page = client.get(f"/data/{dataset['id']}")
    assert page.status_code == 200
    text = page.text
    assert "<h1>customers</h1>" in text and "core-banking" in text and "domain: retail" in text
    head, rows = table(text, "versions")
    assert head[0][:8] == [
        "Version",
        "Digest",
        "Rows",
        "Format",
        "Storage",
        "Origin",
        "Column tags",
        "Created",
    ]
    v1 = rows[0]
    assert v1[0] == "v1" and v1[2] == "40" and v1[3] == "csv" and v1[4].startswith("stored")
    assert v1[5] == "upload" and v1[6] == "1 pii 1 protected"
    assert re.fullmatch(r"[0-9a-f]{12}", v1[1])
    assert "Validate" in v1[8]  # a stored version, a writer
    access = re.search(r'id="access">(.*?)</dl>', text, re.S)
    assert access is not None
    assert "Lending" in access.group(1) and "Data scientist" in access.group(1)
    assert f'href="/data/{dataset["id"]}/lineage"' in text
    assert '<textarea id="contract-text" name="contract"' in text
    assert "No validation yet" in text


def test_the_profile_shows_a_card_and_charts_per_column_and_masks_personal_data(
    client: TestClient, people: People, dataset: dict[str, Any], admin: Member
) -> None:
    sign_in(client, people.scientist)
    page = client.get(f"/data/{dataset['id']}/versions/1")
    assert page.status_code == 200
    text = page.text
    assert "user1@example.com" not in text and "example.com" not in text
    cards = re.findall(r'<figure class="chart-card column-card" data-column="([^"]+)"', text)
    assert cards == ["customer_email", "gender", "score", "region"]
    email_card = text.split('data-column="customer_email"')[1].split("</figure>")[0]
    assert 'class="pill pill-pii"' in email_card and ">masked</span>" in email_card
    assert "Distribution hidden" in email_card
    gender_card = text.split('data-column="gender"')[1].split("</figure>")[0]
    assert 'class="pill pill-protected"' in gender_card and "masked" not in gender_card
    assert 'id="masked-note"' in text
    charts = islands(text)
    kinds = sorted(spec["kind"] for spec in charts.values())
    # score (int64, 7 values): histogram and top values; gender, region: top values; the e-mail: none.
    assert kinds == ["bars", "bars", "bars", "histogram"]
    histogram = next(spec for spec in charts.values() if spec["kind"] == "histogram")
    assert histogram["title"] == "score" and sum(histogram["series"][0]["y"]) == 40
    assert len(histogram["series"][0]["x"]) == len(histogram["series"][0]["width"])
    gender = next(s for s in charts.values() if s["kind"] == "bars" and s["title"] == "gender")
    assert sorted(gender["series"][0]["y"]) == ["f", "m"] and sum(gender["series"][0]["x"]) == 40
    assert '<script src="/static/vendor/plotly.min.js' in text and "/static/charts.js" in text

    sign_in(client, people.owner)
    own = client.get(f"/data/{dataset['id']}/versions/1").text
    assert "masked-note" not in own
    own_email = own.split('data-column="customer_email"')[1].split("</figure>")[0]
    assert ">masked</span>" not in own_email and "Distribution hidden" not in own_email
    # Every e-mail is distinct: a bar per value would say nothing, so no chart either way.
    assert "customer_email" not in {spec["title"] for spec in islands(own).values()}

    # Every read of the profile is audited, naming what was masked.
    events = ok(client.get("/api/v1/audit-events", headers=admin.headers, params={"limit": 200}))["items"]
    reads = [
        (e["actor_email"], e["changes"]["masked"])
        for e in events
        if e["action"] == "dataset.access.read" and e["changes"]["read"] == "profile of version 1"
    ]
    assert sorted(reads) == sorted([(people.scientist.email, ["customer_email"]), (people.owner.email, [])])


def test_the_contract_form_saves_and_an_invalid_contract_says_why(
    client: TestClient, people: People, dataset: dict[str, Any]
) -> None:
    sign_in(client, people.scientist)
    url = f"/data/{dataset['id']}"
    token = _csrf(client.get(url).text)
    saved = client.post(f"{url}/contract", data={"contract": FAILING_CONTRACT, "csrf": token})
    assert saved.status_code == 200  # after the redirect
    assert "Contract saved: 5 expectations." in saved.text
    got = ok(client.get(f"{DATASETS}/{dataset['id']}/contract", headers=people.owner.headers))
    assert got["contract"] == FAILING_CONTRACT

    typed = "columns:\n  score: {min: 10, max: 1}\n"
    bad = client.post(f"{url}/contract", data={"contract": typed, "csrf": token})
    assert bad.status_code == 422
    assert "The contract is not valid" in flash_error(bad.text) and "min is greater than max" in bad.text
    assert "score: {min: 10, max: 1}" in bad.text  # the typed text is kept
    assert ok(client.get(f"{DATASETS}/{dataset['id']}/contract", headers=people.owner.headers))[
        "contract"
    ] == (FAILING_CONTRACT)

    forged = client.post(f"{url}/contract", data={"contract": "", "csrf": "nope"})
    assert forged.status_code == 403

    removed = client.post(f"{url}/contract", data={"contract": "", "csrf": token})
    assert "Contract removed." in removed.text


def test_the_validate_button_records_a_report_with_masked_samples(
    client: TestClient, people: People, dataset: dict[str, Any]
) -> None:
    url = f"/data/{dataset['id']}"
    sign_in(client, people.scientist)
    token = _csrf(client.get(url).text)
    no_contract = client.post(f"{url}/versions/1/validate", data={"csrf": token})
    assert no_contract.status_code == 400 and "has no contract" in flash_error(no_contract.text)

    client.post(f"{url}/contract", data={"contract": FAILING_CONTRACT, "csrf": token})
    done = client.post(f"{url}/versions/1/validate", data={"csrf": token})
    assert done.status_code == 200 and "Version 1 validated: failed 1 expectation." in done.text
    stored = ok(client.get(f"{DATASETS}/{dataset['id']}/validations", headers=people.owner.headers))
    assert stored["total"] == 1 and stored["items"][0]["failed_count"] == 1

    text = client.get(url).text
    reports = re.findall(r'<details class="report" data-passed="(\w+)"', text)
    assert reports == ["false"]
    assert "customer_email" in text and "•••" in text and "example.com" not in text
    report = text.split('<details class="report"')[1]
    assert "customer_email.regex" in report or "regex" in report

    sign_in(client, people.owner)
    own = client.get(url).text
    assert "user0@example.com" in own or "user1@example.com" in own


def test_column_tags_form_sets_only_the_changed_columns(
    client: TestClient, people: People, dataset: dict[str, Any]
) -> None:
    url = f"/data/{dataset['id']}/versions/1"
    sign_in(client, people.owner)
    page = client.get(url)
    _, rows = table(page.text, "column-tags")
    assert [r[0] for r in rows] == ["customer_email", "gender", "score", "region"]
    token = _csrf(page.text)
    columns = ["customer_email", "gender", "score", "region"]
    # Keep the e-mail's pii, drop gender's protected, mark region sensitive.
    form = {"csrf": token, "column": columns, "tag": ["pii:customer_email", "sensitive:region"]}
    saved = client.post(f"{url}/column-tags", data=form)
    assert saved.status_code == 200 and "Tags of 2 columns saved." in saved.text
    version = ok(client.get(f"{DATASETS}/{dataset['id']}/versions/1", headers=people.owner.headers))
    tags = version["column_tags"]
    assert tags["region"]["tags"] == ["sensitive"] and tags["region"]["source"] == "manual"
    assert "gender" not in tags
    assert tags["customer_email"]["source"] == "detected"  # untouched
    again = client.post(f"{url}/column-tags", data=form)
    assert "No column tags changed." in again.text

    sign_in(client, people.scientist)
    masked = client.get(url).text
    assert (
        'data-column="region"' in masked
        and "south" not in masked.split('data-column="region"')[1].split("</figure>")[0]
    )

    sign_in(client, people.user)
    view = client.get(url)
    assert view.status_code == 200 and "Save tags" not in view.text and " disabled" in view.text
    refused = client.post(f"{url}/column-tags", data={**form, "csrf": _csrf(view.text)}, headers=HTML)
    assert refused.status_code == 403


def test_a_business_user_reads_but_cannot_save_a_contract(
    client: TestClient, people: People, dataset: dict[str, Any]
) -> None:
    sign_in(client, people.user)
    url = f"/data/{dataset['id']}"
    page = client.get(url)
    assert page.status_code == 200
    assert "<textarea" not in page.text and "Save contract" not in page.text and ">Validate<" not in page.text
    r = client.post(f"{url}/contract", data={"contract": "", "csrf": _csrf(page.text)}, headers=HTML)
    assert r.status_code == 403 and "may not perform data.write" in r.text
    r = client.post(f"{url}/versions/1/validate", data={"csrf": _csrf(page.text)}, headers=HTML)
    assert r.status_code == 403


def test_another_unit_gets_404_and_the_refusal_is_audited(
    client: TestClient, people: People, dataset: dict[str, Any], admin: Member
) -> None:
    sign_in(client, people.outsider)
    base = f"/data/{dataset['id']}"
    for path in (
        base,
        f"{base}/versions/1",
        f"{base}/lineage",
        f"/data/lineage?node=dataset:{dataset['id']}",
    ):
        r = client.get(path, headers=HTML)
        assert r.status_code == 404, path
        assert "<h1>404</h1>" in r.text
    token = _csrf(client.get("/data").text)
    assert (
        client.post(f"{base}/contract", data={"contract": "", "csrf": token}, headers=HTML).status_code == 404
    )
    events = ok(client.get("/api/v1/audit-events", headers=admin.headers, params={"limit": 200}))["items"]
    denied = [e for e in events if e["action"] == "dataset.access.denied" and e["object_id"] == dataset["id"]]
    assert {e["changes"]["read"] for e in denied} == {"dataset", "profile"}
    assert client.get(f"{base}/versions/7", headers=HTML).status_code == 404


def test_lineage_page_draws_datasets_runs_and_models(client: TestClient, orgs: Org) -> None:
    who = orgs.member(Role.DATA_SCIENTIST, unit="retail")
    p = _pipeline(client, who)
    sign_in(client, who)
    page = client.get(f"/data/{p['raw_ds']['id']}/lineage")
    assert page.status_code == 200
    text = page.text
    svg = re.search(r'<svg class="lineage-graph".*?</svg>', text, re.S)
    assert svg is not None
    nodes = re.findall(r'<a href="([^"]+)" class="lg-node lg-(\w+)( lg-current)?"', svg.group(0))
    model = p["model"]
    assert sorted(nodes) == sorted(
        [
            (f"/data/{p['raw_ds']['id']}/versions/1", "dataset_version", " lg-current"),
            (f"/data/{p['clean_ds']['id']}/versions/1", "dataset_version", ""),
            (f"/runs/{p['run']['id']}", "run", ""),
            (f"/models/{model['name']}/versions/1", "model_version", ""),
        ]
    )
    # Left to right: raw, clean, run, model.
    xs = {
        kind: x
        for kind, x in re.findall(
            r'class="lg-node lg-(\w+)[^"]*" data-node="[^"]+">\s*<title>[^<]*</title>\s*<rect x="([\d.]+)"',
            svg.group(0),
        )
    }
    assert float(xs["run"]) < float(xs["model_version"])
    assert "drop duplicates, fix dates" in svg.group(0) and "training" in svg.group(0)
    assert svg.group(0).count('class="lg-edge ') == 3
    _, edges = table(text, "lineage-edges")
    assert ["loans-raw v1", "loans-clean v1", "derived into", "drop duplicates, fix dates"] in edges
    assert f"/api/v1/lineage/openlineage?node=dataset%3A{p['raw_ds']['id']}&amp;depth=3" in text
    exported = client.get(f"/api/v1/lineage/openlineage?node=dataset:{p['raw_ds']['id']}&depth=3")
    assert exported.status_code == 200 and len(exported.json()) == 2

    from_run = client.get("/data/lineage", params={"node": f"run:{p['run']['id']}", "depth": 1})
    assert from_run.status_code == 200 and 'Lineage <span class="muted">of ' in from_run.text
    assert from_run.text.count('class="lg-node ') == 3  # clean v1, the run, the model version
    assert client.get("/data/lineage", params={"node": "nonsense"}, headers=HTML).status_code == 422
    assert client.get("/data/lineage", params={"node": "run:missing"}, headers=HTML).status_code == 404

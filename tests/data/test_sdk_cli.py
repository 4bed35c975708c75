"""Registering and validating data from the SDK (``bh.register_dataset``, ``bh.validate_data``) and the CLI
(``bridgehead data profile | validate | register``), against the real app in process."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import bridgehead as bh
from bridgehead import errors
from bridgehead.auth.roles import Role
from bridgehead.cli import cli
from bridgehead.client import Client
from tests.conftest import Member, Org

CONTRACT = """
columns:
  age: {type: integer, min: 18, max: 100}
  email: {type: string, nullable: false, regex: "^[^@]+@[^@]+$"}
  region: {type: string, allowed_values: [north, south]}
rows: {min: 10}
"""


@pytest.fixture
def me(client: TestClient, orgs: Org) -> Iterator[Member]:
    member = orgs.member(Role.DATA_ENGINEER, unit="retail")
    bh.set_client(Client("https://testserver", member.token, http=client))
    yield member
    bh.set_client(None)


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, 200),
            "email": [f"p{i}@example.com" for i in range(200)],
            "region": rng.choice(["north", "south"], 200),
        }
    )


def test_register_a_path_profiles_it_here_and_sends_the_profile(
    me: Member, frame: pd.DataFrame, tmp_path: Path
) -> None:
    path = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    version = bh.register_dataset(path, "people", description="Applicants", contract=CONTRACT)
    assert version.created and version.version == 1 and version.row_count == 200
    assert version.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert version.storage == "external" and version.location == str(path.resolve())
    assert version.column_tags["email"].tags == ["pii"]  # detected from the values, on the client
    again = bh.register_dataset(path, "people")
    assert not again.created and again.version == 1


def test_register_a_dataframe_uploads_it(me: Member, client: TestClient, frame: pd.DataFrame) -> None:
    version = bh.register_dataset(frame, "people frame")
    assert version.created and version.storage == "stored" and version.format == "parquet"
    assert version.row_count == 200 and version.has_profile
    profile = client.get(
        f"/api/v1/datasets/{version.dataset_id}/versions/1/profile", headers=me.headers
    ).json()["profile"]
    age = next(c for c in profile["columns"] if c["name"] == "age")
    assert age["min"] == frame["age"].min() and age["max"] == frame["age"].max()
    with pytest.raises(errors.BadRequest, match="Cannot register"):
        bh.register_dataset({"not": "a frame"}, "nope")


def test_validate_data_without_a_server(frame: pd.DataFrame) -> None:
    assert bh.validate_data(frame, CONTRACT).passed
    broken = frame.assign(age=frame["age"].where(frame.index % 50 != 0, 7))
    report = bh.validate_data(broken, CONTRACT)
    assert not report.passed
    assert [e.id for e in report.failed] == ["age.range"]
    assert report.failed[0].failing_count == int((broken["age"] < 18).sum())


def _cli(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.stdout, result.stderr


def test_cli_profile_and_validate_gate_a_pipeline(frame: pd.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "people.csv"
    frame.to_csv(data, index=False)
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT)
    code, out, _ = _cli(["data", "profile", str(data), "--json"])
    assert code == 0, out
    summary = json.loads(out)
    assert summary["row_count"] == 200 and [c["name"] for c in summary["columns"]] == [
        "age",
        "email",
        "region",
    ]
    code, out, _ = _cli(["data", "validate", str(data), "--contract", str(contract)])
    assert code == 0 and "PASSED" in out
    bad = tmp_path / "bad.csv"
    frame.assign(region="west").to_csv(bad, index=False)
    code, out, _ = _cli(["data", "validate", str(bad), "--contract", str(contract), "--json"])
    assert code == 1
    report = json.loads(out)
    failed = [e for e in report["expectations"] if not e["passed"]]
    assert [e["id"] for e in failed] == ["region.allowed_values"] and failed[0]["failing_count"] == 200
    # An unreadable file is an error (2), not a failed check (1).
    code, _, err = _cli(["data", "validate", str(tmp_path / "missing.csv"), "--contract", str(contract)])
    assert code == 2 and "no such file" in err
    code, _, err = _cli(["data", "validate", str(data)])
    assert code == 2 and "--contract" in err


def test_cli_register_and_record_a_validation(
    me: Member, client: TestClient, frame: pd.DataFrame, tmp_path: Path
) -> None:
    data = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), data)
    contract = tmp_path / "contract.yaml"
    contract.write_text(CONTRACT)
    code, out, err = _cli(
        ["data", "register", str(data), "--name", "cli-people", "--contract", str(contract)]
    )
    assert code == 0, err
    assert "cli-people version 1 registered: 200 rows" in out
    code, out, err = _cli(["data", "register", str(data), "--name", "cli-people"])
    assert code == 0 and "already registered" in out
    code, out, err = _cli(["data", "validate", str(data), "--dataset", "cli-people"])
    assert code == 0, err
    listed = client.get("/api/v1/datasets", headers=me.headers, params={"q": "cli-people"}).json()["items"]
    validations = client.get(f"/api/v1/datasets/{listed[0]['id']}/validations", headers=me.headers).json()
    assert validations["total"] == 1 and validations["items"][0]["passed"]
    code, _, err = _cli(["data", "register", str(tmp_path / "nope.parquet"), "--name", "cli-people"])
    assert code == 2 and "no such file" in err


def test_cli_standardize_cleans_a_messy_export(tmp_path: Path) -> None:
    messy = tmp_path / "branch.csv"
    messy.write_text(
        'id,applied_on,amount,region\n1,26/11/2026,"1.234,50", North\n2,01/02/2026,"12,00",S\n3,31/02/2026,"7,5",N\n'
    )
    contract = tmp_path / "contract.yaml"
    contract.write_text(
        """
columns:
  applied_on: {type: date, nullable: false, standardize: {date_format: "%d/%m/%Y"}}
  amount: {type: number, standardize: {decimal_separator: ",", thousands_separator: "."}}
  region: {type: string, allowed_values: [north, south],
           standardize: {strip: true, case: lower, map: {N: north, S: south}}}
"""
    )
    out = tmp_path / "clean.parquet"
    code, stdout, err = _cli(
        ["data", "standardize", str(messy), "--contract", str(contract), "--output", str(out)]
    )
    assert code == 0, err
    assert "wrote 3 rows" in stdout
    clean = pq.read_table(out).to_pydict()
    assert clean["amount"] == [1234.5, 12.0, 7.5]
    assert clean["region"] == ["north", "south", "north"]
    assert [d.isoformat() if d else None for d in clean["applied_on"]] == ["2026-11-26", "2026-02-01", None]
    # The clean file now fails only where no rule could help: the impossible date.
    code, stdout, _ = _cli(["data", "validate", str(out), "--contract", str(contract), "--json"])
    assert code == 1
    failed = [e["id"] for e in json.loads(stdout)["expectations"] if not e["passed"]]
    assert failed == ["applied_on.not_null"]

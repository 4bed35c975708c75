"""Artifact paths can never escape their root (MLflow CVE-2023-1177, CVE-2023-6909, CVE-2024-1560 style)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridgehead.errors import BadRequest, NotFound
from bridgehead.store.artifacts import ArtifactStore, safe_relative_path


@pytest.mark.parametrize(
    "path",
    [
        "../secret",
        "a/../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "a/./b",
        "C:/Windows",
        "c:\\x",
        "a\\..\\b",
        "%2e%2e/secret",
        "a/%2E%2E/b",
        "..%2fsecret",
        "file:///etc/passwd",
        "s3://other/bucket",
        "a\x00b",
        "",
        "x" * 2000,
    ],
)
def test_escaping_paths_are_refused(path: str) -> None:
    with pytest.raises(BadRequest):
        safe_relative_path(path)


def test_store_round_trip_stays_under_root(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "root"))
    store.put_bytes("runs/1/model.onnx", b"bytes")
    assert store.get_bytes("runs/1/model.onnx") == b"bytes"
    assert (tmp_path / "root" / "runs" / "1" / "model.onnx").read_bytes() == b"bytes"
    with pytest.raises(BadRequest):
        store.put_bytes("../outside.txt", b"x")
    assert not (tmp_path / "outside.txt").exists()
    with pytest.raises(NotFound):
        store.get_bytes("runs/2/missing")


def test_fsspec_urls_work_as_roots() -> None:
    store = ArtifactStore("memory://bridgehead-test")
    store.put_bytes("a/b.txt", b"hi")
    assert store.exists("a/b.txt") and store.get_bytes("a/b.txt") == b"hi"

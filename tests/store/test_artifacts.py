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


def test_directory_digest_is_the_same_in_the_store_and_on_disk(tmp_path: Path) -> None:
    """The SDK checks a downloaded model against the digest the server computed: both sides must order
    files the same way, including names where path order and string order differ ("a-c" < "a/b")."""
    import hashlib

    from bridgehead.registry.flavors import directory_sha256

    files = {"a/b": b"one", "a-c": b"two", "MLmodel": b"three", "data/x.bin": bytes(range(256)) * 5000}
    local = tmp_path / "model"
    store = ArtifactStore(str(tmp_path / "root"))
    for rel, data in files.items():
        (local / rel).parent.mkdir(parents=True, exist_ok=True)
        (local / rel).write_bytes(data)
        store.put_bytes(f"v1/{rel}", data)
    lines = "".join(f"{rel}\t{hashlib.sha256(files[rel]).hexdigest()}\n" for rel in sorted(files))
    expected = hashlib.sha256(lines.encode()).hexdigest()
    assert directory_sha256(local) == store.sha256_dir("v1") == expected
    store.put_bytes("v1/a-c", b"changed")
    assert store.sha256_dir("v1") != expected

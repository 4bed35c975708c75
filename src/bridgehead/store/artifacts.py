"""Artifact store on fsspec. Every path is checked before it touches the filesystem: nothing escapes the root."""

from __future__ import annotations

import posixpath
import re
from typing import Any

import fsspec

from bridgehead.errors import BadRequest, NotFound

__all__ = ["ArtifactStore", "safe_relative_path"]

_BAD = re.compile(r"[\x00-\x1f\\]")


def safe_relative_path(path: str) -> str:
    """Normalise a caller-supplied artifact path, refusing anything that could leave its root.

    Refused: absolute paths, drive letters, URL schemes, ``..`` segments (also percent-encoded),
    backslashes and control characters (CVE-2023-1177, CVE-2023-6909, CVE-2024-1560 in MLflow).
    """
    if not path or len(path) > 1024:
        raise BadRequest("Artifact path must be 1 to 1024 characters.", details={"path": path[:100]})
    lowered = path.lower()
    if _BAD.search(path) or "%2e" in lowered or "%2f" in lowered or "%5c" in lowered or "://" in path:
        raise BadRequest("Artifact path contains a forbidden character or encoding.", details={"path": path})
    if path.startswith("/") or re.match(r"^[a-zA-Z]:", path):
        raise BadRequest("Artifact path must be relative.", details={"path": path})
    parts = path.split("/")
    if any(part in ("..", ".") for part in parts):
        raise BadRequest("Artifact path must not contain '.' or '..' segments.", details={"path": path})
    normalized = posixpath.normpath(path)
    if normalized.startswith("..") or normalized.startswith("/"):
        raise BadRequest("Artifact path escapes its root.", details={"path": path})
    return normalized


class ArtifactStore:
    """Bytes under one root URL (local directory by default, or s3://, gs://, abfs://...)."""

    def __init__(self, root: str, **storage_options: Any) -> None:
        self.fs, self.root = fsspec.core.url_to_fs(root, **storage_options)
        self.root = self.root.rstrip("/")

    def _full(self, path: str) -> str:
        return f"{self.root}/{safe_relative_path(path)}"

    def put_bytes(self, path: str, data: bytes) -> None:
        full = self._full(path)
        self.fs.makedirs(posixpath.dirname(full), exist_ok=True)
        with self.fs.open(full, "wb") as handle:
            handle.write(data)

    def get_bytes(self, path: str) -> bytes:
        full = self._full(path)
        if not self.fs.exists(full):
            raise NotFound("Artifact not found.", details={"path": path})
        with self.fs.open(full, "rb") as handle:
            data: bytes = handle.read()
        return data

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(self._full(path)))

    def check_writable(self) -> None:
        self.fs.makedirs(self.root, exist_ok=True)

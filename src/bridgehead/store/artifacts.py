"""Artifact store on fsspec. Every path is checked before it touches the filesystem: nothing escapes the root."""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
from anyio import from_thread

from bridgehead.errors import BadRequest, NotFound, PayloadTooLarge

__all__ = ["ArtifactStore", "DirEntry", "blocking_chunks", "directory_digest", "safe_relative_path"]

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
        self._local = "file" in (
            self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        )

    def _full(self, path: str) -> str:
        full = f"{self.root}/{safe_relative_path(path)}"
        if self._local:
            # A symlink inside the root could point anywhere: resolve and re-check.
            real_root = os.path.realpath(self.root)
            real = os.path.realpath(full)
            if real != real_root and not real.startswith(real_root + os.sep):
                raise BadRequest("Artifact path escapes its root through a link.", details={"path": path})
        return full

    def locate(self, path: str) -> tuple[Any, str, bool]:
        """(filesystem, full path, is local) of a checked path, for readers that open files themselves."""
        return self.fs, self._full(path), self._local

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

    def put_stream(self, path: str, chunks: Iterable[bytes], *, max_bytes: int) -> int:
        """Write chunks to ``path``; over ``max_bytes`` the partial file is removed and PayloadTooLarge raised."""
        full = self._full(path)
        self.fs.makedirs(posixpath.dirname(full), exist_ok=True)
        written = 0
        try:
            with self.fs.open(full, "wb") as handle:
                for chunk in chunks:
                    written += len(chunk)
                    if written > max_bytes:
                        raise PayloadTooLarge(
                            f"Artifact is larger than {max_bytes} bytes (BRIDGEHEAD_MAX_ARTIFACT_BYTES).",
                            details={"limit_bytes": max_bytes, "path": path},
                        )
                    handle.write(chunk)
        except BaseException:
            self.fs.rm(full)
            raise
        return written

    def iter_bytes(self, path: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        full = self._full(path)
        if not self.fs.isfile(full):
            raise NotFound("Artifact not found.", details={"path": path})
        with self.fs.open(full, "rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def is_file(self, path: str) -> bool:
        return bool(self.fs.isfile(self._full(path)))

    def delete(self, path: str) -> None:
        full = self._full(path)
        if self.fs.exists(full):
            self.fs.rm(full, recursive=True)

    def list_dir(self, path: str) -> list[DirEntry]:
        """Direct children of a directory (empty when it does not exist)."""
        full = self._full(path) if path else self.root
        if not self.fs.isdir(full):
            return []
        entries = []
        for info in self.fs.ls(full, detail=True):
            name = posixpath.basename(str(info["name"]).rstrip("/"))
            entries.append(DirEntry(name, info.get("type") == "directory", int(info.get("size") or 0)))
        return sorted(entries, key=lambda e: e.name)

    def walk(self, path: str) -> list[tuple[str, int]]:
        """Every file under a directory as (path relative to it, size), sorted."""
        full = self._full(path)
        if not self.fs.isdir(full):
            return []
        found = self.fs.find(full, detail=True)
        return sorted(
            (posixpath.relpath(str(name), full), int(info.get("size") or 0)) for name, info in found.items()
        )

    def download_dir(self, path: str, target: Path) -> None:
        for rel, _ in self.walk(path):
            local = target / rel
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(self.get_bytes(f"{path}/{rel}"))

    def sha256_dir(self, path: str) -> str:
        """The ``directory_digest`` of a directory in the store."""
        return directory_digest((rel, self.iter_bytes(f"{path}/{rel}")) for rel, _ in self.walk(path))


def directory_digest(files: Iterable[tuple[str, Iterable[bytes]]]) -> str:
    """One SHA-256 for a directory, wherever it lies (the store, or a local copy the SDK loads): the digest
    of the lines "<relative posix path>\t<file SHA-256>\n", sorted by path as strings."""
    lines = []
    for rel, chunks in sorted(files, key=lambda file: file[0]):
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
        lines.append(f"{rel}\t{digest.hexdigest()}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass(frozen=True)
class DirEntry:
    name: str
    is_dir: bool
    size: int


def blocking_chunks(stream: AsyncIterator[bytes]) -> Iterator[bytes]:
    """The request body as a blocking iterator, for the store's writer in a worker thread: each chunk is
    awaited on the event loop as the writer asks for it, so the body is never held whole in memory."""

    async def next_chunk() -> bytes | None:
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None

    while (chunk := from_thread.run(next_chunk)) is not None:
        if chunk:
            yield chunk

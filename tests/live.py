"""Real server processes for socket, CLI and browser tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BRIDGEHEAD = str(Path(sys.executable).parent / "bridgehead")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bridgehead_env(**settings: str) -> dict[str, str]:
    """The current environment without inherited BRIDGEHEAD_* values, plus the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGEHEAD_")}
    env.update({f"BRIDGEHEAD_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.contextmanager
def running_server(
    env: dict[str, str], *args: str, port: int | None = None, log: Path | None = None
) -> Iterator[str]:
    """Start `bridgehead server` (or `bridgehead <args>`) and yield its base URL once /healthz answers."""
    port = port or free_port()
    command = [BRIDGEHEAD, *(args or ("server",)), "--host", "127.0.0.1", "--port", str(port)]
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}: {' '.join(command)}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError("server did not answer /healthz within 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]

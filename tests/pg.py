"""A throwaway PostgreSQL server for the suite: initdb + pg_ctl on loopback, stopped at the end."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sweep_stale_clusters() -> None:
    """Stop clusters left behind by a test run that was killed before its fixtures could stop them."""
    for marker in glob.glob(os.path.join(tempfile.gettempdir(), "bridgehead-pg-*", "owner.pid")):
        directory = Path(marker).parent
        try:
            owner = int(Path(marker).read_text())
            os.kill(owner, 0)
            continue  # its test run is still alive
        except (ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue
        pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if pg_ctl and (directory / "data" / "postmaster.pid").exists():
            cmd = [pg_ctl[-1], "-D", str(directory / "data"), "-m", "immediate", "stop"]
            if os.geteuid() == 0:
                cmd = ["runuser", "-u", "postgres", "--", *cmd]
            subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        shutil.rmtree(directory, ignore_errors=True)


class PostgresServer:
    """PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError(
                "PostgreSQL is not installed. Run ./scripts/test (it installs it with apt) "
                "or set BRIDGEHEAD_TEST_POSTGRES_URL to a server you own."
            )
        self.bin = Path(found[-1]).parent
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bridgehead-pg-"))
        self.data = self.dir / "data"
        self.as_root = os.geteuid() == 0
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        sweep_stale_clusters()
        (self.dir / "owner.pid").write_text(str(os.getpid()))
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        )
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            "start",
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"PostgreSQL did not start; see {self.dir / 'log'}")

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

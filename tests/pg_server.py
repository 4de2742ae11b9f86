"""A real PostgreSQL server (Debian's package) for the tests: initdb + pg_ctl in a temp dir.

Listens on 127.0.0.1 on a free port only (its Unix socket in its own directory), runs as the
``postgres`` system user when the tests run as root (PostgreSQL refuses to run as root), trusts
local connections of its one role, and is stopped at teardown. Every wait is bounded.
tools/test-deps.sh installs the package; without it the tests that need it skip, saying so.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from tests.fhir_server import free_port

START_TIMEOUT = 30  # seconds pg_ctl waits for the server to accept connections


def pg_bindir() -> Path | None:
    """The directory holding initdb and pg_ctl (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs and Path(dirs[-1], "pg_ctl").exists() else None


class PostgresServer:
    """One PostgreSQL cluster for a test session; `new_database()` gives each test its own."""

    def __init__(self):
        bindir = pg_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="fluoro-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.user = "fluoro"
        self._prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root: run it as the postgres user
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c shared_buffers=16MB -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts,
                  "-w", "-t", str(START_TIMEOUT), "start")
        self.admin_url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        cmd = self._prefix + [str(self.bindir / tool), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT + 30)
        if result.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stderr[-2000:]}\n{tail}")

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

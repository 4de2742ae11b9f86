"""A REAL FHIR R4 server for integration tests: sekmet-fhir (pinned 0.1.1) in a subprocess.

Usage in a test module::

    from tests.fhir_server import fhir_server  # noqa: F401  (re-export the session fixture)

    def test_something(fhir_server):
        fhir_server.load([{"resourceType": "Patient", "id": "p1"}])     # PUT by id
        fhir_server.load({"resourceType": "Bundle", "type": "transaction", "entry": [...]})
        requests.get(f"{fhir_server.base_url}/Patient/p1",
                     headers={"Authorization": f"Bearer {fhir_server.token}"})

The server listens on 127.0.0.1 only (a free port picked at run time), keeps its data in a
temporary SQLite file, accepts only the bearer token ``fhir_server.token`` (anything else: 401),
runs with its workflow simulator off (so it never rewrites what a test loads) and with inbound
validation "warn". It is started once per test session and stopped at teardown (terminate, then
kill after a hard timeout); every test module importing the fixture gets the same server (one per
test process). ``fhir_server.reset(types)`` deletes everything a test loaded (resources of
the given types) when a test needs a clean store.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pytest
import requests

START_TIMEOUT = 60.0  # seconds to wait for /fhir/metadata
STOP_TIMEOUT = 10.0  # seconds between terminate and kill


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FhirServer:
    """Handle on a running sekmet-fhir server."""

    base_url: str  # e.g. http://127.0.0.1:54321/fhir
    token: str  # the only bearer token it accepts
    process: subprocess.Popen
    workdir: Path
    session: requests.Session = field(default_factory=requests.Session)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/fhir+json",
                "Content-Type": "application/fhir+json"}

    def load(self, resources: dict | Iterable[dict]) -> list[dict]:
        """Store resources: a transaction/batch Bundle is POSTed to the base; any other resource
        (alone or in a list) is PUT at Type/id (it must have an id). Returns the server's answers.
        Raises AssertionError with the server's OperationOutcome on failure."""
        items = [resources] if isinstance(resources, dict) else list(resources)
        answers = []
        for res in items:
            if res.get("resourceType") == "Bundle" and res.get("type") in ("transaction", "batch"):
                resp = self.session.post(self.base_url, json=res, headers=self.headers, timeout=30)
            else:
                if not res.get("id"):
                    raise ValueError(f"{res.get('resourceType')} without an id cannot be PUT")
                resp = self.session.put(f"{self.base_url}/{res['resourceType']}/{res['id']}",
                                        json=res, headers=self.headers, timeout=30)
            assert resp.status_code < 300, f"FHIR server refused {res.get('resourceType')}: " \
                                           f"{resp.status_code} {resp.text[:500]}"
            answers.append(resp.json() if resp.content else {})
        return answers

    def get(self, path: str, **params) -> dict:
        """GET base_url/path with the token; returns the JSON body (asserts 200)."""
        resp = self.session.get(f"{self.base_url}/{path}", params=params, headers=self.headers,
                                timeout=30)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:300]}"
        return resp.json()

    def reset(self, resource_types: Iterable[str]) -> None:
        """Delete every resource of these types (for tests needing a clean store)."""
        for rtype in resource_types:
            while True:
                bundle = self.get(rtype, _count="200", _elements="id")
                ids = [e["resource"]["id"] for e in bundle.get("entry", [])]
                if not ids:
                    break
                for rid in ids:
                    self.session.delete(f"{self.base_url}/{rtype}/{rid}", headers=self.headers,
                                        timeout=30)


def _config(workdir: Path, port: int, token: str) -> str:
    base = f"http://127.0.0.1:{port}/fhir"
    return "\n".join([
        f"base_url: {base}",
        "host: 127.0.0.1",
        f"port: {port}",
        f"data_dir: {workdir / 'data'}",
        f"db_path: {workdir / 'sekmet.db'}",
        f"own_private_key_path: {workdir / 'keys' / 'sekmet_private.pem'}",
        "log_inbound: false",
        "server_auth:",
        "  types: [bearer]",
        f"  tokens: ['{token}']",
        "validation:",
        "  inbound: warn",
        "simulator:",
        "  enabled: false",
        "",
    ])


def start_fhir_server(timeout: float = START_TIMEOUT) -> FhirServer:
    """Start sekmet-fhir on 127.0.0.1:<free port>; wait until /fhir/metadata answers 200."""
    workdir = Path(tempfile.mkdtemp(prefix="fluoro-sekmet-"))
    (workdir / "data").mkdir()
    port = free_port()
    token = secrets.token_urlsafe(24)
    config = workdir / "settings.yaml"
    config.write_text(_config(workdir, port, token))
    env = dict(os.environ, SEKMET_CONFIG=str(config))
    env.pop("SEKMET_BASE_URL", None), env.pop("SEKMET_DB", None), env.pop("SEKMET_PORT", None)
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "sekmet.cli", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = FhirServer(base_url=f"http://127.0.0.1:{port}/fhir", token=token, process=proc,
                        workdir=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if requests.get(f"{server.base_url}/metadata", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_fhir_server(server)
    output = (workdir / "server.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"sekmet-fhir did not start within {timeout}s:\n{output}")


def stop_fhir_server(server: FhirServer) -> None:
    """Terminate the subprocess (kill after STOP_TIMEOUT) and remove its files (idempotent)."""
    server.session.close()
    proc = server.process
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    shutil.rmtree(server.workdir, ignore_errors=True)


_shared: FhirServer | None = None
_shared_lock = threading.Lock()


def shared_fhir_server() -> FhirServer:
    """The one server of this test process, started on first use (several test modules importing
    the fixture each register their own session fixture; they all get this same server)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.process.poll() is not None:
            _shared = start_fhir_server()
            atexit.register(stop_fhir_server, _shared)
        return _shared


@pytest.fixture(scope="session")
def fhir_server():
    """Session-scoped real FHIR server (see module docstring). Skips when sekmet is missing.
    Stopped when the test session ends (first teardown; stopping is idempotent) or at exit."""
    pytest.importorskip("sekmet", reason="needs sekmet-fhir==0.1.1 (pip install -e '.[test]')")
    server = shared_fhir_server()
    try:
        yield server
    finally:
        stop_fhir_server(server)

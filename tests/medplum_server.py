"""A second, strict REAL FHIR R4 server for integration tests: ``@medplum/fhir-router`` 4.5.2.

tests/node/medplum_server.mjs wraps medplum's FhirRouter and in-memory repository in a node:http
server on 127.0.0.1 (a free port, base ``/fhir``, one bearer token). It is strict where sekmet is
lenient: a reference search parameter only matches a typed reference (``encounter=Encounter/e1``;
a bare id matches nothing), and ``patient=`` too. Like many EHRs it does not support
``Claim?encounter=`` (UNSUPPORTED: answered 400, as a server refuses an unknown parameter), so
the service's narrowed search (by patient, filtered by item.encounter) runs on it. Usage is the same as tests/fhir_server.py::

    from tests.medplum_server import medplum_server  # noqa: F401  (session fixture)

    def test_something(medplum_server):
        medplum_server.load([...])

Started once per test process, stopped at session end or exit; it also exits by itself when its
stdin closes (this process died) or after 30 minutes. Skips when node or the npm packages
(``tools/test-deps.sh`` runs ``npm ci`` in tests/node) are missing.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.fhir_server import STOP_TIMEOUT, FhirServer, free_port

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "medplum_server.mjs"
START_TIMEOUT = 30.0
UNSUPPORTED = "Claim:encounter"  # search parameters the test server refuses


def medplum_missing() -> str | None:
    """Why the medplum server cannot run here, or None."""
    if shutil.which("node") is None:
        return "needs node (tools/test-deps.sh installs it)"
    if not (NODE_DIR / "node_modules" / "@medplum" / "fhir-router").is_dir():
        return "needs the npm packages of tests/node (tools/test-deps.sh runs npm ci there)"
    return None


def start_medplum_server(timeout: float = START_TIMEOUT, *, open_access: bool = False) -> FhirServer:
    """Start the node server on 127.0.0.1:<free port>; wait until /fhir/metadata answers 200.
    `open_access`: no token required and CORS answered (for a browser client); token is then ""."""
    workdir = Path(tempfile.mkdtemp(prefix="fluoro-medplum-"))
    port = free_port()
    token = "" if open_access else secrets.token_urlsafe(24)
    env = dict(os.environ, MEDPLUM_TEST_TOKEN=token, MEDPLUM_TEST_LIFETIME="1800",
               MEDPLUM_TEST_UNSUPPORTED=UNSUPPORTED)
    log = open(workdir / "server.log", "wb")
    proc = subprocess.Popen(["node", str(SCRIPT), str(port)], cwd=NODE_DIR, env=env,
                            stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    server = FhirServer(base_url=f"http://127.0.0.1:{port}/fhir", token=token, process=proc,
                        workdir=workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if requests.get(f"{server.base_url}/metadata", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.1)
    stop_medplum_server(server)
    output = (workdir / "server.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"the medplum FHIR server did not start within {timeout}s:\n{output}")


def stop_medplum_server(server: FhirServer) -> None:
    """Close its stdin (it exits), terminate, kill after STOP_TIMEOUT; idempotent."""
    server.session.close()
    proc = server.process
    if proc.poll() is None:
        try:
            proc.stdin.close()
            proc.wait(STOP_TIMEOUT)
        except (subprocess.TimeoutExpired, OSError):
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
    shutil.rmtree(server.workdir, ignore_errors=True)


_shared: FhirServer | None = None
_shared_lock = threading.Lock()


def shared_medplum_server() -> FhirServer:
    """The one medplum server of this test process, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared.process.poll() is not None:
            _shared = start_medplum_server()
            atexit.register(stop_medplum_server, _shared)
        return _shared


@pytest.fixture(scope="session")
def medplum_server():
    """Session-scoped medplum FHIR server (see module docstring)."""
    why = medplum_missing()
    if why:
        pytest.skip(why)
    server = shared_medplum_server()
    try:
        yield server
    finally:
        stop_medplum_server(server)

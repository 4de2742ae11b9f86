"""A new user's first hour, checked from a fresh clone: `git clone` of this checkout's HEAD into
a temporary folder with no ../shared beside it, the README's `make serve` (its install step and
the service it starts), then every file in examples/ sent to that service: each request answers
as examples/README.md says (the *-fetch.json ones fetching from a real sekmet-fhir server loaded
with examples/fhir/example-patient.json), examples/send.py runs on the system python3, and
`fluoro-cds batch examples/claims.ndjson` gives the findings the README table lists.

The clone's install reuses pip's cache (same HOME), so it downloads nothing already cached."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT
from tests.examples_support import batch_expectations, request_examples, topics
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.fhir_server import free_port

INSTALL_TIMEOUT = 420  # seconds for `make serve` to install and answer /healthz


def _env(tmp: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLUORO_CDS_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))  # not this checkout's .venv
    env.update(XDG_DATA_HOME=str(tmp / "data"), PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


@pytest.fixture(scope="module")
def clone(tmp_path_factory, fhir_server):  # noqa: F811
    """The clone, its `make serve` running on a free port, the example patient in the FHIR server."""
    if shutil.which("git") is None or shutil.which("make") is None:
        pytest.fail("git and make are needed (the README's set-up uses make)")
    tmp = tmp_path_factory.mktemp("clone")
    repo = tmp / "fluoro-cds"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True, timeout=120)
    assert not (repo.parent / "shared").exists() and not (repo / ".venv").exists()
    fhir_server.load(json.loads((repo / "examples" / "fhir" / "example-patient.json").read_text()))
    port = free_port()
    env = _env(tmp, FLUORO_CDS_FHIR_ALLOWLIST=fhir_server.base_url)
    log = open(tmp / "make-serve.log", "wb")
    proc = subprocess.Popen(["make", "serve", "HOST=127.0.0.1", f"PORT={port}"], cwd=repo, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + INSTALL_TIMEOUT
        while True:
            assert proc.poll() is None, (tmp / "make-serve.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "make serve did not answer in time"
            try:
                if requests.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(1)
        yield repo, url, env, fhir_server
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # make and the service it started (its own group)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
        log.close()


def test_every_example_request_answers_as_its_readme_line_says(clone):
    repo, url, _, fhir = clone
    examples = request_examples(repo)
    assert {e.file.name for e in examples} == {p.name for p in (repo / "examples" / "requests").iterdir()}
    for example in examples:
        body = json.loads(example.file.read_text())
        if "fhirServer" in body:
            body["fhirServer"] = fhir.base_url
            body["fhirAuthorization"]["access_token"] = fhir.token
        resp = requests.post(f"{url}/cds-services/{example.service_id}", json=body, timeout=60)
        assert resp.status_code == 200, (example.file.name, resp.text[:500])
        assert topics(resp.json()) == [example.topic], example.file.name


def test_send_script_runs_on_the_system_python(clone):
    repo, url, env, fhir = clone
    python3 = shutil.which("python3", path=env["PATH"])
    proc = subprocess.run([python3, "examples/send.py", "--service", url, "--fhir-server",
                           fhir.base_url, f"--fhir-token={fhir.token}"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for example in request_examples(repo):
        assert f"{example.file.name}  POST /cds-services/{example.service_id}  HTTP 200  1 card" \
            in proc.stdout
        assert f" {example.topic} " in proc.stdout


def test_batch_sample_gives_the_readme_findings(clone):
    repo, _, env, _ = clone
    proc = subprocess.run([str(repo / ".venv" / "bin" / "fluoro-cds"), "batch", "examples/claims.ndjson"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    got = {r["line"]: (r["claim"], ("error", r["path"]) if "error" in r
                       else sorted(f["code"] for f in r["findings"])) for r in rows}
    assert got == batch_expectations(repo)


def test_the_clone_cites_no_design_outside_itself(clone):
    repo = clone[0]
    assert (repo / "docs" / "contract.md").is_file() and (repo / "docs/scenarios.md").is_file()
    proc = subprocess.run(["git", "grep", "-n", "-E", "DESIGN" + r"\.md|shared" + "/scenarios"], cwd=repo,
                          capture_output=True, text=True, timeout=60)
    hits = [line for line in proc.stdout.splitlines() if not line.startswith("tests/test_docs_contract.py")]
    assert hits == []

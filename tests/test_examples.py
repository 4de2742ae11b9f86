"""examples/ answers as examples/README.md says: every request (with prefetch, or fetching from a
real sekmet-fhir server loaded with examples/fhir/example-patient.json), the batch NDJSON, and
examples/send.py's compact output. tests/test_clone.py does the same from a fresh clone."""
from __future__ import annotations

import io
import json
from contextlib import redirect_stdout

import orjson
import pytest

from service.batch import run
from hooks.config import resolve
from tests.examples_support import EXAMPLES, batch_expectations, request_examples, topics
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.scenario_fixtures import UNREACHABLE_FHIR_SERVER

EXAMPLES_LIST = request_examples()


def _body(example, fhir=None) -> dict:
    body = json.loads(example.file.read_text())
    if fhir is not None and "fhirServer" in body:
        body["fhirServer"] = fhir.base_url
        body["fhirAuthorization"]["access_token"] = fhir.token
    return body


@pytest.fixture(scope="module")
def example_fhir(fhir_server):  # noqa: F811
    fhir_server.load(json.loads((EXAMPLES / "fhir" / "example-patient.json").read_text()))
    return fhir_server


def test_the_readme_lists_every_request_file_and_every_finding_once():
    listed = {e.file.name for e in EXAMPLES_LIST}
    assert listed == {p.name for p in (EXAMPLES / "requests").glob("*.json")}
    assert len({e.topic for e in EXAMPLES_LIST}) == len(EXAMPLES_LIST)  # each a different finding
    hooks = {json.loads(e.file.read_text())["hook"] for e in EXAMPLES_LIST}
    assert hooks == {"order-sign", "encounter-discharge", "org.fluoro-cds.claim-review"}
    for hook in hooks:  # with and without prefetch for each service
        kinds = {e.needs_fhir for e in EXAMPLES_LIST if json.loads(e.file.read_text())["hook"] == hook}
        assert kinds == {True, False}, hook


@pytest.mark.parametrize("example", EXAMPLES_LIST, ids=lambda e: e.file.name)
def test_each_request_answers_as_the_readme_says(example, client, example_fhir):
    body = _body(example, example_fhir)
    assert ("fhirServer" in body) == example.needs_fhir
    resp = client.post(f"/cds-services/{example.service_id}", data=orjson.dumps(body),
                       content_type="application/json")
    assert resp.status_code == 200, resp.get_json()
    assert topics(resp.get_json()) == [example.topic]


@pytest.mark.parametrize("example", [e for e in EXAMPLES_LIST if e.needs_fhir], ids=lambda e: e.file.name)
def test_fetch_requests_need_the_fhir_server(example, client):
    body = _body(example)
    body["fhirServer"] = UNREACHABLE_FHIR_SERVER
    resp = client.post(f"/cds-services/{example.service_id}", data=orjson.dumps(body),
                       content_type="application/json")
    assert resp.status_code == 412, resp.get_json()


def test_batch_ndjson_answers_as_the_readme_says(tmp_path):
    out = io.BytesIO()
    run(str(EXAMPLES / "claims.ndjson"), out, db_path=str(tmp_path / "none.sqlite"), config=resolve(None))
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    got = {r["line"]: (r["claim"], ("error", r["path"]) if "error" in r
                       else sorted(f["code"] for f in r["findings"])) for r in rows}
    assert got == batch_expectations()


def test_send_script_prints_one_line_per_card(example_fhir, tmp_path):
    """examples/send.py against a real `fluoro-cds serve`: one header per file, one card line
    with its topic, exit 0."""
    from examples.send import main as send
    from tests.serve_support import Served, serve_env

    env = serve_env(tmp_path, FLUORO_CDS_FHIR_ALLOWLIST=example_fhir.base_url)
    with Served(env) as served:
        out = io.StringIO()
        with redirect_stdout(out):
            code = send(["--service", served.url, "--fhir-server", example_fhir.base_url,
                         f"--fhir-token={example_fhir.token}"])
    assert code == 0, out.getvalue()
    text = out.getvalue()
    for example in EXAMPLES_LIST:
        [header] = [line for line in text.splitlines() if line.startswith(example.file.name + " ")]
        assert "HTTP 200  1 card" in header
        block = text.split(header, 1)[1].split("\n", 2)[1]
        assert block.split()[1] == example.topic, block

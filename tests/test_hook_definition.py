"""docs/hooks/claim-review.md, the definition of the custom hook (issue 11 section 7), checked
against the service: the metadata CDS Hooks asks of a hook, a context table that matches the
hook's JSON Schema, and examples that are valid JSON the service's own request validation
accepts (sent over HTTP; the one without companions against a real FHIR server)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hooks.services import BY_ID
from service.validation import _schemas, CONTEXT_PREFIX
from tests.fhir_server import fhir_server  # noqa: F401

from .service_support import make_app

DOC = Path(__file__).resolve().parents[1] / "docs" / "hooks" / "claim-review.md"
SERVICE = BY_ID["fluoroscopy-claim-review"]


def _section(title: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert m, f"docs/hooks/claim-review.md has no '## {title}' section"
    return m.group(1)


def _table(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]  # header, rule


def _examples() -> list[dict]:
    blocks = re.findall(r"```json\n(.*?)```", _section("Examples"), re.S)
    assert len(blocks) >= 2
    return [json.loads(b) for b in blocks]  # valid JSON, or the test fails here


def test_the_definition_has_the_metadata_and_a_change_log():
    head = DOC.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert head.startswith(f"# `{SERVICE.hook}`")
    meta = {row[0]: row[1] for row in _table(head[head.index("| Metadata"):])}
    assert meta["specificationVersion"] == "2.0"
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", meta["hookVersion"])
    assert re.fullmatch(r"[0-5] - (Draft|Submitted|Tested|Considered|Documented|Mature)",
                        meta["hookMaturity"])
    log = _table(_section("Change log"))
    assert log and log[0][0] == meta["hookVersion"]  # the newest entry is this version
    assert all(alias in _section("Change log") for alias in SERVICE.hook_aliases)
    _section("Workflow")


def test_the_context_table_matches_the_hooks_schema():
    schema = _schemas()[CONTEXT_PREFIX + SERVICE.hook]
    rows = _table(_section("Context"))
    assert [r[:2] for r in rows] and all(len(r) == 5 for r in rows)
    fields = {r[0].strip("`"): r[1] for r in rows}
    assert set(fields) == set(schema["properties"])
    assert {f for f, opt in fields.items() if opt == "REQUIRED"} == set(schema["required"])
    assert set(fields.values()) <= {"REQUIRED", "OPTIONAL"}
    assert {r[2] for r in rows} <= {"Yes", "No"}
    assert set(SERVICE.required_context) <= set(schema["required"])


def test_every_example_is_accepted_by_the_service(tmp_path, fhir_server):
    client = make_app(tmp_path).test_client()
    examples = _examples()
    for body in examples:
        assert body["hook"] == SERVICE.hook
    alone, bundled = examples[0], examples[1]
    resp = client.post(f"/cds-services/{SERVICE.id}", json=bundled)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_json()["cards"], "the example bills 76000 with an arthroscopy: a card"
    # the Claim alone: its Encounter read from a real FHIR server
    [encounter] = [e["resource"] for e in bundled["context"]["claim"]["entry"]
                   if e["resource"]["resourceType"] == "Encounter"]
    fhir_server.load([{"resourceType": "Patient", "id": "example"}, encounter])
    alone = dict(alone, fhirServer=fhir_server.base_url,
                 fhirAuthorization=dict(alone["fhirAuthorization"], access_token=fhir_server.token))
    resp = client.post(f"/cds-services/{SERVICE.id}", json=alone)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    # and the older hook name is accepted for the same request
    resp = client.post(f"/cds-services/{SERVICE.id}",
                       json=dict(bundled, hook=SERVICE.hook_aliases[0]))
    assert resp.status_code == 200


@pytest.mark.parametrize("drop", ["patientId", "claim"])
def test_a_required_context_field_missing_is_refused(tmp_path, drop):
    client = make_app(tmp_path).test_client()
    body = _examples()[1]
    del body["context"][drop]
    resp = client.post(f"/cds-services/{SERVICE.id}", json=body)
    assert resp.status_code == 400 and drop in resp.get_json()["error"]

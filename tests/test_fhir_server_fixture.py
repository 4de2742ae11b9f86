"""The shared real-FHIR-server fixture (tests/fhir_server.py) works: bearer auth, load, paging."""
from __future__ import annotations

import requests

from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)


def test_fixture_serves_loaded_resources_with_its_token_only(fhir_server):
    fhir_server.load([{"resourceType": "Patient", "id": "fixture-p1"}])
    fhir_server.load({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Patient", "id": "fixture-p2"},
         "request": {"method": "PUT", "url": "Patient/fixture-p2"}}]})
    assert fhir_server.base_url.startswith("http://127.0.0.1:")
    assert fhir_server.get("Patient/fixture-p2")["id"] == "fixture-p2"
    wrong = requests.get(f"{fhir_server.base_url}/Patient/fixture-p1",
                         headers={"Authorization": "Bearer not-the-token"}, timeout=10)
    assert wrong.status_code == 401

"""Data fetched from the FHIR server that fails (issue 12): a failed search or read, a deadline
that expires, a Bundle or resource of the wrong JSON types. The answer is 200 with the
"could not be checked" card (hooks/unchecked.py) for supplementary data, 412 naming the FHIR
server for data the review needs; never a 400 (that would blame the caller) and never silence.

A real FHIR server (sekmet-fhir) holds the scenario data; tests/misbehaving_fhir.py stands in
front of it on 127.0.0.1 and answers the requests a test picks with errors, stalls, slow
headers or wrong-typed resources."""
from __future__ import annotations

import copy
import json
import time

import orjson
import pytest

from hooks.unchecked import TOPIC_CODE
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.misbehaving_fhir import Answer, MisbehavingFhir
from tests.scenario_fixtures import scenario
from tests.service_support import assert_json_error, make_app

DEADLINE = 1.5  # FLUORO_CDS_FHIR_DEADLINE of the app under test


def renamed(value, number: int):
    """`value` with scenario `number`'s ids ("s13-...") renamed "fd13-..." (this module's own
    resources on the shared FHIR server)."""
    return json.loads(json.dumps(value).replace(f"s{number:02d}-", f"fd{number:02d}-"))


@pytest.fixture(scope="module")
def loaded(fhir_server):  # noqa: F811
    for n in (1, 13):
        fhir_server.load(renamed(scenario(n).resources, n))
    return fhir_server


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("fetched"), fhir_deadline=DEADLINE).test_client()


@pytest.fixture
def bad(loaded):
    with MisbehavingFhir(loaded) as proxy:
        yield proxy


def _call(client, n: int, server: str, bundle: bool = False):
    s = scenario(n)
    body = renamed(s.request(with_prefetch=False, fhir_server=server), n)
    if bundle:  # claim review: the Claim in a Bundle that carries its Encounter
        claim = body["context"]["claim"]
        encounter = renamed(next(r for r in s.resources if r["resourceType"] == "Encounter"), n)
        body["context"]["claim"] = {"resourceType": "Bundle", "type": "collection",
                                    "entry": [{"resource": claim}, {"resource": encounter}]}
    started = time.monotonic()
    resp = client.post(f"/cds-services/{s.service_id}", data=orjson.dumps(body),
                       content_type="application/json")
    return resp, time.monotonic() - started


def _gap_card(resp) -> dict:
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    cards = [c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == TOPIC_CODE]
    assert len(cards) == 1, [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]]
    return cards[0]


def _topics(resp) -> set[str]:
    return {c["source"]["topic"]["code"] for c in resp.get_json()["cards"]}


def test_through_the_proxy_the_review_is_complete(client, bad):
    resp, _ = _call(client, 13, bad.base_url)
    assert resp.status_code == 200
    assert TOPIC_CODE not in _topics(resp) and "modifier-26" in _topics(resp)
    assert any("/Observation" in t for t in bad.requests)  # the documentation was searched


@pytest.mark.parametrize("status", [500, 503, 401])
def test_a_failed_documentation_search_is_reported(client, bad, status):
    bad.rule = lambda t: Answer(status=status, body={"resourceType": "OperationOutcome"}) \
        if t.startswith("/fhir/Observation") else None
    resp, _ = _call(client, 13, bad.base_url)
    card = _gap_card(resp)
    assert "Observation" in card["detail"] and f"HTTP {status}" in card["detail"]
    assert "documentation-missing" not in _topics(resp)  # not judged without the data
    assert "modifier-26" in _topics(resp)  # the rest is reviewed


def test_claim_bundle_with_its_encounter_reports_failed_searches(client, bad):
    """Before issue 12 these failures were skipped without a word (the Bundle was 'complete')."""
    bad.rule = lambda t: Answer(status=503) if t.startswith(("/fhir/Observation",
                                                              "/fhir/DiagnosticReport")) else None
    resp, _ = _call(client, 1, bad.base_url, bundle=True)
    card = _gap_card(resp)
    assert "Observation?" in card["detail"] and "DiagnosticReport?" in card["detail"]


def test_a_search_that_stalls_ends_at_the_deadline_with_the_card(client, bad):
    bad.rule = lambda t: Answer(stall=30, body={"resourceType": "Bundle", "type": "searchset"}) \
        if t.startswith("/fhir/ImagingStudy") else None
    resp, seconds = _call(client, 13, bad.base_url)
    card = _gap_card(resp)
    assert "ImagingStudy" in card["detail"] and "deadline" in card["detail"]
    assert seconds < DEADLINE + 2.0


def test_headers_a_byte_at_a_time_end_at_the_deadline_with_the_card(client, bad):
    """Each header byte comes well within the read timeout; only the call's deadline stops it."""
    bad.rule = lambda t: Answer(header_delay=0.2, body={"resourceType": "Bundle", "type": "searchset"}) \
        if t.startswith("/fhir/DiagnosticReport") else None
    resp, seconds = _call(client, 13, bad.base_url)
    card = _gap_card(resp)
    assert "DiagnosticReport" in card["detail"] and "deadline" in card["detail"]
    assert seconds < DEADLINE + 2.0


def _resource(n: int, rtype: str) -> dict:
    return renamed(copy.deepcopy(next(r for r in scenario(n).resources if r["resourceType"] == rtype)), n)


def test_a_fetched_location_of_wrong_types_is_not_checked_not_a_400(client, bad):
    location = _resource(13, "Location")
    location["type"] = "hospital"  # Location.type is an array of CodeableConcepts
    bad.rule = lambda t: (Answer(body=location) if t.startswith("/fhir/Location/") else
                          Answer(status=500) if t.startswith("/fhir/Encounter?") else None)
    resp, _ = _call(client, 13, bad.base_url)  # the _include search fails: the Location is read
    card = _gap_card(resp)
    assert f"Location/{location['id']}.type" in card["detail"] and "hospital" not in card["detail"]


def test_wrong_typed_entries_of_a_search_are_left_out_and_reported(client, bad):
    def rule(target):
        if not target.startswith("/fhir/Procedure?"):
            return None
        procs = [r for r in renamed(scenario(13).resources, 13) if r["resourceType"] == "Procedure"]
        procs[0]["code"] = 5  # a number where a CodeableConcept belongs
        return Answer(body={"resourceType": "Bundle", "type": "searchset",
                            "entry": [{"resource": p} for p in procs]})
    bad.rule = rule
    resp, _ = _call(client, 13, bad.base_url)
    card = _gap_card(resp)
    assert "Procedure/fd13-procedure-1" in card["detail"] and ".code" in card["detail"]


@pytest.mark.parametrize("bundle", [
    {"resourceType": "Bundle", "type": "searchset", "entry": 5},
    {"resourceType": "Bundle", "type": "searchset", "entry": [], "link": "next"},
    {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"id": "x"}}]},
    {"resourceType": "Patient", "id": "x"},
    [1, 2],
])
def test_a_search_answer_of_wrong_types_is_not_checked(client, bad, bundle):
    bad.rule = lambda t: Answer(body=bundle) if t.startswith("/fhir/Observation") else None
    resp, _ = _call(client, 13, bad.base_url)
    assert "Observation" in _gap_card(resp)["detail"]


def test_a_fetched_encounter_of_wrong_types_is_412_naming_the_server(client, bad):
    """The Encounter is what a discharge review is about: without a usable one, nothing can be
    reviewed (412), and the reason names the FHIR server's answer, not the request."""
    encounter = _resource(13, "Encounter")
    encounter["location"] = "ward 3"
    bad.rule = lambda t: Answer(body=encounter) if t.startswith("/fhir/Encounter/") else None
    resp, _ = _call(client, 13, bad.base_url)
    body = assert_json_error(resp, 412)
    assert "FHIR server" in body["error"] and f"Encounter/{encounter['id']}.location" in body["error"]
    assert "ward 3" not in body["error"]


def test_claim_review_encounter_of_wrong_types_is_412_not_400(client, bad):
    encounter = _resource(1, "Encounter")
    encounter["location"] = [{"location": "Location/x"}]  # a Reference is an object
    bad.rule = lambda t: Answer(body=encounter) if t.startswith("/fhir/Encounter/") else None
    resp, _ = _call(client, 1, bad.base_url)
    body = assert_json_error(resp, 412)
    assert "FHIR server" in body["error"]


def test_a_fetched_claim_with_an_invalid_insurance_is_not_checked(client, bad):
    """The encounter's Claim is read for its NCCI program too (Claim.insurance): invalid there, it
    is the server's data that cannot be used (a "could not be checked" card), not a 400 (the
    served fuzz found one)."""
    claim = _resource(13, "Claim")
    claim["insurance"] = "plan 7"
    searchset = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": claim}]}
    bad.rule = lambda t: Answer(body=searchset) if t.startswith("/fhir/Claim") else None
    resp, _ = _call(client, 13, bad.base_url)
    assert "Claim" in _gap_card(resp)["detail"] and "plan 7" not in resp.get_data(as_text=True)

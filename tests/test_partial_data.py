"""Partial data (issue 11 section 2): supplementary data that can be neither found nor fetched
gives a 200 with the cards that can be given plus one info card saying what was not checked;
412 only when nothing can be reviewed. Over HTTP, without a fhirServer (nothing to fetch from)."""
from __future__ import annotations

import copy

import orjson
import pytest

from hooks.unchecked import TOPIC_CODE
from tests.scenario_fixtures import scenario

from .service_support import assert_json_error


def _post(client, s, body):
    return client.post(f"/cds-services/{s.service_id}", data=orjson.dumps(body),
                       content_type="application/json")


def _topics(resp) -> list[str]:
    return [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]]


def _gap_card(resp) -> dict:
    [card] = [c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == TOPIC_CODE]
    assert card["indicator"] == "info" and len(card["summary"]) < 140
    return card


def test_discharge_without_documentation_searches_reviews_the_rest(client):
    s = scenario(13)
    body = s.request(with_prefetch=True)
    for key in ("observations", "reports", "imagingStudies"):
        del body["prefetch"][key]
    resp = _post(client, s, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    topics = _topics(resp)
    assert "modifier-26" in topics  # what the data given supports
    assert "documentation-missing" not in topics  # not judged: the documentation was not there
    card = _gap_card(resp)
    for rtype in ("Observation", "DiagnosticReport", "ImagingStudy"):
        assert rtype in card["detail"]
    assert "documentation" in card["detail"]


def test_complete_discharge_prefetch_has_no_gap_card(client):
    s = scenario(13)
    resp = _post(client, s, s.request(with_prefetch=True))
    assert resp.status_code == 200 and TOPIC_CODE not in _topics(resp)


def test_discharge_with_neither_procedures_nor_claim_is_412_saying_why(client):
    s = scenario(13)
    body = s.request(with_prefetch=True)
    del body["prefetch"]["procedures"], body["prefetch"]["claims"]
    err = assert_json_error(_post(client, s, body), 412)
    assert "nothing to review" in err["error"] and "procedures" in err["error"]
    assert "no fhirServer" in err["error"]


def test_order_sign_without_encounter_procedures_and_locations_reviews_the_drafts(client):
    s = scenario(12)
    body = s.request(with_prefetch=True)
    del body["prefetch"]["procedures"], body["prefetch"]["encounterLocations"]
    resp = _post(client, s, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    topics = _topics(resp)
    assert topics[-1] == TOPIC_CODE and len(topics) >= 2  # the drafts' card, then the gap card
    detail = _gap_card(resp)["detail"]
    assert "Procedure" in detail and "Locations" in detail


def test_claim_bundle_with_an_unfetchable_supporting_observation_is_reviewed(client):
    s = scenario(4)
    body = s.request(with_prefetch=False)
    body["context"] = copy.deepcopy(s.context)  # the Bundle form, carrying the Encounter
    claim = body["context"]["claim"]["entry"][0]["resource"]
    claim["supportingInfo"] = [{"sequence": 1, "category": {"text": "fluoroscopy time"},
                                "valueReference": {"reference": "Observation/not-here"}}]
    resp = _post(client, s, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert "modifier-26" in _topics(resp)
    assert "Observation/not-here" in _gap_card(resp)["detail"]


def test_claim_whose_encounter_cannot_be_had_is_still_412(client):
    s = scenario(4)
    body = s.request(with_prefetch=False)  # a lone Claim naming its Encounter, no fhirServer
    body["context"]["claim"] = copy.deepcopy(s.claim)
    err = assert_json_error(_post(client, s, body), 412)
    assert "Encounter/" in err["error"]


@pytest.mark.parametrize("n", [12, 13])
def test_gap_card_passes_the_response_schema(client, n):
    """The ValidatingClient checks every 200 against response.json; the gap card is one."""
    s = scenario(n)
    body = s.request(with_prefetch=True)
    body["prefetch"].pop("procedures" if n == 12 else "observations")
    assert _post(client, s, body).status_code == 200

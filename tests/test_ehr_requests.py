"""Requests as EHRs send them (issue 11 section 1), over HTTP: draft orders without an id acted
on through their fullUrl, orders the service does not review never failing the call, a minimal
fhirAuthorization, prefetch values of any JSON type under keys the service did not declare,
unknown extensions and Da Vinci CRD options, and the options advertised the CRD way."""
from __future__ import annotations

import orjson
import pytest

from tests.scenario_fixtures import scenario

from .service_support import assert_json_error, make_app

CPT = "http://www.ama-assn.org/go/cpt"


@pytest.fixture()
def client(tmp_path):
    return make_app(tmp_path).test_client()


def _post(client, s, body):
    return client.post(f"/cds-services/{s.service_id}", data=orjson.dumps(body),
                       content_type="application/json")


def _order_sign(**changes):
    s = scenario(12)
    body = s.request(with_prefetch=True)
    body.update(changes)
    return s, body


def _delete_ids(resp) -> list[str]:
    return [a["resourceId"] for c in resp.get_json()["cards"] for sg in c.get("suggestions", ())
            if sg.get("isRecommended") for a in sg["actions"] if a["type"] == "delete"]


def test_draft_orders_without_id_are_acted_on_through_their_full_url(client):
    s, body = _order_sign()
    for i, entry in enumerate(body["context"]["draftOrders"]["entry"]):
        del entry["resource"]["id"]
        entry["fullUrl"] = f"urn:uuid:00000000-0000-4000-8000-00000000000{i}"
    resp = _post(client, s, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert _delete_ids(resp) == ["urn:uuid:00000000-0000-4000-8000-000000000001"]  # the 76000


def test_an_order_the_service_does_not_review_never_fails_the_call(client):
    s, body = _order_sign()
    entries = body["context"]["draftOrders"]["entry"]
    entries.append({"resource": {  # a lab order: no id, no fullUrl, a date the service cannot read
        "resourceType": "ServiceRequest", "status": "draft", "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "occurrenceDateTime": "next tuesday"}})
    entries.append({"resource": {"resourceType": "ServiceRequest", "status": "draft",
                                 "intent": "order", "code": {"coding": "not an array"}}})
    resp = _post(client, s, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert _delete_ids(resp) == ["ServiceRequest/s12-sr-76000"]
    # an order the service does review, with an element it cannot read, is still a 400
    entries[0]["resource"]["occurrenceDateTime"] = "next tuesday"
    err = assert_json_error(_post(client, s, body), 400)
    assert "occurrenceDateTime" in err["error"]


def test_minimal_fhir_authorization_is_accepted_when_unused(client):
    s, body = _order_sign(fhirServer="https://ehr.example.org/fhir",
                          fhirAuthorization={"access_token": "opaque", "token_type": "Bearer"})
    assert _post(client, s, body).status_code == 200  # everything prefetched: never used
    body["fhirAuthorization"] = {"token_type": "Bearer"}  # the one value a fetch needs
    err = assert_json_error(_post(client, s, body), 400)
    assert "access_token" in err["error"]


@pytest.mark.parametrize("value", ["a string", 42, True, ["a", "list"], {"no": "resourceType"}])
def test_prefetch_values_of_any_type_under_undeclared_keys_are_ignored(client, value):
    s, body = _order_sign()
    body["prefetch"]["ehrSpecific"] = value
    assert _post(client, s, body).status_code == 200


def test_a_declared_prefetch_key_must_hold_a_resource_or_null(client):
    s, body = _order_sign()
    body["prefetch"]["encounter"] = "Encounter/s12-encounter"
    err = assert_json_error(_post(client, s, body), 400)
    assert err["issue"][0]["expression"] == ["$.prefetch.encounter"]
    assert "s12-encounter" not in err["error"]  # never the value sent


def test_unknown_extensions_and_crd_options_are_accepted(client):
    s, body = _order_sign()
    baseline = _post(client, s, body).get_json()["cards"]
    body["extension"] = {"com.example.ehr-trace": {"id": 7},
                         "davinci-crd.configuration": {"coverage": True, "prior-auth": False,
                                                       "max-cards": 1}}
    resp = _post(client, s, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert len(baseline) >= 1 and len(resp.get_json()["cards"]) == 1  # max-cards applies
    body["extension"] = {"davinci-crd.configuration": {"max-cards": "one"}}  # known, unusable
    assert_json_error(_post(client, s, body), 400)
    body["extension"] = {"fluoro-cds.configuration": {"max-crads": 1}}  # our own: typos refused
    assert "max-crads" in assert_json_error(_post(client, s, body), 400)["error"]


def test_discovery_advertises_crd_options_with_the_effective_defaults(tmp_path):
    client = make_app(tmp_path, defaults={"max-cards": 3}).test_client()
    for entry in client.get("/cds-services").get_json()["services"]:
        ext = entry["extension"]
        crd = {o["code"]: o for o in ext["davinci-crd.configuration-options"]}
        assert {o["type"] for o in crd.values()} <= {"boolean", "integer"}
        assert crd["max-cards"]["default"] == 3 and crd["global-billing"]["type"] == "boolean"
        assert "distinct-modifier" not in crd  # a string option: not a CRD type
        ours = {o["code"]: o for o in ext["fluoro-cds.configuration-options"]}
        assert ours["distinct-modifier"]["default"] == "XS" and ours["max-cards"]["default"] == 3

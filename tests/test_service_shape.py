"""The HTTP layer's shape (issue 11 section 9): the CDS Hooks endpoints are one blueprint whose
calls go through parse_hook_request; one helper each for resource keys and references, so a
resource without an id and a reference with a trailing slash mean the same everywhere."""
from __future__ import annotations

import pytest

from hooks import fhir_read
from hooks.context import FhirData
from hooks.services import gather
from service.fhir_access import FhirAccess, Query

from .service_support import discharge_request, full_prefetch, make_app


@pytest.fixture()
def app(tmp_path):
    return make_app(tmp_path)


def test_cds_hooks_endpoints_are_one_blueprint(app):
    endpoints = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints["/cds-services"] == "cds_hooks.discovery"
    assert endpoints["/cds-services/<service_id>"] == "cds_hooks.invoke"
    assert endpoints["/cds-services/<service_id>/feedback"] == "cds_hooks.feedback"
    assert endpoints["/healthz"] == "health.healthz"


def test_a_call_goes_through_parse_hook_request(app, monkeypatch):
    """parse_hook_request is the one place a request becomes a HookRequest: replacing it changes
    what every service call sees."""
    from service import cds_hooks

    seen = []
    real = cds_hooks.parse_hook_request

    def spy(rt, service, call, environ, limit):
        hook_request = real(rt, service, call, environ, limit)
        seen.append((service.id, hook_request.hook_instance))
        return hook_request

    monkeypatch.setattr(cds_hooks, "parse_hook_request", spy)
    body = discharge_request()
    body["prefetch"] = full_prefetch("fluoroscopy-discharge-review", body["context"])
    resp = app.test_client().post("/cds-services/fluoroscopy-discharge-review", json=body)
    assert resp.status_code == 200
    assert seen == [("fluoroscopy-discharge-review", body["hookInstance"])]


def test_fhir_data_protocol_declares_has_server():
    assert "has_server" in dir(FhirData)
    access = FhirAccess(prefetch=None, templates={}, context={}, client=None)
    assert access.has_server is False


def test_one_key_helper_and_id_less_resources():
    assert gather.key_of is fhir_read.key_of
    assert fhir_read.key_of({"resourceType": "Procedure"}) is None
    assert fhir_read.key_of({"resourceType": "Procedure", "id": "p1"}) == "Procedure/p1"
    a, b = {"resourceType": "Procedure"}, {"resourceType": "Procedure"}
    same = {"resourceType": "Procedure", "id": "p1"}
    merged = gather.merge([a, same], [b, dict(same)])
    assert merged == [a, same, b]  # both id-less resources kept, the repeated id once


@pytest.mark.parametrize("written, meant", [
    ("Encounter/e1", "Encounter/e1"),
    ("https://ehr.example.org/fhir/Encounter/e1", "Encounter/e1"),
    ("Encounter/e1/_history/3", "Encounter/e1"),
    ("Encounter/e1/", "Encounter/e1/"),  # not a FHIR literal reference: left as written
])
def test_one_reference_helper(written, meant):
    assert fhir_read.normalize_reference(written) == meant
    assert fhir_read.reference({"reference": written}, "X", "ref") == meant
    # the FHIR access reads what the helper gives, and nothing for what is no Type/id
    encounter = {"resourceType": "Encounter", "id": "e1"}
    access = FhirAccess(prefetch={"e": encounter}, templates={}, context={}, client=None)
    if meant == "Encounter/e1":
        assert access.read(meant) is encounter
    else:
        assert Query.parse(meant) is None
        with pytest.raises(ValueError):
            access.read(meant)


def test_trailing_slash_location_is_no_reference_to_fetch(app):
    """An Encounter.location written "Location/l1/" names no Location: the review goes on with
    what is there instead of failing on a Location it would read under another name."""
    body = discharge_request()
    prefetch = full_prefetch("fluoroscopy-discharge-review", body["context"])
    prefetch["encounter"]["location"] = [{"location": {"reference": "Location/l1/"}}]
    body["prefetch"] = prefetch
    resp = app.test_client().post("/cds-services/fluoroscopy-discharge-review", json=body)
    assert resp.status_code == 200, resp.get_json()
    assert [c["source"]["topic"]["code"] for c in resp.get_json()["cards"]] == []
    # a proper reference to a Location that is neither prefetched nor fetchable is read, and
    # reported as not checked
    prefetch["encounter"]["location"] = [{"location": {"reference": "Location/l1"}}]
    prefetch.pop("encounterLocations", None)
    resp = app.test_client().post("/cds-services/fluoroscopy-discharge-review", json=body)
    assert resp.status_code == 200
    [card] = resp.get_json()["cards"]
    assert card["source"]["topic"]["code"] == "data-unavailable"
    assert "Location/l1" in card["detail"]

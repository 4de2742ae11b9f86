"""Service handlers over HTTP beyond the acceptance scenarios: order replacement, discharge without
a Claim, configuration effects, the Claim?patient= fallback, and the jsonschema-rs fast path."""
from __future__ import annotations

import copy
import json

import orjson
import pytest
from fhir.resources.R4B.servicerequest import ServiceRequest

from hooks.services import BY_ID
from service.validation import first_error, request_validator, validator
from tests.cards_support import apply_actions, billed_codes, full_prefetch
from tests.scenario_fixtures import CPT, NUMBERS, bundle, scenario


def _post(client, service_id: str, body: dict):
    resp = client.post(f"/cds-services/{service_id}", data=orjson.dumps(body),
                       content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    assert not [e.message for e in validator("response").iter_errors(body)]
    return body["cards"]


def _topics(cards):
    return [c["source"]["topic"]["code"] for c in cards]


def test_order_replacement_is_delete_plus_create_of_a_valid_service_request(client):
    s = scenario(12)
    drafts = copy.deepcopy(s.draft_orders)
    first = drafts["entry"][0]["resource"]
    first["code"] = {"coding": [{"system": CPT, "code": "20610"}]}
    first["id"] = "s12-sr-20610"
    body = s.request(with_prefetch=True)
    body["context"]["draftOrders"] = drafts
    body["prefetch"] = full_prefetch(s, BY_ID[s.service_id].prefetch)
    cards = _post(client, s.service_id, body)
    [card] = [c for c in cards if c["source"]["topic"]["code"] == "use-guidance-code"]
    [rec] = [sg for sg in card["suggestions"] if sg["isRecommended"]]
    delete, create = rec["actions"]
    assert delete == {"type": "delete", "description": delete["description"],
                      "resourceId": "ServiceRequest/s12-sr-76000"}
    assert create["type"] == "create"
    new = ServiceRequest.model_validate(create["resource"])
    assert new.code.coding[0].code == "77002" and new.id != "s12-sr-76000"
    state = {f"ServiceRequest/{e['resource']['id']}": e["resource"] for e in drafts["entry"]}
    after = apply_actions(state, rec["actions"])
    assert sorted(billed_codes(after)) == ["20610", "77002"]


def test_discharge_without_a_claim_explains_and_offers_no_actions(client):
    s = scenario(13)
    body = s.request(with_prefetch=True)
    body["prefetch"] = full_prefetch(s, BY_ID[s.service_id].prefetch)
    body["prefetch"]["claims"] = bundle([], "searchset")
    cards = _post(client, s.service_id, body)
    assert "modifier-26" in _topics(cards)
    for card in cards:
        assert "suggestions" not in card and "selectionBehavior" not in card
    [m26] = [c for c in cards if c["source"]["topic"]["code"] == "modifier-26"]
    assert "**What to do**" in m26["detail"] and "26" in m26["detail"]


def test_documentation_url_and_max_cards_through_the_request_configuration(client):
    s = scenario(7)
    body = s.request(with_prefetch=True)
    body["extension"] = {"fluoro-cds.configuration": {
        "documentation-url": "https://ehr.example.org/fluoro-doc", "max-cards": 1}}
    cards = _post(client, s.service_id, body)
    assert len(cards) == 1
    [card] = cards
    assert card["source"]["topic"]["code"] == "documentation-missing"
    smart, absolute = card["links"]
    assert absolute == {"label": "Complete the fluoroscopy documentation",
                        "url": "https://ehr.example.org/fluoro-doc", "type": "absolute",
                        "autoLaunchable": False}
    # the SMART documentation app of this service, naming the claim line and what is missing
    assert smart["type"] == "smart" and smart["url"] == "http://localhost/smart/launch"
    assert json.loads(smart["appContext"]) == {
        "claim": "Claim/s07-claim", "line": 1, "encounter": "Encounter/s07-encounter",
        "missing": ["fluoroscopy-time", "radiation-dose"]}


def test_switching_a_finding_off_removes_its_card(client):
    s = scenario(4)
    body = s.request(with_prefetch=True)
    body["extension"] = {"fluoro-cds.configuration": {"modifier-26": False}}
    assert "modifier-26" not in _topics(_post(client, s.service_id, body))


def test_documentation_url_must_be_http(client):
    s = scenario(7)
    body = s.request(with_prefetch=True)
    body["extension"] = {"fluoro-cds.configuration": {"documentation-url": "javascript:alert(1)"}}
    resp = client.post(f"/cds-services/{s.service_id}", json=body)
    assert resp.status_code == 400 and "documentation-url" in resp.get_json()["error"]


@pytest.mark.parametrize("n", [n for n in NUMBERS if n != 16])
def test_fast_schema_path_agrees_with_jsonschema(n):
    """The jsonschema-rs fast path must accept exactly what jsonschema accepts."""
    s = scenario(n)
    body = s.request(with_prefetch=True)
    v = request_validator(s.hook)
    fast = v.rs
    assert fast is not None
    broken = [copy.deepcopy(body) for _ in range(4)]
    broken[0]["hookInstance"] = ""
    broken[1]["context"]["patientId"] = 42
    broken[2]["prefetch"] = ["not", "an", "object"]
    broken[3]["fhirAuthorization"] = {"token_type": "Bearer"}  # no access_token
    for instance in [body] + broken:
        assert fast.is_valid(instance) == v.py.is_valid(instance)
    assert first_error(v, body) is None
    assert all(first_error(v, b) is not None for b in broken)


def _with_primary(s, code: str) -> dict:
    """Scenario `s`'s prefetch request with its primary procedure (20650) changed to `code`."""
    body = s.request(with_prefetch=True)
    for entry in body["context"]["claim"]["entry"]:
        res = entry["resource"]
        concepts = [it["productOrService"] for it in res.get("item", [])] if res["resourceType"] == "Claim" \
            else [res["code"]] if res["resourceType"] == "Procedure" else []
        for concept in concepts:
            if concept["coding"][0]["code"] == "20650":
                concept["coding"][0]["code"] = code
    return body


def test_ptp_modifier_allowed_offers_removal_and_the_configured_bypass_modifier(client):
    """27235 + 76000: PTP edit with modifier indicator 1 ("CPT Separate procedure definition")."""
    s = scenario(4)
    body = _with_primary(s, "27235")
    body["extension"] = {"fluoro-cds.configuration": {"distinct-modifier": "59"}}
    for entry in body["context"]["claim"]["entry"]:  # the 27235 Procedure's site unknown: XS / XU / 59 not
        res = entry["resource"]                        # contradicted (same encounter, same practitioner)
        if res["resourceType"] == "Procedure" and res["code"]["coding"][0]["code"] == "27235":
            res.pop("bodySite", None)
    cards = _post(client, s.service_id, body)
    [card] = [c for c in cards if c["source"]["topic"]["code"] == "ptp-modifier-allowed"]
    assert {r["code"] for r in card["overrideReasons"]} >= {"distinct-site", "distinct-session"}
    assert all(r["system"] == "https://fluoro-cds.org/CodeSystem/override-reason"
               for r in card["overrideReasons"])
    rec, *bypasses = card["suggestions"]
    assert rec["isRecommended"] and not any(b["isRecommended"] for b in bypasses)
    # one per reason the record does not contradict: site XS, indication XU, payer policy the configured 59
    assert [b["label"].split()[1] for b in bypasses] == ["XS", "XU", "59"]
    bypass = bypasses[-1]
    state = {f"Claim/{s.claim['id']}": s.claim}
    assert "76000" not in billed_codes(apply_actions(state, rec["actions"]))
    [update] = bypass["actions"]
    claim = update["resource"]
    from fhir.resources.R4B.claim import Claim
    Claim.model_validate(claim)
    [item] = [it for it in claim["item"] if it["productOrService"]["coding"][0]["code"] == "76000"]
    assert {"system": "http://www.ama-assn.org/go/cpt", "code": "59"} in \
        [c for m in item["modifier"] for c in m["coding"]]
    assert "column 1 27235" in card["detail"] and "modifier indicator 1" in card["detail"]

""""Why no card?" (issue 11 section 8), over HTTP: ``extension["org.fluoro-cds.explain"]: true``
makes the response say, per claim line or draft order, what was reviewed and why nothing was
said; one test per reason; off by default; nothing in it that the request did not carry."""
from __future__ import annotations

import copy
import json

import orjson
import pytest

from hooks.explain import EXPLANATION_KEY, requested
from tests.fhir_server import fhir_server  # noqa: F401
from tests.scenario_fixtures import scenario

from .service_support import make_app

EXPLAIN = {"org.fluoro-cds.explain": True}
CPT = "http://www.ama-assn.org/go/cpt"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"


@pytest.fixture()
def client(tmp_path):
    return make_app(tmp_path).test_client()


def _answer(client, s, body) -> dict:
    resp = client.post(f"/cds-services/{s.service_id}", data=orjson.dumps(body),
                       content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def _explained(client, n: int, change=None, *, extension=None, with_prefetch=True):
    s = scenario(n)
    body = s.request(with_prefetch=with_prefetch)
    if change:
        change(body)
    body["extension"] = dict(body.get("extension") or {}, **(extension or EXPLAIN))
    answer = _answer(client, s, body)
    return answer, answer["extension"][EXPLANATION_KEY]


def _claim(body) -> dict:
    claim = body["context"]["claim"]
    return claim["entry"][0]["resource"] if claim.get("resourceType") == "Bundle" else claim


def _item(explanation, code=None, path=None) -> dict:
    [entry] = [e for e in explanation["items"]
               if (code is None or e["code"] == code) and (path is None or e["path"] == path)]
    return entry


def _reasons(entry) -> dict[str, str]:
    return {r["code"]: r["detail"] for r in entry.get("reasons", ())}


def test_off_by_default_and_only_for_true(client):
    s = scenario(7)
    assert "extension" not in _answer(client, s, s.request())
    assert not requested(None) and not requested({}) and not requested({"org.fluoro-cds.explain": "true"})
    assert requested({"org.fluoro-cds.explain": True}) and requested({"fluoro-cds.explain": True})


def test_a_line_with_a_card_names_it_and_a_clean_76000_says_no_rule_applies(client):
    answer, exp = _explained(client, 4)  # 20650 + 76000 without 26 in a hospital: modifier-26
    [card] = answer["cards"]
    fluoro = _item(exp, "76000")
    assert fluoro["reviewed"] is True and fluoro["cards"] == [card["uuid"]] and "reasons" not in fluoro
    answer, exp = _explained(client, 5)  # the same, billed -26: no card
    assert answer["cards"] == []
    reasons = _reasons(_item(exp, "76000"))
    assert list(reasons) == ["no-finding"] and "20650" in reasons["no-finding"]
    assert "facility" in reasons["no-finding"]


def test_not_76000(client):
    _, exp = _explained(client, 5)
    entry = _item(exp, "20650")
    assert entry["reviewed"] is True and entry["cards"] == []
    assert "not-76000" in _reasons(entry)


def test_no_cpt_coding_and_an_unknown_code_system(client):
    def change(body):
        items = _claim(body)["item"]
        extra = copy.deepcopy(items[-1])
        extra["sequence"] = 90
        extra["productOrService"] = {"coding": [{"system": "http://snomed.info/sct", "code": "44491008"}]}
        typo = copy.deepcopy(items[-1])
        typo["sequence"] = 91
        typo["productOrService"] = {"coding": [{"system": "http://ama-assn.org/cpt", "code": "76000"}]}
        items += [extra, typo]

    _, exp = _explained(client, 5, change)
    [snomed, typo] = [e for e in exp["items"] if not e["reviewed"]]
    assert snomed["code"] is None and "no-cpt-coding" in _reasons(snomed)
    assert "http://snomed.info/sct" in _reasons(snomed)["no-cpt-coding"]
    assert "unknown-code-system" in _reasons(typo)
    assert "'http://ama-assn.org/cpt'" in _reasons(typo)["unknown-code-system"]


def test_an_element_not_recognised(client):
    def change(body):
        [fluoro] = [i for i in _claim(body)["item"]
                    if i["productOrService"]["coding"][0]["code"] == "76000"]
        fluoro["modifier"] = [{"coding": [{"system": CPT, "code": "26"}]},
                              {"coding": [{"system": CPT, "code": "LEFT"}]}]
        fluoro["locationCodeableConcept"] = {"coding": [{"system": "urn:ehr:pos", "code": "22"}]}

    _, exp = _explained(client, 5, change)
    detail = _reasons(_item(exp, "76000"))["unrecognised-element"]
    assert ".modifier" in detail or ".locationCodeableConcept" in detail
    codes = [r["code"] for r in _item(exp, "76000")["reasons"]]
    assert codes.count("unrecognised-element") == 2


def test_data_that_could_not_be_fetched(client):
    # the Claim alone, no fhirServer: its Observations and DiagnosticReport cannot be had
    s = scenario(5)
    body = s.request(with_prefetch=False)
    encounter = {"resourceType": "Bundle", "type": "collection",
                 "entry": [{"resource": body["context"]["claim"]},
                           {"resource": copy.deepcopy(s.encounter)}]}
    body["context"]["claim"] = encounter
    body["extension"] = EXPLAIN
    answer = _answer(client, s, body)
    exp = answer["extension"][EXPLANATION_KEY]
    reasons = [r for r in _item(exp, "76000")["reasons"] if r["code"] == "data-unavailable"]
    assert reasons and exp["notChecked"]
    assert {g["what"] for g in exp["notChecked"]} <= {r["detail"].split(": ", 1)[0] for r in reasons}


def test_switched_off_and_cut_by_max_cards(client):
    def switch(body):
        body["extension"] = {"org.fluoro-cds.configuration": {"modifier-26": False}}

    answer, exp = _explained(client, 4, switch)
    assert answer["cards"] == []
    assert "'modifier-26' applies and is switched off" in _reasons(_item(exp, "76000"))["switched-off"]

    # max-cards: cards on two lines (documentation missing on 76000, a deleted code on 76001),
    # cut to one
    def two_lines(body):
        items = _claim(body)["item"]
        deleted = copy.deepcopy(items[-1])
        deleted["sequence"] = 99
        deleted["productOrService"] = {"coding": [{"system": CPT, "code": "76001"}]}
        items.append(deleted)

    answer, exp = _explained(client, 7, two_lines)
    assert len([e for e in exp["items"] if e["cards"]]) == 2, exp

    def limit(body):
        two_lines(body)
        body["extension"] = {"org.fluoro-cds.configuration": {"max-cards": 1}}

    answer, exp = _explained(client, 7, limit)
    assert len(answer["cards"]) == 1
    cut = [e for e in exp["items"] if "max-cards" in _reasons(e)]
    assert cut and all(not e["cards"] for e in cut)


def test_draft_orders_each_explained(client):
    s = scenario(12)
    body = s.request(with_prefetch=True)
    entries = body["context"]["draftOrders"]["entry"]
    entries.append({"resource": {"resourceType": "MedicationRequest", "status": "draft",
                                 "intent": "order", "subject": {"reference": "Patient/x"}}})
    entries.append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000aa",
                    "resource": {"resourceType": "ServiceRequest", "status": "draft",
                                 "intent": "order",
                                 "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}}})
    body["extension"] = EXPLAIN
    answer = _answer(client, s, body)
    exp = answer["extension"][EXPLANATION_KEY]
    fluoro = _item(exp, "76000")
    assert fluoro["item"] == "ServiceRequest/s12-sr-76000" and fluoro["cards"]
    assert set(fluoro["cards"]) <= {c["uuid"] for c in answer["cards"]}
    assert "not-76000" in _reasons(_item(exp, "64483"))
    med = _item(exp, path="draftOrders.entry[2].resource")
    assert med["reviewed"] is False and "not-an-order-type-reviewed" in _reasons(med)
    lab = _item(exp, path="draftOrders.entry[3].resource")
    assert lab["item"] == "urn:uuid:00000000-0000-4000-8000-0000000000aa"
    assert "http://loinc.org" in _reasons(lab)["no-cpt-coding"]


def test_nothing_beyond_what_the_request_carried(client, fhir_server):
    """With the companions on a real FHIR server, the explanation names none of their contents."""
    s = scenario(5)
    marker = "Zyxwvutsr General"
    resources = copy.deepcopy(s.resources)
    for r in resources:
        if r["resourceType"] == "Location":
            r["name"] = marker
        if r["resourceType"] == "Procedure":
            r.setdefault("note", []).append({"text": marker})
    fhir_server.load(resources)
    body = s.request(with_prefetch=False, fhir_server=fhir_server.base_url)
    body["fhirAuthorization"] = {"access_token": fhir_server.token, "token_type": "Bearer"}
    body["extension"] = EXPLAIN
    answer = _answer(client, s, body)
    text = json.dumps(answer["extension"])
    assert marker not in text
    request_text = json.dumps(body)
    for entry in answer["extension"][EXPLANATION_KEY]["items"]:
        assert entry["code"] is None or entry["code"] in request_text

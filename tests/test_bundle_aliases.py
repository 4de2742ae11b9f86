"""References between Bundle entries through fullUrl ("urn:uuid:...", as in transaction Bundles
whose resources have no ids yet) resolve like "Type/id" references (FHIR R4 Bundle rules)."""
from __future__ import annotations

import copy
import json
import uuid

import pytest

from hooks.context import InvalidResource
from hooks.extract import bundle_aliases
from tests.scenario_fixtures import scenario

URL = "/cds-services/fluoroscopy-claim-review"


def _without_pos(bundle: dict) -> dict:
    """Scenario 4's Bundle with no POS on the items: the setting must come from the Location."""
    bundle = copy.deepcopy(bundle)
    for item in bundle["entry"][0]["resource"]["item"]:
        item.pop("locationCodeableConcept", None)
    return bundle


def _as_transaction(bundle: dict) -> dict:
    """The same Bundle written with urn:uuid fullUrls: companions lose their ids, and every
    "Type/id" reference between entries becomes the target's urn:uuid."""
    bundle = copy.deepcopy(bundle)
    urns = {}
    for entry in bundle["entry"]:
        res = entry["resource"]
        urn = f"urn:uuid:{uuid.uuid4()}"
        urns[f"{res['resourceType']}/{res['id']}"] = urn
        entry["fullUrl"] = urn
        if res["resourceType"] != "Claim":  # the Claim keeps its id (its update needs it)
            del res["id"]
    text = json.dumps(bundle)
    for key, urn in urns.items():
        text = text.replace(json.dumps(key), json.dumps(urn))
    return json.loads(text)


def _cards(client, bundle: dict) -> list[dict]:
    body = scenario(4).request(with_prefetch=False)
    body["context"]["claim"] = bundle
    resp = client.post(URL, json=body)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["cards"]


def _shape(cards: list[dict]) -> list[tuple]:
    return [(c["source"]["topic"]["code"], c["summary"]) for c in cards]


def test_urn_uuid_references_resolve_like_ids(client):
    by_id = _without_pos(scenario(4).context["claim"])
    by_urn = _as_transaction(by_id)
    assert "Location/" not in json.dumps(by_urn["entry"][0]["resource"])  # only urn:uuid references
    expected = _cards(client, by_id)
    assert "modifier-26" in [code for code, _ in _shape(expected)]  # the hospital Location decides
    assert _shape(_cards(client, by_urn)) == _shape(expected)
    # without the fullUrls the Location cannot be found: no facility, so no modifier-26 card
    for entry in by_urn["entry"]:
        entry.pop("fullUrl")
    assert "modifier-26" not in [code for code, _ in _shape(_cards(client, by_urn))]


def test_bundle_aliases_keys():
    b = _as_transaction(scenario(4).context["claim"])
    b["entry"][2]["fullUrl"] = "http://fluoro-cds.example.org/fhir/Location/loc-1/_history/2"
    aliases = bundle_aliases(b)
    assert aliases["Location/loc-1"] is b["entry"][2]["resource"]  # no id: its URL names it
    assert not any(k.startswith("Encounter/") for k in bundle_aliases(scenario(4).context["claim"]))
    assert aliases[b["entry"][1]["fullUrl"]] is b["entry"][1]["resource"]
    assert bundle_aliases(b["entry"][0]["resource"]) == {}  # a lone Claim has none
    b["entry"][3]["fullUrl"] = 7
    with pytest.raises(InvalidResource) as err:
        bundle_aliases(b)
    assert err.value.path == "Bundle.entry[3].fullUrl"


def test_batch_resolves_urn_uuid_references_too():
    from hooks.config import resolve
    from nccidata.starter import starter
    from service.batch import review_record

    by_urn = _as_transaction(_without_pos(scenario(4).context["claim"]))
    record = review_record(by_urn, starter(), resolve(None))
    assert "modifier-26" in [f["code"] for f in record["findings"]]


def test_split_reads_the_aliases_in_its_pass():
    """claim-review reads the fullUrl aliases in split_claim_bundle's pass: the same aliases as
    bundle_aliases, and a bad fullUrl reported after the entries' and the types' errors."""
    from hooks.extract import split_claim_bundle

    b = _as_transaction(scenario(4).context["claim"])
    b["entry"][2]["fullUrl"] = " http://fluoro-cds.example.org/fhir/Location/loc-1/_history/2 "
    b["entry"][1]["fullUrl"] = " " + b["entry"][1]["fullUrl"]
    aliases: dict = {}
    claim, companions = split_claim_bundle(b, aliases=aliases)
    assert aliases == bundle_aliases(b) and "Location/loc-1" in aliases
    assert claim is b["entry"][0]["resource"] and len(companions) == len(b["entry"]) - 1
    b["entry"][1]["fullUrl"] = 7
    with pytest.raises(InvalidResource) as err:
        split_claim_bundle(b, aliases={})
    assert err.value.path == "Bundle.entry[1].fullUrl"
    split_claim_bundle(b)  # not asked for aliases: fullUrl not read
    b["entry"][3]["resource"]["resourceType"] = " "
    with pytest.raises(InvalidResource) as err:
        split_claim_bundle(b, aliases={})
    assert err.value.path == "Bundle.entry[3].resource.resourceType"  # the type error first


def test_resource_named_by_its_full_url_is_not_missing(client):
    """A companion without an id that the Bundle names through its fullUrl ("…/Location/x") is in
    hand: the Claim's reference to it finds it, and nothing is reported as not checked."""
    bundle = _without_pos(scenario(4).context["claim"])
    entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Location")
    rid = entry["resource"].pop("id")
    entry["fullUrl"] = f"http://fluoro-cds.example.org/fhir/Location/{rid}"
    assert f"Location/{rid}" in json.dumps(bundle["entry"][0]["resource"])  # the Claim names it so
    codes = [code for code, _ in _shape(_cards(client, bundle))]
    assert "modifier-26" in codes and "data-unavailable" not in codes

"""All acceptance scenarios (docs/scenarios.md) end to end over HTTP, with and without prefetch.

With prefetch: the Flask app's test client, the prefetch built from each service's own templates
(as a CDS client would). Without prefetch: the same app, data fetched from each of two real FHIR
servers on 127.0.0.1 holding the scenario resources (bearer token in fhirAuthorization): sekmet-fhir
and the stricter @medplum/fhir-router (typed references only); both must give the cards the
prefetch gives. Every response is
validated against service/schemas/response.json; every updated Claim with fhir.resources R4B; the
recommended suggestion's actions are applied to check what they leave billed.
"""
from __future__ import annotations

import orjson
import pytest
from fhir.resources.R4B.claim import Claim

from hooks.cards import TOPIC_SYSTEM
from hooks.services import BY_ID
from service.validation import validator
from tests.cards_support import (BYPASS_MODIFIERS, apply_actions, billed_codes, claim_items_with,
                                 full_prefetch, modifiers_of, strip_volatile)
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.medplum_server import medplum_server  # noqa: F401  (session fixture)
from tests.ncci_support import real_ncci_db  # noqa: F401  (session fixture)
from tests.scenario_fixtures import NUMBERS, Scenario, scenario

REVIEW_SCENARIOS = [n for n in NUMBERS if n not in (16, 17)]


def _post(client, s: Scenario, body: dict):
    return client.post(f"/cds-services/{s.service_id}", data=orjson.dumps(body),
                       content_type="application/json")


def _client_for(s: Scenario, client, real_ncci_client):
    if s.expected.needs_real_ncci:
        return real_ncci_client()
    return client


@pytest.fixture
def real_ncci_client(request):
    """A client of an app whose reference data holds the real July 2024 CMS tables."""
    def make():
        from tests.conftest import require_shared_ncci
        require_shared_ncci()
        return request.getfixturevalue("ncci_real_app").test_client()
    return make


@pytest.fixture(scope="session")
def ncci_real_app(real_ncci_db, tmp_path_factory):
    """The app served from a real SQLite store of the CMS July 2024 tables (nccidata importer)."""
    from service.app import create_app
    from service.settings import Settings
    tmp = tmp_path_factory.mktemp("ncci-real-app")
    app = create_app(Settings(db_path=str(real_ncci_db), state_db_path=str(tmp / "state.sqlite")))
    from nccidata.store import SqliteStore
    assert isinstance(app.config["FLUORO_REFERENCE"].current(), SqliteStore)  # not the starter fallback
    return app


def _initial_state(s: Scenario) -> dict[str, dict]:
    if s.draft_orders is not None:
        return {f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
                for e in s.draft_orders["entry"]}
    return {f"Claim/{s.claim['id']}": s.claim} if s.claim is not None else {}


def _recommended(card: dict) -> dict:
    rec = [sg for sg in card.get("suggestions", []) if sg.get("isRecommended")]
    assert len(rec) == 1, f"{card['source']['topic']['code']} card needs one recommended suggestion"
    return rec[0]


def check_answer(s: Scenario, resp) -> list[dict]:
    """Assert everything the scenario and the card contract require of a 200 answer."""
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = resp.get_json()
    errors = [e.message for e in validator("response").iter_errors(body)]
    assert not errors, errors
    cards = body["cards"]
    exp = s.expected
    topics = {c["source"]["topic"]["code"] for c in cards}
    uuids = [c["uuid"] for c in cards] + [sg["uuid"] for c in cards for sg in c.get("suggestions", [])]
    assert len(uuids) == len(set(uuids))
    for card in cards:
        assert card["source"]["topic"]["system"] == TOPIC_SYSTEM
        assert card["indicator"] in ("info", "warning")
        assert len(card["summary"]) <= 140
        if card.get("suggestions"):
            assert card["selectionBehavior"] == "at-most-one"
        for sg in card.get("suggestions", []):
            for action in sg["actions"]:
                if action["type"] == "update":
                    Claim.model_validate(action["resource"])
    assert exp.topics <= topics, (topics, exp.topics)
    if exp.any_topic:
        assert topics & exp.any_topic, (topics, exp.any_topic)
    assert not topics & exp.forbidden_topics, (topics, exp.forbidden_topics)
    if exp.card_count is not None:
        assert len(cards) == exp.card_count, [c["summary"] for c in cards]
    state = _initial_state(s)
    if exp.removal_topics:
        card = next(c for c in cards if c["source"]["topic"]["code"] in exp.removal_topics)
        after = apply_actions(state, _recommended(card)["actions"])
        assert "76000" not in billed_codes(after), card
        if exp.replace_with:
            assert exp.replace_with in billed_codes(after)
    if exp.add_modifier:
        card = next(c for c in cards if c["source"]["topic"]["code"] == exp.modifier_topic)
        after = apply_actions(state, _recommended(card)["actions"])
        [item] = claim_items_with(after, "76000")
        assert exp.add_modifier in modifiers_of(item)
    for card in cards:
        if card["source"]["topic"]["code"] == "mue-exceeded":  # units brought down to the MUE (3)
            after = apply_actions(state, _recommended(card)["actions"])
            assert sum(it["quantity"]["value"] for it in claim_items_with(after, "76000")) <= 3
    if exp.missing is not None:
        [card] = [c for c in cards if c["source"]["topic"]["code"] == "documentation-missing"]
        assert card["extension"]["fluoro-cds.missing-documentation"] == list(exp.missing)
    if exp.no_bypass_suggestion:
        before = {m for it in claim_items_with(state, "76000") for m in modifiers_of(it)}
        for card in cards:
            for sg in card.get("suggestions", []):
                after = apply_actions(state, sg["actions"])
                added = {m for it in claim_items_with(after, "76000") for m in modifiers_of(it)}
                assert not (added - before) & BYPASS_MODIFIERS, sg["label"]
    return cards


@pytest.mark.parametrize("n", REVIEW_SCENARIOS)
def test_scenario_with_prefetch(n, client, real_ncci_client):
    s = scenario(n)
    body = s.request(with_prefetch=True)
    body["prefetch"] = full_prefetch(s, BY_ID[s.service_id].prefetch)
    check_answer(s, _post(_client_for(s, client, real_ncci_client), s, body))


FHIR_SERVERS = ["sekmet", "medplum"]
_loaded: dict[str, object] = {}


@pytest.fixture(params=FHIR_SERVERS)
def loaded_fhir(request):
    """Each real FHIR server in turn, holding the resources of every scenario (ids are
    sNN-prefixed); loaded once per server and test session."""
    server = request.getfixturevalue("fhir_server" if request.param == "sekmet" else "medplum_server")
    if _loaded.get(request.param) is not server:
        for n in NUMBERS:
            if n == 17:
                continue  # its Claim is deliberately invalid
            server.load(scenario(n).resources)
        _loaded[request.param] = server
    return server


def _authorization(server) -> dict:
    return {"access_token": server.token, "token_type": "Bearer", "expires_in": 300,
            "scope": "user/*.read", "subject": "fluoro-cds-tests"}


@pytest.mark.parametrize("n", REVIEW_SCENARIOS)
def test_scenario_without_prefetch(n, client, real_ncci_client, loaded_fhir):
    s = scenario(n)
    c = _client_for(s, client, real_ncci_client)
    body = s.request(with_prefetch=False, fhir_server=loaded_fhir.base_url)
    body["fhirAuthorization"] = _authorization(loaded_fhir)
    cards = check_answer(s, _post(c, s, body))
    # the same answer as with prefetch (apart from uuids and server metadata)
    with_prefetch = s.request(with_prefetch=True)
    with_prefetch["prefetch"] = full_prefetch(s, BY_ID[s.service_id].prefetch)
    other = _post(c, s, with_prefetch).get_json()["cards"]
    assert strip_volatile(cards) == strip_volatile(other)


def test_scenario_16_unreachable_fhir_server_is_412_json(client):
    s = scenario(16)
    resp = _post(client, s, s.request(with_prefetch=False))
    assert resp.status_code == 412
    body = resp.get_json()
    assert body and "cards" not in body and body["error"]


def test_scenario_16_claim_referencing_unfetchable_encounter_is_412(client):
    s = scenario(1)
    body = s.request(with_prefetch=False, fhir_server="http://127.0.0.1:9/fhir")
    resp = _post(client, s, body)
    assert resp.status_code == 412, resp.get_data(as_text=True)
    assert "cards" not in resp.get_json()


def test_claim_bundle_is_enough_without_fhir_server(client):
    """A Claim Bundle carrying its companions needs no fhirServer and no prefetch."""
    s = scenario(4)
    body = s.request(with_prefetch=False)
    body["context"] = s.context  # the Bundle form
    check_answer(s, _post(client, s, body))


def test_scenario_17_body_not_json_is_400_json(client):
    s = scenario(17)
    resp = client.post(f"/cds-services/{s.service_id}", data=s.raw_body,
                       content_type="application/json")
    assert resp.status_code == 400
    assert resp.get_json()["error"]


@pytest.mark.parametrize("with_bundle", [True, False])
def test_scenario_17_invalid_claim_date_is_400_naming_the_path(client, with_bundle):
    s = scenario(17)
    body = s.request(with_prefetch=with_bundle)
    resp = _post(client, s, body)
    assert resp.status_code == 400, resp.get_data(as_text=True)
    err = resp.get_json()
    assert s.expected.error_path in err["issue"][0].get("expression", []) or \
        s.expected.error_path in err["error"], err


@pytest.mark.parametrize("n", [12, 13])
def test_no_prefetch_and_unreachable_fhir_server_is_412_for_every_hook(client, n):
    s = scenario(n)
    resp = _post(client, s, s.request(with_prefetch=False, fhir_server="http://127.0.0.1:9/fhir"))
    assert resp.status_code == 412, resp.get_data(as_text=True)
    assert resp.get_json()["error"] and "cards" not in resp.get_json()

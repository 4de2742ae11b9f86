"""Sequential FHIR round trips without prefetch (issue 11 section 3, "a review without prefetch
costs about as many round trips as its dependency depth"), for claim-review and order-sign, against
a real FHIR server (sekmet-fhir) behind a proxy that adds 50 ms to every answer and records when
each request started and ended (the discharge review's test is in tests/test_fhir_strict.py).
Each review must also give the cards it gives with everything in the request."""
from __future__ import annotations

import orjson
import pytest

from tests.cards_support import strip_volatile
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.scenario_fixtures import scenario
from tests.slow_fhir_proxy import SlowFhirProxy

from .service_support import make_app

CLAIM = scenario(4)  # claim-review: 20650 + 76000 without 26 in a hospital, documentation complete
ORDER = scenario(12)  # order-sign: draft 64483 and 76000 for an encounter with a Location


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return make_app(tmp_path_factory.mktemp("round-trips")).test_client()


@pytest.fixture(scope="module")
def sekmet(fhir_server):  # noqa: F811
    fhir_server.load(CLAIM.resources)
    fhir_server.load(ORDER.resources)
    return fhir_server


def _cards(client, s, body) -> list[dict]:
    resp = client.post(f"/cds-services/{s.service_id}", data=orjson.dumps(body),
                       content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["cards"]


def _through(proxy, s) -> dict:
    body = s.request(with_prefetch=False, fhir_server=proxy.base_url)
    body["fhirAuthorization"] = {"access_token": proxy.token, "token_type": "Bearer"}
    return body


def test_claim_review_of_a_claim_alone_costs_its_dependency_depth_in_round_trips(client, sekmet):
    """The Claim's references (Encounter, Location, Procedures, Observations, DiagnosticReport)
    and the encounter's searches at once, then the second-hop reads the first did not give:
    two round trips. Those first-level requests are 11, over the 8 a hook call has in flight
    (FhirClientSettings.max_parallel), so a slow answer may push the last of them into a wave of
    their own: three at most (fetched one after another they would be 11)."""
    expected = strip_volatile(_cards(client, CLAIM, CLAIM.request(with_prefetch=True)))
    assert {c["source"]["topic"]["code"] for c in expected} == {"modifier-26"}
    with SlowFhirProxy(sekmet.base_url, delay=0.05, token=sekmet.token) as proxy:
        cards = _cards(client, CLAIM, _through(proxy, CLAIM))
        made, sequential = proxy.round_trips()
    assert strip_volatile(cards) == expected
    refs = len(CLAIM.claim.get("procedure", ())) + len(CLAIM.claim.get("supportingInfo", ()))
    assert made >= refs + 2  # the references, the Encounter and its searches were all fetched
    assert sequential <= 3, (made, sequential)


def test_order_sign_without_prefetch_costs_two_round_trips_at_most(client, sekmet):
    """The Encounter, its _include of Locations and the encounter's Procedures at once, then the
    Locations the _include did not give."""
    expected = strip_volatile(_cards(client, ORDER, ORDER.request(with_prefetch=True)))
    assert expected
    with SlowFhirProxy(sekmet.base_url, delay=0.05, token=sekmet.token) as proxy:
        cards = _cards(client, ORDER, _through(proxy, ORDER))
        made, sequential = proxy.round_trips()
    assert strip_volatile(cards) == expected
    assert made >= 3
    assert sequential <= 2, (made, sequential)

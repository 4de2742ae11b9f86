"""CDS Hooks 2.0 details (issue 11 section 6), each over HTTP: card summaries under 140
characters cut at a word boundary, links not auto-launchable, CORS preflights allowing the
headers asked for (or a configured list), the JWT algorithms a deployment allows, feedback JWTs
whose ``aud`` is the service's URL, ``nbf`` reported as such, null prefetch values taken at their
word (no server call) and a 412 that says what really happened, one naming (the custom hook and
the extensions under org.fluoro-cds, the older names accepted), no prefetch template that nothing
reads, a replacement order that keeps what the original said."""
from __future__ import annotations

import json
import time

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from hooks.findings import SUMMARY_MAX, clip_summary

from tests.fhir_server import fhir_server  # noqa: F401
from tests.scenario_fixtures import scenario

from .service_support import (CPT, KeyPair, StaticJsonServer, TokenFactory, with_alg, assert_json_error, claim,
                              claim_review_request, discharge_request, ec_key, full_prefetch,
                              make_app, rsa_key, RecordingListener)

ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


@pytest.fixture()
def client(tmp_path):
    return make_app(tmp_path).test_client()


def _post(client, service_id: str, body: dict, **kw):
    return client.post(f"/cds-services/{service_id}", data=orjson.dumps(body),
                       content_type="application/json", **kw)


# --- card summaries ------------------------------------------------------------------------------

def test_clip_summary_cuts_at_a_word_boundary_under_140():
    assert clip_summary("  Remove\n76000  now ") == "Remove 76000 now"
    exactly_140 = ("word " * 28)[:-1] + "s"  # 140 characters, the last word ends at 140
    assert len(exactly_140) == 140
    out = clip_summary(exactly_140)
    assert len(out) < 140 and out.endswith("\u2026")
    assert exactly_140.startswith(out[:-1]) and exactly_140[len(out) - 1] == " "
    assert clip_summary("x" * 139) == "x" * 139  # 139 is under 140: kept whole
    one_word = clip_summary("y" * 300)  # no boundary at all: cut where it must be
    assert len(one_word) == SUMMARY_MAX and one_word.endswith("\u2026")
    assert not clip_summary("a" * 100 + ", (" + "b" * 60).rstrip("\u2026").endswith(("(", ","))


def _long_setting_claim_bundle() -> dict:
    """A professional 76000 without modifier 26 for an inpatient whose Claim names three hospital
    Locations with long names: the modifier-26 summary lists every reason and runs past 140."""
    names = ["Saint Elsewhere General Hospital Interventional Radiology",
             "Saint Elsewhere General Hospital Main Building",
             "Saint Elsewhere General Hospital Outpatient Imaging Pavilion"]
    locations = [{"resourceType": "Location", "id": f"loc-{i}", "name": n,
                  "type": [{"coding": [{"system": ROLE, "code": "HOSP"}]}]}
                 for i, n in enumerate(names)]
    encounter = {"resourceType": "Encounter", "id": "enc-1", "status": "finished",
                 "class": {"system": ACT, "code": "IMP"}, "subject": {"reference": "Patient/pat-1"},
                 "location": [{"location": {"reference": "Location/loc-2"}}]}
    c = claim()
    c["facility"] = {"reference": "Location/loc-0"}
    c["item"][0].update(encounter=[{"reference": "Encounter/enc-1"}],
                        locationReference={"reference": "Location/loc-1"})
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": r} for r in [c, encounter, *locations]]}


def test_every_card_summary_over_http_is_under_140_and_cut_at_a_word(client):
    body = claim_review_request()
    body["context"]["claim"] = _long_setting_claim_bundle()
    resp = _post(client, "fluoroscopy-claim-review", body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    cards = resp.get_json()["cards"]
    [m26] = [c for c in cards if c["source"]["topic"]["code"] == "modifier-26"]
    summary = m26["summary"]
    assert len(summary) < 140 and summary.endswith("\u2026"), summary
    last_word = summary[:-1].split()[-1]
    assert f"{last_word} " in m26["detail"] or f"{last_word};" in m26["detail"]  # a whole word
    for card in cards:
        assert len(card["summary"]) < 140


def test_the_data_unavailable_card_uses_the_same_helper(client):
    body = claim_review_request()
    c = claim()
    c["item"][0]["encounter"] = [{"reference": "Encounter/enc-1"}]
    c["supportingInfo"] = [{"sequence": i + 1, "category": {"text": "x"},
                            "valueReference": {"reference": f"Observation/o{i}"}} for i in range(3)]
    enc = {"resourceType": "Encounter", "id": "enc-1", "status": "finished",
           "class": {"system": ACT, "code": "AMB"}}
    body["context"]["claim"] = {"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": c}, {"resource": enc}]}
    resp = _post(client, "fluoroscopy-claim-review", body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    [gap] = [c for c in resp.get_json()["cards"]
             if c["source"]["topic"]["code"] == "data-unavailable"]
    assert gap["summary"] == clip_summary(gap["summary"]) and len(gap["summary"]) < 140


# --- links -----------------------------------------------------------------------------------

def test_links_are_not_auto_launchable(client):
    s = scenario(7)  # documentation missing
    body = s.request()
    body["extension"] = {"fluoro-cds.configuration": {"documentation-url": "https://ehr.example.org/doc"}}
    resp = _post(client, s.service_id, body)
    links = [link for c in resp.get_json()["cards"] for link in c.get("links", ())]
    assert links, "the documentation-missing card links to the documentation app"
    assert all(link["autoLaunchable"] is False for link in links)


# --- CORS preflight --------------------------------------------------------------------------

def _preflight(client, asked: str | None):
    headers = {"Origin": "https://sandbox.example.org", "Access-Control-Request-Method": "POST"}
    if asked is not None:
        headers["Access-Control-Request-Headers"] = asked
    return client.open("/cds-services/fluoroscopy-claim-review", method="OPTIONS", headers=headers)


def _allowed(resp) -> list[str]:
    return [h.strip() for h in resp.headers["Access-Control-Allow-Headers"].split(",")]


def test_preflight_allows_the_headers_the_client_asks_for(client):
    resp = _preflight(client, "authorization,content-type,x-ehr-trace, prefer")
    assert resp.status_code == 204
    assert _allowed(resp) == ["authorization", "content-type", "x-ehr-trace", "prefer"]
    assert "Access-Control-Request-Headers" in resp.headers.get("Vary", "")
    assert _allowed(_preflight(client, None)) == ["Authorization", "Content-Type"]
    # a value that is no list of header names is never echoed
    assert _allowed(_preflight(client, "x-a, <script>")) == ["Authorization", "Content-Type"]
    assert _allowed(_preflight(client, "x-" + "a" * 3000)) == ["Authorization", "Content-Type"]


def test_preflight_answers_a_configured_header_list(tmp_path):
    client = make_app(tmp_path, cors_allow_headers=("Authorization", "Content-Type", "X-Tenant")
                      ).test_client()
    resp = _preflight(client, "x-ehr-trace")
    assert _allowed(resp) == ["Authorization", "Content-Type", "X-Tenant"]
    assert "Access-Control-Request-Headers" not in resp.headers.get("Vary", "")


def test_the_cors_header_list_setting_is_validated_at_start():
    from service.settings import Settings, SettingsError

    ok = Settings.from_env({"FLUORO_CDS_CORS_ALLOW_HEADERS": "Authorization, X-Tenant"})
    assert ok.cors_allow_headers == ("Authorization", "X-Tenant")
    with pytest.raises(SettingsError, match="FLUORO_CDS_CORS_ALLOW_HEADERS"):
        Settings.from_env({"FLUORO_CDS_CORS_ALLOW_HEADERS": "Authorization, X Tenant"})


# --- JWT: algorithms, feedback aud, nbf -----------------------------------------------------------

ISSUER = "https://ehr.example.org"
BASE = "https://cds.example.org"
SERVICE_URL = f"{BASE}/cds-services/fluoroscopy-claim-review"


def _es256_key(kid: str) -> KeyPair:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg="ES256")
    return KeyPair(kid, "ES256", private, jwk)


def _rs256_key(kid: str) -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg="RS256")
    return KeyPair(kid, "RS256", private, jwk)


@pytest.fixture(scope="module")
def jwt_keys():
    return {k.kid: k for k in (ec_key("es384"), rsa_key("rs384"), _es256_key("es256"),
                               _rs256_key("rs256"))}


@pytest.fixture(scope="module")
def jwks(jwt_keys):
    server = StaticJsonServer({"/jwks.json": {"keys": [k.public_jwk for k in jwt_keys.values()]}})
    yield server
    server.close()


@pytest.fixture
def tokens(jwt_keys):
    return TokenFactory(ISSUER, jwt_keys, "es384")


def _jwt_client(tmp_path, jwks, **settings):
    return make_app(tmp_path, auth="jwt", base_url=BASE,
                    trusted_issuers={ISSUER: jwks.url("/jwks.json")}, **settings).test_client()


def _discovery(client, token):
    return client.get("/cds-services", headers={"Authorization": f"Bearer {token}"})


def test_es384_and_rs384_by_default_es256_and_rs256_only_when_allowed(tmp_path, jwks, tokens):
    aud = f"{BASE}/cds-services"
    default = _jwt_client(tmp_path / "a", jwks)
    for kid in ("es384", "rs384"):
        assert _discovery(default, tokens.mint(aud, kid=kid)).status_code == 200
    for kid in ("es256", "rs256"):
        err = assert_json_error(_discovery(default, tokens.mint(aud, kid=kid)), 401)
        assert "alg must be one of ES384, RS384" in err["error"]
    allowed = _jwt_client(tmp_path / "b", jwks, jwt_algorithms=("ES384", "RS384", "ES256", "RS256"))
    for kid in ("es384", "rs384", "es256", "rs256"):
        assert _discovery(allowed, tokens.mint(aud, kid=kid)).status_code == 200, kid
    # an ES256 header over the P-384 key is refused even when ES256 is allowed
    err = assert_json_error(_discovery(allowed, with_alg(tokens.mint(aud, kid="es384"), "ES256")), 401)
    assert "does not match the key" in err["error"]


def test_the_jwt_algorithms_setting_is_validated_at_start():
    from service.settings import Settings, SettingsError

    assert Settings.from_env({}).jwt_algorithms == ("ES384", "RS384")
    assert Settings.from_env({"FLUORO_CDS_JWT_ALGORITHMS": "ES384, ES256"}).jwt_algorithms == \
        ("ES384", "ES256")
    for bad in ("HS256", "none", "ES384,PS256"):
        with pytest.raises(SettingsError, match="FLUORO_CDS_JWT_ALGORITHMS"):
            Settings.from_env({"FLUORO_CDS_JWT_ALGORITHMS": bad})


def _feedback(client, token):
    return client.post("/cds-services/fluoroscopy-claim-review/feedback",
                       json={"feedback": [{"card": "c1", "outcome": "overridden",
                                           "outcomeTimestamp": "2024-07-15T10:00:00Z"}]},
                       headers={"Authorization": f"Bearer {token}"})


def test_feedback_accepts_the_service_url_as_aud(tmp_path, jwks, tokens):
    client = _jwt_client(tmp_path, jwks)
    assert _feedback(client, tokens.mint(f"{SERVICE_URL}/feedback")).status_code == 200
    assert _feedback(client, tokens.mint(SERVICE_URL)).status_code == 200
    other = f"{BASE}/cds-services/fluoroscopy-order-review"
    assert "aud" in assert_json_error(_feedback(client, tokens.mint(other)), 401)["error"]
    assert_json_error(_feedback(client, tokens.mint(f"{BASE}/cds-services")), 401)
    # the service itself still wants its own URL, not the feedback one
    resp = client.post("/cds-services/fluoroscopy-claim-review", json=claim_review_request(),
                       headers={"Authorization": f"Bearer {tokens.mint(SERVICE_URL + '/feedback')}"})
    assert_json_error(resp, 401)


def test_nbf_in_the_future_is_reported_as_nbf(tmp_path, jwks, tokens):
    client = _jwt_client(tmp_path, jwks)
    aud = f"{BASE}/cds-services"
    now = int(time.time())
    err = assert_json_error(_discovery(client, tokens.mint(aud, nbf=now + 600)), 401)
    assert "nbf" in err["error"] and "iat" not in err["error"]
    assert "nbf" in assert_json_error(_discovery(client, tokens.mint(aud, nbf="soon")), 401)["error"]
    assert _discovery(client, tokens.mint(aud, nbf=now - 5)).status_code == 200
    assert _discovery(client, tokens.mint(aud, nbf=now + 10)).status_code == 200  # within leeway
    err = assert_json_error(_discovery(client, tokens.mint(aud, iat=now + 600, exp=now + 900)), 401)
    assert "iat" in err["error"]


# --- null prefetch: taken at its word; the 412 says what happened -------------------------------

def test_a_null_prefetch_is_taken_at_its_word_with_or_without_a_server(client):
    listener = RecordingListener()
    try:
        body = discharge_request(fhirServer=listener.base_url,
                                 fhirAuthorization={"access_token": "t"})
        body["prefetch"] = full_prefetch("fluoroscopy-discharge-review", body["context"])
        body["prefetch"]["encounter"] = None  # and so the _id search holds none either
        body["prefetch"]["encounterLocations"] = {"resourceType": "Bundle", "type": "searchset"}
        err = assert_json_error(_post(client, "fluoroscopy-discharge-review", body), 412)
        assert "prefetch 'encounter' is null" in err["error"] and "Encounter/enc-1" in err["error"]
        assert "not found on the FHIR server" not in err["error"]
        del body["fhirServer"], body["fhirAuthorization"]
        err2 = assert_json_error(_post(client, "fluoroscopy-discharge-review", body), 412)
        assert err2["error"] == err["error"]  # the same reading without a server
        # null procedures with a server: reviewed with none, the server never asked
        s = scenario(12)
        order = s.request(with_prefetch=True)
        order["fhirServer"], order["fhirAuthorization"] = listener.base_url, {"access_token": "t"}
        order["prefetch"]["procedures"] = None
        assert _post(client, s.service_id, order).status_code == 200
        assert listener.connections == 0
    finally:
        listener.close()


def test_a_412_for_an_encounter_the_server_does_not_have_says_so(client, fhir_server):
    body = discharge_request(fhirServer=fhir_server.base_url,
                             fhirAuthorization={"access_token": fhir_server.token})
    body["context"]["encounterId"] = "no-such-encounter"
    err = assert_json_error(_post(client, "fluoroscopy-discharge-review", body), 412)
    assert "Encounter/no-such-encounter was not found on the FHIR server" in err["error"]
    assert "null" not in err["error"]


# --- names ---------------------------------------------------------------------------------------

def test_the_hook_and_extension_names_follow_the_project_domain(client):
    from hooks.cards import TOPIC_SYSTEM

    domain = TOPIC_SYSTEM.split("/")[2]  # the project's URIs: https://fluoro-cds.org/...
    prefix = ".".join(reversed(domain.split("."))) + "."
    assert prefix == "org.fluoro-cds."
    services = {e["id"]: e for e in client.get("/cds-services").get_json()["services"]}
    assert services["fluoroscopy-claim-review"]["hook"] == prefix + "claim-review"
    for entry in services.values():
        ours = [k for k in entry["extension"] if not k.startswith("davinci-crd.")]
        assert prefix + "configuration-options" in ours
        # the older names are still sent, for clients written against them
        assert entry["extension"]["fluoro-cds.configuration-options"] == \
            entry["extension"][prefix + "configuration-options"]


def _claim_cards(client, hook: str, extension: dict | None = None):
    s = scenario(7)  # a documentation-missing claim
    body = s.request()
    body["hook"] = hook
    if extension is not None:
        body["extension"] = extension
    resp = _post(client, s.service_id, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()["cards"]


def test_the_older_hook_and_extension_names_are_still_accepted(client):
    new = _claim_cards(client, "org.fluoro-cds.claim-review")
    old = _claim_cards(client, "org.fluorocds.claim-review")
    assert [c["summary"] for c in new] == [c["summary"] for c in old] and new
    err = assert_json_error(_post(client, "fluoroscopy-claim-review",
                                  dict(scenario(7).request(), hook="org.example.claim-review")), 400)
    assert "org.fluoro-cds.claim-review" in err["error"]
    for key in ("org.fluoro-cds.configuration", "fluoro-cds.configuration"):
        off = _claim_cards(client, "org.fluoro-cds.claim-review", {key: {"documentation-missing": False}})
        assert "documentation-missing" not in {c["source"]["topic"]["code"] for c in off}, key
        bad = dict(scenario(7).request(), extension={key: {"no-such-option": 1}})
        assert "no-such-option" in assert_json_error(_post(client, "fluoroscopy-claim-review", bad), 400)["error"]
    [doc] = [c for c in new if c["source"]["topic"]["code"] == "documentation-missing"]
    assert doc["extension"]["org.fluoro-cds.missing-documentation"] == \
        doc["extension"]["fluoro-cds.missing-documentation"] == ["fluoroscopy-time", "radiation-dose"]


# --- prefetch templates: each one is read -----------------------------------------------------------

def test_every_declared_prefetch_template_is_read(client, monkeypatch):
    from hooks.services import SERVICES
    from service.fhir_access import FhirAccess

    read: set[str] = set()
    original = FhirAccess.prefetched

    def recording(self, key):
        read.add(key)
        return original(self, key)

    monkeypatch.setattr(FhirAccess, "prefetched", recording)
    for n in (7, 12, 13):  # a claim review, an order-sign, a discharge
        s = scenario(n)
        body = s.request()
        body["prefetch"] = full_prefetch(s.service_id, body["context"])
        assert _post(client, s.service_id, body).status_code == 200
    declared = {k for svc in SERVICES for k in svc.prefetch}
    assert declared and declared <= read, declared - read
    services = {e["id"]: e for e in client.get("/cds-services").get_json()["services"]}
    assert "prefetch" not in services["fluoroscopy-claim-review"]  # it declares none


# --- a replacement order keeps what the original said ------------------------------------------------

LOCAL = "urn:oid:1.2.840.114350.1.13.0.1.7.2.696580"  # an EHR's orderable code system


def test_a_replacement_order_keeps_the_originals_elements_and_the_ehrs_codings(client):
    s = scenario(12)
    body = s.request(with_prefetch=True)
    [first, fluoro] = [e["resource"] for e in body["context"]["draftOrders"]["entry"]]
    first["code"] = {"coding": [{"system": CPT, "code": "20610"}]}
    first["id"] = "s12-sr-20610"
    fluoro["code"] = {"text": "FL GUIDE INJECTION", "coding": [
        {"system": LOCAL, "code": "IMG1234", "display": "FL fluoroscopy, up to 1 hour"},
        {"system": "http://snomed.info/sct", "code": "44491008", "display": "Fluoroscopy"},
        {"system": CPT, "code": "76000"}]}
    fluoro["reasonReference"] = [{"reference": "Condition/c1"}]
    fluoro["note"] = [{"text": "left knee"}]
    fluoro["identifier"] = [{"system": "urn:ehr:orders", "value": "ord-1"}]
    resp = _post(client, s.service_id, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    [card] = [c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == "use-guidance-code"]
    [rec] = [sg for sg in card["suggestions"] if sg["isRecommended"]]
    [create] = [a for a in rec["actions"] if a["type"] == "create"]
    new = create["resource"]
    for element in ("subject", "encounter", "requester", "reasonCode", "reasonReference",
                    "bodySite", "occurrenceDateTime", "note", "status", "intent"):
        assert new[element] == fluoro[element], element
    assert [(c["system"], c["code"]) for c in new["code"]["coding"]] == [
        (CPT, "77002"), (LOCAL, "IMG1234"), ("http://snomed.info/sct", "44491008")]
    assert "text" not in new["code"] and "identifier" not in new and new["id"] != fluoro["id"]

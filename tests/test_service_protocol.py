"""CDS Hooks 2.0 protocol: schemas, errors, CORS, feedback persistence, audit, health."""
from __future__ import annotations

import os
import sqlite3
import uuid

import pytest

from hooks.services.base import CdsService
from service.validation import SchemaViolation, check, validator
from tests.service_support import (assert_json_error, assert_valid_response, claim,
                                   claim_review_request, discharge_request, full_prefetch, make_app,
                                   order_sign_request)

SERVICES = ("fluoroscopy-order-review", "fluoroscopy-discharge-review", "fluoroscopy-claim-review")


@pytest.fixture
def client(tmp_path):
    return make_app(tmp_path).test_client()


def test_discovery_matches_the_discovery_schema(client):
    body = client.get("/cds-services").get_json()
    check(validator("discovery"), body, "discovery")
    assert [s["id"] for s in body["services"]] == list(SERVICES)


@pytest.mark.parametrize("service_id,build", [
    ("fluoroscopy-order-review", order_sign_request),
    ("fluoroscopy-discharge-review", discharge_request),
    ("fluoroscopy-claim-review", claim_review_request),
])
def test_valid_requests_are_answered_with_schema_valid_responses(client, service_id, build):
    body = build()
    body["prefetch"] = full_prefetch(service_id, body["context"])
    resp = client.post(f"/cds-services/{service_id}", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert_valid_response(resp.get_json())


def test_order_sign_without_encounter_needs_no_prefetch(client):
    body = order_sign_request()
    del body["context"]["encounterId"]  # the encounter templates do not apply
    resp = client.post("/cds-services/fluoroscopy-order-review", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert_valid_response(resp.get_json())


def test_claim_may_be_a_bundle_whose_first_entry_is_the_claim(client):
    body = claim_review_request()
    body["context"]["claim"] = {"resourceType": "Bundle", "type": "collection",
                                "entry": [{"resource": claim()},
                                          {"resource": {"resourceType": "Encounter", "id": "e"}}]}
    assert client.post("/cds-services/fluoroscopy-claim-review", json=body).status_code == 200


@pytest.mark.parametrize("service_id,build,mutate,path", [
    ("fluoroscopy-order-review", order_sign_request,
     lambda b: b["context"].pop("draftOrders"), "$.context"),
    ("fluoroscopy-order-review", order_sign_request,
     lambda b: b["context"].update(patientId="a b&c=d"), "$.context.patientId"),
    ("fluoroscopy-order-review", order_sign_request,
     lambda b: b["context"].update(draftOrders={"resourceType": "Patient"}),
     "$.context.draftOrders.resourceType"),
    ("fluoroscopy-discharge-review", discharge_request,
     lambda b: b["context"].pop("encounterId"), "$.context"),
    ("fluoroscopy-discharge-review", discharge_request,
     lambda b: b["context"].update(userId=42), "$.context.userId"),
    ("fluoroscopy-claim-review", claim_review_request,
     lambda b: b["context"].update(claim={"resourceType": "Patient", "id": "x"}),
     "$.context.claim.resourceType"),
    ("fluoroscopy-claim-review", claim_review_request,
     lambda b: b["context"].update(claim={"resourceType": "Bundle", "entry": [
         {"resource": {"resourceType": "Encounter"}}, {"resource": claim()}]}),
     "$.context.claim.entry[0].resource.resourceType"),
    ("fluoroscopy-claim-review", claim_review_request,
     lambda b: b.pop("hookInstance"), "$"),
    ("fluoroscopy-claim-review", claim_review_request,
     lambda b: b.update(fhirAuthorization={"access_token": "t", "token_type": "Bearer",
                                           "expires_in": 300, "scope": "user/*.read",
                                           "subject": "cds"}), "$"),
    ("fluoroscopy-claim-review", claim_review_request,
     lambda b: b.update(fhirServer="file:///etc/passwd"), "$.fhirServer"),
    ("fluoroscopy-claim-review", claim_review_request,
     lambda b: b.update(fhirServer="http://127.0.0.1:9/fhir",
                        fhirAuthorization={"access_token": "t", "token_type": "MAC",
                                           "expires_in": 300, "scope": "s", "subject": "c"}),
     "$.fhirAuthorization.token_type"),
    ("fluoroscopy-discharge-review", discharge_request,
     lambda b: b.update(prefetch={"encounter": {"id": "no-type"}}), "$.prefetch.encounter"),
])
def test_invalid_requests_are_400_naming_the_json_path(client, service_id, build, mutate, path):
    body = build()
    mutate(body)
    err = assert_json_error(client.post(f"/cds-services/{service_id}", json=body), 400)
    assert err["issue"][0]["expression"] == [path]
    assert path in err["error"]


def test_error_messages_do_not_echo_request_values(client):
    body = claim_review_request()
    body["context"]["patientId"] = "SECRET NAME DOE"
    err = assert_json_error(client.post("/cds-services/fluoroscopy-claim-review", json=body), 400)
    assert "SECRET" not in err["error"]


def test_body_that_is_not_an_object_is_400(client):
    assert_json_error(client.post("/cds-services/fluoroscopy-claim-review", json=[1, 2]), 400)


def test_wrong_hook_is_400_and_unknown_service_is_404(client):
    err = assert_json_error(client.post("/cds-services/fluoroscopy-claim-review",
                                        json=order_sign_request()), 400)
    assert err["issue"][0]["expression"] == ["$.hook"]
    assert_json_error(client.post("/cds-services/nope", json=order_sign_request()), 404)
    assert_json_error(client.post("/cds-services/nope/feedback", json={"feedback": []}), 404)
    assert_json_error(client.get("/cds-services/fluoroscopy-claim-review"), 405)


def test_unknown_configuration_option_is_400(client):
    body = claim_review_request(extension={"fluoro-cds.configuration": {"no-such-option": True}})
    err = assert_json_error(client.post("/cds-services/fluoroscopy-claim-review", json=body), 400)
    assert "no-such-option" in err["error"]


# --- response schema ---------------------------------------------------------------------------

def _card(**extra) -> dict:
    card = {"uuid": str(uuid.uuid4()), "summary": "Remove 76000: bundled into 29881",
            "indicator": "warning", "detail": "NCCI PTP edit 29881/76000, modifier indicator 0.",
            "source": {"label": "fluoro-cds", "url": "https://example.org/fluoro-cds",
                       "topic": {"system": "https://example.org/finding", "code": "ptp-bundled"}},
            "suggestions": [{"label": "Remove 76000", "uuid": str(uuid.uuid4()), "isRecommended": True,
                             "actions": [{"type": "delete", "description": "Remove the order",
                                          "resourceId": "ServiceRequest/sr-1"}]}],
            "selectionBehavior": "at-most-one",
            "overrideReasons": [{"system": "https://example.org/override", "code": "distinct",
                                 "display": "Distinct procedure"}],
            "links": [{"label": "Docs app", "url": "https://example.org/launch", "type": "smart",
                       "appContext": "{\"x\":1}"}]}
    card.update(extra)
    return card


def test_response_schema_accepts_a_full_card_and_system_actions():
    assert_valid_response({"cards": [_card()], "systemActions": [
        {"type": "update", "description": "Correct the claim", "resource": claim()}]})


@pytest.mark.parametrize("mutate", [
    lambda c: c.update(summary="x" * 141),
    lambda c: c.update(indicator="hard-stop"),
    lambda c: c.pop("selectionBehavior"),
    lambda c: c.pop("uuid"),
    lambda c: c["source"].pop("label"),
    lambda c: c["links"][0].update(type="absolute"),  # appContext only for smart links
    lambda c: c["suggestions"][0]["actions"][0].update(type="create"),  # create needs resource
    lambda c: c["overrideReasons"][0].pop("display"),
    lambda c: c["source"]["topic"].pop("system"),
])
def test_response_schema_rejects_spec_violations(mutate):
    card = _card()
    mutate(card)
    with pytest.raises(SchemaViolation):
        assert_valid_response({"cards": [card]})


# --- CORS ----------------------------------------------------------------------------------------

def test_cors_preflight_is_answered_without_auth(tmp_path):
    client = make_app(tmp_path, auth="jwt", trusted_issuers={"https://ehr": "http://127.0.0.1:9/j"}
                      ).test_client()
    resp = client.open("/cds-services/fluoroscopy-claim-review", method="OPTIONS", headers={
        "Origin": "https://sandbox.example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert resp.status_code in (200, 204)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed
    assert {"GET", "POST", "OPTIONS"} <= {m.strip() for m in
                                          resp.headers["Access-Control-Allow-Methods"].split(",")}
    # the actual call without a JWT is refused, but still carries CORS headers
    resp = client.get("/cds-services", headers={"Origin": "https://sandbox.example.org"})
    assert resp.status_code == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_answers_are_not_cached(client):
    for resp in (client.get("/cds-services"),
                 client.post("/cds-services/fluoroscopy-claim-review", json=claim_review_request()),
                 client.post("/cds-services/nope", json={})):
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_cors_origins_can_be_restricted(tmp_path):
    client = make_app(tmp_path, cors_origins=("https://ehr.example.org",)).test_client()
    ok = client.get("/cds-services", headers={"Origin": "https://ehr.example.org"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert "Origin" in ok.headers.get("Vary", "")
    other = client.open("/cds-services", method="OPTIONS", headers={
        "Origin": "https://evil.example.com", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in other.headers


# --- feedback and audit --------------------------------------------------------------------------

def test_feedback_is_stored_and_survives_a_restart(tmp_path):
    card, suggestion = str(uuid.uuid4()), str(uuid.uuid4())
    client = make_app(tmp_path).test_client()
    resp = client.post("/cds-services/fluoroscopy-claim-review/feedback", json={"feedback": [
        {"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}],
         "outcomeTimestamp": "2024-07-15T10:00:00Z"},
        {"card": card, "outcome": "overridden", "outcomeTimestamp": "2024-07-15T10:01:00Z",
         "overrideReason": {"reason": {"system": "https://example.org/override", "code": "distinct"},
                            "userComment": "separate session"}}]})
    assert resp.status_code == 200
    assert resp.get_json() == {"stored": 2}

    restarted = make_app(tmp_path)  # a NEW app on the same state DB file
    rows = restarted.config["FLUORO_STATE"].feedback("fluoroscopy-claim-review")
    assert [(r["card_uuid"], r["outcome"]) for r in rows] == [(card, "accepted"), (card, "overridden")]
    assert rows[0]["accepted_suggestions"] == [suggestion]
    assert rows[1]["override_reason_code"] == "distinct"
    assert rows[1]["user_comment"] == "separate session"
    assert rows[0]["outcome_timestamp"] == "2024-07-15T10:00:00Z" and rows[0]["received_at"]


@pytest.mark.parametrize("body,path", [
    ({"feedback": [{"card": "c", "outcome": "accepted", "outcomeTimestamp": "2024-07-15T10:00:00Z"}]},
     "$.feedback[0]"),
    ({"feedback": [{"card": "c", "outcome": "liked", "outcomeTimestamp": "2024-07-15T10:00:00Z"}]},
     "$.feedback[0].outcome"),
    ({"feedback": [{"card": "c", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]},
     "$.feedback[0].outcomeTimestamp"),
    ({"feedback": []}, "$.feedback"),
])
def test_invalid_feedback_is_400(client, body, path):
    err = assert_json_error(client.post("/cds-services/fluoroscopy-claim-review/feedback", json=body), 400)
    assert err["issue"][0]["expression"] == [path]


def _carded_service() -> CdsService:
    def handler(req):
        return {"cards": [{"uuid": "card-uuid-1", "summary": "test card", "indicator": "info",
                           "source": {"label": "t", "topic": {"system": "urn:t", "code": "mue-exceeded"}}}]}

    return CdsService(id="test-carded", hook="org.fluoro-cds.claim-review", title="t",
                      description="test-only service", prefetch={"patient": "Patient/{{context.patientId}}"},
                      handler=handler)


def test_audit_records_every_invocation_without_patient_data(tmp_path):
    from hooks.services import SERVICES as SHIPPED

    app = make_app(tmp_path, services=SHIPPED + (_carded_service(),))
    client = app.test_client()
    secret_patient, secret_claim = "pat-SECRET-9137", "claim-SECRET-5521"
    body = claim_review_request()
    body["context"] = {"patientId": secret_patient, "claim": claim(secret_claim, secret_patient)}
    body["prefetch"] = {"patient": {"resourceType": "Patient", "id": secret_patient,
                                    "name": [{"family": "Secretname"}]}}
    assert client.post("/cds-services/test-carded", json=body).status_code == 200
    bad = dict(body, context={"patientId": secret_patient})
    assert client.post("/cds-services/fluoroscopy-claim-review", json=bad).status_code == 400

    rows = app.config["FLUORO_STATE"].audit()
    assert [(r["service_id"], r["status"]) for r in rows] == [("test-carded", 200),
                                                               ("fluoroscopy-claim-review", 400)]
    assert rows[0]["hook_instance"] == body["hookInstance"]
    assert rows[0]["card_uuids"] == ["card-uuid-1"] and rows[0]["topics"] == ["mue-exceeded"]
    assert rows[0]["data_release"] and rows[0]["latency_ms"] >= 0
    with sqlite3.connect(tmp_path / "state.sqlite") as conn:
        dump = "\n".join(conn.iterdump())
    for secret in (secret_patient, secret_claim, "Secretname"):
        assert secret not in dump


# --- health --------------------------------------------------------------------------------------

def test_healthz_and_readyz(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"

    # the state DB becomes unusable: its file is replaced by a directory
    state = app.config["FLUORO_STATE"]
    state.close()
    for suffix in ("", "-wal", "-shm"):
        path = str(tmp_path / "state.sqlite") + suffix
        if os.path.exists(path):
            os.remove(path)
    os.mkdir(tmp_path / "state.sqlite")
    err = assert_json_error(client.get("/readyz"), 503)
    assert "state database" in err["error"]
    assert client.get("/healthz").status_code == 200


def test_fast_and_reference_schema_engines_agree():
    """jsonschema-rs (hot path) and jsonschema (errors) must judge the same messages alike."""
    from service.validation import request_validator

    v = request_validator("org.fluoro-cds.claim-review")
    if v.rs is None:
        pytest.skip("jsonschema-rs is not installed: only the reference engine is used")
    good = claim_review_request()
    cases = [good,
             dict(good, hookInstance=""),
             dict(good, fhirServer="ftp://x/"),
             dict(good, prefetch={"p": None}),
             dict(good, prefetch={"p": {"resourceType": "OperationOutcome"}}),
             dict(good, context={"patientId": "p", "claim": {"resourceType": "Bundle", "entry": []}}),
             dict(good, context={"patientId": "p", "claim": {"resourceType": "Bundle",
                                                             "entry": [{"resource": claim()}]}}),
             dict(good, fhirServer="https://fhir.example.org/r4",
                  fhirAuthorization={"access_token": "a", "token_type": "Bearer", "expires_in": 1,
                                     "scope": "s", "subject": "c", "patient": "p/1"})]
    for case in cases:
        assert v.rs.is_valid(case) == v.py.is_valid(case), case
    assert v.rs.is_valid(good) and not v.rs.is_valid(cases[1])


def test_the_test_client_rejects_responses_that_break_the_schema(tmp_path):
    """make_app's client validates every response: a handler's bad card cannot slip through."""
    def handler(req):
        return {"cards": [{"uuid": "u", "summary": "x" * 200, "indicator": "info",
                           "source": {"label": "t"}}]}

    bad = CdsService(id="test-bad-card", hook="org.fluoro-cds.claim-review", title="t",
                     description="test-only", prefetch={}, handler=handler)
    client = make_app(tmp_path, services=(bad,)).test_client()
    with pytest.raises(SchemaViolation, match=r"\$\.cards\[0\]\.summary"):
        client.post("/cds-services/test-bad-card", json=claim_review_request())


def test_discovery_omits_an_empty_prefetch(tmp_path):
    svc = CdsService(id="test-no-prefetch", hook="order-sign", title="t", description="test-only",
                     prefetch={}, handler=lambda req: {"cards": []})
    body = make_app(tmp_path, services=(svc,)).test_client().get("/cds-services").get_json()
    assert "prefetch" not in body["services"][0]

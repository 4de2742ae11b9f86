"""service/call_path.py answers a service call outside Flask's request cycle: it must answer every
kind of call exactly as the Flask path does (status, headers, body), take the calls it is for and
leave everything else to Flask."""
from __future__ import annotations

import json

import pytest
from werkzeug.test import Client

from benchmarks.bench_load import request_body
from hooks.services.base import CdsService
from service.call_path import CallPath
from tests.service_support import (StaticJsonServer, TokenFactory, claim_review_request,
                                   discharge_request, ec_key, full_prefetch, make_app,
                                   order_sign_request)

CLAIM = "/cds-services/fluoroscopy-claim-review"
ORDER = "/cds-services/fluoroscopy-order-review"
DISCHARGE = "/cds-services/fluoroscopy-discharge-review"
ORIGIN = "https://sandbox.cds-hooks.org"
ISSUER = "https://ehr.example.org"
BASE = "https://cds.example.org"


def _masked(value):
    """A JSON answer with what differs from call to call (card uuids) masked."""
    if isinstance(value, dict):
        return {k: "<uuid>" if k == "uuid" else _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def _answer(client: Client, **request) -> tuple[int, list[tuple[str, str]], object]:
    resp = client.open(method=request.pop("method", "POST"), **request)
    data = resp.get_data()
    try:
        body = _masked(json.loads(data)) if data else None
    except ValueError:
        body = data
    return resp.status_code, sorted(resp.headers.items()), body


def _both(app, **request):
    """The answer of the app (service calls through CallPath) and of its Flask path alone."""
    assert isinstance(app.wsgi_app, CallPath)
    flask_only = Client(app.wsgi_app.flask_wsgi)
    return _answer(Client(app), **dict(request)), _answer(flask_only, **dict(request))


def _hook_of(app, service_id: str) -> str:
    listed = app.test_client().get("/cds-services").get_json()["services"]
    return next(s["hook"] for s in listed if s["id"] == service_id)


@pytest.fixture
def app(tmp_path):
    return make_app(tmp_path, cors_origins=(ORIGIN,), fhir_allowlist=("https://fhir.example.org/r4",))


def _calls(app) -> dict[str, dict]:
    claim_body = dict(request_body(1), hook=_hook_of(app, "fluoroscopy-claim-review"))
    order = order_sign_request()
    order["prefetch"] = full_prefetch("fluoroscopy-order-review", order["context"])
    deep = b"[" * 70 + b"]" * 70
    return {
        "claim-review with companions": dict(path=CLAIM, json=claim_body),
        "claim-review, minimal claim": dict(path=CLAIM, json=claim_review_request()),
        "order-review": dict(path=ORDER, json=order),
        "discharge-review, no data: 412": dict(path=DISCHARGE, json=discharge_request()),
        "from an allowed origin": dict(path=CLAIM, json=claim_review_request(),
                                       headers={"Origin": ORIGIN}),
        "from another origin": dict(path=CLAIM, json=claim_review_request(),
                                    headers={"Origin": "https://elsewhere.example"}),
        "not JSON": dict(path=CLAIM, data=b"{not json", content_type="application/json"),
        "not an object": dict(path=CLAIM, data=b"[1]", content_type="application/json"),
        "too deep": dict(path=CLAIM, data=deep, content_type="application/json"),
        "empty body": dict(path=CLAIM, data=b"", content_type="application/json"),
        "wrong hook": dict(path=CLAIM, json=claim_review_request(hook="order-sign")),
        "schema violation": dict(path=CLAIM, json=claim_review_request(hookInstance=7)),
        "context lacks the claim": dict(path=CLAIM, json=dict(claim_review_request(), context={"patientId": "p"})),
        "fhirServer not allowlisted": dict(path=CLAIM, json=claim_review_request(
            fhirServer="https://fhir.elsewhere.example/r4")),
        "invalid extension": dict(path=CLAIM, json=claim_review_request(
            extension={"org.fluoro-cds.config": {"no-such-option": 1}})),
        "too large": dict(path=CLAIM, data=b" " * 2048, content_type="application/json"),
        "chunked, input terminated": dict(path=CLAIM,
                                          data=json.dumps(claim_review_request()).encode(),
                                          headers={"Transfer-Encoding": "chunked"},
                                          environ_overrides={"wsgi.input_terminated": True}),
    }


def test_every_kind_of_call_is_answered_as_the_flask_path_answers_it(app):
    app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
    calls = _calls(app)
    statuses = {}
    for name, request in calls.items():
        if name == "too large":
            app.config["MAX_CONTENT_LENGTH"] = 1024
        fast, flask = _both(app, **request)
        app.config["MAX_CONTENT_LENGTH"] = 1024 * 1024
        assert fast == flask, name
        statuses[name] = fast[0]
    # the corpus covers answers and every kind of refusal
    assert statuses["claim-review with companions"] == 200
    assert statuses["discharge-review, no data: 412"] == 412
    assert statuses["too deep"] == 400 and statuses["not JSON"] == 400
    assert statuses["fhirServer not allowlisted"] == 403
    assert statuses["too large"] == 413
    fast, _ = _both(app, **calls["from an allowed origin"])
    assert ("Access-Control-Allow-Origin", ORIGIN) in fast[1] and ("Cache-Control", "no-store") in fast[1]


def test_service_calls_skip_flask_and_everything_else_goes_to_it(app):
    taken = []
    flask_wsgi = app.wsgi_app.flask_wsgi

    def counting(environ, start_response):
        taken.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))
        return flask_wsgi(environ, start_response)

    app.wsgi_app.flask_wsgi = counting
    client = Client(app)
    assert client.post(CLAIM, json=claim_review_request()).status_code == 200
    assert taken == []  # the call did not go through Flask
    assert client.post("/cds-services/no-such-service", json=claim_review_request()).status_code == 404
    assert client.get(CLAIM).status_code == 405
    assert client.post(CLAIM + "/feedback", json={"feedback": []}).status_code in (200, 400)
    assert client.options(CLAIM, headers={"Origin": ORIGIN}).status_code == 204
    assert client.post("/cds-services//fluoroscopy-claim-review", json=claim_review_request()).status_code == 308
    assert [p for _, p in taken] == ["/cds-services/no-such-service", CLAIM, CLAIM + "/feedback", CLAIM,
                                     "/cds-services//fluoroscopy-claim-review"]


def test_an_unexpected_error_is_the_same_logged_500(tmp_path, caplog):
    secret = "patient " + "".join(map(chr, (74, 97, 110, 101)))  # not in any source line either

    def handler(req):
        raise RuntimeError(secret)  # a message that must not reach the log or the body

    svc = CdsService(id="test-broken", hook="org.fluoro-cds.claim-review", title="t",
                     description="test-only", prefetch={}, handler=handler)
    app = make_app(tmp_path, services=(svc,))
    fast, flask = _both(app, path="/cds-services/test-broken", json=claim_review_request())
    assert fast == flask and fast[0] == 500
    assert secret not in caplog.text and secret not in str(fast[2]) and "unexpected RuntimeError on POST /cds-services/test-broken" in caplog.text


def test_jwt_refusals_and_answers_are_the_same(tmp_path):
    key = ec_key("ec-1")
    jwks = StaticJsonServer({"/jwks.json": {"keys": [key.public_jwk]}})
    try:
        app = make_app(tmp_path, auth="jwt", base_url=BASE,
                       trusted_issuers={ISSUER: jwks.url("/jwks.json")})
        tokens = TokenFactory(ISSUER, {"ec-1": key}, "ec-1")
        none = _both(app, path=CLAIM, json=claim_review_request())
        assert none[0] == none[1] and none[0][0] == 401
        assert any(name == "WWW-Authenticate" for name, _ in none[0][1])
        wrong_aud = {"Authorization": "Bearer " + tokens.mint(f"{BASE}/cds-services/other")}
        refused = _both(app, path=CLAIM, json=claim_review_request(), headers=wrong_aud)
        assert refused[0] == refused[1] and refused[0][0] == 401
        for _ in range(2):  # a fresh token each time (a jti is accepted once)
            fast = _answer(Client(app), path=CLAIM, json=claim_review_request(),
                           headers={"Authorization": "Bearer " + tokens.mint(BASE + CLAIM)})
            flask = _answer(Client(app.wsgi_app.flask_wsgi), path=CLAIM, json=claim_review_request(),
                            headers={"Authorization": "Bearer " + tokens.mint(BASE + CLAIM)})
            assert fast == flask and fast[0] == 200
    finally:
        jwks.close()

"""JWT authentication of CDS clients (CDS Hooks 2.0 "Trusting CDS Clients") with real keys and a
real JWKS endpoint on 127.0.0.1."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.service_support import (StaticJsonServer, TokenFactory, with_alg, assert_json_error, claim_review_request,
                                   ec_key, make_app, rsa_key)

ISSUER = "https://ehr.example.org"
BASE = "https://cds.example.org"  # FLUORO_CDS_BASE_URL for most tests
CLAIM_URL = f"{BASE}/cds-services/fluoroscopy-claim-review"


@pytest.fixture(scope="module")
def keys():
    return {"ec": ec_key("ec-1"), "rsa": rsa_key("rsa-1"), "attacker": ec_key("ec-1")}


@pytest.fixture(scope="module")
def jwks(keys):
    server = StaticJsonServer({
        "/jwks.json": {"keys": [keys["ec"].public_jwk, keys["rsa"].public_jwk]},
        "/attacker.json": {"keys": [keys["attacker"].public_jwk]},
        "/extra.json": {"keys": [keys["attacker"].public_jwk]},
    })
    yield server
    server.close()


@pytest.fixture
def tokens(keys):
    return TokenFactory(ISSUER, {"ec-1": keys["ec"], "rsa-1": keys["rsa"]}, "ec-1")


@pytest.fixture
def app(tmp_path, jwks):
    return make_app(tmp_path, auth="jwt", base_url=BASE,
                    trusted_issuers={ISSUER: jwks.url("/jwks.json")},
                    jku_allowlist=(jwks.url("/extra.json"),))


@pytest.fixture
def client(app):
    return app.test_client()


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _unsigned(payload: dict, header: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc(header)}.{enc(payload)}."


def _payload(aud: str, **claims) -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}


def test_valid_es384_and_rs384_tokens_pass_on_every_endpoint(client, tokens):
    resp = client.get("/cds-services", headers=_bearer(tokens.mint(f"{BASE}/cds-services")))
    assert resp.status_code == 200
    resp = client.post("/cds-services/fluoroscopy-claim-review", json=claim_review_request(),
                       headers=_bearer(tokens.mint(CLAIM_URL, kid="rsa-1")))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    resp = client.post("/cds-services/fluoroscopy-claim-review/feedback",
                       json={"feedback": [{"card": "c", "outcome": "overridden",
                                           "outcomeTimestamp": "2024-07-15T10:00:00Z"}]},
                       headers=_bearer(tokens.mint(f"{CLAIM_URL}/feedback")))
    assert resp.status_code == 200
    # aud as an array holding the endpoint URL
    resp = client.get("/cds-services", headers=_bearer(
        tokens.mint([f"{BASE}/cds-services", "https://other.example.org"])))
    assert resp.status_code == 200
    # a jku equal to the issuer's configured JWKS URL is honoured
    tokens.extra_headers = {"jku": client.application.config["FLUORO_SETTINGS"].trusted_issuers[ISSUER]}
    assert client.get("/cds-services", headers=_bearer(tokens.mint(f"{BASE}/cds-services"))).status_code == 200


def test_jku_on_the_allowlist_is_honoured(client, tokens, keys, jwks):
    token = tokens.mint(f"{BASE}/cds-services", key=keys["attacker"], headers={"jku": jwks.url("/extra.json")})
    assert client.get("/cds-services", headers=_bearer(token)).status_code == 200


def _rejections(tokens, keys, jwks):
    aud = f"{BASE}/cds-services"
    return {
        "alg none": _unsigned(_payload(aud), {"alg": "none", "typ": "JWT", "kid": "ec-1"}),
        "HS256": jwt.encode(_payload(aud), "shared-secret-shared-secret-shared!", algorithm="HS256",
                            headers={"kid": "ec-1"}),
        "HS384 with the public key as secret": _hmac_signed(
            _payload(aud), {"alg": "HS384", "typ": "JWT", "kid": "rsa-1"},
            json.dumps(keys["rsa"].public_jwk).encode()),
        "ES256 (not allowed)": jwt.encode(_payload(aud), ec.generate_private_key(ec.SECP256R1()),
                                          algorithm="ES256", headers={"kid": "ec-1"}),
        "wrong aud": tokens.mint(f"{BASE}/cds-services/fluoroscopy-claim-review"),
        "aud of another host": tokens.mint("https://evil.example.com/cds-services"),
        "expired": tokens.mint(aud, iat=int(time.time()) - 900, exp=int(time.time()) - 600),
        "iat in the future": tokens.mint(aud, iat=int(time.time()) + 600, exp=int(time.time()) + 900),
        "lifetime too long": tokens.mint(aud, exp=int(time.time()) + 86400),
        "unknown issuer": tokens.mint(aud, iss="https://evil.example.com"),
        "no iss": tokens.mint(aud, iss=None),
        "unknown kid": tokens.mint(aud, key=ec_key("ec-unknown")),
        "no kid": jwt.encode(_payload(aud), keys["ec"].private, algorithm="ES384"),
        "no jti": tokens.mint(aud, jti=None),
        "no exp": tokens.mint(aud, exp=None),
        "jku off the allowlist": tokens.mint(aud, key=keys["attacker"],
                                             headers={"jku": jwks.url("/attacker.json")}),
        "signed by another key with a known kid": tokens.mint(aud, key=keys["attacker"]),
        "RS384 header on an EC key": with_alg(tokens.mint(aud, kid="ec-1"), "RS384"),
        "typ not JWT": tokens.mint(aud, headers={"typ": "JOSE+JSON"}),
    }


def _hmac_signed(payload: dict, header: dict, secret: bytes) -> str:
    """An HMAC-signed JWT made by hand (key-confusion attack: the public JWK as the secret)."""
    head_payload = _unsigned(payload, header)[:-1]
    sig = hmac.new(secret, head_payload.encode(), hashlib.sha384).digest()
    return f"{head_payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"


@pytest.mark.parametrize("case,reason", [
    ("alg none", "alg must be"), ("HS256", "alg must be"),
    ("HS384 with the public key as secret", "alg must be"), ("ES256 (not allowed)", "alg must be"),
    ("wrong aud", "aud"), ("aud of another host", "aud"), ("expired", "expired"),
    ("iat in the future", "iat"), ("lifetime too long", "lifetime"),
    ("unknown issuer", "issuer"), ("no iss", "issuer"), ("unknown kid", "kid is not"),
    ("no kid", "no kid"), ("no jti", "jti"), ("no exp", "exp"), ("jku off the allowlist", "jku"),
    ("signed by another key with a known kid", "signature"),
    ("RS384 header on an EC key", "key type"), ("typ not JWT", "typ"),
])
def test_bad_tokens_are_401(client, tokens, keys, jwks, case, reason, caplog):
    token = _rejections(tokens, keys, jwks)[case]
    with caplog.at_level(logging.DEBUG):
        resp = client.get("/cds-services", headers=_bearer(token))
    err = assert_json_error(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
    assert reason in err["error"]
    assert token not in caplog.text and token not in err["error"]


def test_missing_or_malformed_authorization_is_401(client):
    for headers in ({}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer "},
                    {"Authorization": "Bearer not.a.jwt"}):
        resp = client.post("/cds-services/fluoroscopy-claim-review", json=claim_review_request(),
                           headers=headers)
        assert_json_error(resp, 401)
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


def test_tampered_payload_is_401(client, tokens):
    token = tokens.mint(f"{BASE}/cds-services")
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["exp"] += 3600
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_json_error(client.get("/cds-services", headers=_bearer(f"{head}.{forged}.{sig}")), 401)


def test_replayed_jti_is_401_even_in_another_worker(tmp_path, client, tokens, jwks):
    token = tokens.mint(f"{BASE}/cds-services")
    assert client.get("/cds-services", headers=_bearer(token)).status_code == 200
    err = assert_json_error(client.get("/cds-services", headers=_bearer(token)), 401)
    assert "replay" in err["error"]
    # another app instance on the same state DB (as another gunicorn worker would be)
    other = make_app(tmp_path, auth="jwt", base_url=BASE,
                     trusted_issuers={ISSUER: jwks.url("/jwks.json")}).test_client()
    token2 = tokens.mint(f"{BASE}/cds-services")
    assert client.get("/cds-services", headers=_bearer(token2)).status_code == 200
    assert_json_error(other.get("/cds-services", headers=_bearer(token2)), 401)


def test_aud_is_the_request_url_when_no_base_url_is_set(tmp_path, tokens, jwks):
    client = make_app(tmp_path, auth="jwt", trusted_issuers={ISSUER: jwks.url("/jwks.json")}).test_client()
    ok = tokens.mint("http://localhost/cds-services")
    assert client.get("/cds-services", headers=_bearer(ok)).status_code == 200
    assert_json_error(client.get("/cds-services", headers=_bearer(tokens.mint(f"{BASE}/cds-services"))), 401)


def test_health_and_preflight_need_no_token(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    resp = client.open("/cds-services", method="OPTIONS",
                       headers={"Origin": "https://x.example", "Access-Control-Request-Method": "GET"})
    assert resp.status_code == 204


def test_jwks_is_fetched_once_and_cached(tmp_path, keys):
    server = StaticJsonServer({"/jwks.json": {"keys": [keys["ec"].public_jwk]}})
    try:
        client = make_app(tmp_path, auth="jwt", base_url=BASE,
                          trusted_issuers={ISSUER: server.url("/jwks.json")}).test_client()
        factory = TokenFactory(ISSUER, {"ec-1": keys["ec"]}, "ec-1")
        for _ in range(3):
            assert client.get("/cds-services",
                              headers=_bearer(factory.mint(f"{BASE}/cds-services"))).status_code == 200
        assert server.hits == ["/jwks.json"]
    finally:
        server.close()


def test_handlers_learn_the_verified_issuer_and_tenant(tmp_path, jwks, tokens, monkeypatch):
    """The claims authenticate() verified reach the handler and the call's log line (the call
    reads them once, only when a verifier is installed)."""
    from hooks.services.base import CdsService
    from service import calls

    lines = []
    monkeypatch.setattr(calls, "log_calls", lambda batch: lines.extend(c for _, c in batch))

    seen = {}

    def handler(req):
        seen.update(req.extras)
        return {"cards": []}

    svc = CdsService(id="test-extras", hook="org.fluoro-cds.claim-review", title="t",
                     description="test-only", prefetch={}, handler=handler)
    app = make_app(tmp_path, services=(svc,), auth="jwt", base_url=BASE,
                   trusted_issuers={ISSUER: jwks.url("/jwks.json")})
    client = app.test_client()
    token = tokens.mint(f"{BASE}/cds-services/test-extras", tenant="hospital-7")
    assert client.post("/cds-services/test-extras", json=claim_review_request(),
                       headers=_bearer(token)).status_code == 200
    assert app.config["FLUORO_STATE"].flush()  # the call's line is written by the audit thread
    assert seen == {"client_issuer": ISSUER, "tenant": "hospital-7"}
    assert (lines[-1]["client_issuer"], lines[-1]["tenant"]) == (ISSUER, "hospital-7")


# --- hardening (issue 12): no 500 from any token or JWKS, 401s logged with reason and issuer ---

@pytest.mark.parametrize("claim", ["iat", "exp"])
@pytest.mark.parametrize("value", ["{now}", "{now}.5", [1], {"a": 1}, True])
def test_non_numeric_times_are_401(client, tokens, claim, value):
    now = int(time.time())
    if isinstance(value, str):
        value = value.format(now=now + (300 if claim == "exp" else 0))
    token = tokens.mint(f"{BASE}/cds-services", **{claim: value})
    resp = client.get("/cds-services", headers=_bearer(token))
    assert "JWT" in assert_json_error(resp, 401)["error"]


@pytest.mark.parametrize("document", ["<html>not json</html>", "[1, 2]", '{"keys": 5}',
                                      '{"keys": [{"kty": "EC"}]}', '{"keys": [5]}'])
def test_a_jwks_that_is_not_a_jwk_set_is_401(tmp_path, tokens, document):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = document.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
        client = make_app(tmp_path, auth="jwt", base_url=BASE, trusted_issuers={ISSUER: url}).test_client()
        resp = client.get("/cds-services", headers=_bearer(tokens.mint(f"{BASE}/cds-services")))
        assert "JWK Set" in assert_json_error(resp, 401)["error"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_unreachable_jwks_is_401(tmp_path, tokens):
    from tests.service_support import closed_port

    url = f"http://127.0.0.1:{closed_port()}/jwks.json"
    client = make_app(tmp_path, auth="jwt", base_url=BASE, trusted_issuers={ISSUER: url}).test_client()
    resp = client.get("/cds-services", headers=_bearer(tokens.mint(f"{BASE}/cds-services")))
    assert "could not be fetched" in assert_json_error(resp, 401)["error"]


@pytest.mark.parametrize("header", [{"jku": ["a"]}, {"jku": {"a": 1}}, {"kid": 5}, {"alg": ["ES384"]}])
def test_odd_header_values_are_401(client, header):
    token = _unsigned(_payload(f"{BASE}/cds-services"), {"alg": "ES384", "kid": "ec-1", **header})
    assert_json_error(client.get("/cds-services", headers=_bearer(token)), 401)


def test_oversize_token_is_401_without_decoding(client):
    token = _unsigned(_payload(f"{BASE}/cds-services", pad="x" * 20000), {"alg": "ES384", "kid": "ec-1"})
    err = assert_json_error(client.get("/cds-services", headers=_bearer(token)), 401)
    assert "longer than" in err["error"]


def test_401s_are_logged_with_reason_and_issuer_never_the_token(app, tokens, caplog):
    token = tokens.mint("https://elsewhere.example/cds-services")
    with caplog.at_level(logging.INFO, logger="fluoro_cds"):
        assert_json_error(app.test_client().get("/cds-services", headers=_bearer(token)), 401)
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("401"))
    assert "aud" in line and ISSUER in line
    assert token not in caplog.text


def test_401s_are_counted_once_by_reason(app, tokens):
    """One counter for JWT refusals (fluoro_cds_jwt_refusals), by reason: each 401 adds one."""
    from prometheus_client import REGISTRY

    reason = "JWT aud is not this endpoint's URL"

    def count() -> float:
        return REGISTRY.get_sample_value("fluoro_cds_jwt_refusals_total", {"reason": reason}) or 0.0

    before = count()
    token = tokens.mint("https://elsewhere.example/cds-services")
    for _ in range(2):
        assert_json_error(app.test_client().get("/cds-services", headers=_bearer(token)), 401)
    assert count() == before + 2
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "fluoro_cds_jwt_refusals_total{" in metrics
    assert not hasattr(app.extensions["fluoro_cds"].verifier, "refusals")  # no second counter

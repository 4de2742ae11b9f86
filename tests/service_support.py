"""Helpers for the service tests: app factory, response-schema check, real keys and JWTs, a JWKS
server and a connection-recording listener on 127.0.0.1, request builders."""
from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
from flask.testing import FlaskClient
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.settings import Settings
from service.validation import check, validator

CPT = "http://www.ama-assn.org/go/cpt"


# --- app ---------------------------------------------------------------------------------------

def make_settings(tmp_path: Path, **overrides) -> Settings:
    base = Settings(db_path=str(tmp_path / "ncci.sqlite"), state_db_path=str(tmp_path / "state.sqlite"))
    return replace(base, **overrides)


class ValidatingClient(FlaskClient):
    """A Flask test client that checks every answer it gets: each 200 from a service invocation
    against response.json, discovery against discovery.json, and every error as a JSON
    OperationOutcome with an `error` string."""

    def open(self, *args, **kwargs):
        resp = super().open(*args, **kwargs)
        request_path = resp.request.path
        method = resp.request.method
        if method == "OPTIONS":
            return resp
        if resp.status_code >= 400:
            body = resp.get_json(silent=True) or {}
            assert resp.mimetype == "application/json" and isinstance(body.get("error"), str), \
                f"{method} {request_path}: {resp.status_code} without a JSON error body"
        elif request_path == "/cds-services" and method == "GET":
            check(validator("discovery"), resp.get_json(), "discovery response")
        elif (method == "POST" and request_path.startswith("/cds-services/")
              and not request_path.endswith("/feedback")):
            assert_valid_response(resp.get_json())
        return resp


def make_app(tmp_path: Path, services=None, **overrides):
    """The real app on temporary files; its test_client() validates every response."""
    from service.app import create_app

    app = create_app(make_settings(tmp_path, **overrides), services=services)
    app.test_client_class = ValidatingClient
    return app


def assert_valid_response(body: dict) -> dict:
    """Every CDS service response must match service/schemas/response.json."""
    check(validator("response"), body, "response")
    return body


def assert_json_error(resp, status: int) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert isinstance(body.get("error"), str) and body["error"]
    assert body["resourceType"] == "OperationOutcome"
    return body


# --- request builders --------------------------------------------------------------------------

def order_sign_request(**extra) -> dict:
    body = {"hook": "order-sign", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/doc-1", "patientId": "pat-1",
                        "encounterId": "enc-1",
                        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [
                            {"resource": {"resourceType": "ServiceRequest", "id": "sr-1",
                                          "status": "draft", "intent": "order",
                                          "subject": {"reference": "Patient/pat-1"},
                                          "code": {"coding": [{"system": CPT, "code": "76000"}]}}}]}}}
    body.update(extra)
    return body


def discharge_request(**extra) -> dict:
    body = {"hook": "encounter-discharge", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/doc-1", "patientId": "pat-1", "encounterId": "enc-1"}}
    body.update(extra)
    return body


def claim(claim_id: str = "claim-1", patient: str = "pat-1") -> dict:
    return {"resourceType": "Claim", "id": claim_id, "status": "active",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                                 "code": "professional"}]},
            "use": "claim", "patient": {"reference": f"Patient/{patient}"},
            "created": "2024-07-15", "provider": {"reference": "Organization/org-1"},
            "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov-1"}}],
            "item": [{"sequence": 1, "productOrService": {"coding": [{"system": CPT, "code": "76000"}]},
                      "servicedDate": "2024-07-15"}]}


def _minimal(resource_type: str, resource_id: str) -> dict:
    res = {"resourceType": resource_type, "id": resource_id}
    if resource_type == "Encounter":
        res.update(status="finished", subject={"reference": "Patient/pat-1"},
                   **{"class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "AMB"}})
    return res


def full_prefetch(service_id: str, context: dict) -> dict:
    """A prefetch answering every template of a shipped service for `context`: reads get a minimal
    valid resource, searches an empty searchset Bundle (an `_id` search gets that resource), so a
    real handler has all the data it asks for without a FHIR server."""
    from hooks.services import BY_ID
    from service.fhir_access import Query, resolve_template

    out: dict = {}
    for key, template in BY_ID[service_id].prefetch.items():
        rel = resolve_template(template, context)
        query = Query.parse(rel) if rel else None
        if query is None:
            continue
        if query.is_read:
            out[key] = _minimal(query.resource_type, query.resource_id or "x")
            continue
        ids = dict(query.params).get("_id")
        entries = [{"resource": _minimal(query.resource_type, ids)}] if ids else []
        out[key] = {"resourceType": "Bundle", "type": "searchset", "entry": entries}
    return out


def claim_review_request(**extra) -> dict:
    body = {"hook": "org.fluoro-cds.claim-review", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": "pat-1", "claim": claim()}}
    body.update(extra)
    return body


# --- keys, JWKS server, JWTs -------------------------------------------------------------------

@dataclass
class KeyPair:
    kid: str
    alg: str
    private: object
    public_jwk: dict


def ec_key(kid: str = "ec-1") -> KeyPair:
    private = ec.generate_private_key(ec.SECP384R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg="ES384")
    return KeyPair(kid, "ES384", private, jwk)


def rsa_key(kid: str = "rsa-1") -> KeyPair:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    jwk.update(kid=kid, use="sig", alg="RS384")
    return KeyPair(kid, "RS384", private, jwk)


class StaticJsonServer:
    """A tiny HTTP server on 127.0.0.1 serving JSON documents by path (e.g. JWK Sets)."""

    def __init__(self, documents: dict[str, dict]):
        self.documents = documents
        self.hits: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                outer.hits.append(self.path)
                doc = outer.documents.get(self.path)
                body = json.dumps(doc).encode() if doc is not None else b"{}"
                self.send_response(200 if doc is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def with_alg(token: str, alg: str) -> str:
    """`token` with its header's alg replaced (the signature left as it was)."""
    head, payload, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["alg"] = alg
    new_head = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return f"{new_head}.{payload}.{sig}"


@dataclass
class TokenFactory:
    issuer: str
    keys: dict[str, KeyPair]
    default_kid: str
    extra_headers: dict = field(default_factory=dict)

    def mint(self, aud, *, kid: str | None = None, key: KeyPair | None = None, alg: str | None = None,
             headers: dict | None = None, **claims) -> str:
        key = key or self.keys[kid or self.default_kid]
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": aud, "iat": now, "exp": now + 300,
                   "jti": str(uuid.uuid4())}
        payload.update(claims)
        payload = {k: v for k, v in payload.items() if v is not None}
        hdr = {"kid": key.kid, "typ": "JWT", **self.extra_headers, **(headers or {})}
        return jwt.encode(payload, key.private, algorithm=alg or key.alg, headers=hdr)


# --- a listener that records connections -------------------------------------------------------

class RecordingListener:
    """Listens on 127.0.0.1:<free port>, accepts and immediately closes every connection, and
    counts them: proves whether the service made an outbound connection."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            self.connections += 1
            conn.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    def close(self):
        self._stop.set()
        self.thread.join(2)
        self.sock.close()


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

"""A SMART on FHIR EHR for tests: an OAuth 2.0 authorization server built on Authlib and a FHIR
endpoint, protected by the tokens it issues, in front of a real FHIR server (sekmet-fhir).

On 127.0.0.1 (a free port, a daemon thread, stopped by :meth:`SmartEhr.close`):

* ``/fhir/.well-known/smart-configuration``: SMART App Launch 2 discovery (PKCE S256 only);
* ``/oauth/authorize``: Authlib's AuthorizationServer, authorization code grant with the RFC 7636
  CodeChallenge extension required, S256 only; the user is taken as logged in and consenting
  (an EHR's login page is not what is tested); an EHR launch's ``launch`` value must be one
  :meth:`SmartEhr.register_launch` gave;
* ``/oauth/token``: code exchange (and refresh_token grant); the token response carries the
  launch context: ``patient``, ``encounter`` and the card's ``appContext``;
* ``/fhir/...``: Authlib's ResourceProtector checks the bearer token (issued here, not expired,
  not revoked), then the request goes on to the FHIR server with that server's own token; every
  request's token and method are recorded (:attr:`SmartEhr.calls`).

Launches choose the lifetime of their access tokens and whether a refresh token is offered;
:meth:`SmartEhr.revoke` ends a launch's tokens at the EHR (what an expired session looks like to
the app).
"""
from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field

import requests
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6750 import BearerTokenValidator
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, Response, jsonify, request
from werkzeug.serving import make_server

UPSTREAM_TIMEOUT = 30.0
PASSED_HEADERS = ("content-type", "accept", "if-match", "prefer")


@dataclass
class Launch:
    patient: str
    encounter: str
    app_context: str | None
    expires_in: int
    refresh: bool
    revoked: bool = False


@dataclass
class Client(ClientMixin):
    client_id: str
    redirect_uris: tuple[str, ...]

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope):
        return scope

    def check_redirect_uri(self, redirect_uri):
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret):
        return False  # a public client (SMART: PKCE, no secret)

    def check_endpoint_auth_method(self, method, endpoint):
        return method == "none"

    def check_response_type(self, response_type):
        return response_type == "code"

    def check_grant_type(self, grant_type):
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    launch: Launch
    code_challenge: str | None
    code_challenge_method: str | None
    issued: float = field(default_factory=time.time)

    def get_redirect_uri(self):
        return self.redirect_uri

    def get_scope(self):
        return self.scope

    def is_expired(self):
        return time.time() - self.issued > 60


@dataclass
class Token:
    access_token: str
    refresh_token: str | None
    scope: str
    client_id: str
    issued: float
    expires_in: int
    launch: Launch

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return self.expires_in

    def is_expired(self):
        return time.time() >= self.issued + self.expires_in

    def is_revoked(self):
        return self.launch.revoked


class S256Only(CodeChallenge):
    """RFC 7636 with S256 only, and a code_challenge required on every authorization request."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge") or data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("PKCE with code_challenge_method S256 is required")
        super().validate_code_challenge(grant, redirect_uri)


class SmartEhr:
    """The EHR: authorization server + protected FHIR endpoint over `upstream` (base URL and token)."""

    def __init__(self, upstream: str, upstream_token: str, client_id: str, redirect_uri: str, *,
                 transactions: bool = True):
        self.upstream = upstream.rstrip("/")
        self.transactions = transactions  # False: a server without the transaction interaction
        self.upstream_token = upstream_token
        self.client = Client(client_id, (redirect_uri,))
        self.launches: dict[str, Launch] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Token] = {}
        self.refresh_tokens: dict[str, Token] = {}
        self.calls: list[tuple[str, str, str | None]] = []  # (method, path, bearer token or None)
        self.authorizations: list[dict] = []  # the authorization requests' parameters
        self.refreshes = 0
        self.standalone: Launch | None = None  # the context a standalone launch is given
        self._lock = threading.Lock()
        self._http = requests.Session()
        self._http.trust_env = False
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self.fhir_base = self.url + "/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # -- what a test does as the EHR -----------------------------------------------------------
    def register_launch(self, *, patient: str, encounter: str, app_context: str | None,
                        expires_in: int = 3600, refresh: bool = True) -> str:
        """A `launch` value for an EHR launch with this context."""
        launch_id = secrets.token_urlsafe(16)
        self.launches[launch_id] = Launch(patient, encounter, app_context, expires_in, refresh)
        return launch_id

    def issue_token(self, *, patient: str, encounter: str) -> str:
        """A token for a CDS Hooks call's fhirAuthorization (the EHR's own, for the service)."""
        launch = Launch(patient, encounter, None, 3600, False)
        token = Token(secrets.token_urlsafe(24), None, "user/*.rs", "cds-service", time.time(), 3600,
                      launch)
        self.tokens[token.access_token] = token
        return token.access_token

    def revoke(self, launch_id: str) -> None:
        """End every token of the launch (the EHR's session is over): the FHIR endpoint answers 401."""
        self.launches[launch_id].revoked = True

    def issued_to_app(self) -> set[str]:
        return {t.access_token for t in self.tokens.values() if t.client_id == self.client.client_id}

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)
        self._http.close()

    # -- the server ----------------------------------------------------------------------------
    def _build(self) -> Flask:
        ehr = self
        app = Flask("smart_ehr")
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": 3600, "refresh_token": 3600}
        app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True  # refresh tokens (a launch may drop them)

        def save_token(token: dict, req) -> None:
            if req.payload.grant_type == "refresh_token":
                launch = req.refresh_token.launch
                with ehr._lock:
                    ehr.refreshes += 1
            else:
                launch = req.authorization_code.launch
            token["expires_in"] = launch.expires_in
            if not launch.refresh:
                token.pop("refresh_token", None)
            record = Token(token["access_token"], token.get("refresh_token"), token.get("scope", ""),
                           req.client.get_client_id(), time.time(), launch.expires_in, launch)
            ehr.tokens[record.access_token] = record
            if record.refresh_token:
                ehr.refresh_tokens[record.refresh_token] = record
            token["patient"] = launch.patient
            token["encounter"] = launch.encounter
            if launch.app_context is not None:
                token["appContext"] = launch.app_context

        server = AuthorizationServer(app, query_client=lambda cid: ehr.client if cid == ehr.client.client_id
                                     else None, save_token=save_token)

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]

            def save_authorization_code(self, code, req):
                launch_id = req.payload.data.get("launch")
                launch = ehr.launches.get(launch_id) if launch_id else ehr.standalone
                if launch is None:
                    raise InvalidRequestError("unknown launch")
                ehr.codes[code] = Code(code, req.client.get_client_id(), req.payload.redirect_uri,
                                       req.payload.scope or "", launch,
                                       req.payload.data.get("code_challenge"),
                                       req.payload.data.get("code_challenge_method"))

            def query_authorization_code(self, code, client):
                item = ehr.codes.get(code)
                if item and item.client_id == client.get_client_id() and not item.is_expired():
                    return item
                return None

            def delete_authorization_code(self, authorization_code):
                ehr.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code):
                return {"id": "Practitioner/ehr-user"}

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["none"]
            INCLUDE_NEW_REFRESH_TOKEN = True

            def authenticate_refresh_token(self, refresh_token):
                item = ehr.refresh_tokens.get(refresh_token)
                if item and not item.launch.revoked:
                    return item
                return None

            def authenticate_user(self, credential):
                return {"id": "Practitioner/ehr-user"}

            def revoke_old_credential(self, credential):
                ehr.refresh_tokens.pop(credential.refresh_token, None)

        server.register_grant(CodeGrant, [S256Only(required=True)])
        server.register_grant(RefreshGrant)

        class Validator(BearerTokenValidator):
            def authenticate_token(self, token_string):
                return ehr.tokens.get(token_string)

        protect = ResourceProtector()
        protect.register_token_validator(Validator())

        @app.get("/fhir/.well-known/smart-configuration")
        def smart_configuration():
            return jsonify({
                "issuer": ehr.url, "authorization_endpoint": ehr.url + "/oauth/authorize",
                "token_endpoint": ehr.url + "/oauth/token", "grant_types_supported":
                    ["authorization_code", "refresh_token"],
                "code_challenge_methods_supported": ["S256"],
                "token_endpoint_auth_methods_supported": ["none"],
                "scopes_supported": ["launch", "launch/patient", "launch/encounter", "openid", "fhirUser",
                                     "online_access", "user/*.cruds"],
                "response_types_supported": ["code"],
                "capabilities": ["launch-ehr", "launch-standalone", "client-public", "context-ehr-patient",
                                 "context-ehr-encounter", "permission-v2", "authorize-post"]})

        @app.get("/oauth/authorize")
        def authorize():
            ehr.authorizations.append(dict(request.args))
            # the user is logged in at the EHR and consents (no login page in this test EHR)
            return server.create_authorization_response(grant_user={"id": "Practitioner/ehr-user"})

        @app.post("/oauth/token")
        def issue_token():
            return server.create_token_response()

        @app.get("/fhir/metadata")
        def metadata():
            answer = ehr._forward("metadata")
            if not ehr.transactions:  # the CapabilityStatement without the transaction interaction
                cap = json.loads(answer.get_data())
                for rest in cap.get("rest", []):
                    rest["interaction"] = [i for i in rest.get("interaction", [])
                                           if i.get("code") not in ("transaction", "batch")]
                answer.set_data(json.dumps(cap).encode())
            return answer

        @app.route("/fhir", methods=["POST"], defaults={"path": ""})
        @app.route("/fhir/<path:path>", methods=["GET", "POST", "PUT"])
        @protect()
        def fhir(path: str):
            if not path and not ehr.transactions:
                return jsonify({"resourceType": "OperationOutcome", "issue": [
                    {"severity": "error", "code": "not-supported", "diagnostics": "no transactions"}]}), 405
            return ehr._forward(path)

        return app

    def _forward(self, path: str) -> Response:
        auth = request.headers.get("Authorization", "")
        with self._lock:
            self.calls.append((request.method, path, auth[7:] if auth.startswith("Bearer ") else None))
        headers = {k: v for k, v in request.headers.items() if k.lower() in PASSED_HEADERS}
        headers["Authorization"] = f"Bearer {self.upstream_token}"
        url = f"{self.upstream}/{path}" if path else self.upstream
        resp = self._http.request(request.method, url, params=list(request.args.items(multi=True)),
                                  data=request.get_data(), headers=headers, timeout=UPSTREAM_TIMEOUT,
                                  allow_redirects=False)
        body = resp.content.replace(self.upstream.encode(), self.fhir_base.encode())
        out = Response(body, status=resp.status_code,
                       content_type=resp.headers.get("Content-Type", "application/fhir+json"))
        for name in ("Location", "ETag", "Last-Modified"):
            if name in resp.headers:
                out.headers[name] = resp.headers[name].replace(self.upstream, self.fhir_base)
        return out

"""Flask application factory: CDS Hooks 2.0 discovery, invocation, feedback, health.

Protocol, settings and security are described in docs/service.md. Request handling:
CORS preflight -> JWT (when FLUORO_CDS_AUTH=jwt) -> JSON -> hook -> JSON Schema -> fhirServer
allowlist -> configuration -> handler (with FHIR access over prefetch + fhirServer) -> audit.
Every error is a JSON OperationOutcome with an ``error`` string (service/errors.py).
"""
from __future__ import annotations

import logging
import sqlite3
import time
import traceback
from typing import Sequence

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from hooks.config import ConfigError, resolve
from hooks.context import DataUnavailable, HookRequest, InvalidResource
from hooks.services import SERVICES, CdsService
from nccidata.live import LiveReference

from .auth import AuthError, JwtVerifier, challenge
from .errors import ApiError, error_response
from .fhir_access import FhirAccess, FhirClient, FhirClientSettings, fhir_server_allowed
from .jsonio import dumps, loads
from .settings import Settings
from .state import AuditRecord, StateStore
from .validation import SchemaViolation, check, hook_names, request_validator, validator, warm_up

log = logging.getLogger("fluoro_cds")

MAX_BODY_BYTES = 16 * 1024 * 1024
CORS_ALLOW_HEADERS = "Authorization, Content-Type"
CORS_ALLOW_METHODS = "GET, POST, OPTIONS"
RELEASE_LABEL_TTL = 60.0  # seconds the audit's data-release label is cached


def _json(value, status: int = 200) -> Response:
    return Response(dumps(value), status=status, mimetype="application/json")


def _parse_json(what: str) -> dict:
    try:
        body = loads(request.get_data(cache=False))
    except Exception as exc:
        raise ApiError(400, f"{what} is not valid JSON: {exc}", code="structure") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"{what} must be a JSON object", code="structure", expression="$")
    return body


def _topic_code(card: dict) -> str | None:
    topic = (card.get("source") or {}).get("topic") or {}
    code = topic.get("code") if isinstance(topic, dict) else None
    return str(code) if code else None


def _audit_ids(cards: Sequence[dict]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The cards' uuids and topic codes for the audit record (cards without one are skipped)."""
    uuids: list[str] = []
    topics: list[str] = []
    for card in cards:
        if card.get("uuid"):
            uuids.append(str(card["uuid"]))
        topic = _topic_code(card)
        if topic:
            topics.append(topic)
    return tuple(uuids), tuple(topics)


class _ReleaseLabel:
    """The reference data release in service (for audit records), cached for a minute."""

    def __init__(self, live: LiveReference):
        self._live = live
        self._of = None  # the reference data the cached label describes
        self._label: str | None = None
        self._until = 0.0

    def get(self) -> str | None:
        now = time.monotonic()
        reference = self._live.current()
        if now >= self._until or reference is not self._of:  # expired, or the first import landed
            self._of = reference
            try:
                info = reference.describe()
                self._label = str(info.get("label") or info.get("source") or "")[:200] or None
            except Exception:  # the audit must not fail the request
                self._label = None
            self._until = now + RELEASE_LABEL_TTL
        return self._label


def create_app(settings: Settings | None = None,
               services: Sequence[CdsService] | None = None) -> Flask:
    """The Flask app. `services` replaces the shipped registry (tests register their own)."""
    settings = settings or Settings.from_env()
    services = tuple(SERVICES if services is None else services)
    by_id = {s.id: s for s in services}
    app = Flask("fluoro_cds")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["FLUORO_SETTINGS"] = settings
    # The store once it holds releases (a service started before the first import switches to
    # it within a second), else the starter set; app.config["FLUORO_REFERENCE"] is the holder.
    live = LiveReference(settings.db_path)
    app.config["FLUORO_REFERENCE"] = live
    state = StateStore(settings.state_db_path)
    app.config["FLUORO_STATE"] = state
    verifier = JwtVerifier(settings, state) if settings.auth == "jwt" else None
    if verifier is not None and not settings.base_url:
        log.warning("FLUORO_CDS_AUTH=jwt without FLUORO_CDS_BASE_URL: the JWT aud is checked "
                    "against a URL built from the request's Host header; set FLUORO_CDS_BASE_URL")
    release = _ReleaseLabel(live)
    client_settings = FhirClientSettings(connect_timeout=settings.fhir_connect_timeout,
                                         read_timeout=settings.fhir_timeout,
                                         max_pages=settings.fhir_max_pages,
                                         max_resources=settings.fhir_max_resources)
    warm_up()
    schema_hooks = set(hook_names())
    generic_request = validator("request")
    feedback_schema = validator("feedback")
    discovery_body = dumps({"services": [s.discovery() for s in services]})
    cors_any = "*" in settings.cors_origins
    cors_origins = frozenset(settings.cors_origins)

    # -- errors ---------------------------------------------------------------------------
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError):
        return error_response(err)

    @app.errorhandler(404)
    def _not_found(_):
        return error_response(ApiError(404, f"no such endpoint: {request.path}", code="not-found"))

    @app.errorhandler(405)
    def _bad_method(_):
        return error_response(ApiError(405, f"method {request.method} not allowed on {request.path}",
                                       code="not-supported"))

    @app.errorhandler(413)
    def _too_large(_):
        return error_response(ApiError(413, f"request body larger than {MAX_BODY_BYTES} bytes",
                                       code="too-costly"))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            return error_response(ApiError(exc.code or 500, exc.description or exc.name,
                                           code="invalid" if (exc.code or 500) < 500 else "exception"))
        # type and stack only: an exception message may quote patient data
        log.error("unexpected %s on %s %s\n%s", type(exc).__name__, request.method, request.path,
                  "".join(traceback.format_tb(exc.__traceback__)))
        return error_response(ApiError(500, "internal error", code="exception"))

    # -- CORS and authentication ------------------------------------------------------------
    @app.before_request
    def _preflight_and_auth():
        if request.method == "OPTIONS":
            return Response(status=204)  # CORS preflight: never authenticated
        if verifier is not None and request.path.startswith("/cds-services"):
            audience = (settings.base_url.rstrip("/") + request.path if settings.base_url
                        else request.base_url)
            try:
                g.jwt_claims = verifier.verify(request.headers.get("Authorization"), audience)
            except AuthError as exc:
                log.info("401 on %s: %s", request.path, exc)
                raise ApiError(401, f"unauthorized: {exc}", code="login",
                               headers={"WWW-Authenticate": challenge(str(exc))}) from None
        return None

    @app.after_request
    def _cors(resp: Response) -> Response:
        # answers may describe a patient's care: never cache them, never sniff their type
        headers = resp.headers
        headers.set("Cache-Control", "no-store")
        headers.set("X-Content-Type-Options", "nosniff")
        origin = request.environ.get("HTTP_ORIGIN")  # the Origin header (request.headers reads it there)
        if origin:
            if cors_any:
                resp.headers["Access-Control-Allow-Origin"] = "*"
            elif origin.rstrip("/") in cors_origins:
                resp.headers["Access-Control-Allow-Origin"] = origin
                resp.headers.add("Vary", "Origin")
            if request.method == "OPTIONS":
                resp.headers["Access-Control-Allow-Methods"] = CORS_ALLOW_METHODS
                resp.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
                resp.headers["Access-Control-Max-Age"] = "600"
            else:
                resp.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate"
        return resp

    # -- health -----------------------------------------------------------------------------
    @app.get("/healthz")
    def healthz():
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        problems = []
        data = None
        try:
            data = live.current().describe()
        except Exception as exc:
            problems.append(f"reference data unusable ({type(exc).__name__})")
        try:
            state.check()
        except sqlite3.Error as exc:
            problems.append(f"state database unusable ({exc})")
        if problems:
            return _json({"resourceType": "OperationOutcome", "status": "not-ready",
                          "error": "; ".join(problems),
                          "issue": [{"severity": "error", "code": "transient", "diagnostics": p}
                                    for p in problems]}, 503)
        return _json({"status": "ready", "data": data})

    # -- CDS Hooks --------------------------------------------------------------------------
    @app.get("/cds-services")
    def discovery():
        return Response(discovery_body, mimetype="application/json")

    def _service(service_id: str) -> CdsService:
        service = by_id.get(service_id)
        if service is None:
            raise ApiError(404, f"unknown CDS service '{service_id}'", code="not-found")
        return service

    @app.post("/cds-services/<service_id>")
    def invoke(service_id: str):
        started = time.perf_counter()
        service = _service(service_id)
        audit = {"hook_instance": None, "cards": ()}
        status = 500
        try:
            resp = _invoke(service, audit)
            status = resp.status_code
            return resp
        except ApiError as err:
            status = err.status
            raise
        finally:
            latency = (time.perf_counter() - started) * 1000
            cards = audit["cards"]
            card_uuids, topics = _audit_ids(cards)
            try:
                state.record_audit(AuditRecord(
                    service_id=service.id, hook_instance=audit["hook_instance"], status=status,
                    card_uuids=card_uuids, topics=topics, data_release=release.get(),
                    latency_ms=latency))
            except sqlite3.Error as exc:
                log.error("audit record not written: %s", exc)
            log.info("service=%s status=%d cards=%d ms=%.1f", service.id, status, len(cards), latency)

    def _invoke(service: CdsService, audit: dict) -> Response:
        body = _parse_json("request body")
        hook = body.get("hook")
        if hook != service.hook:
            raise ApiError(400, f"service '{service.id}' answers hook '{service.hook}', "
                                f"not '{str(hook)[:64]}'", expression="$.hook")
        try:
            check(request_validator(hook) if hook in schema_hooks else generic_request,
                  body, "request")
        except SchemaViolation as exc:
            raise ApiError(400, str(exc), code="structure", expression=exc.path) from None
        audit["hook_instance"] = body["hookInstance"]
        context = body["context"]
        missing = [k for k in service.required_context if k not in context]
        if missing:
            raise ApiError(400, f"context lacks {', '.join(missing)}", code="required",
                           expression=f"$.context.{missing[0]}")
        client = None
        server = body.get("fhirServer")
        if server is not None:
            if not fhir_server_allowed(server, settings.fhir_allowlist):
                raise ApiError(403, "fhirServer is not on this service's FHIR server allowlist "
                                    "(FLUORO_CDS_FHIR_ALLOWLIST)", code="forbidden",
                               expression="$.fhirServer")
            token = (body.get("fhirAuthorization") or {}).get("access_token")
            client = FhirClient(server, token, client_settings)
        try:
            config = resolve(body.get("extension"), settings.defaults)
        except ConfigError as exc:
            raise ApiError(400, str(exc), expression="$.extension") from exc
        fhir = FhirAccess(prefetch=body.get("prefetch"), templates=service.prefetch,
                          context=context, client=client)
        extras = {}
        claims = g.get("jwt_claims") if verifier is not None else None  # set by _preflight_and_auth
        if claims:  # who called: the verified issuer and, when given, the tenant (2.0 JWT claims)
            extras["client_issuer"] = claims["iss"]
            if isinstance(claims.get("tenant"), str):
                extras["tenant"] = claims["tenant"]
        hook_request = HookRequest(hook=hook, hook_instance=body["hookInstance"], context=context,
                                   config=config, fhir=fhir, reference=live.current(), extras=extras)
        try:
            result = service.handler(hook_request)
        except InvalidResource as exc:
            raise ApiError(400, str(exc), expression=exc.path) from None
        except DataUnavailable as exc:
            raise ApiError(412, f"precondition failed: {exc}", code="not-found") from None
        audit["cards"] = tuple(c for c in result.get("cards", ()) if isinstance(c, dict))
        return _json(result)

    @app.post("/cds-services/<service_id>/feedback")
    def feedback(service_id: str):
        service = _service(service_id)
        body = _parse_json("feedback body")
        try:
            check(feedback_schema, body, "feedback")
        except SchemaViolation as exc:
            raise ApiError(400, str(exc), code="structure", expression=exc.path) from None
        stored = state.add_feedback(service.id, body["feedback"])
        return _json({"stored": stored})

    return app

"""The CDS Hooks 2.0 endpoints as a blueprint: discovery, service invocation, feedback.

A service call runs four named steps (docs/service.md):

1. :func:`authenticate` (before the view, installed by the app only when FLUORO_CDS_AUTH=jwt):
   the client's JWT;
2. :func:`parse_hook_request`: JSON, hook, JSON Schema, required context, fhirServer allowlist,
   configuration -> a :class:`hooks.context.HookRequest` with FHIR access over prefetch + fhirServer;
3. :func:`run_handler`: the service's handler; InvalidResource -> 400, DataUnavailable -> 412;
4. :func:`record_call`: the audit record (status, cards, data release, latency), log line and
   metrics, always (queued: written off the request thread, service/calls.py).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

from flask import Blueprint, Flask, Request, Response, current_app, g
from flask import request as flask_request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wsgi import get_content_length, get_current_url

from hooks.app_context import SMART_LAUNCH_KEY
from hooks.config import ConfigError, resolve
from hooks import unchecked
from hooks.explain import requested as explain_requested
from hooks.cards import card_citations, new_uuid
from hooks.context import DataUnavailable, HookRequest, InvalidResource, Unchecked
from hooks.services import CdsService

from . import metrics
from .auth import AuthError, challenge
from .errors import ApiError, body_too_large
from .fhir_access import FhirAccess, FhirClient, fhir_server_allowed
from .jsonio import MAX_DEPTH, dumps, json_response, loads, too_deep
from .runtime import Runtime, runtime
from .smart.paths import launch_url
from .validation import (CompiledSchema, SchemaViolation, check, request_validator,
                         resource_validator, validator)

log = logging.getLogger("fluoro_cds")

bp = Blueprint("cds_hooks", __name__)

PREFIX = "/cds-services"
FEEDBACK = "/feedback"


# -- step 1: authentication ------------------------------------------------------------------
def authenticate() -> None:
    """With FLUORO_CDS_AUTH=jwt (service/app.py installs it before every request then), every
    /cds-services... call through Flask needs a valid client JWT (:func:`caller_claims`); its
    claims are kept in ``g.jwt_claims``. (A service call itself is served by
    service/call_path.py, which calls :func:`caller_claims` the same way.)

    Here and on the rest of a call's path the request is read through one
    ``_get_current_object()`` rather than the ``request`` proxy: each attribute read through a
    werkzeug LocalProxy cost ~10 k instructions (a failed attribute look-up, then a partial)."""
    rt = runtime()
    request = _request()
    if rt.verifier is None or not request.path.startswith(PREFIX):
        return
    g.jwt_claims = caller_claims(rt, request.environ, request.path)


def caller_claims(rt: Runtime, environ: dict, path: str) -> dict | None:
    """The verified claims of the client's JWT for a call to `path` (None with FLUORO_CDS_AUTH=off);
    401 with a WWW-Authenticate challenge otherwise. Its ``aud`` must be the endpoint's URL
    (FLUORO_CDS_BASE_URL + path, else the request's own URL); for feedback, the service's URL
    is accepted too: clients differ on what "the CDS Service endpoint" of feedback is."""
    if rt.verifier is None:
        return None
    base = rt.settings.base_url
    url = base.rstrip("/") + path if base else get_current_url(environ, strip_querystring=True)
    audience: str | tuple[str, ...] = url
    if path.endswith(FEEDBACK) and path.count("/") == 3:  # /cds-services/{id}/feedback
        audience = (url, url[:-len(FEEDBACK)])
    try:
        return rt.verifier.verify(environ.get("HTTP_AUTHORIZATION"), audience)
    except AuthError as exc:
        # the reason and the (unverified) issuer, never the token
        log.info("401 on %s: %s (issuer %.100r)", path, exc, exc.issuer)
        metrics.jwt_refused(str(exc))
        raise ApiError(401, f"unauthorized: {exc}", code="login",
                       headers={"WWW-Authenticate": challenge(str(exc))}) from None


def _request() -> Request:
    """The request being served, without the proxy (werkzeug's documented way to read it often)."""
    return flask_request._get_current_object()  # type: ignore[attr-defined]


def _app() -> Flask:
    """The app serving the request, without the proxy."""
    return current_app._get_current_object()  # type: ignore[attr-defined]


# -- step 2: the request ---------------------------------------------------------------------
def request_body(environ: dict, limit: int | None) -> bytes:
    """The request body; 413 past `limit` (MAX_CONTENT_LENGTH), with or without Content-Length.

    Read from ``wsgi.input`` with werkzeug's rules: a body of unknown length (chunked) is read
    only from a server that terminates the input (``wsgi.input_terminated``; gunicorn does),
    one byte past the limit so that a longer one is refused rather than cut (werkzeug would cut
    it without a word), otherwise it is empty (werkzeug's safe fallback); a body with a
    Content-Length is read in one call, past the limit 413, short of its length from a server
    that does not terminate the input ClientDisconnected (400). Werkzeug's own path
    (EnvironHeaders, LimitedStream reading into 64 kB buffers, twice under gunicorn) cost
    ~0.15 M instructions more per request (benchmarks/RESULTS.md)."""
    length = get_content_length(environ)
    stream = environ["wsgi.input"]
    if length is None:  # chunked, or no Content-Length at all
        if not environ.get("wsgi.input_terminated"):
            return b""
        if not limit:
            return stream.read()
        data = stream.read(limit + 1)
        if len(data) > limit:
            raise body_too_large(limit)
        return data
    if limit and length > limit:
        raise body_too_large(limit)
    try:
        data = stream.read(length) if length else b""
    except (OSError, ValueError):  # as werkzeug's LimitedStream
        raise ClientDisconnected() from None
    if len(data) < length and not environ.get("wsgi.input_terminated"):
        raise ClientDisconnected()
    return data


def body_limit(app: Flask) -> int | None:
    """The largest request body `app` reads (MAX_CONTENT_LENGTH; None: no limit)."""
    return app.config.get("MAX_CONTENT_LENGTH")


def read_json_object(what: str, environ: dict, limit: int | None) -> dict:
    """The request body as a JSON object nested at most MAX_DEPTH deep; 400 otherwise."""
    data = request_body(environ, limit)
    if too_deep(data):
        raise ApiError(400, f"{what} nests arrays and objects more than {MAX_DEPTH} deep",
                       code="too-costly")
    try:
        body = loads(data)
    except ValueError as exc:  # orjson.JSONDecodeError: position only, never the text
        raise ApiError(400, f"{what} is not valid JSON: {exc}", code="structure") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"{what} must be a JSON object", code="structure", expression="$")
    return body


def _request_schema(hook: str) -> CompiledSchema:
    """The hook's request schema (with its context schema), else the generic request schema."""
    try:
        return request_validator(hook)
    except KeyError:
        return validator("request")


def validate_request(service: CdsService, body: dict) -> None:
    """`hook` is the service's hook (or an older name of it) and the body matches its JSON
    Schema; 400 otherwise."""
    if not service.accepts(body.get("hook")):
        raise ApiError(400, f"hook must be '{service.hook}' for service '{service.id}'",
                       expression="$.hook")
    validate(_request_schema(service.hook), body, "request")


def validate(schema: CompiledSchema, body: dict, what: str, at: str = "$") -> None:
    """400 naming the JSON path of the first problem (`at`: where `body` sits in the request)."""
    try:
        check(schema, body, what)
    except SchemaViolation as exc:
        path = at + exc.path[1:] if exc.path.startswith("$") else exc.path
        raise ApiError(400, str(exc).replace(exc.path, path, 1) if at != "$" else str(exc),
                       code="structure", expression=path) from None


def check_prefetch(service: CdsService, body: dict) -> None:
    """The service's own prefetch keys hold a FHIR resource or null (400 at $.prefetch.<key>
    otherwise); keys it did not declare are ignored whatever they hold."""
    prefetch = body.get("prefetch")
    if not prefetch:
        return
    for key in service.prefetch:
        value = prefetch.get(key)
        if value is not None:
            validate(resource_validator(), value, f"prefetch '{key}'", f"$.prefetch.{key}")


def check_required_context(service: CdsService, context: dict) -> None:
    missing = [k for k in service.required_context if k not in context]
    if missing:
        raise ApiError(400, f"context lacks {', '.join(missing)}", code="required",
                       expression=f"$.context.{missing[0]}")


def fhir_client(rt: Runtime, body: dict) -> FhirClient | None:
    """A client for the request's fhirServer (403 when it is not allowlisted), or None."""
    server = body.get("fhirServer")
    if server is None:
        return None
    if not fhir_server_allowed(server, rt.settings.fhir_allowlist):
        raise ApiError(403, "fhirServer is not on this service's FHIR server allowlist "
                            "(FLUORO_CDS_FHIR_ALLOWLIST)", code="forbidden", expression="$.fhirServer")
    token = (body.get("fhirAuthorization") or {}).get("access_token")
    return FhirClient(server, token, rt.client_settings)


def configuration(rt: Runtime, body: dict, environ: dict) -> dict:
    """The call's configuration options (defaults, deployment, request); 400 when invalid."""
    try:
        config = resolve(body.get("extension"), rt.settings.defaults)
    except ConfigError as exc:
        raise ApiError(400, str(exc), expression="$.extension") from exc
    # where documentation-missing cards link to (the SMART app, docs/smart-app.md)
    # (FLUORO_CDS_BASE_URL or FLUORO_CDS_SMART_LAUNCH_URL set: no request lookup at all)
    config[SMART_LAUNCH_KEY] = rt.smart_launch or launch_url(environ)
    return config


def caller_extras(claims: dict | None) -> dict:
    """Who called: the verified JWT issuer and, when given, the tenant (2.0 JWT claims)."""
    if not claims:
        return {}
    extras = {"client_issuer": claims["iss"]}
    if isinstance(claims.get("tenant"), str):
        extras["tenant"] = claims["tenant"]
    return extras


@dataclass
class CallRecord:
    """What the audit records of one service call."""

    service_id: str
    hook_instance: str | None = None
    status: int = 500
    cards: Sequence[dict] = ()  # the handler's (hooks.cards.RenderedCards: with their audit ids)
    claims: dict | None = None  # the caller's verified JWT claims (FLUORO_CDS_AUTH=jwt)


def parse_hook_request(rt: Runtime, service: CdsService, call: CallRecord, environ: dict,
                       limit: int | None) -> HookRequest:
    """The request body as the handler's HookRequest; every problem is an ApiError (400/403)."""
    body = read_json_object("request body", environ, limit)
    validate_request(service, body)
    call.hook_instance = body["hookInstance"]
    check_prefetch(service, body)
    context = body["context"]
    check_required_context(service, context)
    client = fhir_client(rt, body)
    config = configuration(rt, body, environ)
    gaps = Unchecked()  # shared by the FHIR access and the handler
    fhir = FhirAccess(prefetch=body.get("prefetch"), templates=service.prefetch,
                      context=context, client=client, unchecked=gaps)
    return HookRequest(hook=body["hook"], hook_instance=body["hookInstance"], context=context,
                       config=config, fhir=fhir, reference=rt.live.current(),
                       extras=caller_extras(call.claims), unchecked=gaps,
                       explain=explain_requested(body.get("extension")))


# -- step 3: the handler ---------------------------------------------------------------------
def run_handler(service: CdsService, hook_request: HookRequest) -> dict:
    """The handler's response, plus an info card on what could not be checked (when anything);
    an invalid resource is a 400, data it cannot do without a 412."""
    try:
        result = service.handler(hook_request)
    except InvalidResource as exc:
        raise ApiError(400, str(exc), expression=exc.path) from None
    except DataUnavailable as exc:
        raise ApiError(412, f"precondition failed: {exc}", code="not-found") from None
    if hook_request.unchecked:
        result.setdefault("cards", []).append(
            unchecked.card(hook_request.unchecked, service_label=service.label, uuid=new_uuid()))
    return result


# -- step 4: the audit -----------------------------------------------------------------------
def _topic_code(card: dict) -> str | None:
    topic = (card.get("source") or {}).get("topic") or {}
    code = topic.get("code") if isinstance(topic, dict) else None
    return str(code) if code else None


def audit_ids(cards: Sequence[dict]) -> tuple[tuple[str, ...], tuple[str, ...],
                                               tuple[tuple[str, ...], ...]]:
    """Per card with a uuid and a topic code: the uuid, the code and the rows or policy entries
    its Source block cites, as three aligned tuples (the audit and the feedback report).

    A card of :func:`hooks.cards.render` comes with them (``RenderedCards.audit``, as it was
    rendered); any other card (the could-not-be-checked card, a test's) is read from its JSON
    (:func:`hooks.cards.card_citations`: ~30 k instructions a card, most of the audit record's
    cost on the request thread)."""
    uuids: list[str] = []
    topics: list[str] = []
    citations: list[tuple[str, ...]] = []
    rendered = getattr(cards, "audit", ())
    for i, card in enumerate(cards):
        if i < len(rendered) and rendered[i][0] is card:
            _, uuid, topic, cites = rendered[i]
        elif isinstance(card, dict):
            uuid, topic = card.get("uuid"), _topic_code(card)
            if not (uuid and topic):
                continue
            cites = card_citations(card)
        else:
            continue
        uuids.append(str(uuid))
        topics.append(topic)
        citations.append(cites)
    return tuple(uuids), tuple(topics), tuple(citations)


def record_call(rt: Runtime, call: CallRecord, started: float) -> None:
    """Queue the call's audit record, log line and metrics: the state store's writer thread
    writes all three, a batch at a time (service/calls.py)."""
    latency = (time.perf_counter() - started) * 1000
    card_uuids, topics, citations = audit_ids(call.cards)
    rt.state.queue_audit((time.time(), call.service_id, call.hook_instance, call.status, card_uuids,
                          topics, rt.release.get(), latency, citations, call.claims))


# -- views -----------------------------------------------------------------------------------
@bp.get(PREFIX)
def discovery() -> Response:
    return Response(runtime().discovery_body, mimetype="application/json")


@bp.post(PREFIX + "/<service_id>")
def invoke(service_id: str) -> Response:
    """A call that service/call_path.py leaves to Flask (an unknown service: 404, or a path
    Flask's routing normalises); the same steps."""
    rt = runtime()
    service = rt.service(service_id)
    body = answer_call(rt, service, _request().environ, body_limit(_app()),
                       None if rt.verifier is None else g.get("jwt_claims"))
    return Response(body, mimetype="application/json")


def answer_call(rt: Runtime, service: CdsService, environ: dict, limit: int | None,
                claims: dict | None) -> bytes:
    """The JSON answer of one service call (the caller authenticated: `claims`): the request
    parsed, the handler run, the call recorded (:func:`record_call`) whatever happens. Every
    problem is raised (ApiError, or werkzeug's ClientDisconnected) for the app's error handlers."""
    started = time.perf_counter()
    call = CallRecord(service.id, claims=claims)
    try:
        result = run_handler(service, parse_hook_request(rt, service, call, environ, limit))
        call.cards = result.get("cards") or ()
        call.status = 200
        return dumps(result)
    except ApiError as err:
        call.status = err.status
        raise
    finally:
        record_call(rt, call, started)


@bp.post(PREFIX + "/<service_id>" + FEEDBACK)
def feedback(service_id: str) -> Response:
    rt = runtime()
    service = rt.service(service_id)
    body = read_json_object("feedback body", _request().environ, body_limit(_app()))
    validate(validator("feedback"), body, "feedback")
    stored = rt.state.add_feedback(service.id, body["feedback"])
    metrics.feedback_stored(body["feedback"])
    return json_response({"stored": stored})

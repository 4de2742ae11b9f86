"""Flask application factory: CDS Hooks discovery, invocation, feedback, health."""
from __future__ import annotations

import logging
import time

from flask import Flask, Response, request

from hooks.config import ConfigError, resolve
from hooks.context import DataUnavailable, HookRequest, InvalidResource
from hooks.services import BY_ID, SERVICES
from nccidata import open_reference

from .errors import ApiError, error_response
from .jsonio import dumps, loads
from .settings import Settings

log = logging.getLogger("fluoro_cds")


def _json(value, status: int = 200) -> Response:
    return Response(dumps(value), status=status, mimetype="application/json")


class _NoFhir:
    """FHIR access when the request carries neither prefetch nor fhirServer (placeholder)."""

    def __init__(self, prefetch: dict | None):
        self._prefetch = prefetch or {}

    def prefetched(self, key):
        return self._prefetch.get(key)

    def read(self, reference):
        raise DataUnavailable(f"{reference} is not in prefetch and no fhirServer was given")

    def search(self, resource_type, params):
        raise DataUnavailable(f"{resource_type} search needs a fhirServer")


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask("fluoro_cds")
    app.config["FLUORO_SETTINGS"] = settings
    reference = open_reference(settings.db_path)
    app.config["FLUORO_REFERENCE"] = reference

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

    @app.get("/healthz")
    def healthz():
        return _json({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        return _json({"status": "ready", "data": reference.describe()})

    @app.get("/cds-services")
    def discovery():
        return _json({"services": [s.discovery() for s in SERVICES]})

    @app.post("/cds-services/<service_id>")
    def invoke(service_id: str):
        started = time.perf_counter()
        service = BY_ID.get(service_id)
        if service is None:
            raise ApiError(404, f"unknown CDS service '{service_id}'", code="not-found")
        try:
            body = loads(request.get_data())
        except Exception as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}", code="structure")
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object", code="structure")
        if body.get("hook") != service.hook:
            raise ApiError(400, f"service '{service_id}' answers hook '{service.hook}', "
                                f"not '{body.get('hook')}'", expression="hook")
        try:
            config = resolve(body.get("extension"), settings.defaults)
        except ConfigError as exc:
            raise ApiError(400, str(exc), expression="extension") from exc
        hook_request = HookRequest(hook=body["hook"], hook_instance=str(body.get("hookInstance", "")),
                                   context=body.get("context") or {}, config=config,
                                   fhir=_NoFhir(body.get("prefetch")), reference=reference)
        try:
            result = service.handler(hook_request)
        except InvalidResource as exc:
            raise ApiError(400, str(exc), expression=exc.path) from exc
        except DataUnavailable as exc:
            raise ApiError(412, str(exc), code="not-found") from exc
        log.info("service=%s cards=%d ms=%.1f", service_id, len(result.get("cards", [])),
                 (time.perf_counter() - started) * 1000)
        return _json(result)

    return app

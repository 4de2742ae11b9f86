"""HTTP errors as JSON bodies: an OperationOutcome that names the problem (and its FHIR path)."""
from __future__ import annotations

import logging
import traceback

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from .jsonio import dumps

log = logging.getLogger("fluoro_cds")


class ApiError(Exception):
    """An error answered as JSON with an HTTP status."""

    def __init__(self, status: int, message: str, *, code: str = "invalid",
                 expression: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}
        self.status = status
        self.message = message
        self.code = code
        self.expression = expression

    def body(self) -> dict:
        issue = {"severity": "error", "code": self.code, "diagnostics": self.message}
        if self.expression:
            issue["expression"] = [self.expression]
        return {"resourceType": "OperationOutcome", "error": self.message, "issue": [issue]}


def body_too_large(limit: int | None) -> ApiError:
    """413: a request body past MAX_CONTENT_LENGTH."""
    return ApiError(413, f"request body larger than {limit} bytes", code="too-costly")


def error_response(err: ApiError) -> Response:
    resp = Response(dumps(err.body()), status=err.status, mimetype="application/json")
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp


def register_error_handlers(app: Flask) -> None:
    """Every error of `app` answered as JSON (ApiError, 404, 405, 413, other HTTP errors, 500)."""
    app.register_error_handler(ApiError, error_response)

    @app.errorhandler(404)
    def _not_found(_):
        return error_response(ApiError(404, "no such endpoint (see GET /cds-services)", code="not-found"))

    @app.errorhandler(405)
    def _bad_method(_):
        return error_response(ApiError(405, "method not allowed on this endpoint",
                                       code="not-supported"))

    @app.errorhandler(413)
    def _too_large(_):
        return error_response(body_too_large(app.config.get("MAX_CONTENT_LENGTH")))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        if isinstance(exc, HTTPException):
            status = exc.code or 500
            return error_response(ApiError(status, exc.description or exc.name,
                                           code="invalid" if status < 500 else "exception"))
        # type and stack only: an exception message may quote patient data
        log.error("unexpected %s on %s %s\n%s", type(exc).__name__, request.method, request.path,
                  "".join(traceback.format_tb(exc.__traceback__)))
        return error_response(ApiError(500, "internal error", code="exception"))

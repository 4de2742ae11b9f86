"""CORS (browser-based CDS clients such as the CDS Hooks sandbox) and the headers of every answer.

Preflights (``OPTIONS``) are answered 204 before authentication, allowing the request headers
the client asks for (``Access-Control-Request-Headers``, when each is a header name) or, when
FLUORO_CDS_CORS_ALLOW_HEADERS is set, that list (Fetch standard, CORS protocol); every answer carries
``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff`` (answers may describe a
patient's care: never cached, never sniffed). docs/service.md "CORS".
"""
from __future__ import annotations

import re

from flask import Flask, Response, request

from .settings import HEADER_NAME, Settings

ALLOW_HEADERS = "Authorization, Content-Type"  # when the preflight asks for none
MAX_REQUEST_HEADERS = 2048  # characters of Access-Control-Request-Headers echoed at most
_HEADER_LIST = re.compile(rf"\s*{HEADER_NAME}(?:\s*,\s*{HEADER_NAME})*\s*")
ALLOW_METHODS = "GET, POST, OPTIONS"
MAX_AGE = "600"


SECURITY_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


class AnswerHeaders:
    """The headers every answer carries, for the request whose WSGI environ is given: the
    security headers, and the CORS headers when the request has an Origin (an allowed origin is
    named in Access-Control-Allow-Origin; a preflight gets the methods, headers and max age).
    Used by the Flask app after every view and by service/call_path.py for a service call."""

    def __init__(self, settings: Settings) -> None:
        self.any_origin = "*" in settings.cors_origins
        self.origins = frozenset(settings.cors_origins)
        self.configured = ", ".join(settings.cors_allow_headers) or None

    def __call__(self, environ: dict) -> list[tuple[str, str]]:
        headers = list(SECURITY_HEADERS)
        origin = environ.get("HTTP_ORIGIN")
        if not origin:
            return headers
        if self.any_origin:
            headers.append(("Access-Control-Allow-Origin", "*"))
        elif origin.rstrip("/") in self.origins:
            headers += (("Access-Control-Allow-Origin", origin), ("Vary", "Origin"))
        if environ.get("REQUEST_METHOD", "").upper() == "OPTIONS":
            headers += (("Access-Control-Allow-Methods", ALLOW_METHODS),
                        ("Access-Control-Allow-Headers", self.configured or _asked_headers(environ)))
            if self.configured is None:
                headers.append(("Vary", "Access-Control-Request-Headers"))
            headers.append(("Access-Control-Max-Age", MAX_AGE))
        else:
            headers.append(("Access-Control-Expose-Headers", "WWW-Authenticate"))
        return headers


def install_cors(app: Flask, settings: Settings) -> AnswerHeaders:
    """Answer preflights and add the CORS and security headers to every answer of `app`;
    the headers' maker is returned for the service call path."""
    answer_headers = AnswerHeaders(settings)

    @app.before_request
    def _preflight():
        if request._get_current_object().method == "OPTIONS":  # type: ignore[attr-defined]
            return Response(status=204)  # CORS preflight: never authenticated
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        headers = resp.headers
        req = request._get_current_object()  # type: ignore[attr-defined]  # not the proxy: service/cds_hooks.py
        for name, value in answer_headers(req.environ):
            if name == "Vary":
                headers.add(name, value)  # a view's own Vary is kept
            else:
                headers[name] = value
        return resp

    return answer_headers


def _asked_headers(environ: dict) -> str:
    """The preflight's Access-Control-Request-Headers when it is a list of header names (as
    browsers send it), else the default pair (a malformed list is never echoed)."""
    asked = environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
    if asked and len(asked) <= MAX_REQUEST_HEADERS and _HEADER_LIST.fullmatch(asked):
        return ", ".join(h.strip() for h in asked.split(","))
    return ALLOW_HEADERS

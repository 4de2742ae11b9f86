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


def install_cors(app: Flask, settings: Settings) -> None:
    """Answer preflights and add the CORS and security headers to every answer of `app`."""
    any_origin = "*" in settings.cors_origins
    origins = frozenset(settings.cors_origins)
    configured = ", ".join(settings.cors_allow_headers) or None

    @app.before_request
    def _preflight():
        if request._get_current_object().method == "OPTIONS":  # type: ignore[attr-defined]
            return Response(status=204)  # CORS preflight: never authenticated
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        headers = resp.headers
        headers.set("Cache-Control", "no-store")
        headers.set("X-Content-Type-Options", "nosniff")
        req = request._get_current_object()  # type: ignore[attr-defined]  # not the proxy: service/cds_hooks.py
        origin = req.environ.get("HTTP_ORIGIN")  # the Origin header (request.headers reads it there)
        if origin:
            if any_origin:
                headers["Access-Control-Allow-Origin"] = "*"
            elif origin.rstrip("/") in origins:
                headers["Access-Control-Allow-Origin"] = origin
                headers.add("Vary", "Origin")
            if req.method == "OPTIONS":
                headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
                headers["Access-Control-Allow-Headers"] = configured or _asked_headers()
                if configured is None:
                    headers.add("Vary", "Access-Control-Request-Headers")
                headers["Access-Control-Max-Age"] = MAX_AGE
            else:
                headers["Access-Control-Expose-Headers"] = "WWW-Authenticate"
        return resp


def _asked_headers() -> str:
    """The preflight's Access-Control-Request-Headers when it is a list of header names (as
    browsers send it), else the default pair (a malformed list is never echoed)."""
    asked = request.headers.get("Access-Control-Request-Headers", "")
    if asked and len(asked) <= MAX_REQUEST_HEADERS and _HEADER_LIST.fullmatch(asked):
        return ", ".join(h.strip() for h in asked.split(","))
    return ALLOW_HEADERS

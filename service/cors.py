"""CORS (browser-based CDS clients such as the CDS Hooks sandbox) and the headers of every answer.

Preflights (``OPTIONS``) are answered 204 before authentication; every answer carries
``Cache-Control: no-store`` and ``X-Content-Type-Options: nosniff`` (answers may describe a
patient's care: never cached, never sniffed). docs/service.md "CORS".
"""
from __future__ import annotations

from flask import Flask, Response, request

from .settings import Settings

ALLOW_HEADERS = "Authorization, Content-Type"
ALLOW_METHODS = "GET, POST, OPTIONS"
MAX_AGE = "600"


def install_cors(app: Flask, settings: Settings) -> None:
    """Answer preflights and add the CORS and security headers to every answer of `app`."""
    any_origin = "*" in settings.cors_origins
    origins = frozenset(settings.cors_origins)

    @app.before_request
    def _preflight():
        if request.method == "OPTIONS":
            return Response(status=204)  # CORS preflight: never authenticated
        return None

    @app.after_request
    def _headers(resp: Response) -> Response:
        headers = resp.headers
        headers.set("Cache-Control", "no-store")
        headers.set("X-Content-Type-Options", "nosniff")
        origin = request.environ.get("HTTP_ORIGIN")  # the Origin header (request.headers reads it there)
        if origin:
            if any_origin:
                headers["Access-Control-Allow-Origin"] = "*"
            elif origin.rstrip("/") in origins:
                headers["Access-Control-Allow-Origin"] = origin
                headers.add("Vary", "Origin")
            if request.method == "OPTIONS":
                headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
                headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
                headers["Access-Control-Max-Age"] = MAX_AGE
            else:
                headers["Access-Control-Expose-Headers"] = "WWW-Authenticate"
        return resp

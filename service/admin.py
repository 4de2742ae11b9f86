"""Read-only operator endpoints, off by default: ``GET /admin/report`` (the feedback report).

Present only when FLUORO_CDS_ADMIN_TOKEN is set (otherwise 404, as for any unknown path); each
call needs ``Authorization: Bearer <that token>``, compared in constant time. Not a CDS Hooks
endpoint: the CDS client JWT does not apply, and the token is never logged.
"""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, request

from .errors import ApiError
from .jsonio import json_response
from .report import feedback_report, parse_since, render_html
from .runtime import runtime

bp = Blueprint("admin", __name__)


def _authorize() -> None:
    token = runtime().settings.admin_token
    if not token:
        raise ApiError(404, "no such endpoint (see GET /cds-services)", code="not-found")
    scheme, _, given = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized: /admin needs Authorization: Bearer <FLUORO_CDS_ADMIN_TOKEN>",
                       code="login", headers={"WWW-Authenticate": 'Bearer realm="fluoro-cds-admin"'})


@bp.get("/admin/report")
def report() -> Response:
    """The feedback report: ``?since=YYYY-MM-DD`` and ``?format=json|html`` (default json)."""
    _authorize()
    fmt = request.args.get("format", "json")
    if fmt not in ("json", "html"):
        raise ApiError(400, "format must be 'json' or 'html'", expression="format")
    try:
        since = parse_since(request.args.get("since"))
    except ValueError:
        raise ApiError(400, "since must be a date (YYYY-MM-DD) or an ISO 8601 time",
                       expression="since") from None
    data = feedback_report(runtime().state, since)
    if fmt == "html":
        return Response(render_html(data), mimetype="text/html",
                        headers={"Content-Security-Policy": "default-src 'none'; "
                                 "style-src 'unsafe-inline'; img-src data:"})
    return json_response(data)

"""Liveness and readiness: ``GET /healthz`` (the process is up) and ``GET /readyz`` (reference
data and state database usable, else 503 JSON). Never authenticated."""
from __future__ import annotations

import logging

from flask import Blueprint

from .jsonio import json_response
from .runtime import runtime
from .state import StateError

bp = Blueprint("health", __name__)
log = logging.getLogger("fluoro_cds")


@bp.get("/healthz")
def healthz():
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    rt = runtime()
    problems = []
    data = None
    try:
        data = rt.live.current().describe()
    except Exception as exc:
        problems.append(f"reference data unusable ({type(exc).__name__})")
    try:
        rt.state.check()
    except StateError as exc:
        problems.append(f"state database unusable ({exc})")
    if problems:
        return json_response({"resourceType": "OperationOutcome", "status": "not-ready",
                              "error": "; ".join(problems),
                              "issue": [{"severity": "error", "code": "transient", "diagnostics": p}
                                        for p in problems]}, 503)
    return json_response({"status": "ready", "data": data})


def state_unavailable(exc: StateError):
    """A request that needs the state database while it is down: 503 (retry), never a 500.
    The message names the error class only (service/state.py keeps URLs out of it)."""
    from .errors import ApiError, error_response

    log.error("state database unusable: %s", exc)
    return error_response(ApiError(503, "the state database is unavailable; retry later",
                                   code="transient", headers={"Retry-After": "5"}))

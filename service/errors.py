"""HTTP errors as JSON bodies: an OperationOutcome that names the problem (and its FHIR path)."""
from __future__ import annotations

from flask import Response

from .jsonio import dumps


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


def error_response(err: ApiError) -> Response:
    resp = Response(dumps(err.body()), status=err.status, mimetype="application/json")
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp

"""Logging: one line per CDS service call on logger ``fluoro_cds.request``, as JSON or plain text.

FLUORO_CDS_LOG_FORMAT=json (containers, log shippers) writes each record as one JSON object:
time, level, logger, message, and for a call: service, status, latency_ms, hookInstance,
data_release, client_issuer, tenant. ``text`` (the default, for a terminal) writes the same fields
as ``key=value``. Never logged: tokens, JWTs, request or resource contents (the call line holds
only the fields above).
"""
from __future__ import annotations

import logging
import sys
import time

from .jsonio import dumps

REQUEST_LOGGER = "fluoro_cds.request"
CALL_FIELDS = ("service", "status", "latency_ms", "hookInstance", "data_release", "client_issuer",
               "tenant")


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a call's fields come from ``extra={"call": {...}}``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                       + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        call = getattr(record, "call", None)
        if call:
            out.update(call)
        if record.exc_info:
            out["error"] = record.exc_info[0].__name__ if record.exc_info[0] else "error"
        return dumps(out).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        call = getattr(record, "call", None)
        text = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
                + f" {record.levelname} {record.name}: {record.getMessage()}")
        if call:
            text += " " + " ".join(f"{k}={v}" for k, v in call.items() if v is not None)
        return text


def configure(fmt: str) -> None:
    """Send the fluoro_cds loggers to stderr in `fmt` ('json' or 'text'), INFO and above (once
    per process; gunicorn's own log lines keep their format)."""
    root = logging.getLogger("fluoro_cds")
    for handler in list(root.handlers):
        if getattr(handler, "_fluoro_cds", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._fluoro_cds = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


_request_log = logging.getLogger(REQUEST_LOGGER)


def log_call(call: dict) -> None:
    """The call's one line (the message names service and status; fields in `call`)."""
    if _request_log.isEnabledFor(logging.INFO):
        _request_log.info("%s %s", call["service"], call["status"], extra={"call": call})

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


class _SecondClock:
    """A record's time as text, formatted once per second (every call line needs one: strftime
    cost more than the rest of a line's format)."""

    def __init__(self, pattern: str, convert) -> None:
        self.pattern, self.convert = pattern, convert
        self.second, self.text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self.second:  # two threads may both format it: same text, no harm
            self.text, self.second = time.strftime(self.pattern, self.convert(second)), second
        return self.text


class JsonFormatter(logging.Formatter):
    """One JSON object per record; a call's fields come from ``extra={"call": {...}}``."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _SecondClock("%Y-%m-%dT%H:%M:%S", time.gmtime)

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self._clock(record.created) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        call = getattr(record, "call", None)
        if call:
            out.update(call)
        if record.exc_info:
            out["error"] = record.exc_info[0].__name__ if record.exc_info[0] else "error"
        return dumps(out).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _SecondClock("%Y-%m-%d %H:%M:%S", time.localtime)

    def format(self, record: logging.LogRecord) -> str:
        call = getattr(record, "call", None)
        text = f"{self._clock(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
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
    """The call's one line (the message names service and status; fields in `call`).

    The record is made and handled directly: ``Logger.info`` would also walk the stack for the
    caller's file and line, which no formatter here prints (a tenth of a call line's cost)."""
    if _request_log.isEnabledFor(logging.INFO):
        _request_log.handle(_request_log.makeRecord(
            REQUEST_LOGGER, logging.INFO, __name__, 0, "%s %s", (call["service"], call["status"]),
            None, extra={"call": call}))

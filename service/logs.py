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
        error = None
        if record.exc_info:
            error = record.exc_info[0].__name__ if record.exc_info[0] else "error"
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         getattr(record, "call", None), int(record.msecs), error)

    def line(self, created: float, level: str, name: str, message: str, call: dict | None,
             msecs: int | None = None, error: str | None = None) -> str:
        """The line of a record with these fields (`msecs` as LogRecord computes it)."""
        if msecs is None:
            msecs = int((created - int(created)) * 1000)
        out = {"time": self._clock(created) + f".{msecs:03d}Z", "level": level.lower(),
               "logger": name, "message": message}
        if call:
            out.update(call)
        if error:
            out["error"] = error
        return dumps(out).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._clock = _SecondClock("%Y-%m-%d %H:%M:%S", time.localtime)

    def format(self, record: logging.LogRecord) -> str:
        return self.line(record.created, record.levelname, record.name, record.getMessage(),
                         getattr(record, "call", None))

    def line(self, created: float, level: str, name: str, message: str, call: dict | None,
             msecs: int | None = None) -> str:
        """The line of a record with these fields."""
        text = f"{self._clock(created)} {level} {name}: {message}"
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
_package_log = logging.getLogger("fluoro_cds")


def _own_handler() -> logging.StreamHandler | None:
    """The handler :func:`configure` installed, when it is the only place a call line goes: no
    handler or filter on the request logger, none on the handler, nothing propagated past it.
    Any other set-up (a handler an operator or a test added) gets the logging machinery."""
    lg = _request_log
    if lg.handlers or lg.filters or not lg.propagate or lg.parent is not _package_log:
        return None
    handlers = _package_log.handlers
    if len(handlers) != 1 or _package_log.propagate:
        return None
    handler = handlers[0]
    if (not getattr(handler, "_fluoro_cds", False) or handler.filters
            or handler.level > logging.INFO):
        return None
    return handler  # type: ignore[return-value]


def log_calls(calls: list[tuple[float, dict]]) -> None:
    """The lines of a batch of calls, each ``(time, fields)``: the service's calls are logged
    so, by the audit writer thread (service/calls.py).

    Profiled at ~6% of a claim-review request's instructions through ``Logger.handle``: with
    the handler of :func:`configure` the only one, the lines are formatted by that handler's
    formatter from the fields and written under the handler's lock in one write, as
    ``StreamHandler.emit`` would write each, without building LogRecords (pid, thread and
    process names, file name: nothing a call line prints). Otherwise each record goes through
    logging, with its call's time (no stack walk: no formatter here prints the caller's file
    and line)."""
    if not calls or not _request_log.isEnabledFor(logging.INFO):
        return
    handler = _own_handler()
    if handler is not None:
        line, end = handler.formatter.line, handler.terminator  # type: ignore[union-attr]
        text = "".join([line(t, "INFO", REQUEST_LOGGER, f"{call['service']} {call['status']}", call)
                        + end for t, call in calls])
        try:
            with handler.lock:  # type: ignore[union-attr]
                handler.stream.write(text)
                handler.stream.flush()
            return
        except Exception:  # a closed stream...: logging's own error handling decides
            pass
    for t, call in calls:
        record = _request_log.makeRecord(
            REQUEST_LOGGER, logging.INFO, __name__, 0, "%s %s", (call["service"], call["status"]),
            None, extra={"call": call})
        record.created, record.msecs = t, int((t - int(t)) * 1000) + 0.0  # as LogRecord sets them
        _request_log.handle(record)

"""The service app with parts of its per-call observability switched off, for
benchmarks/bench_observability.py only (never deployed): BENCH_OFF lists any of log, metrics,
audit (comma-separated). The three are written together, a batch at a time, by the audit
writer thread (service/calls.py); "audit" drops the batches' audit rows where they would be
stored, "log" and "metrics" their lines and counts."""
from __future__ import annotations

import logging
import os

from service.app import create_app as _create_app


def create_app():
    app = _create_app()
    off = set(os.environ.get("BENCH_OFF", "").split(","))
    if "log" in off:
        logging.getLogger("fluoro_cds.request").disabled = True
    if "metrics" in off:
        import service.calls as calls
        calls.metrics.service_calls = lambda *args: None
    if "audit" in off:
        import service.state as state
        state.StateStore._store_audit = lambda self, records: None
    return app

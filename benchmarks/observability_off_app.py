"""The service app with parts of its per-call observability switched off, for
benchmarks/bench_observability.py only (never deployed): BENCH_OFF lists any of log, metrics,
audit (comma-separated)."""
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
        import service.cds_hooks as cds_hooks
        cds_hooks.metrics.service_call = lambda *args: None
    if "audit" in off:
        import service.state as state
        state.StateStore.record_audit = lambda self, rec: None
    return app

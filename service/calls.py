"""What every answered service call leaves behind besides its answer: its audit record, its log
line and its metrics, all three written off the request thread, in batches.

The request thread queues one tuple per call on the state store's audit queue
(:func:`service.cds_hooks.record_call`: the :func:`service.state.audit_tuple` fields, then the
caller's verified JWT claims). Every AUDIT_INTERVAL (0.1 s), on ``flush()`` and at worker exit the
store's writer thread hands each batch to :func:`after_calls` before it stores the audit rows:
the batch's log lines are written in one write (service/logs.py), its metrics counted once per
label set (service/metrics.py). So a call's line and counts appear at most ~0.1 s after its
answer (later only while the thread-mode writer waits on a busy database), each line with the
call's own time; a worker killed outright loses the lines, counts and audit rows of its last
~0.1 s alike. On every request thread, the line's write (a system call, handing the GIL over
and back) and the metric increments (a lock each) cost more than the queueing does
(benchmarks/RESULTS.md, "Load benchmark").
"""
from __future__ import annotations

from . import metrics
from .logs import log_calls
from .state import AUDIT_FIELDS

CLAIMS = AUDIT_FIELDS  # where a queued call's JWT claims are (None without FLUORO_CDS_AUTH=jwt), last


def after_calls(records: list[tuple]) -> None:
    """The log lines and metrics of the calls among a batch of queued audit records (a record
    queued without claims, :meth:`StateStore.record_audit`, is no call of this process's)."""
    calls = [r for r in records if len(r) == CLAIMS + 1]
    if not calls:
        return
    counted, lines = [], []
    for at, service, hook_instance, status, _uuids, topics, release, latency, _cites, claims in calls:
        counted.append((service, status, latency / 1000, topics))
        claims = claims or {}
        tenant = claims.get("tenant")
        lines.append((at, {"service": service, "status": status, "latency_ms": round(latency, 2),
                           "hookInstance": hook_instance, "data_release": release,
                           "client_issuer": claims.get("iss"),
                           "tenant": tenant if isinstance(tenant, str) else None}))
    metrics.service_calls(counted)
    log_calls(lines)

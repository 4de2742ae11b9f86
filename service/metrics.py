"""Prometheus metrics (prometheus-client), served at ``GET /metrics``; names prefixed fluoro_cds_.

Under gunicorn the workers share their values through prometheus-client's multiprocess mode:
``fluoro-cds serve`` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before the workers
start (service/gunicorn_app.py) and a worker's files are marked dead when it exits; /metrics then
adds every worker's values up. Without it (tests, the development server) the process's own
registry is served. The service's calls are counted a batch at a time, off the request thread
(service/calls.py): a call's counts appear at most ~0.1 s after its answer.
"""
from __future__ import annotations

import os
import threading
from typing import Any

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Metrics:
    """The metric objects, made on first use in the process that serves (a gunicorn worker):
    prometheus-client picks in-memory or multiprocess values when a metric is made, and the
    master imports this module before PROMETHEUS_MULTIPROC_DIR is set."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram, values

        values.ValueClass = values.get_value_class()  # multiprocess when the directory is set
        self.requests = Counter("fluoro_cds_requests", "CDS service calls answered, by service "
                                "and HTTP status", ("service", "status"))
        self.latency = Histogram("fluoro_cds_request_seconds", "CDS service call latency, by "
                                 "service and status", ("service", "status"), buckets=LATENCY_BUCKETS)
        self.cards = Counter("fluoro_cds_cards", "cards answered, by finding code", ("finding",))
        self.feedback = Counter("fluoro_cds_feedback", "feedback items stored, by outcome "
                                "(accepted, overridden)", ("outcome",))
        self.precondition_failed = Counter("fluoro_cds_precondition_failed", "calls answered 412 "
                                           "(FHIR data neither prefetched nor fetchable)", ("service",))
        self.fhir_fetches = Counter("fluoro_cds_fhir_fetches", "HTTP requests to FHIR servers, by "
                                    "kind (read, search) and outcome (2xx, 3xx, 4xx, 5xx, "
                                    "unreachable)", ("kind", "outcome"))
        self.jwt_refusals = Counter("fluoro_cds_jwt_refusals", "client JWTs refused (401), by "
                                    "reason", ("reason",))
        self.audit_lost = Counter("fluoro_cds_audit_lost", "audit records not stored, by reason "
                                  "(writer_full: the audit writer process fell behind; "
                                  "writer_died; database_error)", ("reason",))


_made: _Metrics | None = None
_making = threading.Lock()


def _m() -> _Metrics:
    """The metrics, made once: the FHIR fetch pool's threads may ask for them at the same time
    (two makers would register the same names twice: DuplicateTimeseries)."""
    global _made
    if _made is None:
        with _making:
            if _made is None:
                _made = _Metrics()
    return _made


def _reason(message: str) -> str:
    """A bounded label for an AuthError message (numbers dropped: they come from settings)."""
    return "".join(ch for ch in message if not ch.isdigit()).strip()[:80]


def jwt_refused(message: str) -> None:
    _m().jwt_refusals.labels(_reason(message)).inc()


def fhir_fetch(kind: str, status: int | None) -> None:
    _m().fhir_fetches.labels(kind, "unreachable" if status is None else f"{status // 100}xx").inc()


_call_children: dict[tuple[str, int], tuple] = {}  # (service, status) -> its metric children
_card_children: dict[str, Any] = {}  # finding code -> its counter child


def _call_metrics(service_id: str, status: int) -> tuple:
    """The labelled children of calls to `service_id` answered `status`, looked up once per
    label set (``labels()`` validating and locking costs more than the increment itself)."""
    children = _call_children.get((service_id, status))
    if children is None:
        m, code = _m(), str(status)
        children = (m.requests.labels(service_id, code), m.latency.labels(service_id, code),
                    m.precondition_failed.labels(service_id) if status == 412 else None)
        _call_children[(service_id, status)] = children
    return children


def service_calls(calls: list[tuple[str, int, float, tuple[str, ...]]]) -> None:
    """Count a batch of calls, each (service, status, seconds, finding codes of its cards): the
    latencies observed one by one, the counters incremented once per label set (service/calls.py
    counts the service's calls so, a batch at a time)."""
    counts: dict[tuple, int] = {}
    cards: dict[str, int] = {}
    for service_id, status, seconds, topics in calls:
        children = _call_metrics(service_id, status)
        children[1].observe(seconds)
        counts[children] = counts.get(children, 0) + 1
        for topic in topics:
            cards[topic] = cards.get(topic, 0) + 1
    for children, n in counts.items():
        children[0].inc(n)
        if children[2] is not None:
            children[2].inc(n)
    for topic, n in cards.items():
        child = _card_children.get(topic)
        if child is None:
            child = _card_children[topic] = _m().cards.labels(topic)
        child.inc(n)


def audit_lost(reason: str, n: int) -> None:
    """Count audit records that will not be stored (service/state.py logs them too)."""
    _m().audit_lost.labels(reason).inc(n)


def feedback_stored(items) -> None:
    feedback = _m().feedback
    for item in items:
        feedback.labels(str(item.get("outcome"))).inc()


BATCH_METRICS_SUFFIX = ".prom"  # node_exporter's textfile collector reads *.prom only


def write_batch_textfile(path: str, summary: dict, finished: float) -> None:
    """The counts of one `fluoro-cds batch` run as a Prometheus text file, for node_exporter's
    textfile collector (prometheus-client ``write_to_textfile``: written aside and renamed, so a
    scrape never reads half a file). Gauges of the last run that succeeded: a run that fails
    leaves the previous file, and ``fluoro_cds_batch_last_success_timestamp_seconds`` ages (the
    usual alert for a batch job that stopped succeeding)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    reg = CollectorRegistry()
    Gauge("fluoro_cds_batch_records", "records (claims) reviewed by the last batch run",
          registry=reg).set(summary["records"])
    Gauge("fluoro_cds_batch_errors", "records of the last batch run answered with an error",
          registry=reg).set(summary["errors"])
    findings = Gauge("fluoro_cds_batch_findings", "findings of the last batch run, by finding code",
                     ("finding",), registry=reg)
    for code, count in summary["findings"].items():
        findings.labels(code).set(count)
    Gauge("fluoro_cds_batch_duration_seconds", "how long the last batch run took",
          registry=reg).set(summary["seconds"])
    Gauge("fluoro_cds_batch_last_success_timestamp_seconds", "when the last batch run finished "
          "(Unix time)", registry=reg).set(finished)
    write_to_textfile(path, reg)


def exposition(release: str | None) -> tuple[bytes, str]:
    """The metrics text: every worker's values in multiprocess mode, else this process's; plus
    fluoro_cds_ncci_release_info{release=...} 1 for the reference data in service."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

    _m()  # this process's metrics exist (and are listed) before the first call
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        body = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        body = generate_latest(REGISTRY)
    info = CollectorRegistry()
    Gauge("fluoro_cds_ncci_release_info", "the NCCI reference data release in service (value 1)",
          ("release",), registry=info).labels(release or "none").set(1)
    return body + generate_latest(info), CONTENT_TYPE_LATEST


def blueprint():
    """``GET /metrics`` (never authenticated: keep it off the public proxy, deploy/nginx.conf)."""
    from flask import Blueprint, Response

    from .runtime import runtime

    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def metrics() -> Response:
        body, content_type = exposition(runtime().release.get())
        return Response(body, content_type=content_type)

    return bp


def prepare_multiprocess(options: dict) -> None:
    """Before gunicorn forks: a fresh PROMETHEUS_MULTIPROC_DIR for this instance (unless the
    operator set one; it must be empty at start) and a child_exit hook marking a dead worker's
    files, so /metrics adds up the live workers. Called by service/gunicorn_app.run_gunicorn."""
    import atexit
    import shutil
    import tempfile

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        path = tempfile.mkdtemp(prefix="fluoro-cds-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        master = os.getpid()
        atexit.register(lambda: os.getpid() == master and shutil.rmtree(path, ignore_errors=True))

    def child_exit(_server, worker) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)

    options["child_exit"] = child_exit

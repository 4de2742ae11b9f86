"""Metrics at /metrics (prometheus-client; multiprocess mode under gunicorn) and the one-line-per-
call logs (JSON or text) that never carry tokens or patient data."""
from __future__ import annotations

import json
import logging
import re
import time

import requests

from service.settings import Settings
from tests.report_support import claim_request, exercise
from tests.serve_support import Served, post_on_new_connections, serve_env
from tests.service_support import closed_port, make_app

SERVICE = "fluoroscopy-claim-review"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of sample `name` with exactly these labels (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return 0.0


def flushed(app) -> None:
    """The app's queued calls logged and counted (service/calls.py: the audit writer thread
    writes them a batch at a time; a flush waits for the batch)."""
    assert app.config["FLUORO_STATE"].flush()


def test_metrics_count_calls_cards_feedback_412s_and_fhir_fetches(tmp_path):
    app = make_app(tmp_path)
    client = app.test_client()
    before = client.get("/metrics").get_data(as_text=True)

    def post(path, body):
        resp = client.post(path, json=body)
        return resp.status_code, resp.get_json()

    exercise(post)  # 6 calls (200), 6 cards, 6 feedback items: 3 accepted, 3 overridden
    body = claim_request("33289", "76000")
    body["context"]["claim"]["insurance"][0]["coverage"] = {"reference": "Coverage/missing"}
    body["fhirServer"] = f"http://127.0.0.1:{closed_port()}/fhir"
    assert client.post(f"/cds-services/{SERVICE}", json={"hook": "x"}).status_code == 400
    flushed(app)
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    after = resp.get_data(as_text=True)

    def delta(name, **labels):
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("fluoro_cds_requests_total", service=SERVICE, status="200") == 6
    assert delta("fluoro_cds_requests_total", service=SERVICE, status="400") == 1
    assert delta("fluoro_cds_request_seconds_count", service=SERVICE, status="200") == 6
    assert delta("fluoro_cds_cards_total", finding="ptp-bundled") == 3
    assert delta("fluoro_cds_cards_total", finding="fluoroscopy-integral") == 2
    assert delta("fluoro_cds_feedback_total", outcome="accepted") == 3
    assert delta("fluoro_cds_feedback_total", outcome="overridden") == 3
    assert metric(after, "fluoro_cds_ncci_release_info", release="starter-2024Q3") == 1 \
        or "fluoro_cds_ncci_release_info{" in after


def test_412_and_unreachable_fhir_server_are_counted(tmp_path):
    from tests.service_support import discharge_request

    app = make_app(tmp_path)
    client = app.test_client()
    before = client.get("/metrics").get_data(as_text=True)
    body = discharge_request(fhirServer=f"http://127.0.0.1:{closed_port()}/fhir")
    assert client.post("/cds-services/fluoroscopy-discharge-review", json=body).status_code == 412
    flushed(app)
    after = client.get("/metrics").get_data(as_text=True)
    assert (metric(after, "fluoro_cds_precondition_failed_total", service="fluoroscopy-discharge-review")
            - metric(before, "fluoro_cds_precondition_failed_total",
                     service="fluoroscopy-discharge-review")) == 1
    assert (metric(after, "fluoro_cds_fhir_fetches_total", kind="read", outcome="unreachable")
            - metric(before, "fluoro_cds_fhir_fetches_total", kind="read", outcome="unreachable")) >= 1


def test_json_log_line_per_call_without_tokens_or_patient_data(tmp_path, capsys):
    app = make_app(tmp_path, log_format="json")
    client = app.test_client()
    body = claim_request("33289", "76000")
    body["context"]["patientId"] = "pat-SECRET-4711"
    body["context"]["claim"]["patient"] = {"reference": "Patient/pat-SECRET-4711"}
    assert client.post(f"/cds-services/{SERVICE}", json=body,
                       headers={"Authorization": "Bearer not-a-real-token-SECRET"}).status_code == 200
    flushed(app)
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    [call] = [line for line in lines if line.get("logger") == "fluoro_cds.request"]
    assert call["service"] == SERVICE and call["status"] == 200
    assert call["hookInstance"] == body["hookInstance"] and call["latency_ms"] >= 0
    assert call["data_release"] and "client_issuer" in call and "tenant" in call
    assert "SECRET" not in err
    logging.getLogger("fluoro_cds").handlers.clear()


def test_log_times_are_each_records_own_time():
    """The formatters cache the time text per second: each record still shows its own second."""
    import time

    from service.logs import JsonFormatter, TextFormatter

    def record(created: float) -> logging.LogRecord:
        rec = logging.LogRecord("fluoro_cds.request", logging.INFO, __file__, 1, "x", None, None)
        rec.created, rec.msecs = created, (created % 1) * 1000
        return rec

    text, jsonf = TextFormatter(), JsonFormatter()
    for created in (1_700_000_000.25, 1_700_000_000.75, 1_700_000_001.5, 1_700_000_061.0, 1_700_000_000.0):
        assert text.format(record(created)).startswith(
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) + " INFO")
        assert json.loads(jsonf.format(record(created)))["time"] == (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int((created % 1) * 1000):03d}Z")


def test_text_logs_are_the_default():
    assert Settings.from_env({}).log_format == "text"


def test_metrics_add_up_over_gunicorn_workers(tmp_path):
    with Served(serve_env(tmp_path), workers=2) as served:
        url = f"{served.url}/cds-services/{SERVICE}"
        post_on_new_connections(url, claim_request("33289", "76000"), 12)  # over both workers

        def scrape() -> str:
            return requests.get(served.url + "/metrics", timeout=10,
                                headers={"Connection": "close"}).text

        deadline = time.monotonic() + 5  # each worker counts its calls within ~0.1 s (calls.py)
        while (metric(scrape(), "fluoro_cds_requests_total", service=SERVICE, status="200") < 12
               and time.monotonic() < deadline):
            time.sleep(0.05)
        seen = set()
        for _ in range(6):
            text = scrape()
            seen.add(metric(text, "fluoro_cds_requests_total", service=SERVICE, status="200"))
        assert seen == {12.0}, seen  # every scrape, whichever worker answers, sums both
        assert metric(text, "fluoro_cds_cards_total", finding="ptp-bundled") == 12


def _configured(fmt, monkeypatch):
    """configure(fmt) writing to a StringIO; the clock fixed (both log paths read time.time)."""
    import io
    import time

    from service import logs

    monkeypatch.setattr(time, "time", lambda: NOW)
    monkeypatch.setattr(logging.getLogger("fluoro_cds"), "handlers", [])  # whatever others left
    logs.configure(fmt)
    handlers = logging.getLogger("fluoro_cds").handlers
    assert len(handlers) == 1, handlers
    handler = handlers[0]
    out = io.StringIO()
    monkeypatch.setattr(handler, "stream", out)
    return logs, handler, out


NOW = 1_700_000_000.5  # the clock _configured fixes
CALL = {"service": SERVICE, "status": 200, "latency_ms": 1.25, "hookInstance": "h-1",
        "data_release": "starter-2024Q3", "client_issuer": None, "tenant": "t"}


def test_call_line_written_directly_equals_the_logging_path(monkeypatch):
    """log_calls writes the configured handler's line itself (service/logs.py: no LogRecord);
    the line is the one the logging machinery writes for the same call, in both formats."""
    request_log = logging.getLogger("fluoro_cds.request")
    try:
        for fmt in ("text", "json"):
            logs, handler, out = _configured(fmt, monkeypatch)
            assert logs._own_handler() is handler
            logs.log_calls([(NOW, CALL)])
            direct = out.getvalue()
            request_log.addFilter(lambda record: True)  # any filter: the logging path
            assert logs._own_handler() is None
            logs.log_calls([(NOW, CALL)])
            request_log.filters.clear()
            assert direct and out.getvalue() == direct * 2, (fmt, out.getvalue())
            if fmt == "json":
                assert json.loads(direct)["time"] == "2023-11-14T22:13:20.500Z"
                assert json.loads(direct)["tenant"] == "t" and "client_issuer" in json.loads(direct)
            else:
                assert direct.endswith(f"fluoro_cds.request: {SERVICE} 200 service={SERVICE} "
                                       "status=200 latency_ms=1.25 hookInstance=h-1 "
                                       "data_release=starter-2024Q3 tenant=t\n")
    finally:
        request_log.filters.clear()
        logging.getLogger("fluoro_cds").handlers.clear()


def test_call_line_reaches_added_handlers_and_respects_filters(monkeypatch):
    """A handler an operator adds gets every call record; a handler's filter still decides."""
    request_log = logging.getLogger("fluoro_cds.request")
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    extra = Keep()
    try:
        logs, handler, out = _configured("text", monkeypatch)
        request_log.addHandler(extra)
        logs.log_calls([(NOW, CALL)])
        assert seen == [f"{SERVICE} 200"] and out.getvalue().count("\n") == 1
        request_log.removeHandler(extra)
        handler.addFilter(lambda record: False)
        logs.log_calls([(NOW, CALL)])
        assert out.getvalue().count("\n") == 1  # filtered out: nothing more written
        handler.filters.clear()
        request_log.setLevel(logging.WARNING)
        logs.log_calls([(NOW, CALL)])
        assert out.getvalue().count("\n") == 1
    finally:
        request_log.setLevel(logging.NOTSET)
        request_log.removeHandler(extra)
        logging.getLogger("fluoro_cds").handlers.clear()


def test_call_lines_from_many_threads_stay_whole(monkeypatch):
    import threading

    try:
        logs, handler, out = _configured("json", monkeypatch)
        threads = [threading.Thread(target=lambda: [logs.log_calls([(NOW, CALL)]) for _ in range(300)])
                   for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        lines = out.getvalue().splitlines()
        assert len(lines) == 1200 and all(json.loads(line)["status"] == 200 for line in lines)
    finally:
        logging.getLogger("fluoro_cds").handlers.clear()


def test_a_batch_of_call_lines_is_one_write_each_line_at_its_calls_time(monkeypatch):
    """log_calls (the audit thread's batch, service/calls.py) writes a batch's lines in one
    write, each with its own call's time, the same text as the logging path writes."""
    request_log = logging.getLogger("fluoro_cds.request")
    try:
        for fmt in ("json", "text"):
            logs, handler, out = _configured(fmt, monkeypatch)
            writes = []
            monkeypatch.setattr(out, "write", lambda text, write=out.write: writes.append(text) or write(text))
            batch = [(1_700_000_000.25, CALL), (1_700_000_001.75, dict(CALL, status=400))]
            logs.log_calls(batch)
            assert len(writes) == 1 and writes[0].count("\n") == 2
            request_log.addFilter(lambda record: True)  # the logging path: one record each
            logs.log_calls(batch)
            request_log.filters.clear()
            assert out.getvalue() == writes[0] * 2, fmt
            first, second = writes[0].splitlines()
            if fmt == "json":
                assert json.loads(first)["time"] == "2023-11-14T22:13:20.250Z"
                assert (json.loads(second)["time"], json.loads(second)["status"]) == (
                    "2023-11-14T22:13:21.750Z", 400)
            else:
                assert second.startswith(time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(1_700_000_001)))
    finally:
        request_log.filters.clear()
        logging.getLogger("fluoro_cds").handlers.clear()


def test_metrics_of_a_batch_count_as_its_calls_one_by_one():
    """service_calls increments each counter once per label set: the same counts and histogram
    as the calls counted one at a time."""
    from prometheus_client import REGISTRY

    from service import metrics

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    calls = [("svc-a", 200, 0.003, ("ptp-bundled",)), ("svc-a", 412, 0.2, ()),
             ("svc-b", 200, 0.02, ("ptp-bundled", "mue-exceeded")), ("svc-a", 200, 7.0, ())]
    names = [("fluoro_cds_requests_total", {"service": "svc-a", "status": "200"}),
             ("fluoro_cds_requests_total", {"service": "svc-a", "status": "412"}),
             ("fluoro_cds_precondition_failed_total", {"service": "svc-a"}),
             ("fluoro_cds_cards_total", {"finding": "ptp-bundled"}),
             ("fluoro_cds_cards_total", {"finding": "mue-exceeded"}),
             ("fluoro_cds_request_seconds_bucket", {"service": "svc-a", "status": "200", "le": "0.005"}),
             ("fluoro_cds_request_seconds_bucket", {"service": "svc-a", "status": "200", "le": "10.0"}),
             ("fluoro_cds_request_seconds_sum", {"service": "svc-a", "status": "200"})]
    before = [sample(n, **lb) for n, lb in names]
    for call in calls:
        metrics.service_calls([call])
    one_by_one = [sample(n, **lb) - b for (n, lb), b in zip(names, before)]
    metrics.service_calls(calls)
    batched = [sample(n, **lb) - b - o for (n, lb), b, o in zip(names, before, one_by_one)]
    assert batched == one_by_one == [2, 1, 1, 2, 1, 1, 2, 7.003]

"""`fluoro-cds serve` behind its nginx front: slow clients cannot stop it, body limits answer JSON.

Real nginx and gunicorn on 127.0.0.1, started and stopped here; the full-minute figure is
benchmarks/bench_slow_clients.py's (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from service.app import MAX_BODY_BYTES
from service.front import find_nginx
from tests.service_support import claim_review_request
from tests.slow_clients import SERVICE_PATH, SlowClients, normal_requests, start_serve

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed "
                                "(tools/test-deps.sh installs it)")

TIMEOUTS = {"FLUORO_CDS_CLIENT_HEADER_TIMEOUT": "2", "FLUORO_CDS_CLIENT_BODY_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("front")
    with start_serve(tmp, **TIMEOUTS) as served:
        yield served.port


def _body() -> bytes:
    return json.dumps(claim_review_request()).encode()


def _read_all(sock: socket.socket, limit: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or `limit` seconds pass), and when."""
    started = time.monotonic()
    sock.settimeout(0.5)
    data = b""
    while time.monotonic() - started < limit:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def test_normal_requests_are_served_while_slow_clients_hold_connections(served):
    """One gthread worker with 4 threads: without the front, 4 slow clients would stop it."""
    clients = SlowClients(served, headers=50, bodies=50, interval=0.5).start()
    try:
        time.sleep(1.0)  # every slow connection is open and has started its request
        result = normal_requests(served, seconds=4.0, body=_body(), timeout=3.0)
    finally:
        clients.close()
    assert result["failed"] == 0, result
    assert result["ok"] >= 20, result  # tens of ms each on this machine
    assert result["p99_ms"] < 1000, result
    assert clients.opened >= 100


def test_body_over_the_limit_is_413_json(served):
    url = f"http://127.0.0.1:{served}{SERVICE_PATH}"
    big = b"{" + b" " * MAX_BODY_BYTES + b"}"
    resp = requests.post(url, data=big, headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 413
    assert resp.json()["issue"][0]["code"] == "too-costly"

    def chunks():
        for _ in range(MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    resp = requests.post(url, data=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 413  # chunked: refused, never cut at the limit
    assert "larger than" in resp.json()["error"]


def test_chunked_body_under_the_limit_is_served(served):
    body = _body()
    resp = requests.post(f"http://127.0.0.1:{served}{SERVICE_PATH}",
                         data=iter([body[:100], body[100:]]),
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert "cards" in resp.json()


def test_short_body_with_longer_content_length_is_closed_within_the_body_timeout(served):
    with socket.create_connection(("127.0.0.1", served), timeout=5) as sock:
        sock.sendall((f"POST {SERVICE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"hook\":").encode())
        data, took = _read_all(sock, limit=10)
    assert took < 2 + 3, took  # FLUORO_CDS_CLIENT_BODY_TIMEOUT=2, plus slack
    assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]


def test_slow_headers_are_closed_within_the_header_timeout(served):
    with socket.create_connection(("127.0.0.1", served), timeout=5) as sock:
        sock.sendall(b"GET /cds-services HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        data, took = _read_all(sock, limit=10)
    assert took < 2 + 3, took
    assert b"200 OK" not in data


def test_front_errors_are_json(served):
    with socket.create_connection(("127.0.0.1", served), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 70000 + b"\r\n\r\n")
        data, _ = _read_all(sock, limit=5)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/json" in head
    assert json.loads(body)["resourceType"] == "OperationOutcome"


def test_serve_direct_runs_gunicorn_alone_and_refuses_long_chunked_bodies(tmp_path):
    served = start_serve(tmp_path, "--direct")
    port = served.port
    try:
        resp = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert resp.status_code == 200 and "nginx" not in resp.headers.get("Server", "")

        def chunks():
            for _ in range(MAX_BODY_BYTES // 65536 + 2):
                yield b" " * 65536

        resp = requests.post(f"http://127.0.0.1:{port}{SERVICE_PATH}", data=chunks(),
                             headers={"Content-Type": "application/json"}, timeout=30)
        assert resp.status_code == 413, resp.text[:200]  # refused, not cut at the limit
    finally:
        served.stop()


def test_serve_stops_its_front(tmp_path):
    served = start_serve(tmp_path)
    port = served.port
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).headers["Server"] == "nginx"
    served.stop()
    assert served.proc.returncode == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()

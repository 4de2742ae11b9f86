"""A FHIR server with network latency: a proxy on 127.0.0.1 in front of a real FHIR server that
adds a fixed delay to every answer and records when each request started and ended.

Used by the round-trip test (tests/test_fhir_strict.py) and benchmarks/bench_discharge_roundtrips.py.
:func:`sequential_round_trips` is the number of round trips one after another that the recorded
requests needed: the longest chain of requests each starting after the previous one ended (the
greedy earliest-end count, which is that longest chain for intervals).
"""
from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

UPSTREAM_TIMEOUT = 30.0


def sequential_round_trips(intervals: list[tuple[float, float]]) -> int:
    """The length of the longest chain of non-overlapping (start, end) intervals."""
    count, last_end = 0, float("-inf")
    for start, end in sorted(intervals, key=lambda iv: iv[1]):
        if start >= last_end:
            count, last_end = count + 1, end
    return count


class SlowFhirProxy:
    """GET-only proxy: ``base_url`` answers what ``upstream`` answers, ``delay`` seconds later.
    Absolute links to the upstream base in the answers (Bundle.link) are rewritten to the proxy."""

    def __init__(self, upstream: str, delay: float, token: str | None = None):
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.token = token  # the upstream's bearer token, passed through (for callers' convenience)
        self.intervals: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server naming)
                started = time.perf_counter()
                prefix = "/fhir"
                path = self.path[len(prefix):] if self.path.startswith(prefix) else self.path
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() in ("authorization", "accept", "prefer")}
                resp = proxy._session.get(proxy.upstream + path, headers=headers,
                                          timeout=UPSTREAM_TIMEOUT, allow_redirects=False)
                body = resp.content.replace(proxy.upstream.encode(), proxy.base_url.encode())
                time.sleep(max(0.0, proxy.delay - (time.perf_counter() - started)))
                with proxy._lock:  # before the answer: the client may count as soon as it has it
                    proxy.intervals.append((started, time.perf_counter()))
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/fhir"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        daemon=True)

    def __enter__(self) -> "SlowFhirProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._session.close()
        self._thread.join(5)

    def reset(self) -> None:
        with self._lock:
            self.intervals = []

    def round_trips(self) -> tuple[int, int]:
        """(requests made, sequential round trips) since the last reset."""
        with self._lock:
            return len(self.intervals), sequential_round_trips(self.intervals)

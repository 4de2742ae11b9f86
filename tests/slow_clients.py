"""Misbehaving HTTP clients on 127.0.0.1 and a server started the production way.

:class:`SlowClients` holds slow-header connections (a request head sent one byte at a time)
and slow-body connections (complete headers, then the body one byte at a time), all from one
thread; :func:`normal_requests` measures ordinary requests meanwhile. Used by
tests/test_service_front.py (seconds) and benchmarks/bench_slow_clients.py (a minute).
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import requests

from tests.serve_support import Served, serve_env

SERVICE_PATH = "/cds-services/fluoroscopy-claim-review"


def start_serve(tmp: Path, *args: str, workers: int = 1, **env: str) -> Served:
    """`fluoro-cds serve --workers N ARGS` on the starter data with its state in `tmp`."""
    tmp.mkdir(parents=True, exist_ok=True)
    return Served(serve_env(tmp, TMPDIR=str(tmp), **env), workers=workers, args=args)


class SlowClients:
    """`headers` slow-header and `bodies` slow-body connections to 127.0.0.1:port, fed one byte
    every `interval` seconds by one thread until :meth:`close`. Connections the server closes
    are counted and reopened, so the pressure stays constant."""

    def __init__(self, port: int, headers: int, bodies: int, interval: float = 0.5):
        self.port, self.interval = port, interval
        self.kinds = ["header"] * headers + ["body"] * bodies
        self.socks: list[socket.socket | None] = [None] * len(self.kinds)
        self.closed_by_server = 0
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, i: int) -> None:
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        s.setblocking(False)
        if self.kinds[i] == "body":  # the head at once, then a 100 kB body byte by byte
            s.send((f"POST {SERVICE_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{").encode())
        else:
            s.send(b"P")
        self.socks[i] = s
        self.opened += 1

    def _feed(self, i: int) -> None:
        s = self.socks[i]
        try:
            if s is None:
                raise OSError
            s.send(b" " if self.kinds[i] == "body" else b"X")
        except OSError:
            if s is not None:
                s.close()
                self.closed_by_server += 1
            self.socks[i] = None
            try:
                self._open(i)
            except OSError:
                pass

    def _run(self) -> None:
        while not self._stop.is_set():
            for i in range(len(self.kinds)):
                self._feed(i)
            self._stop.wait(self.interval)

    def start(self) -> "SlowClients":
        for i in range(len(self.kinds)):
            self._open(i)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for s in self.socks:
            if s is not None:
                s.close()


def normal_requests(port: int, seconds: float, body: bytes, timeout: float = 5.0) -> dict:
    """Claim-review requests one after another for `seconds`: counts and latencies (ms)."""
    url = f"http://127.0.0.1:{port}{SERVICE_PATH}"
    latencies: list[float] = []
    failures = 0
    session = requests.Session()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        try:
            resp = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                timeout=timeout)
            if resp.status_code == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                failures += 1
        except requests.RequestException:
            failures += 1
    latencies.sort()

    def pct(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1) if latencies else None

    return {"ok": len(latencies), "failed": failures, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
            "max_ms": round(latencies[-1], 1) if latencies else None}

"""HTTP throughput of claim-review vs a bare Flask echo, both under gunicorn on 127.0.0.1
(not a test; prints figures). Same gunicorn settings for both (1 worker, gthread, 4 threads),
the same client (N threads with keep-alive Sessions), rounds interleaved (echo, service, ...),
medians reported.

Run:  PYTHONPATH=. /work/venv/bin/python benchmarks/service_http.py [--seconds 20] [--clients 4]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import requests  # noqa: E402

from benchmarks.service_overhead import claim_bundle_request  # noqa: E402
from tests.fhir_server import free_port  # noqa: E402

ROUNDS = 5


def start(target: str, env: dict) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread",
                             "--threads", "4", "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                             target], cwd=ROOT, env=env)
    for _ in range(300):
        try:
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)
            return proc, port
        except requests.RequestException:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{target} did not start")


def drive(url: str, body: bytes, clients: int, seconds: float) -> float:
    """Requests per second with `clients` keep-alive clients for `seconds`."""
    counts = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int):
        with requests.Session() as s:
            while time.monotonic() < stop:
                r = s.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=30)
                assert r.status_code == 200, r.text[:300]
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start_t = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - start_t)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    body = orjson.dumps(claim_bundle_request())
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=str(ROOT), FLUORO_CDS_DB=f"{tmp}/ncci.sqlite",
                   FLUORO_CDS_STATE_DB=f"{tmp}/state.sqlite", FLUORO_CDS_AUTH="off")
        echo, echo_port = start("benchmarks.echo_app:create_app()", env)
        cds, cds_port = start("service.app:create_app()", env)
        try:
            echo_url = f"http://127.0.0.1:{echo_port}/echo"
            cds_url = f"http://127.0.0.1:{cds_port}/cds-services/fluoroscopy-claim-review"
            drive(echo_url, body, args.clients, 1)  # warm up
            drive(cds_url, body, args.clients, 1)
            per = args.seconds / (2 * ROUNDS)
            e, c = [], []
            for _ in range(ROUNDS):
                e.append(drive(echo_url, body, args.clients, per))
                c.append(drive(cds_url, body, args.clients, per))
        finally:
            for p in (echo, cds):
                p.terminate()
                p.wait(10)
    me, mc = statistics.median(e), statistics.median(c)
    print(f"bare Flask echo (gunicorn 1 worker gthread x4): {me:8.0f} req/s (median of {ROUNDS})")
    print(f"claim-review     (same settings):               {mc:8.0f} req/s")
    print(f"throughput ratio claim-review / echo: {mc / me:.2f}")
    print(f"command: PYTHONPATH=. /work/venv/bin/python benchmarks/service_http.py "
          f"--seconds {args.seconds:g} --clients {args.clients}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

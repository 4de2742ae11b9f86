"""Slow-client benchmark: normal claim-review requests while 50 slow-header and 50 slow-body
connections are held open, against `fluoro-cds serve` (nginx front) and `serve --direct`
(gunicorn alone), both with 2 gthread workers x 4 threads on 127.0.0.1.

    python -m benchmarks.bench_slow_clients [--seconds 60] [--headers 50] [--bodies 50]

Prints one line per server: normal requests answered (200) and failed during the attack, p50 /
p99 / max latency, slow connections opened and closed by the server. Results: RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from tests.service_support import claim_review_request
from tests.slow_clients import SlowClients, normal_requests, start_serve


def run(mode: str, seconds: float, headers: int, bodies: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-slow-"))
    served = start_serve(tmp, *(["--direct"] if mode == "direct" else []), workers=2)
    port = served.port
    body = json.dumps(claim_review_request()).encode()
    try:
        quiet = normal_requests(port, 5.0, body)
        clients = SlowClients(port, headers, bodies, interval=1.0).start()
        try:
            time.sleep(2.0)
            attacked = normal_requests(port, seconds, body, timeout=5.0)
        finally:
            clients.close()
    finally:
        served.stop()
    return {"mode": mode, "quiet": quiet, "attacked": attacked, "slow_opened": clients.opened,
            "slow_closed_by_server": clients.closed_by_server}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--headers", type=int, default=50)
    p.add_argument("--bodies", type=int, default=50)
    p.add_argument("--modes", default="front,direct")
    args = p.parse_args()
    for mode in args.modes.split(","):
        print(json.dumps(run(mode, args.seconds, args.headers, args.bodies)), flush=True)


if __name__ == "__main__":
    main()

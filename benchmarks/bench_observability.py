"""What the per-call log line, metrics and audit record cost a claim-review request under gunicorn.

Serves, side by side on 127.0.0.1, one gunicorn (2 gthread workers x 4 threads, as bench_load)
per variant of benchmarks/observability_off_app.py (all on; each part off; all off), drives each
with wrk (16 connections; claim-review = bench_load's scenario 1 body) in interleaved rounds and
prints the server CPU per request (user + system of master and workers, from /proc), median over
the rounds.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_observability.py [--rounds 4] [--seconds 4]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import (free_port, request_body, run_wrk, server_cpu_seconds,  # noqa: E402
                                   start_gunicorn, wait_up)

VARIANTS = ("", "log", "metrics", "audit", "log,metrics,audit")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=4, help="wrk seconds per variant and round")
    args = ap.parse_args(argv)
    body = json.dumps(request_body(1)).encode()
    work = Path(tempfile.mkdtemp(prefix="fluoro-obs-"))
    procs = {}
    try:
        for off in VARIANTS:  # bench_load's gunicorn, the app with BENCH_OFF from the environment
            port = free_port()
            os.environ["BENCH_OFF"] = off
            procs[off] = (start_gunicorn("benchmarks.observability_off_app:create_app()", port, work, 4), port)
        for proc, port in procs.values():
            wait_up(f"http://127.0.0.1:{port}/healthz")
            requests.post(f"http://127.0.0.1:{port}/cds-services/fluoroscopy-claim-review", data=body,
                          headers={"Content-Type": "application/json"}, timeout=10).raise_for_status()
        cpu: dict[str, list[float]] = {off: [] for off in VARIANTS}
        for _ in range(args.rounds):
            for off, (proc, port) in procs.items():
                before = server_cpu_seconds(proc.pid)
                r = run_wrk(f"http://127.0.0.1:{port}/cds-services/fluoroscopy-claim-review", body,
                            args.seconds, 16, work)
                cpu[off].append((server_cpu_seconds(proc.pid) - before) * 1000 / max(1, r["requests"]))
        print("# PYTHONPATH=. .venv/bin/python benchmarks/bench_observability.py "
              + " ".join(argv if argv is not None else sys.argv[1:]))
        base = statistics.median(cpu[""])
        for off in VARIANTS:
            med = statistics.median(cpu[off])
            print(f"{'off: ' + off if off else 'all on':24s} server CPU {med:.3f} ms/request "
                  f"({med - base:+.3f}); rounds {[round(x, 3) for x in cpu[off]]}")
        return 0
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())

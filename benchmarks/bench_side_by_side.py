"""Claim-review under gunicorn, several checkouts or app variants side by side: server CPU and
voluntary context switches per request, paired by round.

Each VARIANT is ``label=DIR[:APP][?ENV=VALUE&...]``: a checkout (e.g. ``git archive <commit> | tar
-x -C DIR``), the WSGI app to serve (default ``service.app:create_app()``) and environment for its
gunicorn (``THREADS=n`` sets its gthread threads; e.g. ``APP`` =
``benchmarks.observability_off_app:create_app()`` with ``BENCH_OFF=audit``). All are served at
once as bench_load serves them (2 gthread workers); every round drives each with ``wrk`` (16
connections, bench_load's scenario 1 body, the hook name its discovery advertises) in a random
order, so that load from elsewhere hits them alike. Printed per variant: the median CPU per
request (user + system of the master and all its descendants: workers, audit writer
processes; /proc), the median over rounds of its difference
to the first variant's CPU in the same round (with quartiles), and the median voluntary and
involuntary context switches per request (all threads, /proc/PID/task/*/status): GIL and lock
hand-overs show there before they show in CPU.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_side_by_side.py [--rounds 8] [--seconds 3] \\
        main=. base=/tmp/base-5cf6015 'off=.:benchmarks.observability_off_app:create_app()?BENCH_OFF=audit'
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import (free_port, process_tree, request_body, run_wrk,  # noqa: E402
                                   server_cpu_seconds, start_gunicorn, wait_up)

SERVICE = "fluoroscopy-claim-review"


def context_switches(master: int) -> tuple[int, int]:
    """Voluntary and involuntary context switches so far of a gunicorn master and all its
    descendants (workers, audit writer processes) and all their threads."""
    vol = invol = 0
    for pid in process_tree(master):
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return vol, invol


def parse_variant(spec: str) -> tuple[str, Path, str, dict[str, str]]:
    label, _, rest = spec.partition("=")
    rest, _, query = rest.partition("?")
    root, _, app = rest.partition(":")
    env = dict(kv.split("=", 1) for kv in query.split("&") if kv)
    return label, Path(root).resolve(), app or "service.app:create_app()", env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="label=DIR[:APP][?ENV=VALUE&...]; the first is the reference")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=3, help="wrk seconds per variant and round")
    ap.add_argument("--seed", type=int, default=7, help="of the order within rounds")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="fluoro-sbs-"))
    body = request_body(1)
    load0 = os.getloadavg()
    served = []
    try:
        for spec in args.variants:
            label, root, app, env = parse_variant(spec)
            threads = int(env.pop("THREADS", "4"))
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            port = free_port()
            proc = start_gunicorn(app, port, work, threads, root=root)
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
            served.append({"label": label, "proc": proc, "port": port, "cpu": [], "cs": []})
        for v in served:
            base = f"http://127.0.0.1:{v['port']}"
            wait_up(base + "/healthz")
            listed = requests.get(base + "/cds-services", timeout=10).json()["services"]
            hook = next(s["hook"] for s in listed if s["id"] == SERVICE)
            v["body"], v["url"] = json.dumps(dict(body, hook=hook)).encode(), f"{base}/cds-services/{SERVICE}"
            for _ in range(20):  # answers, and warm
                requests.post(v["url"], data=v["body"], headers={"Content-Type": "application/json"},
                              timeout=10).raise_for_status()
        rng = random.Random(args.seed)
        for _ in range(args.rounds):
            for v in rng.sample(served, len(served)):
                cpu0, cs0 = server_cpu_seconds(v["proc"].pid), context_switches(v["proc"].pid)
                r = run_wrk(v["url"], v["body"], args.seconds, 16, work)
                cpu1, cs1 = server_cpu_seconds(v["proc"].pid), context_switches(v["proc"].pid)
                n = max(1, r["requests"])
                v["cpu"].append((cpu1 - cpu0) * 1e6 / n)
                v["cs"].append(((cs1[0] - cs0[0]) / n, (cs1[1] - cs0[1]) / n))
        print("# PYTHONPATH=. .venv/bin/python benchmarks/bench_side_by_side.py "
              + " ".join(argv if argv is not None else sys.argv[1:]))
        print(f"# {args.rounds} rounds of {args.seconds} s per variant, random order; load average "
              f"before {tuple(round(x, 2) for x in load0)}, after {tuple(round(x, 2) for x in os.getloadavg())}")
        ref = served[0]["cpu"]
        for v in served:
            diff = sorted(a - b for a, b in zip(v["cpu"], ref))
            print(f"{v['label']:16} CPU {statistics.median(v['cpu']):7.0f} us/request; vs {served[0]['label']}: "
                  f"median {statistics.median(diff):+5.0f} (quartiles {diff[len(diff) // 4]:+.0f}, "
                  f"{diff[3 * len(diff) // 4]:+.0f}); context switches per request: voluntary "
                  f"{statistics.median(c[0] for c in v['cs']):.2f}, involuntary "
                  f"{statistics.median(c[1] for c in v['cs']):.2f}")
        return 0
    finally:
        for v in served:
            v["proc"].terminate()
        for v in served:
            v["proc"].wait(10)


if __name__ == "__main__":
    sys.exit(main())

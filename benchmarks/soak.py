"""Soak benchmark: a fixed rate of all three CDS services and the feedback endpoint, for a long
time, against `fluoro-cds serve` (gunicorn, 2 workers, behind its front) on 127.0.0.1.

Open loop: request i is due at start + i / rate, whatever the answers' latency (so a slow server
meets the same load, not a gentler one), sent round robin as claim-review (scenario 1),
order-review (scenario 12), discharge-review (scenario 13) and feedback on a card just answered.
Per minute it reports requests, errors (anything but 200, or no answer within 10 s), p50/p99
latency and each gunicorn worker's resident memory (VmRSS). Pass criteria: zero errors, and
worker memory growth after the warm-up minute under 10%.

    PYTHONPATH=. .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 40] [--json OUT]

It loads the machine for the whole run: run it on a quiet machine (results in RESULTS.md).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_load import free_port, request_body, wait_up  # noqa: E402

SERVICES = (("fluoroscopy-claim-review", 1), ("fluoroscopy-order-review", 12),
            ("fluoroscopy-discharge-review", 13))
TIMEOUT = 10.0


def worker_rss(master: int) -> dict[int, int]:
    """VmRSS in kB of each gunicorn worker (children of the serve process that are not nginx)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != master:
                continue
            if b"nginx" in (entry / "cmdline").read_bytes():
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out[int(entry.name)] = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the run (default 10)")
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second (default 40)")
    ap.add_argument("--json", help="write the per-minute figures to this file")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        print("soak: --minutes and --rate must be positive", file=sys.stderr)
        return 2

    bodies = {sid: request_body(n) for sid, n in SERVICES}
    work = Path(tempfile.mkdtemp(prefix="fluoro-soak-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUORO_CDS_")}
    env.update(PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(work / "data"),
               FLUORO_CDS_STATE_DB=str(work / "state.sqlite"))
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "2"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    results: list[tuple[float, float, bool]] = []  # (minute index, latency s, ok)
    error_kinds: collections.Counter[str] = collections.Counter()  # HTTP status or exception class
    lock = threading.Lock()
    cards: list[str] = []
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "s"):
            local.s = requests.Session()
            local.s.trust_env = False
        return local.s

    def send(i: int, due: float, start: float) -> None:
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        kind = i % 4
        t0 = time.monotonic()
        ok = False
        try:
            if kind < 3:
                sid = SERVICES[kind][0]
                body = dict(bodies[sid], hookInstance=str(uuid.uuid4()))
                resp = session().post(f"{base}/cds-services/{sid}", json=body, timeout=TIMEOUT)
                ok = resp.status_code == 200
                what = f"HTTP {resp.status_code} from {sid}"
                if ok:
                    for card in resp.json().get("cards", ())[:1]:
                        with lock:
                            cards.append(card["uuid"])
            else:
                with lock:
                    card = cards[-1] if cards else str(uuid.uuid4())
                fb = {"feedback": [{"card": card, "outcome": "overridden",
                                    "outcomeTimestamp": "2024-08-02T10:00:00Z",
                                    "overrideReason": {"reason": {"system": "https://example.org/r",
                                                                  "code": "soak"}}}]}
                resp = session().post(f"{base}/cds-services/{SERVICES[0][0]}/feedback",
                                      json=fb, timeout=TIMEOUT)
                ok = resp.status_code == 200
                what = f"HTTP {resp.status_code} from feedback"
        except requests.RequestException as exc:
            ok, what = False, type(exc).__name__
        latency = time.monotonic() - t0
        with lock:
            results.append(((t0 - start) // 60, latency, ok))
            if not ok:
                error_kinds[what] += 1

    try:
        wait_up(base + "/healthz", timeout=60)
        for sid, _ in SERVICES:  # warm each service once before the clock starts
            requests.post(f"{base}/cds-services/{sid}", json=bodies[sid], timeout=TIMEOUT)
        total = int(args.minutes * 60 * args.rate)
        minutes = int(-(-args.minutes // 1))
        rss: list[dict[int, int]] = []
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=64) as pool:
            futures = []
            next_sample = start + min(60.0, args.minutes * 60)
            for i in range(total):
                due = start + i / args.rate
                while time.monotonic() < due - 0.5:  # submit a little ahead, sample memory on time
                    if time.monotonic() >= next_sample:
                        rss.append(worker_rss(proc.pid))
                        next_sample += 60.0
                    time.sleep(0.05)
                futures.append(pool.submit(send, i, due, start))
            for f in futures:
                f.result()
        rss.append(worker_rss(proc.pid))
    finally:
        print(f"serve log (nginx and gunicorn): {work / 'serve.log'}")
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()

    rows = []
    for m in range(minutes):
        lat = sorted(r[1] for r in results if r[0] == m)
        errs = sum(1 for r in results if r[0] == m and not r[2])
        if not lat:
            continue
        rows.append({"minute": m + 1, "requests": len(lat), "errors": errs,
                     "p50_ms": round(statistics.median(lat) * 1000, 1),
                     "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
                     "worker_rss_kb": sorted(rss[m].values()) if m < len(rss) else None})
    errors = sum(1 for r in results if not r[2])
    growth = None
    if len(rss) >= 2 and rss[0] and rss[-1]:
        first, last = rss[0], rss[-1]
        common = set(first) & set(last)
        if common:
            growth = max((last[p] - first[p]) / first[p] for p in common)
    summary = {"minutes": args.minutes, "rate": args.rate, "requests": len(results),
               "errors": errors, "error_kinds": dict(error_kinds), "memory_growth_after_warmup": None if growth is None else round(growth, 4),
               "per_minute": rows}
    print("minute  requests  errors  p50 ms  p99 ms  worker RSS kB")
    for r in rows:
        print(f"{r['minute']:>6}  {r['requests']:>8}  {r['errors']:>6}  {r['p50_ms']:>6}  "
              f"{r['p99_ms']:>6}  {r['worker_rss_kb']}")
    print(f"errors: {errors}; worker memory growth after the first minute: "
          f"{'n/a' if growth is None else f'{growth * 100:.1f}%'}")
    for what, n in error_kinds.most_common():
        print(f"  {n} x {what}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    passed = errors == 0 and (growth is None or growth < 0.10)
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""discharge-review without prefetch against a FHIR server that adds latency to every answer:
wall time per request and sequential round trips, for two code trees side by side in one run.

    .venv/bin/python benchmarks/bench_discharge_roundtrips.py [--before 5cf6015] [--delay 0.05]
        [--requests 10]

A real sekmet-fhir server (tests/fhir_server.py) holds scenario 13 (an inpatient encounter: two
Procedures, fluoroscopy time, a report with its ImagingStudy, a Claim); tests/slow_fhir_proxy.py in
front of it answers every request `--delay` seconds late and records when each started and ended.
For each tree (``before``: a temporary git worktree of the given revision; ``after``: this
checkout) a child process imports that tree's Flask app and posts the same encounter-discharge
request (no prefetch; fhirServer = the proxy) `--requests` times, one after another, after one
warm-up request. Printed per tree: median and mean wall time per request, FHIR requests per hook
call, and sequential round trips per hook call (the longest chain of requests each starting after
the previous one ended, tests/slow_fhir_proxy.sequential_round_trips), and wall time in round
trips' worth (median / delay). Target (issue 11): at most 3 round trips' worth of time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fhir_server import start_fhir_server, stop_fhir_server  # noqa: E402
from tests.scenario_fixtures import scenario  # noqa: E402
from tests.slow_fhir_proxy import SlowFhirProxy, sequential_round_trips  # noqa: E402

CHILD_TIMEOUT = 300  # seconds for one tree's requests

# Run in a child process with the tree under test first on sys.path: its app, its handlers.
CHILD = r"""
import json, sys, tempfile, time
tree, n = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, tree)
import service.app
assert service.app.__file__.startswith(tree), service.app.__file__
from service.app import create_app
from service.settings import Settings
tmp = tempfile.mkdtemp()
app = create_app(Settings(db_path=tmp + "/ncci.sqlite", state_db_path=tmp + "/state.sqlite"))
client = app.test_client()
body = json.loads(sys.stdin.read())
url = "/cds-services/fluoroscopy-discharge-review"
first = client.post(url, json=body)  # warm-up (not timed)
assert first.status_code == 200, first.get_data(as_text=True)
sys.stdout.write("WARM\n"); sys.stdout.flush()
times, topics = [], None
for _ in range(n):
    t0 = time.perf_counter()
    resp = client.post(url, json=body)
    times.append(time.perf_counter() - t0)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    topics = sorted(c["source"]["topic"]["code"] for c in resp.get_json()["cards"])
print(json.dumps({"times": times, "topics": topics}))
"""


def run_tree(tree: Path, body: dict, n: int, proxy: SlowFhirProxy) -> dict:
    """Post `body` n times through the tree's app; the proxy's intervals of the timed requests."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tree), str(n)], cwd=tempfile.gettempdir(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(tree)))
    assert proc.stdin and proc.stdout
    proc.stdin.write(json.dumps(body))
    proc.stdin.close()
    warm = proc.stdout.readline()
    assert warm.strip() == "WARM", warm
    proxy.reset()  # only the timed requests from here on
    out = proc.stdout.read()
    proc.wait(CHILD_TIMEOUT)
    assert proc.returncode == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    with proxy._lock:
        intervals = list(proxy.intervals)
    result["fhir_requests"] = len(intervals) / n
    result["sequential"] = sequential_round_trips(intervals) / n
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default="5cf6015", help="git revision of the 'before' tree")
    ap.add_argument("--delay", type=float, default=0.05, help="seconds added to every FHIR answer")
    ap.add_argument("--requests", type=int, default=10, help="timed hook calls per tree")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="fluoro-bench-rt-"))
    before = workdir / "before"
    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(before), args.before], cwd=ROOT,
                   check=True)
    server = start_fhir_server()
    try:
        s = scenario(13)
        server.load(s.resources)
        with SlowFhirProxy(server.base_url, args.delay, token=server.token) as proxy:
            body = s.request(with_prefetch=False, fhir_server=proxy.base_url)
            body["fhirAuthorization"] = {"access_token": server.token, "token_type": "Bearer",
                                         "expires_in": 300, "scope": "user/*.read", "subject": "bench"}
            rows = [(f"before ({args.before})", run_tree(before, body, args.requests, proxy)),
                    ("after (this checkout)", run_tree(ROOT, body, args.requests, proxy))]
    finally:
        stop_fhir_server(server)
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"load average at end: {os.getloadavg()[0]:.2f}; delay {args.delay * 1000:.0f} ms per "
          f"FHIR answer; {args.requests} timed hook calls per tree (scenario 13, no prefetch)")
    print("| tree | median ms | mean ms | FHIR requests | sequential round trips | median in round trips | cards |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows:
        med = statistics.median(r["times"])
        print(f"| {name} | {med * 1000:.0f} | {statistics.mean(r['times']) * 1000:.0f} | "
              f"{r['fhir_requests']:.1f} | {r['sequential']:.1f} | {med / args.delay:.1f} | "
              f"{' '.join(r['topics'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

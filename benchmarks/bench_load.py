"""Load benchmark: the three CDS services under gunicorn vs a bare Flask JSON echo app.

Starts, on 127.0.0.1 and in this one run, gunicorn (2 gthread workers, --threads each) serving
``service.app:create_app()`` (embedded starter data) and, served the same way, a bare Flask app
echoing the JSON it receives (the ceiling). Drives each with ``wrk`` (16 connections, 2 threads;
Debian package ``wrk``) using realistic requests built from the acceptance scenario fixtures:

- claim-review: scenario 1 (29881 + 76000), the Claim in a Bundle with its companions, prefetch;
- order-review: scenario 12 (draft ServiceRequests 64483 + 76000), full prefetch;
- discharge-review: scenario 13 (inpatient, Claim for the encounter), full prefetch;
- echo: the claim-review request body (same size on the wire).

Reports requests/s, p50 and p99 latency for each (median over interleaved rounds, so that load
from elsewhere on the machine hits every target alike) and the ratio claim-review / echo.
Targets: claim-review >= 0.5x echo throughput and p99 < 50 ms.

``--baseline DIR`` also serves the claim-review service of another checkout of the repository
(e.g. ``git archive <commit> | tar -x -C DIR``) the same way, as one more interleaved target
(``claim-review@baseline``), so that a change is measured against its baseline side by side.

    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_load.py [--duration 30] [--connections 16]
        [--baseline DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hooks.services import BY_ID  # noqa: E402
from tests.cards_support import full_prefetch  # noqa: E402
from tests.scenario_fixtures import scenario  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("BENCH_BODY"), "rb")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request_body(n: int) -> dict:
    s = scenario(n)
    body = s.request(with_prefetch=True)
    body["prefetch"] = full_prefetch(s, BY_ID[s.service_id].prefetch)
    return body


def start_gunicorn(app: str, port: int, workdir: Path, threads: int,
                   root: Path = ROOT) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(root), FLUORO_CDS_DB=str(workdir / f"ncci-{port}.sqlite"),
               FLUORO_CDS_STATE_DB=str(workdir / f"state-{port}.sqlite"))
    cmd = [sys.executable, "-m", "gunicorn", "--workers", "2", "--worker-class", "gthread",
           "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--log-level", "warning", app]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=open(workdir / f"gunicorn-{port}.log", "wb"))


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (children, their children, ...), from /proc (Linux): a
    gunicorn master, its workers and whatever they start (the audit writer processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def server_cpu_seconds(master: int) -> float:
    """CPU seconds used so far by a gunicorn master and all its descendants (workers, the audit
    writer processes they start)."""
    total = 0.0
    for pid in process_tree(master):
        try:
            total += _proc_cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
    return total


def wait_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def run_wrk(url: str, body: bytes, duration: int, connections: int, workdir: Path) -> dict:
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    script = workdir / "post.lua"
    script.write_text(LUA)
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, BENCH_BODY=str(body_file)),
                         check=True).stdout
    m = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    if not m:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    reqs, dur_us, p50, p99, status_err, sock_err = map(int, m.groups())
    return {"rps": reqs / (dur_us / 1e6), "p50_ms": p50 / 1000, "p99_ms": p99 / 1000,
            "requests": reqs, "non_2xx": status_err, "socket_errors": sock_err}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=30, help="seconds per target (default 30)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=4,
                        help="gthread threads per worker, both apps (default 4, as deploy/)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds; each target runs duration/rounds s per round")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--baseline", type=Path,
                        help="another checkout whose claim-review is served and measured alongside")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="fluoro-bench-"))
    load0 = tuple(round(x, 2) for x in os.getloadavg())
    svc_port, echo_port = free_port(), free_port()
    procs = [start_gunicorn("service.app:create_app()", svc_port, workdir, args.threads),
             start_gunicorn("benchmarks.echo_app:create_app()", echo_port, workdir, args.threads)]
    try:
        wait_up(f"http://127.0.0.1:{svc_port}/healthz")
        wait_up(f"http://127.0.0.1:{echo_port}/")
        base_port = None
        if args.baseline is not None:
            base_port = free_port()
            procs.append(start_gunicorn("service.app:create_app()", base_port, workdir, args.threads,
                                        root=args.baseline.resolve()))
            wait_up(f"http://127.0.0.1:{base_port}/healthz")
        bodies = {"claim-review": request_body(1), "order-review": request_body(12),
                  "discharge-review": request_body(13)}
        targets = [("echo", f"http://127.0.0.1:{echo_port}/echo", bodies["claim-review"])]
        targets += [(name, f"http://127.0.0.1:{svc_port}/cds-services/fluoroscopy-{name}", body)
                    for name, body in bodies.items()]
        if base_port is not None:
            # the baseline gets the same request under the hook name its discovery advertises
            # (the custom hook was renamed: org.fluorocds.claim-review -> org.fluoro-cds.claim-review)
            listed = requests.get(f"http://127.0.0.1:{base_port}/cds-services", timeout=10).json()
            base_hook = next(s["hook"] for s in listed["services"] if s["id"] == "fluoroscopy-claim-review")
            targets.insert(2, ("claim-review@baseline",
                               f"http://127.0.0.1:{base_port}/cds-services/fluoroscopy-claim-review",
                               dict(bodies["claim-review"], hook=base_hook)))
        raws = {name: json.dumps(body).encode() for name, _, body in targets}
        cards_of: dict[str, int | None] = {}
        for name, url, _ in targets:  # check each target answers, and warm it up
            check = requests.post(url, data=raws[name], headers={"Content-Type": "application/json"})
            check.raise_for_status()
            cards_of[name] = len(check.json().get("cards", [])) if name != "echo" else None
        # Rounds interleave the targets, so a burst of other load on the machine hits all of them
        # alike; each figure is the median over the rounds.
        rounds: dict[str, list[dict]] = {name: [] for name, _, _ in targets}
        slice_s = max(1, args.duration // args.rounds)
        master = {"echo": procs[1].pid}
        if base_port is not None:
            master["claim-review@baseline"] = procs[2].pid
        for _ in range(args.rounds):
            for name, url, _ in targets:
                pid = master.get(name, procs[0].pid)
                cpu0 = server_cpu_seconds(pid)
                r = run_wrk(url, raws[name], slice_s, args.connections, workdir)
                r["server_cpu_ms_per_req"] = (server_cpu_seconds(pid) - cpu0) * 1000 / max(1, r["requests"])
                rounds[name].append(r)
        results = {}
        for name, runs in rounds.items():
            results[name] = {k: statistics.median(r[k] for r in runs)
                             for k in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_req")}
            results[name]["non_2xx"] = sum(r["non_2xx"] for r in runs)
            results[name]["requests"] = sum(r["requests"] for r in runs)
            results[name]["body_bytes"], results[name]["cards"] = len(raws[name]), cards_of[name]
            results[name]["rounds"] = runs
        ratio = results["claim-review"]["rps"] / results["echo"]["rps"]
        cmd = "PYTHONPATH=. /work/venv/bin/python benchmarks/bench_load.py " + " ".join(
            argv if argv is not None else sys.argv[1:])
        print(f"# {cmd.strip()}")
        print(f"# gunicorn 2 gthread workers x {args.threads} threads; wrk -t2 -c{args.connections}; "
              f"{args.rounds} interleaved rounds of {slice_s}s per target (medians); "
              f"{os.cpu_count()} CPUs")
        print(f"# load average before/after: {load0} / {tuple(round(x, 2) for x in os.getloadavg())}")
        print(f"{'target':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/req':>12}"
              f"{'non-2xx':>9}{'cards':>7}")
        for name, r in results.items():
            print(f"{name:<22}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
                  f"{r['server_cpu_ms_per_req']:>12.3f}"
                  f"{r['non_2xx']:>9}{'' if r['cards'] is None else r['cards']:>7}")
        cpu_ratio = results["echo"]["server_cpu_ms_per_req"] / results["claim-review"]["server_cpu_ms_per_req"]
        print(f"server CPU per request, echo / claim-review: {cpu_ratio:.2f} (the throughput ratio "
              "a machine with nothing else running would approach)")
        # Each round runs the targets back to back, so a per-round ratio compares figures taken
        # seconds apart: its median is the steadiest figure when other load comes and goes.
        def round_ratios(name: str, key: str, inverse: bool = False) -> float:
            pairs = zip(rounds[name], rounds["echo"])
            return statistics.median((e[key] / r[key]) if inverse else (r[key] / e[key]) for r, e in pairs)

        per_round = {name: {"rps_ratio": round_ratios(name, "rps"),
                            "cpu_ratio": round_ratios(name, "server_cpu_ms_per_req", inverse=True)}
                     for name in rounds if name != "echo"}
        for name, pr in per_round.items():
            print(f"median of per-round ratios, {name} / echo: throughput {pr['rps_ratio']:.2f}x, "
                  f"server CPU per request (echo / {name}) {pr['cpu_ratio']:.2f}")
        if base_port is not None:
            base = results["claim-review@baseline"]
            print(f"baseline claim-review / echo throughput: {base['rps'] / results['echo']['rps']:.2f}x; "
                  f"server CPU per request, echo / baseline claim-review: "
                  f"{results['echo']['server_cpu_ms_per_req'] / base['server_cpu_ms_per_req']:.2f}")
        p99 = results["claim-review"]["p99_ms"]
        print(f"claim-review / echo throughput: {ratio:.2f}x (target >= 0.5x: "
              f"{'met' if ratio >= 0.5 else 'MISSED'}); claim-review p99 {p99:.1f} ms "
              f"(target < 50 ms: {'met' if p99 < 50 else 'MISSED'})")
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "ratio": ratio,
                                                   "cpu_ratio": cpu_ratio, "per_round": per_round},
                                                  indent=2))
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: `fluoro-cds batch --out-dir` on claims that crowd into few groups of the edits across
claims: the issue's own starting input, claim-review Bundles cycled from the acceptance scenarios
1-11 with fresh claim ids. Each scenario is one beneficiary, provider and date, so N claims make 11
groups of N/11 same-day claims (hooks/rules/cross_claim.py): what a resubmitted batch, or hostile
input, looks like to the edits across claims. The cost per claim should not grow with N.

Run from the repository root (the machine should be quiet; the load average is printed):
    PYTHONPATH=. .venv/bin/python benchmarks/bench_cross_group.py [--claims 2000,20000] [--repeats 1]
        [--baseline DIR]

For each N: the batch with 2 workers (Parquet), claims/s, CPU per claim (the process and its
workers) and peak memory (the largest resident set of the process and its workers), each run in its
own process; ``--baseline DIR`` (another checkout, e.g. ``git archive <commit>`` unpacked) runs the
same command from there, alternating with this checkout's, on the same input.

Then one group alone (``--group 250,1000,4000``): `cross_claim_findings` over n same-day claims of
one beneficiary and provider, each billing scenario 9's 33289 and 76000 on an Encounter and in a
performed period of its own (10 s apart), process CPU time, in a child process per checkout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from benchmarks.bench_batch import measure_run  # noqa: E402
from tests.scenario_fixtures import scenario  # noqa: E402


def write_claims(path: Path, n: int) -> None:
    """n claim-review Bundles cycled from scenarios 1-11, claim ids bench-0, bench-1, ..."""
    bundles = [scenario(k).context["claim"] for k in range(1, 12)]
    with open(path, "wb") as fh:
        for i in range(n):
            b = bundles[i % len(bundles)]
            claim = dict(b["entry"][0]["resource"], id=f"bench-{i}")
            fh.write(orjson.dumps({**b, "entry": [{"resource": claim}, *b["entry"][1:]]}) + b"\n")


_GROUP = r"""
import json, sys, time
from dataclasses import replace
from datetime import datetime, timedelta
from hooks.config import resolve
from hooks.extract import case_from_claim, split_claim_bundle
from hooks.rules.cross_claim import cross_claim_findings
from nccidata import open_reference
from tests.scenario_fixtures import scenario
reference, config = open_reference(None), resolve(None)
claim, companions = split_claim_bundle(scenario(9).context["claim"])
base = case_from_claim(claim, companions, reference)
at = datetime(2024, 8, 5, 8, 0)
out = {}
for n in map(int, sys.argv[1:]):
    cases = []
    for i in range(n):
        own, begin = (f"Encounter/e{i}",), at + timedelta(seconds=10 * i)
        lines = tuple(replace(line, encounters=own, start=begin, end=begin + timedelta(seconds=5))
                      for line in base.lines)
        cases.append(replace(base, claim=dict(base.claim, id=f"c{i}"), lines=lines))
    t0 = time.process_time()
    found = cross_claim_findings(cases, reference, config)
    out[n] = {"cpu": time.process_time() - t0, "findings": len(found)}
print(json.dumps(out))
"""


def group_cpu(root: Path, sizes: list[int], env: dict) -> dict:
    """{n: {"cpu": seconds, "findings": count}} of one group of n claims (_GROUP), run from `root`."""
    proc = subprocess.run([sys.executable, "-c", _GROUP, *map(str, sizes)], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(root)}, cwd=root, timeout=3600, check=True)
    return {int(k): v for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", default="2000,20000", help="comma-separated claim counts ('' skips)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--group", default="250,1000,4000", help="claim counts of the one-group figures ('' skips)")
    ap.add_argument("--baseline", type=Path, help="another checkout whose batch runs alongside, alternating")
    args = ap.parse_args()
    sizes = [int(n) for n in args.claims.split(",") if n]  # '' skips the batch figures
    roots = {"this checkout": ROOT}
    if args.baseline:
        roots[f"baseline {args.baseline.name}"] = args.baseline.resolve()
    print(f"command: PYTHONPATH=. python benchmarks/bench_cross_group.py --claims {args.claims} "
          f"--repeats {args.repeats} --group '{args.group}'" + (f" --baseline {args.baseline}" if args.baseline else ""))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    env = {**os.environ, "FLUORO_CDS_DB": "/nonexistent/absent.sqlite"}  # the starter set
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-cross-") as tmp:
        for n in sizes:
            src = Path(tmp) / f"claims-{n}.ndjson"
            write_claims(src, n)
            runs: dict[str, list[dict]] = {name: [] for name in roots}
            for r in range(args.repeats):
                for name, root in roots.items():
                    out = Path(tmp) / f"out-{n}-{r}-{len(runs[name])}-{abs(hash(name))}"
                    cmd = [sys.executable, "-m", "service.cli", "batch", str(src), "--out-dir", str(out),
                           "--workers", "2"]
                    runs[name].append(measure_run(cmd, env, root))
            for name, results in runs.items():
                wall = statistics.median(x["wall"] for x in results)
                cpu = statistics.median(x["cpu"] for x in results)
                peak = max(x["peak_kib"] for x in results) / 1024
                table.append((n, name, n / wall, cpu / n * 1e6, peak))
    print(f"{'claims':>8}  {'run':24} {'claims/s':>9} {'CPU/claim':>10} {'peak MiB':>9}")
    for n, name, rate, cpu_us, peak in table:
        print(f"{n:>8,}  {name:24} {rate:>9,.0f} {cpu_us:>8,.0f}us {peak:>9,.0f}")
    for name in roots:
        mine = [row for row in table if row[1] == name]
        if len(mine) > 1:
            print(f"{name}: CPU per claim at {mine[-1][0]:,} / at {mine[0][0]:,} claims: "
                  f"{mine[-1][3] / mine[0][3]:.2f}x (1.00x: linear)")
    if args.group:
        groups = [int(n) for n in args.group.split(",")]
        print("one group, each claim on an Encounter and in a period of its own: cross_claim_findings CPU")
        print(f"{'claims':>8}  {'run':24} {'CPU':>9} {'per claim':>10} {'findings':>9}")
        for name, root in roots.items():
            for n, got in group_cpu(root, groups, env).items():
                print(f"{n:>8,}  {name:24} {got['cpu']:>8.2f}s {got['cpu'] / n * 1e6:>8,.0f}us {got['findings']:>9,}")


if __name__ == "__main__":
    main()

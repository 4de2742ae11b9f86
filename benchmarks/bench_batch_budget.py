"""What issue 14's throughput target leaves a claim, against what each stage of the review costs.

The target: `fluoro-cds batch EXPORT --out-dir DIR --workers 2` (Parquet) at least half the claims/s
of the floor (one process reading and orjson-parsing every line of the export; bench_batch.py).
Two workers on two cores give at most twice one process's claims/s, so the target allows at most
4 x the floor's time a claim, in CPU, for everything: the index load, the join, the case, the rules,
the rows and the outputs, the main process included.

This script times, in one process on an export (e.g. `fluoro-cds sample-data DIR --claims 20000`),
each stage of the local engine on its own over every claim, as the workers run them: the join
(parse of the claim + its companions from the export index), the case (hooks' case_from_billing),
the rules (hooks.rules.evaluate), the findings table rows, the grouping row and the corrected
Claim; the load of the export index before them is timed once (parsed in this process). Each
figure is the median of `--rounds` passes (microseconds a claim). It prints the budget and how far the stages that are the
service's own code (the case and the rules: the single copy the issue requires) go into it alone.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_batch_budget.py EXPORT [--rounds 3] [--db PATH]
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench_batch import FLOOR  # noqa: E402
from hooks.rules import evaluate  # noqa: E402
from nccidata import open_reference  # noqa: E402
from service.batch import billing_case, run_info  # noqa: E402
from service.bulk_input import BatchInput, InputRecord, Joiner, RawRecord  # noqa: E402
from service.claim_groups import group_row  # noqa: E402
from service.corrected_claims import corrected  # noqa: E402
from service.findings_table import finding_rows  # noqa: E402


def floor_seconds(export: str) -> float:
    """Seconds of bench_batch's floor on `export` (its own process: read + orjson-parse every line)."""
    out = subprocess.run([sys.executable, "-c", FLOOR, export], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["wall"]


def timed(rounds: int, stage) -> float:
    """The median seconds of `rounds` calls of `stage()`, with the cyclic collector off (the workers
    leave it on: these figures are the least a worker spends, which is what the budget is held to)."""
    times = []
    for _ in range(rounds):
        gc.collect()
        gc.disable()
        t0 = time.perf_counter()
        stage()
        times.append(time.perf_counter() - t0)
        gc.enable()
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("export")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default=None, help="the NCCI store (default: the embedded starter set)")
    args = ap.parse_args()
    print("command:", " ".join(["python", *sys.argv]))
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    reference = open_reference(args.db)
    config: dict = {}
    run, _described = run_info(args.db, config)
    floor = statistics.median(floor_seconds(args.export) for _ in range(args.rounds))

    t0 = time.perf_counter()
    with BatchInput([args.export]) as source:
        load = time.perf_counter() - t0
        raws = [r for r in source.raw() if isinstance(r, RawRecord)]
        joiner = Joiner(source.index_path)
        joined: list = []
        cases: list = []
        results: list = []

        def join() -> None:
            joined[:] = [joiner.join(r) for r in raws]

        def case() -> None:
            cases[:] = [billing_case(j, reference)[1] for j in joined if isinstance(j, InputRecord)]

        def rules() -> None:
            results[:] = [evaluate(c, reference, config) for c in cases]

        def rows() -> None:
            for n, (c, f) in enumerate(zip(cases, results)):
                finding_rows(c, f, reference, ("Claim.ndjson", n), run)

        def grouping() -> None:
            for n, (c, f) in enumerate(zip(cases, results)):
                group_row(c, None, ("Claim.ndjson", n), f)

        def fixed() -> None:
            for c, f in zip(cases, results):
                if f:
                    corrected(c, f)

        stages = {name: timed(args.rounds, fn) for name, fn in
                  (("join", join), ("case", case), ("rules", rules), ("rows", rows), ("grouping", grouping),
                   ("corrected", fixed))}
        joiner.close()
    claims = len(cases)
    per = {name: s / claims * 1e6 for name, s in stages.items()}
    floor_us = floor / claims * 1e6
    budget = 4 * floor_us
    print(f"claims reviewed: {claims:,} (of {len(raws):,} claim records)")
    print(f"floor: {floor:.2f} s, {claims / floor:,.0f} claims/s, {floor_us:.1f} us a claim")
    print(f"budget a claim (2 workers >= 0.5x the floor): 4 x {floor_us:.1f} = {budget:.1f} us of CPU, everything in")
    print(f"{'stage':<22}{'us a claim':>12}{'x floor':>10}{'of budget':>11}")
    print(f"{'index load (once)':<22}{load / claims * 1e6:>12.1f}{load / floor:>10.2f}{load / floor / 4:>10.0%}")
    for name, us in per.items():
        print(f"{name:<22}{us:>12.1f}{us / floor_us:>10.2f}{us / budget:>10.0%}")
    total = sum(per.values()) + load / claims * 1e6
    own = per["case"] + per["rules"]
    print(f"{'all stages':<22}{total:>12.1f}{total / floor_us:>10.2f}{total / budget:>10.0%}")
    print(f"the service's own code (case + rules): {own:.1f} us, {own / budget:.0%} of the budget by itself")
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

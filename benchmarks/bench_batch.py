"""Benchmark: `fluoro-cds batch` throughput (claims per second), 1 worker vs 2, side by side.

Run from the repository root:
    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_batch.py [--claims 20000] [--repeats 3]

Input: NDJSON of claim-review Bundles (Claim + Encounter, Procedures, Observations, reports),
cycled from the acceptance scenarios 1-11 with fresh ids, reviewed against the starter set.
Prints the median wall time and claims/s per worker count and their ratio.
"""
from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

from hooks.config import resolve  # noqa: E402
from service.batch import run  # noqa: E402
from tests.scenario_fixtures import scenario  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    bundles = [scenario(n).context["claim"] for n in range(1, 12)]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "claims.ndjson"
        with open(src, "wb") as fh:
            for i in range(args.claims):
                b = bundles[i % len(bundles)]
                claim = dict(b["entry"][0]["resource"], id=f"bench-{i}")
                fh.write(orjson.dumps({**b, "entry": [{"resource": claim}, *b["entry"][1:]]}) + b"\n")
        config = resolve(None)
        db = str(Path(tmp) / "absent.sqlite")  # starter set
        results = {}
        for workers in (1, 2):
            times = []
            for _ in range(args.repeats):
                out = io.BytesIO()
                t0 = time.perf_counter()
                summary = run(str(src), out, db_path=db, config=config, workers=workers)
                times.append(time.perf_counter() - t0)
                assert summary["records"] == args.claims and summary["errors"] == 0
            results[workers] = statistics.median(times)
    print(f"command: PYTHONPATH=. python benchmarks/bench_batch.py --claims {args.claims} "
          f"--repeats {args.repeats}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    for workers, secs in results.items():
        print(f"workers={workers}: median {secs:.2f} s, {args.claims / secs:,.0f} claims/s")
    print(f"ratio 2 workers / 1 worker throughput: {results[1] / results[2]:.2f}x")


if __name__ == "__main__":
    main()

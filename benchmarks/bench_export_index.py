"""Benchmark: the export index load of `fluoro-cds batch` (service.bulk_input.ExportIndex.load), the
step before any claim is reviewed, against the floor of parsing the same companion files, with
where its time goes (each SQL statement's time; the rest is Python: reading, parsing, bookkeeping).

Run from the repository root (the machine should be quiet; the load average is printed):
    PYTHONPATH=. .venv/bin/python benchmarks/bench_export_index.py [--claims 200000] [--repeats 3]
        [--export DIR] [--workers 2]

Input: `fluoro-cds sample-data` (seed 1) of `--claims` claims, or an existing export (`--export`).
Each repeat, in turn: the floor (read and orjson-parse every line of the companion files, the
claims' files left out: what the load reads), the load into a new index in a temporary folder,
parsed in this process, and (``--workers`` N > 1) the load as an ``--out-dir`` run makes it, the
lines parsed in the batch's own pool of N workers (started, and warm, before the first repeat: a
run's workers start up while it classifies its inputs), this process writing. Printed: medians of
the wall times, the ratio load / floor, the ratio of the two loads, and the load's time by SQL
statement (median over the repeats, the load parsed here) with its share of that load. Compare with `bench_batch.py`'s batch wall
time on the same export for the load's share of a run.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hooks.config import resolve  # noqa: E402
from service import batch  # noqa: E402
from service.bulk_input import ExportIndex, input_files  # noqa: E402


class _TimedConnection:
    """A sqlite3 connection that adds the time of each statement (by its first words) to `spent`."""

    def __init__(self, db, spent: collections.Counter) -> None:
        self._db, self._spent = db, spent

    def __getattr__(self, name: str):
        return getattr(self._db, name)

    def _timed(self, method: str, sql: str, *args):
        if method == "executemany" and not isinstance(args[0], list):
            args = (list(args[0]),)  # a generator's own time counted with its statement
        t = time.perf_counter()
        try:
            return getattr(self._db, method)(sql, *args)
        finally:
            self._spent[" ".join(sql.split()[:5])[:48]] += time.perf_counter() - t

    def execute(self, sql: str, *args):
        return self._timed("execute", sql, *args)

    def executemany(self, sql: str, rows):
        return self._timed("executemany", sql, rows)

    def executescript(self, sql: str):
        return self._timed("executescript", sql)


def floor(paths: list[str]) -> float:
    """Wall time to read and parse every line of `paths`."""
    t = time.perf_counter()
    for path in paths:
        with open(path, "rb") as fh:
            for line in fh:
                if line.strip():
                    orjson.loads(line)
    return time.perf_counter() - t


def load(files, folder: str, map_parts=None) -> tuple[float, float, collections.Counter]:
    """Wall and CPU time (of this process) of one index load of `files` into a new index under
    `folder`, and its SQL time by statement; `map_parts`: where the lines are parsed (None: here)."""
    spent: collections.Counter = collections.Counter()
    index = ExportIndex(os.path.join(folder, "index.sqlite"), create=True)
    index.db = _TimedConnection(index.db, spent)
    try:
        t, c = time.perf_counter(), time.process_time()
        errors = sum(1 for _ in index.load(files, map_parts))
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    finally:
        index.close()
    if errors:
        raise SystemExit(f"the export has {errors} bad companion records: not a clean sample")
    return wall, cpu, spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--export", help="an existing export directory (else a sample export is written)")
    ap.add_argument("--workers", type=int, default=2, help="the pool of the parsed-in-workers load (0: none)")
    args = ap.parse_args()
    print(f"# {' '.join([Path(sys.executable).name, *sys.argv])}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        export = args.export
        if export is None:
            export = os.path.join(tmp, "export")
            env = {**os.environ, "PYTHONPATH": str(ROOT), "FLUORO_CDS_DB": "/nonexistent/absent.sqlite"}
            subprocess.run([sys.executable, "-m", "service.cli", "sample-data", export, "--claims", str(args.claims)],
                           check=True, env=env, cwd=ROOT, capture_output=True, timeout=3600)
        files = [f for f in input_files([export]) if not f.claims]
        floors, walls, cpus, pooled, spent = [], [], [], [], collections.defaultdict(list)
        with contextlib.ExitStack() as stack:
            imap = None
            if args.workers > 1:  # the batch's own pool (service.batch), started and warm before the timing
                imap = stack.enter_context(batch._pool(args.workers, batch._init_table_worker,
                                                       (None, resolve(None), ("", "", ""), "parquet")))
                list(imap(abs, range(2 * args.workers)))
            for n in range(args.repeats):
                floors.append(floor([f.path for f in files]))
                with tempfile.TemporaryDirectory(dir=tmp) as folder:
                    wall, cpu, by_sql = load(files, folder)
                walls.append(wall)
                cpus.append(cpu)
                for sql, s in by_sql.items():
                    spent[sql].append(s)
                line = f"repeat {n + 1}: floor {floors[-1]:.2f} s, load {wall:.2f} s (CPU {cpu:.2f} s)"
                if imap is not None:
                    with tempfile.TemporaryDirectory(dir=tmp) as folder:
                        pooled.append(load(files, folder, imap)[0])
                    line += f", load parsed in {args.workers} workers {pooled[-1]:.2f} s"
                print(line, flush=True)
        wall = statistics.median(walls)
        sql = {k: statistics.median(v) for k, v in spent.items()}
        result = {"companion_files": len(files), "repeats": args.repeats,
                  "floor_s": round(statistics.median(floors), 2), "load_s": round(wall, 2),
                  "load_cpu_s": round(statistics.median(cpus), 2),
                  "load_vs_floor": round(wall / statistics.median(floors), 2),
                  **({"load_in_workers_s": round(statistics.median(pooled), 2),
                      "in_workers_vs_here": round(statistics.median(pooled) / wall, 2)} if pooled else {}),
                  "sql_s": round(sum(sql.values()), 2), "python_s": round(wall - sum(sql.values()), 2),
                  "by_statement": {k: {"s": round(v, 2), "share": round(v / wall, 3)}
                                   for k, v in sorted(sql.items(), key=lambda kv: -kv[1]) if v >= 0.01}}
        print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

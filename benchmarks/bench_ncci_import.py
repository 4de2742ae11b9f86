"""Benchmark: import the full practitioner PTP table (2,546,017 rows) with `fluoro-cds ncci import`
versus the sqlite3 CLI's own `.import` of the same rows, side by side in one run.

Usage: PYTHONPATH=. python benchmarks/bench_ncci_import.py [--rounds 3] [--shared ../shared/ncci]

Prints the command line, each round's times, the medians, the ratio ours / sqlite3 .import and
the size of the release file. Both importers read the same decompressed TSV; our importer is
also timed on the .tsv.gz as shipped. Our figure includes validation of every row (codes,
dates, modifier indicators), the WITHOUT ROWID primary-key b-tree, and the catalog switch.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nccidata.importer import import_paths  # noqa: E402
from nccidata.store import releases_dir  # noqa: E402


def sqlite3_import(tsv: Path, work: Path) -> float:
    db = work / "cli.db"
    db.unlink(missing_ok=True)
    start = time.perf_counter()
    subprocess.run(["/usr/bin/sqlite3", str(db), "-cmd", ".mode tabs", f".import {tsv} ptp"], check=True)
    return time.perf_counter() - start


def ours(path: Path, work: Path) -> tuple[float, int, int]:
    db = work / "ours.sqlite"
    shutil.rmtree(releases_dir(db), ignore_errors=True)
    db.unlink(missing_ok=True)
    start = time.perf_counter()
    [info] = import_paths(db, [path], setting="practitioner", label="2024Q3")
    elapsed = time.perf_counter() - start
    size = (releases_dir(db) / info.file).stat().st_size
    return elapsed, info.row_count, size


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "ncci"))
    args = ap.parse_args()
    gz = Path(args.shared) / "ptp_practitioner_2024q3.tsv.gz"
    print("command:", " ".join(["python", *sys.argv]))
    with tempfile.TemporaryDirectory(dir=ROOT.parent if (ROOT.parent).is_dir() else None) as tmp:
        work = Path(tmp)
        tsv = work / "ptp_practitioner_2024q3.tsv"
        with gzip.open(gz, "rb") as src, open(tsv, "wb") as dst:
            shutil.copyfileobj(src, dst)
        cli, mine, mine_gz = [], [], []
        rows = size = 0
        for i in range(args.rounds):
            cli.append(sqlite3_import(tsv, work))
            t, rows, size = ours(tsv, work)
            mine.append(t)
            mine_gz.append(ours(gz, work)[0])
            print(f"round {i + 1}: sqlite3 .import {cli[-1]:.2f} s | ours (tsv) {mine[-1]:.2f} s | "
                  f"ours (tsv.gz) {mine_gz[-1]:.2f} s")
        cli_db = (work / "cli.db").stat().st_size
    m_cli, m_mine, m_gz = (statistics.median(x) for x in (cli, mine, mine_gz))
    print(f"rows: {rows:,}")
    print(f"median sqlite3 .import: {m_cli:.2f} s  (all-text table, no key, {cli_db / 1e6:.1f} MB)")
    print(f"median ours from .tsv:   {m_mine:.2f} s  ratio {m_mine / m_cli:.2f}x")
    print(f"median ours from .tsv.gz: {m_gz:.2f} s  ratio {m_gz / m_cli:.2f}x")
    print(f"release file size: {size / 1e6:.1f} MB ({size / rows:.1f} bytes/row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

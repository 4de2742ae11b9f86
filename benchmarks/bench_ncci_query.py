"""Benchmark: "all PTP edits among the 10 codes of a claim on a date" on the full practitioner
table, and service start-up with the full store.

Usage: PYTHONPATH=. python benchmarks/bench_ncci_query.py [--db STORE] [--claims 2000] [--rounds 5]
(without --db the practitioner PTP table of ../shared/ncci is imported into a temporary store).

Claims: 76000 plus 9 codes drawn (seeded) from the column-1 codes of 76000's edits and common
E/M, injection and imaging codes. Figures (medians per claim, in interleaved rounds):
- SQL: the store without its pair index (one prepared statement, IN x IN on the
  (column_1, column_2) key, ~100 B-tree seeks), rows as PtpEdit objects;
- index: the same answer from the release's memory-mapped pair index (nccidata/pairindex.py);
  both paths are checked to give the same rows for every claim first;
- cold: ReferenceData.ptp_edits with the per-store LRU cleared before each call;
- warm: ReferenceData.ptp_edits on codes seen before, on any date (LRU hit).
Start-up: a fresh interpreter opening the store (open_reference) and the Flask app
(create_app), with the process's peak RSS, to show nothing is loaded into memory.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nccidata import open_reference  # noqa: E402
from nccidata.importer import import_paths  # noqa: E402
from nccidata.store import SqliteStore, releases_dir  # noqa: E402

COMMON = ["99202", "99203", "99204", "99212", "99213", "99214", "99215", "20610", "20611", "64483",
          "62323", "77002", "77003", "36556", "J1100", "J3301", "96374", "93458", "11042", "72100"]

STARTUP = """
import resource, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from nccidata import open_reference
ref = open_reference({db!r})
from datetime import date
ref.ptp_edits(["29881", "76000"], date(2024, 8, 1), "practitioner")
t1 = time.perf_counter()
def anon_mb():  # private memory; mapped index pages are file-backed and shared
    status = dict(l.split(":", 1) for l in open("/proc/self/status") if ":" in l)
    return int(status["RssAnon"].split()[0]) / 1024
rss_ref, anon_ref = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, anon_mb()
from service.app import create_app
from service.settings import Settings
app = create_app(Settings(db_path={db!r}, state_db_path={db!r} + ".state"))
t2 = time.perf_counter()
print(f"{{t1 - t0:.3f}} {{t2 - t0:.3f}} {{rss_ref:.0f}} {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}} {{anon_ref:.0f}} {{anon_mb():.0f}}")
"""


def claims(store: SqliteStore, n: int, seed: int = 7) -> list[list[str]]:
    info = store.pick("ptp", "practitioner", date(2024, 8, 1))
    conn = store.connection(info)
    partners = [r[0] for r in conn.execute(
        "SELECT column_1 FROM ptp WHERE column_2 = '76000' AND deletion IS NULL")]
    rng = random.Random(seed)
    pool = partners + COMMON * 20
    out = []
    for _ in range(n):
        codes = {"76000"}
        while len(codes) < 10:
            codes.add(rng.choice(pool))
        out.append(sorted(codes))
    return out


def median_us(fn, items) -> float:
    times = []
    for item in items:
        t = time.perf_counter_ns()
        fn(item)
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db")
    ap.add_argument("--claims", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "ncci"))
    args = ap.parse_args()
    print("command:", " ".join(["python", *sys.argv]))
    print("load average before: %.2f %.2f %.2f (machine has %d CPUs)" % (*os.getloadavg(), os.cpu_count()))
    tmp = None
    db = args.db
    if db is None:
        tmp = tempfile.TemporaryDirectory()
        db = str(Path(tmp.name) / "ncci.sqlite")
        import_paths(db, [Path(args.shared) / "ptp_practitioner_2024q3.tsv.gz"])
    store = open_reference(db)
    assert isinstance(store, SqliteStore), "the store holds no releases"
    dos = date(2024, 8, 1)
    batch = claims(store, args.claims)
    info = store.pick("ptp", "practitioner", dos)
    store.ptp_edits(batch[0], dos, "practitioner")  # open the connection, load lookups

    sql_store = SqliteStore(db, use_pair_index=False)
    assert store.pair_index(info) is not None, "the release has no pair index"
    hits = []
    for c in batch:  # both paths give the same rows
        by_index = store._ptp_query(info, tuple(c))
        by_sql = sql_store._ptp_query(info, tuple(c))
        assert sorted(by_index, key=repr) == sorted(by_sql, key=repr), c
        hits.append(len(store.ptp_edits(c, dos, "practitioner")))

    def cold(c):
        store._ptp_cached.cache_clear()
        store.ptp_edits(c, dos, "practitioner")

    rounds: dict[str, list[float]] = {"sql": [], "index": [], "cold": [], "warm": []}
    for _ in range(args.rounds):  # interleaved, so that load from elsewhere hits each alike
        rounds["sql"].append(median_us(lambda c: sql_store._ptp_query(info, tuple(c)), batch))
        rounds["index"].append(median_us(lambda c: store._ptp_query(info, tuple(c)), batch))
        rounds["cold"].append(median_us(cold, batch))
        for c in batch:
            store.ptp_edits(c, dos, "practitioner")
        rounds["warm"].append(median_us(lambda c: store.ptp_edits(c, dos, "practitioner"), batch))
    print(f"claims: {len(batch)} of 10 codes; edits in force per claim median {statistics.median(hits)}, "
          f"max {max(hits)}; {args.rounds} interleaved rounds, per-round medians:")
    labels = {"sql": "SQL IN x IN lookup + row objects", "index": "pair index lookup + row objects",
              "cold": "ptp_edits, LRU cleared (index)", "warm": "ptp_edits, LRU hit"}
    for key, label in labels.items():
        figures = ", ".join(f"{x:.1f}" for x in rounds[key])
        print(f"  {label:34s} median {statistics.median(rounds[key]):6.1f} us  (rounds: {figures})")
    ratios = [s_ / i for s_, i in zip(rounds["sql"], rounds["index"])]
    print(f"  SQL / pair index, per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    store_mb = sum(f.stat().st_size for f in releases_dir(db).iterdir()) / 1e6
    starts = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", STARTUP.format(root=str(ROOT), db=db)],
                             capture_output=True, text=True, check=True).stdout.split()
        starts.append(tuple(float(x) for x in out))
    print("start-up (fresh interpreter, 5 runs, median): open_reference + first query "
          f"{statistics.median(s[0] for s in starts):.3f} s; create_app {statistics.median(s[1] for s in starts):.3f} s; "
          f"peak RSS after open_reference + query {statistics.median(s[2] for s in starts):.0f} MB "
          f"(private {statistics.median(s[4] for s in starts):.0f} MB), "
          f"after create_app (Flask, fhir.resources ...) {statistics.median(s[3] for s in starts):.0f} MB "
          f"(private {statistics.median(s[5] for s in starts):.0f} MB); "
          f"store on disk {store_mb:.0f} MB")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

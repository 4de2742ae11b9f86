"""Benchmark: `fluoro-cds batch --out-dir` throughput on a synthetic FHIR Bulk Data export, against
the floor of reading and parsing the same input, with peak memory; and the Spark job.

Run from the repository root (the machine should be quiet; the load average is printed):
    PYTHONPATH=. .venv/bin/python benchmarks/bench_batch.py [--claims 200000] [--repeats 1] [--no-spark]
        [--baseline DIR]

Input: `fluoro-cds sample-data` (service/sample_data.py, seed 1): `--claims` Claims and
ExplanationOfBenefits with their Encounters, Procedures, Observations, DiagnosticReports,
ImagingStudies, Locations, Coverages and Patients, one NDJSON file per resource type; reviewed
against the starter set. Figures, each run in its own process (peak memory = the largest
resident set of that process and its workers, getrusage ru_maxrss):
- floor: one process that reads every NDJSON file of the export and parses each line with
  orjson (no joining, no review): claims / wall time;
- batch: `fluoro-cds batch EXPORT --out-dir DIR` (Parquet) with 1 and 2 workers: claims / wall
  time, and the ratio to the floor (target: 2 workers >= 0.5);
- Spark local[2]: deploy/spark_job.py --out-dir on the same export (the driver indexes its
  companion files, the executors join each claim with them, as the local batch does);
- the CMS tables: the batch with 2 workers on a store of the real July 2024 tables
  (``--cms DIR``, default ../shared/ncci, imported with ``fluoro-cds ncci import`` first; skipped
  when absent or with ``--cms ''``), where the starter set's 128 PTP rows a setting become 2.5
  million and more edits apply;
- Claim-first Bundles (``--no-bundles`` skips it): the same claims, each joined with its
  companions once (service.bulk_input.BatchInput.records) and written as one Bundle a line, as the
  issue's own starting figure was measured: the floor on that file and the batch with 2 workers
  on it. The review without the export's index and join, against the floor of its own input.

Each batch figure also gives the CPU time of the process and its workers (user + system, from
getrusage of the children), so a change can be judged apart from how busy the machine is.
``--baseline DIR`` (another checkout of the repository, e.g. ``git archive <commit>`` unpacked)
runs the same batch commands from there too (the CMS tables' run included, on the store this
checkout imported), each repeat alternating with this checkout's, so a change is measured against
its baseline side by side on the same export (the baseline's own ``sample-data`` is not used).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_MEASURE = r"""
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t0
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"wall": wall, "peak_kib": max(usage.ru_maxrss, 0), "cpu": usage.ru_utime + usage.ru_stime,
                  "rc": proc.returncode, "stderr": proc.stderr[-2000:]}))
"""

FLOOR = r"""
import os, sys, time, resource, json
import orjson
root = sys.argv[1]
t0 = time.perf_counter()
n = 0
for name in sorted(os.listdir(root)):
    if name.endswith(".ndjson"):
        with open(os.path.join(root, name), "rb") as fh:
            for line in fh:
                if line.strip():
                    orjson.loads(line)
                    n += 1
wall = time.perf_counter() - t0
print(json.dumps({"wall": wall, "records": n, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


_BUNDLES = r"""
import sys, orjson
from service.bulk_input import BatchInput, InputError
with BatchInput([sys.argv[1]]) as source, open(sys.argv[2], "wb") as out:
    for record in source.records():
        if isinstance(record, InputError):
            continue
        url = {id(v): k for k, v in record.aliases.items()}
        entries = [{"fullUrl": url[id(r)], "resource": r} if id(r) in url else {"resource": r}
                   for r in (record.resource, *record.companions)]
        out.write(orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}) + b"\n")
"""


def measure_run(cmd: list[str], env: dict, root: Path = ROOT) -> dict:
    """Run `cmd` from checkout `root` in a child process: its wall time, CPU (user + system, with
    its workers) and peak memory (KiB, the largest resident set of it and its workers)."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True,
                         env={**env, "PYTHONPATH": str(root)}, cwd=root, timeout=3600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {result['stderr']}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--claims", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-spark", action="store_true")
    ap.add_argument("--no-bundles", action="store_true", help="skip the Claim-first Bundles figures")
    ap.add_argument("--cms", default=str(ROOT.parent / "shared" / "ncci"),
                    help="folder of the CMS tables to import for a run on them ('' skips it)")
    ap.add_argument("--baseline", type=Path, help="another checkout whose batch runs alongside, alternating")
    args = ap.parse_args()
    load = os.getloadavg()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLUORO_CDS_DB": "/nonexistent/absent.sqlite"}
    env.pop("FLUORO_CDS_DEFAULTS", None)
    fluoro = [sys.executable, "-m", "service.cli"]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        export = Path(tmp) / "export"
        subprocess.run([*fluoro, "sample-data", str(export), "--claims", str(args.claims)], check=True, env=env,
                       cwd=ROOT, capture_output=True)
        size = sum(f.stat().st_size for f in export.iterdir())

        def batch_cmd(workers: int):
            return lambda out: [*fluoro, "batch", str(export), "--out-dir", str(out), "--workers", str(workers),
                                "--quiet"]

        def repeat(runs: dict[str, tuple[Path, object]]) -> None:
            """Each named (checkout, command) `--repeats` times, alternating; medians kept."""
            got: dict[str, list[dict]] = {name: [] for name in runs}
            for i in range(args.repeats):
                for name, (root, make_cmd) in runs.items():
                    out = Path(tmp) / f"{name}-{i}"
                    got[name].append(measure_run(make_cmd(out), env, root))
                    shutil.rmtree(out, ignore_errors=True)
            for name, measured in got.items():
                results[name] = {"wall": statistics.median(r["wall"] for r in measured),
                                 "cpu": statistics.median(r["cpu"] for r in measured),
                                 "peak_kib": max(r["peak_kib"] for r in measured)}

        def floor_of(folder: Path) -> dict:
            floors = [json.loads(subprocess.run([sys.executable, "-c", FLOOR, str(folder)], capture_output=True,
                                                text=True, check=True).stdout) for _ in range(args.repeats)]
            return {"wall": statistics.median(f["wall"] for f in floors),
                    "peak_kib": max(f["peak_kib"] for f in floors), "records": floors[0]["records"]}

        results["floor"] = floor_of(export)
        for workers in (1, 2):
            runs = {f"batch-{workers}": (ROOT, batch_cmd(workers))}
            if args.baseline is not None:
                runs[f"baseline batch-{workers}"] = (args.baseline.resolve(), batch_cmd(workers))
            repeat(runs)
        cms = Path(args.cms) if args.cms else None
        if cms is not None and (cms / "ptp_practitioner_2024q3.tsv.gz").is_file():
            store = Path(tmp) / "ncci.sqlite"
            for names, extra in ((("ptp_practitioner_2024q3.tsv.gz", "ptp_outpatient_hospital_2024q3.tsv.gz",
                                   "mue_practitioner_2024q3.tsv", "mue_outpatient_hospital_2024q3.tsv",
                                   "aoc_2024q3.tsv"), []),
                                 (("mpfs_indicators_2024.tsv", "mpfs_rvu_2024.tsv"), []),
                                 (("place_of_service_codes.tsv",), ["--release", "2024Q3"])):
                subprocess.run([*fluoro, "ncci", "import", "--db", str(store), *extra, *(str(cms / n) for n in names)],
                               check=True, env=env, cwd=ROOT, capture_output=True)
            def on_cms(out: Path) -> list[str]:
                return [*batch_cmd(2)(out), "--db", str(store), "--require-cms-data"]

            runs = {"batch-2 CMS tables": (ROOT, on_cms)}
            if args.baseline is not None:  # the same store: a release's tables read the same in both
                runs["baseline batch-2 CMS tables"] = (args.baseline.resolve(), on_cms)
            repeat(runs)
        if not args.no_bundles:
            bundles = Path(tmp) / "bundles"
            bundles.mkdir()
            subprocess.run([sys.executable, "-c", _BUNDLES, str(export), str(bundles / "bundles.ndjson")], check=True,
                           env=env, cwd=ROOT, capture_output=True)
            results["bundles floor"] = floor_of(bundles)
            repeat({"bundles batch-2": (ROOT, lambda out: [*fluoro, "batch", str(bundles / "bundles.ndjson"), "--out-dir",
                                                           str(out), "--workers", "2", "--quiet"])})
        if not args.no_spark:
            claims = [str(export)]  # the export itself: companions joined as by the local batch
            repeat({"spark-local2": (ROOT, lambda out: [sys.executable, str(ROOT / "deploy" / "spark_job.py"), *claims,
                                                        "--out-dir", str(out), "--master", "local[2]"])})
    print(f"command: PYTHONPATH=. python benchmarks/bench_batch.py --claims {args.claims} --repeats {args.repeats}"
          + (" --no-spark" if args.no_spark else "") + (" --no-bundles" if args.no_bundles else "")
          + (f" --cms {args.cms}" if args.cms != str(ROOT.parent / "shared" / "ncci") else "")
          + (f" --baseline {args.baseline}" if args.baseline else ""))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; load average at the start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"input: {args.claims:,} claims as a Bulk Data export, {size / 1e6:,.0f} MB, "
          f"{results['floor']['records']:,} resources")
    floor = args.claims / results["floor"]["wall"]
    print("| run | wall time | claims/s | vs floor | CPU per claim | peak memory |")
    print("|---|---|---|---|---|---|")
    bundle_floor = args.claims / results["bundles floor"]["wall"] if "bundles floor" in results else None
    for name, r in results.items():
        rate = args.claims / r["wall"]
        if name.startswith("bundles"):  # against the floor of its own input
            label = name if name == "bundles floor" else f"{name} (vs the bundles floor)"
            print(f"| {label} | {r['wall']:.1f} s | {rate:,.0f} | {rate / bundle_floor:.3f}x | "
                  + (f"{r['cpu'] / args.claims * 1e6:,.0f} us" if "cpu" in r else "-") + f" | {r['peak_kib'] / 1024:,.0f} MiB |")
            continue
        cpu = f"{r['cpu'] / args.claims * 1e6:,.0f} us" if "cpu" in r else "-"
        print(f"| {name} | {r['wall']:.1f} s | {rate:,.0f} | {rate / floor:.3f}x | {cpu} | "
              f"{r['peak_kib'] / 1024:,.0f} MiB |")


if __name__ == "__main__":
    main()

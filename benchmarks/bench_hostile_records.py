"""Hostile records: the seconds one review costs on the worst shapes at and past the review bounds
(hooks.model.MAX_LINES, hooks.distinct.SITE_PAIRS; docs/rules.md "Bounds").

    python -m benchmarks.bench_hostile_records [--scale 1.0] [--baseline DIR]

Each shape is scenario 9's claim-review Bundle (33289 + 76000) grown: items alternating 33289 and
76000 in encounters of their own, sub-sites on every item, Procedures of other codes the claim does
not bill, 76000 Procedures in separate encounters, items on many dates with undated 76000 Procedures;
each at the bound and past it. One review each (``service.batch.review_record``, the claim-review
rules in process, starter set), in a process of its own per shape (`--baseline DIR`: the same shape
in a checkout of another revision, right after, for the figures before a change). `--scale` shrinks
the sizes past the bound for a slow baseline. Prints one JSON line per shape and revision: its size,
seconds, findings and error (a shape past the bound is refused at once).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

BOUND = 1000  # hooks.model.MAX_LINES (the shapes are made with the numbers, to run on any revision)


def shapes(scale: float) -> dict[str, dict]:
    past = max(BOUND + 1, int(4000 * scale))
    return {
        f"{BOUND} items, half 76000, encounters of their own": {"items": BOUND},
        f"{past} items, half 76000, encounters of their own": {"items": past},
        f"{BOUND - 2} items + {BOUND - 2} unbilled Procedures of another code": {"items": BOUND - 2, "other": BOUND - 2},
        f"{BOUND - 2} 76000 Procedures in separate encounters": {"fluoro": BOUND - 2},
        f"{int(8000 * scale)} 76000 Procedures in separate encounters": {"fluoro": int(8000 * scale)},
        f"{BOUND - 2} items on many dates + {BOUND - 2} undated 76000 Procedures": {
            "items": BOUND - 2, "dates": True, "fluoro": BOUND - 2, "undated": True},
        f"{BOUND} items with 4 sub-sites each": {"items": BOUND, "sites": 4},
        f"2 items with {int(8000 * scale)} sub-sites each": {"sites": int(8000 * scale)},
    }


def build(spec: dict) -> dict:
    """Scenario 9's Bundle grown by `spec` (items, sites, dates, other, fluoro, undated)."""
    import copy

    from tests.scenario_fixtures import scenario

    bundle = copy.deepcopy(scenario(9).request()["context"]["claim"])
    claim = bundle["entry"][0]["resource"]
    procs = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure"]
    fluoro = next(p for p in procs if p["code"]["coding"][0]["code"] == "76000")
    other = next(p for p in procs if p["code"]["coding"][0]["code"] != "76000")
    first, items = claim["item"], []
    for i in range(spec.get("items", 2)):
        item = copy.deepcopy(first[i % 2])
        item["sequence"] = i + 1
        if "items" in spec:
            item["encounter"] = [{"reference": f"Encounter/e{i}"}]
        if spec.get("dates"):
            item["servicedDate"] = f"2024-{1 + i % 12:02d}-{1 + (i // 12) % 28:02d}"
        if spec.get("sites"):
            item["subSite"] = [{"coding": [{"system": "http://snomed.info/sct", "code": str(100000 + i * 10_000 + k)}]}
                               for k in range(spec["sites"])]
        items.append(item)
    claim["item"] = items
    for template, n, code in ((other, spec.get("other", 0), "36556"), (fluoro, spec.get("fluoro", 0), None)):
        for i in range(n):
            proc = copy.deepcopy(template)
            proc["id"] = f"q{len(bundle['entry'])}"
            proc["encounter"] = {"reference": f"Encounter/x{i}"}
            proc.pop("performedPeriod", None)
            if code:
                proc["code"] = {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]}
            if spec.get("undated") and template is fluoro:
                proc.pop("performedDateTime", None)
            bundle["entry"].append({"fullUrl": f"http://x/Procedure/{proc['id']}", "resource": proc})
    return bundle


def one(name: str, spec: dict) -> dict:
    """Review the shape once here."""
    from hooks.config import resolve
    from nccidata import open_reference
    from service.batch import review_record

    bundle = build(spec)
    size = len(json.dumps(bundle))
    ref, config = open_reference(None), resolve(None)
    started = time.perf_counter()
    out = review_record(bundle, ref, config)
    return {"shape": name, "mb": round(size / 1e6, 2), "seconds": round(time.perf_counter() - started, 2),
            "findings": len(out.get("findings") or []), "error": (out.get("error") or "")[:80] or None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--baseline", help="a checkout of another revision: each shape again there")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: one shape, in this process
    args = p.parse_args()
    table = shapes(args.scale)
    if args.one:
        print(json.dumps(one(args.one, table[args.one])))
        return
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, FLUORO_CDS_DB=os.path.join(here, ".no-such-dir", "ncci.sqlite"))
    for name in table:
        for label, root in (("this", here), ("baseline", args.baseline)):
            if root is None:
                continue
            script = os.path.join(here, "benchmarks", "bench_hostile_records.py")
            proc = subprocess.run([sys.executable, script, "--scale", str(args.scale), "--one", name], cwd=root,
                                  env=dict(env, PYTHONPATH=root), capture_output=True, text=True, timeout=3600)
            line = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else json.dumps(
                {"shape": name, "failed": proc.stderr.strip()[-300:]})
            print(json.dumps({"revision": label, **json.loads(line)}), flush=True)
    print(f"# command: python -m benchmarks.bench_hostile_records --scale {args.scale}"
          + (f" --baseline {args.baseline}" if args.baseline else ""))


if __name__ == "__main__":
    main()

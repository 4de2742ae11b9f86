"""Benchmark: rule evaluation of a 10-line claim (target < 1 ms median), with the parse cost beside it.

Run from the repository root:
    PYTHONPATH=. /work/venv/bin/python benchmarks/bench_rules.py

Prints medians (microseconds per claim) measured side by side in one run:
- evaluate(): the rules alone on an already extracted Case (starter set reference data);
- extract: case_from_claim() on the Claim + its 10 companions (element-level validation);
- extract+split: split_claim_bundle() of the context Bundle + case_from_claim();
- R4B Claim / R4B Bundle: fhir.resources R4B full model validation of the same Claim / Bundle;
- orjson.loads of the request body, for scale.
"""
from __future__ import annotations

import copy
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from fhir.resources.R4B.bundle import Bundle  # noqa: E402
from fhir.resources.R4B.claim import Claim  # noqa: E402

from hooks.config import resolve  # noqa: E402
from hooks.extract import case_from_claim, split_claim_bundle  # noqa: E402
from hooks.rules import evaluate  # noqa: E402
from nccidata.starter import starter  # noqa: E402
from tests.scenario_fixtures import bundle, claim_item, scenario  # noqa: E402

CODES = [("29881", ()), ("76000", ()), ("20610", ()), ("76000", ("26",)), ("33289", ()), ("20650", ()),
         ("62323", ()), ("77002", ()), ("76000", ("XS",)), ("99213", ())]


def ten_line_claim():
    s = scenario(4)
    claim = copy.deepcopy(s.claim)
    enc = s.encounter
    claim["item"] = [claim_item(i + 1, code, day="2024-08-05", pos="22", enc=enc, modifiers=mods)
                     for i, (code, mods) in enumerate(CODES)]
    return claim, copy.deepcopy(s.companions)


def median_us(fn, number: int, repeat: int = 15) -> tuple[float, float]:
    """(median, best) microseconds per call over `repeat` batches of `number` calls."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number * 1e6)
    return statistics.median(samples), min(samples)


def main() -> None:
    ref = starter()
    config = resolve(None)
    claim, companions = ten_line_claim()
    ctx_bundle = bundle([claim] + companions)
    body = orjson.dumps({"hook": "org.fluoro-cds.claim-review", "context": {"patientId": "p", "claim": ctx_bundle}})
    s4 = scenario(4).context["claim"]
    case = case_from_claim(claim, companions, ref)
    findings = evaluate(case, ref, config)
    rows = [
        ("evaluate() rules only, 10-line claim", median_us(lambda: evaluate(case, ref, config), 2000)),
        ("extract: case_from_claim (Claim + %d companions)" % len(companions),
         median_us(lambda: case_from_claim(claim, companions, ref), 1000)),
        ("extract+split: split_claim_bundle + case_from_claim",
         median_us(lambda: case_from_claim(*split_claim_bundle(ctx_bundle), ref), 1000)),
        ("R4B full validation: Claim (10 items)", median_us(lambda: Claim.model_validate(claim), 200)),
        ("R4B full validation: context Bundle", median_us(lambda: Bundle.model_validate(ctx_bundle), 100)),
        ("scenario 4 (2-line Claim Bundle): split + extract + evaluate",
         median_us(lambda: evaluate(case_from_claim(*split_claim_bundle(s4), ref), ref, config), 1000)),
        ("orjson.loads request body (%d bytes)" % len(body), median_us(lambda: orjson.loads(body), 2000)),
    ]
    print(f"python {platform.python_version()} on {platform.machine()}, {len(findings)} findings: "
          + ", ".join(f.code for f in findings))
    print("command: PYTHONPATH=. /work/venv/bin/python benchmarks/bench_rules.py")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print(f"{'measure':58} {'median us':>10} {'best us':>9}")
    for name, (med, best) in rows:
        print(f"{name:58} {med:10.1f} {best:9.1f}")
    med = [r[1][0] for r in rows]
    print(f"ratios of medians: R4B Claim validation / element extraction {med[3] / med[1]:.1f}x; "
          f"R4B Bundle / extract+split {med[4] / med[2]:.1f}x; rules / extraction {med[0] / med[1]:.2f}")


if __name__ == "__main__":
    main()

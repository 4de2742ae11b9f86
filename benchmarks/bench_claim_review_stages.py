"""Where a claim-review request's time goes, stage by stage, in one process (no HTTP).

The request is bench_load.py's claim-review body (scenario 1: the Claim in a Bundle with its
companions, full prefetch, ~8 KB). Each round times every stage on its own, then the whole
handler, per request; figures are medians over the requests of a round, and the command prints
every round so that noise shows:

- loads: orjson.loads of the body;      - validate: the CDS Hooks request JSON Schema check;
- split: split_claim_bundle;            - gather: gather_companions (prefetch, Bundle);
- extract: case_from_claim;             - rules: rules.evaluate;
- cards: cards.render;                  - dumps: orjson.dumps of the response;
- handle: the service handler as the app calls it (split + gather + extract + rules + cards).

    PYTHONPATH=. python benchmarks/bench_claim_review_stages.py [--requests 3000] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import orjson  # noqa: E402
from bench_load import request_body  # noqa: E402

from hooks import cards, rules  # noqa: E402
from hooks.config import resolve  # noqa: E402
from hooks.context import HookRequest  # noqa: E402
from hooks.extract import case_from_claim, split_claim_bundle  # noqa: E402
from hooks.services import claim_review  # noqa: E402
from nccidata import open_reference  # noqa: E402
from service.fhir_access import FhirAccess  # noqa: E402
from service.validation import check, request_validator  # noqa: E402

STAGES = ("loads", "validate", "split", "gather", "extract", "rules", "cards", "dumps", "handle")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print("command:", " ".join(["python", *sys.argv]))
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    tmp = tempfile.TemporaryDirectory()
    reference = open_reference(str(Path(tmp.name) / "ncci.sqlite"))  # the embedded starter set
    raw = orjson.dumps(request_body(1))
    print(f"request: {len(raw)} bytes")

    def hook_request(body: dict) -> HookRequest:
        return HookRequest(hook=body["hook"], hook_instance=body["hookInstance"], context=body["context"],
                           config=resolve(body.get("extension"), {}),
                           fhir=FhirAccess(prefetch=body.get("prefetch"), templates=claim_review.SERVICE.prefetch,
                                           context=body["context"], client=None),
                           reference=reference, extras={})

    for rnd in range(args.rounds):
        times: dict[str, list[int]] = {s: [] for s in STAGES}
        for _ in range(args.requests):
            t0 = time.perf_counter_ns()
            body = orjson.loads(raw)
            t1 = time.perf_counter_ns()
            check(request_validator(body["hook"]), body, "request")
            t2 = time.perf_counter_ns()
            req = hook_request(body)
            t3 = time.perf_counter_ns()
            claim, bundled = split_claim_bundle(req.context.get("claim"))
            t4 = time.perf_counter_ns()
            companions = claim_review.gather_companions(req, claim, bundled)
            t5 = time.perf_counter_ns()
            case = case_from_claim(claim, companions, reference)
            t6 = time.perf_counter_ns()
            findings = rules.evaluate(case, reference, req.config)
            t7 = time.perf_counter_ns()
            result = {"cards": cards.render(findings, case, req.config, service_label=claim_review.SERVICE_LABEL)}
            t8 = time.perf_counter_ns()
            orjson.dumps(result)
            t9 = time.perf_counter_ns()
            req = hook_request(orjson.loads(raw))
            ta = time.perf_counter_ns()
            claim_review.handle(req)
            tb = time.perf_counter_ns()
            for stage, ns in zip(STAGES, (t1 - t0, t2 - t1, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7,
                                          t9 - t8, tb - ta)):
                times[stage].append(ns)
        print(f"round {rnd + 1} (median us): " + ", ".join(
            f"{s} {statistics.median(times[s]) / 1000:.1f}" for s in STAGES))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Per-request overhead of the CDS Hooks protocol layer (not a test; prints figures).

Measures, in one process and one run:
  1. JSON Schema validation of a claim-review request (a Claim Bundle with 6 entries),
  2. WSGI throughput (werkzeug test client, no network) of
     a. a bare Flask app echoing the JSON body (the reference),
     b. POST /cds-services/fluoroscopy-claim-review on the real app (placeholder or real handler,
        whatever hooks/services/claim_review.py holds), with audit records written to SQLite,
  and the ratio b / a.

Run:  PYTHONPATH=. /work/venv/bin/python benchmarks/service_overhead.py [--seconds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402
from benchmarks.echo_app import create_app as create_echo_app  # noqa: E402

from service.app import create_app  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.validation import check, request_validator  # noqa: E402
from tests.service_support import claim, claim_review_request  # noqa: E402


def claim_bundle_request() -> dict:
    body = claim_review_request()
    body["context"]["claim"] = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": claim()},
        {"resource": {"resourceType": "Encounter", "id": "enc-1", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}},
        {"resource": {"resourceType": "Procedure", "id": "proc-1", "status": "completed",
                      "subject": {"reference": "Patient/pat-1"},
                      "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "29881"}]}}},
        {"resource": {"resourceType": "Procedure", "id": "proc-2", "status": "completed",
                      "subject": {"reference": "Patient/pat-1"},
                      "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "76000"}]}}},
        {"resource": {"resourceType": "Observation", "id": "obs-1", "status": "final",
                      "code": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                                           "code": "113730"}]},
                      "valueQuantity": {"value": 4.2, "unit": "min"}}},
        {"resource": {"resourceType": "Location", "id": "loc-1"}},
    ]}
    body["prefetch"] = {"patient": {"resourceType": "Patient", "id": "pat-1"}}
    return body


ROUNDS = 9


def _one_round(fn, seconds: float) -> float:
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n * 1e6


def per_call_us(fn, seconds: float) -> float:
    """Median microseconds per call over ROUNDS rounds."""
    return statistics.median(_one_round(fn, seconds / ROUNDS) for _ in range(ROUNDS))


def side_by_side_us(fns: list, seconds: float) -> list[float]:
    """Median us per call of each function, rounds interleaved (A B A B ...) so that machine
    load affects them alike."""
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(ROUNDS):
        for i, fn in enumerate(fns):
            samples[i].append(_one_round(fn, seconds / ROUNDS))
    return [statistics.median(s) for s in samples]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    body = claim_bundle_request()
    raw = orjson.dumps(body)
    v = request_validator("org.fluoro-cds.claim-review")
    check(v, body, "request")
    validate_us = per_call_us(lambda: check(v, body, "request"), args.seconds)
    python_only_us = per_call_us(lambda: v.py.is_valid(body), args.seconds)
    parse_us = per_call_us(lambda: orjson.loads(raw), args.seconds)

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(Settings(db_path=f"{tmp}/ncci.sqlite", state_db_path=f"{tmp}/state.sqlite"))
        cds = app.test_client()
        echo = create_echo_app().test_client()
        headers = {"Content-Type": "application/json"}
        assert cds.post("/cds-services/fluoroscopy-claim-review", data=raw, headers=headers).status_code == 200
        assert echo.post("/echo", data=raw, headers=headers).status_code == 200
        echo_us, cds_us = side_by_side_us(
            [lambda: echo.post("/echo", data=raw, headers=headers),
             lambda: cds.post("/cds-services/fluoroscopy-claim-review", data=raw, headers=headers)],
            2 * args.seconds)

    print(f"request body: {len(raw)} bytes (claim Bundle, 6 entries)")
    print(f"orjson parse:                       {parse_us:8.1f} us/request")
    print(f"JSON Schema validation (as served): {validate_us:8.1f} us/request")
    print(f"  of which python-jsonschema alone would take {python_only_us:8.1f} us/request")
    print(f"bare Flask echo (WSGI, in-process): {echo_us:8.1f} us/request  {1e6 / echo_us:8.0f} req/s")
    print(f"claim-review (WSGI, in-process):    {cds_us:8.1f} us/request  {1e6 / cds_us:8.0f} req/s")
    print(f"throughput ratio claim-review / echo: {echo_us / cds_us:.2f}")
    print("command: PYTHONPATH=. /work/venv/bin/python benchmarks/service_overhead.py "
          f"--seconds {args.seconds:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

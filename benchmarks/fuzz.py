"""Long fuzz run (issue 12): mutated requests of all three services and the feedback endpoint
against the real app (Flask test client, starter data), counting answers by status class.

    python -m benchmarks.fuzz [--requests 50000] [--workers 2] [--seed 1] [--served | --grow]

Mutations as in tests/test_fuzz.py (tests/fuzz_support.py: wrong JSON types, huge values, deep
nesting, deletions at one to three paths). Without ``--served`` the requests are mutated (with
their prefetch); with it the requests carry no prefetch and the data comes from a real FHIR server
(sekmet-fhir, started here on 127.0.0.1 and stopped at the end) through a proxy that mutates
about half of its answers (tests/misbehaving_fhir.py); there any answer but 200 or 412 counts as
a problem (the caller sent nothing wrong). With ``--grow`` one or two arrays of each request are
grown to 500-5,000 items (tests/fuzz_support.grow: items, entries, sub-sites, codings, ...) and an
answer slower than SLOW_SECONDS is a problem too (the review's bounds: docs/rules.md "Bounds").
Prints a JSON summary: requests, counts per status, 5xx (must be 0), answers that were not JSON,
4xx without an error, the slowest answer, and up to 5 failing examples.
Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import tempfile
import time
from collections import Counter
from pathlib import Path


SLOW_SECONDS = 5.0  # --grow: an answer slower than this is a problem (gunicorn's worker timeout is 30 s)


def _run(args: tuple[int, int, dict | None, bool]) -> dict:
    seed, count, upstream, grown = args
    import logging
    from contextlib import nullcontext
    from types import SimpleNamespace

    logging.disable(logging.CRITICAL)  # expected 4xx are logged at INFO
    from service.app import create_app
    from service.settings import Settings
    from tests.fuzz_support import grow, mutate, mutating, seeds, served_seeds
    from tests.misbehaving_fhir import MisbehavingFhir

    tmp = Path(tempfile.mkdtemp(prefix="fuzz-"))
    client = create_app(Settings(db_path=str(tmp / "ncci.sqlite"),
                                 state_db_path=str(tmp / "state.sqlite"))).test_client()
    rng = random.Random(seed)
    all_seeds = served_seeds()[0] if upstream else seeds()
    statuses: Counter[int] = Counter()
    problems: list[dict] = []
    not_json = no_error = 0
    slowest = 0.0
    with (MisbehavingFhir(SimpleNamespace(**upstream)) if upstream else nullcontext()) as proxy:
        for _ in range(count):
            path, body = rng.choice(all_seeds)
            if proxy is None:
                changed = grow(body, rng, rng.randint(1, 2)) if grown else mutate(body, rng, rng.randint(1, 3))
            else:
                proxy.transform = mutating(random.Random(rng.random()))
                changed = dict(body, fhirServer=proxy.base_url)
            data = json.dumps(changed)  # before the clock starts: the answer's time is the service's
            started = time.perf_counter()
            resp = client.post(path, data=data, content_type="application/json")
            seconds = time.perf_counter() - started
            slowest = max(slowest, seconds)
            statuses[resp.status_code] += 1
            ok_json = resp.mimetype == "application/json" and isinstance(resp.get_json(silent=True), dict)
            not_json += not ok_json
            if ok_json and resp.status_code >= 400 and not resp.get_json().get("error"):
                no_error += 1
            wrong = resp.status_code >= 500 or (proxy is not None and resp.status_code not in (200, 412)) \
                or seconds > SLOW_SECONDS
            if (wrong or not ok_json) and len(problems) < 5:
                problems.append({"path": path, "status": resp.status_code, "seconds": round(seconds, 2),
                                 "answer": resp.get_data(as_text=True)[:200]})
    return {"statuses": statuses, "not_json": not_json, "no_error": no_error, "problems": problems,
            "slowest": slowest}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=50_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--served", action="store_true",
                   help="mutated answers of a real FHIR server instead of mutated requests")
    p.add_argument("--grow", action="store_true",
                   help="requests with arrays grown to thousands of items (tests/fuzz_support.grow); an answer "
                        f"slower than {SLOW_SECONDS:.0f} s is a problem too")
    args = p.parse_args()
    share = -(-args.requests // args.workers)
    server = upstream = None
    if args.served:
        from tests.fhir_server import start_fhir_server
        from tests.fuzz_support import served_seeds

        server = start_fhir_server()
        server.load(served_seeds()[1])
        upstream = {"base_url": server.base_url, "token": server.token}
    started = time.perf_counter()
    try:
        with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
            parts = pool.map(_run, [(args.seed * 1000 + i, share, upstream, args.grow) for i in range(args.workers)])
    finally:
        if server is not None:
            from tests.fhir_server import stop_fhir_server

            stop_fhir_server(server)
    statuses: Counter[int] = Counter()
    for part in parts:
        statuses.update(part["statuses"])
    total = sum(statuses.values())
    print(json.dumps({
        "mode": "served" if args.served else "grow" if args.grow else "requests", "requests": total, "seconds": round(time.perf_counter() - started, 1),
        "by_status": {str(k): v for k, v in sorted(statuses.items())},
        "by_class": {f"{c}xx": sum(v for k, v in statuses.items() if k // 100 == c) for c in (2, 4, 5)},
        "not_json": sum(p["not_json"] for p in parts), "4xx_without_error": sum(p["no_error"] for p in parts),
        "slowest_seconds": round(max(p["slowest"] for p in parts), 2),
        "problems": [x for p in parts for x in p["problems"]][:5]}, indent=1))


if __name__ == "__main__":
    main()

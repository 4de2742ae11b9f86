"""Mutated CDS Hooks requests for the fuzz test (tests/test_fuzz.py) and benchmarks/fuzz.py.

Seeds are the realistic scenario requests of all three services (with their prefetch) and a
feedback body; a mutation puts a value of the wrong JSON type, a huge value, deep nesting or
nothing at one path of the request (context, Claim, Bundle entries, prefetch values); `grow`
makes arrays of the request thousands of items long (benchmarks/fuzz.py --grow)."""
from __future__ import annotations

import copy
import json
import random
from typing import Any, Callable, Iterator

from tests.scenario_fixtures import all_scenarios

FEEDBACK = {"feedback": [{"card": "b7b8d4b4-7c38-4a33-9f3b-6b6b1f2b8d10", "outcome": "overridden",
                          "overrideReason": {"reason": {"code": "x", "system": "http://example.org"},
                                             "userComment": "c"},
                          "outcomeTimestamp": "2024-08-01T10:00:00Z"}]}


def seeds() -> list[tuple[str, dict]]:
    """(URL path, request body) of every JSON scenario request and of one feedback body."""
    out = []
    for s in all_scenarios():
        if s.raw_body is not None or s.fhir_server is not None:
            continue  # not JSON / needs a FHIR server
        out.append((f"/cds-services/{s.service_id}", s.request()))
    ids = sorted({p.rsplit("/", 1)[1] for p, _ in out})
    out += [(f"/cds-services/{sid}/feedback", FEEDBACK) for sid in ids]
    return out


def paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path (tuple of keys and indexes) in a JSON value, the root excluded."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield prefix + (k,)
            yield from paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield prefix + (i,)
            yield from paths(v, prefix + (i,))


def nested(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


REPLACEMENTS: list[Any] = [
    None, True, False, 0, -1, 1.5, 10 ** 30, "", "x", "9" * 5000, "x" * 100_000, [], [1], [None],
    {}, {"resourceType": "Bundle"}, {"resourceType": "Claim"}, {"reference": 5},
    {"coding": "x"}, {"coding": [5]}, [{"resource": 5}], "2024-13-45", "Patient/", "/",
    "urn:uuid:", nested(20), nested(60), "\u0000\ud7ff", "\U0001f600",
]
DELETE = object()


def mutate(body: dict, rng: random.Random, count: int = 1) -> dict:
    """A copy of `body` with `count` paths replaced by one of REPLACEMENTS or deleted."""
    out = copy.deepcopy(body)
    for _ in range(count):
        all_paths = list(paths(out))
        if not all_paths:
            break
        path = rng.choice(all_paths)
        parent = out
        for key in path[:-1]:
            parent = parent[key]
        choice = rng.choice(REPLACEMENTS + [DELETE])
        if choice is DELETE:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(choice)
    return out


GROWN_SIZES = (500, 2000, 5000)  # how long `grow` makes an array


def grow(body: dict, rng: random.Random, count: int = 1) -> dict:
    """A copy of `body` with `count` non-empty arrays (at random paths) grown to one of GROWN_SIZES
    items, copies of their own items in turn, each copy made distinct (:func:`_distinct`: its own
    ids, references, sequence and SNOMED CT codes, so that nothing collapses them as repeats): many
    items in encounters of their own, Bundle entries, sub-sites, Procedures ... at once, the shapes
    that make a review's cost grow (hooks.model.MAX_LINES)."""
    out = copy.deepcopy(body)
    for _ in range(count):
        arrays = [p for p in paths(out) if isinstance(_at(out, p), list) and _at(out, p)]
        if not arrays:
            break
        path = rng.choice(arrays)
        items = _at(out, path)
        _at(out, path[:-1])[path[-1]] = [_distinct(copy.deepcopy(items[i % len(items)]), i // len(items), i + 1)
                                         for i in range(rng.choice(GROWN_SIZES))]
    return out


def _distinct(value: Any, copy_number: int, position: int | None = None) -> Any:
    """`value` (a copy) with its ids, references and SNOMED CT codes, and those below it, suffixed
    by `copy_number` (the first copy left as it was) and its own ``sequence`` set to `position`
    (those below it kept: they name other arrays' members)."""
    if copy_number == 0:
        return value
    if isinstance(value, list):
        for item in value:
            _distinct(item, copy_number)
    elif isinstance(value, dict):
        if position is not None and type(value.get("sequence")) is int:
            value["sequence"] = position
        if "snomed" in str(value.get("system")) and isinstance(value.get("code"), str):
            value["code"] += str(copy_number)
        for key, item in value.items():
            if key in ("id", "reference") and isinstance(item, str):
                value[key] = f"{item}-{copy_number}"
            elif isinstance(item, (dict, list)):
                _distinct(item, copy_number)
    return value


def _at(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def check_answer(resp) -> None:
    """No 5xx; every answer is JSON; every 4xx names an error."""
    assert resp.status_code < 500, (resp.status_code, resp.get_data(as_text=True)[:300])
    assert resp.mimetype == "application/json", resp.mimetype
    body = resp.get_json()
    assert isinstance(body, dict)
    if resp.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"], body


# --- fuzzed data served by a FHIR server (tests/test_fuzz.py, benchmarks/fuzz.py --served) ----

def _renamed(value: Any, number: int) -> Any:
    """Scenario `number`'s ids "sNN-..." renamed "fzNN-..." (the fuzz run's own resources)."""
    return json.loads(json.dumps(value).replace(f"s{number:02d}-", f"fz{number:02d}-"))


def served_seeds() -> tuple[list[tuple[str, dict]], list[dict]]:
    """(URL path, request body without prefetch) of every scenario that can be reviewed from a
    FHIR server, and the resources to load into it; the body's fhirServer is set per run."""
    requests_, resources = [], []
    for s in all_scenarios():
        if s.raw_body is not None or s.fhir_server is not None:
            continue
        requests_.append((f"/cds-services/{s.service_id}",
                          _renamed(s.request(with_prefetch=False), s.number)))
        resources += _renamed(s.resources, s.number)
    return requests_, resources


def mutating(rng: random.Random, share: float = 0.5) -> Callable[[str, bytes], bytes]:
    """A MisbehavingFhir transform: about `share` of the FHIR server's JSON answers (reads and
    search Bundles) come back with one to three paths mutated as in :func:`mutate`."""
    def transform(target: str, body: bytes) -> bytes:
        if rng.random() >= share:
            return body
        try:
            value = json.loads(body)
        except ValueError:
            return body
        if not isinstance(value, dict):
            return body
        return json.dumps(mutate(value, rng, rng.randint(1, 3))).encode()
    return transform

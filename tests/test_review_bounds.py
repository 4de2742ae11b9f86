"""The bounds that keep one review's cost bounded whatever the record (hostile or broken data):
at most hooks.model.MAX_LINES lines and active Procedures, sites compared up to
hooks.distinct.SITE_PAIRS pairs, sessions counted without comparing each Procedure with each
session. Before, a 1.1 MB claim-review request with 8,000 sub-sites on two items took 145 s, 4,000
items 47 s, 8,000 Procedures in separate encounters 26 s (gunicorn's 30 s timeout would end such a
request with a 502). benchmarks/bench_hostile_records.py times the shapes at the bounds."""
from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from hooks.context import InvalidResource
from hooks.distinct import SITE_PAIRS, encounter_relation, separate_sessions, sites_relation
from hooks.model import MAX_LINES, Site
from tests.scenario_fixtures import scenario

T0 = datetime(2024, 8, 5, 8, 0, tzinfo=timezone.utc)


def _pairwise_sessions(procedures) -> int:
    """The definition: in order, a Procedure separate from every session so far starts one."""
    sessions: list = []
    for pr in procedures:
        if all(encounter_relation(pr, s) is False for s in sessions):
            sessions.append(pr)
    return max(1, len(sessions))


_PERIOD = st.one_of(st.none(), st.tuples(st.integers(0, 12), st.integers(0, 4)))
_PROC = st.tuples(st.lists(st.sampled_from("abcd"), max_size=2, unique=True), _PERIOD)


@settings(max_examples=500, deadline=None)
@given(st.lists(_PROC, max_size=12))
def test_separate_sessions_equal_the_pairwise_definition(raw):
    """Any mix of encounters (none, shared, separate) and performed periods (none, overlapping,
    touching, zero-length, disjoint), in any order."""
    procs = [SimpleNamespace(encounters=tuple(f"Encounter/{e}" for e in encs),
                             start=None if period is None else T0 + timedelta(minutes=10 * period[0]),
                             end=None if period is None else T0 + timedelta(minutes=10 * (period[0] + period[1])))
             for encs, period in raw]
    assert separate_sessions(procs) == _pairwise_sessions(procs)


def test_sites_past_the_pair_bound_are_not_compared():
    knee = Site(("http://snomed.info/sct|72696002",), "knee", None)
    others = [Site((f"http://snomed.info/sct|{100 + i}",), None, None) for i in range(SITE_PAIRS)]
    assert sites_relation([knee], [knee, *others[:SITE_PAIRS - 1]]) is True  # SITE_PAIRS pairs: compared
    assert sites_relation([knee], [knee, *others]) is None  # one pair more: the record cannot tell
    assert sites_relation(others[:4], others[4:8]) is False  # 16 pairs, each known to differ


def _claim_with_items(n: int) -> dict:
    bundle = copy.deepcopy(scenario(9).request()["context"]["claim"])
    claim = bundle["entry"][0]["resource"]
    first = claim["item"]
    items = []
    for i in range(n):
        item = copy.deepcopy(first[i % len(first)])
        item["sequence"] = i + 1
        items.append(item)
    claim["item"] = items
    return bundle


def test_a_claim_of_max_lines_items_is_reviewed_and_one_more_is_refused():
    from hooks.config import resolve
    from nccidata import open_reference
    from service.batch import review_record

    ref, config = open_reference(None), resolve(None)
    reviewed = review_record(_claim_with_items(MAX_LINES), ref, config)
    assert "error" not in reviewed and reviewed["findings"]
    refused = review_record(_claim_with_items(MAX_LINES + 1), ref, config)
    assert refused["path"] == f"Claim.item[{MAX_LINES}]"
    assert f"more than {MAX_LINES} items" in refused["error"] and "999 service lines" in refused["error"]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from tests.service_support import make_app

    return make_app(tmp_path_factory.mktemp("bounds")).test_client()


def test_the_service_answers_a_claim_past_the_bound_with_a_400_naming_the_item(client):
    from tests.service_support import assert_json_error

    body = scenario(9).request()
    body["context"]["claim"] = _claim_with_items(MAX_LINES + 1)
    resp = client.post("/cds-services/fluoroscopy-claim-review", data=json.dumps(body),
                       content_type="application/json")
    error = assert_json_error(resp, 400)
    assert f"Claim.item[{MAX_LINES}]" in error["error"] and f"at most {MAX_LINES}" in error["error"]


def _procedure(i: int, **extra) -> dict:
    return {"resourceType": "Procedure", "id": f"p{i}", "status": "completed",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "76000"}]},
            "performedDateTime": "2024-08-05", **extra}


def test_more_active_procedures_than_the_bound_are_refused_inactive_ones_do_not_count():
    from hooks.extract.companions import index_companions

    ok = index_companions([_procedure(i) for i in range(MAX_LINES)]
                          + [_procedure(MAX_LINES + i, status="entered-in-error") for i in range(5)], False)
    assert len(ok.procedures()) == MAX_LINES
    over = index_companions([_procedure(i) for i in range(MAX_LINES + 1)], False)
    with pytest.raises(InvalidResource) as exc:
        over.procedures()
    assert exc.value.path == f"Procedure/p{MAX_LINES}" and "active Procedures" in str(exc.value)


def test_a_performed_period_ending_before_it_starts_is_invalid():
    """FHIR Period invariant per-1 (start not after end); the session count relies on it."""
    from hooks.extract.companions import parse_procedure

    period = {"start": "2024-08-05T10:00:00Z", "end": "2024-08-05T09:00:00Z"}
    proc = dict(_procedure(1), performedPeriod=period)
    del proc["performedDateTime"]
    with pytest.raises(InvalidResource) as exc:
        parse_procedure("Procedure/p1", proc)
    assert exc.value.path == "Procedure/p1.performedPeriod" and "per-1" in str(exc.value)
    proc["performedPeriod"] = {"start": "2024-08-05T09:00:00Z", "end": "2024-08-05T09:00:00Z"}
    assert parse_procedure("Procedure/p1", proc).start is not None  # zero length: allowed

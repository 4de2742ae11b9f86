"""Property tests: any mix of codes, modifiers, units, dates, settings and malformed elements gives
findings or a clean InvalidResource, never another exception; no 76000 means no finding."""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.config import resolve
from hooks.context import InvalidResource
from hooks.extract import case_from_claim, case_from_encounter, case_from_orders, split_claim_bundle
from hooks.findings import FINDING_CODES, order_key
from hooks.rules import evaluate
from nccidata.starter import starter
from tests.rules_support import assert_as_declared
from tests.scenario_fixtures import CPT, POS_SYSTEM, scenario

REF = starter()
CODES = ["76000", "29881", "33289", "20610", "20650", "77002", "62323", "64483", "50080", "36556", "47000",
         "52000", "27235", "99213", "G0000", "7600", "ABCDE", ""]
MODIFIERS = ["26", "TC", "XS", "XU", "XE", "XP", "59", "LT", "RT", "76", "x", "", "ZZZ"]
POS = ["11", "19", "21", "22", "23", "24", "99", "1", "00", "ab", ""]
DATES = ["2024-08-05", "2024-08-06", "2015-06-01", "2024", "2024-08", "2024-13-45", "2024-02-30", "", "x"]
JSON = st.recursive(st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True)
                    | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3), max_leaves=6)
CONFIGS = st.fixed_dictionaries({}, optional={
    "global-billing": st.booleans(), "distinct-modifier": st.sampled_from(["59", "XS", "XU", "XE", "XP"]),
    "max-cards": st.integers(0, 4), **{code: st.booleans() for code in FINDING_CODES}})


@st.composite
def items(draw):
    n = draw(st.integers(0, 6))
    out = []
    for i in range(n):
        item = {"sequence": i + 1, "productOrService": {"coding": [{"system": CPT, "code": draw(st.sampled_from(CODES))}]},
                "servicedDate": draw(st.sampled_from(DATES)),
                "locationCodeableConcept": {"coding": [{"system": POS_SYSTEM, "code": draw(st.sampled_from(POS))}]},
                "quantity": {"value": draw(st.one_of(st.integers(-2, 8), st.floats(-1, 9, allow_nan=False)))},
                "diagnosisSequence": draw(st.lists(st.integers(0, 2), max_size=2))}
        mods = draw(st.lists(st.sampled_from(MODIFIERS), max_size=3))
        if mods:
            item["modifier"] = [{"coding": [{"system": CPT, "code": m}]} for m in mods]
        out.append(item)
    return out


def _run_claim(claim, companions, config):
    try:
        case = case_from_claim(claim, companions, REF)
    except InvalidResource as err:
        assert err.path and str(err)
        return None
    return evaluate(case, REF, config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=items(), institutional=st.booleans(), config=CONFIGS, drop=st.sets(st.sampled_from(
    ["Observation", "DiagnosticReport", "ImagingStudy", "Procedure", "Encounter", "Location"])))
def test_any_claim_gives_findings_or_invalid_resource(items, institutional, config, drop):
    s = scenario(4)
    claim = copy.deepcopy(s.claim)
    claim["item"] = items
    if institutional:
        claim["type"]["coding"][0]["code"] = "institutional"
    companions = [r for r in copy.deepcopy(s.companions) if r["resourceType"] not in drop]
    findings = _run_claim(claim, companions, resolve({"fluoro-cds.configuration": config}))
    if findings is None:
        return
    for f in findings:
        assert f.code in FINDING_CODES and len(f.summary) <= 140 and f.severity in ("info", "warning")
        assert config.get(f.code, True)
        assert_as_declared(f)
    assert findings == sorted(findings, key=order_key)
    if config.get("max-cards"):
        assert len(findings) <= config["max-cards"]
    has_fluoro = any(i["productOrService"]["coding"][0]["code"] == "76000" for i in items)
    if not has_fluoro:
        assert findings == []


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _replace(node, path, value):
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), n=st.sampled_from([1, 4, 7, 9, 12, 13]), junk=JSON)
def test_any_malformed_element_gives_findings_or_invalid_resource(data, n, junk):
    s = scenario(n)
    resources = ([s.claim] if s.claim else []) + ([s.draft_orders] if s.draft_orders else []) + s.companions
    target = data.draw(st.sampled_from(resources))
    paths = [p for p in _paths(target) if p]
    path = data.draw(st.sampled_from(paths))
    _replace(target, path, junk)
    config = resolve(None)
    try:
        if s.hook == "org.fluoro-cds.claim-review":
            claim, companions = split_claim_bundle(s.context["claim"])
            case = case_from_claim(claim, companions, REF)
        elif s.hook == "order-sign":
            case = case_from_orders(s.draft_orders, s.companions, REF)
        else:
            case = case_from_encounter(s.encounter, s.companions, s.claim, REF)
    except InvalidResource as err:
        assert err.path
        return
    evaluate(case, REF, config)


@settings(max_examples=100, deadline=None)
@given(junk=JSON)
def test_any_json_as_claim_or_bundle(junk):
    for value in (junk, {"resourceType": "Claim", "item": junk}, {"resourceType": "Bundle", "entry": junk}):
        try:
            claim, companions = split_claim_bundle(value)
            evaluate(case_from_claim(claim, companions, REF), REF, resolve(None))
        except InvalidResource as err:
            assert err.path

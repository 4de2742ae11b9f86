"""Place of service per claim line against the record's setting (issue 9 s.3; Medicare Claims
Processing Manual ch. 26 s. 10.5 and ch. 13 s. 20), on the real CMS July 2024 tables (the CMS place
of service code set: 11 office non-facility, 22 on-campus outpatient hospital facility)."""
from __future__ import annotations

import copy

import pytest
from fhir.resources.R4B.claim import Claim

from hooks import findings as F
from hooks.actions import corrected_claim
from hooks.config import resolve
from hooks.extract import case_from_claim, split_claim_bundle
from hooks.rules import evaluate
from tests.conftest import require_shared_ncci
from tests.rules_support import real_ncci
from tests.scenario_fixtures import scenario

POS_SYSTEM = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"


@pytest.fixture(scope="module")
def real():
    ref = real_ncci(str(require_shared_ncci()))
    assert not ref.place_of_service("11").facility and ref.place_of_service("22").facility
    return ref


def _run(real, n, mutate):
    claim, companions = split_claim_bundle(copy.deepcopy(scenario(n).context["claim"]))
    mutate(claim)
    case = case_from_claim(claim, companions, real)
    return case, evaluate(case, real, resolve(None))


def _pos(item, code):
    item["locationCodeableConcept"] = {"coding": [{"system": POS_SYSTEM, "code": code}]}


def test_each_line_is_judged_by_its_own_place_of_service(real):
    """Scenario 5 (hospital patient, 20650 + 76000-26 at POS 22) with a second 76000-26 the next day
    at POS 11: only that line contradicts the record."""
    def second_day_office(claim):
        extra = copy.deepcopy(claim["item"][1])
        extra["sequence"] = 3
        extra["servicedDate"] = "2024-08-06"
        _pos(extra, "11")
        claim["item"].append(extra)
    case, findings = _run(real, 5, second_day_office)
    assert [ln.pos for ln in case.lines] == ["22", "22", "11"] and not case.setting.pos_contradicted
    (f,) = [f for f in findings if f.code == F.PLACE_OF_SERVICE]
    assert f.lines == ("Claim.item[2]",) and "Place of service 11" in f.summary
    # the record's Location says hospital but no POS: the claim's POS that agrees with it (22) is the fix
    assert [(x.action, x.pos) for x in (f.fixes[0],) + f.fixes[0].then] == [(F.SET_PLACE_OF_SERVICE, "22")]
    assert F.MODIFIER_26 not in {x.code for x in findings}  # both lines already bill -26
    fixed = corrected_claim(case, f.fixes[0])
    Claim.model_validate(fixed)
    assert [i["locationCodeableConcept"]["coding"][0]["code"] for i in fixed["item"]] == ["22", "22", "22"]


def test_a_facility_pos_for_an_office_visit_is_the_same_finding(real):
    """Scenario 7 (an office visit: Location typed POS 11) billed at POS 22: the record decides, so the
    fix sets POS 11 and no -26 is asked for."""
    def hospital_pos(claim):
        for item in claim["item"]:
            _pos(item, "22")
    case, findings = _run(real, 7, hospital_pos)
    assert case.setting.pos_contradicted and case.setting.record_facility is False and not case.setting.facility
    (f,) = [f for f in findings if f.code == F.PLACE_OF_SERVICE]
    assert [(x.action, x.pos) for x in f.fixes] == [(F.SET_PLACE_OF_SERVICE, "11")]
    assert "office" in f.reason and any("Chapter 26, section 10.5" in c.text for c in f.citations)
    assert F.MODIFIER_26 not in {x.code for x in findings}
    fixed = corrected_claim(case, f.fixes[0])
    Claim.model_validate(fixed)
    assert fixed["item"][0]["locationCodeableConcept"]["coding"][0]["code"] == "11"
    # as billed (POS 11) the office visit has no place-of-service finding
    _case, findings = _run(real, 7, lambda c: None)
    assert F.PLACE_OF_SERVICE not in {x.code for x in findings}

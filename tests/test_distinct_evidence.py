"""Distinct-service evidence. XP counts only the practitioner who rendered a line (issue 9 s.2): Claim.careTeam.role
(claimcareteamrole primary, CARIN rendering / performing; careTeamSequence order) and
Procedure.performer.function (not an anaesthetist, an assistant, ...). Rules run on the real CMS July
2024 tables (PTP 29881/76000, modifier indicator 1)."""
from __future__ import annotations

import pytest

from hooks import findings as F
from hooks.config import resolve
from hooks.extract import case_from_claim, split_claim_bundle
from hooks.extract.codes import performs
from hooks.rules import evaluate
from tests.conftest import require_shared_ncci
from tests.rules_support import real_ncci
from tests.scenario_fixtures import scenario

ROLE = "http://terminology.hl7.org/CodeSystem/claimcareteamrole"
CARIN = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole"
V2_0133 = "http://terminology.hl7.org/CodeSystem/v2-0133"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SURGEON = "Practitioner/s01-practitioner"
REMOVALS = {F.FLUOROSCOPY_INTEGRAL, F.PTP_MODIFIER_ALLOWED, F.PTP_BUNDLED, F.USE_GUIDANCE_CODE}


@pytest.fixture(scope="module")
def real():
    return real_ncci(str(require_shared_ncci()))


def _role(system, code):
    return {"coding": [{"system": system, "code": code}]}


def _case(real, team=(), fluoro_seq=None, performers=None):
    """Scenario 1 (29881 + 76000, one surgeon) with extra care-team members and the 76000 item's
    careTeamSequence, or (performers) the 76000 Procedure's performers and no careTeamSequence."""
    claim, companions = split_claim_bundle(scenario(1).context["claim"])
    for seq, (who, role) in enumerate(team, start=2):
        member = {"sequence": seq, "provider": {"reference": who}}
        if role is not None:
            member["role"] = role
        claim["careTeam"].append(member)
    if fluoro_seq is not None:
        claim["item"][1]["careTeamSequence"] = fluoro_seq
    if performers is not None:
        claim["item"][1].pop("careTeamSequence", None)
        for r in companions:
            if r["resourceType"] == "Procedure" and r["code"]["coding"][0]["code"] == "76000":
                r["performer"] = performers
    case = case_from_claim(claim, companions, real)
    return case, {f.code for f in evaluate(case, real, resolve(None))}


def test_the_real_release_pairs_29881_with_76000(real):
    edit = real.ptp["practitioner"][("29881", "76000")]
    assert edit.modifier_indicator == "1" and not edit.release.starter


def test_a_rendering_radiologist_is_a_separate_practitioner(real):
    for role in (_role(CARIN, "rendering"), _role(CARIN, "performing"), _role(ROLE, "primary"), None):
        case, codes = _case(real, [("Practitioner/radiologist", role)], fluoro_seq=[2])
        assert case.lines[1].performers == ("Practitioner/radiologist",), role
        assert not codes & REMOVALS, role  # not a PTP pair: nothing of 29881 is in this 76000


@pytest.mark.parametrize("role", [_role(ROLE, "supervisor"), _role(ROLE, "assist"), _role(ROLE, "other"),
                                  _role(CARIN, "referring"), {"text": "Referring physician"},
                                  {"coding": [{"system": "urn:local", "code": "x", "display": "Assistant"}]}])
def test_a_supervising_assisting_or_referring_member_is_not_the_renderer(real, role):
    # the 76000 item lists the supervisor first, then the surgeon (primary): the surgeon rendered it
    case, codes = _case(real, [("Practitioner/other", role)], fluoro_seq=[2, 1])
    assert case.lines[1].performers == (SURGEON,)
    assert F.FLUOROSCOPY_INTEGRAL in codes  # same practitioner: 76000 stays integral to 29881
    # only the other member on the line: no rendering practitioner is known (the 76000 Procedure's
    # performer, the surgeon, stands in): never a "different practitioner"
    case, codes = _case(real, [("Practitioner/other", role)], fluoro_seq=[2])
    assert case.lines[1].performers == (SURGEON,) and F.FLUOROSCOPY_INTEGRAL in codes


def test_the_first_rendering_member_in_care_team_sequence_order_counts(real):
    team = [("Practitioner/radiologist", _role(CARIN, "rendering")), ("Practitioner/resident", None)]
    case, _codes = _case(real, team, fluoro_seq=[3, 2])
    assert case.lines[1].performers == ("Practitioner/radiologist",)  # a role beats no role
    case, _codes = _case(real, [("Practitioner/a", None), ("Practitioner/b", None)], fluoro_seq=[3, 2])
    assert case.lines[1].performers == ("Practitioner/b",)  # no roles: the first in sequence order


@pytest.mark.parametrize("function, counts", [
    (None, True), (_role(V3_PARTICIPATION, "PPRF"), True), (_role(V2_0133, "RD"), True),
    ({"text": "Radiologist"}, True), ({"coding": [{"system": "http://snomed.info/sct", "code": "66862007"}]}, True),
    (_role(V2_0133, "AN"), False), (_role(V2_0133, "AS"), False), (_role(V3_PARTICIPATION, "SPRF"), False),
    ({"coding": [{"system": "http://snomed.info/sct", "code": "88189002", "display": "Anesthesiologist"}]}, False),
    ({"text": "Anaesthetist"}, False),
])
def test_procedure_performers_whose_function_is_not_performing_are_ignored(real, function, counts):
    other = {"actor": {"reference": "Practitioner/other"}}
    if function is not None:
        other["function"] = function
    surgeon = {"actor": {"reference": SURGEON}}
    case, codes = _case(real, performers=[other])
    assert case.lines[1].performers == (("Practitioner/other",) if counts else ())
    assert bool(codes & REMOVALS) is not counts  # a performing other practitioner: not a PTP pair
    # beside the surgeon: an anaesthetist or assistant does not make the lines "different practitioners"
    case, codes = _case(real, performers=[other, surgeon])
    assert SURGEON in case.lines[1].performers and F.FLUOROSCOPY_INTEGRAL in codes


def test_performs_reads_codes_then_words():
    assert performs(None, "P", "role") is None
    assert performs({"text": "something"}, "P", "role") is None
    assert performs(_role(ROLE, "primary"), "P", "role") is True
    assert performs({"coding": [{"system": ROLE, "code": "supervisor"}, {"system": CARIN, "code": "rendering"}]},
                    "P", "role") is True  # a rendering coding among others
    assert performs({"coding": [{"system": "urn:x", "code": "1", "display": "Supervising physician"}]},
                    "P", "role") is False


# --- XU and the reason chosen (issue 9 s.2) ---------------------------------------------------------
def _ptp1(real, *, config=None, **partner):
    """27235 + 76000 on 2024-08-05 (real July 2024 PTP 27235/76000, modifier indicator 1)."""
    from datetime import date

    from hooks.model import Case, Evidence, Line, Setting
    day = date(2024, 8, 5)
    office = Setting(facility=False, ncci_setting="practitioner", pos="11", reasons=("POS 11",))
    fluoro = {k: v for k, v in partner.items()}
    lines = (Line("Claim.item[0]", "27235", service_date=day, sequence=1, **partner),
             Line("Claim.item[1]", "76000", service_date=day, sequence=2, **fluoro))
    (f,) = evaluate(Case("claim", office, lines, Evidence(indication=True, fluoro_minutes=3, radiation_dose=True,
                                                          body_site=True, findings=True, images_retained=True,
                                                          signed_interpretation=True), default_date=day),
                    real, resolve({"fluoro-cds.configuration": config} if config else None))
    return f


def test_each_reason_suggests_its_modifier_and_xu_is_never_inferred(real):
    assert real.ptp["practitioner"][("27235", "76000")].modifier_indicator == "1"
    f = _ptp1(real)
    assert f.code == F.PTP_MODIFIER_ALLOWED
    remove, *bypass = f.fixes
    assert remove.action == F.REMOVE_LINE and remove.recommended  # nothing in the record shows it was distinct
    assert [(x.modifier, x.recommended) for x in bypass] == [("XS", False), ("XE", False), ("XP", False),
                                                             ("XU", False)]
    kind = F.KINDS[F.PTP_MODIFIER_ALLOWED]
    reasons = dict(kind.override_reasons)
    for x, (reason, _m) in zip(bypass, kind.override_modifiers):
        assert reasons[reason] in x.label
    assert "unusual non-overlapping service" in bypass[3].label
    assert any("MLN1783722" in c.text for c in f.citations)  # facts distinct-modifiers, cited on the card
    # payer policy: the configured modifier, where nothing says which (59 only where configured)
    f = _ptp1(real, config={"distinct-modifier": "59"})
    assert [x.modifier for x in f.fixes[1:]] == ["XS", "XE", "XP", "XU", "59"]


def test_no_reason_suggests_a_modifier_the_record_contradicts(real):
    from hooks.model import Site
    knee = (Site(("http://snomed.info/sct|72696002",), "knee", None),)
    f = _ptp1(real, encounters=("Encounter/e1",), performers=("Practitioner/p1",), body_sites=knee)
    # same encounter, practitioner and site: XE, XP, XS and XU would each be modifier misuse
    assert [x.action for x in f.fixes] == [F.REMOVE_LINE]
    f = _ptp1(real, encounters=("Encounter/e1",))
    assert [x.modifier for x in f.fixes[1:]] == ["XS", "XP", "XU"]

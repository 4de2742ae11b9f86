"""Rule semantics beyond the scenarios: suppression order, configuration, modifiers, MUE, orders."""
from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timezone

import pytest

from hooks import findings as F
from hooks.config import resolve
from hooks.model import Case, Evidence, Line, Setting, Site
from hooks.rules import evaluate, policy
from nccidata.starter import starter

REF = starter()
DAY = date(2024, 8, 5)
DOCS = Evidence(indication=True, fluoro_minutes=5, radiation_dose=True, body_site=True, findings=True,
                images_retained=True, signed_interpretation=True)
OFFICE = Setting(facility=False, ncci_setting="practitioner", pos="11", reasons=("POS 11 (Office)",))
HOSPITAL = Setting(facility=True, ncci_setting="practitioner", pos="22", reasons=("POS 22",))


def site(value):
    """A Site from "system|code", from text, or as given."""
    if isinstance(value, Site):
        return value
    return Site((value,), None, None) if "|" in value else Site((), value, None)


def line(code, *mods, units=1, seq=1, sites=(), dx=(), day=DAY, kind="claim-item", enc=(), by=(),
         start=None, end=None, sessions=1):
    return Line(key=f"Claim.item[{seq - 1}]", code=code, modifiers=tuple(mods), units=units, service_date=day,
                body_sites=tuple(site(x) for x in sites), diagnoses=tuple(dx), kind=kind, sequence=seq,
                encounters=tuple(enc), performers=tuple(by), start=start, end=end, sessions=sessions)


def at(hour, minute=0):
    return datetime(2024, 8, 5, hour, minute, tzinfo=timezone.utc)


def run(*lines, setting=OFFICE, evidence=DOCS, kind="claim", checked=True, **config):
    case = Case(kind=kind, setting=setting, lines=tuple(lines), evidence=evidence, default_date=DAY,
                evidence_checked=checked)
    return evaluate(case, REF, resolve({"fluoro-cds.configuration": config} if config else None))


def codes(findings):
    return [f.code for f in findings]


def test_no_76000_no_finding():
    assert run(line("29881"), line("20610", seq=2), setting=HOSPITAL, evidence=Evidence()) == []


def test_integral_and_ptp_give_one_finding_citing_both():
    (f,) = run(line("29881"), line("76000", seq=2))
    assert f.code == F.FLUOROSCOPY_INTEGRAL
    kinds = {c.kind for c in f.citations}
    assert {"ncci-ptp", "policy"} <= kinds
    assert "29800-29999" in " ".join(c.text for c in f.citations)


def test_integral_without_any_ptp_edit():
    (f,) = run(line("29999"), line("76000", seq=2))  # unlisted arthroscopy: no starter PTP row
    assert f.code == F.FLUOROSCOPY_INTEGRAL and {c.kind for c in f.citations} == {"policy", F.PROGRAM_CITATION}


def test_disabled_finding_falls_back_to_the_next_most_specific():
    (f,) = run(line("29881"), line("76000", seq=2), **{"fluoroscopy-integral": False})
    assert f.code == F.PTP_MODIFIER_ALLOWED
    assert [x.recommended for x in f.fixes] == [True, False, False, False, False]
    assert f.fixes[1].action == F.ADD_MODIFIER and f.fixes[1].modifier == "XS"  # one per override reason
    assert f.override_reasons


def test_disabled_removal_findings_still_suppress_downstream_findings():
    off = {"fluoroscopy-integral": False, "ptp-modifier-allowed": False}
    assert run(line("29881"), line("76000", seq=2), setting=HOSPITAL, evidence=Evidence(), **off) == []


def test_distinct_modifier_from_configuration():
    (f,) = run(line("27235"), line("76000", seq=2), **{"distinct-modifier": "59"})
    assert f.code == F.PTP_MODIFIER_ALLOWED and f.fixes[-1].modifier == "59"  # payer policy: the configured one


def test_documented_distinct_service_is_separately_reportable():
    knee, hip = ("sct|72696002",), ("sct|24136001",)
    assert run(line("29881", sites=knee), line("76000", "XS", seq=2, sites=hip)) == []
    # the modifier alone does not show it was distinct
    (f,) = run(line("27235", sites=knee), line("76000", "XS", seq=2))
    assert f.code == F.PTP_MODIFIER_ALLOWED and len(f.fixes) == 1  # XS is already there: not offered again
    # never a second distinct-service modifier on a line that has one
    (f,) = run(line("27235", sites=knee), line("76000", "XS", seq=2), **{"distinct-modifier": "59"})
    assert [x.modifier for x in f.fixes] == [None]
    assert "supports XS" in f.summary


def test_a_different_diagnosis_alone_is_not_evidence():
    """CMS MLN1783722: different diagnoses are not adequate criteria for modifier 59 / X{EPSU}."""
    (f,) = run(line("27235", dx=("icd|S72.001A",)), line("76000", "XS", seq=2, dx=("icd|R13.10",)))
    assert f.code == F.PTP_MODIFIER_ALLOWED and "different diagnosis alone" in f.reason
    (f,) = run(line("27235", dx=("icd|S72.001A",)), line("76000", seq=2, dx=("icd|R13.10",)))
    assert [(x.action, x.recommended) for x in f.fixes] == [(F.REMOVE_LINE, True)] + [(F.ADD_MODIFIER, False)] * 4


def test_separate_encounter_is_xe_evidence():
    a, b = ("Encounter/e1",), ("Encounter/e2",)
    assert run(line("27235", enc=a), line("76000", "XE", seq=2, enc=b)) == []
    (f,) = run(line("27235", enc=a), line("76000", seq=2, enc=b))  # no modifier: append the one the record shows
    assert f.code == F.PTP_MODIFIER_ALLOWED
    assert [(x.action, x.modifier, x.recommended) for x in f.fixes] == [
        (F.ADD_MODIFIER, "XE", True), (F.REMOVE_LINE, None, False)]
    # non-overlapping performed periods that day are separate sessions, even in one encounter
    assert run(line("27235", enc=a, start=at(8), end=at(9)),
               line("76000", "XE", seq=2, enc=a, start=at(14), end=at(14, 20))) == []
    # XE on the same encounter is contradicted by the record
    (f,) = run(line("27235", enc=a), line("76000", "XE", seq=2, enc=a))
    assert f.code == F.MODIFIER_MISUSE and "separate encounter" in f.reason
    (f,) = run(line("27235", enc=a, start=at(8), end=at(9)),
               line("76000", "XE", seq=2, enc=b, start=at(8, 30), end=at(8, 40)))
    assert f.code == F.MODIFIER_MISUSE  # overlapping in time: one session whatever the encounters say
    # an unknown side is not proof either way
    (f,) = run(line("27235"), line("76000", "XE", seq=2, enc=b))
    assert f.code == F.PTP_MODIFIER_ALLOWED and len(f.fixes) == 1


def test_different_rendering_practitioners_are_not_a_ptp_pair():
    """NCCI PTP edits pair services of the same provider for the same beneficiary and date."""
    p1, p2 = ("Practitioner/surgeon",), ("Practitioner/radiologist",)
    assert run(line("27235", by=p1), line("76000", seq=2, by=p2)) == []
    assert run(line("33289", by=p1), line("76000", seq=2, by=p2)) == []  # even an indicator-0 edit
    assert run(line("29881", by=p1), line("76000", seq=2, by=p2)) == []  # nor integral to another's procedure
    (f,) = run(line("27235", by=p1), line("76000", "XP", seq=2, by=p1))
    assert f.code == F.MODIFIER_MISUSE and "same practitioner" in f.reason


def test_sites_compare_as_concepts():
    knee_code = Site(("http://snomed.info/sct|72696002",), "knee", None)
    knee_text = Site((), "knee", None)
    left_knee, right_knee = Site((), "knee", "left"), Site((), "knee", "right")
    hip_text = Site((), "hip", None)
    bare_code = Site(("http://snomed.info/sct|24136001",), None, None)
    # the same site as a code in one place and as text in the other: misuse of XS
    (f,) = run(line("27235", sites=[knee_code]), line("76000", "XS", seq=2, sites=[knee_text]))
    assert f.code == F.MODIFIER_MISUSE
    # another side is another site
    assert run(line("27235", sites=[left_knee]), line("76000", "XS", seq=2, sites=[right_knee])) == []
    assert run(line("27235", sites=[knee_text]), line("76000", "XS", seq=2, sites=[hip_text])) == []
    # a code without text against text only: cannot be compared, not proof
    (f,) = run(line("27235", sites=[knee_text]), line("76000", "XS", seq=2, sites=[bare_code]))
    assert f.code == F.PTP_MODIFIER_ALLOWED
    # a different site and no modifier: append XS, recommended
    (f,) = run(line("27235", sites=[knee_text]), line("76000", seq=2, sites=[hip_text]))
    assert f.fixes[0].modifier == "XS" and f.fixes[0].recommended


def test_modifier_at_same_site_and_session_is_misuse():
    knee = ("sct|72696002",)
    (f,) = run(line("27235", sites=knee), line("76000", "XS", seq=2, sites=knee))
    assert f.code == F.MODIFIER_MISUSE and f.fixes[0].action == F.REMOVE_LINE


def test_component_modifier_on_indicator_0_pair_is_misuse():
    (f,) = run(line("33289"), line("76000", "26", seq=2), setting=HOSPITAL)
    assert f.code == F.MODIFIER_MISUSE and "does not bypass" in f.reason


def test_component_modifier_on_indicator_1_pair_explains_it_does_not_bypass():
    (f,) = run(line("27235"), line("76000", "26", seq=2), setting=HOSPITAL)
    assert f.code == F.PTP_MODIFIER_ALLOWED and "does not bypass" in f.reason


def test_guidance_add_on_already_billed_removes_76000():
    fs = run(line("20610"), line("77002", seq=2), line("76000", seq=3))
    (f,) = fs
    assert f.code in (F.USE_GUIDANCE_CODE, F.FLUOROSCOPY_INTEGRAL)
    assert f.fixes[0].action == F.REMOVE_LINE


def test_guidance_from_policy_when_aoc_is_contractor_defined():
    (f,) = run(line("36556"), line("76000", seq=2))
    assert f.code == F.USE_GUIDANCE_CODE and f.fixes[0].code == "77001"
    assert any(c.kind == "policy" and "77001" in c.text for c in f.citations)


def test_guidance_from_the_aoc_table():
    (f,) = run(line("47000"), line("76000", seq=2))  # no PTP edit; AOC lists 47000 for 77002
    assert f.code == F.USE_GUIDANCE_CODE and f.fixes[0].code == "77002"
    assert any(c.kind == "ncci-aoc" for c in f.citations)


def test_other_date_does_not_bundle():
    other = date(2024, 8, 6)
    fs = run(line("29881"), line("76000", seq=2, day=other))
    assert codes(fs) == []


def test_no_date_uses_only_edits_without_deletion():
    fs = run(line("33289", day=None), line("76000", seq=2, day=None))
    assert codes(fs) == [F.PTP_BUNDLED]


def test_modifier_26_rules():
    assert codes(run(line("20650"), line("76000", seq=2), setting=HOSPITAL)) == [F.MODIFIER_26]
    assert run(line("20650"), line("76000", "26", seq=2), setting=HOSPITAL) == []
    assert run(line("20650"), line("76000", seq=2), setting=HOSPITAL, **{"global-billing": True}) == []
    inst = Setting(facility=True, ncci_setting="outpatient-hospital", pos=None)
    assert run(line("20650"), line("76000", seq=2), setting=inst) == []
    sr = line("76000", kind="service-request")
    assert run(sr, setting=HOSPITAL, kind="order", checked=False) == []
    (f,) = run(line("76000"), setting=HOSPITAL)
    assert f.payment == "76000 global 1.28 RVU ($42.61) vs -26 0.44 RVU ($14.65) at CF 33.2875"
    assert any(c.kind == "mpfs" for c in f.citations)


def test_removal_suppresses_modifier_26_documentation_duration_and_mue():
    fs = run(line("33289"), line("76000", units=5, seq=2), setting=HOSPITAL,
             evidence=Evidence(fluoro_minutes=90))
    assert codes(fs) == [F.PTP_BUNDLED]


def test_mue_per_date_across_lines():
    two = dict(sessions=2)  # each line documents two sessions: the MUE alone limits the units
    fs = run(line("76000", units=2, **two), line("76000", units=2, seq=2, **two))
    (f,) = [f for f in fs if f.code == F.MUE_EXCEEDED]
    assert f.fixes[0].action == F.REDUCE_UNITS and f.fixes[0].units == 1
    assert len(f.lines) == 2
    assert codes(run(line("76000", units=3, sessions=3))) == []


def test_one_unit_per_session():
    """CPT 76000: one unit per session whatever the number of sites; the MUE stays per date."""
    (f,) = run(line("76000", units=2))
    assert f.code == F.SESSION_UNITS and f.fixes[0].units == 1 and "one unit" in f.summary
    assert any("CPT 76000 descriptor" in c.text for c in f.citations)
    assert run(line("76000", units=2, sessions=2)) == []
    # two 76000 lines in one encounter (no times): the second is removed
    enc = ("Encounter/e1",)
    (f,) = run(line("76000", enc=enc), line("76000", seq=2, enc=enc))
    assert f.code == F.SESSION_UNITS and f.fixes[0].action == F.REMOVE_LINE and f.fixes[0].line == "Claim.item[1]"
    # separate sessions that day (non-overlapping times), or unknown: no finding
    assert run(line("76000", enc=enc, start=at(8), end=at(8, 10)),
               line("76000", seq=2, enc=enc, start=at(15), end=at(15, 5))) == []
    assert run(line("76000"), line("76000", seq=2)) == []
    # over the MUE: one card, whose fix also respects the sessions
    (f,) = run(line("76000", units=4))
    assert f.code == F.MUE_EXCEEDED and f.fixes[0].units == 1 and "one unit per session" in f.summary
    (f,) = run(line("76000", units=4), **{"mue-exceeded": False})
    assert f.code == F.SESSION_UNITS and f.fixes[0].units == 1


def test_duration_exceeded_and_units():
    (f,) = run(line("76000"), evidence=Evidence(**{**DOCS.__dict__, "fluoro_minutes": 61}))
    assert f.code == F.DURATION_EXCEEDED and f.fixes == () and f.severity == "info"
    fs = run(line("76000", units=2), evidence=Evidence(**{**DOCS.__dict__, "fluoro_minutes": 120}))
    assert codes(fs) == [F.SESSION_UNITS, F.DURATION_EXCEEDED]  # the units fix is session-units' alone
    assert fs[0].fixes[0].action == F.REDUCE_UNITS and fs[0].fixes[0].units == 1
    assert fs[1].fixes == () and "76001" in fs[1].reason
    assert run(line("76000"), evidence=Evidence(**{**DOCS.__dict__, "fluoro_minutes": 60})) == []


def test_documentation_not_judged_when_not_checked():
    assert run(line("76000"), evidence=Evidence(), checked=False) == []
    (f,) = run(line("76000"), evidence=Evidence())
    assert f.missing == ("indication", "fluoroscopy-time", "radiation-dose", "body-site", "findings",
                         "images-retained", "signed-interpretation")


def test_max_cards_keeps_the_most_important():
    fs = run(line("76000", units=5), setting=HOSPITAL, evidence=Evidence())
    assert codes(fs) == [F.MUE_EXCEEDED, F.MODIFIER_26, F.DOCUMENTATION_MISSING]
    assert codes(run(line("76000", units=5), setting=HOSPITAL, evidence=Evidence(), **{"max-cards": 1})) == \
        [F.MUE_EXCEEDED]


def test_every_finding_code_can_be_switched_off():
    fs = run(line("76000", units=5), setting=HOSPITAL, evidence=Evidence(),
             **{"mue-exceeded": False, "session-units": False, "modifier-26": False, "documentation-missing": False})
    assert fs == []


def test_policy_files_are_versioned_with_sources():
    pol = policy()
    assert all(pol.versions.values())
    for entry in list(pol.integral.values()) + list(pol.guidance.values()):
        assert entry.source and entry.version
    assert "29881" in pol.integral and "62323" in pol.integral and "64483" in pol.integral
    assert pol.guidance["20610"].add_on == "77002"
    assert "20650" not in pol.integral and "20650" not in pol.guidance
    assert "50080" not in pol.integral


@pytest.mark.parametrize("code", ["20650", "50080", "10160"])
def test_separately_reportable_primaries_give_no_bundling(code):
    fs = run(line(code), line("76000", seq=2))
    assert not {F.PTP_BUNDLED, F.PTP_MODIFIER_ALLOWED, F.FLUOROSCOPY_INTEGRAL} & set(codes(fs))


def test_unbilled_procedure_that_includes_fluoroscopy_questions_separate_procedure():
    unbilled = (Line(key="Procedure/p1", code="29881", service_date=DAY, kind="procedure", resource="Procedure/p1"),)
    case = Case(kind="claim", setting=OFFICE, lines=(line("76000"),), evidence=DOCS, default_date=DAY,
                context_lines=unbilled)
    (f,) = evaluate(case, REF, resolve(None))
    assert f.code == F.DOCUMENTATION_MISSING and f.missing == ("separate-procedure",)
    assert "29881" in f.reason and any(c.kind == "policy" for c in f.citations)
    other_day = replace(unbilled[0], service_date=date(2024, 8, 9))
    assert evaluate(replace(case, context_lines=(other_day,)), REF, resolve(None)) == []


def test_extraction_finds_unbilled_procedures():
    from hooks.extract import case_from_claim, split_claim_bundle
    from tests.scenario_fixtures import scenario
    s = scenario(1)
    claim, companions = split_claim_bundle(s.context["claim"])
    claim["item"] = claim["item"][1:]  # bill 76000 alone; the record still shows 29881 that day
    case = case_from_claim(claim, companions, REF)
    assert [ln.code for ln in case.context_lines] == ["29881"]
    (f,) = [f for f in evaluate(case, REF, resolve(None)) if f.code == F.DOCUMENTATION_MISSING]
    assert f.missing == ("separate-procedure",)
    assert case_from_claim(*split_claim_bundle(scenario(1).context["claim"]), REF).context_lines == ()


# --- professional and technical components (issue 9 section 3) ------------------------------------
INPATIENT_OFFICE_POS = Setting(facility=True, ncci_setting="practitioner", pos="11", reasons=("Encounter.class IMP",),
                               record_pos="21", pos_contradicted=True)


def _edits(fix):
    return [(x.action, x.modifier or x.pos or x.code) for x in (fix,) + fix.then]


@pytest.mark.parametrize("mods, expected", [
    (("TC",), [(F.REMOVE_MODIFIER, "TC"), (F.ADD_MODIFIER, "26")]),
    (("26", "TC"), [(F.REMOVE_MODIFIER, "TC")]),
])
def test_tc_for_a_hospital_patient_bills_26(mods, expected):
    """Claims Processing Manual ch. 13 s. 20: the TC of a hospital patient's service is the hospital's."""
    for config in ({}, {"global-billing": True}):  # global billing never keeps a TC in a facility
        (f,) = run(line("76000", *mods), setting=HOSPITAL, **config)
        assert f.code == F.MODIFIER_26 and "76000-26" in f.summary
        assert _edits(f.fixes[0]) == expected
        assert {c.kind for c in f.citations} == {"mpfs", "policy", F.PROGRAM_CITATION}
    office = run(line("76000", "TC"))  # an office patient: TC is the supplier's to bill
    assert F.MODIFIER_26 not in codes(office)


def test_office_pos_for_a_hospital_patient_is_its_own_finding():
    (f,) = run(line("76000"), setting=INPATIENT_OFFICE_POS)
    assert f.code == F.PLACE_OF_SERVICE and "POS 21" in f.summary
    assert _edits(f.fixes[0]) == [(F.SET_PLACE_OF_SERVICE, "21"), (F.ADD_MODIFIER, "26")]
    assert any("Chapter 26, section 10.5" in c.text for c in f.citations)
    (f,) = run(line("76000", "TC"), setting=INPATIENT_OFFICE_POS)  # one card, the component fixed with it
    assert _edits(f.fixes[0]) == [(F.SET_PLACE_OF_SERVICE, "21"), (F.REMOVE_MODIFIER, "TC"), (F.ADD_MODIFIER, "26")]
    (f,) = run(line("76000", "26"), setting=INPATIENT_OFFICE_POS)
    assert _edits(f.fixes[0]) == [(F.SET_PLACE_OF_SERVICE, "21")]
    unknown = replace(INPATIENT_OFFICE_POS, record_pos=None)  # a hospital Location whose POS the record does not say
    (f,) = run(line("76000"), setting=unknown)
    assert _edits(f.fixes[0]) == [(F.ADD_MODIFIER, "26")] and "correct the place of service" in f.fixes[0].label
    inst = replace(INPATIENT_OFFICE_POS, ncci_setting="outpatient-hospital")
    assert F.PLACE_OF_SERVICE not in codes(run(line("76000"), setting=inst))


def test_a_replacement_code_gets_26_in_a_facility():
    """77002's PC/TC indicator is 1 (MPFS 2024): the replacement bills 77002-26 for a hospital patient."""
    (f,) = run(line("20610"), line("76000", seq=2), setting=HOSPITAL)
    assert f.code == F.USE_GUIDANCE_CODE
    assert _edits(f.fixes[0]) == [(F.REPLACE_CODE, "77002"), (F.ADD_MODIFIER, "26")]
    assert f.fixes[0].label == "Replace 76000 with 77002-26"
    (f,) = run(line("20610"), line("76000", "26", seq=2), setting=HOSPITAL)  # kept 26: nothing to add
    assert _edits(f.fixes[0]) == [(F.REPLACE_CODE, "77002")]
    (f,) = run(line("20610"), line("76000", seq=2))  # office: global 77002
    assert _edits(f.fixes[0]) == [(F.REPLACE_CODE, "77002")]


# --- code families that include imaging guidance (issue 10 section 5) -----------------------------
@pytest.mark.parametrize("code, sibling", [("62322", "62323"), ("62270", "62328"), ("36569", "36573")])
def test_without_guidance_code_plus_76000_becomes_the_with_guidance_sibling(code, sibling):
    (f,) = run(line(code), line("76000", seq=2))
    assert f.code == F.USE_GUIDANCE_CODE and f.lines == ("Claim.item[1]",)
    fix = f.fixes[0]
    assert (fix.action, fix.line, fix.code) == (F.REPLACE_CODE, "Claim.item[0]", sibling)
    assert [(x.action, x.line) for x in fix.then] == [(F.REMOVE_LINE, "Claim.item[1]")]
    assert any(c.kind == "policy" and "siblings" in c.text and sibling in c.text for c in f.citations)
    assert f"Bill {sibling} instead of {code} + 76000" in f.summary


def test_with_guidance_sibling_already_billed_removes_76000():
    (f,) = run(line("62322"), line("62323", seq=2), line("76000", seq=3))
    assert f.code == F.USE_GUIDANCE_CODE and f.fixes[0].action == F.REMOVE_LINE


def test_every_sibling_row_has_a_source_and_a_with_guidance_code():
    pol = policy()
    assert pol.versions["siblings"]
    for code, entry in pol.siblings.items():
        assert entry.source and entry.add_on and entry.add_on != code
        assert entry.add_on in pol.integral or entry.add_on in ("62328", "62329"), entry.add_on


def test_a_deleted_code_is_removed_and_long_time_stays_duration_exceeded():
    """Issue 10 s.8: 76001 (deleted 2019-01-01, hooks/policy/deleted.tsv) on a 2024 claim is a
    code-deleted finding whose fix removes the line; over an hour stays duration-exceeded on 76000."""
    (f,) = run(line("76001"))  # no 76000 on the claim: still found
    assert f.code == F.CODE_DELETED and f.lines == ("Claim.item[0]",)
    assert [(x.action, x.line) for x in f.fixes] == [(F.REMOVE_LINE, "Claim.item[0]")]
    assert "2019-01-01" in f.summary and any("deleted" in c.text and c.kind == "policy" for c in f.citations)
    long = replace(DOCS, fluoro_minutes=75)
    fs = run(line("76000"), line("76001", seq=2), evidence=long)
    assert codes(fs) == [F.CODE_DELETED, F.DURATION_EXCEEDED]
    assert fs[0].lines == ("Claim.item[1]",) and fs[1].lines == ("Claim.item[0]",)
    assert run(line("76001", day=date(2018, 12, 31))) == []  # valid before its deletion
    assert run(line("76001"), **{"code-deleted": False}) == []
    assert run(line("99213"), line("76000", seq=2)) == []
    assert policy().deleted["76001"].deleted == date(2019, 1, 1)

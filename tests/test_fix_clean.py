"""Issue 10 s.4, every fix leaves a clean claim: the recommended fix applied to the claim
(hooks.rules.corrected) and the corrected claim reviewed again with the same rules
(hooks.rules.engine.fix_conflicts). A replacement that would itself be bundled, would newly bundle
another line, or is an add-on without its primary is not offered: 76000 is removed and the card
says why. On the real CMS July 2024 tables (../shared/ncci), in the production SQLite store.

The property test generates claims from the real tables (76000 with real column-1 partners,
guidance-code primaries, with-guidance siblings, S&I codes, modifiers, units, POS and settings),
applies each finding's recommended fix and reviews the result: no removal, replacement or modifier
finding on the lines the fix touched, and the normalized edit agrees with the FHIR Claim edit.
"""
from __future__ import annotations

from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks import actions
from hooks import findings as F
from hooks.config import resolve
from hooks.extract import case_from_claim
from hooks.findings import KINDS, Fix
from hooks.model import Case, Evidence, Line, Setting
from hooks.rules import evaluate, policy
from hooks.rules.corrected import corrected_case, touched
from hooks.rules.engine import fix_conflicts
from tests.ncci_support import real_ncci_db, real_reference  # noqa: F401
from tests.rules_support import assert_as_declared
from tests.scenario_fixtures import CPT, POS_SYSTEM

DAY = date(2024, 8, 5)
DOCS = Evidence(indication=True, fluoro_minutes=5, radiation_dose=True, body_site=True, findings=True,
                images_retained=True, signed_interpretation=True)
OFFICE = Setting(facility=False, ncci_setting="practitioner", pos="11", reasons=("POS 11 (Office)",))
HOSPITAL = Setting(facility=True, ncci_setting="practitioner", pos="22", reasons=("POS 22",))


def line(code, *mods, seq=1, units=1):
    return Line(key=f"Claim.item[{seq - 1}]", code=code, modifiers=tuple(mods), units=units, service_date=DAY,
                sequence=seq)


def case(*lines, setting=OFFICE):
    return Case(kind="claim", setting=setting, lines=tuple(lines), evidence=DOCS, default_date=DAY)


def review(ref, *lines, setting=OFFICE, **config):
    return evaluate(case(*lines, setting=setting), ref, resolve({"fluoro-cds.configuration": config} if config else None))


def _ptp_rows(f):
    return {(dict(c.details)["column1"], dict(c.details)["column2"]) for c in f.citations if c.kind == "ncci-ptp"}


def test_a_replacement_the_claim_bundles_falls_back_to_removal(real_reference):
    """23350 (shoulder arthrography injection, a listed 77002 primary) + 73040 (the arthrography S&I)
    + 76000: 77002 would be column 2 of PTP 73040/77002 (indicator 1, no distinct service): remove 76000."""
    (f,) = review(real_reference, line("23350"), line("73040", seq=2), line("76000", seq=3))
    assert f.code == F.USE_GUIDANCE_CODE and f.lines == ("Claim.item[2]",)
    assert [(x.action, x.line) for x in f.fixes] == [(F.REMOVE_LINE, "Claim.item[2]")]
    assert "77002 is not offered" in f.summary and "73040" in f.summary and len(f.summary) <= 140
    assert "73040/77002" in f.reason and "reviewed again" in f.reason
    assert ("73040", "77002") in _ptp_rows(f)
    assert any(c.kind == "policy" and "clean-fix" in dict(c.details).get("entry", "") for c in f.citations)
    assert_as_declared(f)
    # without the S&I code the replacement is clean and offered, as before
    (g,) = review(real_reference, line("23350"), line("76000", seq=2))
    assert (g.fixes[0].action, g.fixes[0].code) == (F.REPLACE_CODE, "77002")
    assert fix_conflicts(case(line("23350"), line("76000", seq=2)), g.fixes[0], real_reference) == []


def test_a_replacement_that_would_bundle_another_line_falls_back(real_reference):
    """20610 + 64510 + 77003 + 76000: 77002 for the 20610 would be column 1 of PTP 77002/77003
    (mutually exclusive), an edit 76000 did not have with 77003: the fix would cost the 77003."""
    lines = (line("20610"), line("64510", seq=2), line("77003", seq=3), line("76000", seq=4))
    (f,) = [x for x in review(real_reference, *lines) if x.lines == ("Claim.item[3]",)]
    assert f.code == F.USE_GUIDANCE_CODE and f.fixes[0].action == F.REMOVE_LINE
    assert "77003 would be bundled into 77002" in f.reason
    assert ("77002", "77003") in _ptp_rows(f)


def test_a_sibling_the_claim_bundles_falls_back_to_removal(real_reference):
    """62272 + 64479 + 76000: 62329 (62272 with imaging guidance) would be column 2 of PTP
    64479/62329 (indicator 0), an edit 62272 does not have: keep 62272, remove 76000."""
    (f,) = review(real_reference, line("62272"), line("64479", seq=2), line("76000", seq=3))
    assert f.code == F.USE_GUIDANCE_CODE
    assert [(x.action, x.line) for x in f.fixes] == [(F.REMOVE_LINE, "Claim.item[2]")]
    assert "62329 is not offered" in f.summary and "64479/62329" in f.reason
    (g,) = review(real_reference, line("62272"), line("76000", seq=2))  # alone: the sibling is offered
    assert (g.fixes[0].action, g.fixes[0].code) == (F.REPLACE_CODE, "62329")


def test_an_add_on_without_its_primary_is_a_conflict(real_reference):
    """CMS AOC type 1: 77002 is paid only with one of its listed primaries that date."""
    c = case(line("99213"), line("76000", seq=2))
    fix = Fix(F.REPLACE_CODE, line="Claim.item[1]", code="77002", units=1)
    (conflict,) = fix_conflicts(c, fix, real_reference)
    assert conflict.line.code == "77002" and "no primary procedure" in conflict.short
    assert conflict.citations[0].kind == "ncci-aoc" and "77002" in conflict.citations[0].text
    assert fix_conflicts(case(line("20610"), line("76000", seq=2)), fix, real_reference) == []
    contractor = Fix(F.REPLACE_CODE, line="Claim.item[1]", code="77001", units=1)  # type 2: not checked
    assert fix_conflicts(c, contractor, real_reference) == []


def test_the_replacement_keeps_26_for_a_hospital_patient_and_stays_clean(real_reference):
    (f,) = review(real_reference, line("20610"), line("76000", seq=2), setting=HOSPITAL)
    assert [(x.action, x.code or x.modifier) for x in (f.fixes[0],) + f.fixes[0].then] == \
        [(F.REPLACE_CODE, "77002"), (F.ADD_MODIFIER, "26")]
    after = corrected_case(case(line("20610"), line("76000", seq=2), setting=HOSPITAL), f.fixes[0])
    assert [(ln.code, ln.modifiers) for ln in after.lines] == [("20610", ()), ("77002", ("26",))]


# --- the property test ----------------------------------------------------------------------------
ON = date(2024, 8, 1)
REMOVE_REPLACE_MODIFY = frozenset({F.REMOVE_LINE, F.REPLACE_CODE, F.ADD_MODIFIER, F.REMOVE_MODIFIER})
# the findings whose fixes remove, replace or change modifiers of a line
FIX_FINDINGS = frozenset(c for c, k in KINDS.items() if k.fixes & REMOVE_REPLACE_MODIFY)
MODIFIERS = ["26", "TC", "XS", "XE", "XU", "59", "LT", "RT"]
POS = ["11", "22", "21", "23", "24", None]
CLASSES = [None, "AMB", "IMP", "EMER"]


@pytest.fixture(scope="module")
def code_pools(real_reference):
    """Codes drawn from the real tables: 76000's column-1 partners, the guidance add-ons' listed
    primaries, the with-guidance siblings, and the codes that bundle 77001-77003 (S&I codes...)."""
    info = real_reference.pick("ptp", "practitioner", ON)
    conn = real_reference.connection(info)
    partners = sorted(r[0] for r in conn.execute(
        "SELECT DISTINCT column_1 FROM ptp WHERE column_2 = '76000' AND deletion IS NULL"))
    bundles_guidance = sorted(r[0] for r in conn.execute(
        "SELECT DISTINCT column_1 FROM ptp WHERE column_2 IN ('77001', '77002', '77003') AND deletion IS NULL "
        "AND column_1 NOT LIKE '0%'"))
    primaries = sorted({p for a in ("77002", "77003") for p in real_reference.add_on(a, ON).primaries})
    pol = policy()
    siblings = sorted(set(pol.siblings) | {e.add_on for e in pol.siblings.values()})
    guidance = sorted({c for e in pol.guidance.values() for c in e.codes})
    assert len(partners) > 2000 and "73040" in bundles_guidance and "23350" in primaries
    return {"partners": partners, "bundles": bundles_guidance, "primaries": primaries,
            "siblings": siblings, "guidance": guidance,
            "fixed": ["76000", "77001", "77002", "77003", "99213", "64479", "73040", "33289", "23350", "62272"]}


def _item(seq, code, mods, units, pos):
    item = {"sequence": seq, "productOrService": {"coding": [{"system": CPT, "code": code}]},
            "servicedDate": DAY.isoformat(), "quantity": {"value": units}}
    if mods:
        item["modifier"] = [{"coding": [{"system": CPT, "code": m}]} for m in mods]
    if pos:
        item["locationCodeableConcept"] = {"coding": [{"system": POS_SYSTEM, "code": pos}]}
    return item


@st.composite
def claims(draw, pools):
    pool = draw(st.sampled_from(["partners", "bundles", "primaries", "siblings", "guidance", "fixed"]))
    n = draw(st.integers(0, 3))
    codes = [draw(st.sampled_from(pools[pool if i == 0 else draw(st.sampled_from(list(pools)))]))
             for i in range(n)]
    pos = draw(st.sampled_from(POS))
    fluoro = _item(1, "76000", draw(st.lists(st.sampled_from(MODIFIERS), max_size=2, unique=True)),
                   draw(st.integers(1, 4)), pos)
    items = [fluoro] + [_item(i + 2, c, draw(st.lists(st.sampled_from(MODIFIERS), max_size=1)), 1, pos)
                        for i, c in enumerate(codes)]
    order = draw(st.permutations(range(len(items))))
    items = [items[i] for i in order]
    for seq, it in enumerate(items, start=1):
        it["sequence"] = seq
    institutional = draw(st.booleans())
    claim = {"resourceType": "Claim", "id": "c1", "status": "active", "use": "claim",
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                                  "code": "institutional" if institutional else "professional"}]},
             "patient": {"reference": "Patient/p1"}, "created": "2024-08-05",
             "provider": {"reference": "Organization/o1"}, "priority": {"coding": [{"code": "normal"}]},
             "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cv1"}}],
             "item": items}
    companions = []
    klass = draw(st.sampled_from(CLASSES))
    if klass:
        companions.append({"resourceType": "Encounter", "id": "e1", "status": "finished",
                           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
                           "period": {"start": "2024-08-05T08:00:00Z"}})
    config = draw(st.fixed_dictionaries({}, optional={"global-billing": st.booleans()}))
    return claim, companions, config


def _fix_problems(fixed, before, after: Case, keys, ref, config) -> list:
    """Removal, replacement or modifier findings of the corrected claim on the touched lines: the
    finding fixed again, or one the claim did not have (a finding of another line problem the fix
    leaves as it was, e.g. modifier-26 beside session-units, is not the fix's doing)."""
    had = {(f.code, f.lines) for f in before} - {(fixed.code, fixed.lines)}
    return [f for f in evaluate(after, ref, config) if f.code in FIX_FINDINGS and set(f.lines) & set(keys)
            and (f.code, f.lines) not in had]


def _oracle(after: Case, keys, ref) -> list[str]:
    """Independently of the engine: a non-76000 code on a touched line is column 2 of no PTP edit
    in force with another line (indicator 0; indicator 1 unless the line has a distinct-service
    modifier), and a Type 1 add-on there has a listed primary on the claim."""
    out = []
    others = {ln.code for ln in after.lines}
    for ln in after.lines:
        if ln.key not in keys or ln.code == "76000":
            continue
        if after.setting.ncci_setting != "inpatient-hospital":
            for e in ref.ptp_edits(others | {ln.code}, DAY, after.setting.ncci_setting):
                if e.column2 == ln.code and e.column1 != ln.code and e.modifier_indicator == "0":
                    out.append(f"{e.column1}/{e.column2} 0")
                elif (e.column2 == ln.code and e.column1 != ln.code and e.modifier_indicator == "1"
                      and not ln.has_distinct_modifier()):
                    out.append(f"{e.column1}/{e.column2} 1")
        aoc = ref.add_on(ln.code, DAY)
        if aoc is not None and aoc.edit_type == 1 and aoc.primaries and not aoc.primaries & (others - {ln.code}):
            out.append(f"{ln.code} without primary")
    return out


def _shape(lines):
    return sorted((ln.code, tuple(sorted(ln.modifiers)), ln.units) for ln in lines)


def test_every_recommended_fix_leaves_a_clean_claim(real_reference, code_pools):
    @settings(max_examples=300, deadline=500, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def check(data):
        claim, companions, raw = data.draw(claims(code_pools))
        config = resolve({"fluoro-cds.configuration": raw} if raw else None)
        c = case_from_claim(claim, companions, real_reference)
        before = evaluate(c, real_reference, config)
        for f in before:
            assert_as_declared(f)
            fix = next((x for x in f.fixes if x.recommended), None)
            if fix is None or fix.action == F.DOCUMENT:
                continue
            keys = touched(fix)
            after = corrected_case(c, fix)
            # the normalized edit is the FHIR Claim edit
            if c.claim is not None and fix.action != F.SET_PLACE_OF_SERVICE:
                fhir = case_from_claim(actions.corrected_claim(c, fix), companions, real_reference)
                assert _shape(fhir.lines) == _shape(after.lines), (f.code, fix)
            assert _fix_problems(f, before, after, keys, real_reference, config) == [], (f.code, fix, claim["item"])
            if f.code in (F.USE_GUIDANCE_CODE,):
                assert _oracle(after, keys, real_reference) == [], (f.code, fix, claim["item"])
                assert fix_conflicts(c, fix, real_reference) == []
    check()


def test_a_replacement_bills_the_units_of_the_fix_in_the_claim_update(real_reference):
    """Found by the property test: 76000 x 2 replaced with 77002 kept quantity 2 in the corrected
    FHIR Claim (77002's MUE is 1); the update now carries the fix's one unit, net and total kept."""
    claim = {"resourceType": "Claim", "id": "c1", "type": {"coding": [{"code": "professional"}]},
             "item": [_item(1, "76000", [], 2, "11") | {"unitPrice": {"value": 40, "currency": "USD"},
                                                          "net": {"value": 80, "currency": "USD"}},
                      _item(2, "10160", [], 1, "11") | {"net": {"value": 100, "currency": "USD"}}],
             "total": {"value": 180, "currency": "USD"}}
    c = case_from_claim(claim, [], real_reference)
    (f,) = evaluate(c, real_reference, resolve(None))
    assert (f.fixes[0].action, f.fixes[0].code, f.fixes[0].units) == (F.REPLACE_CODE, "77002", 1)
    fixed = actions.corrected_claim(c, f.fixes[0])
    assert fixed["item"][0]["quantity"]["value"] == 1 and fixed["item"][0]["net"]["value"] == 40
    assert fixed["total"]["value"] == 140
    assert _shape(case_from_claim(fixed, [], real_reference).lines) == _shape(corrected_case(c, f.fixes[0]).lines)


def test_a_removal_finding_may_cite_the_add_on_row_of_another_problem(real_reference):
    """Found by the property test: 33289 (PTP indicator 0) + 10160 (a 77002 primary) + 76000 is one
    ptp-bundled finding that also cites the AOC row behind 'Also applies'; its declaration allows it."""
    (f,) = review(real_reference, line("76000"), line("33289", seq=2), line("10160", seq=3))
    assert f.code == F.PTP_BUNDLED and {c.kind for c in f.citations} == {"ncci-ptp", "ncci-aoc", "policy", F.PROGRAM_CITATION}
    assert "77002 reports the fluoroscopic guidance for 10160" in f.reason
    assert_as_declared(f)

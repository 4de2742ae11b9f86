"""Scenarios 1-15 through extraction and the rules: on the starter set, and on the real CMS July 2024
tables (same answers wherever the starter set covers the scenario; scenario 14 needs the real table)."""
from __future__ import annotations

import pytest

from hooks import findings as F
from hooks.model import DISTINCT_MODIFIERS, FLUORO
from nccidata.starter import starter
from tests.conftest import require_shared_ncci
from tests.rules_support import assert_as_declared, case_of, findings_of, real_ncci
from tests.scenario_fixtures import scenario

RULE_SCENARIOS = tuple(range(1, 16))


def check(s, findings, case) -> None:
    """Assert the findings answer scenario `s` as docs/scenarios.md requires."""
    exp = s.expected
    topics = [f.code for f in findings]
    assert exp.topics <= set(topics), (s.number, topics)
    if exp.any_topic:
        assert exp.any_topic & set(topics), (s.number, topics)
    assert not exp.forbidden_topics & set(topics), (s.number, topics)
    if exp.card_count is not None:
        assert len(findings) == exp.card_count, (s.number, topics)
    assert len(topics) == len(set(topics)) or F.MUE_EXCEEDED in topics, "one finding per problem"
    lines = {ln.key: ln for ln in case.lines}
    if exp.removal_topics:
        hits = [f for f in findings if f.code in exp.removal_topics and f.fixes and f.fixes[0].recommended
                and f.fixes[0].action in (F.REMOVE_LINE, F.REPLACE_CODE) and lines[f.fixes[0].line].code == FLUORO]
        assert hits, (s.number, topics)
        if exp.replace_with:
            assert hits[0].fixes[0].action == F.REPLACE_CODE and hits[0].fixes[0].code == exp.replace_with
        else:
            assert hits[0].fixes[0].action == F.REMOVE_LINE
    if exp.add_modifier:
        (f,) = [f for f in findings if f.code == exp.modifier_topic]
        fix = f.fixes[0]
        assert fix.recommended and fix.action == F.ADD_MODIFIER and fix.modifier == exp.add_modifier
        assert lines[fix.line].code == FLUORO
    if exp.missing is not None:
        (f,) = [f for f in findings if f.code == F.DOCUMENTATION_MISSING]
        assert f.missing == exp.missing
        assert f.fixes[0].elements == exp.missing
    if exp.no_bypass_suggestion:
        assert not [x for f in findings for x in f.fixes
                    if x.action == F.ADD_MODIFIER and x.modifier in DISTINCT_MODIFIERS]


def check_contract(findings) -> None:
    for f in findings:
        assert f.code in F.FINDING_CODES
        assert f.severity in ("info", "warning")
        assert 0 < len(f.summary) <= 140
        assert f.reason and f.citations
        assert_as_declared(f)
        if f.fixes:
            assert f.fixes[0].recommended
        for c in f.citations:
            if c.starter:
                assert "starter set, not a CMS release" in c.text
            if c.kind == "ncci-ptp":
                d = dict(c.details)
                assert {"column1", "column2", "modifier_indicator", "rationale"} <= set(d)
            if c.kind == "policy":
                assert "Source:" in c.text


@pytest.mark.parametrize("n", RULE_SCENARIOS)
def test_scenario_on_the_starter_set(n):
    s = scenario(n)
    ref = starter()
    case = case_of(s, ref)
    findings = findings_of(s, ref)
    check(s, findings, case)
    check_contract(findings)


@pytest.mark.parametrize("n", RULE_SCENARIOS)
def test_scenario_without_prefetch_extracts_the_same_case(n):
    s = scenario(n)
    ref = starter()
    assert case_of(s, ref, with_prefetch=False) == case_of(s, ref, with_prefetch=True)


@pytest.fixture(scope="module")
def real():
    return real_ncci(str(require_shared_ncci()))


def _answer(findings):
    return [(f.code, tuple((x.action, x.code, x.modifier, x.units, x.recommended) for x in f.fixes), f.missing)
            for f in findings]


@pytest.mark.parametrize("n", RULE_SCENARIOS)
def test_real_tables_give_the_same_answer(real, n):
    s = scenario(n)
    findings = findings_of(s, real)
    check(s, findings, case_of(s, real))
    check_contract(findings)
    assert _answer(findings) == _answer(findings_of(s, starter()))
    assert not any(c.starter for f in findings for c in f.citations)


def test_scenario_14_edit_exists_but_was_deleted_in_2016(real):
    edit = real.ptp["practitioner"][("50080", "76000")]
    assert edit.modifier_indicator == "9" and edit.deletion.isoformat() == "2016-01-01"
    s = scenario(14)
    assert findings_of(s, real) == []
    # The same claim dated before the deletion date does meet the edit in the real table ...
    from datetime import date
    assert real.ptp_edits({"50080", "76000"}, date(2015, 6, 1), "practitioner") == [edit]
    # ... but indicator 9 is never a bundling finding.
    case = case_of(s, real)
    from dataclasses import replace
    from hooks.config import resolve
    from hooks.rules import evaluate
    old = replace(case, lines=tuple(replace(ln, service_date=date(2015, 6, 1)) for ln in case.lines))
    assert [f.code for f in evaluate(old, real, resolve(None))] == []


def test_ptp_citation_names_release_and_row(real):
    (f,) = findings_of(scenario(9), real)
    ptp = [c for c in f.citations if c.kind == "ncci-ptp"][0]
    assert "2024Q3" in ptp.text and "33289" in ptp.text and "modifier indicator 0" in ptp.text
    (f,) = findings_of(scenario(9), starter())
    ptp = [c for c in f.citations if c.kind == "ncci-ptp"][0]
    assert ptp.starter and "starter set, not a CMS release" in ptp.text


from tests.ncci_support import real_ncci_db, real_reference  # noqa: E402,F401


@pytest.mark.parametrize("n", RULE_SCENARIOS)
def test_real_sqlite_store_gives_the_same_answer(real_reference, n):
    """The imported CMS July 2024 release in the nccidata SQLite store answers like the starter set."""
    s = scenario(n)
    findings = findings_of(s, real_reference)
    check(s, findings, case_of(s, real_reference))
    check_contract(findings)
    assert _answer(findings) == _answer(findings_of(s, starter()))
    assert not any(c.starter for f in findings for c in f.citations if c.kind.startswith("ncci"))


def test_policy_files_agree_with_the_real_tables(real):
    """Entries whose source cites the CMS tables are backed by rows of the July 2024 release."""
    from datetime import date

    from hooks.rules import policy
    pol, on = policy(), date(2024, 8, 1)
    for add_on in ("77002", "77003"):
        prims = set().union(*[e.codes for e in pol.guidance.values() if e.add_on == add_on])
        assert prims <= real.add_ons[add_on].primaries, add_on
    assert real.add_ons["77001"].contractor_defined
    table = real.ptp["practitioner"]
    for entry in {e.codes_spec: e for e in pol.integral.values()}.values():
        if "NCCI PTP" in entry.source:
            active = [c for c in entry.codes if (c, "76000") in table and table[(c, "76000")].in_force(on)]
            assert active, entry.codes_spec


def test_issue_9_rules_on_the_real_release(real_reference):
    """Distinct-service evidence, session units and PC/TC on the imported CMS July 2024 tables (PTP
    27235/76000 indicator 1, 33289/76000 indicator 0; AOC 77002 lists 20610; MPFS 76000 and 77002 PC/TC 1)."""
    from datetime import date

    from hooks.config import resolve
    from hooks.model import Case, Evidence, Line, Setting
    from hooks.rules import evaluate
    day = date(2024, 8, 5)
    docs = Evidence(indication=True, fluoro_minutes=5, radiation_dose=True, body_site=True, findings=True,
                    images_retained=True, signed_interpretation=True)
    hospital = Setting(facility=True, ncci_setting="practitioner", pos="22", reasons=("POS 22",))

    def run(*lines, setting=hospital):
        case = Case("claim", setting, tuple(lines), docs, default_date=day)
        return evaluate(case, real_reference, resolve(None))

    def ln(code, *mods, seq, **kw):
        return Line(f"Claim.item[{seq - 1}]", code, tuple(mods), service_date=day, sequence=seq, **kw)

    (f,) = run(ln("20610", seq=1), ln("76000", seq=2))
    assert f.code == F.USE_GUIDANCE_CODE and f.fixes[0].code == "77002" and f.fixes[0].then[0].modifier == "26"
    assert not any(c.starter for c in f.citations)
    (f,) = run(ln("76000", "TC", seq=1))
    assert f.code == F.MODIFIER_26 and [x.modifier for x in (f.fixes[0],) + f.fixes[0].then] == ["TC", "26"]
    assert any(c.kind == "mpfs" and "PC/TC 1" in c.text and not c.starter for c in f.citations)
    p1, p2 = ("Practitioner/a",), ("Practitioner/b",)
    assert run(ln("33289", seq=1, performers=p1), ln("76000", "26", seq=2, performers=p2)) == []
    (f,) = run(ln("27235", seq=1, encounters=("Encounter/1",)), ln("76000", "26", seq=2, encounters=("Encounter/2",)))
    assert f.code == F.PTP_MODIFIER_ALLOWED and f.fixes[0].modifier == "XE" and f.fixes[0].recommended
    (f,) = run(Line("Claim.item[0]", "76000", ("26",), 2, day, sequence=1))
    assert f.code == F.SESSION_UNITS and f.fixes[0].units == 1


def test_integral_where_no_ptp_edit_exists_on_the_real_release(real_reference):
    """Issue 10 s.6: fracture fixation and spinal instrumentation codes have no PTP edit with 76000 in the
    July 2024 practitioner or outpatient-hospital table (nor in the starter set), yet 76000 with them is
    suppressed as integral (NCCI Policy Manual general rule), citing the policy entry and no PTP row."""
    from datetime import date

    from hooks.config import resolve
    from hooks.model import Case, Evidence, Line, Setting
    from hooks.rules import evaluate, policy
    day = date(2024, 8, 5)
    pol = policy()
    families = {e.category: e for e in pol.integral.values()}
    codes = families["fracture-fixation"].codes | families["spinal-instrumentation"].codes
    assert {"27506", "27759", "27814", "22840", "22848"} <= codes
    for setting in ("practitioner", "outpatient-hospital"):
        for data in (real_reference, starter()):
            with_fluoro = [e for c in codes for e in data.ptp_edits((c, FLUORO), day, setting)]
            assert with_fluoro == [], setting
    docs = Evidence(indication=True, fluoro_minutes=5, radiation_dose=True, body_site=True, findings=True,
                    images_retained=True, signed_interpretation=True)
    office = Setting(facility=False, ncci_setting="practitioner", pos="11", reasons=("POS 11",))
    for code in sorted(codes):
        lines = (Line("Claim.item[0]", code, (), service_date=day, sequence=1),
                 Line("Claim.item[1]", FLUORO, (), service_date=day, sequence=2))
        (f,) = evaluate(Case("claim", office, lines, docs, default_date=day), real_reference, resolve(None))
        assert f.code == F.FLUOROSCOPY_INTEGRAL and f.fixes[0].action == F.REMOVE_LINE, code
        assert {c.kind for c in f.citations} == {"policy", F.PROGRAM_CITATION}, code
        assert "Policy Manual" in " ".join(c.text for c in f.citations), code


def test_deleted_codes_agree_with_the_real_tables(real_reference):
    """Each code of hooks/policy/deleted.tsv has no PTP edit in force on its deletion date in the July
    2024 tables, no MPFS 2024 row and no MUE; on the real tables it is the code-deleted finding."""
    from datetime import timedelta

    from hooks.config import resolve
    from hooks.model import Case, Evidence, Line, Setting
    from hooks.rules import evaluate, policy
    deleted = policy().deleted
    assert "76001" in deleted
    for code, gone in deleted.items():
        for setting in ("practitioner", "outpatient-hospital"):
            assert real_reference.ptp_edits((code, FLUORO), gone.deleted, setting) == [], (code, setting)
            assert real_reference.ptp_edits((code, FLUORO), gone.deleted - timedelta(days=1), setting), code
            assert real_reference.mue(code, gone.deleted, setting) is None, code
        assert real_reference.fee(code, "") is None, code
        day = gone.deleted + timedelta(days=2000)
        office = Setting(facility=False, ncci_setting="practitioner", pos="11", reasons=("POS 11",))
        case = Case("claim", office, (Line("Claim.item[0]", code, (), service_date=day, sequence=1),), Evidence(),
                    default_date=day)
        (f,) = evaluate(case, real_reference, resolve(None))
        assert f.code == F.CODE_DELETED and f.fixes[0].action == F.REMOVE_LINE

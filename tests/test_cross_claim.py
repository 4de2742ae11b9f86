"""hooks.rules.cross_claim: NCCI PTP and MUE edits over the lines of one beneficiary, rendering
provider and date of service on several claims (real CMS July 2024 tables)."""
from __future__ import annotations

import copy

from hooks.config import resolve
from hooks.extract import case_from_claim, split_claim_bundle
from hooks.rules import evaluate
from hooks.rules.cross_claim import cross_claim_findings, line_group
from tests.ncci_support import real_ncci_db, real_reference  # noqa: F401
from tests.scenario_fixtures import scenario

CONFIG = resolve(None)


def _parts(n: int):
    claim, companions = split_claim_bundle(scenario(n).context["claim"])
    return claim, companions


def _claim(base: dict, cid: str, codes: dict[str, int], **changes) -> dict:
    """A copy of `base` named `cid` billing only the items of `codes` (code -> units)."""
    claim = copy.deepcopy(base)
    claim["id"] = cid
    claim["item"] = [dict(i, quantity={"value": codes[i["productOrService"]["coding"][0]["code"]]})
                     for i in claim["item"] if i["productOrService"]["coding"][0]["code"] in codes]
    for key, value in changes.items():
        claim[key] = value
    return claim


def _review(claims, companions, reference):
    return [case_from_claim(c, companions, reference) for c in claims]


def test_a_ptp_pair_on_two_claims_is_one_finding_naming_both(real_reference):
    base, companions = _parts(9)  # 33289 + 76000, same provider and date
    cases = _review([_claim(base, "a", {"33289": 1}), _claim(base, "b", {"76000": 1})], companions, real_reference)
    assert all(f.code != "ptp-bundled" for c in cases for f in evaluate(c, real_reference, CONFIG))
    [found] = cross_claim_findings(cases, real_reference, CONFIG)
    assert found.finding.code == "ptp-bundled"
    assert found.claims == ("Claim/b", "Claim/a")
    assert [(c, ln.code) for c, ln in found.lines] == [("Claim/b", "76000"), ("Claim/a", "33289")]
    assert found.finding.lines == ("Claim/b:Claim.item[0]", "Claim/a:Claim.item[0]")
    row = next(c for c in found.finding.citations if c.kind == "ncci-ptp")
    assert dict(row.details)["column1"] == "33289" and dict(row.details)["modifier_indicator"] == "0"
    # the same pair on one claim is the per-claim review's, not found again across claims
    both = _review([_claim(base, "c", {"33289": 1, "76000": 1})], companions, real_reference)
    assert cross_claim_findings(both, real_reference, CONFIG) == []


def test_another_provider_date_or_patient_is_no_pair(real_reference):
    base, companions = _parts(9)
    other = {"reference": "Practitioner/someone-else"}
    variants = [
        _claim(base, "b", {"76000": 1}, provider=other,
               careTeam=[dict(base["careTeam"][0], provider=other)]),
        _claim(base, "b", {"76000": 1}, patient={"reference": "Patient/another"}),
    ]
    dated = _claim(base, "b", {"76000": 1})
    dated["item"][0]["servicedDate"] = "2024-08-06"
    variants.append(dated)
    for b in variants:
        cases = _review([_claim(base, "a", {"33289": 1}), b], companions, real_reference)
        assert cross_claim_findings(cases, real_reference, CONFIG) == [], b


def test_mue_units_across_claims(real_reference):
    base, companions = _parts(11)  # 20650 + 76000 x 4, POS 11
    limit = real_reference.mue("76000", __import__("datetime").date(2024, 8, 5), "practitioner")
    assert limit is not None and limit.mai in (2, 3)  # per date of service (MUE 3 in July 2024)
    two = limit.units // 2 + 1  # two claims each within the MUE, over it together
    cases = _review([_claim(base, "a", {"76000": two}), _claim(base, "b", {"76000": two})], companions,
                    real_reference)
    assert all(f.code != "mue-exceeded" for c in cases for f in evaluate(c, real_reference, CONFIG))
    [found] = cross_claim_findings(cases, real_reference, CONFIG)
    assert found.finding.code == "mue-exceeded" and set(found.claims) == {"Claim/a", "Claim/b"}
    assert f"{2 * two}" in found.finding.reason
    # one claim over the MUE by itself: its own review reports it, not this pass
    alone = _review([_claim(base, "a", {"76000": limit.units + 1}), _claim(base, "b", {"76000": 1})], companions,
                    real_reference)
    assert cross_claim_findings(alone, real_reference, CONFIG) == []
    # switched off by the configuration like any finding
    assert cross_claim_findings(cases, real_reference, {**CONFIG, "mue-exceeded": False}) == []


def test_grouping_key_names_beneficiary_provider_date_table_and_program(real_reference):
    base, companions = _parts(9)
    [case] = _review([_claim(base, "b", {"76000": 1})], companions, real_reference)
    key = line_group(case, case.lines[0])
    assert key == ("Patient/s09-patient", "Practitioner/s09-practitioner", case.lines[0].service_date,
                   "practitioner", "medicare")


def test_integral_procedure_on_another_claim_suppresses_76000(real_reference):
    """29881 (knee arthroscopy, fluoroscopy integral: hooks/policy/integral.tsv) on one claim and
    76000 on another of the same provider, beneficiary and date: one fluoroscopy-integral finding
    naming both claims, citing the integral entry and the PTP row (indicator 1), as on one claim."""
    base, companions = _parts(1)  # 29881 + 76000, POS 24 (ASC)
    [one] = _review([base], companions, real_reference)
    per_claim = [f for f in evaluate(one, real_reference, CONFIG) if f.code == "fluoroscopy-integral"]
    assert per_claim, "the per-claim review finds the integral 76000"
    cases = _review([_claim(base, "scope", {"29881": 1}), _claim(base, "fluoro", {"76000": 1})], companions,
                    real_reference)
    assert all(f.code != "fluoroscopy-integral" for c in cases for f in evaluate(c, real_reference, CONFIG))
    [found] = cross_claim_findings(cases, real_reference, CONFIG)
    assert found.finding.code == "fluoroscopy-integral"
    assert found.claims == ("Claim/fluoro", "Claim/scope")
    kinds = {c.kind for c in found.finding.citations}
    assert kinds >= {c.kind for c in per_claim[0].citations} and "ncci-ptp" in kinds
    assert found.finding.summary == per_claim[0].summary
    assert [(f.action, f.line) for f in found.finding.fixes] == [("remove-line", "Claim/fluoro:Claim.item[0]")]
    # switched off: the next most specific problem (the PTP indicator-1 edit) is reported instead
    [other] = cross_claim_findings(cases, real_reference, {**CONFIG, "fluoroscopy-integral": False})
    assert other.finding.code == "ptp-modifier-allowed"


def test_a_line_its_own_claim_removes_is_in_no_edit_across_claims(real_reference):
    """Claim a bills 33289 + 76000 (its own review removes the 76000: bundled); claim b bills
    33289 again on that date. The removed 76000 is not billable, so it is grouped without it
    (service/claim_groups.py) and no second removal of it comes from claim b."""
    from service.claim_groups import decode_case, group_row

    base, companions = _parts(9)
    cases = _review([_claim(base, "a", {"33289": 1, "76000": 1}), _claim(base, "b", {"33289": 1})], companions,
                    real_reference)
    own = [evaluate(c, real_reference, CONFIG) for c in cases]
    assert [f.code for f in own[0]] == ["ptp-bundled"]
    assert [f.finding.code for f in cross_claim_findings(cases, real_reference, CONFIG)] == ["ptp-bundled"]
    rows = [group_row(c, None, ("x", i), f) for i, (c, f) in enumerate(zip(cases, own))]
    slim = [decode_case(r.case) for r in rows if r is not None]
    assert [ln.code for ln in slim[0].lines] == ["33289"]
    assert cross_claim_findings(slim, real_reference, CONFIG) == []


def test_findings_on_a_line_removed_across_claims_are_withdrawn(real_reference):
    """Claim b bills only 76000 (global, for a hospital patient: its own review asks for modifier
    26); claim a bills 33289 that day. Across claims 76000 is bundled (removed): b's own findings
    re-evaluated on b without it have no modifier-26 finding any more."""
    from hooks.rules.cross_claim import amended_findings, for_claim

    base, companions = _parts(9)
    cases = _review([_claim(base, "a", {"33289": 1}), _claim(base, "b", {"76000": 1})], companions, real_reference)
    own_b = evaluate(cases[1], real_reference, CONFIG)
    assert "modifier-26" in {f.code for f in own_b} and all(f.lines == ("Claim.item[0]",) for f in own_b)
    [found] = cross_claim_findings(cases, real_reference, CONFIG)
    part = for_claim(found, "Claim/b")
    assert part.lines == ("Claim.item[0]",) and [f.line for f in part.fixes] == ["Claim.item[0]"]
    assert for_claim(found, "Claim/a").fixes == ()
    assert amended_findings(cases[1], [part], real_reference, CONFIG) == []
    # a finding that does not touch b's 76000 stays (a's own review, amended by nothing, is as before)
    assert amended_findings(cases[0], [], real_reference, CONFIG) == evaluate(cases[0], real_reference, CONFIG)


def test_partners_of_a_kind_beyond_two_change_no_finding(real_reference, monkeypatch):
    """The group review takes, of each partner_kind, only the first two partner lines on other
    claims (hooks.rules.cross_claim._partners: n x kinds instead of n x n). On random groups whose
    lines vary in every field the review could read, the findings equal the rule's against every
    partner (all_partners); a field read but missing from partner_kind makes them differ."""
    import random
    from dataclasses import replace

    from hooks import model
    from hooks.rules import cross_claim

    base, companions = _parts(9)
    [template] = _review([base], companions, real_reference)
    first = template.lines[0]
    sites = [(), (model.Site(("http://snomed.info/sct|72696002",), "knee", "left"),),
             (model.Site(("http://snomed.info/sct|72696002",), "knee", "right"),)]
    start = __import__("datetime").datetime(2024, 8, 5, 9, 0)
    hour = __import__("datetime").timedelta(hours=1)
    periods = [(None, None), (start, start + hour), (start + 2 * hour, start + 3 * hour), (start, start + 3 * hour),
               (start - hour, start + 5 * hour), (start + 4 * hour, start + 4.25 * hour),
               (start + 6 * hour, start + 6.25 * hour)]  # a long one, two short ones: one in it, one after
    codes = ["76000", "76000", "33289", "29881", "62320", "99213"]
    fields = {
        "modifiers": [(), ("59",), ("XS",), ("XE",), ("XP",), ("26",), ("XU",)],
        "encounters": [(), ("Encounter/e1",), ("Encounter/e2",), ("Encounter/e1", "Encounter/e2"), "own"],
        "performers": [(), first.performers, first.performers + ("Practitioner/other",)],  # () the claim's provider
        "body_sites": [*sites, "own"], "period": [*periods, "own"],
        "diagnoses": [(), ("M17.11",), ("I70.213",)], "units": [1, 2],
    }
    rng = random.Random(76000)

    def line(i: int, varied: dict, claim: str) -> model.Line:
        pick = {name: rng.choice(values) for name, values in varied.items()}
        # "own": the claim's own Encounter, performed period or site
        if pick["encounters"] == "own":
            pick["encounters"] = (f"Encounter/{claim}",)
        if pick["period"] == "own":
            at = start + int(claim.rsplit("c", 1)[1]) * hour / 2
            pick["period"] = (at, at + hour / 4)
        if pick["body_sites"] == "own":
            pick["body_sites"] = (model.Site((), f"site {claim}", None),)
        begin, end = pick.pop("period")
        return replace(first, key=f"Claim.item[{i}]", code=rng.choice(codes), start=begin, end=end,
                       sequence=i + 1, **pick)

    groups = []
    names = sorted(fields)
    for g in range(40 * len(names)):
        # two fields vary in a group (each field in turn, and one more), the others are the group's
        # own: many partners of one kind
        focus = names[g % len(names)]
        chosen = {focus, rng.choice([n for n in names if n != focus])}
        varied = {name: values if name in chosen else [rng.choice(values)] for name, values in fields.items()}
        cases = []
        for c in range(rng.randint(6, 20)):
            claim = dict(template.claim, id=f"g{g}c{c}")
            lines = tuple(line(i, varied, claim["id"]) for i in range(rng.randint(1, 3)))
            cases.append(replace(template, claim=claim, lines=lines))
        groups.append(cases)
    fast = [cross_claim_findings(cases, real_reference, CONFIG) for cases in groups]
    assert sum(len(f) for f in fast) > 100, "the random groups exercise the edits across claims"
    assert len({f.finding.code for found in fast for f in found}) >= 3
    monkeypatch.setattr(cross_claim, "_partners", cross_claim.all_partners)
    assert [cross_claim_findings(cases, real_reference, CONFIG) for cases in groups] == fast
    # claim_parts splits each finding's lines and fixes among its claims, none lost or added
    for found in (f for findings in fast for f in findings):
        parts = cross_claim.claim_parts(found)
        assert list(parts) == list(found.claims)
        assert sorted(f"{c}:{k}" for c, p in parts.items() for k in p.lines) == sorted(found.finding.lines)
        assert sorted(f"{c}:{f.line}" for c, p in parts.items() for f in p.fixes) == \
            sorted(f.line for f in found.finding.fixes)
        assert all(p == cross_claim.for_claim(found, c) for c, p in parts.items())


def test_a_long_76000_period_relates_partners_that_start_after_it(real_reference, monkeypatch):
    """_partners finds the periods a partner overlaps among those starting before it (as far back
    as the longest period): a 76000 billed for a long session on one claim; 29881 inside that
    session on three claims, after it on three more (listed first). The partners inside are a kind
    of their own (the same session), not one with those after it (a separate session), so the
    findings equal those against every partner."""
    import datetime
    from dataclasses import replace

    from hooks.rules import cross_claim

    base, companions = _parts(1)  # 29881 + 76000 (integral)
    [template] = _review([base], companions, real_reference)
    fluoro = next(ln for ln in template.lines if ln.code == "76000")
    scope = next(ln for ln in template.lines if ln.code == "29881")
    at = datetime.datetime(2024, 8, 5, 8, 0)
    hour = datetime.timedelta(hours=1)

    def case(cid: str, line, begin, end):
        return replace(template, claim=dict(template.claim, id=cid),
                       lines=(replace(line, key="Claim.item[0]", start=begin, end=end, encounters=()),))

    cases = [case("long", fluoro, at, at + 5 * hour)]
    cases += [case(f"after{i}", scope, at + 6 * hour, at + 7 * hour) for i in range(3)]
    cases += [case(f"in{i}", scope, at + hour, at + 2 * hour) for i in range(3)]
    fast = cross_claim_findings(cases, real_reference, CONFIG)
    # the 29881 inside the session makes the 76000 integral (the later, separate ones would only
    # let a modifier bypass the PTP edit)
    assert [(f.finding.code, f.claims) for f in fast] == [("fluoroscopy-integral", ("Claim/long", "Claim/in0"))]
    monkeypatch.setattr(cross_claim, "_partners", cross_claim.all_partners)
    assert cross_claim_findings(cases, real_reference, CONFIG) == fast

"""The on-disk grouping of the edits across claims (service/claim_groups.py): the grouped case's
compact JSON gives back the case it was made from, and reading back only the claims of groups that
can pair finds what the edits across claims find over every claim of the beneficiary."""
from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta, timezone

import pytest

from hooks.config import resolve
from hooks.model import NO_EVIDENCE, Case, Line, Setting, Site
from hooks.rules.cross_claim import cross_claim_findings
from nccidata import open_reference
from service.bulk_input import BatchInput, InputRecord, review_input
from hooks.model import Evidence
from hooks.rules.cross_claim import removed_lines
from service.claim_groups import (EVIDENCE_FIELDS, LINE_FIELDS, SETTING_FIELDS, ClaimGroups, beneficiary_findings,
                                  decode_case, encode_case, group_row)
from service.sample_data import write_export


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory):
    """The reviewed claims of a 300-claim sample export (starter set): [(case, findings)]."""
    root = tmp_path_factory.mktemp("groups")
    write_export(str(root / "export"), claims=300, seed=5)
    reference = open_reference(str(root / "absent.sqlite"))
    out = []
    with BatchInput([str(root / "export")]) as source:
        for record in source.records():
            if isinstance(record, InputRecord):
                done = review_input(record, reference, resolve(None))
                if hasattr(done, "case"):
                    out.append((done.case, done.findings))
    return reference, out


def test_the_codec_writes_every_field_of_the_model():
    assert LINE_FIELDS == tuple(f.name for f in dataclasses.fields(Line))
    assert SETTING_FIELDS == tuple(f.name for f in dataclasses.fields(Setting))
    assert EVIDENCE_FIELDS == tuple(f.name for f in dataclasses.fields(Evidence))
    assert len(dataclasses.fields(Case)) == 10  # encode_case writes each of them (kind ... program_source)


def test_stored_cases_decode_to_the_cases_the_review_had(reviewed):
    """The amendment runs on the decoded case (service.batch._cross_chunk): it must equal the case
    reviewed, resource, evidence and context lines included; grouped, without the removed lines."""
    _reference, cases = reviewed
    assert len(cases) == 300
    assert any(c.evidence is not NO_EVIDENCE for c, _f in cases) and any(c.context_lines for c, _f in cases)
    for case, findings in cases:
        gone = removed_lines(findings)
        blob = encode_case(case, gone)
        assert decode_case(blob, grouped=False) == case
        assert decode_case(blob) == dataclasses.replace(case, lines=tuple(ln for ln in case.lines if ln.key not in gone))


def test_a_line_with_every_field_set_decodes_equal():
    tz = timezone(timedelta(hours=-5))
    line = Line("Claim.item[1]", "76000", ("26", "XS"), 2, date(2024, 8, 5),
                (Site(("http://snomed.info/sct|71341001",), "bone femur", "left"), Site((), None, None)),
                ("http://hl7.org/fhir/sid/icd-10-cm|S72.321A",), "procedure", "Procedure/p1", 2, ("Encounter/e1",),
                ("Practitioner/a", "Practitioner/b"), datetime(2024, 8, 5, 9, 30, 15, 250, tzinfo=tz),
                datetime(2024, 8, 5, 10, 0), 3, "22", 31.5, 24.0)
    assert all(getattr(line, f.name) != f.default for f in dataclasses.fields(Line))
    setting = Setting(True, "outpatient-hospital", "22", ("POS 22",), "22", True, False)
    evidence = Evidence(True, 2.5, True, True, True, True, True, False, (0.0, 1500.0), ("DiagnosticReport/r",))
    assert all(getattr(evidence, f.name) != f.default for f in dataclasses.fields(Evidence))
    other = dataclasses.replace(line, key="Procedure/p2", code="29881")
    case = Case("claim", setting, (line,), evidence, date(2024, 8, 4),
                {"resourceType": "Claim", "id": "c", "use": "claim", "patient": {"reference": "Patient/p"}, "x": 1.5},
                False, (other,), "medicaid", "Coverage.type")
    assert decode_case(encode_case(case), grouped=False) == case
    assert decode_case(encode_case(case, {"Claim.item[1]"})).lines == ()


def test_only_the_claims_of_groups_that_can_pair_are_read_back_with_the_same_findings(reviewed, tmp_path):
    """beneficiaries() reads back the claims of groups with 76000 on one claim and lines on
    another; the findings over them are those over every grouped claim of the beneficiary."""
    reference, cases = reviewed
    config = resolve(None)
    with ClaimGroups(str(tmp_path)) as groups:
        rows = [r for i, (c, f) in enumerate(cases) if (r := group_row(c, None, ("f", i), f)) is not None]
        groups.add_all(rows)
        read = list(groups.beneficiaries())
        got = [found for members in read for found, _cases in beneficiary_findings(members, reference, config)]
    assert got
    every: dict[str, list] = {}
    for row in rows:
        every.setdefault(row.patient, []).append(decode_case(row.case))  # grouped
    expected = [f for patient in sorted(every) for f in cross_claim_findings(every[patient], reference, config)]
    assert got == expected
    claims_read = sum(len(m) for m in read)
    assert claims_read < sum(len(every[p]) for p in {r.patient for r in rows if r.claim in
                                                     {m[0] for ms in read for m in ms}})  # fewer than their claims
    for members in read:
        assert [m[2] for m in members] == sorted(m[2] for m in members)  # input order


def test_the_grouping_holds_no_more_than_its_page_cache(tmp_path):
    """The grouping's SQLite connection has its bounded page cache (also the memory the sort of
    beneficiaries() uses before it spills to disk) and its temporary tables and sorts on disk: the
    main process's memory does not grow with the claims grouped."""
    with ClaimGroups(str(tmp_path)) as groups:
        assert groups.db.execute("PRAGMA cache_size").fetchone()[0] == -ClaimGroups.CACHE_KIB
        assert groups.db.execute("PRAGMA temp_store").fetchone()[0] == 1  # FILE, not MEMORY

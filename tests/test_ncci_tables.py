"""Issue 10 s.8: which NCCI PTP table a claim gets, on real rows of the CMS July 2024 tables that
differ between the practitioner and the hospital (outpatient) table.

- 33897 / 76000: modifier indicator 0 in the practitioner table, 1 in the hospital table;
- 33017 / 76000: an edit (indicator 1) in the practitioner table only.

Professional claims (an ASC professional claim too) get the practitioner table, institutional
outpatient claims the hospital table (CMS "Medicare NCCI PTP Edits" page; NCCI Policy Manual for
Medicare Services, Introduction), institutional inpatient claims none.
"""
from __future__ import annotations

import pytest

from hooks import findings as F
from hooks.config import resolve
from hooks.extract import case_from_claim
from hooks.rules import evaluate
from tests.ncci_support import real_ncci_db, real_reference  # noqa: F401

CPT = "http://www.ama-assn.org/go/cpt"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
TOB = "https://www.nubc.org/CodeSystem/TypeOfBill"


def claim(partner: str, *, claim_type: str = "professional", pos: str = "22", bill: str | None = None) -> dict:
    """A Claim billing `partner` and 76000 on 2024-08-05 at place of service `pos`."""
    items = [{"sequence": i + 1, "productOrService": {"coding": [{"system": CPT, "code": code}]},
              "servicedDate": "2024-08-05",
              "locationCodeableConcept": {"coding": [{"system": POS, "code": pos}]}}
             for i, code in enumerate((partner, "76000"))]
    out = {"resourceType": "Claim", "id": f"tables-{partner}", "status": "active", "use": "claim",
           "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": claim_type}]},
           "patient": {"reference": "Patient/p"}, "created": "2024-08-05", "provider": {"reference": "Organization/o"},
           "priority": {"coding": [{"code": "normal"}]}, "item": items}
    if bill:
        out["subType"] = {"coding": [{"system": TOB, "code": bill}]}
    return out


def removal(findings) -> tuple[str, list]:
    """The removal finding on the 76000 line and its PTP citations."""
    (f,) = [f for f in findings if f.code in F.REMOVAL_CODES]
    return f.code, [c for c in f.citations if c.kind == "ncci-ptp"]


def review(resource: dict, reference):
    case = case_from_claim(resource, [], reference)
    return case, evaluate(case, reference, resolve(None))


def test_the_two_real_tables_differ_on_these_rows(real_reference):
    from datetime import date

    on = date(2024, 8, 5)
    prac = {e.column1: e for e in real_reference.ptp_edits(["33897", "33017", "76000"], on, "practitioner")}
    hosp = {e.column1: e for e in real_reference.ptp_edits(["33897", "33017", "76000"], on, "outpatient-hospital")}
    assert prac["33897"].modifier_indicator == "0" and hosp["33897"].modifier_indicator == "1"
    assert "33017" in prac and "33017" not in hosp


@pytest.mark.parametrize("pos", ["22", "24"])  # hospital outpatient; ambulatory surgical center
def test_professional_claims_get_the_practitioner_table(real_reference, pos):
    case, findings = review(claim("33897", pos=pos), real_reference)
    assert case.setting.ncci_setting == "practitioner"
    code, (cited,) = removal(findings)
    assert code == F.PTP_BUNDLED  # indicator 0: no modifier bypasses it
    assert dict(cited.details)["setting"] == "practitioner" and dict(cited.details)["modifier_indicator"] == "0"
    assert "practitioner table: professional claim, ASC claims included" in cited.text
    assert "NCCI Policy Manual, Introduction" in cited.text
    code, (cited,) = removal(review(claim("33017", pos=pos), real_reference)[1])
    assert code == F.PTP_MODIFIER_ALLOWED and dict(cited.details)["setting"] == "practitioner"


def test_institutional_outpatient_claims_get_the_hospital_table(real_reference):
    case, findings = review(claim("33897", claim_type="institutional", bill="0131"), real_reference)
    assert case.setting.ncci_setting == "outpatient-hospital"
    code, (cited,) = removal(findings)
    assert code == F.PTP_MODIFIER_ALLOWED  # indicator 1 in the hospital table
    assert dict(cited.details)["setting"] == "outpatient-hospital"
    assert "hospital table: institutional outpatient claim" in cited.text
    # 33017/76000 is a practitioner-only edit: an outpatient hospital claim has no PTP finding for it
    _case, findings = review(claim("33017", claim_type="institutional", bill="0131"), real_reference)
    assert not [c for f in findings for c in f.citations if c.kind == "ncci-ptp"]


def test_institutional_inpatient_claims_get_no_ptp_table(real_reference):
    case, findings = review(claim("33897", claim_type="institutional", pos="21", bill="0111"), real_reference)
    assert case.setting.ncci_setting == "inpatient-hospital"
    assert not [c for f in findings for c in f.citations if c.kind in ("ncci-ptp", "ncci-mue")]

"""ExplanationOfBenefit reviewed like a Claim (same case builder, same rules), with its
adjudicated amounts in the payment effect; Claim.use labelled (preauthorization: Da Vinci PAS)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import orjson
import pytest

from hooks.extract.eob import case_from_eob, item_amounts
from hooks.rules import evaluate
from service.batch import review_record
from tests.conftest import ROOT
from tests.ncci_support import real_ncci_db, real_reference  # noqa: F401
from tests.scenario_fixtures import scenario

CLAIM_SCENARIOS = (1, 3, 4, 5, 7, 9, 11)
ADJ = "http://terminology.hl7.org/CodeSystem/adjudication"
C4BB = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication"
C4BB_ROLE = "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole"


def _adjudication(system: str, code: str, value: float) -> dict:
    return {"category": {"coding": [{"system": system, "code": code}]},
            "amount": {"value": value, "currency": "USD"}}


def as_eob(record: dict, allowed: float = 30.0, paid: float = 24.0) -> dict:
    """The scenario's Claim (or Claim-first Bundle) as a CARIN BB professional EOB: same items,
    CARIN care-team roles, each item adjudicated (submitted, eligible, paidtoprovider)."""
    record = copy.deepcopy(record)
    claim = record["entry"][0]["resource"] if record["resourceType"] == "Bundle" else record
    claim["resourceType"] = "ExplanationOfBenefit"
    claim.update(outcome="complete", insurer={"display": "Medicare Part B"})
    for member in claim.get("careTeam", []):
        member["role"] = {"coding": [{"system": C4BB_ROLE, "code": "rendering"}]}
    for item in claim["item"]:
        units = item.get("quantity", {}).get("value", 1)
        item["adjudication"] = [_adjudication(ADJ, "submitted", 100.0 * units),
                                _adjudication(ADJ, "eligible", allowed * units),
                                _adjudication(C4BB, "paidtoprovider", paid * units)]
    return record


def _claim_of(record: dict) -> dict:
    return record["entry"][0]["resource"] if record["resourceType"] == "Bundle" else record


def _shape(rec: dict, root: str) -> list[tuple]:
    """The findings of a batch record, line keys and fix lines rooted at `root`."""
    def norm(text):
        return text.replace(f"{root}.", "X.") if isinstance(text, str) else text
    return sorted((f["code"], tuple(norm(k) for k in f["lines"]),
                   tuple(norm(x["line"]) for x in f["fixes"])) for f in rec["findings"])


@pytest.mark.parametrize("n", CLAIM_SCENARIOS)
def test_an_eob_gets_the_findings_of_its_claim(n, real_reference):
    record = scenario(n).context["claim"]
    as_claim = review_record(record, real_reference, {})
    as_eob_rec = review_record(as_eob(record), real_reference, {})
    assert as_claim["resourceType"] == "Claim" and as_eob_rec["resourceType"] == "ExplanationOfBenefit"
    assert "error" not in as_eob_rec, as_eob_rec
    assert _shape(as_eob_rec, "ExplanationOfBenefit") == _shape(as_claim, "Claim")
    for f in as_eob_rec["findings"]:
        assert all(k.startswith("ExplanationOfBenefit.item[") for k in f["lines"])


def test_the_payment_effect_uses_the_adjudicated_allowed_amount(real_reference):
    record = scenario(9).context["claim"]  # 33289 + 76000: PTP indicator 0, 76000 not payable
    claim = review_record(record, real_reference, {})
    eob = review_record(as_eob(record, allowed=31.5), real_reference, {})
    [c], [e] = claim["findings"], eob["findings"]
    assert c["code"] == e["code"] == "ptp-bundled"
    assert "RVU" in c["payment"] and "allowed" not in c["payment"]
    assert e["payment"] == "76000 global $31.50 allowed (adjudicated) is not separately payable"


def test_mue_excess_is_priced_pro_rata_from_the_allowed_amount(real_reference):
    record = scenario(1).context["claim"]
    claim = _claim_of(record)
    fluoro = next(i for i in claim["item"] if i["productOrService"]["coding"][0]["code"] == "76000")
    fluoro["quantity"] = {"value": 4}
    claim["item"] = [fluoro]  # 76000 alone, 4 units: over the MUE
    eob = as_eob(record, allowed=20.0)
    mue = [f for f in review_record(eob, real_reference, {})["findings"] if f["code"] == "mue-exceeded"]
    limit = real_reference.mue("76000", __import__("datetime").date(2024, 8, 5), "practitioner")
    if limit is None or limit.units >= 4:
        pytest.skip("the MUE of 76000 in this release does not make 4 units excess")
    [f] = mue
    excess = 4 - limit.units
    assert f["payment"].endswith(f"${20.0 * excess:,.2f} allowed (adjudicated) denied")


def test_lines_carry_allowed_and_paid_and_amounts_fall_back_to_net(real_reference):
    eob = as_eob(scenario(9).context["claim"], allowed=30.0, paid=24.0)
    case = case_from_eob(_claim_of(eob), eob["entry"][1:] and [e["resource"] for e in eob["entry"][1:]],
                         real_reference)
    assert {(ln.allowed, ln.paid) for ln in case.lines} == {(30.0, 24.0)}
    assert evaluate(case, real_reference, {})
    item = {"net": {"value": 12.5, "currency": "USD"},
            "adjudication": [_adjudication(ADJ, "benefit", 9.0),
                             {"category": {"coding": [{"system": ADJ, "code": "eligible"}]},
                              "amount": {"value": 11.0, "currency": "EUR"}}]}
    amounts = item_amounts(item, "ExplanationOfBenefit.item[0]")
    assert (amounts.billed, amounts.allowed, amounts.paid) == (12.5, None, 9.0)


def test_eob_errors_name_the_resource_path(real_reference):
    eob = as_eob(scenario(9).context["claim"])
    _claim_of(eob)["item"][0]["servicedDate"] = "2024-13-45"
    rec = review_record(eob, real_reference, {})
    assert rec["path"] == "ExplanationOfBenefit.item[0].servicedDate"
    assert rec["error"].startswith("ExplanationOfBenefit.item[0].servicedDate: ") and "context" not in rec["error"]
    bad_amount = as_eob(scenario(9).context["claim"])
    _claim_of(bad_amount)["item"][1]["adjudication"][1]["amount"]["value"] = "30"
    rec = review_record(bad_amount, real_reference, {})
    assert rec["path"] == "ExplanationOfBenefit.item[1].adjudication[1].amount.value"
    patient = review_record({"resourceType": "Patient", "id": "p"}, real_reference, {})
    assert patient["path"] == "$.resourceType" and "ExplanationOfBenefit" in patient["error"]


def test_preauthorization_claims_are_reviewed_and_labelled(real_reference):
    record = scenario(9).context["claim"]  # a Claim-first Bundle, as a Da Vinci PAS request Bundle is
    _claim_of(record)["use"] = "preauthorization"
    rec = review_record(record, real_reference, {})
    assert rec["use"] == "preauthorization" and [f["code"] for f in rec["findings"]] == ["ptp-bundled"]
    _claim_of(record)["use"] = "later"
    assert review_record(record, real_reference, {})["path"] == "Claim.use"


def test_batch_cli_reviews_eobs(tmp_path, real_ncci_db):
    path = tmp_path / "eobs.ndjson"
    records = [as_eob(scenario(9).context["claim"]), _claim_of(as_eob(scenario(4).context["claim"]))]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLUORO_CDS_DB": str(real_ncci_db)}
    proc = subprocess.run([sys.executable, "-m", "service.cli", "batch", str(path)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["resourceType"] for r in rows] == ["ExplanationOfBenefit"] * 2
    assert "context.claim" not in proc.stdout
    assert [f["code"] for f in rows[0]["findings"]] == ["ptp-bundled"]

"""Issue 10 s.8: which NCCI program reviews a claim (Claim.insurance -> Coverage, else the `program`
option), every card cites the program and releases used, and a Medicaid claim with no Medicaid
release imported says so and is not checked against Medicare's edits. The Medicaid files are
written here in the program's published layout (tmp dirs)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from hooks import findings as F
from hooks.config import ConfigError, resolve
from hooks.context import InvalidResource
from hooks.extract import case_from_claim
from hooks.rules import evaluate
from nccidata import MEDICAID, MEDICARE, open_reference
from nccidata.starter import starter
from tests.conftest import ROOT
from tests.ncci_support import run_ncci, write_cms_ptp_zip, write_medicaid_mue, write_medicaid_ptp

CPT = "http://www.ama-assn.org/go/cpt"
SOPT = "https://nahdo.org/sopt"
MEDICARE_ROWS = [("33289", "76000", "", "20190101", "*", "0", "CPT Manual or CMS manual coding instruction")]
MEDICAID_PTP = [("33289", "76000", "20101001", "*", "1", "CPT Manual or CMS manual coding instruction")]


def claim(*codes: str, units: int = 1, insurance: list | None = None) -> dict:
    items = [{"sequence": i + 1, "productOrService": {"coding": [{"system": CPT, "code": c}]},
              "servicedDate": "2024-08-05", **({"quantity": {"value": units}} if c == "76000" else {})}
             for i, c in enumerate(codes)]
    out = {"resourceType": "Claim", "id": "prog-claim", "status": "active", "use": "claim",
           "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
           "patient": {"reference": "Patient/p"}, "created": "2024-08-05", "provider": {"reference": "Organization/o"},
           "priority": {"coding": [{"code": "normal"}]}, "item": items}
    if insurance is not None:
        out["insurance"] = insurance
    return out


def coverage(cid: str, code: str | None = "2", system: str = SOPT, **extra) -> dict:
    cov = {"resourceType": "Coverage", "id": cid, "status": "active", "beneficiary": {"reference": "Patient/p"},
           "payor": [{"reference": "Organization/payer"}], **extra}
    if code is not None:
        cov["type"] = {"coding": [{"system": system, "code": code}]}
    return cov


def insured(cid: str, focal: bool = True, seq: int = 1) -> dict:
    return {"sequence": seq, "focal": focal, "coverage": {"reference": f"Coverage/{cid}"}}


def review(resource, companions, reference, config=None):
    case = case_from_claim(resource, companions, reference)
    return case, evaluate(case, reference, resolve(config))


@pytest.fixture
def stores(tmp_path) -> tuple[str, str]:
    """(a store with Medicare PTP only, the same plus a Medicaid practitioner PTP and MUE release)."""
    medicare = str(tmp_path / "a" / "ncci.sqlite")
    both = str(tmp_path / "b" / "ncci.sqlite")
    zip_path = write_cms_ptp_zip(tmp_path / "ccipra-v302r0-f1.zip", MEDICARE_ROWS)
    for db in (medicare, both):
        assert run_ncci("import", str(zip_path), "--db", db)[0] == 0
    files = [write_medicaid_ptp(tmp_path, "2024q3", "practitioner", MEDICAID_PTP),
             write_medicaid_mue(tmp_path, "2024q3", "practitioner", [("76000", "1", "Clinical: Data")])]
    code, _out, err = run_ncci("import", *map(str, files), "--db", both)
    assert code == 0, err
    return medicare, both


@pytest.mark.parametrize("cov, program, source", [
    (coverage("c"), MEDICAID, "Coverage/c.type"),  # SOPT 2 Medicaid (US Core Coverage.type)
    (coverage("c", "21"), MEDICAID, "Coverage/c.type"),  # SOPT 21 Medicaid managed care
    (coverage("c", "1"), MEDICARE, "Coverage/c.type"),
    (coverage("c", "MCAID", "http://example.org/plan-type"), MEDICAID, "Coverage/c.type"),
    (coverage("c", None, payor=[{"display": "State Medicaid Agency"}]), MEDICAID, "Coverage/c.payor"),
    (coverage("c", "81"), None, ""),  # SOPT 81: self-pay, says nothing
])
def test_the_program_of_the_focal_coverage(cov, program, source):
    case = case_from_claim(claim("33289", "76000", insurance=[insured(cov["id"])]), [cov], starter())
    assert (case.program, case.program_source) == (program, source)


def test_focal_coverage_payor_organization_and_display():
    medicaid, medicare = coverage("mcd"), coverage("mcr", "1")
    both = [insured("mcr", focal=False, seq=1), insured("mcd", focal=True, seq=2)]
    assert case_from_claim(claim("76000", insurance=both), [medicaid, medicare], starter()).program == MEDICAID
    org = {"resourceType": "Organization", "id": "payer", "name": "Ohio Department of Medicaid"}
    case = case_from_claim(claim("76000", insurance=[insured("x")]), [coverage("x", None), org], starter())
    assert (case.program, case.program_source) == (MEDICAID, "Coverage/x.payor")
    display = [{"sequence": 1, "focal": True, "coverage": {"display": "Medicare Part B"}}]
    case = case_from_claim(claim("76000", insurance=display), [], starter())
    assert (case.program, case.program_source) == (MEDICARE, "Claim.insurance[0].coverage.display")
    assert case_from_claim(claim("76000"), [], starter()).program is None
    with pytest.raises(InvalidResource) as err:
        case_from_claim(claim("76000", insurance=[{"sequence": 1, "focal": True, "coverage": {"display": 5}}]),
                        [], starter())
    assert err.value.path == "Claim.insurance[0].coverage.display"


def test_a_medicaid_claim_gets_the_medicaid_edits_and_cites_them(stores):
    _medicare, both = stores
    ref = open_reference(both)
    cov = coverage("c")
    _case, findings = review(claim("33289", "76000", insurance=[insured("c")]), [cov], ref)
    (f,) = [f for f in findings if f.code in F.REMOVAL_CODES]
    assert f.code == F.PTP_MODIFIER_ALLOWED  # Medicaid: indicator 1 (Medicare's is 0)
    (ptp,) = [c for c in f.citations if c.kind == "ncci-ptp"]
    assert ptp.text.startswith("CMS Medicaid NCCI PTP release 2024Q3 practitioner")
    for g in findings:  # every finding cites the program and the releases used
        (prog,) = [c for c in g.citations if c.kind == F.PROGRAM_CITATION]
        details = dict(prog.details)
        assert (details["program"], details["ptp_release"], details["mue_release"]) == (MEDICAID, "2024Q3", "2024Q3")
        assert details["chosen_by"] == "Coverage/c.type" and "NCCI program: Medicaid" in prog.text
    assert F.NCCI_NOT_APPLIED not in {g.code for g in findings}
    # the same claim as a Medicare claim: Medicare's indicator-0 edit
    _case, findings = review(claim("33289", "76000", insurance=[insured("c")]), [coverage("c", "1")], ref)
    assert F.PTP_BUNDLED in {g.code for g in findings}
    (prog,) = {c for g in findings for c in g.citations if c.kind == F.PROGRAM_CITATION}
    assert dict(prog.details)["program"] == MEDICARE and dict(prog.details)["ptp_release"] == "2024Q3"
    # a Medicaid MUE (claim line edit, MAI 1): 2 units of 76000 on one line over its 1
    _case, findings = review(claim("76000", units=2, insurance=[insured("c")]), [cov], ref)
    (mue,) = [c for g in findings if g.code == F.MUE_EXCEEDED for c in g.citations if c.kind == "ncci-mue"]
    assert "Medicaid NCCI MUE release 2024Q3" in mue.text and "per line" in mue.text


@pytest.mark.parametrize("which", ["store", "starter"])
def test_a_medicaid_claim_without_a_medicaid_release_says_so_and_uses_no_medicare_edit(stores, which):
    ref = open_reference(stores[0]) if which == "store" else starter()
    _case, findings = review(claim("33289", "76000", insurance=[insured("c")]), [coverage("c")], ref)
    codes = {f.code for f in findings}
    assert not codes & {F.PTP_BUNDLED, F.PTP_MODIFIER_ALLOWED, F.MODIFIER_MISUSE}  # Medicare's 0 not used
    (note,) = [f for f in findings if f.code == F.NCCI_NOT_APPLIED]
    assert note.severity == "info" and note.fixes == ()
    assert "Medicaid NCCI PTP edits and MUEs not checked" in note.summary and "Coverage/c.type" in note.reason
    for f in findings:
        (prog,) = [c for c in f.citations if c.kind == F.PROGRAM_CITATION]
        assert "no Medicaid NCCI PTP release imported (not applied)" in prog.text
    assert not [c for f in findings for c in f.citations if c.kind in ("ncci-ptp", "ncci-mue")]
    off = review(claim("33289", "76000", insurance=[insured("c")]), [coverage("c")], ref,
                 {"fluoro-cds.configuration": {"ncci-not-applied": False}})[1]
    assert F.NCCI_NOT_APPLIED not in {f.code for f in off}


def test_the_program_option_decides_when_the_claim_does_not(stores):
    ref = open_reference(stores[1])
    config = {"fluoro-cds.configuration": {"program": "medicaid"}}
    _case, findings = review(claim("33289", "76000"), [], ref, config)
    assert F.PTP_MODIFIER_ALLOWED in {f.code for f in findings}
    (prog,) = {c for f in findings for c in f.citations if c.kind == F.PROGRAM_CITATION}
    assert dict(prog.details)["chosen_by"] == "configuration"
    # a claim whose coverage names Medicare stays Medicare's whatever the option
    _case, findings = review(claim("33289", "76000", insurance=[insured("c")]), [coverage("c", "1")], ref, config)
    assert F.PTP_BUNDLED in {f.code for f in findings}
    with pytest.raises(ConfigError):
        resolve({"fluoro-cds.configuration": {"program": "tricare"}})


def test_batch_uses_the_same_program_choice(stores, tmp_path):
    _medicare, both = stores
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": claim("33289", "76000", insurance=[insured("c")])}, {"resource": coverage("c")}]}
    src = tmp_path / "claims.ndjson"
    other = dict(claim("33289", "76000"), id="prog-claim-2")  # another claim (a repeated id is reported as such)
    src.write_bytes(orjson.dumps(bundle) + b"\n" + orjson.dumps(other) + b"\n")
    rows = {}
    for name, db in (("medicare-only", _medicare), ("both", both)):
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLUORO_CDS_DB": db}
        proc = subprocess.run([sys.executable, "-m", "service.cli", "batch", str(src)], capture_output=True,
                              text=True, env=env, timeout=120, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        rows[name] = [json.loads(line) for line in proc.stdout.splitlines()]
    codes = {k: [{f["code"] for f in r["findings"]} for r in v] for k, v in rows.items()}
    assert F.NCCI_NOT_APPLIED in codes["medicare-only"][0] and F.PTP_BUNDLED not in codes["medicare-only"][0]
    assert F.PTP_MODIFIER_ALLOWED in codes["both"][0]
    assert F.PTP_BUNDLED in codes["both"][1] and F.PTP_BUNDLED in codes["medicare-only"][1]  # no coverage: Medicare
    cited = [c for f in rows["both"][0]["findings"] for c in f["citations"] if c["kind"] == F.PROGRAM_CITATION]
    assert cited and all(c["details"]["program"] == MEDICAID for c in cited)


def test_the_service_card_says_a_medicaid_claim_was_not_checked(client):
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": claim("33289", "76000", insurance=[insured("c")])}, {"resource": coverage("c")}]}
    body = {"hook": "org.fluorocds.claim-review", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {"patientId": "p", "claim": bundle}}
    resp = client.post("/cds-services/fluoroscopy-claim-review", data=orjson.dumps(body),
                       content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    cards = resp.get_json()["cards"]
    topics = [c["source"]["topic"]["code"] for c in cards]
    assert F.NCCI_NOT_APPLIED in topics and "ptp-bundled" not in topics
    for card in cards:
        assert "NCCI program: Medicaid" in card["detail"]


def test_a_medicaid_ptp_release_without_its_mue_table_says_only_the_mues_were_not_checked(tmp_path):
    db = str(tmp_path / "ncci.sqlite")
    code, _out, err = run_ncci("import", str(write_medicaid_ptp(tmp_path, "2024q3", "practitioner", MEDICAID_PTP)),
                               "--db", db)
    assert code == 0, err
    ref = open_reference(db)
    _case, findings = review(claim("33289", "76000", insurance=[insured("c")]), [coverage("c")], ref)
    assert F.PTP_MODIFIER_ALLOWED in {f.code for f in findings}  # the Medicaid PTP edit applies
    (note,) = [f for f in findings if f.code == F.NCCI_NOT_APPLIED]
    assert note.summary.startswith("Medicaid NCCI MUEs not checked") and "PTP" not in note.summary
    (prog,) = {c for f in findings for c in f.citations if c.kind == F.PROGRAM_CITATION}
    assert dict(prog.details)["ptp_release"] == "2024Q3" and dict(prog.details)["mue_release"] == ""
    assert "no Medicaid NCCI MUE release imported (not applied)" in prog.text

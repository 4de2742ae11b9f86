"""Hand-made FHIR R4 Claims, Cases and Findings for the card / action unit tests."""
from __future__ import annotations

import copy
from datetime import date

from fhir.resources.R4B.claim import Claim

from hooks.findings import Citation, Finding, Fix
from hooks.model import Case, Evidence, Line, Setting

CPT = "http://www.ama-assn.org/go/cpt"
POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"


def claim_item(seq: int, code: str, *, modifiers=(), units=1, dx=(1,), pos="22",
               price: float | None = None) -> dict:
    item = {"sequence": seq, "careTeamSequence": [1], "diagnosisSequence": list(dx),
            "productOrService": {"coding": [{"system": CPT, "code": code}]},
            "servicedDate": "2024-08-14",
            "locationCodeableConcept": {"coding": [{"system": POS, "code": pos}]},
            "quantity": {"value": units}}
    if modifiers:
        item["modifier"] = [{"coding": [{"system": CPT, "code": m}]} for m in modifiers]
    if price is not None:
        item["unitPrice"] = {"value": price, "currency": "USD"}
        item["net"] = {"value": price * units, "currency": "USD"}
    return item


def make_claim(*items: dict, total: bool = False) -> dict:
    claim = {
        "resourceType": "Claim", "id": "claim-1", "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type",
                             "code": "professional"}]},
        "use": "claim", "patient": {"reference": "Patient/pat-1"}, "created": "2024-08-15",
        "provider": {"reference": "Practitioner/prac-1"},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority",
                                 "code": "normal"}]},
        "careTeam": [{"sequence": 1, "provider": {"reference": "Practitioner/prac-1"}}],
        "diagnosis": [
            {"sequence": 1, "diagnosisCodeableConcept": {"coding": [
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "M17.11"}]}},
            {"sequence": 2, "diagnosisCodeableConcept": {"coding": [
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "S82.101A"}]}},
        ],
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/cov-1"}}],
        "item": [copy.deepcopy(i) for i in items],
    }
    if total:
        claim["total"] = {"value": sum(i.get("net", {}).get("value", 0) for i in items),
                          "currency": "USD"}
    return claim


def validate_claim(claim: dict) -> Claim:
    """Parse with fhir.resources R4B (raises on an invalid Claim)."""
    return Claim.model_validate(claim)


def claim_case(claim: dict, *, facility: bool = True, pos: str = "22") -> Case:
    lines = tuple(
        Line(key=f"Claim.item[sequence={it['sequence']}]",
             code=it["productOrService"]["coding"][0]["code"],
             modifiers=tuple(c["code"] for m in it.get("modifier", []) for c in m["coding"]),
             units=it["quantity"]["value"], service_date=date(2024, 8, 14),
             kind="claim-item", sequence=it["sequence"])
        for it in claim["item"])
    return Case(kind="claim", setting=Setting(facility=facility, ncci_setting="practitioner", pos=pos),
                lines=lines, evidence=Evidence(), default_date=date(2024, 8, 14), claim=claim)


def line_key(seq: int) -> str:
    return f"Claim.item[sequence={seq}]"


PTP_CITATION = Citation(
    kind="ncci-ptp", text="NCCI PTP practitioner starter-2024Q3: 29881 / 76000, modifier indicator 1",
    release="starter-2024Q3", starter=True,
    details=(("column1", "29881"), ("column2", "76000"), ("modifier_indicator", "1"),
             ("rationale", "Standards of medical/surgical practice")))


def finding(code: str, *, lines=("Claim.item[sequence=2]",), fixes=(), priority=50,
            severity="warning", summary=None, missing=(), citations=(PTP_CITATION,),
            payment=None) -> Finding:
    return Finding(code=code, severity=severity, summary=summary or f"Review 76000 ({code})",
                   reason=f"Because of {code}.", lines=tuple(lines), citations=tuple(citations),
                   fixes=tuple(fixes), missing=tuple(missing), payment=payment, priority=priority)


def remove_fix(line="Claim.item[sequence=2]", **kw) -> Fix:
    return Fix(action="remove-line", line=line, label=kw.pop("label", "Remove 76000"), **kw)

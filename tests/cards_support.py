"""Hand-made FHIR R4 Claims, Cases and Findings for the card / action unit tests."""
from __future__ import annotations

import copy
from datetime import date

from fhir.resources.R4B.claim import Claim

from hooks.findings import KINDS, Citation, Finding, Fix
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


def finding(code: str, *, lines=("Claim.item[sequence=2]",), fixes=(),
            severity="warning", summary=None, missing=(), citations=(PTP_CITATION,),
            payment=None, override_reasons=None) -> Finding:
    if override_reasons is None:
        override_reasons = KINDS[code].override_reasons  # as the engine fills them
    return Finding(code=code, severity=severity, summary=summary or f"Review 76000 ({code})",
                   reason=f"Because of {code}.", lines=tuple(lines), citations=tuple(citations),
                   fixes=tuple(fixes), missing=tuple(missing), payment=payment,
                   override_reasons=tuple(override_reasons))


def remove_fix(line="Claim.item[sequence=2]", **kw) -> Fix:
    return Fix(action="remove-line", line=line, label=kw.pop("label", "Remove 76000"), **kw)


# --------------------------------------------------------------------------------------------
# End-to-end helpers: prefetch built from a service's templates, applying suggestion actions
# --------------------------------------------------------------------------------------------
import re  # noqa: E402

BYPASS_MODIFIERS = {"59", "XS", "XU", "XE", "XP"}
_TOKEN = re.compile(r"\{\{\s*context\.([A-Za-z]+)\s*\}\}")


def _refers_to(resource: dict, target: str) -> bool:
    """True when `resource`'s encounter (or a Claim item's encounter) is `target`."""
    refs = []
    enc = resource.get("encounter")
    if isinstance(enc, dict):
        refs.append(enc.get("reference"))
    for item in resource.get("item") or []:
        refs += [e.get("reference") for e in item.get("encounter") or []]
    return target in refs


def resolve_template(template: str, context: dict, resources: list[dict]) -> dict | None:
    """What a CDS client would prefetch for `template`, computed from the scenario resources.

    Understands the template shapes the fluoro-cds services declare: Type/{{id}},
    Type?encounter=[Encounter/]{{id}}[&patient=...] and Encounter?_id={{id}}[&patient=...]&_include=Encounter:location.
    """
    url = _TOKEN.sub(lambda m: str(context.get(m.group(1), "")), template)
    by_key = {f"{r['resourceType']}/{r.get('id')}": r for r in resources}
    path, _, query = url.partition("?")
    if not query:
        return by_key.get(path)
    params = dict(p.split("=", 1) for p in query.split("&"))
    if "encounter" in params:  # typed (Encounter/id) or bare; patient= is implied by it here
        enc = params["encounter"].removeprefix("Encounter/")
        found = [r for r in resources if r["resourceType"] == path
                 and _refers_to(r, f"Encounter/{enc}")]
    elif path == "Encounter" and "_id" in params:
        enc = by_key.get(f"Encounter/{params['_id']}")
        found = [enc] if enc else []
        if enc and params.get("_include") == "Encounter:location":
            found += [by_key[loc["location"]["reference"]] for loc in enc.get("location", [])
                      if loc["location"]["reference"] in by_key]
    else:
        raise ValueError(f"template shape not understood: {template}")
    return {"resourceType": "Bundle", "type": "searchset", "total": len(found),
            "entry": [{"resource": r} for r in found]}


def full_prefetch(s, templates: dict[str, str]) -> dict:
    """The scenario's prefetch plus every key of `templates` it lacks (as a client would send)."""
    out = dict(s.prefetch or {})
    for key, template in templates.items():
        if key not in out:
            out[key] = resolve_template(template, s.context, s.resources)
    return out


def apply_actions(state: dict[str, dict], actions: list[dict]) -> dict[str, dict]:
    """Apply CDS Hooks actions to a "Type/id" -> resource map, as a CDS client would."""
    out = dict(state)
    for a in actions:
        if a["type"] == "delete":
            assert a["resourceId"] in out, f"delete of unknown {a['resourceId']}"
            del out[a["resourceId"]]
        elif a["type"] == "create":
            res = a["resource"]
            out[f"{res['resourceType']}/{res['id']}"] = res
        elif a["type"] == "update":
            res = a["resource"]
            key = f"{res['resourceType']}/{res['id']}"
            assert key in out, f"update of unknown {key}"
            out[key] = res
    return out


def billed_codes(state: dict[str, dict]) -> list[str]:
    """Codes still ordered (draft ServiceRequest / Procedure) or billed (Claim items)."""
    codes = []
    for res in state.values():
        if res["resourceType"] == "Claim":
            codes += [c["code"] for it in res.get("item", [])
                      for c in it["productOrService"].get("coding", [])]
        else:
            codes += [c["code"] for c in (res.get("code") or {}).get("coding", [])]
    return codes


def claim_items_with(state: dict[str, dict], code: str) -> list[dict]:
    return [it for res in state.values() if res["resourceType"] == "Claim"
            for it in res.get("item", [])
            if any(c["code"] == code for c in it["productOrService"].get("coding", []))]


def modifiers_of(item: dict) -> set[str]:
    return {c["code"] for m in item.get("modifier", []) for c in m.get("coding", [])}


def strip_volatile(value):
    """A response without uuids and server metadata (meta), for comparing two runs."""
    if isinstance(value, dict):
        return {k: strip_volatile(v) for k, v in value.items() if k not in ("uuid", "meta")}
    if isinstance(value, list):
        return [strip_volatile(v) for v in value]
    return value

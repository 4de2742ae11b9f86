"""FHIR R4 resources that record the form's entry, in the shapes the rules read (docs/rules.md
"Evidence" and "Documentation about the fluoroscopy"; hooks/extract/evidence.py).

* fluoroscopy time: an Observation coded DICOM DCM 113730 (Total Fluoro Time), valueQuantity in
  UCUM ``min``, ``partOf`` the 76000 Procedure, ``encounter`` its encounter;
* dose: an Observation coded DCM 113722 (Dose Area Product Total, Gy.cm2 / mGy.cm2) or 113725
  (Dose (RP) Total: the air kerma, mGy), the same links;
* indication and body site: the Procedure itself, updated (``reasonReference`` one of the
  encounter's diagnoses, or ``reasonCode`` ICD-10-CM; ``bodySite`` SNOMED CT or text);
* findings and signed interpretation: a DiagnosticReport coded CPT 76000 (a fluoroscopy report)
  with ``conclusion``, status ``final`` and ``resultsInterpreter`` when signed, named by the
  Procedure's ``report``;
* images retained: an ImagingStudy of modality DCM RF with ``procedureReference`` the Procedure.

:func:`transaction` puts them in one transaction Bundle (new resources by ``urn:uuid``, the
Procedure by PUT with ``If-Match`` its version); :func:`write_steps` gives the same writes one by
one, in an order that lets each reference the ones before, for servers without transactions.
"""
from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass

from hooks.extract.codes import CPT_SYSTEMS, DCM_SYSTEMS
from hooks.extract.evidence import FLUORO_TIME

from .form import DOSE_UNITS, ICD10CM, SNOMED, Entry

DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
CPT = "http://www.ama-assn.org/go/cpt"
assert DCM in DCM_SYSTEMS and CPT in CPT_SYSTEMS  # the systems the rules read


@dataclass(frozen=True)
class Write:
    """One resource to write: POST (new, `fullUrl` a urn:uuid) or PUT (the Procedure)."""

    method: str  # "POST" | "PUT"
    url: str  # "Observation" | "Procedure/p1"
    resource: dict
    full_url: str | None = None  # urn:uuid:... of a new resource
    if_match: str | None = None  # W/"<versionId>" of the Procedure read


def _ref(key: str) -> dict:
    return {"reference": key}


def _when(procedure: dict) -> dict:
    """The Procedure's time, as an Observation's effective[x]."""
    if isinstance(procedure.get("performedDateTime"), str):
        return {"effectiveDateTime": procedure["performedDateTime"]}
    period = procedure.get("performedPeriod")
    if isinstance(period, dict) and isinstance(period.get("start"), str):
        return {"effectivePeriod": {k: v for k, v in period.items() if k in ("start", "end")}}
    return {}


def writes(entry: Entry, procedure: dict, *, patient: str, encounter: str | None) -> list[Write]:
    """The writes that record `entry` for the 76000 `procedure` (a resource as read)."""
    proc_key = f"Procedure/{procedure['id']}"
    links: dict = {"subject": _ref(patient)}
    if encounter:
        links["encounter"] = _ref(encounter)
    out: list[Write] = []

    def new(rtype: str, resource: dict) -> str:
        full = f"urn:uuid:{uuid.uuid4()}"
        out.append(Write("POST", rtype, {"resourceType": rtype, **resource}, full))
        return full

    if entry.minutes is not None:
        new("Observation", {"status": "final", "category": [_imaging_category()],
                            "code": {"coding": [{"system": DCM, "code": FLUORO_TIME,
                                                 "display": "Total Fluoro Time"}]},
                            **links, "partOf": [_ref(proc_key)], **_when(procedure),
                            "valueQuantity": {"value": entry.minutes, "unit": "min", "system": UCUM,
                                              "code": "min"}})
    if entry.dose is not None:
        quantity, value, unit = entry.dose
        code, display, _ = DOSE_UNITS[quantity][unit]
        new("Observation", {"status": "final", "category": [_imaging_category()],
                            "code": {"coding": [{"system": DCM, "code": code, "display": display}]},
                            **links, "partOf": [_ref(proc_key)], **_when(procedure),
                            "valueQuantity": {"value": value, "unit": unit, "system": UCUM,
                                              "code": unit}})
    report_url = None
    if entry.findings is not None:
        report: dict = {"status": "final" if entry.interpreter else "preliminary",
                        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                                                  "code": "RAD", "display": "Radiology"}]}],
                        "code": {"coding": [{"system": CPT, "code": "76000",
                                             "display": "Fluoroscopy (separate procedure), up to 1 hour"}]},
                        **links, **_when(procedure), "conclusion": entry.findings}
        if entry.interpreter:
            report["resultsInterpreter"] = [_ref(entry.interpreter)]
        report_url = new("DiagnosticReport", report)
    if entry.images is not None:
        study: dict = {"status": "available", **links, "procedureReference": _ref(proc_key),
                       "modality": [{"system": DCM, "code": "RF", "display": "Radio Fluoroscopy"}],
                       "description": "Fluoroscopy images retained"}
        start = _when(procedure).get("effectiveDateTime")
        if start:
            study["started"] = start
        if entry.images:
            study["numberOfInstances"] = entry.images
        new("ImagingStudy", study)
    updated = copy.deepcopy(procedure)
    updated.pop("meta", None)
    changed = False
    if entry.condition:
        updated.setdefault("reasonReference", []).append(_ref(entry.condition))
        changed = True
    if entry.reason:
        code, text = entry.reason
        updated.setdefault("reasonCode", []).append(
            {"coding": [{"system": ICD10CM, "code": code, "display": text}], "text": text})
        changed = True
    if entry.site:
        code, text = entry.site
        concept: dict = {"text": text}
        if code:
            concept["coding"] = [{"system": SNOMED, "code": code, "display": text}]
        updated.setdefault("bodySite", []).append(concept)
        changed = True
    if report_url:
        updated.setdefault("report", []).append({"reference": report_url})
        changed = True
    if changed:
        version = (procedure.get("meta") or {}).get("versionId")
        out.append(Write("PUT", proc_key, updated,
                         if_match=f'W/"{version}"' if isinstance(version, str) else None))
    return out


def _imaging_category() -> dict:
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "imaging", "display": "Imaging"}]}


def transaction(steps: list[Write]) -> dict:
    """One FHIR R4 transaction Bundle of `steps` (all or nothing at the server)."""
    entries = []
    for w in steps:
        request: dict = {"method": w.method, "url": w.url}
        if w.if_match:
            request["ifMatch"] = w.if_match
        entry: dict = {"resource": w.resource, "request": request}
        if w.full_url:
            entry["fullUrl"] = w.full_url
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def replace_reference(resource: dict, old: str, new: str) -> dict:
    """`resource` with every Reference.reference `old` replaced by `new` (a server-assigned
    "Type/id" for the urn:uuid of a resource written before it, when writing one at a time)."""
    def walk(value):
        if isinstance(value, dict):
            return {k: (new if k == "reference" and v == old else walk(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    return walk(resource)

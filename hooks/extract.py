"""FHIR R4 -> the normalized model (:mod:`hooks.model`): lines, setting and documentation evidence.

Public API (the services code against these names):

- :func:`case_from_claim` (claim-review), :func:`case_from_orders` (order-sign),
  :func:`case_from_encounter` (encounter-discharge);
- :func:`split_claim_bundle`: a claim-review ``context.claim`` Bundle -> (Claim, companions);
- :func:`claim_references`, :func:`encounter_searches`, :func:`follow_references`: what the service
  fetches from the FHIR server when the data is not in the request.

Only the elements listed in ``docs/rules.md`` are read, and each is validated as it is read
(:mod:`hooks.fhir_read`); an invalid element raises :class:`hooks.context.InvalidResource` with its
FHIR path. ``full_validation=True`` additionally validates every resource with fhir.resources R4B.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, NamedTuple, Sequence

from nccidata.api import OUTPATIENT_HOSPITAL, PRACTITIONER, ReferenceData

from . import fhir_read as fr
from .context import InvalidResource
from .model import FLUORO, Case, Evidence, Line, Setting

# --- code systems accepted (DESIGN.md section 4) ---------------------------------------------
CPT_SYSTEMS = frozenset({"http://www.ama-assn.org/go/cpt", "https://www.ama-assn.org/go/cpt",
                         "urn:oid:2.16.840.1.113883.6.12"})
HCPCS_SYSTEMS = frozenset({"http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                           "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
                           "urn:oid:2.16.840.1.113883.6.285"})
PROCEDURE_SYSTEMS = CPT_SYSTEMS | HCPCS_SYSTEMS
POS_SYSTEMS = frozenset({
    "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
    "http://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
    "urn:oid:2.16.840.1.113883.6.50"})
DCM_SYSTEMS = frozenset({"http://dicom.nema.org/resources/ontology/DCM",
                         "https://dicom.nema.org/resources/ontology/DCM", "urn:oid:1.2.840.10008.2.16.4"})
ACT_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
CLAIM_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/claim-type"

FLUORO_TIME = "113730"  # DCM Total Fluoro Time
DOSE_CODES = frozenset({"113722", "113726", "113725"})  # DAP Total, Fluoro DAP Total, Dose (RP) Total

# Encounter.class codes (v3 ActCode) that mean a facility setting; AMB alone is not enough.
FACILITY_ENCOUNTER_CLASSES = frozenset({"IMP", "EMER", "OBSENC", "ACUTE", "NONAC", "SS"})
# Location.type codes (v3 RoleCode, ServiceDeliveryLocationRoleType) that mean a hospital setting.
FACILITY_ROLE_CODES = frozenset({"HOSP", "GACH", "CHR", "MHSP", "PSYCHF", "RH", "HU", "ER", "ETU",
                                 "ICU", "CCU", "PEDICU", "PEDNICU", "HRAD", "HUSCS"})
ASC_CODE = "ASC"  # accepted in any system for an ambulatory surgical center Location

_PROC_CODE_RE = re.compile(r"[0-9]{4}[0-9A-Z]|[A-Z][0-9]{4}")
_MODIFIER_RE = re.compile(r"[0-9A-Z]{2}")
_INACTIVE = frozenset({"entered-in-error", "cancelled", "not-done", "revoked"})
_SIGNED_REPORT = frozenset({"final", "amended", "corrected", "appended"})
_TIME_UNITS = {"s": 1 / 60, "sec": 1 / 60, "second": 1 / 60, "seconds": 1 / 60,
               "min": 1.0, "minute": 1.0, "minutes": 1.0, "h": 60.0, "hr": 60.0, "hour": 60.0,
               "hours": 60.0}
_CLINICAL_TYPES = ("Encounter", "Procedure", "Observation", "DiagnosticReport", "ImagingStudy")


# --- code helpers ------------------------------------------------------------------------------
def procedure_code(concept, path: str, key: str | None = None) -> str | None:
    """The CPT/HCPCS code of a CodeableConcept: a coding in a CPT or HCPCS system, else a
    system-less coding that looks like a CPT/HCPCS code (five characters)."""
    fallback = None
    for system, code in fr.codings(concept, path, key):
        code = code.upper()
        if system in PROCEDURE_SYSTEMS:
            return code
        if system is None and fallback is None and _PROC_CODE_RE.fullmatch(code):
            fallback = code
    return fallback


def _modifier_codes(node, path: str, key: str | None = None) -> tuple[str, ...]:
    if node is None:
        return ()
    out = []
    for p, cc in fr.items(node, path, key):
        for system, code in fr.codings(cc, p):
            code = code.upper()
            if _MODIFIER_RE.fullmatch(code) and (system is None or system in PROCEDURE_SYSTEMS):
                out.append(code)
                break
    return tuple(out)


def _concept_keys(node, path: str, key: str | None = None) -> tuple[str, ...]:
    """Identity keys of a CodeableConcept ("system|code", or "text:..." when uncoded)."""
    if node is None:
        return ()
    keys = [f"{s or ''}|{c}" for s, c in fr.codings(node, path, key)]
    if not keys:
        text = fr.concept_text(node, path, key)
        if text and text.strip():
            keys.append("text:" + text.strip().lower())
    return tuple(keys)


def _concepts_keys(node, path: str, key: str | None = None) -> tuple[str, ...]:
    if node is None:
        return ()
    out: list[str] = []
    for p, cc in fr.items(node, path, key):
        out.extend(_concept_keys(cc, p))
    return tuple(out)


def _status(resource: dict, path: str) -> str | None:
    return fr.string(resource.get("status"), path, "status")


# --- companions --------------------------------------------------------------------------------
class _Proc(NamedTuple):
    """An active, coded Procedure of the record, parsed once (a NamedTuple: built per request)."""

    path: str
    resource: dict
    code: str
    day: date | None
    sites: tuple[str, ...]
    reasons: tuple[str, ...]
    reports: tuple[str, ...]
    line: Line | None  # as a line of its own (None without id)


@dataclass
class _Index:
    by_key: dict[str, dict] = field(default_factory=dict)
    by_type: dict[str, list[tuple[str, dict]]] = field(default_factory=dict)
    _procs: list[_Proc] | None = None

    def of(self, rtype: str) -> list[tuple[str, dict]]:
        return self.by_type.get(rtype, [])

    def get(self, key: str | None) -> dict | None:
        return self.by_key.get(key) if key else None

    def procedures(self) -> list[_Proc]:
        if self._procs is None:
            self._procs = [_parse_procedure(p, proc) for p, proc in _active(self.of("Procedure"))]
            self._procs = [pr for pr in self._procs if pr is not None]
        return self._procs


def _index(companions: Sequence[dict], full_validation: bool) -> _Index:
    idx = _Index()
    if companions is None:
        return idx
    if not isinstance(companions, (list, tuple)):
        raise fr.invalid("companions", "must be a list of resources")
    for i, res in enumerate(companions):
        rtype = fr.resource_type(res, f"companions[{i}]")
        if full_validation:
            fr.validate_full(res)
        rid = fr.string(res.get("id"), rtype, "id")
        path = f"{rtype}/{rid}" if rid else f"{rtype}[{i}]"
        if rid:
            idx.by_key.setdefault(f"{rtype}/{rid}", res)
        idx.by_type.setdefault(rtype, []).append((path, res))
    return idx


def _active(pairs: Iterable[tuple[str, dict]]) -> list[tuple[str, dict]]:
    return [(p, r) for p, r in pairs if _status(r, p) not in _INACTIVE]


# --- setting -----------------------------------------------------------------------------------
def _pos_of(concept, path: str, key: str | None = None) -> str | None:
    for system, code in fr.codings(concept, path, key):
        if system in POS_SYSTEMS:
            return code.strip()
    return None


def _location_facility(loc: dict, path: str, reference: ReferenceData) -> str | None:
    """Why this Location is a facility, or None."""
    name = fr.string(loc.get("name"), path, "name") or path
    for p, cc in fr.items(loc.get("type"), path, "type"):
        for system, code in fr.codings(cc, p):
            if system == ROLE_CODE_SYSTEM and code in FACILITY_ROLE_CODES:
                return f"Location {name}: type {code} (v3 RoleCode)"
            if system in POS_SYSTEMS:
                place = reference.place_of_service(code)
                if place is not None and place.facility:
                    return f"Location {name}: type POS {place.code} ({place.name})"
            if code.upper() == ASC_CODE:
                return f"Location {name}: type ASC"
    return None


def _encounter_facility(enc: dict, path: str) -> str | None:
    cls = fr.obj(enc.get("class"), path, "class")
    if cls is None:
        return None
    code = fr.string(cls.get("code"), f"{path}.class", "code")
    fr.string(cls.get("system"), f"{path}.class", "system")
    if code in FACILITY_ENCOUNTER_CLASSES:
        return f"Encounter.class {code}"
    return None


def _encounter_locations(enc: dict, path: str) -> list[str]:
    out = []
    for p, entry in fr.objects(enc.get("location"), path, "location"):
        r = fr.reference(entry.get("location"), p, "location")
        if r:
            out.append(r)
    return out


def _setting(pos_codes: Sequence[str], location_refs: Sequence[str], encounters: Sequence[tuple[str, dict]],
             index: _Index, reference: ReferenceData, ncci_setting: str) -> Setting:
    """POS first (it is what a professional claim reports); otherwise any facility signal of the
    Locations (Claim.facility, item.locationReference, Encounter.location) or Encounter.class."""
    for code in pos_codes:
        place = reference.place_of_service(code)
        if place is not None:
            return Setting(facility=place.facility, ncci_setting=ncci_setting, pos=place.code,
                           reasons=(f"POS {place.code} ({place.name})",))
    reasons: list[str] = []
    refs = list(location_refs)
    for p, enc in encounters:
        refs.extend(_encounter_locations(enc, p))
        why = _encounter_facility(enc, p)
        if why:
            reasons.append(why)
    for r in dict.fromkeys(refs):
        loc = index.get(r)
        if loc is not None and loc.get("resourceType") == "Location":
            why = _location_facility(loc, r, reference)
            if why:
                reasons.append(why)
    return Setting(facility=bool(reasons), ncci_setting=ncci_setting, pos=None, reasons=tuple(reasons))


# --- evidence ----------------------------------------------------------------------------------
def _quantity_minutes(q: dict, path: str) -> float | None:
    value = fr.decimal(q.get("value"), path, "value")
    if value is None:
        return None
    unit = (fr.string(q.get("code"), path, "code") or fr.string(q.get("unit"), path, "unit") or "")
    factor = _TIME_UNITS.get(unit.strip().lower())
    return None if factor is None else value * factor


def _observation_facts(obs: dict, path: str) -> tuple[list[float], bool]:
    """(fluoroscopy minutes found, dose found) in an Observation's code/value and components."""
    minutes: list[float] = []
    dose = False
    parts = [(path, obs)] + list(fr.objects(obs.get("component"), path, "component"))
    for p, part in parts:
        codes = {c for s, c in fr.codings(part.get("code"), p, "code") if s in DCM_SYSTEMS}
        if not codes:
            continue
        q = fr.obj(part.get("valueQuantity"), p, "valueQuantity")
        if q is None:
            continue
        if FLUORO_TIME in codes:
            m = _quantity_minutes(q, f"{p}.valueQuantity")
            if m is not None:
                minutes.append(m)
        if codes & DOSE_CODES and fr.decimal(q.get("value"), f"{p}.valueQuantity.value") is not None:
            dose = True
    return minutes, dose


def _report_facts(rep: dict, path: str) -> tuple[bool, bool, bool]:
    """(findings, signed interpretation, images referenced) of a DiagnosticReport."""
    conclusion = fr.string(rep.get("conclusion"), path, "conclusion")
    findings = bool(conclusion and conclusion.strip()) or bool(_concepts_keys(rep.get("conclusionCode"),
                                                                              path, "conclusionCode"))
    interpreters = [r for p, x in fr.items(rep.get("resultsInterpreter"), path, "resultsInterpreter")
                    if (r := fr.reference(x, p))]
    signed = _status(rep, path) in _SIGNED_REPORT and bool(interpreters)
    studies = [r for p, x in fr.items(rep.get("imagingStudy"), path, "imagingStudy") if (r := fr.reference(x, p))]
    media = [m for _, m in fr.objects(rep.get("media"), path, "media")]
    return findings, signed, bool(studies or media)


def _is_lab(rep: dict, path: str) -> bool:
    for p, cc in fr.items(rep.get("category"), path, "category"):
        for _s, code in fr.codings(cc, p):
            if code.upper() in ("LAB", "laboratory".upper()):
                return True
    return False


def _parse_procedure(p: str, proc: dict) -> _Proc | None:
    code = procedure_code(proc.get("code"), p, "code")
    if not code:
        return None
    reports = tuple(r for rp, x in fr.items(proc.get("report"), p, "report") if (r := fr.reference(x, rp)))
    line = _order_line(proc, p, code) if proc.get("id") is not None else None
    if line is not None:
        return _Proc(p, proc, code, line.service_date, line.body_sites, line.diagnoses, reports, line)
    return _Proc(p, proc, code, _procedure_date(proc, p), _concepts_keys(proc.get("bodySite"), p, "bodySite"),
                 _procedure_reasons(proc, p), reports, None)


def _procedure_date(proc: dict, path: str) -> date | None:
    d = fr.fhir_datetime_date(proc.get("performedDateTime"), path, "performedDateTime")
    return d or fr.period_start(proc.get("performedPeriod"), path, "performedPeriod")


def _procedure_reasons(proc: dict, path: str) -> tuple[str, ...]:
    keys = list(_concepts_keys(proc.get("reasonCode"), path, "reasonCode"))
    for p, r in fr.items(proc.get("reasonReference"), path, "reasonReference"):
        ref = fr.reference(r, p)
        if ref:
            keys.append(ref)
    return tuple(keys)


def _evidence(fluoro_lines: Sequence[Line], index: _Index, fluoro_procs: Sequence[_Proc]) -> Evidence:
    indication = any(line.diagnoses for line in fluoro_lines)
    body_site = any(line.body_sites for line in fluoro_lines)
    report_refs: set[str] = set()
    for proc in fluoro_procs:
        indication = indication or bool(proc.reasons)
        body_site = body_site or bool(proc.sites)
        report_refs.update(proc.reports)
    minutes: list[float] = []
    dose = False
    for p, obs in _active(index.of("Observation")):
        m, d = _observation_facts(obs, p)
        minutes.extend(m)
        dose = dose or d
    findings = signed = images = False
    for p, rep in _active(index.of("DiagnosticReport")):
        key = fr.key_of(rep)
        if key not in report_refs and _is_lab(rep, p):
            continue
        f, s, i = _report_facts(rep, p)
        findings, signed, images = findings or f, signed or s, images or i
    images = images or bool(_active(index.of("ImagingStudy")))
    return Evidence(indication=indication, fluoro_minutes=max(minutes) if minutes else None,
                    radiation_dose=dose, body_site=body_site, findings=findings,
                    images_retained=images, signed_interpretation=signed, separate_procedure=True,
                    distinct_marker=False)


def _distinct_marker(fluoro_lines: Sequence[Line], others: Sequence[Line]) -> bool:
    """A 76000 line carries 59/X{EPSU} and differs in body site or indication from every other line."""
    return any(line.has_distinct_modifier() and all(line.distinct_from(o) for o in others)
               for line in fluoro_lines)


def _with_distinct(case_lines: Sequence[Line], evidence: Evidence, case_date: date | None) -> Evidence:
    fluoro = [ln for ln in case_lines if ln.code == FLUORO]
    others = [ln for ln in case_lines if ln.code != FLUORO]
    marker = _distinct_marker(fluoro, others) if others else any(ln.has_distinct_modifier() for ln in fluoro)
    return Evidence(**{**evidence.__dict__, "distinct_marker": marker})


# --- claims ------------------------------------------------------------------------------------
def split_claim_bundle(value: dict) -> tuple[dict, list[dict]]:
    """``context.claim`` of claim-review: a Claim, or a Bundle whose first entry is the Claim.

    Returns (claim, companions); companions are the other entries' resources.
    """
    rtype = fr.resource_type(value, "context.claim", ("Claim", "Bundle"))
    if rtype == "Claim":
        return value, []
    entries = list(fr.objects(value.get("entry"), "Bundle.entry"))
    if not entries:
        raise fr.invalid("Bundle.entry", "must hold the Claim as its first entry")
    resources = []
    for p, entry in entries:
        resources.append(fr.obj(entry.get("resource"), p, "resource", required=True))
    fr.resource_type(resources[0], "Bundle.entry[0].resource", "Claim")
    for i, res in enumerate(resources[1:], start=1):
        fr.resource_type(res, f"Bundle.entry[{i}].resource")
    return resources[0], resources[1:]


@dataclass
class _ClaimParts:
    lines: list[Line]
    pos_codes: list[str]  # 76000 lines' POS first
    location_refs: list[str]
    encounter_refs: list[str]
    institutional: bool


def _claim_parts(claim: dict, index: _Index) -> _ClaimParts:
    fr.resource_type(claim, "Claim", "Claim")
    fr.string(claim.get("id"), "Claim.id")
    claim_type = [c for _s, c in fr.codings(claim.get("type"), "Claim.type")]
    institutional = "institutional" in claim_type
    diagnoses: dict[int, tuple[str, ...]] = {}
    for p, dx in fr.objects(claim.get("diagnosis"), "Claim.diagnosis"):
        seq = fr.positive_int(dx.get("sequence"), p, "sequence", required=True)
        keys = _concept_keys(dx.get("diagnosisCodeableConcept"), p, "diagnosisCodeableConcept")
        ref = fr.reference(dx.get("diagnosisReference"), p, "diagnosisReference")
        diagnoses[seq] = keys + ((ref,) if ref else ())
    location_refs = []
    facility = fr.reference(claim.get("facility"), "Claim.facility")
    if facility:
        location_refs.append(facility)
    procs = [(pr.code, pr.day, pr.sites, pr.reasons) for pr in index.procedures()]
    lines: list[Line] = []
    fluoro_pos: list[str] = []
    other_pos: list[str] = []
    encounter_refs: list[str] = []
    seen_seq: set[int] = set()
    for i, (p, item) in enumerate(fr.objects(claim.get("item"), "Claim.item")):
        seq = fr.positive_int(item.get("sequence"), p, "sequence", required=True)
        if seq in seen_seq:
            raise fr.invalid(f"{p}.sequence", f"duplicate item sequence {seq}")
        seen_seq.add(seq)
        code = procedure_code(fr.obj(item.get("productOrService"), p, "productOrService", required=True),
                              p, "productOrService")
        modifiers = _modifier_codes(item.get("modifier"), p, "modifier")
        qty = fr.obj(item.get("quantity"), p, "quantity")
        units = 1
        if qty is not None:
            value = fr.decimal(qty.get("value"), f"{p}.quantity.value")
            if value is not None:
                if value < 0 or value > 1e6:
                    raise fr.invalid(f"{p}.quantity.value", f"units out of range: {value!r}")
                units = int(math.ceil(value))
        if item.get("servicedDate") is not None and item.get("servicedPeriod") is not None:
            raise fr.invalid(f"{p}.serviced[x]", "only one of servicedDate and servicedPeriod may be present")
        day = fr.fhir_date(item.get("servicedDate"), p, "servicedDate")
        day = day or fr.period_start(item.get("servicedPeriod"), p, "servicedPeriod")
        pos = _pos_of(item.get("locationCodeableConcept"), p, "locationCodeableConcept")
        loc_ref = fr.reference(item.get("locationReference"), p, "locationReference")
        if loc_ref:
            location_refs.append(loc_ref)
        for ep, e in fr.items(item.get("encounter"), p, "encounter"):
            r = fr.reference(e, ep)
            if r:
                encounter_refs.append(r)
        dx_keys: list[str] = []
        for sp, s in fr.items(item.get("diagnosisSequence"), p, "diagnosisSequence"):
            s = fr.positive_int(s, sp)
            if s not in diagnoses:
                raise fr.invalid(sp, f"refers to no Claim.diagnosis with sequence {s}")
            dx_keys.extend(diagnoses[s])
        sites = list(_concept_keys(item.get("bodySite"), p, "bodySite"))
        for sp, sub in fr.items(item.get("subSite"), p, "subSite"):
            sites.extend(_concept_keys(sub, sp))
        if code:
            # The Procedures of the same code (and date) document this item's site and reason.
            for pcode, pday, psites, preasons in procs:
                if pcode != code or (day and pday and pday != day):
                    continue
                sites.extend(psites)
                dx_keys.extend(preasons)
        if pos:
            (fluoro_pos if code == FLUORO else other_pos).append(pos)
        if not code:
            continue
        lines.append(Line(key=f"Claim.item[{i}]", code=code, modifiers=modifiers, units=units,
                          service_date=day, body_sites=tuple(dict.fromkeys(sites)),
                          diagnoses=tuple(dict.fromkeys(dx_keys)), kind="claim-item", resource=None,
                          sequence=seq))
    return _ClaimParts(lines, fluoro_pos + other_pos, location_refs, encounter_refs, institutional)


def _encounters_for(refs: Sequence[str], index: _Index) -> list[tuple[str, dict]]:
    chosen = [(r, index.get(r)) for r in dict.fromkeys(refs) if index.get(r) is not None]
    chosen = [(r, e) for r, e in chosen if e.get("resourceType") == "Encounter"]
    return chosen or list(index.of("Encounter"))


def _encounter_start(encounters: Sequence[tuple[str, dict]]) -> date | None:
    for p, enc in encounters:
        d = fr.period_start(enc.get("period"), p, "period")
        if d:
            return d
    return None


def _fluoro_procs(index: _Index) -> list[_Proc]:
    return [pr for pr in index.procedures() if pr.code == FLUORO]


def _case_from_claim_parts(kind: str, claim: dict, parts: _ClaimParts, index: _Index,
                           reference: ReferenceData, extra_encounters: Sequence[tuple[str, dict]] = ()) -> Case:
    encounters = list(extra_encounters) or _encounters_for(parts.encounter_refs, index)
    ncci = OUTPATIENT_HOSPITAL if parts.institutional else PRACTITIONER
    setting = _setting(parts.pos_codes, parts.location_refs, encounters, index, reference, ncci)
    fluoro_lines = [ln for ln in parts.lines if ln.code == FLUORO]
    evidence = _evidence(fluoro_lines, index, _fluoro_procs(index))
    dates = [ln.service_date for ln in parts.lines if ln.service_date]
    default_date = dates[0] if dates else _encounter_start(encounters)
    evidence = _with_distinct(parts.lines, evidence, default_date)
    checked = any(index.of(t) for t in _CLINICAL_TYPES)
    return Case(kind=kind, setting=setting, lines=tuple(parts.lines), evidence=evidence,
                default_date=default_date, claim=claim, evidence_checked=checked,
                context_lines=_unbilled_procedures(parts.lines, index))


def _unbilled_procedures(lines: Sequence[Line], index: _Index) -> tuple[Line, ...]:
    """Active Procedures of the record whose code (on their date) is not among the billed lines."""
    billed = {(ln.code, ln.service_date) for ln in lines}
    billed_codes = {ln.code for ln in lines}
    out = []
    for pr in index.procedures():
        line = pr.line
        if line is None or line.code == FLUORO:
            continue
        if (line.code, line.service_date) in billed or (line.service_date is None and line.code in billed_codes):
            continue
        out.append(line)
    return tuple(out)


def case_from_claim(claim: dict, companions: Sequence[dict], reference: ReferenceData, *,
                    full_validation: bool = False) -> Case:
    """claim-review: the Claim's items are the lines; companions (Encounter, Procedures,
    Observations, DiagnosticReports, ImagingStudies, Locations) give setting and evidence.

    Documentation is judged (``evidence_checked``) only when at least one clinical companion
    (Encounter, Procedure, Observation, DiagnosticReport or ImagingStudy) is available: a bare
    Claim documents nothing, and asking for documentation it cannot carry would be noise.
    """
    fr.resource_type(claim, "Claim", "Claim")
    if full_validation:
        fr.validate_full(claim)
    index = _index(companions, full_validation)
    parts = _claim_parts(claim, index)
    return _case_from_claim_parts("claim", claim, parts, index, reference)


# --- orders ------------------------------------------------------------------------------------
def _order_line(res: dict, path: str, code: str | None = None) -> Line | None:
    """`code`: the resource's procedure code when the caller has already read it."""
    rtype = res["resourceType"]
    rid = fr.string(res.get("id"), path, "id", required=True)
    if code is None:
        code = procedure_code(res.get("code"), path, "code")
    if not code:
        return None
    if rtype == "ServiceRequest":
        day = fr.fhir_datetime_date(res.get("occurrenceDateTime"), path, "occurrenceDateTime")
        day = day or fr.period_start(res.get("occurrencePeriod"), path, "occurrencePeriod")
        units = 1
        qty = fr.obj(res.get("quantityQuantity"), path, "quantityQuantity")
        if qty is not None:
            value = fr.decimal(qty.get("value"), f"{path}.quantityQuantity.value")
            if value is not None:
                if value < 0 or value > 1e6:
                    raise fr.invalid(f"{path}.quantityQuantity.value", f"units out of range: {value!r}")
                units = int(math.ceil(value))
        reasons = list(_concepts_keys(res.get("reasonCode"), path, "reasonCode"))
        for p, r in fr.items(res.get("reasonReference"), path, "reasonReference"):
            ref = fr.reference(r, p)
            if ref:
                reasons.append(ref)
        kind = "service-request"
    else:
        day = _procedure_date(res, path)
        units = 1
        reasons = list(_procedure_reasons(res, path))
        kind = "procedure"
    sites = _concepts_keys(res.get("bodySite"), path, "bodySite")
    return Line(key=f"{rtype}/{rid}", code=code, modifiers=(), units=units, service_date=day,
                body_sites=tuple(dict.fromkeys(sites)), diagnoses=tuple(dict.fromkeys(reasons)), kind=kind,
                resource=f"{rtype}/{rid}")


def case_from_orders(draft_orders: dict, companions: Sequence[dict], reference: ReferenceData, *,
                     full_validation: bool = False) -> Case:
    """order-sign: each draft ServiceRequest / Procedure is a line; the encounter's existing
    (active) Procedures are lines too, so a draft 76000 is checked against what was done that day.

    ``evidence_checked`` is False: documentation is not expected before the order is signed, so
    order-sign never yields documentation-missing or duration-exceeded.
    """
    fr.resource_type(draft_orders, "Bundle", "Bundle")
    index = _index(companions, full_validation)
    lines: list[Line] = []
    seen: set[str] = set()
    for p, entry in fr.objects(draft_orders.get("entry"), "Bundle.entry"):
        res = fr.obj(entry.get("resource"), p, "resource", required=True)
        rtype = fr.resource_type(res, f"{p}.resource")
        if rtype not in ("ServiceRequest", "Procedure"):
            continue
        if full_validation:
            fr.validate_full(res)
        line = _order_line(res, f"{p}.resource")
        if line is not None and line.key not in seen:
            seen.add(line.key)
            lines.append(line)
    for pr in index.procedures():
        line = pr.line
        if line is not None and line.key not in seen:
            seen.add(line.key)
            lines.append(line)
    encounters = list(index.of("Encounter"))
    setting = _setting((), (), encounters, index, reference, PRACTITIONER)
    dates = [ln.service_date for ln in lines if ln.service_date]
    default_date = dates[0] if dates else _encounter_start(encounters)
    evidence = _with_distinct(lines, Evidence(), default_date)
    return Case(kind="order", setting=setting, lines=tuple(lines), evidence=evidence,
                default_date=default_date, claim=None, evidence_checked=False)


# --- encounters --------------------------------------------------------------------------------
def case_from_encounter(encounter: dict, companions: Sequence[dict], claim: dict | None,
                        reference: ReferenceData, *, full_validation: bool = False) -> Case:
    """encounter-discharge: with a Claim, its items are the lines (and ``Case.claim`` holds it);
    without one, the encounter's active Procedures are the lines. Companions give the evidence."""
    fr.resource_type(encounter, "Encounter", "Encounter")
    if full_validation:
        fr.validate_full(encounter)
    index = _index(list(companions or ()), full_validation)
    enc_key = fr.key_of(encounter) or "Encounter"
    index.by_key.setdefault(enc_key, encounter)
    if not any(r is encounter for _, r in index.of("Encounter")):
        index.by_type.setdefault("Encounter", []).insert(0, ("Encounter", encounter))
    encounters = [("Encounter", encounter)]
    if claim is not None:
        fr.resource_type(claim, "Claim", "Claim")
        if full_validation:
            fr.validate_full(claim)
        parts = _claim_parts(claim, index)
        return _case_from_claim_parts("encounter", claim, parts, index, reference, encounters)
    lines = [pr.line for pr in index.procedures() if pr.line is not None]
    setting = _setting((), (), encounters, index, reference, PRACTITIONER)
    fluoro_lines = [ln for ln in lines if ln.code == FLUORO]
    evidence = _evidence(fluoro_lines, index, _fluoro_procs(index))
    dates = [ln.service_date for ln in lines if ln.service_date]
    default_date = dates[0] if dates else _encounter_start(encounters)
    evidence = _with_distinct(lines, evidence, default_date)
    return Case(kind="encounter", setting=setting, lines=tuple(lines), evidence=evidence,
                default_date=default_date, claim=None, evidence_checked=True)


# --- what to fetch -----------------------------------------------------------------------------
FETCHABLE_TYPES = frozenset({"Encounter", "Procedure", "Observation", "DiagnosticReport", "ImagingStudy",
                             "Location"})
_LOCAL_REF = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")


def _fetchable(refs: Iterable[str | None]) -> list[str]:
    out: dict[str, None] = {}  # first occurrence order, each once
    for r in refs:
        if r and r not in out and r.split("/", 1)[0] in FETCHABLE_TYPES and _LOCAL_REF.fullmatch(r):
            out[r] = None
    return list(out)


def claim_references(claim: dict) -> list[str]:
    """"Type/id" references of a Claim to fetch when not in the Bundle: item.encounter,
    item.locationReference, Claim.facility, Claim.procedure.procedureReference and
    Claim.supportingInfo.valueReference (types: Encounter, Procedure, Observation, DiagnosticReport,
    ImagingStudy, Location). Absolute URLs are reduced to "Type/id"."""
    fr.resource_type(claim, "Claim", "Claim")
    refs: list[str | None] = [fr.reference(claim.get("facility"), "Claim.facility")]
    for p, item in fr.objects(claim.get("item"), "Claim.item"):
        for ep, e in fr.items(item.get("encounter"), p, "encounter"):
            refs.append(fr.reference(e, ep))
        location = item.get("locationReference")
        if location is not None:
            refs.append(fr.reference(location, p, "locationReference"))
    for p, proc in fr.objects(claim.get("procedure"), "Claim.procedure"):
        refs.append(fr.reference(proc.get("procedureReference"), p, "procedureReference"))
    for p, info in fr.objects(claim.get("supportingInfo"), "Claim.supportingInfo"):
        refs.append(fr.reference(info.get("valueReference"), p, "valueReference"))
    return _fetchable(refs)


def follow_references(resources: Sequence[dict]) -> list[str]:
    """Second-hop references worth reading once the first companions are in: Encounter.location,
    Procedure.report / Procedure.location, DiagnosticReport.imagingStudy."""
    refs: list[str | None] = []
    for i, res in enumerate(resources):
        if not isinstance(res, dict):
            continue
        rtype = res.get("resourceType")
        path = f"{rtype}[{i}]"
        if rtype == "Encounter":
            refs.extend(_encounter_locations(res, path))
        elif rtype == "Procedure":
            refs.append(fr.reference(res.get("location"), path, "location"))
            refs.extend(fr.reference(r, p) for p, r in fr.items(res.get("report"), path, "report"))
        elif rtype == "DiagnosticReport":
            refs.extend(fr.reference(r, p) for p, r in fr.items(res.get("imagingStudy"), path, "imagingStudy"))
    have = {fr.key_of(r) for r in resources if isinstance(r, dict)}
    return [r for r in _fetchable(refs) if r not in have]


def encounter_searches(encounter_id: str) -> list[tuple[str, dict]]:
    """The FHIR searches for an encounter's clinical companions when they were not prefetched."""
    enc = encounter_id if encounter_id.startswith("Encounter/") else f"Encounter/{encounter_id}"
    return [(t, {"encounter": enc}) for t in ("Procedure", "Observation", "DiagnosticReport", "ImagingStudy")]


__all__ = ["case_from_claim", "case_from_orders", "case_from_encounter", "split_claim_bundle",
           "claim_references", "encounter_searches", "follow_references", "procedure_code",
           "InvalidResource"]

"""FHIR R4 -> the normalized model (:mod:`hooks.model`): lines, setting and documentation evidence.

Public API (the services code against these names):

- :func:`case_from_claim` (claim-review), :func:`case_from_orders` (order-sign),
  :func:`case_from_encounter` (encounter-discharge);
- :func:`split_claim_bundle`: a claim-review ``context.claim`` Bundle -> (Claim, companions).

What the services fetch when the data is not in the request is planned in :mod:`hooks.services.gather`.

Only the elements listed in ``docs/rules.md`` are read, and each is validated as it is read
(:mod:`hooks.fhir_read`); an invalid element raises :class:`hooks.context.InvalidResource` with its
FHIR path. ``full_validation=True`` additionally validates every resource with fhir.resources R4B.
"""
from __future__ import annotations

import math
import re
from datetime import date
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from nccidata.api import OUTPATIENT_HOSPITAL, PRACTITIONER, ReferenceData

from . import fhir_read as fr
from .context import InvalidResource
from .model import FLUORO, Case, Evidence, Line, Setting

# --- code systems accepted (docs/contract.md#where-the-facts-live-in-fhir) ---------------------------------------------
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
# Location.type codes (v3 RoleCode, ServiceDeliveryLocationRoleType) that mean a hospital setting:
# hospitals (HOSP, GACH, CHR, MHSP, PSYCHF, RH) and hospital units (HU and its ER, ETU, ICU, CCU,
# PEDICU, PEDNICU, HRAD radiology unit, HUSCS specimen collection site), checked against the
# HL7 v3 RoleCode code system (terminology.hl7.org/CodeSystem/v3-RoleCode).
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
def procedure_code(concept, path: str, key: str | None = None, index: int | None = None) -> str | None:
    """The CPT/HCPCS code of a CodeableConcept: a coding in a CPT or HCPCS system, else a
    system-less coding that looks like a CPT/HCPCS code (five characters)."""
    fallback = None
    for system, code in fr.codings(concept, path, key, index):
        code = code.upper()
        if system in PROCEDURE_SYSTEMS:
            return code
        if system is None and fallback is None and _PROC_CODE_RE.fullmatch(code):
            fallback = code
    return fallback


def _modifier_codes(node, path: str, key: str | None = None) -> tuple[str, ...]:
    """The first modifier-like code (two characters, CPT/HCPCS or no system) of each concept."""
    if node is None:
        return ()
    out = []
    for i, cc in enumerate(fr.elements(node, path, key)):
        for system, code in fr.codings(cc, path, key, i):
            code = code.upper()
            if _MODIFIER_RE.fullmatch(code) and (system is None or system in PROCEDURE_SYSTEMS):
                out.append(code)
                break
    return tuple(out)


def _concept_keys(node, path: str, key: str | None = None, index: int | None = None) -> list[str]:
    """Identity keys of a CodeableConcept ("system|code", or "text:..." when uncoded)."""
    if node is None:
        return []
    keys = []
    for system, code in fr.codings(node, path, key, index):
        keys.append(f"{system or ''}|{code}")
    if not keys:
        text = fr.concept_text(node, path, key, index)
        if text and text.strip():
            keys.append("text:" + text.strip().lower())
    return keys


def _concepts_keys(node, path: str, key: str | None = None) -> list[str]:
    """Identity keys of the concepts of a repeating CodeableConcept element, in order."""
    if node is None:
        return []
    out: list[str] = []
    for i, cc in enumerate(node if type(node) is list else fr.elements(node, path, key)):
        out += _concept_keys(cc, path, key, i)
    return out


def _unique(keys: Sequence[str]) -> tuple[str, ...]:
    """`keys` without repeats, in first-occurrence order."""
    return tuple(keys) if len(keys) < 2 else tuple(dict.fromkeys(keys))


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
    key: str | None  # "Procedure/id" (None without id)

    @property
    def line(self) -> Line | None:
        """The Procedure as a line of its own (None without id), as _order_line reads it; built
        on use (claim-review needs few of them)."""
        if self.key is None:
            return None
        return Line(key=self.key, code=self.code, service_date=self.day, body_sites=self.sites,
                    diagnoses=self.reasons, kind="procedure", resource=self.key)


class _Index:
    """The companions by "Type/id" and by type ((path, resource) pairs in order); a resource's path
    is "Type/id", or "Type[i]" (i: its position among the companions) without id."""

    __slots__ = ("by_key", "by_type", "_procs")

    def __init__(self) -> None:
        self.by_key: dict[str, dict] = {}
        self.by_type: dict[str, list[tuple[str, dict]]] = {}
        self._procs: list[_Proc] | None = None

    def of(self, rtype: str) -> list[tuple[str, dict]]:
        return self.by_type.get(rtype, [])

    def get(self, key: str | None) -> dict | None:
        return self.by_key.get(key) if key else None

    def procedures(self) -> list[_Proc]:
        """The active, coded Procedures, parsed on first use (every active one is validated)."""
        if self._procs is None:
            parsed = [_parse_procedure(p, proc) for p, proc in _active(self.of("Procedure"))]
            self._procs = [pr for pr in parsed if pr is not None]
        return self._procs


def _index(companions: Sequence[dict], full_validation: bool,
           aliases: Mapping[str, dict] | None = None) -> _Index:
    """The companions indexed; `aliases` (see bundle_aliases) adds the references a Bundle gives
    its entries through fullUrl, e.g. "urn:uuid:..." for a resource without an id."""
    idx = _Index()
    if companions is None:
        return idx
    if not isinstance(companions, (list, tuple)):
        raise fr.invalid("companions", "must be a list of resources")
    by_key, by_type = idx.by_key, idx.by_type
    for i, res in enumerate(companions):
        # Hot path: the accessors are called only when resourceType or id is not a non-blank string.
        rtype = res.get("resourceType") if type(res) is dict else None
        if type(rtype) is not str or not rtype.strip():
            rtype = fr.resource_type(res, "companions", index=i)
        if full_validation:
            fr.validate_full(res)
        rid = res.get("id")
        if type(rid) is not str or not rid.strip():
            rid = fr.string(rid, rtype, "id")
        if rid:
            path = f"{rtype}/{rid}"
            by_key.setdefault(path, res)
        else:
            path = f"{rtype}[{i}]"
        group = by_type.get(rtype)
        if group is None:
            by_type[rtype] = [(path, res)]
        else:
            group.append((path, res))
    if aliases:
        members = {id(res) for res in companions}
        for alias, res in aliases.items():
            if id(res) in members:  # only resources that are companions of this case
                by_key.setdefault(alias, res)
    return idx


def _active(pairs: Iterable[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The (path, resource) pairs whose status (validated) is not an inactive one."""
    out = []
    for p, r in pairs:
        status = r.get("status")
        if type(status) is not str or not status.strip():  # not a plain status: validate
            status = _status(r, p)
        if status not in _INACTIVE:
            out.append((p, r))
    return out


# --- setting -----------------------------------------------------------------------------------
def _pos_of(concept, path: str, key: str | None = None) -> str | None:
    for system, code in fr.codings(concept, path, key):
        if system in POS_SYSTEMS:
            return code.strip()
    return None


def _location_facility(loc: dict, path: str, reference: ReferenceData) -> str | None:
    """Why this Location is a facility, or None."""
    name = fr.string(loc.get("name"), path, "name") or path
    for i, cc in enumerate(fr.elements(loc.get("type"), path, "type")):
        for system, code in fr.codings(cc, path, "type", i):
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


def encounter_location_refs(enc: dict, path: str) -> list[str]:
    """The Location references of Encounter.location (each validated)."""
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
        refs.extend(encounter_location_refs(enc, p))
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
    """Minutes of the valueQuantity `q` of the element at `path` (value; code, else unit)."""
    value = fr.decimal(q.get("value"), path, "valueQuantity.value")
    if value is None:
        return None
    unit = (fr.string(q.get("code"), path, "valueQuantity.code")
            or fr.string(q.get("unit"), path, "valueQuantity.unit") or "")
    factor = _TIME_UNITS.get(unit.strip().lower())
    return None if factor is None else value * factor


def _value_facts(part: dict, path: str, minutes: list[float]) -> bool:
    """Adds the fluoroscopy minutes of an Observation or component to `minutes`; True when it holds
    a dose. Read: code, then (when it has a DCM coding) valueQuantity."""
    codes = []
    for system, code in fr.codings(part.get("code"), path, "code"):
        if system in DCM_SYSTEMS:
            codes.append(code)
    if not codes:
        return False
    q = fr.obj(part.get("valueQuantity"), path, "valueQuantity")
    if q is None:
        return False
    if FLUORO_TIME in codes:
        m = _quantity_minutes(q, path)
        if m is not None:
            minutes.append(m)
    return not DOSE_CODES.isdisjoint(codes) and fr.decimal(q.get("value"), path, "valueQuantity.value") is not None


def _observation_facts(obs: dict, path: str) -> tuple[list[float], bool]:
    """(fluoroscopy minutes found, dose found) in an Observation's code/value and components.

    Every component is checked to be an object before the Observation's own code is read."""
    components = obs.get("component")
    if components is not None:
        components = fr.elements(components, path, "component")
        for i, part in enumerate(components):
            if type(part) is not dict:
                fr.obj(part, path, "component", i, required=True)
    minutes: list[float] = []
    dose = _value_facts(obs, path, minutes)
    if components:
        for i, part in enumerate(components):
            dose = _value_facts(part, f"{path}.component[{i}]", minutes) or dose
    return minutes, dose


def _report_facts(rep: dict, path: str) -> tuple[bool, bool, bool]:
    """(findings, signed interpretation, images referenced) of a DiagnosticReport."""
    conclusion = fr.string(rep.get("conclusion"), path, "conclusion")
    findings = bool(conclusion and conclusion.strip()) or bool(_concepts_keys(rep.get("conclusionCode"),
                                                                              path, "conclusionCode"))
    interpreters = fr.references(rep.get("resultsInterpreter"), path, "resultsInterpreter")
    signed = _status(rep, path) in _SIGNED_REPORT and bool(interpreters)
    studies = fr.references(rep.get("imagingStudy"), path, "imagingStudy")
    media = rep.get("media")
    if media is not None:
        for i, m in enumerate(fr.elements(media, path, "media")):
            if type(m) is not dict:
                fr.obj(m, path, "media", i, required=True)
    return findings, signed, bool(studies or media)


def _is_lab(rep: dict, path: str) -> bool:
    for i, cc in enumerate(fr.elements(rep.get("category"), path, "category")):
        for _s, code in fr.codings(cc, path, "category", i):
            if code.upper() in ("LAB", "laboratory".upper()):
                return True
    return False


def _parse_procedure(p: str, proc: dict) -> _Proc | None:
    """An active Procedure of the record (None without a procedure code). Read in this order: code,
    report, performed[x], then with an id (as _order_line reads it): reasonCode, reasonReference,
    bodySite; without one: bodySite, reasonCode, reasonReference.

    The id was validated by _index (a string, or absent)."""
    code = procedure_code(proc.get("code"), p, "code")
    if not code:
        return None
    reports = tuple(fr.references(proc.get("report"), p, "report"))
    rid = proc.get("id")
    day = _procedure_date(proc, p)
    if rid is not None:
        reasons = _unique(_procedure_reasons(proc, p))
        sites = _unique(_concepts_keys(proc.get("bodySite"), p, "bodySite"))
        return _Proc(p, proc, code, day, sites, reasons, reports, f"Procedure/{rid}")
    sites = tuple(_concepts_keys(proc.get("bodySite"), p, "bodySite"))
    return _Proc(p, proc, code, day, sites, tuple(_procedure_reasons(proc, p)), reports, None)


def _procedure_date(proc: dict, path: str) -> date | None:
    d = fr.fhir_datetime_date(proc.get("performedDateTime"), path, "performedDateTime")
    return d or fr.period_start(proc.get("performedPeriod"), path, "performedPeriod")


def _procedure_reasons(proc: dict, path: str) -> list[str]:
    """reasonCode keys, then reasonReference references (of a Procedure or ServiceRequest)."""
    keys = _concepts_keys(proc.get("reasonCode"), path, "reasonCode")
    keys += fr.references(proc.get("reasonReference"), path, "reasonReference")
    return keys


def _evidence(fluoro_lines: Sequence[Line], index: _Index, fluoro_procs: Sequence[_Proc],
              distinct_marker: bool) -> Evidence:
    indication = body_site = False
    for line in fluoro_lines:
        indication = indication or bool(line.diagnoses)
        body_site = body_site or bool(line.body_sites)
    report_refs: set[str] = set()
    for proc in fluoro_procs:
        indication = indication or bool(proc.reasons)
        body_site = body_site or bool(proc.sites)
        report_refs.update(proc.reports)
    minutes: list[float] = []
    dose = False
    for p, obs in _active(index.of("Observation")):
        m, d = _observation_facts(obs, p)
        minutes += m
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
                    radiation_dose=dose, body_site=body_site, findings=findings, images_retained=images,
                    signed_interpretation=signed, distinct_marker=distinct_marker)


def _distinct(case_lines: Sequence[Line]) -> bool:
    """Evidence.distinct_marker: a 76000 line carries 59/X{EPSU} and differs in body site or
    indication from every other line (with no other line, the modifier alone)."""
    marked = [ln for ln in case_lines if ln.code == FLUORO and ln.has_distinct_modifier()]
    if not marked:
        return False
    others = [ln for ln in case_lines if ln.code != FLUORO]
    return any(all(line.distinct_from(o) for o in others) for line in marked)


def _default_date(lines: Sequence[Line], encounters: Sequence[tuple[str, dict]]) -> date | None:
    """The first line's date of service, else the encounters' start (read only then)."""
    for ln in lines:
        if ln.service_date:
            return ln.service_date
    return _encounter_start(encounters)


# --- claims ------------------------------------------------------------------------------------
def split_claim_bundle(value: dict) -> tuple[dict, list[dict]]:
    """``context.claim`` of claim-review: a Claim, or a Bundle whose first entry is the Claim.

    Returns (claim, companions); companions are the other entries' resources.
    """
    rtype = fr.resource_type(value, "context.claim", ("Claim", "Bundle"))
    if rtype == "Claim":
        return value, []
    entries = fr.elements(value.get("entry"), "Bundle", "entry")
    if not entries:
        raise fr.invalid("Bundle.entry", "must hold the Claim as its first entry")
    resources = []
    for i, entry in enumerate(entries):  # paths are formatted only for an invalid entry
        if type(entry) is not dict:
            fr.obj(entry, f"Bundle.entry[{i}]", required=True)
        resource = entry.get("resource")
        if type(resource) is not dict:
            fr.obj(resource, f"Bundle.entry[{i}]", "resource", required=True)
        resources.append(resource)
    for i, resource in enumerate(resources):  # then their types (the first error is reported)
        rtype = resource.get("resourceType")
        if not (type(rtype) is str and rtype.strip() and (i or rtype == "Claim")):
            fr.resource_type(resource, f"Bundle.entry[{i}].resource", "Claim" if i == 0 else None)
    return resources[0], resources[1:]


def bundle_aliases(value: Any) -> dict[str, dict]:
    """The references a Bundle's entries answer to through their ``fullUrl``: "urn:uuid:..." and
    "urn:oid:..." as written; for a resource without an id, another URL reduced to "Type/id"
    (FHIR R4 Bundle rules: a reference inside a Bundle resolves against the entries' fullUrls).
    {} for a lone Claim.
    Run after split_claim_bundle, which has checked the entries; each fullUrl read is checked."""
    aliases: dict[str, dict] = {}
    if type(value) is not dict or value.get("resourceType") != "Bundle":
        return aliases
    for i, entry in enumerate(fr.elements(value.get("entry"), "Bundle", "entry")):
        if type(entry) is not dict or type(entry.get("resource")) is not dict:
            continue
        url = entry.get("fullUrl")
        if url is None:
            continue
        if type(url) is not str or not url.strip():
            fr.string(url, f"Bundle.entry[{i}]", "fullUrl", required=True)
            continue
        url = url.strip()
        if url.startswith(("urn:uuid:", "urn:oid:")):
            aliases.setdefault(url, entry["resource"])
        elif not entry["resource"].get("id"):  # with an id, "Type/id" already finds the resource
            aliases.setdefault(fr.normalize_reference(url), entry["resource"])
    return aliases


class _ClaimParts(NamedTuple):
    lines: list[Line]
    pos_codes: list[str]  # 76000 lines' POS first
    location_refs: list[str]
    encounter_refs: list[str]
    institutional: bool


def _claim_parts(claim: dict, index: _Index) -> _ClaimParts:
    """The lines and setting signals of a Claim (whose resourceType the caller has checked).

    Read in this order: id, type, diagnosis, facility, the record's Procedures
    (``index.procedures()``), then each item (sequence, productOrService, modifier, quantity,
    serviced[x], locationCodeableConcept, locationReference, encounter, diagnosisSequence,
    bodySite, subSite).
    """
    fr.string(claim.get("id"), "Claim.id")
    institutional = "institutional" in [c for _s, c in fr.codings(claim.get("type"), "Claim.type")]
    diagnoses: dict[int, list[str]] = {}
    for p, dx in fr.objects(claim.get("diagnosis"), "Claim.diagnosis"):
        seq = fr.positive_int(dx.get("sequence"), p, "sequence", required=True)
        keys = _concept_keys(dx.get("diagnosisCodeableConcept"), p, "diagnosisCodeableConcept")
        ref = fr.reference(dx.get("diagnosisReference"), p, "diagnosisReference")
        if ref:
            keys.append(ref)
        diagnoses[seq] = keys
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
    for p, item in fr.objects(claim.get("item"), "Claim.item"):
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
            value = fr.decimal(qty.get("value"), p, "quantity.value")
            if value is not None:
                if value < 0 or value > 1e6:
                    raise fr.invalid(f"{p}.quantity.value", f"units out of range: {value!r}")
                units = int(math.ceil(value))
        serviced_date, serviced_period = item.get("servicedDate"), item.get("servicedPeriod")
        if serviced_date is not None and serviced_period is not None:
            raise fr.invalid(f"{p}.serviced[x]", "only one of servicedDate and servicedPeriod may be present")
        day = (fr.fhir_date(serviced_date, p, "servicedDate")
               or fr.period_start(serviced_period, p, "servicedPeriod"))
        pos = _pos_of(item.get("locationCodeableConcept"), p, "locationCodeableConcept")
        loc_ref = fr.reference(item.get("locationReference"), p, "locationReference")
        if loc_ref:
            location_refs.append(loc_ref)
        encounter_refs += fr.references(item.get("encounter"), p, "encounter")
        dx_keys: list[str] = []
        for j, s in enumerate(fr.elements(item.get("diagnosisSequence"), p, "diagnosisSequence")):
            s = fr.positive_int(s, p, "diagnosisSequence", j)
            keys = diagnoses.get(s)
            if keys is None:
                raise fr.invalid(f"{p}.diagnosisSequence[{j}]", f"refers to no Claim.diagnosis with sequence {s}")
            dx_keys += keys
        sites = _concept_keys(item.get("bodySite"), p, "bodySite")
        sites += _concepts_keys(item.get("subSite"), p, "subSite")
        if code:
            # The Procedures of the same code (and date) document this item's site and reason.
            for pcode, pday, psites, preasons in procs:
                if pcode != code or (day and pday and pday != day):
                    continue
                sites += psites
                dx_keys += preasons
        if pos:
            (fluoro_pos if code == FLUORO else other_pos).append(pos)
        if not code:
            continue
        # Positional, in field order (key, code, modifiers, units, service_date, body_sites, diagnoses,
        # kind, resource, sequence): a call with keywords costs about twice as much.
        lines.append(Line(p, code, modifiers, units, day, _unique(sites), _unique(dx_keys), "claim-item", None, seq))
    return _ClaimParts(lines, fluoro_pos + other_pos, location_refs, encounter_refs, institutional)


def _encounters_for(refs: Sequence[str], index: _Index) -> list[tuple[str, dict]]:
    """The Encounters that `refs` name (each once), else every Encounter of the record."""
    chosen = []
    for r in dict.fromkeys(refs):
        enc = index.by_key.get(r) if r else None
        if enc is not None and enc.get("resourceType") == "Encounter":
            chosen.append((r, enc))
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
    lines = parts.lines
    fluoro_lines = [ln for ln in lines if ln.code == FLUORO]
    evidence = _evidence(fluoro_lines, index, _fluoro_procs(index), _distinct(lines))
    default_date = _default_date(lines, encounters)
    checked = not index.by_type.keys().isdisjoint(_CLINICAL_TYPES)
    return Case(kind=kind, setting=setting, lines=tuple(lines), evidence=evidence,
                default_date=default_date, claim=claim, evidence_checked=checked,
                context_lines=_unbilled_procedures(lines, index))


def _unbilled_procedures(lines: Sequence[Line], index: _Index) -> tuple[Line, ...]:
    """Active Procedures of the record whose code (on their date) is not among the billed lines."""
    out = []
    for pr in index.procedures():
        if pr.key is None or pr.code == FLUORO:
            continue
        if any(ln.code == pr.code and (pr.day is None or ln.service_date == pr.day) for ln in lines):
            continue  # billed (on its date)
        out.append(pr.line)
    return tuple(out)


def case_from_claim(claim: dict, companions: Sequence[dict], reference: ReferenceData, *,
                    full_validation: bool = False, aliases: Mapping[str, dict] | None = None) -> Case:
    """claim-review: the Claim's items are the lines; companions (Encounter, Procedures,
    Observations, DiagnosticReports, ImagingStudies, Locations) give setting and evidence.
    `aliases`: the Bundle's fullUrl references of companions (bundle_aliases), so that
    "urn:uuid:..." references resolve.

    Documentation is judged (``evidence_checked``) only when at least one clinical companion
    (Encounter, Procedure, Observation, DiagnosticReport or ImagingStudy) is available: a bare
    Claim documents nothing, and asking for documentation it cannot carry would be noise.
    """
    fr.resource_type(claim, "Claim", "Claim")
    if full_validation:
        fr.validate_full(claim)
    index = _index(companions, full_validation, aliases)
    parts = _claim_parts(claim, index)
    return _case_from_claim_parts("claim", claim, parts, index, reference)


# --- orders ------------------------------------------------------------------------------------
def _order_line(res: dict, path: str, code: str | None = None) -> Line | None:
    """A ServiceRequest or Procedure as a line (None without a procedure code). Read in this order:
    id, code, occurrence[x] and quantityQuantity (ServiceRequest) or performed[x] (Procedure),
    reasonCode, reasonReference, bodySite.

    `code`: the resource's procedure code when the caller has already read it."""
    rtype = res["resourceType"]
    rid = fr.string(res.get("id"), path, "id", required=True)
    if code is None:
        code = procedure_code(res.get("code"), path, "code")
    if not code:
        return None
    units = 1
    if rtype == "ServiceRequest":
        day = fr.fhir_datetime_date(res.get("occurrenceDateTime"), path, "occurrenceDateTime")
        day = day or fr.period_start(res.get("occurrencePeriod"), path, "occurrencePeriod")
        qty = fr.obj(res.get("quantityQuantity"), path, "quantityQuantity")
        if qty is not None:
            value = fr.decimal(qty.get("value"), path, "quantityQuantity.value")
            if value is not None:
                if value < 0 or value > 1e6:
                    raise fr.invalid(f"{path}.quantityQuantity.value", f"units out of range: {value!r}")
                units = int(math.ceil(value))
        kind = "service-request"
    else:
        day = _procedure_date(res, path)
        kind = "procedure"
    reasons = _procedure_reasons(res, path)
    sites = _concepts_keys(res.get("bodySite"), path, "bodySite")
    key = f"{rtype}/{rid}"
    return Line(key=key, code=code, units=units, service_date=day, body_sites=_unique(sites),
                diagnoses=_unique(reasons), kind=kind, resource=key)


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
        if pr.key is not None and pr.key not in seen:
            seen.add(pr.key)
            lines.append(pr.line)
    encounters = list(index.of("Encounter"))
    setting = _setting((), (), encounters, index, reference, PRACTITIONER)
    default_date = _default_date(lines, encounters)
    evidence = Evidence(distinct_marker=_distinct(lines))
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
    lines = [pr.line for pr in index.procedures() if pr.key is not None]
    setting = _setting((), (), encounters, index, reference, PRACTITIONER)
    fluoro_lines = [ln for ln in lines if ln.code == FLUORO]
    evidence = _evidence(fluoro_lines, index, _fluoro_procs(index), _distinct(lines))
    default_date = _default_date(lines, encounters)
    return Case(kind="encounter", setting=setting, lines=tuple(lines), evidence=evidence,
                default_date=default_date, claim=None, evidence_checked=True)


__all__ = ["case_from_claim", "case_from_orders", "case_from_encounter", "split_claim_bundle",
           "bundle_aliases", "encounter_location_refs", "procedure_code", "InvalidResource"]

"""The setting of a case (:class:`hooks.model.Setting`): facility or not and the place of service,
from POS codes, Locations and Encounter.class."""
from __future__ import annotations

from typing import Sequence

from nccidata.api import ReferenceData

from .. import fhir_read as fr
from ..model import Setting
from .codes import POS_SYSTEMS
from .companions import Index

ROLE_CODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
# Encounter.class codes (v3 ActCode) that mean a facility setting; AMB alone is not enough.
FACILITY_ENCOUNTER_CLASSES = frozenset({"IMP", "EMER", "OBSENC", "ACUTE", "NONAC", "SS"})
# Location.type codes (v3 RoleCode, ServiceDeliveryLocationRoleType) that mean a hospital setting:
# hospitals (HOSP, GACH, CHR, MHSP, PSYCHF, RH) and hospital units (HU and its ER, ETU, ICU, CCU,
# PEDICU, PEDNICU, HRAD radiology unit, HUSCS specimen collection site), checked against the
# HL7 v3 RoleCode code system (terminology.hl7.org/CodeSystem/v3-RoleCode).
FACILITY_ROLE_CODES = frozenset({"HOSP", "GACH", "CHR", "MHSP", "PSYCHF", "RH", "HU", "ER", "ETU",
                                 "ICU", "CCU", "PEDICU", "PEDNICU", "HRAD", "HUSCS"})
# The CMS place of service of a hospital patient by Encounter.class: inpatient 21, emergency 23,
# observation and short stay outpatient hospital 22 (CMS Place of Service Code Set).
ENCOUNTER_CLASS_POS = {"IMP": "21", "ACUTE": "21", "NONAC": "21", "EMER": "23", "OBSENC": "22", "SS": "22"}
ASC_CODE = "ASC"  # accepted in any system for an ambulatory surgical center Location


def pos_of(concept, path: str, key: str | None = None) -> str | None:
    for system, code in fr.codings(concept, path, key):
        if system in POS_SYSTEMS:
            return code.strip()
    return None


def location_types(loc: dict, path: str) -> tuple[str, list[tuple[str | None, str]]]:
    """(name, the (system, code) of every Location.type coding, in order), each validated."""
    name = fr.string(loc.get("name"), path, "name") or path
    return name, [sc for i, cc in enumerate(fr.elements(loc.get("type"), path, "type"))
                  for sc in fr.codings(cc, path, "type", i)]


def _location_facility(loc: dict, path: str, reference: ReferenceData) -> tuple[str | None, str | None, bool]:
    """(why, the place of service it implies, facility) of a Location typed as a facility (a hospital
    RoleCode, a facility POS, ASC) or as an office (a non-facility POS), or (None, None, False)."""
    name, types = location_types(loc, path)
    office = None
    for system, code in types:
        if system == ROLE_CODE_SYSTEM and code in FACILITY_ROLE_CODES:
            return f"Location {name}: type {code} (v3 RoleCode)", None, True
        if system in POS_SYSTEMS:
            place = reference.place_of_service(code)
            if place is not None and place.facility:
                return f"Location {name}: type POS {place.code} ({place.name})", place.code, True
            if place is not None and office is None:
                office = (f"Location {name}: type POS {place.code} ({place.name})", place.code, False)
        if code.upper() == ASC_CODE:
            return f"Location {name}: type ASC", "24", True
    return office or (None, None, False)


def _encounter_facility(enc: dict, path: str) -> tuple[str | None, str | None]:
    """(why this Encounter is a hospital stay or visit, the place of service it implies), or (None, None)."""
    cls = fr.obj(enc.get("class"), path, "class")
    if cls is None:
        return None, None
    code = fr.string(cls.get("code"), path, "class.code")
    fr.string(cls.get("system"), path, "class.system")
    if code in FACILITY_ENCOUNTER_CLASSES:
        return f"Encounter.class {code}", ENCOUNTER_CLASS_POS.get(code)
    return None, None


def encounter_location_refs(enc: dict, path: str) -> list[str]:
    """The Location references of Encounter.location (each validated)."""
    out = []
    for p, entry in fr.objects(enc.get("location"), path, "location"):
        r = fr.reference(entry.get("location"), p, "location")
        if r:
            out.append(r)
    return out


def setting_of(pos_codes: Sequence[str], location_refs: Sequence[str], encounters: Sequence[tuple[str, dict]],
             index: Index, reference: ReferenceData, ncci_setting: str) -> Setting:
    """The setting: the facility signals of the record (Encounter.class; the Locations of
    Claim.facility, item.locationReference, Encounter.location) and the POS the lines report
    (76000 lines' first).

    The record's setting (``record_facility``): a facility when an Encounter.class or a Location says
    so, else an office when a Location is typed with a non-facility POS, else silent. The POS and
    the record agreeing (or the record silent), the POS decides. A POS that contradicts the record
    (an office POS for a hospital or ASC patient, a facility POS for an office visit) is
    ``pos_contradicted``: the record's setting, not the line's POS, decides ``facility`` and so the
    payment component (Medicare Claims Processing Manual, Chapter 13, section 20; Chapter 26,
    section 10.5: the place of service is where the patient was)."""
    place = None
    for code in pos_codes:
        place = reference.place_of_service(code)
        if place is not None:
            break
    reasons: list[str] = []
    record_pos = None
    office: list[str] = []
    office_pos = None
    refs = list(location_refs)
    for p, enc in encounters:
        refs.extend(encounter_location_refs(enc, p))
        why, pos = _encounter_facility(enc, p)
        if why:
            reasons.append(why)
            record_pos = record_pos or pos
    for r in dict.fromkeys(refs):
        loc = index.get(r)
        if loc is not None and loc.get("resourceType") == "Location":
            why, pos, facility = _location_facility(loc, r, reference)
            if why and facility:
                reasons.append(why)
                record_pos = record_pos or pos
            elif why:
                office.append(why)
                office_pos = office_pos or pos
    record = True if reasons else (False if office else None)
    if place is None:
        return Setting(facility=bool(reasons), ncci_setting=ncci_setting, pos=None, reasons=tuple(reasons),
                       record_pos=record_pos, record_facility=record)
    pos_reason = f"POS {place.code} ({place.name})"
    if record is None or record == place.facility:
        return Setting(facility=place.facility, ncci_setting=ncci_setting, pos=place.code, reasons=(pos_reason,),
                       record_facility=record)
    if record:  # an office POS for a hospital or ASC patient
        return Setting(facility=True, ncci_setting=ncci_setting, pos=place.code, reasons=tuple(reasons),
                       record_pos=record_pos, pos_contradicted=True, record_facility=True)
    return Setting(facility=False, ncci_setting=ncci_setting, pos=place.code, reasons=tuple(office),  # office visit
                   record_pos=office_pos, pos_contradicted=True, record_facility=False)

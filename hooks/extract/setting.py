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
ASC_CODE = "ASC"  # accepted in any system for an ambulatory surgical center Location


def pos_of(concept, path: str, key: str | None = None) -> str | None:
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


def setting_of(pos_codes: Sequence[str], location_refs: Sequence[str], encounters: Sequence[tuple[str, dict]],
             index: Index, reference: ReferenceData, ncci_setting: str) -> Setting:
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

"""Code systems accepted (docs/contract.md#where-the-facts-live-in-fhir) and the coded elements read
from them: procedure codes, modifiers, and identity keys of CodeableConcepts (for comparing sites and
indications)."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

from .. import fhir_read as fr
from ..model import Site

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
_PROC_CODE_RE = re.compile(r"[0-9]{4}[0-9A-Z]|[A-Z][0-9]{4}")
_MODIFIER_RE = re.compile(r"[0-9A-Z]{2}")


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


def is_procedure_coding(coding: dict) -> bool:
    """Whether a Coding is read as a CPT / HCPCS procedure code (:func:`procedure_code`): a CPT
    or HCPCS system, or no system and a code of that form."""
    system, code = coding.get("system"), coding.get("code")
    if isinstance(system, str) and system in PROCEDURE_SYSTEMS:
        return True
    return system is None and isinstance(code, str) and _PROC_CODE_RE.fullmatch(code.upper()) is not None


def modifier_codes(node, path: str, key: str | None = None) -> tuple[str, ...]:
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


def concept_keys(node, path: str, key: str | None = None, index: int | None = None) -> list[str]:
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


def concepts_keys(node, path: str, key: str | None = None) -> list[str]:
    """Identity keys of the concepts of a repeating CodeableConcept element, in order."""
    if node is None:
        return []
    out: list[str] = []
    for i, cc in enumerate(node if type(node) is list else fr.elements(node, path, key)):
        out += concept_keys(cc, path, key, i)
    return out


def unique(keys: Sequence[str]) -> tuple[str, ...]:
    """`keys` without repeats, in first-occurrence order."""
    return tuple(keys) if len(keys) < 2 else tuple(dict.fromkeys(keys))


def status_of(resource: dict, path: str) -> str | None:
    return fr.string(resource.get("status"), path, "status")


# --- body sites as concepts (compared by hooks.rules.distinct) -------------------------------------
SNOMED_SYSTEM = "http://snomed.info/sct"
# SNOMED CT laterality qualifiers (Side, 182353008): a coding of one of these is the site's side.
SNOMED_LATERALITY = {"7771000": "left", "24028007": "right", "51440002": "bilateral"}
LATERALITY_MODIFIERS = {"LT": "left", "RT": "right", "50": "bilateral"}  # CPT/HCPCS anatomic modifiers
_SIDE_WORDS = {"left": "left", "right": "right", "bilateral": "bilateral", "both": "bilateral"}
_FILLER_WORDS = frozenset({"of", "the", "structure", "region", "entire", "and", "side"})
_WORD_RE = re.compile(r"[a-z0-9]+")


@lru_cache(maxsize=4096)
def site_text(text: str | None) -> tuple[str | None, str | None]:
    """(normalised text, laterality) of a site's text: lower case words, filler words and the side
    removed ("Left knee" and "knee, left" are both ("knee", "left"))."""
    if not text:
        return None, None
    side = None
    words = []
    for w in _WORD_RE.findall(text.lower()):
        if w in _SIDE_WORDS:
            side = side or _SIDE_WORDS[w]
        elif w not in _FILLER_WORDS:
            words.append(w)
    return (" ".join(words) or None), side


def site_of(node, path: str, key: str | None = None, index: int | None = None) -> Site | None:
    """A body-site CodeableConcept as a :class:`~hooks.model.Site` (None when it says nothing)."""
    if node is None:
        return None
    codes, side = [], None
    for system, code in fr.codings(node, path, key, index):
        if system == SNOMED_SYSTEM and code in SNOMED_LATERALITY:
            side = side or SNOMED_LATERALITY[code]
        else:
            codes.append(f"{system or ''}|{code}")
    text = fr.concept_text(node, path, key, index)
    if not (text and text.strip()):
        text = None
        for i, c in enumerate(node.get("coding") or ()):  # validated by fr.codings above
            display = c.get("display")
            if type(display) is str and display.strip():
                text = display
                break
            if display is not None:  # "" is no text; anything else but a non-blank string raises
                fr.string(display, fr._join(path, key, index), f"coding[{i}].display")
    words, text_side = site_text(text)
    side = side or text_side
    if not codes and words is None and side is None:
        return None
    return Site(tuple(codes), words, side)


def sites_of(node, path: str, key: str | None = None) -> list[Site]:
    """The sites of a repeating body-site element, in order."""
    if node is None:
        return []
    out = []
    for i, cc in enumerate(fr.elements(node, path, key)):
        site = site_of(cc, path, key, i)
        if site is not None:
            out.append(site)
    return out



# --- who rendered a service (XP: NCCI Policy Manual Chapter I, section E) ----------------------------
# Claim.careTeam.role: the rendering practitioner is "primary" in the FHIR claimcareteamrole
# CodeSystem, "rendering" or "performing" in the CARIN Blue Button C4BBClaimCareTeamRole
# CodeSystem; any other code of those systems (assist, supervisor, other, referring, attending,
# operating, prescribing, purchasedservice, ...) is a care-team member who did not render the line.
# Procedure.performer.function: v3 ParticipationType PRF / PPRF (primary performer) and v2 table
# 0133 PR (procedure MD / surgeon) / RD (radiologist) perform; every other code of those systems
# (SPRF secondary performer, AN anesthesiologist, AS assistant surgeon, RS resident, SN scrub
# nurse, ...) does not. A role in another system, or only as text, is judged by its words.
PERFORMING_ROLES = {
    "http://terminology.hl7.org/CodeSystem/claimcareteamrole": frozenset({"primary"}),
    "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBClaimCareTeamRole": frozenset({"rendering", "performing"}),
    "http://terminology.hl7.org/CodeSystem/v3-ParticipationType": frozenset({"PRF", "PPRF"}),
    "http://terminology.hl7.org/CodeSystem/v2-0133": frozenset({"PR", "RD"}),
}
_NOT_PERFORMING_WORDS = re.compile(r"an(a)?esthe|assist|supervis|referr|scrub|prescrib|attending")
_PERFORMING_WORDS = re.compile(r"primary|render|perform|surgeon|radiologist")


def performs(concept, path: str, key: str) -> bool | None:
    """Whether a care-team role or performer function says its practitioner rendered the service:
    True (a performing code), False (a code of a known system that is not, or words such as
    assistant, anesthetist, supervising, referring), None (no role, or nothing recognised)."""
    if concept is None:
        return None
    verdict = None
    for system, code in fr.codings(concept, path, key):
        known = PERFORMING_ROLES.get(system)
        if known is not None:
            if code in known:
                return True
            verdict = False
    if verdict is not None:
        return verdict
    text = fr.concept_text(concept, path, key) or ""
    if not text.strip():
        for i, c in enumerate(concept.get("coding") or ()):  # validated by fr.codings above
            text = fr.string(c.get("display"), fr._join(path, key), f"coding[{i}].display") or ""
            if text.strip():
                break
    text = text.lower()
    if _NOT_PERFORMING_WORDS.search(text):
        return False
    return True if _PERFORMING_WORDS.search(text) else None

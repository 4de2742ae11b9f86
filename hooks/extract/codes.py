"""Code systems accepted (docs/contract.md#where-the-facts-live-in-fhir) and the coded elements read
from them: procedure codes, modifiers, and identity keys of CodeableConcepts (for comparing sites and
indications)."""
from __future__ import annotations

import re
from typing import Sequence

from .. import fhir_read as fr

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

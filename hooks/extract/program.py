"""The NCCI program of a claim (issue 10 s.8): Medicare or Medicaid, from ``Claim.insurance``.

The claim's coverage is its focal ``Claim.insurance`` (``focal`` true: the one this claim is
adjudicated against; FHIR R4 Claim), else the first. Its program is read, in this order:

1. ``Coverage.type`` of the Coverage it references (among the companions), coded in the Source of
   Payment Typology (PHDSC SOPT, ``https://nahdo.org/sopt`` as US Core's Coverage profile binds it,
   ``urn:oid:2.16.840.1.113883.3.221.5``): codes 2 and 2x are Medicaid, 1 and 1x Medicare; or a
   code ``MCAID`` / ``MEDICAID`` in any system, or the concept's text naming Medicaid;
2. the names of its payor (``Coverage.payor`` display, or the Organization's name) and the
   ``Claim.insurance.coverage`` display naming Medicaid or Medicare.

None when nothing says (the configuration option ``program`` decides, docs/rules.md#program).
Without a ``Claim.insurance`` this is one dict look-up.
"""
from __future__ import annotations

import re

from nccidata.api import MEDICAID, MEDICARE

from .. import fhir_read as fr
from .companions import Index

SOPT_SYSTEMS = frozenset({"https://nahdo.org/sopt", "http://nahdo.org/sopt", "urn:oid:2.16.840.1.113883.3.221.5"})
MEDICAID_CODES = frozenset({"MCAID", "MEDICAID"})
_WORD = re.compile(r"\b(medicaid|medicare)\b", re.IGNORECASE)


def _named(text: object) -> str | None:
    """The program a name or display says ("... Medicaid ..."), Medicaid winning over Medicare."""
    if type(text) is not str:
        return None
    words = {w.lower() for w in _WORD.findall(text)}
    return MEDICAID if "medicaid" in words else MEDICARE if "medicare" in words else None


def _of_type(concept: object, path: str) -> str | None:
    for system, code in fr.codings(concept, path, "type"):
        if system in SOPT_SYSTEMS and code[:1] in ("1", "2"):
            return MEDICAID if code[0] == "2" else MEDICARE
        if code.upper() in MEDICAID_CODES:
            return MEDICAID
    return _named(concept.get("text")) if type(concept) is dict else None


def program_of(claim: dict, index: Index, root: str = "Claim") -> tuple[str | None, str]:
    """(program, why) of the claim's focal coverage; (None, "") when nothing says."""
    insurance = claim.get("insurance")
    if insurance is None:
        return None, ""
    chosen = None
    for p, entry in fr.objects(insurance, root, "insurance"):  # the focal one, else the first
        if chosen is None or entry.get("focal") is True:
            chosen = (p, entry)
            if entry.get("focal") is True:
                break
    if chosen is None:
        return None, ""
    path, entry = chosen
    ref_obj = entry.get("coverage")
    ref = fr.reference(ref_obj, path, "coverage")  # validates the Reference
    coverage = index.get(ref)
    if coverage is not None and coverage.get("resourceType") == "Coverage":
        program = _of_type(coverage.get("type"), ref)
        if program:
            return program, f"{ref}.type"
        for i, (p, payor) in enumerate(fr.objects(coverage.get("payor"), ref, "payor")):
            org = index.get(fr.reference(payor, ref, "payor", i))
            program = (_named(fr.string(payor.get("display"), p, "display"))
                       or (_named(fr.string(org.get("name"), f"{ref}.payor", "name")) if org else None))
            if program:
                return program, f"{ref}.payor"
    if ref_obj is not None and ref_obj.get("display") is not None:
        program = _named(fr.string(ref_obj.get("display"), f"{path}.coverage", "display"))
        if program:
            return program, f"{path}.coverage.display"
    return None, ""

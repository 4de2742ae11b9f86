"""Findings: what the rules conclude, with reason, citations, payment effect and a machine-readable fix.

The finding codes are the card topics of docs/contract.md#card-topics.

Finding, built several times per request, defines its own ``__init__`` (one ``__dict__`` update
instead of one ``object.__setattr__`` per field, 0.7 us instead of 2.6 us; see hooks/model.py):
still frozen, same fields and defaults.
"""
from __future__ import annotations

from dataclasses import dataclass

PTP_BUNDLED = "ptp-bundled"
PTP_MODIFIER_ALLOWED = "ptp-modifier-allowed"
FLUOROSCOPY_INTEGRAL = "fluoroscopy-integral"
USE_GUIDANCE_CODE = "use-guidance-code"
MODIFIER_26 = "modifier-26"
DOCUMENTATION_MISSING = "documentation-missing"
DURATION_EXCEEDED = "duration-exceeded"
MODIFIER_MISUSE = "modifier-misuse"
MUE_EXCEEDED = "mue-exceeded"

FINDING_CODES = (PTP_BUNDLED, PTP_MODIFIER_ALLOWED, FLUOROSCOPY_INTEGRAL, USE_GUIDANCE_CODE,
                 MODIFIER_26, DOCUMENTATION_MISSING, DURATION_EXCEEDED, MODIFIER_MISUSE,
                 MUE_EXCEEDED)

# Fix actions
REMOVE_LINE = "remove-line"
REPLACE_CODE = "replace-code"
ADD_MODIFIER = "add-modifier"
REMOVE_MODIFIER = "remove-modifier"
REDUCE_UNITS = "reduce-units"
DOCUMENT = "document"


@dataclass(frozen=True)
class Citation:
    """Where a finding's rule comes from: an NCCI/MPFS row or a policy entry."""

    kind: str  # "ncci-ptp" | "ncci-mue" | "ncci-aoc" | "mpfs" | "policy"
    text: str  # one line a coder can check, e.g. "NCCI PTP practitioner 2024Q3: 29881 / 76000, modifier indicator 1 (...)"
    release: str | None = None  # release label, e.g. "2024Q3" or "starter-2024Q3"
    starter: bool = False  # True when cited from the starter set (cards must say so)
    details: tuple[tuple[str, str], ...] = ()  # e.g. (("column1","29881"),("column2","76000"),...)


@dataclass(frozen=True)
class Fix:
    """A machine-readable correction. The first fix of a finding is the recommended one."""

    action: str  # REMOVE_LINE | REPLACE_CODE | ADD_MODIFIER | REMOVE_MODIFIER | REDUCE_UNITS | DOCUMENT
    line: str | None = None  # Line.key it applies to
    code: str | None = None  # REPLACE_CODE: the new code
    modifier: str | None = None  # ADD_MODIFIER / REMOVE_MODIFIER
    units: int | None = None  # REDUCE_UNITS: the new unit count
    elements: tuple[str, ...] = ()  # DOCUMENT: documentation element codes
    label: str = ""  # what the suggestion says, e.g. "Remove 76000 (bundled into 33289)"
    recommended: bool = True


@dataclass(frozen=True)
class Finding:
    code: str  # one of FINDING_CODES
    severity: str  # "info" | "warning" (payment risk is never "critical")
    summary: str  # at most 140 characters, actionable
    reason: str  # plain-language markdown explanation
    lines: tuple[str, ...] = ()  # Line.key(s) concerned
    citations: tuple[Citation, ...] = ()
    fixes: tuple[Fix, ...] = ()
    missing: tuple[str, ...] = ()  # DOCUMENTATION_MISSING: element codes
    payment: str | None = None  # payment effect, e.g. "76000 global 1.28 RVU ($42.61) vs -26 0.44 RVU ($14.65)"
    override_reasons: tuple[tuple[str, str], ...] = ()  # (code, display) a clinician may give to keep 76000
    priority: int = 50  # lower sorts first; used by max-cards

    def __init__(self, code: str, severity: str, summary: str, reason: str,
                 lines: tuple[str, ...] = (), citations: tuple[Citation, ...] = (),
                 fixes: tuple[Fix, ...] = (), missing: tuple[str, ...] = (),
                 payment: str | None = None, override_reasons: tuple[tuple[str, str], ...] = (),
                 priority: int = 50) -> None:
        self.__dict__.update(code=code, severity=severity, summary=summary, reason=reason,
                             lines=lines, citations=citations, fixes=fixes, missing=missing,
                             payment=payment, override_reasons=override_reasons, priority=priority)

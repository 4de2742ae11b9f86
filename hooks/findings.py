"""Findings: what the rules conclude, with reason, citations, payment effect and a machine-readable fix.

Each finding is declared once, as a :class:`Kind` in :data:`KINDS` (docs/rules.md, "Adding a
finding"): its code (the card topic of docs/contract.md#card-topics), display, severity, card
priority, removal rank, configuration switch, the fixes it may offer, the citations it needs, its
"also applies" wording and its override reasons. The engine (:mod:`hooks.rules.engine`) and the
cards (:mod:`hooks.cards`) both read it; a declaration missing a part raises
:class:`DeclarationError` at import. :func:`select` orders the findings and applies ``max-cards``,
in this one place.

Finding, built several times per request, defines its own ``__init__`` (one ``__dict__`` update
instead of one ``object.__setattr__`` per field, 0.7 us instead of 2.6 us; see hooks/model.py):
still frozen, same fields and defaults.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

# Fix actions
REMOVE_LINE = "remove-line"
REPLACE_CODE = "replace-code"
ADD_MODIFIER = "add-modifier"
REMOVE_MODIFIER = "remove-modifier"
REDUCE_UNITS = "reduce-units"
SET_PLACE_OF_SERVICE = "set-place-of-service"
DOCUMENT = "document"
FIX_ACTIONS = frozenset({REMOVE_LINE, REPLACE_CODE, ADD_MODIFIER, REMOVE_MODIFIER, REDUCE_UNITS,
                         SET_PLACE_OF_SERVICE, DOCUMENT})
CITATION_KINDS = frozenset({"ncci-ptp", "ncci-mue", "ncci-aoc", "mpfs", "policy", "ncci-program"})
PROGRAM_CITATION = "ncci-program"  # every finding cites the NCCI program and releases used (issue 10 s.8)
PROGRAM_CITATION_PREFIX = "NCCI program:"  # how its text starts (not an NCCI row: the feedback report skips it)

# CDS Hooks 2.0 Card.summary: "One-sentence, <140-character summary message".
SUMMARY_MAX = 139
_ELLIPSIS = "\u2026"


def clip_summary(text: str) -> str:
    """A card summary under 140 characters (CDS Hooks 2.0 Card.summary): whitespace collapsed;
    a longer text is cut at the last word boundary that leaves room for an ellipsis (a single
    word longer than that is cut where it must be). The one helper for every card's summary."""
    text = " ".join(text.split())
    if len(text) <= SUMMARY_MAX:
        return text
    room = SUMMARY_MAX - len(_ELLIPSIS)
    cut = text[:room + 1].rfind(" ")  # a space right after the room still ends a whole word
    head = text[:cut] if cut > 0 else text[:room]
    return head.rstrip(" ,;:-(") + _ELLIPSIS
SEVERITIES = frozenset({"info", "warning"})  # payment risk is never "critical"


class DeclarationError(ValueError):
    """A finding declaration lacks a part or holds an unknown one."""


@dataclass(frozen=True)
class Kind:
    """One finding, declared once; the engine and the cards read it.

    ``rank``: for a *removal problem* (a reason 76000 cannot be billed against a partner line), its
    specificity among one line's problems (lower wins); None for the other findings.
    ``priority``: card order and the ``max-cards`` cut (lower first). ``switch``: the configuration
    option that turns it off. ``fixes``: the Fix actions it may offer. ``citations``: the citation
    kinds it may cite (every finding cites at least one). ``also``: the phrase naming it under "Also
    applies" on another removal finding's card (fields of the Problem: {partner}, {add_on}, {column1},
    {indicator}, {why}). ``override_reasons``: (code, display) Codings a clinician may give to keep
    76000. ``source``: where the rule comes from (cited in docs/rules.md).
    """

    code: str
    display: str
    severity: str
    priority: int
    rank: int | None
    fixes: frozenset[str]
    citations: frozenset[str]
    source: str
    also: str = ""
    override_reasons: tuple[tuple[str, str], ...] = ()
    switch: str = ""

    def __post_init__(self) -> None:
        if not self.switch:
            object.__setattr__(self, "switch", self.code)
        if type(self.citations) is frozenset and self.citations:  # every finding cites its NCCI program
            object.__setattr__(self, "citations", self.citations | {PROGRAM_CITATION})
        missing = [name for name in ("code", "display", "source") if not str(getattr(self, name)).strip()]
        if missing:
            raise DeclarationError(f"finding {self.code!r}: missing {', '.join(missing)}")
        if self.severity not in SEVERITIES:
            raise DeclarationError(f"finding {self.code!r}: severity must be one of {sorted(SEVERITIES)}")
        if type(self.priority) is not int or (self.rank is not None and type(self.rank) is not int):
            raise DeclarationError(f"finding {self.code!r}: priority and rank are integers")
        if type(self.fixes) is not frozenset or not self.fixes <= FIX_ACTIONS:
            raise DeclarationError(f"finding {self.code!r}: fixes must be a set of {sorted(FIX_ACTIONS)} "
                                   "(empty for advice only)")
        if not self.citations or not self.citations <= CITATION_KINDS:
            raise DeclarationError(f"finding {self.code!r}: citations must be a non-empty subset of "
                                   f"{sorted(CITATION_KINDS)}")
        if self.rank is not None and not self.also.strip():
            raise DeclarationError(f"finding {self.code!r}: a removal problem needs its 'also' wording")


def declare(kinds: Iterable[Kind]) -> dict[str, Kind]:
    """The declarations by code, in contract order; codes, ranks and priorities-with-ranks unique."""
    out: dict[str, Kind] = {}
    ranks: dict[int, str] = {}
    for k in kinds:
        if k.code in out:
            raise DeclarationError(f"finding {k.code!r} declared twice")
        if k.rank is not None:
            if k.rank in ranks:
                raise DeclarationError(f"findings {ranks[k.rank]!r} and {k.code!r} share rank {k.rank}")
            ranks[k.rank] = k.code
        out[k.code] = k
    return out


_DISTINCT = "CMS NCCI Policy Manual for Medicare Services (2024), Chapter I, section E (modifiers and modifier indicators)"
_PTP = "CMS NCCI PTP edits (column 1 / column 2, modifier indicator), July 2024 release"
# A removal finding cites the rows of every removal problem of its line ("Also applies"): PTP rows, the AOC
# row of a guidance add-on, policy entries (found by tests/test_fix_clean.py: 33289 + 10160 + 76000).
_REMOVAL_CITES = frozenset({"ncci-ptp", "ncci-aoc", "policy"})

KINDS: dict[str, Kind] = declare([
    Kind("ptp-bundled", "76000 bundled by an NCCI PTP edit (modifier indicator 0)", "warning",
         priority=10, rank=1, fixes=frozenset({REMOVE_LINE}), citations=_REMOVAL_CITES,
         source=_PTP, also="NCCI PTP edit {column1}/76000, modifier indicator {indicator}"),
    Kind("ptp-modifier-allowed", "76000 in an NCCI PTP edit that allows a modifier (indicator 1)", "warning",
         priority=30, rank=4, fixes=frozenset({REMOVE_LINE, ADD_MODIFIER}), citations=_REMOVAL_CITES,
         source=f"{_PTP}; {_DISTINCT}",
         also="NCCI PTP edit {column1}/76000, modifier indicator {indicator}",
         override_reasons=(
             ("distinct-site", "Fluoroscopy of a different anatomic site than the procedure"),
             ("distinct-session", "Separate session or encounter on the same date"),
             ("distinct-practitioner", "Performed by a different practitioner"),
             ("distinct-indication", "Separate, unrelated service documented"),
             ("payer-policy", "Payer policy allows separate reporting"))),
    Kind("fluoroscopy-integral", "Fluoroscopy is integral to the primary procedure", "warning",
         priority=20, rank=3, fixes=frozenset({REMOVE_LINE}), citations=_REMOVAL_CITES,
         source="hooks/policy/integral.tsv (CPT descriptors; NCCI Policy Manual Chapters IV, VIII, IX)",
         also="fluoroscopy is integral to {partner} (policy)"),
    Kind("use-guidance-code", "A fluoroscopic guidance code applies instead of 76000", "warning",
         priority=20, rank=2, fixes=frozenset({REPLACE_CODE, REMOVE_LINE, ADD_MODIFIER, REMOVE_MODIFIER}),
         citations=frozenset({"ncci-aoc", "policy", "ncci-ptp", "mpfs"}),
         source="CMS NCCI add-on code edits (77001-77003), July 2024; hooks/policy/guidance.tsv; the replacement "
                "billed -26 for a hospital patient per its MPFS PC/TC indicator (Claims Processing Manual ch. 13 s. 20)",
         also="{add_on} reports the fluoroscopic guidance for {partner}"),
    Kind("modifier-26", "Professional component (modifier 26) in a facility setting", "warning",
         priority=50, rank=None, fixes=frozenset({ADD_MODIFIER, REMOVE_MODIFIER}),
         citations=frozenset({"mpfs", "policy"}),
         source="CMS MPFS 2024 PC/TC indicators; Medicare Claims Processing Manual, Chapter 13, section 20 "
                "(the TC of a radiology service to a hospital patient is paid to the hospital, not a supplier)"),
    Kind("documentation-missing", "Fluoroscopy documentation missing", "warning",
         priority=70, rank=None, fixes=frozenset({DOCUMENT}), citations=frozenset({"policy", "ncci-ptp"}),
         source="Medicare Claims Processing Manual, Chapter 13, section 20.1; ACR-AAPM fluoroscopy practice parameter"),
    Kind("duration-exceeded", "Fluoroscopy time over one hour", "info",
         priority=60, rank=None, fixes=frozenset(), citations=frozenset({"policy"}),
         source="CPT 76000 descriptor (up to 1 hour); 76001 deleted (NCCI edits end 2018-12-31)"),
    Kind("modifier-misuse", "Modifier misused on 76000", "warning",
         priority=10, rank=0, fixes=frozenset({REMOVE_LINE}), citations=_REMOVAL_CITES,
         source=_DISTINCT, also="{why}"),
    Kind("mue-exceeded", "76000 units over the MUE", "warning",
         priority=40, rank=None, fixes=frozenset({REDUCE_UNITS, REMOVE_LINE}),
         citations=frozenset({"ncci-mue", "policy"}), source="CMS NCCI MUE table, practitioner, July 2024"),
    Kind("place-of-service", "Place of service contradicts the encounter", "warning",
         priority=48, rank=None, fixes=frozenset({SET_PLACE_OF_SERVICE, ADD_MODIFIER, REMOVE_MODIFIER}),
         citations=frozenset({"policy", "mpfs"}),
         source="Medicare Claims Processing Manual, Chapter 26, section 10.5 (place of service of hospital "
                "patients) and Chapter 13, section 20 (professional component); CMS Place of Service Code Set"),
    Kind("session-units", "76000 billed more than once for one session", "warning",
         priority=45, rank=None, fixes=frozenset({REDUCE_UNITS, REMOVE_LINE}), citations=frozenset({"policy"}),
         source="CPT 76000 descriptor (one session, up to 1 hour); NCCI Policy Manual Chapter I, section V "
                "(MUEs) and Chapter IX, section G: units are per date of service, the code per session"),
    Kind("ncci-not-applied", "NCCI edits of the claim's program not applied", "info",
         priority=8, rank=None, fixes=frozenset(), citations=frozenset({PROGRAM_CITATION}),
         source="CMS Medicaid NCCI Edit Files (the Medicaid NCCI program's own PTP and MUE files) and the "
                "Medicaid NCCI Technical Guidance Manual (states apply the Medicaid NCCI edits to Medicaid "
                "claims): a Medicaid claim is not checked against Medicare's edits"),
    Kind("code-deleted", "Code deleted on the date of service", "warning",
         priority=15, rank=None, fixes=frozenset({REMOVE_LINE}), citations=frozenset({"policy"}),
         source="hooks/policy/deleted.tsv (76001 deleted for 2019: CMS NCCI PTP edits end 2018-12-31; no CMS MPFS 2024 "
                "or MUE 2024Q3 row)"),
])

FINDING_CODES = tuple(KINDS)
PTP_BUNDLED, PTP_MODIFIER_ALLOWED, FLUOROSCOPY_INTEGRAL, USE_GUIDANCE_CODE, MODIFIER_26, \
    DOCUMENTATION_MISSING, DURATION_EXCEEDED, MODIFIER_MISUSE, MUE_EXCEEDED, PLACE_OF_SERVICE, \
    SESSION_UNITS, NCCI_NOT_APPLIED, CODE_DELETED = FINDING_CODES
REMOVAL_CODES = tuple(sorted((k.code for k in KINDS.values() if k.rank is not None), key=lambda c: KINDS[c].rank))


@dataclass(frozen=True)
class Citation:
    """Where a finding's rule comes from: an NCCI/MPFS row or a policy entry."""

    kind: str  # "ncci-ptp" | "ncci-mue" | "ncci-aoc" | "mpfs" | "policy" | "ncci-program"
    text: str  # one line a coder can check, e.g. "NCCI PTP practitioner 2024Q3: 29881 / 76000, modifier indicator 1 (...)"
    release: str | None = None  # release label, e.g. "2024Q3" or "starter-2024Q3"
    starter: bool = False  # True when cited from the starter set (cards must say so)
    details: tuple[tuple[str, str], ...] = ()  # e.g. (("column1","29881"),("column2","76000"),...)


@dataclass(frozen=True)
class Fix:
    """A machine-readable correction. The first fix of a finding is the recommended one."""

    action: str  # one of FIX_ACTIONS
    line: str | None = None  # Line.key it applies to
    code: str | None = None  # REPLACE_CODE: the new code
    modifier: str | None = None  # ADD_MODIFIER / REMOVE_MODIFIER
    units: int | None = None  # REDUCE_UNITS: the new unit count
    elements: tuple[str, ...] = ()  # DOCUMENT: documentation element codes
    label: str = ""  # what the suggestion says, e.g. "Remove 76000 (bundled into 33289)"
    recommended: bool = True
    pos: str | None = None  # SET_PLACE_OF_SERVICE: the CMS place-of-service code
    then: tuple["Fix", ...] = ()  # further edits of the same suggestion, applied in order (e.g. append 26)


@dataclass(frozen=True)
class Finding:
    """One problem the rules found, as the cards render it (its Kind: KINDS[code])."""

    code: str  # one of FINDING_CODES
    severity: str  # "info" | "warning" (payment risk is never "critical")
    summary: str  # under 140 characters (clip_summary), actionable
    reason: str  # plain-language markdown explanation
    lines: tuple[str, ...] = ()  # Line.key(s) concerned
    citations: tuple[Citation, ...] = ()
    fixes: tuple[Fix, ...] = ()
    missing: tuple[str, ...] = ()  # DOCUMENTATION_MISSING: element codes
    payment: str | None = None  # payment effect, e.g. "76000 global 1.28 RVU ($42.61) vs -26 0.44 RVU ($14.65)"
    override_reasons: tuple[tuple[str, str], ...] = ()  # (code, display) a clinician may give to keep 76000

    def __init__(self, code: str, severity: str, summary: str, reason: str,
                 lines: tuple[str, ...] = (), citations: tuple[Citation, ...] = (),
                 fixes: tuple[Fix, ...] = (), missing: tuple[str, ...] = (),
                 payment: str | None = None, override_reasons: tuple[tuple[str, str], ...] = ()) -> None:
        self.__dict__.update(code=code, severity=severity, summary=summary, reason=reason,
                             lines=lines, citations=citations, fixes=fixes, missing=missing,
                             payment=payment, override_reasons=override_reasons)


def order_key(f: Finding) -> tuple:
    """Most important first: the kind's priority, then its position in the contract, then the lines."""
    return (KINDS[f.code].priority, FINDING_CODES.index(f.code), tuple(f.lines))


def select(findings: Sequence[Finding], config: dict) -> list[Finding]:
    """The findings to show, in card order: switched-off kinds dropped, one per (code, lines), at
    most ``max-cards`` (0 = all). The one place findings are ordered and cut."""
    seen: set[tuple] = set()
    out = []
    for f in (sorted(findings, key=order_key) if len(findings) > 1 else findings):
        if config.get(KINDS[f.code].switch, True) is False:
            continue
        key = (f.code, tuple(f.lines))
        if key not in seen:
            seen.add(key)
            out.append(f)
    limit = config.get("max-cards") or 0
    return out[:limit] if type(limit) is int and limit > 0 else out

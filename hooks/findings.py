"""Findings: what the rules conclude, with reason, citations, payment effect and a machine-readable fix.

Each finding is declared once, as a :class:`Kind` in :data:`KINDS` (docs/rules.md, "Adding a
finding"): its code (the card topic of docs/contract.md#card-topics), display, severity, card
priority, removal rank, configuration switch, the fixes it may offer, the citations it needs, the
card's wording (summary, reason, fix labels, "also applies") and its override reasons. The engine (:mod:`hooks.rules.engine`) and the
cards (:mod:`hooks.cards`) both read it; a declaration missing a part raises
:class:`DeclarationError` at import. :func:`select` orders the findings and applies ``max-cards``,
in this one place.

Finding and Fix, built several times per request, define their own ``__init__`` (one ``__dict__`` update
instead of one ``object.__setattr__`` per field, 0.7 us instead of 2.6 us; see hooks/model.py):
still frozen, same fields and defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from string import Formatter
from types import MappingProxyType
from typing import Iterable, Mapping, Sequence

from .model import DISTINCT_MODIFIERS

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
    kinds it may cite (every finding cites at least one). ``wording``: the card's words, as
    ``str.format`` templates by name: at least ``summary`` and ``reason``, and for a removal problem
    ``also`` (how it is named under "Also applies" on another removal finding's card; fields
    {partner}, {add_on}, {column1}, {indicator}, {why}); the rule fills them (:meth:`say`).
    ``override_reasons``: (code, display) Codings a clinician may give to keep 76000;
    ``override_modifiers``: (reason code, the distinct-service modifier it stands for; "" for the
    configured ``distinct-modifier``), one bypass suggestion each. ``source``: where the rule comes
    from (cited in docs/rules.md).
    """

    code: str
    display: str
    severity: str
    priority: int
    rank: int | None
    fixes: frozenset[str]
    citations: frozenset[str]
    source: str
    wording: Mapping[str, str] = field(default_factory=dict, compare=False)
    override_reasons: tuple[tuple[str, str], ...] = ()
    override_modifiers: tuple[tuple[str, str], ...] = ()
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
        object.__setattr__(self, "wording", MappingProxyType(_checked_wording(self)))
        reasons = {c for c, _d in self.override_reasons}
        for reason, modifier in self.override_modifiers:
            if reason not in reasons or modifier not in DISTINCT_MODIFIERS | {""}:
                raise DeclarationError(f"finding {self.code!r}: override_modifiers maps reasons it offers to "
                                       f"{sorted(DISTINCT_MODIFIERS)} (or '' for the configured one)")

    def say(self, name: str, /, **fields) -> str:
        """The wording `name` of the card, its fields filled in (KeyError: not declared)."""
        return self.wording[name].format(**fields)


def _checked_wording(kind: Kind) -> dict[str, str]:
    """The declaration's wording: summary and reason (and also, for a removal problem) present,
    every template a non-empty string that str.format can read."""
    wording = kind.wording
    if not isinstance(wording, Mapping):
        raise DeclarationError(f"finding {kind.code!r}: wording must map names to templates")
    required = ("summary", "reason") + (("also",) if kind.rank is not None else ())
    lacking = [n for n in required if n not in wording]
    if lacking:
        raise DeclarationError(f"finding {kind.code!r}: wording lacks {', '.join(lacking)}")
    for name, text in wording.items():
        if type(name) is not str or type(text) is not str or not text.strip():
            raise DeclarationError(f"finding {kind.code!r}: wording {name!r} must be a non-empty string")
        try:
            list(Formatter().parse(text))
        except ValueError as err:
            raise DeclarationError(f"finding {kind.code!r}: wording {name!r} is not a template ({err})") from None
    return dict(wording)


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
_PTP_ALSO = "NCCI PTP edit {column1}/76000, modifier indicator {indicator}"
_MODIFIERS = ("CMS MLN fact sheet MLN1783722 'Proper Use of Modifiers 59, XE, XP, XS, & XU' (February 2024) and CMS "
              "CR8863 (Transmittal 1422): XE separate encounter, XS separate structure, XP separate practitioner, XU "
              "unusual non-overlapping service")
# A removal finding cites the rows of every removal problem of its line ("Also applies"): PTP rows, the AOC
# row of a guidance add-on, policy entries (found by tests/test_fix_clean.py: 33289 + 10160 + 76000).
_REMOVAL_CITES = frozenset({"ncci-ptp", "ncci-aoc", "policy"})

# Wording every removal finding's card shares (hooks.rules.engine._removal_finding).
ALSO_APPLIES = "\n\nAlso applies: {}."
COMPONENT_NOTE = "\n\nModifier 26/TC identifies a payment component; it does not bypass an NCCI edit."
NOT_PAYABLE = "{billed} {amount} is not separately payable"

KINDS: dict[str, Kind] = declare([
    Kind("ptp-bundled", "76000 bundled by an NCCI PTP edit (modifier indicator 0)", "warning",
         priority=10, rank=1, fixes=frozenset({REMOVE_LINE}), citations=_REMOVAL_CITES,
         source=_PTP, wording={
             "summary": "Remove 76000: NCCI bundles it into {partner}{when}; no modifier can bypass this edit",
             "reason": "An active NCCI PTP edit pairs column 1 **{column1}** with column 2 **76000** (modifier "
                       "indicator **0**: no modifier allowed; rationale: {rationale}). 76000 is not separately "
                       "reportable with {partner}{when}.",
             "remove": "Remove 76000 (bundled into {partner})",
             "also": _PTP_ALSO}),
    Kind("ptp-modifier-allowed", "76000 in an NCCI PTP edit that allows a modifier (indicator 1)", "warning",
         priority=30, rank=4, fixes=frozenset({REMOVE_LINE, ADD_MODIFIER}), citations=_REMOVAL_CITES,
         source=f"{_PTP}; {_DISTINCT}; {_MODIFIERS}", wording={
             "row": "An active NCCI PTP edit pairs column 1 **{column1}** with column 2 **76000** (modifier "
                    "indicator **1**; rationale: {rationale}).",
             "summary": "Remove 76000 (bundled into {partner}) unless the fluoroscopy was distinct; then append "
                        "the modifier that says how",
             "summary.claimed": "Remove 76000 (bundled into {partner}): nothing in the record supports {claimed}",
             "reason": "{row} Nothing in the record shows the fluoroscopy was distinct (a separate encounter, "
                       "practitioner or anatomic site), so 76000 is bundled.{advice}{dx_note}",
             "advice": " Append a distinct-service modifier only if the record shows the fluoroscopy truly was "
                       "distinct, the one that says how (XS separate structure, XE separate encounter, XP separate "
                       "practitioner, XU unusual non-overlapping service; CMS MLN1783722), and document why.",
             "advice.claimed": " Keep {claimed} only if the record is completed to show it, and document why.",
             "dx-note": " The linked diagnoses differ, but a different diagnosis alone does not make a service "
                        "distinct (CMS MLN1783722); confirm a separate site, session or practitioner.",
             "summary.evidence": "Append {modifier} to 76000: the record shows {what} from {partner}",
             "reason.evidence": "{row} The record shows the fluoroscopy was distinct from {partner}: {what}. Report "
                                "it with modifier {modifier} (CMS NCCI Policy Manual, Chapter I, section E; CMS "
                                "MLN1783722), or remove 76000 if it was not.",
             "append.evidence": "Append {modifier}: the record shows {what} ({partner})",
             "evidence.XE": "a separate encounter or session",
             "evidence.XS": "a separate anatomic site",
             "append.reason": "Append {modifier} ({meaning}): {reason}",
             "meaning.XE": "separate encounter", "meaning.XS": "separate structure",
             "meaning.XP": "separate practitioner", "meaning.XU": "unusual non-overlapping service",
             "meaning.59": "distinct procedural service",
             "remove": "Remove 76000 (bundled into {partner})",
             "also": _PTP_ALSO},
         override_reasons=(
             ("distinct-site", "Fluoroscopy of a different anatomic site than the procedure"),
             ("distinct-session", "Separate session or encounter on the same date"),
             ("distinct-practitioner", "Performed by a different practitioner"),
             ("distinct-indication", "Separate, unrelated service documented"),
             ("payer-policy", "Payer policy allows separate reporting")),
         # the suggestion of each reason appends its modifier (CMS MLN1783722; CMS CR8863, Transmittal 1422):
         # a site XS, a session XE, a practitioner XP, a separate service not overlapping the usual
         # components of the procedure XU; payer policy: the configured distinct-modifier
         override_modifiers=(("distinct-site", "XS"), ("distinct-session", "XE"), ("distinct-practitioner", "XP"),
                             ("distinct-indication", "XU"), ("payer-policy", ""))),
    Kind("fluoroscopy-integral", "Fluoroscopy is integral to the primary procedure", "warning",
         priority=20, rank=3, fixes=frozenset({REMOVE_LINE}), citations=_REMOVAL_CITES,
         source="hooks/policy/integral.tsv (CPT descriptors; NCCI Policy Manual Chapters IV, VIII, IX)", wording={
             "summary": "Remove 76000: fluoroscopy is integral to {partner} ({category})",
             "reason": "Fluoroscopy is part of **{partner}**: {description}. It is not separately reportable as "
                       "76000{when}. Never add 76000 to this procedure.",
             "remove": "Remove 76000 (integral to {partner})",
             "also": "fluoroscopy is integral to {partner} (policy)"}),
    Kind("use-guidance-code", "A fluoroscopic guidance code applies instead of 76000", "warning",
         priority=20, rank=2, fixes=frozenset({REPLACE_CODE, REMOVE_LINE, ADD_MODIFIER, REMOVE_MODIFIER}),
         citations=frozenset({"ncci-aoc", "policy", "ncci-ptp", "mpfs"}),
         source="CMS NCCI add-on code edits (77001-77003), July 2024; hooks/policy/guidance.tsv; the replacement "
                "billed -26 for a hospital patient per its MPFS PC/TC indicator (Claims Processing Manual ch. 13 s. 20)",
         wording={
             "summary": "Replace 76000 with {add_on}: fluoroscopic guidance for {partner} uses the add-on code",
             "reason": "{partner} is a listed primary procedure of the fluoroscopic guidance add-on **{add_on}**. "
                       "Guidance for it is reported with {add_on}, not with 76000 (a separate diagnostic "
                       "fluoroscopy).",
             "replace": "Replace 76000 with {code}",
             "replace.component": "Replace 76000 with {code}-26",
             "payment": "{billed} {amount} -> {new} {new_amount}{cf}",
             "summary.billed": "Remove 76000: {add_on} already reports the fluoroscopic guidance for {partner}",
             "reason.billed": "Fluoroscopic guidance for {partner} is reported with add-on **{add_on}**, which is "
                              "already billed{when}; 76000 would report the same fluoroscopy twice.",
             "remove.billed": "Remove 76000 ({add_on} already billed)",
             "summary.sibling": "Bill {code} instead of {partner} + 76000: {code} includes the imaging guidance",
             "reason.sibling": "**{code}** is {partner} with imaging guidance included ({description}). Reporting "
                               "{partner} plus 76000 for the guidance unbundles it{when}; report {code} alone.",
             "sibling": "Bill {code} (includes imaging guidance) instead of {partner} + 76000",
             "sibling.remove": "Remove 76000",
             "payment.sibling": "{partner} {old_amount} + {billed} {amount} -> {code} {new_amount}",
             # a replacement the corrected claim would still deny (issue 10 s.4, facts clean-fix)
             "summary.not-clean": "Remove 76000: {add_on} is not offered instead, {short} on this claim",
             "reason.not-clean": "{offered}, but that fix is not offered: the corrected claim, reviewed again with "
                                 "the same rules, would still be denied: {whys}. Remove 76000{when}.",
             "offered": "{partner} is a listed primary procedure of the fluoroscopic guidance add-on **{add_on}**, "
                        "which would replace 76000",
             "offered.sibling": "**{code}** is {partner} with imaging guidance included and would replace {partner} + "
                                "76000",
             "remove.not-clean": "Remove 76000 ({short})",
             "also": "{add_on} reports the fluoroscopic guidance for {partner}"}),
    Kind("modifier-26", "Professional component (modifier 26) in a facility setting", "warning",
         priority=50, rank=None, fixes=frozenset({ADD_MODIFIER, REMOVE_MODIFIER}),
         citations=frozenset({"mpfs", "policy"}),
         source="CMS MPFS 2024 PC/TC indicators; Medicare Claims Processing Manual, Chapter 13, section 20 "
                "(the TC of a radiology service to a hospital patient is paid to the hospital, not a supplier)",
         wording={
             "summary": "Append modifier 26 to 76000: professional component in a facility setting ({where})",
             "reason": "76000 is billed in a facility setting ({where}) without modifier 26 or TC. The facility is "
                       "paid the technical component; the professional reports 76000-26 unless the practice bills "
                       "globally (configuration `global-billing`).",
             "fix": "Append modifier 26 to 76000",
             "summary.tc": "Bill 76000-26, not {billed}: the hospital is paid the technical component ({where})",
             "reason.tc": "76000 is billed with modifier TC on a professional claim for a hospital patient "
                          "({where}). The technical component of a radiology service to a hospital patient is paid "
                          "to the hospital, not to a supplier; the professional bills the professional component, "
                          "76000-26.",
             "fix.tc": "Bill 76000-26 (remove TC)",
             "remove-tc": "Remove TC from {code}",
             "append-26": "Append modifier 26 to {code}",
             "payment": "76000 global {glob} vs -26 {prof}{cf}"}),
    Kind("documentation-missing", "Fluoroscopy documentation missing", "warning",
         priority=70, rank=None, fixes=frozenset({DOCUMENT}), citations=frozenset({"policy", "ncci-ptp"}),
         source="Medicare Claims Processing Manual, Chapter 13, section 20.1; ACR-AAPM fluoroscopy practice parameter",
         wording={
             "summary": "Document {listed} for 76000, or do not bill it",
             "reason": "76000 is billable here, but its documentation lacks: {names}. Each element is read from the "
                       "FHIR record as listed in docs/rules.md.",
             "implausible": "\n\nThe recorded fluoroscopy time ({shown}) is not plausible (zero, negative or over 24 "
                            "hours) and does not count as documentation; correct the DICOM 113730 Total Fluoro Time.",
             "unrelated": "\n\nOn file but not about the fluoroscopy (not linked to the 76000 Procedure by "
                          "Procedure.report, basedOn its order or ImagingStudy.procedureReference, nor a fluoroscopy "
                          "report or an RF / XA study): {resources}. A CT or other report does not document the "
                          "fluoroscopy.",
             "unbilled": "\n\nThe record shows {procedures} on the same date, which includes or bundles fluoroscopy; "
                         "document that the fluoroscopy was a separate procedure (different site, session or "
                         "indication), or do not bill 76000.",
             "document": "Complete the fluoroscopy documentation",
             "link": "Complete the fluoroscopy documentation",
             "smart-link": "Record the missing fluoroscopy documentation",
             "missing-heading": "**Missing documentation**",
             # each element: in the summary and reason (element.*), in the card's list (missing.*)
             "element.indication": "indication", "element.fluoroscopy-time": "fluoroscopy time",
             "element.radiation-dose": "radiation dose", "element.body-site": "body site",
             "element.findings": "findings", "element.images-retained": "retained images",
             "element.signed-interpretation": "signed interpretation",
             "element.separate-procedure": "that it was a separate procedure",
             "missing.indication": "indication (reason code or linked diagnosis)",
             "missing.fluoroscopy-time": "fluoroscopy time (DICOM 113730 Total Fluoro Time)",
             "missing.radiation-dose": "radiation dose (DICOM 113722 / 113726 / 113725)",
             "missing.body-site": "body site examined",
             "missing.findings": "findings (report conclusion)",
             "missing.images-retained": "images retained (imaging study)",
             "missing.signed-interpretation": "signed interpretation (final report with interpreter)",
             "missing.separate-procedure": "a separate procedure (no other same-date procedure that includes "
                                           "fluoroscopy)"}),
    Kind("duration-exceeded", "Fluoroscopy time over one hour", "info",
         priority=60, rank=None, fixes=frozenset(), citations=frozenset({"policy"}),
         source="CPT 76000 descriptor (up to 1 hour); 76001 deleted (NCCI edits end 2018-12-31)", wording={
             "summary": "Fluoroscopy time {minutes:g} min exceeds 76000's one hour: bill one unit, document the time",
             "reason": "The documented fluoroscopy time is **{minutes:g} minutes**. CPT 76000 covers up to one hour; "
                       "76001 (over one hour) was deleted (edits end 2018-12-31) and more units of 76000 are not "
                       "the fix. Document the reason for the prolonged time in the report."}),
    Kind("modifier-misuse", "Modifier misused on 76000", "warning",
         priority=10, rank=0, fixes=frozenset({REMOVE_LINE}), citations=_REMOVAL_CITES,
         source=_DISTINCT, wording={
             "summary": "Remove 76000: modifier {modifiers} cannot bypass the NCCI edit with {partner} (indicator 0)",
             "summary.contradicted": "Remove 76000: {modifiers} is at the same site and session as {partner}; "
                                     "76000 stays bundled",
             "reason": "The 76000 line carries {modifier_list}, but {why}. The NCCI PTP edit {column1}/76000 "
                       "(modifier indicator {indicator}, rationale: {rationale}) applies{when}, so 76000 is not "
                       "separately reportable.",
             "remove": "Remove 76000 (bundled into {partner})",
             "why.indicator-0": "modifier {modifiers} cannot bypass an edit with modifier indicator 0",
             "why.component": "modifier {modifiers} identifies a payment component; it does not bypass an NCCI edit",
             "why.encounter": "XE claims a separate encounter, but 76000 and {partner} share the encounter or "
                              "overlap in time",
             "why.practitioner": "XP claims a separate practitioner, but the same practitioner performed {partner}",
             "why.site": "modifier {modifier} is on a 76000 at the same site and session as {partner}",
             "also": "{why}"}),
    Kind("mue-exceeded", "76000 units over the MUE", "warning",
         priority=40, rank=None, fixes=frozenset({REDUCE_UNITS, REMOVE_LINE}),
         citations=frozenset({"ncci-mue", "policy"}), source="CMS NCCI MUE table, practitioner, July 2024", wording={
             "summary": "Reduce 76000 to {limit} units{when}: {total} exceeds the MUE of {limit}",
             "summary.session": "Reduce 76000 to {units} unit{s}{when}: {total} exceeds the MUE of {limit} and one "
                                "unit per session",
             "reason": "{total} units of 76000 are billed {scope}{when_paren}; the Medically Unlikely Edit allows "
                       "**{limit}** (MAI {mai}, {rationale}). Units over the MUE are denied.{session_note}",
             "scope.line": "on one line",
             "scope.date": "on one date of service",
             "session-note": " 76000 is also one unit per session: the record documents {sessions} session{s} for "
                             "this line.",
             "reduce": "Reduce 76000 to {units} unit{s}",
             "remove": "Remove the extra 76000 line",
             "payment": "{excess} unit{s} over the MUE: {amount} denied"}),
    Kind("place-of-service", "Place of service contradicts the encounter", "warning",
         priority=48, rank=None, fixes=frozenset({SET_PLACE_OF_SERVICE, ADD_MODIFIER, REMOVE_MODIFIER}),
         citations=frozenset({"policy", "mpfs"}),
         source="Medicare Claims Processing Manual, Chapter 26, section 10.5 (place of service of hospital "
                "patients) and Chapter 13, section 20 (professional component); CMS Place of Service Code Set",
         wording={
             "summary": "Place of service {pos} contradicts the record ({where}): use POS {record}{component}",
             "summary.unknown": "Place of service {pos} contradicts the record ({where}): use the facility's "
                                "POS{component}",
             "reason": "The claim line reports place of service **{pos}** (non-facility), but the record shows a "
                       "facility patient: {where}. A professional claim reports the place where the patient was"
                       "{record_named}, and for a hospital patient the professional bills the professional "
                       "component: the record's setting, not the line's POS, decides it.",
             "record-named": " (POS {record}, {name})",
             "component": " and bill 76000-26",
             "set": "Set POS {record}",
             "fix": "Set place of service {record} ({name}){component}",
             "fix.unknown": "Bill 76000-26 and correct the place of service to the facility's",
             "pos.21": "inpatient hospital", "pos.22": "on-campus outpatient hospital",
             "pos.23": "emergency room - hospital", "pos.24": "ambulatory surgical center",
             "pos.11": "office", "pos.other": "facility",
             # the reverse: a facility POS on a line while the record shows an office visit
             "summary.office": "Place of service {pos} contradicts the record ({where}): use POS {record}",
             "reason.office": "The claim line reports place of service **{pos}** (facility), but the record shows "
                              "an office visit: {where}. A professional claim reports the place where the patient "
                              "was (POS {record}, {name}); the record's setting, not the line's POS, decides the "
                              "payment (non-facility rate) and the component.",
             "fix.office": "Set place of service {record} ({name})"}),
    Kind("session-units", "76000 billed more than once for one session", "warning",
         priority=45, rank=None, fixes=frozenset({REDUCE_UNITS, REMOVE_LINE}), citations=frozenset({"policy"}),
         source="CPT 76000 descriptor (one session, up to 1 hour); NCCI Policy Manual Chapter I, section V "
                "(MUEs) and Chapter IX, section G: units are per date of service, the code per session",
         wording={
             "summary": "Bill {units} unit{s} of 76000{when}: one unit per fluoroscopy session",
             "reason": "{billed} units of 76000 are billed on one line{when}, and the record documents {units} "
                       "session{s}. 76000 reports one session of up to one hour, whatever the number of sites or "
                       "images; time over an hour is not more units (76001 was deleted).",
             "reduce": "Bill {units} unit{s} of 76000 (one per session)",
             "summary.twin": "Remove the second 76000{when}: one fluoroscopy session is one unit",
             "reason.twin": "Two 76000 lines ({first}, {second}) are billed for the same session{when} (same "
                            "encounter or overlapping times). 76000 reports one session of up to one hour, whatever "
                            "the number of sites examined; bill it once.",
             "remove.twin": "Remove the second 76000 of the session"}),
    Kind("ncci-not-applied", "NCCI edits of the claim's program not applied", "info",
         priority=8, rank=None, fixes=frozenset(), citations=frozenset({PROGRAM_CITATION}),
         source="CMS Medicaid NCCI Edit Files (the Medicaid NCCI program's own PTP and MUE files) and the "
                "Medicaid NCCI Technical Guidance Manual (states apply the Medicaid NCCI edits to Medicaid "
                "claims): a Medicaid claim is not checked against Medicare's edits",
         wording={
             "summary": "{name} NCCI {tables} not checked: no {name} NCCI release is imported",
             "reason": "This is a **{name}** claim ({why}). The {name} NCCI program publishes its own PTP and MUE "
                       "files (CMS \"{name} NCCI Edit Files\"), and no {name} release of the {setting} {tables} "
                       "answers{when}: they were **not applied** to the 76000 line(s). Medicare's edits are not used "
                       "instead: a state applies the {name} NCCI edits to {name} claims, and they differ from "
                       "Medicare's. The other rules (integral fluoroscopy, guidance codes, modifier 26, "
                       "documentation) were applied. Import the quarter's {name} files (`fluoro-cds ncci import "
                       "FILE... --program {program}`) to have them checked."}),
    Kind("code-deleted", "Code deleted on the date of service", "warning",
         priority=15, rank=None, fixes=frozenset({REMOVE_LINE}), citations=frozenset({"policy"}),
         source="hooks/policy/deleted.tsv (76001 deleted for 2019: CMS NCCI PTP edits end 2018-12-31; no CMS MPFS 2024 "
                "or MUE 2024Q3 row)", wording={
             "summary": "Remove {code}: the code was deleted on {deleted} and is not valid{when}",
             "reason": "{line} bills **{code}**, a code deleted on {deleted} ({description}); it is not valid on the "
                       "date of service{when} and will be rejected. Remove the line; report {use} once where it is "
                       "separately reportable, and document fluoroscopy time over one hour (duration-exceeded) "
                       "rather than bill it.",
             "remove": "Remove {code} (deleted code)"}),
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

    def __hash__(self) -> int:
        # The text's hash (computed once per string) instead of the generated hash of every field:
        # the cards' caches are keyed by citations (equal citations have equal texts).
        return hash(self.text)


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

    def __init__(self, action: str, line: str | None = None, code: str | None = None, modifier: str | None = None,
                 units: int | None = None, elements: tuple[str, ...] = (), label: str = "",
                 recommended: bool = True, pos: str | None = None, then: tuple[Fix, ...] = ()) -> None:
        self.__dict__.update(action=action, line=line, code=code, modifier=modifier, units=units,
                             elements=elements, label=label, recommended=recommended, pos=pos, then=then)


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

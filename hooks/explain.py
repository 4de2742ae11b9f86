""""Why no card?": what a review looked at, per draft order or claim line, and why it said nothing
(issue 11 section 8; docs/contract.md#why-no-card).

A request asks for it with ``extension["org.fluoro-cds.explain"]: true``; the response then
carries, in its ``extension["org.fluoro-cds.explanation"]``, one entry per draft order
(order-sign) or Claim item (claim review, and discharge when the Claim came with the request's
prefetch): its name, the code read, whether it was reviewed, the cards that concern it and the
reasons nothing (more) was said. Off by default; when off the service does nothing more than
look the key up (:func:`requested`). The entries hold only what the request carried (names,
codes, code systems, FHIR paths) and the service's own reasons.

Pure functions over the request's resources, the case, the findings and the cards.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

from . import fhir_read as fr
from .config import EXTENSION_PREFIX
from .context import DOCUMENTATION, InvalidResource, Unchecked
from .extract.cases import order_key
from .extract.codes import PROCEDURE_SYSTEMS, _PROC_CODE_RE, modifier_codes, procedure_code
from .extract.setting import pos_of
from .findings import KINDS, Finding
from .model import FLUORO, Case

EXPLAIN_KEY = EXTENSION_PREFIX + "explain"
EXPLAIN_KEYS = (EXPLAIN_KEY, "fluoro-cds.explain")  # the spelling, accepted too
EXPLANATION_KEY = EXTENSION_PREFIX + "explanation"

# Reasons (docs/contract.md#why-no-card)
NO_CPT = "no-cpt-coding"  # no CPT / HCPCS coding (codes of other terminologies, or none)
UNKNOWN_SYSTEM = "unknown-code-system"  # a coding in a system the service does not know
NOT_76000 = "not-76000"  # a procedure code other than 76000: looked at as 76000's partner only
DATA_UNAVAILABLE = "data-unavailable"  # data the review needed could not be fetched
UNRECOGNISED = "unrecognised-element"  # an element the service expected and could not read
NOT_REVIEWED_TYPE = "not-an-order-type-reviewed"  # e.g. a MedicationRequest among the drafts
SWITCHED_OFF = "switched-off"  # a finding the configuration switched off
MAX_CARDS = "max-cards"  # a finding cut by the max-cards option
NO_FINDING = "no-finding"  # reviewed, and no rule applies

# Terminologies the service knows are not procedure code systems (a coding in one of them is
# "no CPT coding", not "an unknown code system").
OTHER_KNOWN_SYSTEMS = frozenset({
    "http://loinc.org", "http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10", "http://www.cms.gov/Medicare/Coding/ICD10",
    "http://dicom.nema.org/resources/ontology/DCM", "http://www.nlm.nih.gov/research/umls/rxnorm",
})


def requested(extension: Any) -> bool:
    """Whether a request's ``extension`` asks for the explanation (the value ``true``)."""
    if not extension or type(extension) is not dict:
        return False
    return any(extension.get(k) is True for k in EXPLAIN_KEYS)


def _reason(code: str, detail: str) -> dict:
    return {"code": code, "detail": detail}


def coding_reasons(concept: Any, path: str) -> list[dict]:
    """Why a CodeableConcept gives no procedure code: its codings' systems (unknown ones named),
    or that it has no coding at all."""
    try:
        pairs = fr.codings(concept, path) if concept is not None else []
    except InvalidResource as exc:
        return [_reason(UNRECOGNISED, f"{exc.path}: {exc}")]
    unknown = sorted({s for s, _ in pairs if s is not None and s not in PROCEDURE_SYSTEMS
                      and s not in OTHER_KNOWN_SYSTEMS})
    out = [_reason(UNKNOWN_SYSTEM, f"{path}: code system '{s}' is not one the service reads "
                                   "(CPT http://www.ama-assn.org/go/cpt, HCPCS "
                                   "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets)")
           for s in unknown]
    if not out:
        known = sorted({s for s, _ in pairs if s is not None})
        what = f"codes of {', '.join(known)}" if known else \
            "codings without a system that are no CPT/HCPCS code" if pairs else "no coding"
        out.append(_reason(NO_CPT, f"{path}: {what}; the service reviews CPT/HCPCS codes"))
    return out


def _code_reasons(code: str, path: str) -> list[dict]:
    if not _PROC_CODE_RE.fullmatch(code):
        return [_reason(UNRECOGNISED, f"{path}: '{code}' is not of the CPT/HCPCS form "
                                      "(five characters)")]
    if code != FLUORO:
        return [_reason(NOT_76000, f"{code} is not 76000: the service reviews 76000 and looks at "
                                   "other codes as its partners (bundling, guidance codes)")]
    return []


def _claim_item_reasons(item: dict, path: str) -> list[dict]:
    """Elements of a Claim item with a procedure code that the service expected to read and
    could not: a modifier that is no CPT/HCPCS modifier, a place of service in no CMS POS code."""
    out = []
    mods = item.get("modifier")
    if isinstance(mods, list):
        try:
            read = modifier_codes(mods, path, "modifier")
        except InvalidResource:
            read = ()
        if len(read) < len(mods):
            out.append(_reason(UNRECOGNISED, f"{path}.modifier: {len(mods) - len(read)} of "
                                             f"{len(mods)} modifiers are no two-character "
                                             "CPT/HCPCS modifier; they were not read"))
    location = item.get("locationCodeableConcept")
    if location is not None:
        try:
            pos = pos_of(location, path, "locationCodeableConcept")
        except InvalidResource:
            pos = None
        if pos is None:
            out.append(_reason(UNRECOGNISED, f"{path}.locationCodeableConcept: no coding in the "
                                             "CMS place-of-service code set; the setting was "
                                             "taken from the record instead"))
    return out


class _Said:
    """Which cards concern which line (a card per finding, in order)."""

    def __init__(self, findings: Sequence[Finding], cards: Sequence[dict]):
        self.by_line: dict[str, list[str]] = {}
        for f, card in zip(findings, cards):
            for key in f.lines:
                self.by_line.setdefault(key, []).append(card.get("uuid"))

    def cards(self, key: str | None) -> list[str]:
        return list(self.by_line.get(key, ())) if key else []


def _silenced(key: str, all_findings: Sequence[Finding], shown: Sequence[Finding],
              config: dict) -> list[dict]:
    """Findings the rules made for the line that the configuration kept from the answer."""
    shown_ids = {(f.code, f.lines) for f in shown}
    out = []
    for f in all_findings:
        if key not in f.lines or (f.code, f.lines) in shown_ids:
            continue
        if config.get(KINDS[f.code].switch, True) is False:
            out.append(_reason(SWITCHED_OFF, f"'{f.code}' applies and is switched off by the "
                                             f"configuration option '{KINDS[f.code].switch}'"))
        else:
            out.append(_reason(MAX_CARDS, f"'{f.code}' applies and was cut by the configuration "
                                          f"option 'max-cards' ({config.get('max-cards')})"))
    return out


def _line_reasons(case: Case, key: str, code: str, path: str, cards: list[str],
                  unchecked: Unchecked, silenced: list[dict], partner_codes: Iterable[str],
                  element_reasons: list[dict] = ()) -> list[dict]:
    """Why a reviewed line has no card (or no more cards): its code, elements not read,
    findings the configuration kept back and, for a 76000 without a card, data not fetched or
    what was checked without a finding."""
    out = _code_reasons(code, path) + list(element_reasons) + list(silenced)
    if code != FLUORO or cards:
        return out
    for gap in unchecked:
        out.append(_reason(DATA_UNAVAILABLE, f"{gap.what}: {gap.why}"))
    if not out:
        partners = sorted(set(partner_codes) - {FLUORO})
        with_what = f"against {', '.join(partners)}" if partners else "with no other code"
        setting = "facility" if case.setting.facility else "non-facility"
        docs = ("documentation checked" if case.evidence_checked and not unchecked.affects(DOCUMENTATION)
                else "documentation not expected" if case.kind == "order" else "documentation not checked")
        out.append(_reason(NO_FINDING, f"76000 reviewed {with_what} (NCCI PTP and add-on edits, "
                                       f"integral procedures, guidance codes), its units (MUE), "
                                       f"the setting ({setting}) and modifiers; {docs}: no rule applies"))
    return out


def _entry(name: str | None, path: str, code: str | None, reviewed: bool, cards: list[str],
           reasons: list[dict]) -> dict:
    entry: dict = {"item": name or path, "path": path, "code": code, "reviewed": reviewed,
                   "cards": cards}
    if reasons:
        entry["reasons"] = reasons
    return entry


def all_on(config: dict) -> dict:
    """`config` with every finding switched on and no card limit: what the rules find before the
    configuration keeps findings back."""
    return {**config, **{k.switch: True for k in KINDS.values()}, "max-cards": 0}


def claim_lines(claim: dict, case: Case, findings: Sequence[Finding], cards: Sequence[dict],
                unchecked: Unchecked, config: dict,
                evaluate_all: Callable[[], Sequence[Finding]]) -> list[dict]:
    """One entry per Claim.item of the request's Claim. `evaluate_all`: the rules with every
    finding switched on and no card limit (called only here, so only when explaining)."""
    said = _Said(findings, cards)
    all_findings = evaluate_all()
    lines = {ln.sequence: ln for ln in case.lines if ln.kind == "claim-item"}
    codes = [ln.code for ln in case.lines]
    out = []
    for i, item in enumerate(claim.get("item") or ()):
        path = f"Claim.item[{i}]"
        if not isinstance(item, dict):
            continue
        line = lines.get(item.get("sequence")) if type(item.get("sequence")) is int else None
        name = line.key if line else path
        if line is None:
            product = item.get("productOrService")
            try:
                code = procedure_code(product, path, "productOrService") if isinstance(product, dict) else None
            except InvalidResource:
                code = None
            reasons = _code_reasons(code, path) if code else coding_reasons(product, f"{path}.productOrService")
            out.append(_entry(name, path, code, False, [], reasons))
            continue
        mine = said.cards(line.key)
        reasons = _line_reasons(case, line.key, line.code, path, mine, unchecked,
                                _silenced(line.key, all_findings, findings, config), codes,
                                _claim_item_reasons(item, path))
        out.append(_entry(name, path, line.code, True, mine, reasons))
    return out


def draft_orders(bundle: dict, case: Case, findings: Sequence[Finding], cards: Sequence[dict],
                 unchecked: Unchecked, config: dict,
                 evaluate_all: Callable[[], Sequence[Finding]]) -> list[dict]:
    """One entry per entry of the request's draftOrders Bundle."""
    said = _Said(findings, cards)
    all_findings = evaluate_all()
    lines = {ln.key: ln for ln in case.lines}
    entries = [e for e in bundle.get("entry") or () if isinstance(e, dict)
               and isinstance(e.get("resource"), dict)]
    names = {order_key(e, e["resource"]) for e in entries}
    # the drafts' codes only: the encounter's Procedures may come from the server
    codes = [ln.code for key, ln in lines.items() if key in names]
    out = []
    for i, entry in enumerate(bundle.get("entry") or ()):
        path = f"draftOrders.entry[{i}].resource"
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            continue
        rtype = res.get("resourceType")
        name = order_key(entry, res)
        if rtype not in ("ServiceRequest", "Procedure"):
            out.append(_entry(name, path, None, False, [], [_reason(
                NOT_REVIEWED_TYPE, f"{rtype} orders are not reviewed (the service reviews "
                                   "ServiceRequest and Procedure)")]))
            continue
        line = lines.get(name) if name else None
        if line is None:
            try:
                code = procedure_code(res.get("code"), path, "code")
            except InvalidResource:
                code = None
            reasons = (_code_reasons(code, path) or [_reason(UNRECOGNISED, f"{path}: an element of "
                                                                            "the order could not be read")])\
                if code else coding_reasons(res.get("code"), f"{path}.code")
            out.append(_entry(name, path, code, False, [], reasons))
            continue
        mine = said.cards(line.key)
        reasons = _line_reasons(case, line.key, line.code, path, mine, unchecked,
                                _silenced(line.key, all_findings, findings, config), codes)
        out.append(_entry(name, path, line.code, True, mine, reasons))
    return out


def extension(entries: list[dict], unchecked: Unchecked) -> dict:
    """The response's ``extension`` carrying the explanation."""
    return {EXPLANATION_KEY: {"items": entries,
                              "notChecked": [{"what": g.what, "why": g.why} for g in unchecked]}}

"""The fluoroscopy (CPT 76000) billing rules: a pure function from a :class:`~hooks.model.Case` to
:class:`~hooks.findings.Finding` s (docs/contract.md#card-topics). See ``docs/rules.md``.

Per 76000 line, every same-date partner line is checked for *removal problems*: an NCCI PTP edit
(76000 as column 2), a policy entry saying fluoroscopy is integral to the partner, or a guidance
add-on code that replaces 76000 for the partner. One problem per line is reported, the most
specific enabled one (the lowest ``rank`` of its :data:`hooks.findings.KINDS` declaration), citing
every row and policy entry that applies. A line with a removal problem is not billable: modifier-26,
documentation-missing, duration-exceeded and mue-exceeded are then not reported for it (they would
fix a line that must go).

Each declared finding has exactly one rule here: a removal builder in :data:`REMOVAL_BUILDERS` or a
billable-line rule in :data:`LINE_RULES`; a declaration without one (or a rule without a
declaration) raises :class:`hooks.findings.DeclarationError` at import.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from typing import Callable, NamedTuple, Sequence

from nccidata.api import AddOnEdit, PtpEdit, ReferenceData

from .. import distinct
from .. import findings as F
from ..findings import KINDS, REMOVAL_CODES, Citation, DeclarationError, Finding, Fix
from ..model import COMPONENT_MODIFIERS, DOC_ELEMENTS, FLUORO, INPATIENT_HOSPITAL, Case, Line
from . import cite
from .corrected import corrected_case, edits, touched
from .policy import Policy, PolicyEntry, policy

NO_DATE = date(9999, 12, 31)  # a line without a date of service: only edits without deletion apply
DURATION_LIMIT_MINUTES = 60.0
_FLUORO_SET = frozenset({FLUORO})

ELEMENT_LABELS = {"indication": "indication", "fluoroscopy-time": "fluoroscopy time",
                  "radiation-dose": "radiation dose", "body-site": "body site", "findings": "findings",
                  "images-retained": "retained images", "signed-interpretation": "signed interpretation",
                  "separate-procedure": "that it was a separate procedure"}


@dataclass(frozen=True)
class Problem:
    """One reason a 76000 line cannot be billed as it stands, against one partner line."""

    code: str
    partner: Line
    edit: PtpEdit | None = None
    entry: PolicyEntry | None = None  # integral or guidance policy entry
    add_on: str | None = None  # use-guidance-code: the add-on code
    aoc: AddOnEdit | None = None  # use-guidance-code: the AOC row that lists the partner
    add_on_billed: bool = False  # the add-on is already on the case that date
    why: str = ""  # modifier-misuse: what was misused
    evidence: frozenset[str] = frozenset()  # ptp-modifier-allowed: the distinct-service modifiers the record supports
    sibling: bool = False  # use-guidance-code: add_on is the partner's with-guidance sibling code (siblings.tsv)


    @property
    def rank(self) -> int:
        return KINDS[self.code].rank

    def phrase(self) -> str:
        """How this problem is named under "Also applies" (its kind's ``also`` wording)."""
        e = self.edit
        return KINDS[self.code].also.format(partner=self.partner.code, add_on=self.add_on, why=self.why,
                                            column1=e.column1 if e else "", indicator=e.modifier_indicator if e else "")

    def citations(self) -> list[Citation]:
        out = []
        if self.edit is not None:
            out.append(cite.ptp(self.edit))
        if self.aoc is not None:
            out.append(cite.aoc(self.aoc, self.partner.code))
        if self.entry is not None:
            out.append(self.entry.citation())
        return out


@dataclass
class _LineReview:
    line: Line
    day: date | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def billable(self) -> bool:
        return not self.problems


def evaluate(case: Case, reference: ReferenceData, config: dict) -> list[Finding]:
    """All findings for `case`, most important first, at most ``config['max-cards']`` (0 = all),
    as :func:`hooks.findings.select` orders and cuts them.

    Pure: depends only on its arguments (and the immutable policy files).
    """
    pol = policy()
    fluoro = [ln for ln in case.lines if ln.code == FLUORO and ln.units > 0]
    out: list[Finding] = []
    for code, claim_rule in CLAIM_RULES.items():  # one dict lookup per line (code-deleted)
        if config.get(KINDS[code].switch, True):
            out.extend(claim_rule(case, reference, config, pol))
    if not fluoro:
        return F.select(out, config) if out else []
    reviews = [_review_line(case, ln, reference, pol) for ln in fluoro]
    billable = []
    for review in reviews:
        if not review.problems:
            billable.append(review)
            continue
        # a finding is enabled unless the configuration switches it off (a falsy value)
        chosen = [p for p in review.problems if config.get(KINDS[p.code].switch, True)]
        if chosen:
            problem = chosen[0] if len(chosen) == 1 else min(chosen, key=_rank_of)
            out.append(_removal_finding(case, review, problem, reference, config))
    if billable:
        for code, rule in LINE_RULES.items():
            if config.get(KINDS[code].switch, True):
                out.extend(rule(case, billable, reference, config, pol))
    return F.select(out, config)


def _rank_of(p: Problem) -> int:
    return KINDS[p.code].rank


# --- removal problems ----------------------------------------------------------------------------
def guidance_add_on(code: str, on: date, reference: ReferenceData, pol: Policy) -> tuple[str, AddOnEdit | None, PolicyEntry | None] | None:
    """The guidance add-on that replaces 76000 for primary `code`: the AOC table in service first
    (77001/77002/77003 rows listing `code`), then the guidance policy file."""
    entry = pol.guidance.get(code)
    for add_on in pol.guidance_add_ons:
        edit = reference.add_on(add_on, on)
        if edit is not None and code in edit.primaries:
            return add_on, edit, entry if entry is not None and entry.add_on == add_on else None
    if entry is not None and entry.add_on:
        return entry.add_on, None, entry
    return None


def _review_line(case: Case, line: Line, reference: ReferenceData, pol: Policy,
                 only: Sequence[Line] | None = None) -> _LineReview:
    """The removal problems of one 76000 line against each same-date partner line (`only`: these
    partners). Another code's line (the code a fix puts on the claim, re-reviewed by
    :func:`fix_conflicts`) is reviewed the same way for the PTP edits with it as column 2; the
    fluoroscopy policies (siblings, guidance add-ons, integral) are 76000's only.

    A partner of a different rendering practitioner is not a PTP pair (NCCI pairs services of the
    same provider): no problem. An indicator-0 edit is never bypassed. With a distinct-service
    modifier the record contradicts (hooks.distinct.contradicted), the line is modifier-misuse; with
    one the record supports (a separate encounter or site), it is separately reportable. Without
    a modifier, a record showing a separate encounter or site makes an indicator-1 edit a
    ptp-modifier-allowed finding whose recommended fix appends the matching modifier, and the
    fluoroscopy is not part of the partner (no integral or guidance-code problem).
    """
    default_date = case.default_date
    day = line.service_date or default_date
    review = _LineReview(line, day)
    code = line.code
    fluoro = code == FLUORO
    # partners: the other (other code, billed) lines of the same date (Case.line_date inlined)
    if only is None:
        partners = [p for p in case.lines if p.code != code and p.units > 0
                    and (day is None or (p.service_date or default_date) in (None, day))]
    else:
        partners = list(only)
    if not partners:
        return review
    on = day or NO_DATE
    billed = {p.code for p in partners}
    edits = {} if case.setting.ncci_setting == INPATIENT_HOSPITAL else {
        e.column1: e for e in reference.ptp_edits(billed | (_FLUORO_SET if fluoro else {code}), on,
                                                   case.setting.ncci_setting)
        if e.column2 == code and e.column1 != code and e.modifier_indicator in ("0", "1") and e.in_force(on)}
    components = COMPONENT_MODIFIERS.intersection(line.modifiers)
    claimed = line.distinct_modifiers()
    for partner in partners:
        shown = distinct.evidence(line, partner)
        if distinct.SEPARATE_PRACTITIONER in shown:
            continue  # another practitioner's service: not a PTP pair, nothing of it is in this 76000
        edit = edits.get(partner.code)
        if edit is not None and edit.modifier_indicator == "0":
            if claimed:
                review.problems.append(Problem(F.MODIFIER_MISUSE, partner, edit=edit,
                                               why=f"modifier {'/'.join(claimed)} cannot bypass an edit with "
                                                   "modifier indicator 0"))
            elif components:
                review.problems.append(Problem(F.MODIFIER_MISUSE, partner, edit=edit,
                                               why=f"modifier {'/'.join(sorted(components))} identifies a payment "
                                                   "component; it does not bypass an NCCI edit"))
            else:
                review.problems.append(Problem(F.PTP_BUNDLED, partner, edit=edit))
            continue
        misuse = distinct.contradicted(line, partner) if claimed else []
        if misuse and edit is not None:
            review.problems.append(Problem(F.MODIFIER_MISUSE, partner, edit=edit,
                                           why="; ".join(why for _m, why in misuse)))
        elif claimed and shown:
            continue  # a distinct service the record supports: separately reportable (indicator 1 bypass)
        if shown and not claimed:
            if edit is not None:
                review.problems.append(Problem(F.PTP_MODIFIER_ALLOWED, partner, edit=edit, evidence=shown))
            continue  # separate encounter or site: the fluoroscopy is not part of the partner
        if not fluoro:  # another code (a replacement re-reviewed, issue 10 s.4): its PTP edits only
            if edit is not None:
                review.problems.append(Problem(F.PTP_MODIFIER_ALLOWED, partner, edit=edit))
            continue
        sibling = pol.siblings.get(partner.code)
        guidance = None if sibling is not None else guidance_add_on(partner.code, on, reference, pol)
        if sibling is not None:
            review.problems.append(Problem(F.USE_GUIDANCE_CODE, partner, edit=edit, entry=sibling,
                                           add_on=sibling.add_on, add_on_billed=sibling.add_on in billed,
                                           sibling=True))
        if guidance is not None:
            add_on, aoc, entry = guidance
            review.problems.append(Problem(F.USE_GUIDANCE_CODE, partner, edit=edit, entry=entry, add_on=add_on,
                                           aoc=aoc, add_on_billed=add_on in billed))
        entry = pol.integral.get(partner.code)
        if entry is not None:
            review.problems.append(Problem(F.FLUOROSCOPY_INTEGRAL, partner, edit=edit, entry=entry))
        if edit is not None:
            review.problems.append(Problem(F.PTP_MODIFIER_ALLOWED, partner, edit=edit))
    return review


def _unbilled_conflicts(case: Case, review: _LineReview, reference: ReferenceData, pol: Policy) -> list[Problem]:
    """Problems of a billable 76000 with Procedures of the record that are not on the claim: they
    question whether the fluoroscopy was a separate procedure (docs/contract.md#where-the-facts-live-in-fhir)."""
    if not case.context_lines:
        return []
    pseudo = replace(case, lines=(review.line,) + case.context_lines)
    return _review_line(pseudo, review.line, reference, pol).problems


class Conflict(NamedTuple):
    """What a fix would leave wrong on the corrected claim (issue 10 s.4): one line's problem there."""

    line: Line  # the line with the problem, as corrected (the replacement, or a line it would bundle)
    short: str  # "77002 would be bundled into 73040"
    why: str  # short, with the edit: "... (NCCI PTP 73040/77002, modifier indicator 1, ...)"
    citations: tuple[Citation, ...]


def fix_conflicts(case: Case, fix: Fix, reference: ReferenceData, pol: Policy | None = None) -> list[Conflict]:
    """The problems the corrected claim has on the lines `fix` touches: the case with `fix` applied
    (:func:`hooks.rules.corrected.corrected_case`) reviewed again with the same rules
    (:func:`_review_line`). For a code the fix puts on a line, also: an add-on code whose listed
    primaries (CMS AOC, edit type 1) are all absent that date, and a line of the claim the new code
    would newly bundle (the new code as column 1 of a PTP edit the replaced code did not have).
    Empty: the fix leaves a clean claim. Runs only when a replacement is built (not per line)."""
    pol = pol or policy()
    after = corrected_case(case, fix)
    keys = touched(fix)
    replaced = {e.line for e in edits(fix) if e.action == F.REPLACE_CODE}
    now = {ln.key: ln for ln in after.lines}
    out: list[Conflict] = []
    for key in keys:
        ln = now.get(key)
        if ln is None or ln.units <= 0:
            continue
        out += [_conflict(ln, p) for p in _review_line(after, ln, reference, pol).problems]
        if key in replaced:
            old = next(x for x in case.lines if x.key == key)
            out += _add_on_conflicts(after, ln, reference)
            out += _newly_bundled(case, after, old, ln, keys, reference, pol)
    return out


def _conflict(line: Line, p: Problem) -> Conflict:
    e = p.edit
    if e is not None and p.code in (F.PTP_BUNDLED, F.MODIFIER_MISUSE, F.PTP_MODIFIER_ALLOWED):
        short = f"{line.code} would be bundled into {e.column1}"
        unmet = "" if e.modifier_indicator == "0" else "; no distinct-service modifier the record supports"
        why = (f"{short} (NCCI PTP {e.column1}/{e.column2}, modifier indicator {e.modifier_indicator}, "
               f"rationale: {e.rationale}{unmet})" + (f": {p.why}" if p.code == F.MODIFIER_MISUSE else ""))
    else:
        short = f"{line.code}: {p.phrase()}"
        why = short
    return Conflict(line, short, why, tuple(p.citations()))


def _same_day(case: Case, line: Line) -> list[Line]:
    """The other billed lines of `line`'s date of service (a missing date matches any)."""
    day = case.line_date(line)
    return [p for p in case.lines if p.key != line.key and p.units > 0
            and (day is None or case.line_date(p) in (None, day))]


def _add_on_conflicts(case: Case, line: Line, reference: ReferenceData) -> list[Conflict]:
    """An add-on code with listed primaries (CMS add-on code edits, edit type 1) is reported only
    with one of them on the same date; contractor-defined (type 2) and type 3 lists are not exhaustive."""
    aoc = reference.add_on(line.code, case.line_date(line) or NO_DATE)
    if aoc is None or aoc.edit_type != 1 or aoc.contractor_defined or not aoc.primaries:
        return []
    if not aoc.primaries.isdisjoint(p.code for p in _same_day(case, line)):
        return []
    short = f"{line.code} would have no primary procedure on the claim"
    why = (f"{line.code} is an add-on code (CMS add-on code edit type 1) reported only with one of its "
           f"{len(aoc.primaries)} listed primary procedures, and none is on the claim that date")
    return [Conflict(line, short, why, (cite.aoc_primaries(aoc),))]


def _newly_bundled(case: Case, after: Case, old: Line, new: Line, keys: Sequence[str], reference: ReferenceData,
                   pol: Policy) -> list[Conflict]:
    """Lines of the corrected claim that `new` (the replacement of `old`) would bundle as column 1
    of a PTP edit, where `old` did not already: the fix would create that edit. 76000 lines are
    left to their own review (fluoroscopy is integral to the guidance codes, integral.tsv)."""
    if after.setting.ncci_setting == INPATIENT_HOSPITAL:
        return []
    others = [y for y in _same_day(after, new) if y.key not in keys and y.code not in (FLUORO, new.code)]
    if not others:
        return []
    on = after.line_date(new) or NO_DATE
    col2 = {e.column2 for e in reference.ptp_edits({new.code} | {y.code for y in others}, on,
                                                   after.setting.ncci_setting)
            if e.column1 == new.code and e.modifier_indicator in ("0", "1") and e.in_force(on)}
    out = []
    for y in others:
        if y.code not in col2:
            continue
        problems = _review_line(after, y, reference, pol, only=(new,)).problems
        if problems and not _review_line(case, y, reference, pol, only=(old,)).problems:
            out += [_conflict(y, p) for p in problems]
    return out


def _fee_modifier(line: Line) -> str:
    mods = line.modifiers
    if not mods:
        return ""
    for m in ("26", "TC"):
        if m in mods:
            return m
    return ""


def _dedupe(citations: Sequence[Citation]) -> tuple[Citation, ...]:
    """The citations, the first of each text kept, in order."""
    if len(citations) < 2:
        return tuple(citations)
    seen: dict[str, Citation] = {}
    for c in citations:
        seen.setdefault(c.text, c)
    return tuple(seen.values())


_clip = F.clip_summary  # card summaries: under 140 characters, cut at a word boundary


class _Removal:
    """What a removal builder says: summary, reason, fixes and (when it differs from "not separately
    payable") the payment effect."""

    __slots__ = ("summary", "reason", "fixes", "payment", "citations")

    def __init__(self, summary: str, reason: str, fixes: tuple[Fix, ...], payment: str | None = None,
                 citations: tuple[Citation, ...] = ()) -> None:
        self.summary, self.reason, self.fixes, self.payment = summary, reason, fixes, payment
        self.citations = citations  # besides the problems' (e.g. why a replacement is not offered)


class _Context(NamedTuple):
    """What every removal builder reads."""

    case: Case
    review: _LineReview
    problem: Problem
    reference: ReferenceData
    config: dict
    when: str  # " on 2024-08-05" or ""
    fee_mod: str  # the line's 26 / TC, or ""
    amount: str | None  # the line's fee ("1.28 RVU ($42.61)"), or None


def _removal_finding(case: Case, review: _LineReview, problem: Problem, reference: ReferenceData,
                     config: dict) -> Finding:
    """The finding of a line's chosen removal problem: its kind's builder, plus what all removal
    findings share (citations of every problem, "Also applies", the payment-component note)."""
    line = review.line
    others = [p for p in review.problems if p is not problem]
    citations = problem.citations()
    for p in others:
        citations += p.citations()
    if problem.code == F.MODIFIER_MISUSE:
        citations.append(policy().facts["distinct-modifiers"].citation())
    fee_mod = _fee_modifier(line)
    amount = cite.money(reference.fee(FLUORO, fee_mod), case.setting.facility, line.units)
    when = f" on {review.day.isoformat()}" if review.day else ""
    built = REMOVAL_BUILDERS[problem.code](_Context(case, review, problem, reference, config, when, fee_mod, amount))
    if built.citations:
        citations += built.citations
    payment = built.payment
    if payment is None and amount:
        payment = f"{cite.label(FLUORO, fee_mod)} {amount} is not separately payable"
    also = ""
    if len(others) == 1:
        also = "\n\nAlso applies: " + others[0].phrase() + "."
    elif others:
        also = "\n\nAlso applies: " + "; ".join(sorted({p.phrase() for p in others})) + "."
    component_note = ""
    if line.modifiers and problem.code != F.MODIFIER_MISUSE and COMPONENT_MODIFIERS.intersection(line.modifiers):
        component_note = "\n\nModifier 26/TC identifies a payment component; it does not bypass an NCCI edit."
    kind = KINDS[problem.code]
    return Finding(code=kind.code, severity=kind.severity, summary=_clip(built.summary),
                   reason=built.reason + also + component_note, lines=(line.key,), citations=_dedupe(citations),
                   fixes=built.fixes, payment=payment, override_reasons=kind.override_reasons)


def _remove(c: _Context, why: str) -> Fix:
    return Fix(F.REMOVE_LINE, line=c.review.line.key, label=f"Remove 76000 ({why})")


def _ptp_bundled(c: _Context) -> _Removal:
    e, partner = c.problem.edit, c.problem.partner.code
    return _Removal(
        f"Remove 76000: NCCI bundles it into {partner}{c.when}; no modifier can bypass this edit",
        f"An active NCCI PTP edit pairs column 1 **{e.column1}** with column 2 **76000** (modifier indicator "
        f"**0**: no modifier allowed; rationale: {e.rationale}). 76000 is not separately reportable with "
        f"{partner}{c.when}.",
        (_remove(c, f"bundled into {partner}"),))


def _modifier_misuse(c: _Context) -> _Removal:
    line, e, partner = c.review.line, c.problem.edit, c.problem.partner.code
    mods = "/".join(line.modifiers)
    if e.modifier_indicator == "0":
        summary = f"Remove 76000: modifier {mods} cannot bypass the NCCI edit with {partner} (indicator 0)"
    else:
        summary = f"Remove 76000: {mods} is at the same site and session as {partner}; 76000 stays bundled"
    return _Removal(
        summary,
        f"The 76000 line carries {', '.join(line.modifiers)}, but {c.problem.why}. The NCCI PTP edit "
        f"{e.column1}/76000 (modifier indicator {e.modifier_indicator}, rationale: {e.rationale}) applies{c.when}, "
        f"so 76000 is not separately reportable.",
        (_remove(c, f"bundled into {partner}"),))


def _use_guidance_code(c: _Context) -> _Removal:
    problem, partner = c.problem, c.problem.partner.code
    add_on = problem.add_on
    if problem.sibling and not problem.add_on_billed:
        return _with_guidance_sibling(c)
    if problem.add_on_billed:
        return _Removal(
            f"Remove 76000: {add_on} already reports the fluoroscopic guidance for {partner}",
            f"Fluoroscopic guidance for {partner} is reported with add-on **{add_on}**, which is already "
            f"billed{c.when}; 76000 would report the same fluoroscopy twice.",
            (_remove(c, f"{add_on} already billed"),))
    payment = None
    fee = c.reference.fee(FLUORO, c.fee_mod)
    new_amount = cite.money(c.reference.fee(add_on, c.fee_mod), c.case.setting.facility)
    if c.amount and new_amount:
        cf = fee.conversion_factor
        payment = (f"{cite.label(FLUORO, c.fee_mod)} {c.amount} -> {cite.label(add_on, c.fee_mod)} {new_amount}"
                   + (f" at CF {cf}" if cf else ""))
    fix = _replacement(c, add_on)
    conflicts = fix_conflicts(c.case, fix, c.reference)
    if conflicts:
        return _not_clean(c, add_on, conflicts,
                          f"{partner} is a listed primary procedure of the fluoroscopic guidance add-on **{add_on}**, "
                          f"which would replace 76000")
    return _Removal(
        f"Replace 76000 with {add_on}: fluoroscopic guidance for {partner} uses the add-on code",
        f"{partner} is a listed primary procedure of the fluoroscopic guidance add-on **{add_on}**. Guidance for "
        f"it is reported with {add_on}, not with 76000 (a separate diagnostic fluoroscopy).",
        (fix,), payment)


def _not_clean(c: _Context, code: str, conflicts: Sequence[Conflict], offered: str) -> _Removal:
    """The replacement by `code` would leave the claim with a problem (fix_conflicts): remove
    76000 instead, and say why (issue 10 s.4; facts ``clean-fix``)."""
    whys = "; ".join(dict.fromkeys(x.why for x in conflicts))
    cites = tuple(x for conflict in conflicts for x in conflict.citations)
    return _Removal(
        f"Remove 76000: {code} is not offered instead, {conflicts[0].short} on this claim",
        f"{offered}, but that fix is not offered: the corrected claim, reviewed again with the same rules, "
        f"would still be denied: {whys}. Remove 76000{c.when}.",
        (_remove(c, conflicts[0].short),), None, cites + (policy().facts["clean-fix"].citation(),))


def _with_guidance_sibling(c: _Context) -> _Removal:
    """``partner + 76000`` where the partner has a sibling code that includes imaging guidance
    (hooks/policy/siblings.tsv): bill the sibling instead of both, in one suggestion."""
    line, partner, code = c.review.line, c.problem.partner, c.problem.add_on
    fix = Fix(F.REPLACE_CODE, line=partner.key, code=code, units=partner.units,
              label=f"Bill {code} (includes imaging guidance) instead of {partner.code} + 76000",
              then=(Fix(F.REMOVE_LINE, line=line.key, label="Remove 76000"),))
    payment = None
    old, new = c.reference.fee(partner.code, ""), c.reference.fee(code, "")
    facility = c.case.setting.facility
    old_amount, new_amount = cite.money(old, facility, partner.units), cite.money(new, facility, partner.units)
    if old_amount and new_amount and c.amount:
        payment = (f"{partner.code} {old_amount} + {cite.label(FLUORO, c.fee_mod)} {c.amount} -> {code} {new_amount}")
    conflicts = fix_conflicts(c.case, fix, c.reference)
    if conflicts:
        return _not_clean(c, code, conflicts,
                          f"**{code}** is {partner.code} with imaging guidance included and would replace "
                          f"{partner.code} + 76000")
    return _Removal(
        f"Bill {code} instead of {partner.code} + 76000: {code} includes the imaging guidance",
        f"**{code}** is {partner.code} with imaging guidance included ({c.problem.entry.description}). Reporting "
        f"{partner.code} plus 76000 for the guidance unbundles it{c.when}; report {code} alone.",
        (fix,), payment)


def _replacement(c: _Context, code: str) -> Fix:
    """Replace 76000 with `code`; for a hospital patient's professional claim, billed -26 in the same
    suggestion when the code's PC/TC indicator allows it (component_fixes)."""
    line = c.review.line
    fix = Fix(F.REPLACE_CODE, line=line.key, code=code, units=1, label=f"Replace 76000 with {code}")
    more = component_fixes(c.case, line.key, code, line.modifiers, c.reference, c.config)
    if not more:
        return fix
    return _chain((fix,) + more, f"Replace 76000 with {code}-26")


def _fluoroscopy_integral(c: _Context) -> _Removal:
    entry, partner = c.problem.entry, c.problem.partner.code
    return _Removal(
        f"Remove 76000: fluoroscopy is integral to {partner} ({entry.category.replace('-', ' ')})",
        f"Fluoroscopy is part of **{partner}**: {entry.description}. It is not separately reportable as "
        f"76000{c.when}. Never add 76000 to this procedure.",
        (_remove(c, f"integral to {partner}"),))


_EVIDENCE_WORDS = {distinct.SEPARATE_ENCOUNTER: "a separate encounter or session",
                   distinct.SEPARATE_SITE: "a separate anatomic site"}


def _ptp_modifier_allowed(c: _Context) -> _Removal:
    """Indicator-1 PTP edit. The bypass appends the modifier the record's evidence supports (XE,
    then XS; recommended), else the configured ``distinct-modifier`` (not recommended); never a
    second distinct-service modifier. A different diagnosis is not evidence (CMS MLN1783722)."""
    line, e, partner = c.review.line, c.problem.edit, c.problem.partner
    shown = [m for m in (distinct.SEPARATE_ENCOUNTER, distinct.SEPARATE_SITE) if m in c.problem.evidence]
    modifier = shown[0] if shown else (c.config.get("distinct-modifier") or "XS")
    remove = _remove(c, f"bundled into {partner.code}")
    row = (f"An active NCCI PTP edit pairs column 1 **{e.column1}** with column 2 **76000** (modifier indicator "
           f"**1**; rationale: {e.rationale}).")
    if shown and not line.has_distinct_modifier():
        what = " and ".join(_EVIDENCE_WORDS[m] for m in shown)
        bypass = Fix(F.ADD_MODIFIER, line=line.key, modifier=modifier,
                     label=f"Append {modifier}: the record shows {what} ({partner.code})")
        return _Removal(
            f"Append {modifier} to 76000: the record shows {what} from {partner.code}",
            f"{row} The record shows the fluoroscopy was distinct from {partner.code}: {what}. Report it with "
            f"modifier {modifier} (CMS NCCI Policy Manual, Chapter I, section E; CMS MLN1783722), or remove 76000 "
            f"if it was not.",
            (bypass, replace(remove, recommended=False)))
    fixes: tuple[Fix, ...] = (remove,)
    if not line.has_distinct_modifier():
        fixes += (Fix(F.ADD_MODIFIER, line=line.key, modifier=modifier, recommended=False,
                      label=f"Append {modifier}: fluoroscopy distinct from {partner.code}"),)
    dx_note = ""
    if line.diagnoses and partner.diagnoses and not set(line.diagnoses) & set(partner.diagnoses):
        dx_note = (" The linked diagnoses differ, but a different diagnosis alone does not make a service "
                   "distinct (CMS MLN1783722); confirm a separate site, session or practitioner.")
    claimed = "/".join(line.distinct_modifiers())
    if claimed:
        summary = f"Remove 76000 (bundled into {partner.code}): nothing in the record supports {claimed}"
        advice = f" Keep {claimed} only if the record is completed to show it, and document why."
    else:
        summary = (f"Remove 76000 (bundled into {partner.code}) unless the fluoroscopy was distinct; "
                   f"then append {modifier}")
        advice = f" Append {modifier} only if it truly was distinct, and document why."
    return _Removal(
        summary,
        f"{row} Nothing in the record shows the fluoroscopy was distinct (a separate encounter, practitioner "
        f"or anatomic site), so 76000 is bundled.{advice}{dx_note}",
        fixes)


# The removal finding of each removal problem (declared with a rank in hooks.findings.KINDS).
REMOVAL_BUILDERS: dict[str, Callable[[_Context], _Removal]] = {
    F.MODIFIER_MISUSE: _modifier_misuse, F.PTP_BUNDLED: _ptp_bundled, F.USE_GUIDANCE_CODE: _use_guidance_code,
    F.FLUOROSCOPY_INTEGRAL: _fluoroscopy_integral, F.PTP_MODIFIER_ALLOWED: _ptp_modifier_allowed,
}


# --- billable-line findings ----------------------------------------------------------------------
def _mue_findings(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
                  pol: Policy) -> list[Finding]:
    """Units of 76000 per date of service (MAI 2/3) or per line (MAI 1) over the MUE (not on an
    institutional inpatient claim: MUEs are for practitioner and outpatient hospital claims)."""
    out: list[Finding] = []
    if case.setting.ncci_setting == INPATIENT_HOSPITAL:
        return out
    by_day: dict[date | None, list[_LineReview]] = {}
    for r in billable:
        by_day.setdefault(r.day, []).append(r)
    for day, group in by_day.items():
        limit = reference.mue(FLUORO, day or NO_DATE, case.setting.ncci_setting)
        if limit is None:
            continue
        if limit.mai == 1:
            checks = [[r] for r in group]
        else:
            checks = [group]
        for lines in checks:
            total = sum(r.line.units for r in lines)
            if total <= limit.units:
                continue
            excess = total - limit.units
            target = max(lines, key=lambda r: r.line.units).line
            new_units = target.units - excess
            session_note = ""
            if new_units > target.sessions:  # and no more units than the sessions documented (session-units)
                new_units = target.sessions
                session_note = (f" 76000 is also one unit per session: the record documents {target.sessions} "
                                f"session{'s' if target.sessions != 1 else ''} for this line.")
            if new_units > 0:
                fix = Fix(F.REDUCE_UNITS, line=target.key, units=new_units,
                          label=f"Reduce 76000 to {new_units} unit{'s' if new_units != 1 else ''}")
            else:
                fix = Fix(F.REMOVE_LINE, line=target.key, label="Remove the extra 76000 line")
            when = f" on {day.isoformat()}" if day else ""
            fee_mod = _fee_modifier(target)
            amount = cite.money(reference.fee(FLUORO, fee_mod), case.setting.facility, excess)
            scope = "on one line" if limit.mai == 1 else "on one date of service"
            when_paren = f" ({day.isoformat()})" if day else ""
            out.append(Finding(
                code=F.MUE_EXCEEDED, severity=KINDS[F.MUE_EXCEEDED].severity,
                summary=_clip(f"Reduce 76000 to {limit.units} units{when}: {total} exceeds the MUE of {limit.units}"
                              if not session_note else
                              f"Reduce 76000 to {new_units} unit{'s' if new_units != 1 else ''}{when}: {total} "
                              f"exceeds the MUE of {limit.units} and one unit per session"),
                reason=(f"{total} units of 76000 are billed {scope}{when_paren}; the Medically Unlikely Edit allows "
                        f"**{limit.units}** (MAI {limit.mai}, {limit.rationale}). Units over the MUE are denied."
                        + session_note),
                lines=tuple(r.line.key for r in lines),
                citations=(cite.mue(limit), policy().facts["mue"].citation())
                + ((policy().facts["session"].citation(),) if session_note else ()), fixes=(fix,),
                payment=f"{excess} unit{'s' if excess != 1 else ''} over the MUE: {amount} denied" if amount else None))
    return out


def _session_units(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
                   pol: Policy) -> list[Finding]:
    """76000 is one unit per session, whatever the number of sites (CPT 76000 descriptor; facts
    ``session``): a line with more units than the separate sessions the record documents for it,
    or a second 76000 line in the same session (shared encounter or overlapping period, same or
    unknown practitioner). Lines already in an MUE finding get their units there (MUE stays per
    date of service)."""
    if len(billable) == 1 and billable[0].line.units <= billable[0].line.sessions:
        return []  # the common case: one 76000 line, one unit per documented session
    in_mue = set()
    if config.get(KINDS[F.MUE_EXCEEDED].switch, True):
        in_mue = {key for f in _mue_findings(case, billable, reference, config, pol) for key in f.lines}
    cites = (policy().facts["session"].citation(),)
    out = []
    seen: list[_LineReview] = []
    for r in billable:
        line = r.line
        if line.key in in_mue:
            continue
        twin = next((o for o in seen if o.day == r.day and distinct.encounter_relation(line, o.line) is True
                     and distinct.performer_relation(line, o.line) is not False), None)
        seen.append(r)
        when = f" on {r.day.isoformat()}" if r.day else ""
        if twin is not None:
            out.append(Finding(
                code=F.SESSION_UNITS, severity=KINDS[F.SESSION_UNITS].severity,
                summary=_clip(f"Remove the second 76000{when}: one fluoroscopy session is one unit"),
                reason=(f"Two 76000 lines ({twin.line.key}, {line.key}) are billed for the same session{when} (same "
                        f"encounter or overlapping times). 76000 reports one session of up to one hour, whatever the "
                        f"number of sites examined; bill it once."),
                lines=(twin.line.key, line.key), citations=cites,
                fixes=(Fix(F.REMOVE_LINE, line=line.key, label="Remove the second 76000 of the session"),)))
        elif line.units > line.sessions:
            n = line.sessions
            out.append(Finding(
                code=F.SESSION_UNITS, severity=KINDS[F.SESSION_UNITS].severity,
                summary=_clip(f"Bill {n} unit{'s' if n != 1 else ''} of 76000{when}: one unit per fluoroscopy session"),
                reason=(f"{line.units} units of 76000 are billed on one line{when}, and the record documents {n} "
                        f"session{'s' if n != 1 else ''}. 76000 reports one session of up to one hour, whatever the "
                        f"number of sites or images; time over an hour is not more units (76001 was deleted)."),
                lines=(line.key,), citations=cites,
                fixes=(Fix(F.REDUCE_UNITS, line=line.key, units=n,
                           label=f"Bill {n} unit{'s' if n != 1 else ''} of 76000 (one per session)"),)))
    return out


def professional_in_facility(case: Case) -> bool:
    """A professional claim (or encounter) for a hospital or ASC patient: the record's setting."""
    return case.kind != "order" and case.setting.facility and case.setting.ncci_setting == "practitioner"


def component_fixes(case: Case, line: str, code: str, modifiers: Sequence[str], reference: ReferenceData,
                    config: dict) -> tuple[Fix, ...]:
    """The edits that make `code` on `line` bill the professional component for a hospital patient
    (MPFS PC/TC indicator 1; Medicare Claims Processing Manual, Chapter 13, section 20): drop TC
    (the TC of a hospital patient's service is not paid to a supplier), and append 26 unless the
    line has it or the practice bills globally (``global-billing``, which never keeps a TC)."""
    if not professional_in_facility(case):
        return ()
    fee = reference.fee(code, "")
    if fee is not None and fee.pctc != "1":
        return ()
    out: tuple[Fix, ...] = ()
    if "TC" in modifiers:
        out += (Fix(F.REMOVE_MODIFIER, line=line, modifier="TC", label=f"Remove TC from {code}"),)
    if "26" not in modifiers and ("TC" in modifiers or not config.get("global-billing")):
        out += (Fix(F.ADD_MODIFIER, line=line, modifier="26", label=f"Append modifier 26 to {code}"),)
    return out


def _chain(fixes: tuple[Fix, ...], label: str) -> Fix:
    """One suggestion carrying several edits: the first, then the others."""
    return replace(fixes[0], label=label, then=fixes[0].then + fixes[1:])


def _component_payment(case: Case, reference: ReferenceData) -> tuple[list[Citation], str | None]:
    glob, prof = reference.fee(FLUORO, ""), reference.fee(FLUORO, "26")
    citations = [policy().facts["modifier-26"].citation()]
    payment = None
    if glob is not None and prof is not None:
        citations.insert(0, cite.mpfs(glob, prof))
        a, b = cite.money(glob, True), cite.money(prof, True)
        if a and b:
            payment = f"76000 global {a} vs -26 {b}" + (f" at CF {glob.conversion_factor}" if glob.conversion_factor else "")
    return citations, payment


def _modifier_26_findings(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
                          pol: Policy) -> list[Finding]:
    """A professional 76000 for a hospital patient billed global (no 26), TC, or 26 and TC: bill -26.
    Not when the line's place of service contradicts the record (place-of-service carries the fix)."""
    if case.setting.pos_contradicted:
        return []
    return [f for r in billable if (f := _modifier_26(case, r, reference, config)) is not None]


def _modifier_26(case: Case, review: _LineReview, reference: ReferenceData, config: dict) -> Finding | None:
    line = review.line
    fixes = component_fixes(case, line.key, FLUORO, line.modifiers, reference, config)
    if not fixes:
        return None
    where = "; ".join(case.setting.reasons) or "facility setting"
    citations, payment = _component_payment(case, reference)
    if "TC" in line.modifiers:
        billed = "76000-26-TC" if "26" in line.modifiers else "76000-TC"
        summary = f"Bill 76000-26, not {billed}: the hospital is paid the technical component ({where})"
        reason = (f"76000 is billed with modifier TC on a professional claim for a hospital patient ({where}). The "
                  f"technical component of a radiology service to a hospital patient is paid to the hospital, not "
                  f"to a supplier; the professional bills the professional component, 76000-26.")
        label = "Bill 76000-26 (remove TC)"
    else:
        summary = f"Append modifier 26 to 76000: professional component in a facility setting ({where})"
        reason = (f"76000 is billed in a facility setting ({where}) without modifier 26 or TC. The facility is paid "
                  f"the technical component; the professional reports 76000-26 unless the practice bills "
                  f"globally (configuration `global-billing`).")
        label = "Append modifier 26 to 76000"
    return Finding(
        code=F.MODIFIER_26, severity=KINDS[F.MODIFIER_26].severity, summary=_clip(summary), reason=reason,
        lines=(line.key,), citations=tuple(citations), fixes=(_chain(fixes, label),), payment=payment)


_POS_NAMES = {"21": "inpatient hospital", "22": "on-campus outpatient hospital", "23": "emergency room - hospital",
              "24": "ambulatory surgical center"}


def _place_of_service(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
                      pol: Policy) -> list[Finding]:
    """A non-facility place of service on a professional claim whose record shows a hospital or ASC
    patient (an inpatient, outpatient-hospital, emergency or observation encounter; a hospital or
    ASC location). The recommended fix sets the POS the record shows and, on 76000, bills -26 in the
    same suggestion (the record's setting decides the component)."""
    setting = case.setting
    if not setting.pos_contradicted or not professional_in_facility(case):
        return []
    where = "; ".join(setting.reasons)
    record = setting.record_pos
    citations = [policy().facts["place-of-service"].citation()]
    out = []
    for r in billable:
        line = r.line
        parts = component_fixes(case, line.key, FLUORO, line.modifiers, reference, config)
        if record:
            parts = (Fix(F.SET_PLACE_OF_SERVICE, line=line.key, pos=record,
                         label=f"Set POS {record}"),) + parts
        if not parts:
            continue
        comp = " and bill 76000-26" if any(p.modifier == "26" or p.modifier == "TC" for p in parts) else ""
        label = (f"Set place of service {record} ({_POS_NAMES.get(record, 'facility')}){comp}" if record
                 else "Bill 76000-26 and correct the place of service to the facility's")
        cites, _payment = _component_payment(case, reference) if comp else ([], None)
        out.append(Finding(
            code=F.PLACE_OF_SERVICE, severity=KINDS[F.PLACE_OF_SERVICE].severity,
            summary=_clip(f"Place of service {setting.pos} contradicts the record ({where}): "
                          + (f"use POS {record}" if record else "use the facility's POS") + comp),
            reason=(f"The claim line reports place of service **{setting.pos}** (non-facility), but the record shows a "
                    f"facility patient: {where}. A professional claim reports the place where the patient was"
                    + (f" (POS {record}, {_POS_NAMES.get(record, 'facility')})" if record else "")
                    + ", and for a hospital patient the professional bills the professional component: the record's "
                      "setting, not the line's POS, decides it."),
            lines=(line.key,), citations=tuple(citations + cites),
            fixes=(_chain(parts, label),)))
    return out


def _duration(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
              pol: Policy) -> list[Finding]:
    """Documented fluoroscopy time over one hour (evidence judged only). It offers no fix: units
    over the sessions documented are session-units (or mue-exceeded), not more time."""
    minutes = case.evidence.fluoro_minutes
    if not case.evidence_checked or minutes is None or minutes <= DURATION_LIMIT_MINUTES:
        return []
    return [Finding(
        code=F.DURATION_EXCEEDED, severity=KINDS[F.DURATION_EXCEEDED].severity,
        summary=_clip(f"Fluoroscopy time {minutes:g} min exceeds 76000's one hour: bill one unit, document the time"),
        reason=(f"The documented fluoroscopy time is **{minutes:g} minutes**. CPT 76000 covers up to one hour; "
                f"76001 (over one hour) was deleted (edits end 2018-12-31) and more units of 76000 are not the "
                f"fix. Document the reason for the prolonged time in the report."),
        lines=tuple(r.line.key for r in billable), citations=(policy().facts["duration"].citation(),),
        fixes=())]


def _documentation(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
                   pol: Policy) -> list[Finding]:
    """Documentation elements the record lacks (evidence judged only), including a same-date
    Procedure of the record that questions whether 76000 was a separate procedure."""
    if not case.evidence_checked:
        return []
    unbilled = [p for r in billable for p in _unbilled_conflicts(case, r, reference, pol)]
    missing = set(case.evidence.missing())
    if unbilled:
        missing.add("separate-procedure")
    if not missing:
        return []
    missing_t = tuple(e for e in DOC_ELEMENTS if e in missing)
    names = [ELEMENT_LABELS[m] for m in missing_t]
    listed = ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]
    reason = ("76000 is billable here, but its documentation lacks: " + ", ".join(f"**{n}**" for n in names)
              + ". Each element is read from the FHIR record as listed in docs/rules.md.")
    if "fluoroscopy-time" in missing and case.evidence.implausible_minutes:
        shown = ", ".join(f"{m:g} min" for m in case.evidence.implausible_minutes)
        reason += (f"\n\nThe recorded fluoroscopy time ({shown}) is not plausible (zero, negative or over 24 hours) "
                   "and does not count as documentation; correct the DICOM 113730 Total Fluoro Time.")
    shown_missing = missing & {"findings", "signed-interpretation", "images-retained"}
    if shown_missing and case.evidence.unrelated:
        reason += ("\n\nOn file but not about the fluoroscopy (not linked to the 76000 Procedure by Procedure.report, "
                   "basedOn its order or ImagingStudy.procedureReference, nor a fluoroscopy report or an RF / XA "
                   "study): " + ", ".join(case.evidence.unrelated[:5])
                   + (f" and {len(case.evidence.unrelated) - 5} more" if len(case.evidence.unrelated) > 5 else "")
                   + ". A CT or other report does not document the fluoroscopy.")
    citations = [policy().facts["documentation"].citation()]
    if unbilled:
        procs = sorted({f"{p.partner.code} ({p.partner.key})" for p in unbilled})
        reason += ("\n\nThe record shows " + ", ".join(procs) + " on the same date, which includes or bundles "
                   "fluoroscopy; document that the fluoroscopy was a separate procedure (different site, "
                   "session or indication), or do not bill 76000.")
        citations += [c for p in unbilled for c in p.citations()]
    return [Finding(
        code=F.DOCUMENTATION_MISSING, severity=KINDS[F.DOCUMENTATION_MISSING].severity,
        summary=_clip(f"Document {listed} for 76000, or do not bill it"),
        reason=reason, missing=missing_t,
        lines=tuple(r.line.key for r in billable), citations=_dedupe(citations),
        fixes=(Fix(F.DOCUMENT, elements=missing_t, label="Complete the fluoroscopy documentation"),))]


# The rule of each finding about billable 76000 lines (declared without a rank in hooks.findings.KINDS).
LINE_RULES: dict[str, Callable[[Case, Sequence[_LineReview], ReferenceData, dict, Policy], list[Finding]]] = {
    F.MUE_EXCEEDED: _mue_findings, F.SESSION_UNITS: _session_units, F.MODIFIER_26: _modifier_26_findings,
    F.PLACE_OF_SERVICE: _place_of_service, F.DURATION_EXCEEDED: _duration,
    F.DOCUMENTATION_MISSING: _documentation,
}


def _deleted_codes(case: Case, reference: ReferenceData, config: dict, pol: Policy) -> list[Finding]:
    """A line whose code was deleted before its date of service (hooks/policy/deleted.tsv: 76001,
    deleted for 2019) is not billable: remove it. Fluoroscopy time over an hour stays the
    duration-exceeded finding of the 76000 line; it is never more units."""
    out = []
    for ln in case.lines:
        gone = pol.deleted.get(ln.code)
        if gone is None:
            continue
        day = ln.service_date or case.default_date
        if day is not None and day < gone.deleted:
            continue
        when = f" on {day.isoformat()}" if day else ""
        out.append(Finding(
            code=F.CODE_DELETED, severity=KINDS[F.CODE_DELETED].severity,
            summary=_clip(f"Remove {ln.code}: the code was deleted on {gone.deleted.isoformat()} and is not valid{when}"),
            reason=(f"{ln.key} bills **{ln.code}**, a code deleted on {gone.deleted.isoformat()} ({gone.description}); "
                    f"it is not valid on the date of service{when} and will be rejected. Remove the line; report "
                    f"{gone.use} once where it is separately reportable, and document fluoroscopy time over one hour "
                    f"(duration-exceeded) rather than bill it."),
            lines=(ln.key,), citations=(gone.citation(),),
            fixes=(Fix(F.REMOVE_LINE, line=ln.key, label=f"Remove {ln.code} (deleted code)"),)))
    return out


# Rules over every line of the claim, run whether or not it bills 76000 (declared without a rank).
CLAIM_RULES: dict[str, Callable[[Case, ReferenceData, dict, Policy], list[Finding]]] = {
    F.CODE_DELETED: _deleted_codes,
}


def check_rules(kinds=KINDS, removal=REMOVAL_BUILDERS, line_rules=LINE_RULES, claim_rules=CLAIM_RULES) -> None:
    """Every declared finding has exactly one rule of its sort, and every rule a declaration."""
    want_removal = {c for c, k in kinds.items() if k.rank is not None}
    want_line = set(kinds) - want_removal
    if set(line_rules) & set(claim_rules):
        raise DeclarationError(f"findings with two rules: {sorted(set(line_rules) & set(claim_rules))}")
    for sort, want, have in (("removal builder", want_removal, set(removal)),
                             ("line rule", want_line, set(line_rules) | set(claim_rules))):
        if want != have:
            raise DeclarationError(f"{sort}s: declared without a rule {sorted(want - have)}, "
                                   f"a rule without a declaration {sorted(have - want)}")
    if REMOVAL_CODES and kinds is KINDS and tuple(sorted(want_removal, key=lambda c: kinds[c].rank)) != REMOVAL_CODES:
        raise DeclarationError("REMOVAL_CODES is out of step with KINDS")


check_rules()

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
from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

from nccidata import program_reference
from nccidata.api import MEDICARE, PROGRAM_NAMES, AddOnEdit, FeeSchedule, PtpEdit, ReferenceData
from nccidata.starter import STARTER_LABEL, StarterData

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



def _say(code: str, name: str, /, **fields) -> str:
    """The card wording `name` of finding `code`, as its declaration words it (hooks.findings.KINDS)."""
    return KINDS[code].wording[name].format(**fields)


def _plural(n: int) -> str:
    return "" if n == 1 else "s"


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

    def __init__(self, code: str, partner: Line, edit: PtpEdit | None = None, entry: PolicyEntry | None = None,
                 add_on: str | None = None, aoc: AddOnEdit | None = None, add_on_billed: bool = False,
                 why: str = "", evidence: frozenset[str] = frozenset(), sibling: bool = False) -> None:
        # one __dict__ update, as hooks.model.Line (built several times per request; still frozen)
        self.__dict__.update(code=code, partner=partner, edit=edit, entry=entry, add_on=add_on, aoc=aoc,
                             add_on_billed=add_on_billed, why=why, evidence=evidence, sibling=sibling)

    @property
    def rank(self) -> int:
        return KINDS[self.code].rank

    def phrase(self) -> str:
        """How this problem is named under "Also applies" (its kind's ``also`` wording)."""
        e = self.edit
        return _say(self.code, "also", partner=self.partner.code, add_on=self.add_on, why=self.why,
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
    program = case.program or config.get("program") or MEDICARE
    if program != MEDICARE:  # another NCCI program's PTP edits and MUEs, never Medicare's
        reference = program_view(reference, program)
    fluoro = [ln for ln in case.lines if ln.code == FLUORO and ln.units > 0]
    out: list[Finding] = []
    for code, claim_rule in CLAIM_RULES.items():  # one dict lookup per line (code-deleted)
        if config.get(KINDS[code].switch, True):
            out.extend(claim_rule(case, reference, config, pol))
    if not fluoro:
        return _cite_program(F.select(out, config), case, program, reference) if out else []
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
    return _cite_program(F.select(out, config), case, program, reference)


# --- the NCCI program (issue 10 s.8; docs/rules.md#program) ------------------------------------------
class NoProgramRelease:
    """The reference data of an NCCI program none of whose releases is imported: no PTP edit and no
    MUE (never another program's, never the starter set's, which are Medicare's); add-on, MPFS and POS
    from `base`."""

    def __init__(self, base: ReferenceData) -> None:
        self.base = base

    def release(self, kind: str, setting: str | None, on) -> None:
        return None

    def ptp_edits(self, codes, on, setting) -> list[PtpEdit]:
        return []

    def mue(self, code, on, setting) -> None:
        return None

    def add_on(self, add_on_code, on):
        return self.base.add_on(add_on_code, on)

    def fee(self, code, modifier="", on=None):
        return self.base.fee(code, modifier, on)

    def place_of_service(self, code):
        return self.base.place_of_service(code)

    def describe(self) -> dict:
        return self.base.describe()


def program_view(reference: ReferenceData, program: str) -> ReferenceData:
    """The reference data the rules use for a claim of NCCI `program` (not Medicare): the store's view
    of that program's releases, or :class:`NoProgramRelease` when none is imported."""
    view = program_reference(reference, program)
    return view if view is not None else NoProgramRelease(reference)


def _labels(reference: ReferenceData, program: str, setting: str, on: date) -> tuple[str | None, str | None]:
    """(PTP release label, MUE release label) answering `on` for `program` in `setting`; None: none
    imported for another program. Medicare: the store's release, else the starter set."""
    release = getattr(reference, "release", None)  # a program view (nccidata.store.ProgramReference)
    if release is not None:
        infos = (release("ptp", setting, on), release("mue", setting, on))
        return tuple(i.label if i is not None else None for i in infos)
    pick = getattr(reference, "pick", None)  # the SqliteStore: Medicare's releases, else the starter set
    if pick is not None:
        return tuple(i.label if (i := pick(kind, setting, on)) is not None else STARTER_LABEL
                     for kind in ("ptp", "mue"))
    if isinstance(reference, StarterData):
        return STARTER_LABEL, STARTER_LABEL
    return "as cited", "as cited"


@lru_cache(maxsize=1024)
def program_citation(program: str, setting: str, ptp: str | None, mue: str | None, chosen_by: str) -> Citation:
    """The citation every card carries: the NCCI program, the releases and the table used, and why
    this program (the claim's coverage, else the ``program`` option)."""
    name = PROGRAM_NAMES.get(program, program)
    why = f"program from {chosen_by}" if chosen_by else "program from the configuration option `program`"
    if setting == INPATIENT_HOSPITAL:
        text = (f"{F.PROGRAM_CITATION_PREFIX} {name}; institutional inpatient claim: no NCCI PTP edits or MUEs apply "
                f"(NCCI Policy Manual, Introduction); {why}")
    else:
        def rel(kind: str, label: str | None) -> str:
            if label == STARTER_LABEL:
                return f"{kind} release {label} (fluoro-cds {cite.STARTER_NOTE})"
            return f"{kind} release {label}" if label else f"no {name} NCCI {kind} release imported (not applied)"
        source = ("CMS Medicare NCCI PTP and MUE files" if program == MEDICARE
                  else f"CMS {name} NCCI Edit Files")
        text = (f"{F.PROGRAM_CITATION_PREFIX} {name} ({source}): {rel('PTP', ptp)}, {rel('MUE', mue)}, {setting} table; {why}")
    return Citation(kind=F.PROGRAM_CITATION, text=text, release=ptp, starter=STARTER_LABEL in (ptp, mue),
                    details=(("program", program), ("ptp_release", ptp or ""), ("mue_release", mue or ""),
                             ("table", setting), ("chosen_by", chosen_by or "configuration")))


def _cite_program(findings: list[Finding], case: Case, program: str, reference: ReferenceData) -> list[Finding]:
    """Every finding with the program citation appended (one cached Citation; a Finding rebuilt each)."""
    if not findings:
        return findings
    setting = case.setting.ncci_setting
    day = case.default_date or NO_DATE
    c = program_citation(program, setting, *_labels(reference, program, setting, day), case.program_source)
    return [Finding(f.code, f.severity, f.summary, f.reason, f.lines, tuple(f.citations) + (c,), f.fixes,
                    f.missing, f.payment, f.override_reasons) for f in findings]


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
                                               why=_say(F.MODIFIER_MISUSE, "why.indicator-0",
                                                        modifiers="/".join(claimed))))
            elif components:
                review.problems.append(Problem(F.MODIFIER_MISUSE, partner, edit=edit,
                                               why=_say(F.MODIFIER_MISUSE, "why.component",
                                                        modifiers="/".join(sorted(components)))))
            else:
                review.problems.append(Problem(F.PTP_BUNDLED, partner, edit=edit))
            continue
        misuse = distinct.contradicted(line, partner) if claimed else []
        if misuse and edit is not None:
            review.problems.append(Problem(F.MODIFIER_MISUSE, partner, edit=edit, why="; ".join(
                _say(F.MODIFIER_MISUSE, f"why.{ground}", modifier=m, partner=partner.code) for m, ground in misuse)))
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


def line_money(line: Line, fee: FeeSchedule | None, facility: bool, units: int) -> str | None:
    """What `units` units of `line` are worth in a payment effect: its adjudicated allowed amount
    (Line.allowed: ExplanationOfBenefit.item.adjudication "eligible", pro rata of the line's units)
    where the record has one, else the MPFS fee (cite.money); None without figures."""
    if line.allowed is None:
        return cite.money(fee, facility, units)
    value = line.allowed * units / line.units if line.units > 0 else line.allowed
    return f"${value:,.2f} allowed (adjudicated)"


def _fee_modifier(line: Line) -> str:
    mods = line.modifiers
    if not mods:
        return ""
    for m in ("26", "TC"):
        if m in mods:
            return m
    return ""


fee_modifier = _fee_modifier  # the MPFS modifier ("26", "TC", "") a line is priced with (the batch's payment effect)


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
    amount = line_money(line, reference.fee(FLUORO, fee_mod), case.setting.facility, line.units)
    when = f" on {review.day.isoformat()}" if review.day else ""
    built = REMOVAL_BUILDERS[problem.code](_Context(case, review, problem, reference, config, when, fee_mod, amount))
    if built.citations:
        citations += built.citations
    payment = built.payment
    if payment is None and amount:
        payment = F.NOT_PAYABLE.format(billed=cite.label(FLUORO, fee_mod), amount=amount)
    also = ""
    if len(others) == 1:
        also = F.ALSO_APPLIES.format(others[0].phrase())
    elif others:
        also = F.ALSO_APPLIES.format("; ".join(sorted({p.phrase() for p in others})))
    component_note = ""
    if line.modifiers and problem.code != F.MODIFIER_MISUSE and COMPONENT_MODIFIERS.intersection(line.modifiers):
        component_note = F.COMPONENT_NOTE
    kind = KINDS[problem.code]
    # Positional, in field order (code, severity, summary, reason, lines, citations, fixes, missing,
    # payment, override_reasons), as _cite_program builds it: keywords cost ~450 instructions each.
    return Finding(kind.code, kind.severity, _clip(built.summary), built.reason + also + component_note,
                   (line.key,), _dedupe(citations), built.fixes, (), payment, kind.override_reasons)


def _remove(c: _Context, name: str = "remove", **fields) -> Fix:
    """Remove the 76000 line, labelled with the wording `name` of the problem's kind."""
    return Fix(F.REMOVE_LINE, line=c.review.line.key,
               label=_say(c.problem.code, name, partner=c.problem.partner.code, **fields))


def _ptp_bundled(c: _Context) -> _Removal:
    e, partner = c.problem.edit, c.problem.partner.code
    code = F.PTP_BUNDLED
    return _Removal(
        _say(code, "summary", partner=partner, when=c.when),
        _say(code, "reason", column1=e.column1, rationale=e.rationale, partner=partner, when=c.when),
        (_remove(c),))


def _modifier_misuse(c: _Context) -> _Removal:
    line, e, partner = c.review.line, c.problem.edit, c.problem.partner.code
    code = F.MODIFIER_MISUSE
    mods = "/".join(line.modifiers)
    summary = _say(code, "summary" if e.modifier_indicator == "0" else "summary.contradicted",
                   modifiers=mods, partner=partner)
    return _Removal(
        summary,
        _say(code, "reason", modifier_list=", ".join(line.modifiers), why=c.problem.why, column1=e.column1,
             indicator=e.modifier_indicator, rationale=e.rationale, when=c.when),
        (_remove(c),))


def _use_guidance_code(c: _Context) -> _Removal:
    problem, partner = c.problem, c.problem.partner.code
    add_on = problem.add_on
    code = F.USE_GUIDANCE_CODE
    if problem.sibling and not problem.add_on_billed:
        return _with_guidance_sibling(c)
    if problem.add_on_billed:
        return _Removal(
            _say(code, "summary.billed", add_on=add_on, partner=partner),
            _say(code, "reason.billed", add_on=add_on, partner=partner, when=c.when),
            (_remove(c, "remove.billed", add_on=add_on),))
    payment = None
    fee = c.reference.fee(FLUORO, c.fee_mod)
    new_amount = cite.money(c.reference.fee(add_on, c.fee_mod), c.case.setting.facility)
    if c.amount and new_amount:
        cf = fee.conversion_factor
        payment = _say(code, "payment", billed=cite.label(FLUORO, c.fee_mod), amount=c.amount,
                       new=cite.label(add_on, c.fee_mod), new_amount=new_amount, cf=f" at CF {cf}" if cf else "")
    fix = _replacement(c, add_on)
    conflicts = fix_conflicts(c.case, fix, c.reference)
    if conflicts:
        return _not_clean(c, add_on, conflicts, _say(code, "offered", partner=partner, add_on=add_on))
    return _Removal(
        _say(code, "summary", add_on=add_on, partner=partner),
        _say(code, "reason", add_on=add_on, partner=partner),
        (fix,), payment)


def _not_clean(c: _Context, add_on: str, conflicts: Sequence[Conflict], offered: str) -> _Removal:
    """The replacement by `add_on` would leave the claim with a problem (fix_conflicts): remove
    76000 instead, and say why (issue 10 s.4; facts ``clean-fix``)."""
    code = F.USE_GUIDANCE_CODE
    whys = "; ".join(dict.fromkeys(x.why for x in conflicts))
    cites = tuple(x for conflict in conflicts for x in conflict.citations)
    short = conflicts[0].short
    return _Removal(
        _say(code, "summary.not-clean", add_on=add_on, short=short),
        _say(code, "reason.not-clean", offered=offered, whys=whys, when=c.when),
        (_remove(c, "remove.not-clean", short=short),), None, cites + (policy().facts["clean-fix"].citation(),))


def _with_guidance_sibling(c: _Context) -> _Removal:
    """``partner + 76000`` where the partner has a sibling code that includes imaging guidance
    (hooks/policy/siblings.tsv): bill the sibling instead of both, in one suggestion."""
    line, partner, code = c.review.line, c.problem.partner, c.problem.add_on
    kind = F.USE_GUIDANCE_CODE
    fix = Fix(F.REPLACE_CODE, line=partner.key, code=code, units=partner.units,
              label=_say(kind, "sibling", code=code, partner=partner.code),
              then=(Fix(F.REMOVE_LINE, line=line.key, label=_say(kind, "sibling.remove")),))
    payment = None
    old, new = c.reference.fee(partner.code, ""), c.reference.fee(code, "")
    facility = c.case.setting.facility
    old_amount, new_amount = line_money(partner, old, facility, partner.units), cite.money(new, facility, partner.units)
    if old_amount and new_amount and c.amount:
        payment = _say(kind, "payment.sibling", partner=partner.code, old_amount=old_amount,
                       billed=cite.label(FLUORO, c.fee_mod), amount=c.amount, code=code, new_amount=new_amount)
    conflicts = fix_conflicts(c.case, fix, c.reference)
    if conflicts:
        return _not_clean(c, code, conflicts, _say(kind, "offered.sibling", code=code, partner=partner.code))
    return _Removal(
        _say(kind, "summary.sibling", code=code, partner=partner.code),
        _say(kind, "reason.sibling", code=code, partner=partner.code, description=c.problem.entry.description,
             when=c.when),
        (fix,), payment)


def _replacement(c: _Context, code: str) -> Fix:
    """Replace 76000 with `code`; for a hospital patient's professional claim, billed -26 in the same
    suggestion when the code's PC/TC indicator allows it (component_fixes)."""
    line = c.review.line
    fix = Fix(F.REPLACE_CODE, line=line.key, code=code, units=1, label=_say(F.USE_GUIDANCE_CODE, "replace", code=code))
    more = component_fixes(c.case, line.key, code, line.modifiers, c.reference, c.config)
    if not more:
        return fix
    return _chain((fix,) + more, _say(F.USE_GUIDANCE_CODE, "replace.component", code=code))


def _fluoroscopy_integral(c: _Context) -> _Removal:
    entry, partner = c.problem.entry, c.problem.partner.code
    code = F.FLUOROSCOPY_INTEGRAL
    return _Removal(
        _say(code, "summary", partner=partner, category=entry.category.replace("-", " ")),
        _say(code, "reason", partner=partner, description=entry.description, when=c.when),
        (_remove(c),))


def _ptp_modifier_allowed(c: _Context) -> _Removal:
    """Indicator-1 PTP edit. The bypass appends the modifier the record's evidence supports (XE,
    then XS; recommended), else one suggestion per override reason with its modifier (not
    recommended; _reason_fixes); never a second distinct-service modifier. A different diagnosis is
    not evidence (CMS MLN1783722)."""
    line, e, partner = c.review.line, c.problem.edit, c.problem.partner
    code = F.PTP_MODIFIER_ALLOWED
    shown = [m for m in (distinct.SEPARATE_ENCOUNTER, distinct.SEPARATE_SITE) if m in c.problem.evidence]
    modifier = shown[0] if shown else ""
    remove = _remove(c)
    row = _say(code, "row", column1=e.column1, rationale=e.rationale)
    if shown and not line.has_distinct_modifier():
        what = " and ".join(_say(code, f"evidence.{m}") for m in shown)
        bypass = Fix(F.ADD_MODIFIER, line=line.key, modifier=modifier,
                     label=_say(code, "append.evidence", modifier=modifier, what=what, partner=partner.code))
        return _Removal(
            _say(code, "summary.evidence", modifier=modifier, what=what, partner=partner.code),
            _say(code, "reason.evidence", row=row, partner=partner.code, what=what, modifier=modifier),
            (bypass, replace(remove, recommended=False)), None, (policy().facts["distinct-modifiers"].citation(),))
    fixes: tuple[Fix, ...] = (remove,)
    if not line.has_distinct_modifier():
        fixes += _reason_fixes(c)
    dx_note = ""
    if line.diagnoses and partner.diagnoses and not set(line.diagnoses) & set(partner.diagnoses):
        dx_note = _say(code, "dx-note")
    claimed = "/".join(line.distinct_modifiers())
    if claimed:
        summary = _say(code, "summary.claimed", partner=partner.code, claimed=claimed)
        advice = _say(code, "advice.claimed", claimed=claimed)
    else:
        summary = _say(code, "summary", partner=partner.code)
        advice = _say(code, "advice")
    return _Removal(summary, _say(code, "reason", row=row, dx_note=dx_note, advice=advice), fixes, None,
                    (policy().facts["distinct-modifiers"].citation(),))


def _reason_fixes(c: _Context) -> tuple[Fix, ...]:
    """The bypass suggestions (not recommended) when nothing in the record shows the fluoroscopy was
    distinct: one per override reason of the declaration, appending the modifier that reason stands
    for (override_modifiers: XS site, XE session, XP practitioner, XU unusual non-overlapping service;
    the configured ``distinct-modifier`` for payer policy, where nothing says which), each modifier
    once and none the record contradicts (hooks.distinct.contradiction). XU is never inferred from the
    record: only the clinician's reason says the service does not overlap the procedure's usual
    components (CMS MLN1783722)."""
    kind = KINDS[F.PTP_MODIFIER_ALLOWED]
    line, partner = c.review.line, c.problem.partner
    configured = c.config.get("distinct-modifier") or "XS"
    displays = dict(kind.override_reasons)
    out: list[Fix] = []
    seen: set[str] = set()
    for reason, modifier in kind.override_modifiers:
        modifier = modifier or configured
        if modifier in seen or distinct.contradiction(modifier, line, partner):
            continue
        seen.add(modifier)
        out.append(Fix(F.ADD_MODIFIER, line=line.key, modifier=modifier, recommended=False,
                       label=_say(F.PTP_MODIFIER_ALLOWED, "append.reason", modifier=modifier,
                                  meaning=_say(F.PTP_MODIFIER_ALLOWED, f"meaning.{modifier}"),
                                  reason=displays[reason])))
    return tuple(out)


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
    code = F.MUE_EXCEEDED
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
                session_note = _say(code, "session-note", sessions=target.sessions, s=_plural(target.sessions))
            if new_units > 0:
                fix = Fix(F.REDUCE_UNITS, line=target.key, units=new_units,
                          label=_say(code, "reduce", units=new_units, s=_plural(new_units)))
            else:
                fix = Fix(F.REMOVE_LINE, line=target.key, label=_say(code, "remove"))
            when = f" on {day.isoformat()}" if day else ""
            fee_mod = _fee_modifier(target)
            amount = line_money(target, reference.fee(FLUORO, fee_mod), case.setting.facility, excess)
            scope = _say(code, "scope.line") if limit.mai == 1 else _say(code, "scope.date")
            when_paren = f" ({day.isoformat()})" if day else ""
            if session_note:
                summary = _say(code, "summary.session", units=new_units, s=_plural(new_units), when=when,
                               total=total, limit=limit.units)
            else:
                summary = _say(code, "summary", limit=limit.units, when=when, total=total)
            out.append(Finding(
                code=code, severity=KINDS[code].severity, summary=_clip(summary),
                reason=_say(code, "reason", total=total, scope=scope, when_paren=when_paren, limit=limit.units,
                            mai=limit.mai, rationale=limit.rationale, session_note=session_note),
                lines=tuple(r.line.key for r in lines),
                citations=(cite.mue(limit), policy().facts["mue"].citation())
                + ((policy().facts["session"].citation(),) if session_note else ()), fixes=(fix,),
                payment=_say(code, "payment", excess=excess, s=_plural(excess), amount=amount) if amount else None))
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
    code = F.SESSION_UNITS
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
                code=code, severity=KINDS[code].severity, summary=_clip(_say(code, "summary.twin", when=when)),
                reason=_say(code, "reason.twin", first=twin.line.key, second=line.key, when=when),
                lines=(twin.line.key, line.key), citations=cites,
                fixes=(Fix(F.REMOVE_LINE, line=line.key, label=_say(code, "remove.twin")),)))
        elif line.units > line.sessions:
            n, s = line.sessions, _plural(line.sessions)
            out.append(Finding(
                code=code, severity=KINDS[code].severity, summary=_clip(_say(code, "summary", units=n, s=s, when=when)),
                reason=_say(code, "reason", billed=line.units, when=when, units=n, s=s),
                lines=(line.key,), citations=cites,
                fixes=(Fix(F.REDUCE_UNITS, line=line.key, units=n, label=_say(code, "reduce", units=n, s=s)),)))
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
        out += (Fix(F.REMOVE_MODIFIER, line=line, modifier="TC", label=_say(F.MODIFIER_26, "remove-tc", code=code)),)
    if "26" not in modifiers and ("TC" in modifiers or not config.get("global-billing")):
        out += (Fix(F.ADD_MODIFIER, line=line, modifier="26", label=_say(F.MODIFIER_26, "append-26", code=code)),)
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
            cf = glob.conversion_factor
            payment = _say(F.MODIFIER_26, "payment", glob=a, prof=b, cf=f" at CF {cf}" if cf else "")
    return citations, payment


def _modifier_26_findings(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
                          pol: Policy) -> list[Finding]:
    """A professional 76000 for a hospital patient billed global (no 26), TC, or 26 and TC: bill -26.
    Not on a line whose place of service contradicts the record (place-of-service carries the fix)."""
    return [f for r in billable if not pos_contradicted(case, r.line, reference)
            and (f := _modifier_26(case, r, reference, config)) is not None]


def pos_contradicted(case: Case, line: Line, reference: ReferenceData) -> bool:
    """Whether `line`'s own place of service (Claim.item.locationCodeableConcept; else the case's)
    contradicts the record's setting: facility vs office (Claims Processing Manual ch. 26 s. 10.5).
    A line with the case's POS reuses the case's answer (no lookup)."""
    setting = case.setting
    pos = line.pos
    if pos is None or pos == setting.pos:
        return setting.pos_contradicted
    if setting.record_facility is None:
        return False
    place = reference.place_of_service(pos)
    return place is not None and place.facility != setting.record_facility


def _modifier_26(case: Case, review: _LineReview, reference: ReferenceData, config: dict) -> Finding | None:
    line = review.line
    fixes = component_fixes(case, line.key, FLUORO, line.modifiers, reference, config)
    if not fixes:
        return None
    where = "; ".join(case.setting.reasons) or "facility setting"
    citations, payment = _component_payment(case, reference)
    code = F.MODIFIER_26
    if "TC" in line.modifiers:
        billed = "76000-26-TC" if "26" in line.modifiers else "76000-TC"
        summary = _say(code, "summary.tc", billed=billed, where=where)
        reason = _say(code, "reason.tc", where=where)
        label = _say(code, "fix.tc")
    else:
        summary = _say(code, "summary", where=where)
        reason = _say(code, "reason", where=where)
        label = _say(code, "fix")
    return Finding(
        code=code, severity=KINDS[code].severity, summary=_clip(summary), reason=reason,
        lines=(line.key,), citations=tuple(citations), fixes=(_chain(fixes, label),), payment=payment)


def _place_of_service(case: Case, billable: Sequence[_LineReview], reference: ReferenceData, config: dict,
                      pol: Policy) -> list[Finding]:
    """Per 76000 line of a professional claim, its own place of service against the record's setting:
    a non-facility POS while the record shows a hospital or ASC patient (an inpatient, outpatient-
    hospital, emergency or observation encounter; a hospital or ASC location): the fix sets the POS
    the record shows and bills -26 in the same suggestion; a facility POS while the record shows an
    office visit (a Location typed with an office POS): the fix sets that POS. The record's setting,
    not the line's POS, decides the component."""
    setting = case.setting
    if case.kind == "order" or setting.ncci_setting != "practitioner":
        return []
    where = "; ".join(setting.reasons)
    # the POS the record shows, else the claim's POS where it agrees with the record
    record = setting.record_pos or (setting.pos if not setting.pos_contradicted else None)
    citations = [policy().facts["place-of-service"].citation()]
    out = []
    code = F.PLACE_OF_SERVICE
    name = _say(code, f"pos.{record}") if f"pos.{record}" in KINDS[code].wording else _say(code, "pos.other")
    for r in billable:
        line = r.line
        if not pos_contradicted(case, line, reference):
            continue
        pos = line.pos or setting.pos
        if setting.record_facility is False:  # a facility POS for an office visit: correct the POS
            if not record:
                continue
            out.append(Finding(
                code=code, severity=KINDS[code].severity,
                summary=_clip(_say(code, "summary.office", pos=pos, where=where, record=record)),
                reason=_say(code, "reason.office", pos=pos, where=where, record=record, name=name),
                lines=(line.key,), citations=tuple(citations),
                fixes=(Fix(F.SET_PLACE_OF_SERVICE, line=line.key, pos=record,
                           label=_say(code, "fix.office", record=record, name=name)),)))
            continue
        parts = component_fixes(case, line.key, FLUORO, line.modifiers, reference, config)
        if record:
            parts = (Fix(F.SET_PLACE_OF_SERVICE, line=line.key, pos=record, label=_say(code, "set", record=record)),) + parts
        if not parts:
            continue
        comp = _say(code, "component") if any(p.modifier == "26" or p.modifier == "TC" for p in parts) else ""
        if record:
            label = _say(code, "fix", record=record, name=name, component=comp)
            summary = _say(code, "summary", pos=pos, where=where, record=record, component=comp)
            named = _say(code, "record-named", record=record, name=name)
        else:
            label = _say(code, "fix.unknown")
            summary = _say(code, "summary.unknown", pos=pos, where=where, component=comp)
            named = ""
        cites, _payment = _component_payment(case, reference) if comp else ([], None)
        out.append(Finding(
            code=code, severity=KINDS[code].severity, summary=_clip(summary),
            reason=_say(code, "reason", pos=pos, where=where, record_named=named),
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
    code = F.DURATION_EXCEEDED
    return [Finding(
        code=code, severity=KINDS[code].severity, summary=_clip(_say(code, "summary", minutes=minutes)),
        reason=_say(code, "reason", minutes=minutes),
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
    code = F.DOCUMENTATION_MISSING
    missing_t = tuple(e for e in DOC_ELEMENTS if e in missing)
    names = [_say(code, f"element.{m}") for m in missing_t]
    listed = ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1]
    reason = _say(code, "reason", names=", ".join(f"**{n}**" for n in names))
    if "fluoroscopy-time" in missing and case.evidence.implausible_minutes:
        reason += _say(code, "implausible", shown=", ".join(f"{m:g} min" for m in case.evidence.implausible_minutes))
    unrelated = case.evidence.unrelated
    if unrelated and missing & {"findings", "signed-interpretation", "images-retained"}:
        reason += _say(code, "unrelated", resources=", ".join(unrelated[:5])
                       + (f" and {len(unrelated) - 5} more" if len(unrelated) > 5 else ""))
    citations = [policy().facts["documentation"].citation()]
    if unbilled:
        procs = sorted({f"{p.partner.code} ({p.partner.key})" for p in unbilled})
        reason += _say(code, "unbilled", procedures=", ".join(procs))
        citations += [c for p in unbilled for c in p.citations()]
    return [Finding(
        code=code, severity=KINDS[code].severity, summary=_clip(_say(code, "summary", listed=listed)),
        reason=reason, missing=missing_t,
        lines=tuple(r.line.key for r in billable), citations=_dedupe(citations),
        fixes=(Fix(F.DOCUMENT, elements=missing_t, label=_say(code, "document")),))]


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
    code = F.CODE_DELETED
    for ln in case.lines:
        gone = pol.deleted.get(ln.code)
        if gone is None:
            continue
        day = ln.service_date or case.default_date
        if day is not None and day < gone.deleted:
            continue
        when = f" on {day.isoformat()}" if day else ""
        deleted = gone.deleted.isoformat()
        out.append(Finding(
            code=code, severity=KINDS[code].severity,
            summary=_clip(_say(code, "summary", code=ln.code, deleted=deleted, when=when)),
            reason=_say(code, "reason", line=ln.key, code=ln.code, deleted=deleted, description=gone.description,
                        when=when, use=gone.use),
            lines=(ln.key,), citations=(gone.citation(),),
            fixes=(Fix(F.REMOVE_LINE, line=ln.key, label=_say(code, "remove", code=ln.code)),)))
    return out


# Rules over every line of the claim, run whether or not it bills 76000 (declared without a rank).
def _ncci_not_applied(case: Case, reference: ReferenceData, config: dict, pol: Policy) -> list[Finding]:
    """A claim of an NCCI program other than Medicare (Medicaid) billing 76000 whose PTP or MUE table
    for its setting has no imported release: say that those edits were not applied. Medicare's are
    not used instead (a state applies the Medicaid NCCI edits to a Medicaid claim: CMS Medicaid NCCI
    Edit Files; Medicaid NCCI Technical Guidance Manual)."""
    program = case.program or config.get("program") or MEDICARE
    setting = case.setting.ncci_setting
    if program == MEDICARE or setting == INPATIENT_HOSPITAL:
        return []
    fluoro = [ln for ln in case.lines if ln.code == FLUORO and ln.units > 0]
    if not fluoro:
        return []
    day = case.line_date(fluoro[0])
    release = getattr(reference, "release", None)
    missing = [k for k in ("ptp", "mue") if release is None or release(k, setting, day or NO_DATE) is None]
    if not missing:
        return []
    name = PROGRAM_NAMES.get(program, program)
    tables = " and ".join({"ptp": "PTP edits", "mue": "MUEs"}[k] for k in missing)
    why = case.program_source or "the configuration option `program`"
    when = f" on {day.isoformat()}" if day else ""
    kind = KINDS[F.NCCI_NOT_APPLIED]
    fields = dict(name=name, tables=tables, why=why, when=when, setting=setting, program=program)
    return [Finding(
        code=kind.code, severity=kind.severity, summary=_clip(_say(F.NCCI_NOT_APPLIED, "summary", **fields)),
        reason=_say(F.NCCI_NOT_APPLIED, "reason", **fields),
        lines=tuple(ln.key for ln in fluoro))]


CLAIM_RULES: dict[str, Callable[[Case, ReferenceData, dict, Policy], list[Finding]]] = {
    F.CODE_DELETED: _deleted_codes, F.NCCI_NOT_APPLIED: _ncci_not_applied,
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

"""NCCI PTP and MUE edits across claims: the lines of one beneficiary, rendering provider and date
of service, whichever claims they are on.

NCCI Policy Manual for Medicare Services, Chapter I, General Correct Coding Policies (sections A and
C; and the Introduction): PTP edits and MUEs apply to services reported by the same provider for the
same beneficiary on the same date of service; billing the two codes of an edit on separate claims
does not avoid it. The per-claim review (:func:`hooks.rules.evaluate`) sees one claim; this pass
sees the lines of several claims grouped by :func:`line_group` and applies the *same* rule code to
them (:func:`hooks.rules.engine._review_line` and the removal finding builders for PTP, the MUE rule
``_mue_findings``): no second copy of a rule.

- **PTP** (``ptp-bundled``, ``modifier-misuse``, ``ptp-modifier-allowed``): a 76000 line against the
  partner lines of the group's *other* claims (pairs within one claim are the per-claim review's).
- **Integral** (``fluoroscopy-integral``, hooks/policy/integral.tsv): the same review finds a 76000
  integral to a procedure of the same provider, beneficiary and date on another claim (29881 on
  one claim, its 76000 on the next). The policy rests on the same manual (NCCI Policy Manual for
  Medicare Services, Chapter I: a service integral to another of the same provider on the same
  date is not separately reportable, and Chapter I's unbundling rule: reporting the parts of one
  service on several claims does not make them separate; Chapters IV, VIII, IX for the codes),
  so it applies across claims as the PTP edits do. Of a line's problems the most specific enabled
  one is reported, as per claim (integral before ``ptp-modifier-allowed``).
- The guidance-code policy (``use-guidance-code``) stays per claim: its fix replaces 76000 by an
  add-on, or the other claim's primary by its with-guidance sibling, an edit of both claims that no
  one claim's correction can make.
- **MUE** (``mue-exceeded``, MAI 2 and 3: per date of service): the 76000 units of the group's claims
  (lines without a PTP problem across claims) against the MUE, reported when the claims together
  exceed it and no one claim does by itself (that claim's own review reports it).

Input: normalized cases (:class:`~hooks.model.Case`, as the case builders make them; ``case.claim``
the Claim or ExplanationOfBenefit with its ``id``, ``patient`` and ``provider``). Any set of cases
may be given (a beneficiary's, or a coarser group: the function groups by :func:`line_group`
itself). Output: :class:`CrossClaimFinding` s; their ``finding.lines`` and the fixes' ``line`` are
:func:`line_ref` s, ``"Claim/c1:Claim.item[1]"``, and ``claims`` names every claim involved.
Pure: depends only on its arguments.

**Consistency with each claim's own review** (the NCCI suppression rule of the per-claim review: a
76000 line that must go gets no other finding):

- A line the claim's own review removes (its recommended fix, :func:`removed_lines`) is not billable:
  it is left out of the cases given here (``service/claim_groups.py`` groups the claim without it).
- A claim a finding across claims edits (:func:`for_claim`: that finding's lines and fixes on it)
  has its own findings re-evaluated on the claim as that edit leaves it (:func:`amended_findings`:
  the same ``evaluate`` over the case with the recommended fix applied): the findings that depended
  on a line removed across claims (its modifier 26, its documentation, its MUE units) are withdrawn,
  the others stay.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import replace
from datetime import date, datetime, timedelta
from operator import itemgetter
from typing import Callable, Iterable, NamedTuple, Sequence

from nccidata.api import MEDICARE, ReferenceData

from .. import distinct
from .. import fhir_read as fr
from .. import findings as F
from ..context import InvalidResource
from ..findings import KINDS, Finding
from ..model import FLUORO, INPATIENT_HOSPITAL, Case, Line, Site
from .corrected import corrected_case, edits
from .engine import _cite_program, _LineReview, _mue_findings, _removal_finding, _review_line, program_view
from .policy import policy

PTP_CODES = (F.PTP_BUNDLED, F.MODIFIER_MISUSE, F.PTP_MODIFIER_ALLOWED)
# The removal findings applied across claims: the PTP edits and the integral policy (module docstring).
CROSS_CODES = PTP_CODES + (F.FLUOROSCOPY_INTEGRAL,)
_POSITION = itemgetter(0)


class CrossClaimFinding(NamedTuple):
    """A finding over lines of several claims."""

    finding: Finding  # its lines (and fixes' lines) are line_ref()s
    claims: tuple[str, ...]  # "Claim/c1", "ExplanationOfBenefit/e2": every claim involved, in order
    lines: tuple[tuple[str, Line], ...]  # (claim, line as billed) of each of finding.lines, same order


class Group(NamedTuple):
    """The grouping key of a line: the edits apply within one group."""

    patient: str
    provider: str
    day: date
    setting: str  # the NCCI table (practitioner, outpatient-hospital)
    program: str  # the NCCI program (medicare, medicaid)


def claim_name(case: Case) -> str | None:
    """"Claim/c1" (or "ExplanationOfBenefit/e1") of the case's resource; None without an id."""
    return fr.key_of(case.claim) if isinstance(case.claim, dict) else None


def _ref(resource: dict, key: str) -> str | None:
    try:
        return fr.reference(resource.get(key), resource.get("resourceType") or "Claim", key)
    except InvalidResource:
        return None


def beneficiary(case: Case) -> str | None:
    """The patient reference of the case's claim ("Patient/p1", an absolute URL reduced; None when
    absent): the coarsest grouping key (the Spark job groups by it before calling
    :func:`cross_claim_findings`)."""
    return _ref(case.claim, "patient") if isinstance(case.claim, dict) else None


def line_group(case: Case, line: Line, program: str | None = None) -> Group | None:
    """The group of a billed line: beneficiary, rendering provider (the line's, from the care team
    or the Procedure's performer; else the claim's ``provider``), date of service, NCCI table and
    program. None when one is unknown, or the claim is an institutional inpatient one (no PTP edits
    or MUEs apply)."""
    setting = case.setting.ncci_setting
    if setting == INPATIENT_HOSPITAL or line.units <= 0 or not isinstance(case.claim, dict):
        return None
    patient = beneficiary(case)
    provider = line.performers[0] if line.performers else _ref(case.claim, "provider")
    day = line.service_date or case.default_date
    if not (patient and provider and day):
        return None
    return Group(patient, provider, day, setting, program or case.program or MEDICARE)


def line_ref(claim: str, line: Line) -> str:
    """How a line of one claim is named among several: "Claim/c1:Claim.item[1]"."""
    return f"{claim}:{line.key}"


def cross_claim_findings(cases: Iterable[Case], reference: ReferenceData, config: dict) -> list[CrossClaimFinding]:
    """The PTP, integral and MUE findings over the lines of `cases` that are on different claims of one
    :class:`Group` (see the module docstring). `config`: the resolved configuration options (the
    findings' switches, ``program`` for cases whose coverage does not say)."""
    groups: dict[Group, list[tuple[str, Case, Line]]] = {}
    default_program = config.get("program") or MEDICARE
    for case in cases:
        name = claim_name(case)
        if name is None:
            continue
        for line in case.lines:
            key = line_group(case, line, case.program or default_program)
            if key is not None:
                groups.setdefault(key, []).append((name, case, line))
    out: list[CrossClaimFinding] = []
    for key, members in groups.items():
        if len({m[0] for m in members}) > 1 and any(m[2].code == FLUORO for m in members):
            out += _group_findings(key, members, reference, config)
    return out


def _group_findings(key: Group, members: list[tuple[str, Case, Line]], reference: ReferenceData,
                    config: dict) -> list[CrossClaimFinding]:
    pol = policy()
    owner: dict[str, tuple[str, Line]] = {}
    lines = []
    for name, _case, line in members:
        merged_line = replace(line, key=line_ref(name, line), service_date=key.day)
        owner[merged_line.key] = (name, line)
        lines.append(merged_line)
    first = members[0][1]
    case = Case(kind="claim", setting=first.setting, lines=tuple(lines), default_date=key.day, claim=None,
                evidence_checked=False, program=key.program, program_source=first.program_source)
    ref = reference if key.program == MEDICARE else program_view(reference, key.program)
    found: list[Finding] = []
    billable: list[_LineReview] = []
    enabled = [c for c in CROSS_CODES if config.get(KINDS[c].switch, True)]
    partners_of = _partners(lines, owner)
    for line in lines:
        if line.code != FLUORO:
            continue
        claim = owner[line.key][0]
        partners = partners_of(claim)
        review = _review_line(case, line, ref, pol, only=partners) if partners else _LineReview(line, key.day)
        chosen = [p for p in review.problems if p.code in enabled]
        if not review.problems:
            billable.append(review)
        if chosen:
            problem = min(chosen, key=lambda p: KINDS[p.code].rank)
            finding = _removal_finding(case, review, problem, ref, config)
            found.append(replace(finding, lines=(line.key, problem.partner.key)))
    if billable and config.get(KINDS[F.MUE_EXCEEDED].switch, True):
        units: dict[str, int] = {}  # the billable 76000 units of each claim
        for r in billable:
            claim = owner[r.line.key][0]
            units[claim] = units.get(claim, 0) + r.line.units
        for finding in _mue_findings(case, billable, ref, config, pol):
            claims = {owner[k][0] for k in finding.lines}
            limit = ref.mue(FLUORO, key.day, key.setting)
            alone = limit is not None and any(units.get(c, 0) > limit.units for c in claims)
            if len(claims) > 1 and not alone:
                found.append(finding)
    out = []
    for finding in _cite_program(found, case, key.program, ref):
        involved = tuple(owner[k] for k in finding.lines)
        out.append(CrossClaimFinding(finding, tuple(dict.fromkeys(c for c, _l in involved)), involved))
    return out


class Shown(NamedTuple):
    """What the 76000 lines of a group show, each value with the claims of the lines showing it:
    what :func:`partner_kind` compares a partner line with."""

    encounters: dict[str, set[str]]
    performers: dict[str, set[str]]
    periods: list[tuple[tuple[datetime, datetime], set[str]]]  # performed periods known from start to end, sorted
    starts: list[datetime]  # their starts, in that order
    longest: timedelta  # the longest of them
    sites: dict[tuple[Site, ...], set[str]]  # body sites (non-empty)

    @classmethod
    def of(cls, lines: Iterable[tuple[str, Line]]) -> "Shown":
        """Of (claim, 76000 line) pairs."""
        encounters: dict[str, set[str]] = {}
        performers: dict[str, set[str]] = {}
        periods: dict[tuple[datetime, datetime], set[str]] = {}
        sites: dict[tuple[Site, ...], set[str]] = {}
        for claim, line in lines:
            for values, where in ((line.encounters, encounters), (line.performers, performers),
                                  ([(line.start, line.end)] if line.start is not None and line.end is not None else [],
                                   periods), ([line.body_sites] if line.body_sites else [], sites)):
                for value in values:
                    where.setdefault(value, set()).add(claim)
        ordered = sorted(periods.items(), key=_POSITION)
        return cls(encounters, performers, ordered, [p[0] for p, _claims in ordered],
                   max((p[1] - p[0] for p in periods), default=timedelta(0)), sites)


def partner_kind(line: Line, claim: str, shown: Shown) -> tuple:
    """What the review of a 76000 line of another claim than `claim` reads of a partner line: its
    code (the PTP edit, the integral, sibling and guidance policies, the "Also applies" phrase and
    the citations: :func:`hooks.rules.engine._review_line`, :func:`~hooks.rules.engine._removal_finding`)
    and how :mod:`hooks.distinct` relates it to that 76000 line (encounters, performed period,
    performers, sites). Partners of one kind give each 76000 line of another claim the same problems.
    A partner's relations are taken against what the 76000 lines of the *other* claims show
    (`shown`; a 76000 line sees only other claims' partners): the encounters and performers it
    shares with them (and whether it has any), which of their periods it overlaps, how its sites
    relate to theirs. Claims that each have an Encounter, a period or a site of their own are then
    one kind, not one each."""
    return (line.code, _shared(line.encounters, claim, shown.encounters),
            _shared(line.performers, claim, shown.performers), _overlapped(line, claim, shown),
            _site_relations(line.body_sites, claim, shown.sites))


def _elsewhere(claims: set[str], claim: str) -> bool:
    return any(c != claim for c in claims)


def _shared(refs: tuple[str, ...], claim: str, shown: dict[str, set[str]]) -> tuple[bool, frozenset[str]]:
    return bool(refs), frozenset(r for r in refs if _elsewhere(shown.get(r, ()), claim))


def _overlapped(line: Line, claim: str, shown: Shown) -> frozenset | None:
    """The other claims' 76000 periods the line's performed period overlaps; None when its period is
    not known from start to end (then no period decides: hooks.distinct.encounter_relation). Only
    the periods starting before the line's ends and after its start less the longest one can."""
    if line.start is None or line.end is None:
        return None
    lo = bisect_left(shown.starts, line.start - shown.longest)
    hi = bisect_left(shown.starts, line.end)
    return frozenset(p for p, claims in shown.periods[lo:hi]
                     if _elsewhere(claims, claim) and distinct.periods_overlap(p[0], p[1], line.start, line.end))


def _site_relations(sites: tuple[Site, ...], claim: str, shown: dict[tuple[Site, ...], set[str]]) -> frozenset:
    """(sites, relation) of each of the other claims' 76000 sites the line's relate to (the
    same or different: hooks.distinct.sites_relation; unknown left out)."""
    if not sites:
        return frozenset()
    return frozenset((s, r) for s, claims in shown.items()
                     if _elsewhere(claims, claim) and (r := distinct.sites_relation(s, sites)) is not None)


def all_partners(lines: Sequence[Line], owner: dict[str, tuple[str, Line]]) -> Callable[[str], list[Line]]:
    """claim -> the partner lines of its 76000 lines: the group's lines of other codes on other
    claims, in the group's order (the rule as written; :func:`_partners` gives the same findings faster)."""
    def of(claim: str) -> list[Line]:
        return [p for p in lines if p.code != FLUORO and owner[p.key][0] != claim]
    return of


def _partners(lines: Sequence[Line], owner: dict[str, tuple[str, Line]]) -> Callable[[str], list[Line]]:
    """:func:`all_partners`, of each :func:`partner_kind` only the first two on other claims (in
    the group's order). Reviewing each of a group's n 76000 lines against all its partners costs
    n x n (one beneficiary's thousands of same-day claims of one provider: a resubmitted batch, or
    hostile input); this costs n x kinds. The findings are the same: of a line's problems, the rule
    reports the first of the lowest rank (from the first partner of its kind), whether there is one
    at all, and the set of the others' "Also applies" phrases and citations
    (:func:`~hooks.rules.engine._removal_finding`), none of which a third partner of a kind changes.
    tests/test_cross_claim.py holds the two equal on random groups."""
    shown = Shown.of((owner[line.key][0], line) for line in lines if line.code == FLUORO)
    kinds: dict[tuple, dict[str, list[tuple[int, Line]]]] = {}  # kind -> its first 3 claims -> first 2 lines
    for pos, line in enumerate(lines):
        if line.code == FLUORO:
            continue
        claim = owner[line.key][0]
        claims = kinds.setdefault(partner_kind(line, claim, shown), {})
        held = claims.get(claim)
        if held is None:
            if len(claims) < 3:  # a claim's own lines are left out: two others remain of three
                claims[claim] = [(pos, line)]
        elif len(held) < 2:
            held.append((pos, line))

    def of(claim: str) -> list[Line]:
        picked: list[tuple[int, Line]] = []
        for claims in kinds.values():
            picked += sorted((at for c, held in claims.items() if c != claim for at in held), key=_POSITION)[:2]
        picked.sort(key=_POSITION)
        return [line for _pos, line in picked]
    return of


def recommended_fix(finding: Finding) -> F.Fix | None:
    """The fix a finding recommends (its first recommended one, else its first), or None."""
    return next((f for f in finding.fixes if f.recommended), finding.fixes[0] if finding.fixes else None)


def removed_lines(findings: Iterable[Finding]) -> set[str]:
    """The line keys the findings' recommended fixes remove."""
    out: set[str] = set()
    for finding in findings:
        fix = recommended_fix(finding)
        if fix is not None:
            out.update(e.line for e in edits(fix) if e.action == F.REMOVE_LINE and e.line is not None)
    return out


def for_claim(found: CrossClaimFinding, claim: str) -> Finding:
    """The part of a finding across claims on one of its claims: its lines and fixes on `claim`,
    with the claim's own line keys ("Claim.item[0]")."""
    part = claim_parts(found).get(claim)
    return part if part is not None else replace(found.finding, lines=(), fixes=())


def claim_parts(found: CrossClaimFinding) -> dict[str, Finding]:
    """:func:`for_claim` of each claim the finding names, in one pass over its lines and fixes (a
    finding over n claims, the MUE's: n parts in n steps, not n x n)."""
    lines: dict[str, list[str]] = {c: [] for c in found.claims}
    fixes: dict[str, list[F.Fix]] = {c: [] for c in found.claims}
    for key in found.finding.lines:
        claim, _sep, own = key.rpartition(":")  # a line's own key ("Claim.item[0]") has no colon
        lines.setdefault(claim, []).append(own)
    for fix in found.finding.fixes:
        if not fix.line:
            continue
        claim, _sep, own = fix.line.rpartition(":")
        prefix = f"{claim}:"
        then = tuple(replace(t, line=t.line[len(prefix):]) for t in fix.then if t.line and t.line.startswith(prefix))
        fixes.setdefault(claim, []).append(replace(fix, line=own, then=then))
    return {c: replace(found.finding, lines=tuple(lines.get(c, ())), fixes=tuple(fixes.get(c, ())))
            for c in dict.fromkeys([*found.claims, *lines, *fixes]) if c}


def edits_claim(finding: Finding) -> bool:
    """Whether a finding (:func:`for_claim`) recommends an edit of the claim (not only documentation)."""
    fix = recommended_fix(finding)
    return fix is not None and fix.action != F.DOCUMENT


def amended_findings(case: Case, across: Iterable[Finding], reference: ReferenceData, config: dict) -> list[Finding]:
    """The claim's own findings re-evaluated (:func:`hooks.rules.evaluate`) on the claim as the
    findings across claims that edit it (:func:`for_claim`) leave it: each one's recommended fix
    applied (:func:`hooks.rules.corrected.corrected_case`). Their keys are the claim's own."""
    from . import evaluate

    after = case
    for finding in across:
        fix = recommended_fix(finding)
        if fix is not None and fix.action != F.DOCUMENT:
            after = corrected_case(after, fix)
    return evaluate(after, reference, config)

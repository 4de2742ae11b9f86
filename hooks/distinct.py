"""Distinct-service evidence as CMS defines it: is a 76000 separate from a partner service?

CMS NCCI Policy Manual for Medicare Services, Chapter I, section E (modifiers and modifier
indicators) and the CMS MLN fact sheet "Proper Use of Modifiers 59, XE, XP, XS, & XU"
(MLN1783722): a service is distinct when it was performed in a *separate encounter* (XE), by a
*separate practitioner* (XP), on a *separate organ/structure* (XS), or does not overlap the usual
components of the other service (XU). NCCI PTP edits pair services of the same provider for the
same beneficiary on the same date, so lines of different rendering practitioners are not a PTP
pair. A different diagnosis alone is not evidence of a distinct service.

Every comparison is three-valued where the record may be silent: an unknown side is never proof.
Pure functions of :class:`hooks.model.Line` and :class:`hooks.model.Site`.
"""
from __future__ import annotations

from bisect import bisect_left, insort
from datetime import datetime
from typing import Any, Iterable, Sequence

from .model import Line, Site

SEPARATE_ENCOUNTER, SEPARATE_PRACTITIONER, SEPARATE_SITE = "XE", "XP", "XS"


def _systems(site: Site) -> set[str]:
    return {c.split("|", 1)[0] for c in site.codes}


def site_relation(a: Site, b: Site) -> bool | None:
    """True: the same site; False: different sites; None: the record cannot tell.

    Sides that differ (both known) are different sites. Then a shared coding, or normalised texts
    where one holds the other's words ("knee" and "knee joint"), is the same site; codings of the
    same system that differ, or texts with no word in common, are different sites. A site known
    only as a code on one side and only as text on the other cannot be compared.
    """
    if a.laterality and b.laterality and a.laterality != b.laterality and "bilateral" not in (a.laterality, b.laterality):
        return False
    if set(a.codes) & set(b.codes):
        return True
    wa, wb = set((a.text or "").split()), set((b.text or "").split())
    if wa and wb and (wa <= wb or wb <= wa):
        return True
    if _systems(a) & _systems(b):
        return False
    if wa and wb and not wa & wb:
        return False
    return None


# The most pairs of sites two lines are compared by (4 sites against 4, 2 against 8, ...): each pair
# costs a comparison for each pair of lines, so lines with thousands of sub-sites (hostile, or
# broken, data) would take minutes. Past it the record cannot tell (None): unknown is never proof.
SITE_PAIRS = 16


def sites_relation(a: Sequence[Site], b: Sequence[Site]) -> bool | None:
    """The relation of two lines' sites: the same when any pair is the same site, different when
    every pair is known to differ, else unknown (also when either side has no site, and when
    there are more than SITE_PAIRS pairs to compare)."""
    if not a or not b or len(a) * len(b) > SITE_PAIRS:
        return None
    relations = [site_relation(x, y) for x in a for y in b]
    if True in relations:
        return True
    return False if all(r is False for r in relations) else None


def periods_overlap(a_start: datetime | None, a_end: datetime | None, b_start: datetime | None,
             b_end: datetime | None) -> bool | None:
    """Whether two performed periods overlap; None unless both are known from start to end."""
    if None in (a_start, a_end, b_start, b_end):
        return None
    return a_start < b_end and b_start < a_end


def encounter_relation(a: Any, b: Any) -> bool | None:
    """True: the same session (overlapping performed periods, or a shared encounter without
    periods that separate them); False: separate encounters (both known, none shared) or
    non-overlapping periods; None: unknown. Periods known to the minute decide first."""
    overlap = periods_overlap(a.start, a.end, b.start, b.end)
    if overlap is not None:
        return overlap
    if a.encounters and b.encounters:
        return bool(set(a.encounters) & set(b.encounters))
    return None


def performer_relation(a: Line, b: Line) -> bool | None:
    """True: a shared rendering practitioner; False: both known and none shared; None: unknown."""
    if not a.performers or not b.performers:
        return None
    return bool(set(a.performers) & set(b.performers))


def evidence(line: Line, partner: Line) -> frozenset[str]:
    """The distinct-service modifiers the record supports for `line` against `partner`."""
    out = []
    if encounter_relation(line, partner) is False:
        out.append(SEPARATE_ENCOUNTER)
    if performer_relation(line, partner) is False:
        out.append(SEPARATE_PRACTITIONER)
    if sites_relation(line.body_sites, partner.body_sites) is False:
        out.append(SEPARATE_SITE)
    return frozenset(out)


def contradicted(line: Line, partner: Line) -> list[tuple[str, str]]:
    """(modifier, ground) for each distinct-service modifier on `line` the record contradicts: XE on
    the same encounter or session ("encounter"), XP with the same practitioner ("practitioner"), XS
    (or 59 / XU, claimed for a distinct site or service) on the same site in the same session
    ("site"). The card words each ground (modifier-misuse's ``why.*`` wording)."""
    return [(m, ground) for m in line.distinct_modifiers() if (ground := contradiction(m, line, partner))]


def contradiction(modifier: str, line: Line, partner: Line) -> str | None:
    """Why the record contradicts `modifier` on `line` against `partner` ("encounter",
    "practitioner", "site"), or None: XE with a shared encounter or overlapping times, XP with the
    same practitioner, XS / 59 / XU (a distinct site or service) at the same site in the same session."""
    if modifier == SEPARATE_ENCOUNTER:
        return "encounter" if encounter_relation(line, partner) is True else None
    if modifier == SEPARATE_PRACTITIONER:
        return "practitioner" if performer_relation(line, partner) is True else None
    if modifier in ("XS", "59", "XU") and sites_relation(line.body_sites, partner.body_sites) is True \
            and encounter_relation(line, partner) is not False:
        return "site"
    return None


def separate_sessions(procedures: Iterable[Any]) -> int:
    """How many separate sessions some 76000 Procedures document (at least 1): Procedures in one
    encounter with overlapping or unknown periods are one session. In order, a Procedure
    separate (:func:`encounter_relation` False) from every session so far starts one.

    Computed without comparing each Procedure with each session (a record with a thousand
    Procedures in separate encounters would take seconds): two Procedures with periods known to
    the minute are separate when the periods do not overlap, so the sessions' periods are disjoint
    and one look at the nearest (sorted, bisect) decides; any other pair is separate when both name
    encounters and share none, so the sessions' encounters are kept in sets. The periods' ends are
    not before their starts (hooks.extract.companions.procedure_session refuses that: FHIR per-1).
    tests/test_review_bounds.py holds it equal to the pairwise definition."""
    timed: list[tuple[datetime, datetime]] = []  # the periods of the sessions that have one, sorted: disjoint
    encounters: set[str] = set()  # of every session
    untimed_encounters: set[str] = set()  # of the sessions without a period
    sessions = untimed = without_encounter = untimed_without_encounter = 0
    for pr in procedures:
        refs = pr.encounters
        if pr.start is not None and pr.end is not None:
            at = bisect_left(timed, pr.end, key=_start_of)  # the sessions' periods starting before this one ends
            if at and timed[at - 1][1] > pr.start:
                continue  # overlaps a session's period (of those, the last ends last: they are disjoint)
            if untimed and (not refs or untimed_without_encounter or not untimed_encounters.isdisjoint(refs)):
                continue  # not shown separate from a session without a period
            insort(timed, (pr.start, pr.end))
        else:
            if sessions and (not refs or without_encounter or not encounters.isdisjoint(refs)):
                continue
            untimed += 1
            untimed_encounters.update(refs)
            untimed_without_encounter += not refs
        sessions += 1
        encounters.update(refs)
        without_encounter += not refs
    return max(1, sessions)


def _start_of(period: tuple[datetime, datetime]) -> datetime:
    return period[0]

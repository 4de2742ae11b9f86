"""What a review could not check: data that was needed for part of the review but could be
neither found (prefetch, the request) nor fetched (fhirServer), and what that leaves unjudged.

Issue 11 section 2 (partial data): a service answers 200 with the cards it can give plus one
``info`` card saying what could not be checked, and 412 only when nothing can be reviewed.

How to feed it (docs/service.md "Partial data"):

* handlers: ``request.unchecked.add(what, why, *affects)`` where they catch
  :class:`hooks.context.DataUnavailable` for supplementary data, or use :func:`optional`;
* the FHIR layer (service/fhir_access.py, which gets the same object): a search that was refused,
  a truncated or unfollowable ``link[next]``, a deadline that expired: ``unchecked.add(...)``
  instead of (or before) raising, when the caller can go on without the data.

``affects`` names the part of the review that cannot be judged without the data (the constants
of hooks/context.py); :data:`DOCUMENTATION` turns the documentation checks off for the case, so a missing
search never becomes a false "documentation missing" card.
"""
from __future__ import annotations

from typing import Callable, TypeVar

from .findings import clip_summary

from .context import (CLAIM, DOCUMENTATION, PROCEDURES, SETTING, DataUnavailable, Gap,
                      Unchecked)

T = TypeVar("T")

TOPIC_SYSTEM = "https://fluoro-cds.org/CodeSystem/finding"  # as hooks.cards.TOPIC_SYSTEM
TOPIC_CODE = "data-unavailable"

_EFFECTS = {
    DOCUMENTATION: "fluoroscopy documentation (time, dose, report, images) was not judged",
    SETTING: "the place of service was not known from this data (modifier 26 may be missed)",
    PROCEDURES: "other procedures were not known from this data (bundling edits may be missed)",
    CLAIM: "the encounter's Claim was not known (cards explain the fix instead of updating it)",
}


# What each kind of supplementary resource is read for (so what its absence leaves unjudged).
_AFFECTS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "Location": (SETTING,),
    "Procedure": (PROCEDURES, DOCUMENTATION),
    "Observation": (DOCUMENTATION,),
    "DiagnosticReport": (DOCUMENTATION,),
    "ImagingStudy": (DOCUMENTATION,),
    "Claim": (CLAIM,),
}


def affected_by(resource_type: str) -> tuple[str, ...]:
    """What a missing resource of `resource_type` leaves unjudged."""
    return _AFFECTS_BY_TYPE.get(resource_type, (DOCUMENTATION,))


def optional(unchecked: Unchecked, what: str, fetch: Callable[[], T], default: T,
             *affects: str) -> T:
    """`fetch()`, or `default` with a gap recorded when the data is unavailable."""
    try:
        return fetch()
    except DataUnavailable as exc:
        unchecked.add(what, str(exc), *affects)
        return default


def card(unchecked: Unchecked, *, service_label: str, uuid: str) -> dict:
    """The ``info`` card listing what could not be checked and what that leaves unjudged."""
    gaps = list(unchecked)
    noun = "item" if len(gaps) == 1 else "items"
    summary = f"Review incomplete: {len(gaps)} data {noun} could not be checked"
    lines = ["The review used the data it could get. Not checked:", ""]
    lines += [f"- {g.what}: {g.why}" for g in gaps]
    effects = [_EFFECTS[a] for a in dict.fromkeys(a for g in gaps for a in g.affects) if a in _EFFECTS]
    if effects:
        lines += ["", "So:"] + [f"- {e}" for e in effects]
    lines += ["", "Prefetch the data or give a reachable fhirServer to have it checked."]
    return {"uuid": uuid, "summary": clip_summary(summary), "indicator": "info",
            "detail": "\n".join(lines),
            "source": {"label": service_label,
                       "topic": {"system": TOPIC_SYSTEM, "code": TOPIC_CODE,
                                 "display": "Data not available for review"}}}


__all__ = ["CLAIM", "DOCUMENTATION", "PROCEDURES", "SETTING", "Gap", "Unchecked", "affected_by", "optional",
           "card"]

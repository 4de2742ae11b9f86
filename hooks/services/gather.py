"""Gathering the FHIR data a handler needs: prefetch first, then the FHIR server.

CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/#prefetch-template): a prefetch key that is absent
means the client did not prefetch it, and the service fetches it from ``fhirServer`` itself; a
null one means the client has no data for it, taken at its word. :class:`hooks.context.DataUnavailable` (answered 412) is raised only for data that is
needed and can be neither found nor fetched; callers decide what is needed.

What to fetch is planned here too: :func:`claim_references` (a Claim's first-hop references),
:func:`follow_references` (second hop) and :func:`encounter_searches` (an encounter's documentation).

Searches work on strict servers: references are typed (``encounter=Encounter/e1``: R4's
``clinical-encounter`` parameter targets Encounter and EpisodeOfCare, so a bare id may match
nothing), every search carries ``patient=Patient/<id>`` when the patient is known (US Core servers
require it), and a search the server refuses (:class:`SearchRefused`: an unsupported parameter) is
narrowed to one parameter at a time, the dropped ones checked here on the resources
(:func:`search_with_fallback`). Independent fetches go through ``FhirData.concurrently`` so that a
review without prefetch costs about its dependency depth in round trips.
"""
from __future__ import annotations

import re
from typing import Callable, Collection, Iterable, Sequence, TypeVar

from .. import fhir_read as fr
from ..context import DataUnavailable, FhirData, InvalidResource, SearchRefused, Unchecked
from ..extract import check_companion
from ..extract.codes import procedure_code
from ..extract.setting import encounter_location_refs
from ..fhir_read import key_of
from ..unchecked import affected_by


def resources_of(value) -> list[dict]:
    """Resources held by a prefetch value: a Bundle's entries, a lone resource, or nothing."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":  # Bundle.entry must be an array (else 400 with its path)
        return [e["resource"] for e in fr.elements(value.get("entry"), "Bundle", "entry")
                if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    if value.get("resourceType") == "OperationOutcome":
        return []
    return [value]


def of_type(resources: Iterable[dict], resource_type: str) -> list[dict]:
    return [r for r in resources if r.get("resourceType") == resource_type]


def prefetched_or_read(fhir: FhirData, key: str, reference: str) -> dict | None:
    """The resource `reference` from prefetch `key`, else read from the FHIR server."""
    rtype = reference.split("/", 1)[0]
    for res in of_type(resources_of(fhir.prefetched(key)), rtype):
        if key_of(res) == reference:
            return res
    return fhir.read(reference)


def prefetched_or_search(fhir: FhirData, key: str | None, resource_type: str,
                         params: dict[str, str]) -> list[dict]:
    """Resources of `resource_type` under prefetch `key`, else a search of the FHIR server.

    The service layer's ``prefetched`` already fetches a declared template's query from the
    server when the client did not prefetch it, and answers None when the client said there is
    no data (null): that is taken at its word. The search covers keys the service does not
    declare, and templates whose search the server refused (narrowed: search_with_fallback).
    """
    if key:
        try:
            return of_type(resources_of(fhir.prefetched(key)), resource_type)
        except SearchRefused as refused:  # the template's search as a whole: narrower ones
            return search_with_fallback(fhir, resource_type, params, refused=refused)
    return search_with_fallback(fhir, resource_type, params)


# Where each reference search parameter the service uses points in a resource (FHIR R4 search
# parameter expressions): checked here on the results when a narrowed search dropped it.
_PARAM_PATHS = {
    ("Claim", "encounter"): ("item", "encounter"),
    ("Claim", "patient"): ("patient",),
    "encounter": ("encounter",),  # Procedure, Observation, DiagnosticReport, ImagingStudy
    "patient": ("subject",),
    ("DiagnosticReport", "based-on"): ("basedOn",),
    ("ImagingStudy", "basedon"): ("basedOn",),
}


def _references_at(resource: dict, path: tuple[str, ...]) -> set[str]:
    """The references at `path` (normalized "Type/id"); an unreadable one is no match (the
    resource is a search result, not the request's)."""
    nodes: list = [resource]
    for name in path:
        nxt: list = []
        for node in nodes:
            value = node.get(name) if isinstance(node, dict) else None
            nxt.extend(value if isinstance(value, list) else [value])
        nodes = nxt
    out = set()
    for node in nodes:
        try:
            ref = fr.reference(node, resource.get("resourceType") or "resource", path[-1])
        except InvalidResource:
            continue
        if ref:
            out.add(ref)
    return out


def matches(resource: dict, name: str, value: str) -> bool:
    """Whether `resource` satisfies the reference search ``name=value`` ("Type/id")."""
    path = _PARAM_PATHS.get((resource.get("resourceType"), name)) or _PARAM_PATHS[name]
    return value in _references_at(resource, path)


def search_with_fallback(fhir: FhirData, resource_type: str, params: dict[str, str], *,
                         refused: SearchRefused | None = None) -> list[dict]:
    """A search with all `params` (unless already `refused`); when the server refuses it, one
    parameter at a time (in the order given: the most selective first), the others checked on
    the results (:func:`matches`). Raises SearchRefused when every form is refused."""
    if refused is None:
        try:
            return fhir.search(resource_type, params)
        except SearchRefused as exc:
            refused = exc
    if len(params) < 2:
        raise refused
    last = refused
    for name, value in params.items():
        try:
            found = fhir.search(resource_type, {name: value})
        except SearchRefused as refused:
            last = refused
            continue
        return [r for r in found
                if all(matches(r, n, v) for n, v in params.items() if n != name)]
    raise last


T = TypeVar("T")


def all_of(results: Sequence[T | DataUnavailable]) -> list[T]:
    """The results of ``FhirData.concurrently`` when every call is needed: the first
    DataUnavailable (in call order) is raised."""
    for r in results:
        if isinstance(r, DataUnavailable):
            raise r
    return list(results)  # type: ignore[arg-type]


def read_refs(fhir: FhirData, required: Iterable[str], optional: Iterable[str] = (),
              unchecked: Unchecked | None = None) -> dict[str, dict]:
    """Read all references at once: "Type/id" -> resource for those found (404s left out).
    A required one that is unavailable raises (the first, in order); optional ones are skipped,
    and recorded as not checked in `unchecked` when given."""
    required = list(dict.fromkeys(required))
    optional = [r for r in dict.fromkeys(optional) if r not in required]
    refs = required + optional
    calls: list[Callable[[], dict | None]] = [lambda r=r: fhir.read(r) for r in refs]
    results = fhir.concurrently(calls)
    all_of(results[:len(required)])
    if unchecked is not None:
        for ref, res in zip(optional, results[len(required):]):
            or_unchecked(unchecked, res, ref, None, *affected_by(ref.split("/", 1)[0]))
    return {ref: res for ref, res in zip(refs, results) if isinstance(res, dict)}


def or_unchecked(unchecked: Unchecked, result: T | DataUnavailable, what: str, default: T,
                 *affects: str) -> T:
    """A ``FhirData.concurrently`` result, or `default` with `what` recorded as not checked when
    the data was unavailable (issue 11 section 2: supplementary data)."""
    if isinstance(result, DataUnavailable):
        unchecked.add(what, str(result), *affects)
        return default
    return result


def not_found(fhir: FhirData, reference: str, key: str) -> DataUnavailable:
    """The 412 reason for a needed resource that came back as None: what really happened
    (the client's prefetch said there is none, or the server answered 404/410)."""
    if fhir.client_has_none(key):
        return DataUnavailable(f"the client's prefetch '{key}' is null: the CDS client has no "
                               f"{reference} (CDS Hooks 2.0: null means no data)")
    if fhir.has_server:
        return DataUnavailable(f"{reference} was not found on the FHIR server (HTTP 404/410)")
    return DataUnavailable(f"{reference} is not in the request's prefetch "
                           "and the request has no fhirServer")


def read_all(fhir: FhirData, refs: Iterable[str], *, optional: bool) -> list[dict]:
    """Read each reference at once (found ones, in order); unavailable data raises unless optional."""
    refs = list(dict.fromkeys(refs))
    found = read_refs(fhir, () if optional else refs, refs if optional else ())
    return [found[r] for r in refs if r in found]


def included_locations(fhir: FhirData, key: str = "encounterLocations") -> list[dict]:
    """The Locations of prefetch `key` (an ``Encounter?_id=..&_include=Encounter:location``
    Bundle, fetched when not prefetched); none when it can be neither (they are read one by one)."""
    try:
        return of_type(resources_of(fhir.prefetched(key)), "Location")
    except DataUnavailable:
        return []


def encounter_locations(fhir: FhirData, encounter: dict, key: str = "encounterLocations",
                        included: Iterable[dict] | None = None) -> list[dict]:
    """Locations of Encounter.location: from `included` (else prefetch `key`, an _include
    Bundle) or read (all at once). A Location the server does not know (404) is skipped; an
    unreachable server raises."""
    wanted = location_refs(encounter)
    if included is None:
        included = included_locations(fhir, key) if wanted else []
    known = {key_of(r): r for r in included if r.get("resourceType") == "Location"}
    read = read_refs(fhir, [r for r in wanted if r not in known])
    return [res for res in (known.get(ref) or read.get(ref) for ref in wanted) if res is not None]


def location_refs(encounter: dict) -> list[str]:
    """"Location/id" references of Encounter.location, each once (validated)."""
    return [r for r in follow_references([encounter]) if r.startswith("Location/")]


def merge(*groups: Iterable[dict]) -> list[dict]:
    """Resources of all groups, first occurrence of each Type/id kept (every resource without an
    id kept), order preserved."""
    seen: set[str] = set()
    out = []
    for group in groups:
        for res in group:
            k = key_of(res)
            if k is not None:  # resources without an id are all kept
                if k in seen:
                    continue
                seen.add(k)
            out.append(res)
    return out


# --- what to fetch (planned from the resources in hand; each element read is validated) ---------
FETCHABLE_TYPES = frozenset({"Encounter", "Procedure", "Observation", "DiagnosticReport", "ImagingStudy",
                             "Location"})
_LOCAL_REF = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")


def _fetchable(refs: Iterable[str | None], held: Collection[str] = ()) -> list[str]:
    """The "Type/id" references of a fetchable type among `refs`, each once, in order; those in
    `held` (in hand already) left out before the pattern is tried."""
    out: dict[str, None] = {}  # first occurrence order, each once
    for r in refs:
        if r and r not in out and r not in held and r.split("/", 1)[0] in FETCHABLE_TYPES and _LOCAL_REF.fullmatch(r):
            out[r] = None
    return list(out)


def claim_references(claim: dict, held: Collection[str] = ()) -> list[str]:
    """"Type/id" references of a Claim to fetch when not in the Bundle: item.encounter,
    item.locationReference, Claim.facility, Claim.procedure.procedureReference and
    Claim.supportingInfo.valueReference (types: Encounter, Procedure, Observation, DiagnosticReport,
    ImagingStudy, Location), but none of `held` (the "Type/id" of the resources in hand). Absolute
    URLs are reduced to "Type/id"; every element read is validated, held or not."""
    fr.resource_type(claim, "Claim", "Claim")
    refs: list[str | None] = [fr.reference(claim.get("facility"), "Claim.facility")]
    for i, item in enumerate(fr.elements(claim.get("item"), "Claim", "item")):
        if type(item) is not dict:
            fr.obj(item, "Claim.item", index=i, required=True)
        p = f"Claim.item[{i}]"
        refs.extend(fr.references(item.get("encounter"), p, "encounter"))
        location = item.get("locationReference")
        if location is not None:
            refs.append(fr.reference(location, p, "locationReference"))
    for key, element in (("procedure", "procedureReference"), ("supportingInfo", "valueReference")):
        for i, entry in enumerate(fr.elements(claim.get(key), "Claim", key)):
            if type(entry) is not dict:
                fr.obj(entry, f"Claim.{key}", index=i, required=True)
            value = entry.get(element)
            if value is not None:
                refs.append(fr.reference(value, f"Claim.{key}[{i}]", element))
    return _fetchable(refs, held)


def follow_references(resources: Sequence[dict]) -> list[str]:
    """Second-hop references worth reading once the first companions are in: Encounter.location,
    Procedure.report / Procedure.location, DiagnosticReport.imagingStudy."""
    refs: list[str | None] = []
    for i, res in enumerate(resources):
        if isinstance(res, dict):
            refs.extend(_second_hop(res, f"{res.get('resourceType')}[{i}]"))
    have = {key_of(r) for r in resources if isinstance(r, dict)}
    return [r for r in _fetchable(refs) if r not in have]


def _second_hop(res: dict, path: str) -> list[str | None]:
    """The references follow_references reads in `res` (at `path`), each validated."""
    rtype = res.get("resourceType")
    if rtype == "Encounter":
        return list(encounter_location_refs(res, path))
    if rtype == "Procedure":
        return [fr.reference(res.get("location"), path, "location"),
                *fr.references(res.get("report"), path, "report")]
    if rtype == "DiagnosticReport":
        return list(fr.references(res.get("imagingStudy"), path, "imagingStudy"))
    return []


def link_searches(resources: Sequence[dict], patient_id: str | None = None) -> list[tuple[str, dict]]:
    """The searches for documentation linked to a 76000 Procedure through its order (issue 10 s.7;
    docs/rules.md, "Documentation about the fluoroscopy"): ``DiagnosticReport?based-on=`` and
    ``ImagingStudy?basedon=`` each ServiceRequest a 76000 Procedure of `resources` is ``basedOn``
    (typed, with ``patient=`` when known). None for a Procedure without basedOn (the common case);
    run with the second-hop reads, in the same round trip."""
    out: list[tuple[str, dict]] = []
    for i, res in enumerate(resources):
        if not isinstance(res, dict) or res.get("resourceType") != "Procedure" or "basedOn" not in res:
            continue
        path = f"Procedure[{i}]"
        if procedure_code(res.get("code"), path, "code") != "76000":
            continue
        for ref in fr.references(res.get("basedOn"), path, "basedOn"):
            if not ref.startswith("ServiceRequest/") or not _LOCAL_REF.fullmatch(ref):
                continue
            for rtype, name in (("DiagnosticReport", "based-on"), ("ImagingStudy", "basedon")):
                params = {name: ref}
                if patient_id:
                    params["patient"] = typed("Patient", patient_id)
                if (rtype, params) not in out:
                    out.append((rtype, params))
    return out


def second_hop(fhir: FhirData, refs: Sequence[str], searches: Sequence[tuple[str, dict]],
               unchecked: Unchecked) -> tuple[dict[str, dict], list[dict]]:
    """The second round trip, at once: the reads of `refs` (``read_refs`` with every one optional)
    and the `searches` (link_searches); what cannot be had is recorded in `unchecked`. Returns
    ("Type/id" -> resource read, resources found by the searches)."""
    if not searches:
        return read_refs(fhir, (), refs, unchecked=unchecked), []
    refs = list(dict.fromkeys(refs))
    calls: list[Callable[[], object]] = [lambda r=r: fhir.read(r) for r in refs]
    calls += [lambda rt=rt, p=p: search_with_fallback(fhir, rt, p) for rt, p in searches]
    results = fhir.concurrently(calls)
    read: dict[str, dict] = {}
    for ref, res in zip(refs, results):
        res = or_unchecked(unchecked, res, ref, None, *affected_by(ref.split("/", 1)[0]))
        if isinstance(res, dict):
            read[ref] = res
    found: list[dict] = []
    for (rtype, params), res in zip(searches, results[len(refs):]):
        what = f"{rtype}?" + "&".join(f"{k}={v}" for k, v in params.items())
        found += or_unchecked(unchecked, res, what, [], *affected_by(rtype))
    return read, found


def check_fetched(resource: dict, path: str) -> None:
    """The checks of a resource fetched from the FHIR server before any handler reads it: what
    the case builders read (hooks.extract.check_companion) and the references gathering follows.
    Raises InvalidResource; the caller records the resource as not checked (issue 12: fetched
    data that is invalid is the server's, never a 400 to the caller)."""
    check_companion(resource, path)
    _second_hop(resource, path)


def typed(resource_type: str, ident: str) -> str:
    """"Type/id" of an id or of a reference that already is "Type/id"."""
    return ident if ident.startswith(resource_type + "/") else f"{resource_type}/{ident}"


def encounter_searches(encounter_id: str, patient_id: str | None = None) -> list[tuple[str, dict]]:
    """The FHIR searches for an encounter's clinical companions when they were not prefetched:
    typed references, the encounter first (the most selective), the patient when known."""
    params = {"encounter": typed("Encounter", encounter_id)}
    if patient_id:
        params["patient"] = typed("Patient", patient_id)
    return [(t, dict(params)) for t in ("Procedure", "Observation", "DiagnosticReport", "ImagingStudy")]


__all__ = ["DataUnavailable", "SearchRefused", "resources_of", "key_of", "of_type",
           "prefetched_or_read", "prefetched_or_search", "search_with_fallback", "matches", "all_of",
           "read_all", "read_refs", "or_unchecked", "not_found", "included_locations", "encounter_locations", "merge",
           "FETCHABLE_TYPES", "claim_references", "follow_references", "link_searches", "second_hop", "check_fetched",
           "encounter_searches", "typed"]

"""Gathering the FHIR data a handler needs: prefetch first, then the FHIR server.

CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/#prefetch-template): a prefetch key that is absent or
null means the client did not prefetch it, and the service fetches it from ``fhirServer``
itself. :class:`hooks.context.DataUnavailable` (answered 412) is raised only for data that is
needed and can be neither found nor fetched; callers decide what is needed.

What to fetch is planned here too: :func:`claim_references` (a Claim's first-hop references),
:func:`follow_references` (second hop) and :func:`encounter_searches` (an encounter's documentation).
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from .. import fhir_read as fr
from ..context import DataUnavailable, FhirData
from ..extract.setting import encounter_location_refs
from ..fhir_read import key_of


def resources_of(value) -> list[dict]:
    """Resources held by a prefetch value: a Bundle's entries, a lone resource, or nothing."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry") or []
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


def not_found(fhir: FhirData, reference: str, key: str) -> DataUnavailable:
    """The 412 reason for a needed resource that came back as None: what really happened."""
    if fhir.has_server:
        return DataUnavailable(f"{reference} was not found on the FHIR server (HTTP 404/410)")
    return DataUnavailable(f"the client's prefetch '{key}' says there is no {reference} (null) "
                           "and the request has no fhirServer")


def prefetched_or_search(fhir: FhirData, key: str | None, resource_type: str,
                         params: dict[str, str]) -> list[dict]:
    """Resources of `resource_type` under prefetch `key`, else a search of the FHIR server.

    The service layer's ``prefetched`` already fetches a declared template's query from the
    server when the client did not prefetch it, and answers None when the client said there is
    no data (null): that is taken at its word. The search covers keys the service does not declare.
    """
    if key:
        return of_type(resources_of(fhir.prefetched(key)), resource_type)
    return fhir.search(resource_type, params)


def encounter_locations(fhir: FhirData, encounter: dict, key: str = "encounterLocations",
                        have: Iterable[dict] = ()) -> list[dict]:
    """Locations of Encounter.location: from prefetch `key` (an _include Bundle) or read one by one.

    A Location the server does not know (404) is skipped; an unreachable server raises.
    """
    wanted = [r for r in follow_references([encounter]) if r.startswith("Location/")]
    known = {key_of(r): r for r in have if r.get("resourceType") == "Location"}
    if wanted:
        try:
            included = fhir.prefetched(key)
        except DataUnavailable:
            included = None  # not prefetched and not fetchable as a whole: read one by one
        known.update({key_of(r): r for r in of_type(resources_of(included), "Location")})
    out = []
    for ref in dict.fromkeys(wanted):
        res = known.get(ref)
        if res is None:
            res = fhir.read(ref)
        if res is not None:
            out.append(res)
    return out


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


def _fetchable(refs: Iterable[str | None]) -> list[str]:
    out: dict[str, None] = {}  # first occurrence order, each once
    for r in refs:
        if r and r not in out and r.split("/", 1)[0] in FETCHABLE_TYPES and _LOCAL_REF.fullmatch(r):
            out[r] = None
    return list(out)


def claim_references(claim: dict) -> list[str]:
    """"Type/id" references of a Claim to fetch when not in the Bundle: item.encounter,
    item.locationReference, Claim.facility, Claim.procedure.procedureReference and
    Claim.supportingInfo.valueReference (types: Encounter, Procedure, Observation, DiagnosticReport,
    ImagingStudy, Location). Absolute URLs are reduced to "Type/id"."""
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
    return _fetchable(refs)


def follow_references(resources: Sequence[dict]) -> list[str]:
    """Second-hop references worth reading once the first companions are in: Encounter.location,
    Procedure.report / Procedure.location, DiagnosticReport.imagingStudy."""
    refs: list[str | None] = []
    for i, res in enumerate(resources):
        if not isinstance(res, dict):
            continue
        rtype = res.get("resourceType")
        path = f"{rtype}[{i}]"
        if rtype == "Encounter":
            refs.extend(encounter_location_refs(res, path))
        elif rtype == "Procedure":
            refs.append(fr.reference(res.get("location"), path, "location"))
            refs.extend(fr.references(res.get("report"), path, "report"))
        elif rtype == "DiagnosticReport":
            refs.extend(fr.references(res.get("imagingStudy"), path, "imagingStudy"))
    have = {key_of(r) for r in resources if isinstance(r, dict)}
    return [r for r in _fetchable(refs) if r not in have]


def encounter_searches(encounter_id: str) -> list[tuple[str, dict]]:
    """The FHIR searches for an encounter's clinical companions when they were not prefetched."""
    enc = encounter_id if encounter_id.startswith("Encounter/") else f"Encounter/{encounter_id}"
    return [(t, {"encounter": enc}) for t in ("Procedure", "Observation", "DiagnosticReport", "ImagingStudy")]


__all__ = ["DataUnavailable", "resources_of", "key_of", "of_type", "prefetched_or_read", "not_found",
           "prefetched_or_search", "encounter_locations", "merge", "FETCHABLE_TYPES",
           "claim_references", "follow_references", "encounter_searches"]

"""The claim-review ``context.claim`` Bundle: the Claim and its companions, and the references
the entries answer to through their fullUrl."""
from __future__ import annotations

from typing import Any

from .. import fhir_read as fr
from ..context import InvalidResource

CLAIM_OR_BUNDLE = ("Claim", "Bundle")


def split_claim_bundle(value: dict, path: str = "context.claim",
                       accepted: tuple[str, ...] = CLAIM_OR_BUNDLE,
                       aliases: dict[str, dict] | None = None) -> tuple[dict, list[dict]]:
    """``context.claim`` of claim-review: a Claim, or a Bundle whose first entry is the Claim.

    Returns (claim, companions); companions are the other entries' resources. `path` names the
    value in errors; `accepted`: the resource types taken alone or as a Bundle's first entry, with
    "Bundle" (the batch also takes ExplanationOfBenefit: service/bulk_input.py). `aliases`, when
    given, receives what :func:`bundle_aliases` returns, read in the same pass over the entries
    (its errors come after the entries' and the types').
    """
    rtype = fr.resource_type(value, path, accepted)
    if rtype != "Bundle":
        return value, []
    entries = fr.elements(value.get("entry"), "Bundle", "entry")
    if not entries:
        raise fr.invalid("Bundle.entry", "must hold the Claim as its first entry")
    resources = []
    url_error = None
    for i, entry in enumerate(entries):  # paths are formatted only for an invalid entry
        if type(entry) is not dict:
            fr.obj(entry, f"Bundle.entry[{i}]", required=True)
        resource = entry.get("resource")
        if type(resource) is not dict:
            fr.obj(resource, f"Bundle.entry[{i}]", "resource", required=True)
        resources.append(resource)
        if aliases is not None and url_error is None:
            url_error = _alias(entry, resource, i, aliases)
    for i, resource in enumerate(resources):  # then their types (the first error is reported)
        rtype = resource.get("resourceType")
        if not (type(rtype) is str and rtype.strip() and (i or (rtype in accepted and rtype != "Bundle"))):
            fr.resource_type(resource, f"Bundle.entry[{i}].resource",
                             tuple(t for t in accepted if t != "Bundle") if i == 0 else None)
    if url_error is not None:
        raise url_error
    return resources[0], resources[1:]


def _alias(entry: dict, resource: dict, i: int, aliases: dict[str, dict]) -> InvalidResource | None:
    """Adds the reference entry `i` answers to through its fullUrl to `aliases` (see
    :func:`bundle_aliases`); the error of an invalid fullUrl is returned, not raised."""
    url = entry.get("fullUrl")
    if url is None:
        return None
    if type(url) is not str or not url.strip():
        try:
            fr.string(url, f"Bundle.entry[{i}]", "fullUrl", required=True)
        except InvalidResource as exc:
            return exc
        return None
    url = url.strip()
    if url.startswith(("urn:uuid:", "urn:oid:")):
        aliases.setdefault(url, resource)
    elif not resource.get("id"):  # with an id, "Type/id" already finds the resource
        aliases.setdefault(fr.normalize_reference(url), resource)
    return None


def bundle_aliases(value: Any) -> dict[str, dict]:
    """The references a Bundle's entries answer to through their ``fullUrl``: "urn:uuid:..." and
    "urn:oid:..." as written; for a resource without an id, another URL reduced to "Type/id"
    (FHIR R4 Bundle rules: a reference inside a Bundle resolves against the entries' fullUrls).
    {} for a lone Claim.
    Run after split_claim_bundle, which has checked the entries; each fullUrl read is checked.
    (claim-review reads them in split_claim_bundle's pass: its `aliases` argument.)"""
    aliases: dict[str, dict] = {}
    if type(value) is not dict or value.get("resourceType") != "Bundle":
        return aliases
    for i, entry in enumerate(fr.elements(value.get("entry"), "Bundle", "entry")):
        if type(entry) is not dict or type(entry.get("resource")) is not dict:
            continue
        error = _alias(entry, entry["resource"], i, aliases)
        if error is not None:
            raise error
    return aliases

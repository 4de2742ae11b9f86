"""fluoroscopy-claim-review on the custom hook org.fluoro-cds.claim-review: reviews a FHIR Claim.

The hook is defined in docs/hooks/claim-review.md. Its name is the reverse-domain name of the
project's domain (fluoro-cds.org, that of its URIs); ``org.fluorocds.claim-review``, the name it
had before, is still accepted.

``context.claim`` is a Claim, or a Bundle whose first entry is the Claim followed by companions
(Encounter, Procedures, Observations, DiagnosticReports, ImagingStudies, Locations). The handler
fetches the clinical resources the Claim references and the Bundle lacks (gather
``claim_references``) and searches the encounter's documentation (``encounter_searches``).
An Encounter the Claim references that can be neither found nor fetched is a 412 (nothing to
review it against); other data that cannot be had is recorded in ``request.unchecked`` (an info
card says what was not checked; without documentation no documentation card). When the Bundle
carries the Encounter and there is no fhirServer it is taken as complete: nothing is searched;
with a fhirServer, a search or read that fails is recorded like any other. Suggestions carry
one ``update`` action with the whole corrected Claim (docs/contract.md#actions).
"""
from __future__ import annotations

from dataclasses import replace

from .. import cards, explain, fhir_read as fr, rules
from ..context import DOCUMENTATION, DataUnavailable, HookRequest
from ..unchecked import affected_by
from ..extract import case_from_claim, split_claim_bundle
from ..extract.companions import Index, index_companions
from .base import CdsService
from .gather import (claim_references, encounter_searches, follow_references, key_of, link_searches, merge,
                     of_type, or_unchecked, search_with_fallback, second_hop)

CLAIM_REVIEW_HOOK = "org.fluoro-cds.claim-review"
LEGACY_CLAIM_REVIEW_HOOK = "org.fluorocds.claim-review"
SERVICE_LABEL = "fluoro-cds: fluoroscopy claim review"

REQUIRED = frozenset({"Encounter"})  # without the encounters the Claim names, no review

# No prefetch template: the Claim and its companions come in the context, the rest is read and
# searched as the Claim references it (a template nothing reads is not declared).
PREFETCH: dict[str, str] = {}


def _patient_of(request: HookRequest, claim: dict) -> str | None:
    ref = fr.reference(claim.get("patient"), "Claim", "patient")
    if ref and ref.startswith("Patient/"):
        return ref
    pid = request.context.get("patientId")
    return pid if isinstance(pid, str) and pid else None


def gather_companions(request: HookRequest, claim: dict, bundled: list[dict],
                      index: Index | None = None) -> list[dict]:
    """The Bundle's companions, the clinical resources the Claim references (its Encounters
    required, the others recorded in ``request.unchecked`` when they cannot be had), the
    encounters' documentation (searched) and second-hop references (Encounter.location,
    Procedure.report, DiagnosticReport.imagingStudy) with the reports and studies of a 76000
    Procedure's order (link_searches, same round trip). When the Bundle carries the Encounter and
    the request has no fhirServer it is taken as complete (nothing searched); every search or read
    that fails is recorded in ``request.unchecked`` (issue 12: never skipped without a word).
    Round trips without prefetch: the reads and the encounters' searches at once, then the
    second-hop reads at once. `index`: ``index_companions(bundled, ...)`` (with the Bundle's
    fullUrl aliases: a resource the Bundle names through its fullUrl is not read again); `bundled`
    itself is returned when nothing is added or dropped."""
    fhir = request.fhir
    unchecked = request.unchecked
    if index is None:
        index = index_companions(bundled, False)
    have = set(index.by_key)  # the Type/id (and fullUrl) names of the Bundle's resources
    complete = "Encounter" in index.by_type  # the Bundle carries the Encounter
    repeated = index.repeated
    have.add(key_of(claim))
    missing = claim_references(claim, have)
    searching = fhir.has_server or not complete  # a complete Bundle and nowhere to search: no
    encounters = list(dict.fromkeys(
        [r["id"] for r in of_type(bundled, "Encounter") if r.get("id")]
        + [r.split("/", 1)[1] for r in missing if r.startswith("Encounter/")])) if searching else []
    searches = [s for enc in encounters for s in encounter_searches(enc, _patient_of(request, claim))]
    calls = [lambda r=r: fhir.read(r) for r in missing]
    calls += [lambda rt=rt, p=p: search_with_fallback(fhir, rt, p) for rt, p in searches]
    results = fhir.concurrently(calls) if calls else []
    read = []
    for ref, res in zip(missing, results[:len(missing)]):
        rtype = ref.split("/", 1)[0]
        if isinstance(res, DataUnavailable) and rtype in REQUIRED:
            raise res
        res = or_unchecked(unchecked, res, ref, None, *affected_by(rtype))
        if res is not None:
            read.append(res)
    # merge() keeps the first of each Type/id: with nothing read and no repeated key in the Bundle
    # it would return the Bundle's resources as they are
    companions = merge(bundled, read) if read or repeated else bundled
    if not searching:
        return companions
    held = {r.get("id") for r in of_type(companions, "Encounter")}
    for (rtype, params), found in zip(searches, results[len(missing):]):
        if params["encounter"].split("/", 1)[1] not in held:
            continue  # an Encounter the server does not know: no documentation of it
        if isinstance(found, DataUnavailable):
            unchecked.add(f"{rtype}?" + "&".join(f"{k}={v}" for k, v in params.items()),
                          str(found), *affected_by(rtype))
            continue
        companions = merge(companions, found)
    have |= {key_of(r) for r in companions}
    extra = [r for r in follow_references(companions) if r not in have]
    links = link_searches(companions, _patient_of(request, claim)) if fhir.has_server else []
    found, linked = second_hop(fhir, extra, links, unchecked)
    return merge(companions, [found[r] for r in extra if r in found], linked)


def handle(request: HookRequest) -> dict:
    aliases: dict[str, dict] = {}  # "urn:uuid:..." references of entries (bundle_aliases)
    claim, bundled = split_claim_bundle(request.context.get("claim"), aliases=aliases)
    index = index_companions(bundled, False, aliases)  # an invalid companion is a 400 before any read
    try:
        companions = gather_companions(request, claim, bundled, index)
    except DataUnavailable:
        case_from_claim(claim, bundled, request.reference, index=index)  # an invalid Claim is a 400, not a 412
        raise
    if companions is not bundled:
        index = index_companions(companions, False, aliases)
    case = case_from_claim(claim, companions, request.reference, aliases=aliases, index=index)
    if request.unchecked.affects(DOCUMENTATION):
        case = replace(case, evidence_checked=False)  # no documentation card on missing data
    findings = rules.evaluate(case, request.reference, request.config)
    rendered = cards.render(findings, case, request.config, service_label=SERVICE_LABEL)
    if not request.explain:
        return {"cards": rendered}
    items = explain.claim_lines(claim, case, findings, rendered, request.unchecked, request.config,
                                lambda: rules.evaluate(case, request.reference, explain.all_on(request.config)))
    return {"cards": rendered, "extension": explain.extension(items, request.unchecked)}


SERVICE = CdsService(
    id="fluoroscopy-claim-review",
    hook=CLAIM_REVIEW_HOOK,
    title="Fluoroscopy (CPT 76000) claim review",
    description="Reviews a FHIR R4 Claim (or a Bundle whose first entry is the Claim) for CPT 76000: "
                "NCCI PTP and MUE edits, integral fluoroscopy, guidance add-on codes, modifier 26 "
                "and documentation.",
    prefetch=PREFETCH,
    handler=handle,
    source_label=SERVICE_LABEL,
    required_context=("patientId", "claim"),
    hook_aliases=(LEGACY_CLAIM_REVIEW_HOOK,),
)

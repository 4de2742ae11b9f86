"""fluoroscopy-claim-review on the custom hook org.fluorocds.claim-review: reviews a FHIR Claim.

``context.claim`` is a Claim, or a Bundle whose first entry is the Claim followed by companions
(Encounter, Procedures, Observations, DiagnosticReports, ImagingStudies, Locations). The handler
fetches the clinical resources the Claim references and the Bundle lacks (gather
``claim_references``) and searches the encounter's documentation (``encounter_searches``).
An Encounter the Claim references that can be neither found nor fetched is a 412 (nothing to
review it against); other data that cannot be had is recorded in ``request.unchecked`` (an info
card says what was not checked; without documentation no documentation card). When the Bundle
carries the Encounter it is taken as complete: searches it cannot make are skipped. Suggestions carry
one ``update`` action with the whole corrected Claim (docs/contract.md#actions).
"""
from __future__ import annotations

from dataclasses import replace

from .. import cards, rules
from ..context import DOCUMENTATION, DataUnavailable, HookRequest
from ..unchecked import affected_by
from ..extract import bundle_aliases, case_from_claim, split_claim_bundle
from .base import CdsService
from .gather import claim_references, encounter_searches, follow_references, key_of, merge, of_type

CLAIM_REVIEW_HOOK = "org.fluorocds.claim-review"
SERVICE_LABEL = "fluoro-cds: fluoroscopy claim review"

REQUIRED = frozenset({"Encounter"})  # without the encounters the Claim names, no review

PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
}


def _read_all(request: HookRequest, refs: list[str], have: set[str], *, required: frozenset[str],
              record: bool) -> list[dict]:
    """Read each reference not yet held; 404s are skipped. An unavailable resource of a `required`
    type raises (412); others are skipped, and recorded as not checked when `record`."""
    out = []
    for ref in refs:
        if ref in have:
            continue
        try:
            res = request.fhir.read(ref)
        except DataUnavailable as exc:
            rtype = ref.split("/", 1)[0]
            if rtype in required:
                raise
            if record:
                request.unchecked.add(ref, str(exc), *affected_by(rtype))
            continue
        if res is not None:
            out.append(res)
            have.add(ref)
    return out


def gather_companions(request: HookRequest, claim: dict, bundled: list[dict]) -> list[dict]:
    """The Bundle's companions, the clinical resources the Claim references (its Encounters
    required), the encounters' documentation (searched) and second-hop references
    (Encounter.location, Procedure.report, DiagnosticReport.imagingStudy). When the Bundle carries
    the Encounter it is taken as complete: searches and second-hop reads that cannot be made are
    skipped; otherwise they are recorded in ``request.unchecked``."""
    have: set[str] = set()
    complete = False  # the Bundle carries the Encounter
    for r in bundled:  # one pass: the Type/id keys and the Encounter
        complete = complete or r.get("resourceType") == "Encounter"
        have.add(key_of(r))
    repeated = len(have) != len(bundled)
    have.add(key_of(claim))
    read = _read_all(request, claim_references(claim), have, required=REQUIRED, record=True)
    # merge() keeps the first of each Type/id: with nothing read and no repeated key in the Bundle
    # it would return the Bundle's resources as they are
    companions = merge(bundled, read) if read or repeated else list(bundled)
    if complete and not request.fhir.has_server:
        return companions  # a complete Bundle and nowhere to search: nothing more to gather
    for enc in of_type(companions, "Encounter"):
        for rtype, params in encounter_searches(enc["id"]):
            try:
                found = request.fhir.search(rtype, params)
            except DataUnavailable as exc:
                if not complete:
                    request.unchecked.add(_search_text(rtype, params), str(exc), *affected_by(rtype))
                continue
            companions = merge(companions, found)
    have |= {key_of(r) for r in companions}
    return merge(companions, _read_all(request, follow_references(companions), have,
                                       required=frozenset(), record=not complete))


def _search_text(resource_type: str, params: dict[str, str]) -> str:
    return f"{resource_type}?" + "&".join(f"{k}={v}" for k, v in params.items())


def handle(request: HookRequest) -> dict:
    claim, bundled = split_claim_bundle(request.context.get("claim"))
    aliases = bundle_aliases(request.context.get("claim"))  # "urn:uuid:..." references of entries
    try:
        companions = gather_companions(request, claim, bundled)
    except DataUnavailable:
        case_from_claim(claim, bundled, request.reference)  # an invalid Claim is a 400, not a 412
        raise
    case = case_from_claim(claim, companions, request.reference, aliases=aliases)
    if request.unchecked.affects(DOCUMENTATION):
        case = replace(case, evidence_checked=False)  # no documentation card on missing data
    findings = rules.evaluate(case, request.reference, request.config)
    return {"cards": cards.render(findings, case, request.config, service_label=SERVICE_LABEL)}


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
)

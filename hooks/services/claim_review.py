"""fluoroscopy-claim-review on the custom hook org.fluorocds.claim-review: reviews a FHIR Claim.

``context.claim`` is a Claim, or a Bundle whose first entry is the Claim followed by companions
(Encounter, Procedures, Observations, DiagnosticReports, ImagingStudies, Locations). The handler
fetches the clinical resources the Claim references and the Bundle lacks (hooks.extract
``claim_references``) and searches the encounter's documentation (``encounter_searches``).
A clinical reference that can be neither found nor fetched is a 412; the searches are optional
when the Bundle already carries the Encounter (it is then taken as complete). Suggestions carry
one ``update`` action with the whole corrected Claim (DESIGN.md section 3).
"""
from __future__ import annotations

from .. import cards, rules
from ..context import DataUnavailable, HookRequest, InvalidResource
from ..extract import case_from_claim, claim_references, encounter_searches
from .base import CdsService
from .gather import key_of, merge, of_type, resources_of

CLAIM_REVIEW_HOOK = "org.fluorocds.claim-review"
SERVICE_LABEL = "fluoro-cds: fluoroscopy claim review"

PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
}

# Referenced resource types the review reads: missing ones make the answer wrong (412).
NEEDED_TYPES = frozenset({"Encounter", "Procedure", "Observation", "DiagnosticReport",
                          "ImagingStudy", "Location", "Media"})


def split_claim(value) -> tuple[dict, list[dict]]:
    """The Claim and its companions from ``context.claim`` (a Claim or a Bundle)."""
    if not isinstance(value, dict):
        raise InvalidResource("context.claim must be a FHIR Claim or Bundle", "claim")
    if value.get("resourceType") == "Claim":
        return value, []
    if value.get("resourceType") == "Bundle":
        found = resources_of(value)
        if not found or found[0].get("resourceType") != "Claim":
            raise InvalidResource("the first entry of the context.claim Bundle must be a Claim",
                                  "Bundle.entry[0].resource")
        return found[0], found[1:]
    raise InvalidResource(f"context.claim is a {value.get('resourceType')}, not a Claim or Bundle",
                          "claim")


def gather_companions(request: HookRequest, claim: dict, bundled: list[dict]) -> list[dict]:
    """The Bundle's companions plus what the Claim references and the encounters' documentation."""
    have = {key_of(r) for r in bundled} | {key_of(claim)}
    fetched: list[dict] = []
    for ref in claim_references(claim):
        if ref in have:
            continue
        needed = ref.split("/", 1)[0] in NEEDED_TYPES
        try:
            res = request.fhir.read(ref)
        except DataUnavailable:
            if needed:
                raise
            continue
        if res is not None:
            fetched.append(res)
            have.add(ref)
    companions = merge(bundled, fetched)
    bundled_encounters = {key_of(e) for e in of_type(bundled, "Encounter")}
    for enc in of_type(companions, "Encounter"):
        for rtype, params in encounter_searches(enc["id"]):
            try:
                found = request.fhir.search(rtype, params)
            except DataUnavailable:
                if key_of(enc) in bundled_encounters:
                    continue  # the Bundle carried the encounter: take it as complete
                raise
            companions = merge(companions, found)
    return companions


def handle(request: HookRequest) -> dict:
    claim, bundled = split_claim(request.context.get("claim"))
    companions = gather_companions(request, claim, bundled)
    case = case_from_claim(claim, companions, request.reference)
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
    required_context=("patientId", "claim"),
)

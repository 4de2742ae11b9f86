"""fluoroscopy-discharge-review on encounter-discharge: reviews the encounter's 76000 before billing.

Data: the Encounter (required), its Locations, Procedures, Observations, DiagnosticReports,
ImagingStudies and the Claim(s) for the encounter, from prefetch or the FHIR server. With a Claim,
suggestions carry one ``update`` of the corrected Claim; without one, the cards explain what not to
bill and what to document (docs/contract.md#actions).
"""
from __future__ import annotations

from .. import cards, fhir_read as fr, rules
from ..context import DataUnavailable, HookRequest, InvalidResource
from ..extract import case_from_encounter
from .base import CdsService
from .gather import (encounter_locations, encounter_searches, follow_references, key_of, merge,
                     prefetched_or_read, prefetched_or_search)

SERVICE_LABEL = "fluoro-cds: fluoroscopy discharge review"

PREFETCH = {
    "encounter": "Encounter/{{context.encounterId}}",
    "encounterLocations": "Encounter?_id={{context.encounterId}}&_include=Encounter:location",
    "procedures": "Procedure?encounter={{context.encounterId}}",
    "observations": "Observation?encounter={{context.encounterId}}",
    "reports": "DiagnosticReport?encounter={{context.encounterId}}",
    "imagingStudies": "ImagingStudy?encounter={{context.encounterId}}",
    "claims": "Claim?encounter={{context.encounterId}}",
}

# Prefetch key holding the result of each encounter search (gather.encounter_searches).
SEARCH_KEYS = {"Procedure": "procedures", "Observation": "observations",
               "DiagnosticReport": "reports", "ImagingStudy": "imagingStudies"}


def _claims_for_encounter(request: HookRequest, encounter: dict) -> list[dict]:
    """Claims whose item.encounter is this encounter: prefetch, else Claim?encounter=, else
    Claim?patient= filtered by item.encounter (for servers without the encounter parameter)."""
    enc_ref = f"Encounter/{encounter['id']}"
    try:
        value = request.fhir.prefetched("claims")
        if value is not None:
            return prefetched_or_search(request.fhir, "claims", "Claim", {})
        return []  # the client said: no Claim for this encounter
    except DataUnavailable as first:
        patient = request.context.get("patientId") or \
            (fr.reference(encounter.get("subject"), "Encounter", "subject") or "").split("/")[-1]
        if not patient:
            raise
        try:
            claims = request.fhir.search("Claim", {"patient": patient})
        except DataUnavailable:
            raise first from None
    return [c for c in claims if _bills_encounter(c, enc_ref)]


def _bills_encounter(claim: dict, enc_ref: str) -> bool:
    """A Claim has an item whose encounter is `enc_ref` ("Encounter/id"); a Claim whose items
    cannot be read is not this encounter's (it is another visit's record, not the request's)."""
    try:
        return any(enc_ref in fr.references(item.get("encounter"), "Claim.item", "encounter")
                   for item in fr.elements(claim.get("item"), "Claim", "item")
                   if isinstance(item, dict))
    except InvalidResource:
        return False


def pick_claim(claims: list[dict]) -> dict | None:
    """The Claim to correct: not cancelled / entered-in-error, preferring one billing 76000,
    then the latest created."""
    def bills_76000(c):
        return any(cd.get("code") == "76000" for it in c.get("item") or []
                   for cd in (it.get("productOrService") or {}).get("coding") or [])
    live = [c for c in claims if c.get("resourceType") == "Claim"
            and c.get("status") not in ("cancelled", "entered-in-error")]
    if not live:
        return None
    return sorted(live, key=lambda c: (bills_76000(c), str(c.get("created", ""))))[-1]


def handle(request: HookRequest) -> dict:
    enc_id = request.context["encounterId"]
    encounter = prefetched_or_read(request.fhir, "encounter", f"Encounter/{enc_id}")
    if encounter is None:
        raise DataUnavailable(f"Encounter/{enc_id} was not found on the FHIR server")
    found = [encounter_locations(request.fhir, encounter)]
    for rtype, params in encounter_searches(enc_id):
        found.append(prefetched_or_search(request.fhir, SEARCH_KEYS.get(rtype), rtype, params))
    companions = merge([encounter], *found)
    have = {key_of(r) for r in companions}
    for ref in follow_references(companions):  # Procedure.report, DiagnosticReport.imagingStudy
        if ref in have:
            continue
        try:
            res = request.fhir.read(ref)
        except DataUnavailable:
            continue  # supplemental: the encounter searches already gave the documentation
        if res is not None:
            companions.append(res)
            have.add(ref)
    claim = pick_claim(_claims_for_encounter(request, encounter))
    case = case_from_encounter(encounter, companions, claim, request.reference)
    findings = rules.evaluate(case, request.reference, request.config)
    return {"cards": cards.render(findings, case, request.config, service_label=SERVICE_LABEL)}


SERVICE = CdsService(
    id="fluoroscopy-discharge-review",
    hook="encounter-discharge",
    title="Fluoroscopy (CPT 76000) discharge review",
    description="At discharge, reviews the encounter's fluoroscopy: NCCI bundling, modifier 26 in "
                "facility settings, and missing fluoroscopy documentation.",
    prefetch=PREFETCH,
    handler=handle,
    required_context=("userId", "patientId", "encounterId"),
)

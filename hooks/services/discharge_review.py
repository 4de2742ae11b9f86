"""fluoroscopy-discharge-review on encounter-discharge: reviews the encounter's 76000 before billing.

Data: the Encounter (required: 412 without it), its Locations, Procedures, Observations,
DiagnosticReports, ImagingStudies and the Claim(s) for the encounter, from prefetch or the FHIR
server. Those that cannot be had are recorded in ``request.unchecked`` (an info card says what was
not checked); with neither Procedures nor a Claim there is nothing to review (412). With a Claim,
suggestions carry one ``update`` of the corrected Claim; without one, the cards explain what not to
bill and what to document (docs/contract.md#actions).
"""
from __future__ import annotations

from dataclasses import replace

from .. import cards, fhir_read as fr, rules
from ..context import (CLAIM, DOCUMENTATION, PROCEDURES, SETTING, DataUnavailable, HookRequest,
                       InvalidResource)
from ..unchecked import affected_by, optional
from ..extract import case_from_encounter
from .base import CdsService
from .gather import (encounter_locations, encounter_searches, follow_references, key_of, merge,
                     not_found, prefetched_or_read, prefetched_or_search)

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
    unchecked = request.unchecked
    encounter = prefetched_or_read(request.fhir, "encounter", f"Encounter/{enc_id}")
    if encounter is None:
        raise not_found(request.fhir, f"Encounter/{enc_id}", "encounter")
    found = [optional(unchecked, f"the Locations of Encounter/{enc_id}",
                      lambda: encounter_locations(request.fhir, encounter), [], SETTING)]
    for rtype, params in encounter_searches(enc_id):
        key = SEARCH_KEYS.get(rtype)
        found.append(optional(unchecked, f"the encounter's {rtype} resources (prefetch '{key}')",
                              lambda: prefetched_or_search(request.fhir, key, rtype, params), [],
                              *affected_by(rtype)))
    companions = merge([encounter], *found)
    have = {key_of(r) for r in companions}
    have.update(follow_references([encounter]))  # its Locations: tried above, found or not
    for ref in follow_references(companions):  # Procedure.report, DiagnosticReport.imagingStudy
        if ref in have:
            continue
        res = optional(unchecked, ref, lambda: request.fhir.read(ref), None,
                       *affected_by(ref.split("/", 1)[0]))
        if res is not None:
            companions.append(res)
            have.add(ref)
    claims = optional(unchecked, "the encounter's Claim (prefetch 'claims')",
                      lambda: _claims_for_encounter(request, encounter), [], CLAIM)
    claim = pick_claim(claims)
    if claim is None and unchecked.affects(PROCEDURES):
        # no Claim and no Procedures: nothing to review (412 with what could not be had)
        raise DataUnavailable("nothing to review: " + "; ".join(f"{g.what}: {g.why}" for g in unchecked))
    case = case_from_encounter(encounter, companions, claim, request.reference)
    if unchecked.affects(DOCUMENTATION):
        case = replace(case, evidence_checked=False)  # no documentation card on missing data
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
    source_label=SERVICE_LABEL,
    required_context=("userId", "patientId", "encounterId"),
)

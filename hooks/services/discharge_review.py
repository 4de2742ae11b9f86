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

from .. import cards, rules
from .. import fhir_read as fr
from ..context import CLAIM, DOCUMENTATION, PROCEDURES, DataUnavailable, HookRequest
from ..unchecked import affected_by
from ..extract import case_from_encounter
from ..findings import Finding
from ..model import Case
from .base import CdsService
from .gather import (all_of, encounter_searches, follow_references, included_locations, key_of,
                     link_searches, location_refs, merge, not_found, or_unchecked, prefetched_or_read,
                     prefetched_or_search, second_hop, typed)

SERVICE_LABEL = "fluoro-cds: fluoroscopy discharge review"

# Typed references and the patient on every search (strict and US Core servers).
PREFETCH = {
    "encounter": "Encounter/{{context.encounterId}}",
    "encounterLocations": "Encounter?_id={{context.encounterId}}&patient=Patient/{{context.patientId}}"
                          "&_include=Encounter:location",
    "procedures": "Procedure?encounter=Encounter/{{context.encounterId}}&patient=Patient/{{context.patientId}}",
    "observations": "Observation?encounter=Encounter/{{context.encounterId}}"
                    "&patient=Patient/{{context.patientId}}",
    "reports": "DiagnosticReport?encounter=Encounter/{{context.encounterId}}"
               "&patient=Patient/{{context.patientId}}",
    "imagingStudies": "ImagingStudy?encounter=Encounter/{{context.encounterId}}"
                      "&patient=Patient/{{context.patientId}}",
    "claims": "Claim?encounter=Encounter/{{context.encounterId}}&patient=Patient/{{context.patientId}}",
}

# Prefetch key holding the result of each encounter search (gather.encounter_searches).
SEARCH_KEYS = {"Procedure": "procedures", "Observation": "observations",
               "DiagnosticReport": "reports", "ImagingStudy": "imagingStudies"}


def claims_search(encounter_id: str, patient_id: str) -> dict[str, str]:
    """Claim?encounter=&patient=: a server refusing ``encounter`` on Claim is searched by patient
    and the Claims filtered by item.encounter (gather.search_with_fallback)."""
    return {"encounter": typed("Encounter", encounter_id), "patient": typed("Patient", patient_id)}


def pick_claim(claims: list[dict]) -> dict | None:
    """The Claim to correct: not cancelled / entered-in-error, preferring one billing 76000,
    then the latest created."""
    def bills_76000(c):  # each element read through fhir_read: a wrong type is a 400 with its path
        return any(code == "76000" for path, it in fr.objects(c.get("item"), "Claim", "item")
                   for _, code in fr.codings(it.get("productOrService"), path, "productOrService"))
    live = [c for c in claims if c.get("resourceType") == "Claim"
            and c.get("status") not in ("cancelled", "entered-in-error")]
    if not live:
        return None
    return sorted(live, key=lambda c: (bills_76000(c), str(c.get("created", ""))))[-1]


def handle(request: HookRequest) -> dict:
    case, findings = review(request)
    return {"cards": cards.render(findings, case, request.config, service_label=SERVICE_LABEL)}


def review(request: HookRequest) -> tuple[Case, list[Finding]]:
    """The encounter's case and the findings of the rules on it (what the cards render; the SMART
    documentation app reads the same case to show what is documented and what is missing)."""
    fhir = request.fhir
    enc_id = request.context["encounterId"]
    patient = request.context["patientId"]
    # round trip 1: everything that needs only the context, at once
    calls = [lambda: prefetched_or_read(fhir, "encounter", f"Encounter/{enc_id}"),
             lambda: included_locations(fhir),
             lambda: prefetched_or_search(fhir, "claims", "Claim", claims_search(enc_id, patient))]
    searches = encounter_searches(enc_id, patient)
    calls += [lambda rt=rt, p=p: prefetched_or_search(fhir, SEARCH_KEYS.get(rt), rt, p)
              for rt, p in searches]
    results = fhir.concurrently(calls)
    encounter, included = all_of(results[:2])  # the Encounter is needed
    if encounter is None:
        raise not_found(fhir, f"Encounter/{enc_id}", "encounter")
    unchecked = request.unchecked  # the rest is reviewed without, and said so
    claims = or_unchecked(unchecked, results[2], "the encounter's Claim (prefetch 'claims')", [],
                          CLAIM)
    found = [or_unchecked(unchecked, res, f"the encounter's {rt} resources (prefetch "
                                          f"'{SEARCH_KEYS.get(rt)}')", [], *affected_by(rt))
             for (rt, _), res in zip(searches, results[3:])]
    # round trip 2: the Locations the _include did not give and second-hop references
    # (Procedure.report, DiagnosticReport.imagingStudy) and the searches of link_searches, at once
    known = {key_of(r): r for r in included}
    wanted = location_refs(encounter)
    first = merge([encounter], *found)
    have = {key_of(r) for r in first} | set(wanted)
    extra = [r for r in follow_references(first) if r not in have]
    links = link_searches(first, patient) if fhir.has_server else []  # a 76000 Procedure's order's reports
    read, linked = second_hop(fhir, [r for r in wanted if r not in known] + extra, links, unchecked)
    locations = [res for res in (known.get(r) or read.get(r) for r in wanted) if res is not None]
    companions = merge([encounter], locations, *found)
    companions += [read[r] for r in extra if r in read]
    if linked:
        companions = merge(companions, linked)
    claim = pick_claim(claims)
    if claim is None and unchecked.affects(PROCEDURES):
        # no Claim and no Procedures: nothing to review (412 with what could not be had)
        raise DataUnavailable("nothing to review: " + "; ".join(f"{g.what}: {g.why}" for g in unchecked))
    case = case_from_encounter(encounter, companions, claim, request.reference)
    if unchecked.affects(DOCUMENTATION):
        case = replace(case, evidence_checked=False)  # no documentation card on missing data
    return case, rules.evaluate(case, request.reference, request.config)


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

"""fluoroscopy-order-review on order-sign: reviews draft orders for 76000 before they are signed.

Data: ``context.draftOrders`` (a Bundle of ServiceRequest and/or Procedure) and, when
``context.encounterId`` is given, the Encounter (required then), its Locations and Procedures, from
prefetch or the FHIR server (recorded in ``request.unchecked`` when they cannot be had). Removing 76000 is a ``delete`` of the draft; replacing it is that
``delete`` plus a ``create`` of the new draft order (docs/contract.md#actions).
"""
from __future__ import annotations

from .. import cards, explain, rules
from ..context import PROCEDURES, SETTING, HookRequest, InvalidResource
from ..unchecked import optional
from ..extract import case_from_orders
from ..extract.cases import order_key
from .base import CdsService
from .gather import (all_of, encounter_locations, encounter_searches, included_locations,
                     merge, not_found, or_unchecked, prefetched_or_read, prefetched_or_search)

SERVICE_LABEL = "fluoro-cds: fluoroscopy order review"

# Typed references and the patient on every search (strict and US Core servers).
PREFETCH = {
    "encounter": "Encounter/{{context.encounterId}}",
    "encounterLocations": "Encounter?_id={{context.encounterId}}&patient=Patient/{{context.patientId}}"
                          "&_include=Encounter:location",
    "procedures": "Procedure?encounter=Encounter/{{context.encounterId}}&patient=Patient/{{context.patientId}}",
}


def handle(request: HookRequest) -> dict:
    draft_orders = request.context.get("draftOrders")
    if not isinstance(draft_orders, dict) or draft_orders.get("resourceType") != "Bundle":
        raise InvalidResource("context.draftOrders must be a FHIR Bundle", "draftOrders")
    drafts = {k: e["resource"] for e in draft_orders.get("entry") or ()
              if isinstance(e, dict) and isinstance(e.get("resource"), dict)
              and (k := order_key(e, e["resource"])) is not None}
    companions: list[dict] = []
    enc_id = request.context.get("encounterId")
    if enc_id:
        fhir = request.fhir
        [(_, params)] = [s for s in encounter_searches(enc_id, request.context.get("patientId"))
                         if s[0] == "Procedure"]
        results = fhir.concurrently([  # one round trip
            lambda: prefetched_or_read(fhir, "encounter", f"Encounter/{enc_id}"),
            lambda: included_locations(fhir),
            lambda: prefetched_or_search(fhir, "procedures", "Procedure", params)])
        encounter, included = all_of(results[:2])  # the Encounter is needed
        if encounter is None:
            raise not_found(fhir, f"Encounter/{enc_id}", "encounter")
        unchecked = request.unchecked
        procedures = or_unchecked(unchecked, results[2],
                                  "the encounter's Procedure resources (prefetch 'procedures')", [],
                                  PROCEDURES)
        locations = optional(unchecked, f"the Locations of Encounter/{enc_id}",
                             lambda: encounter_locations(fhir, encounter, included=included), [],
                             SETTING)
        companions = merge([encounter], locations, procedures)
    case = case_from_orders(draft_orders, companions, request.reference)
    findings = rules.evaluate(case, request.reference, request.config)
    rendered = cards.render(findings, case, request.config, service_label=SERVICE_LABEL, drafts=drafts)
    if not request.explain:
        return {"cards": rendered}
    items = explain.draft_orders(draft_orders, case, findings, rendered, request.unchecked, request.config,
                                 lambda: rules.evaluate(case, request.reference, explain.all_on(request.config)))
    return {"cards": rendered, "extension": explain.extension(items, request.unchecked)}


SERVICE = CdsService(
    id="fluoroscopy-order-review",
    hook="order-sign",
    title="Fluoroscopy (CPT 76000) order review",
    description="Reviews draft orders for CPT 76000 against NCCI edits and fluoroscopy billing "
                "policy before signing: bundled or integral fluoroscopy, guidance add-on codes.",
    prefetch=PREFETCH,
    handler=handle,
    source_label=SERVICE_LABEL,
    required_context=("userId", "patientId", "draftOrders"),
)

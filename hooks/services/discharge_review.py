"""fluoroscopy-discharge-review on encounter-discharge: reviews the encounter's 76000 before billing."""
from __future__ import annotations

from ..context import HookRequest
from .base import CdsService

PREFETCH = {
    "encounter": "Encounter/{{context.encounterId}}",
    "procedures": "Procedure?encounter={{context.encounterId}}",
    "observations": "Observation?encounter={{context.encounterId}}",
    "reports": "DiagnosticReport?encounter={{context.encounterId}}",
    "claims": "Claim?encounter={{context.encounterId}}",
}


def handle(request: HookRequest) -> dict:
    """Placeholder until the rules land: no cards."""
    return {"cards": []}


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

"""fluoroscopy-claim-review on the custom hook org.fluorocds.claim-review: reviews a FHIR Claim."""
from __future__ import annotations

from ..context import HookRequest
from .base import CdsService

CLAIM_REVIEW_HOOK = "org.fluorocds.claim-review"

PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
}


def handle(request: HookRequest) -> dict:
    """Placeholder until the rules land: no cards."""
    return {"cards": []}


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

"""fluoroscopy-order-review on order-sign: reviews draft orders for 76000 before they are signed."""
from __future__ import annotations

from ..context import HookRequest
from .base import CdsService

PREFETCH = {
    "encounter": "Encounter/{{context.encounterId}}",
    "procedures": "Procedure?encounter={{context.encounterId}}",
}


def handle(request: HookRequest) -> dict:
    """Placeholder until the rules land: no cards."""
    return {"cards": []}


SERVICE = CdsService(
    id="fluoroscopy-order-review",
    hook="order-sign",
    title="Fluoroscopy (CPT 76000) order review",
    description="Reviews draft orders for CPT 76000 against NCCI edits and fluoroscopy billing "
                "policy before signing: bundled or integral fluoroscopy, guidance add-on codes.",
    prefetch=PREFETCH,
    handler=handle,
    required_context=("userId", "patientId", "draftOrders"),
)

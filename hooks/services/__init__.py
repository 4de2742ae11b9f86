"""The registry of CDS services, in discovery order."""
from __future__ import annotations

from . import claim_review, discharge_review, order_review
from .base import CdsService

SERVICES: tuple[CdsService, ...] = (order_review.SERVICE, discharge_review.SERVICE,
                                    claim_review.SERVICE)
BY_ID: dict[str, CdsService] = {s.id: s for s in SERVICES}

__all__ = ["SERVICES", "BY_ID", "CdsService"]

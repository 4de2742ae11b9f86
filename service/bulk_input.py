"""What the payer batch reads: its records, as resources to review with their companions.

A batch record is a Claim, an ExplanationOfBenefit, or a Bundle whose first entry is one of them
followed by its companions (:func:`split_record`). Error paths name the resource
(``ExplanationOfBenefit.item[0].servicedDate``, ``Patient.resourceType``), never a CDS Hooks
context.
"""
from __future__ import annotations

from hooks.context import InvalidResource
from hooks.extract.bundle import split_claim_bundle

# What a batch record may be: reviewed alone, or a Bundle whose first entry is one of the others.
RECORD_TYPES = ("Claim", "ExplanationOfBenefit", "Bundle")


def split_record(value: object) -> tuple[dict, list[dict]]:
    """(the Claim or ExplanationOfBenefit, its companions) of one batch record; raises
    InvalidResource naming the path in the record (its resourceType, "$" when that is not one of RECORD_TYPES)."""
    if not isinstance(value, dict):
        raise InvalidResource("$: record must be a JSON object (a Claim, an ExplanationOfBenefit or a "
                              "Bundle)", "$")
    rtype = value.get("resourceType")
    return split_claim_bundle(value, rtype if rtype in RECORD_TYPES else "$", RECORD_TYPES)

"""FHIR R4 -> the normalized model (:mod:`hooks.model`): lines, setting and documentation evidence.

The package's public API (the services code against these names):

- :func:`case_from_claim` (claim-review), :func:`case_from_orders` (order-sign),
  :func:`case_from_encounter` (encounter-discharge), in :mod:`.cases`;
- :func:`split_claim_bundle` and :func:`bundle_aliases`: a claim-review ``context.claim`` Bundle ->
  (Claim, companions) and the references its entries answer to, in :mod:`.bundle`;
- :func:`check_companion`: the checks those builders make on one resource, for data fetched from
  the FHIR server before it is used, in :mod:`.checks`.

Its modules, by job: :mod:`.codes` (code systems and coded elements), :mod:`.companions` (the
companion resources indexed, the record's Procedures parsed), :mod:`.setting` (facility or not,
place of service), :mod:`.evidence` (the documentation of the 76000), :mod:`.cases` (the three
case builders). What the services fetch when the data is not in the request is planned in
:mod:`hooks.services.gather`.

Only the elements listed in ``docs/rules.md`` are read, and each is validated as it is read
(:mod:`hooks.fhir_read`); an invalid element raises :class:`hooks.context.InvalidResource` with its
FHIR path. ``full_validation=True`` additionally validates every resource with fhir.resources R4B.
"""
from __future__ import annotations

from ..context import InvalidResource
from .bundle import bundle_aliases, split_claim_bundle
from .cases import case_from_claim, case_from_encounter, case_from_orders
from .checks import check_companion
from .codes import procedure_code

__all__ = ["case_from_claim", "case_from_orders", "case_from_encounter", "split_claim_bundle",
           "bundle_aliases", "procedure_code", "check_companion", "InvalidResource"]

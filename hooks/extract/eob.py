"""ExplanationOfBenefit (an adjudicated claim: FHIR R4, CARIN Blue Button profiles) -> the claim case.

An ExplanationOfBenefit carries every element the rules read of a Claim under the same name (type,
subType, diagnosis, careTeam, facility, insurance; item.sequence, productOrService, modifier,
quantity, serviced[x], locationCodeableConcept, locationReference, encounter, diagnosisSequence,
careTeamSequence, bodySite, subSite: FHIR R4 ExplanationOfBenefit, and the CARIN BB Professional and
Outpatient Facility EOB profiles), so it goes through the claim case builder
(:func:`hooks.extract.cases._claim_parts`, the one copy) with its FHIR paths rooted at
``ExplanationOfBenefit`` (``ExplanationOfBenefit.item[0].servicedDate``), and each line gets the
item's adjudicated amounts (:class:`Amounts`): ``Line.allowed`` and ``Line.paid``, which the payment
effect uses where present (:func:`hooks.rules.engine.line_money`).

Adjudication categories (``item.adjudication.category``; CARIN BB
C4BBAdjudicationCategoryDiscriminator value set):

- billed: ``submitted`` (http://terminology.hl7.org/CodeSystem/adjudication), else ``item.net``;
- allowed: ``eligible`` (the amount considered for adjudication: CARIN BB's allowed amount);
- paid: ``paidtoprovider`` (C4BBAdjudication), else ``benefit`` (adjudication: the amount payable).

The CARIN BB STU1 ballot codes (``submittedamount``, ``allowedamount``, ``paymentamount`` of
http://hl7.org/fhir/us/carin/CodeSystem/carin-bb-adjudicationcategory) are read the same way. An
amount in another currency than USD is not used (the MPFS figures are USD).

Nothing here runs for the CDS Hooks services: claim-review takes Claims only.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, NamedTuple, Sequence

from nccidata.api import ReferenceData

from .. import fhir_read as fr
from ..model import Case
from .cases import _case_from_claim_parts, _claim_parts, case_from_claim
from .companions import index_companions

EOB = "ExplanationOfBenefit"
ADJUDICATION_SYSTEMS = frozenset({
    "http://terminology.hl7.org/CodeSystem/adjudication",
    "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudication",
    "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBAdjudicationDiscriminator",
    "http://hl7.org/fhir/us/carin/CodeSystem/carin-bb-adjudicationcategory",
})
# category code -> (amount, preference: lower wins when an item gives several)
_CATEGORIES = {
    "submitted": ("billed", 0), "submittedamount": ("billed", 1),
    "eligible": ("allowed", 0), "allowedamount": ("allowed", 1),
    "paidtoprovider": ("paid", 0), "benefit": ("paid", 1), "paymentamount": ("paid", 2),
}
# Claim.use / ExplanationOfBenefit.use (FHIR R4 value set claim-use, required binding)
USES = frozenset({"claim", "preauthorization", "predetermination"})


class Amounts(NamedTuple):
    """One item's amounts in USD (None: not given)."""

    billed: float | None = None
    allowed: float | None = None
    paid: float | None = None


def _money(node: object, path: str, key: str) -> float | None:
    """A Money's value in USD (None when absent or in another currency)."""
    money = fr.obj(node, path, key)
    if money is None:
        return None
    currency = fr.string(money.get("currency"), f"{path}.{key}", "currency")
    value = fr.decimal(money.get("value"), f"{path}.{key}", "value")
    return value if currency in (None, "", "USD") else None


def item_amounts(item: dict, path: str) -> Amounts:
    """The billed, allowed and paid amounts of one Claim or ExplanationOfBenefit item at `path`
    (``item.adjudication`` categories as the module says; billed falls back to ``item.net``)."""
    found: dict[str, tuple[int, float]] = {}
    for p, adj in fr.objects(item.get("adjudication"), path, "adjudication"):
        value = None
        for system, code in fr.codings(adj.get("category"), p, "category"):
            kind = _CATEGORIES.get(code) if system in ADJUDICATION_SYSTEMS or system is None else None
            if kind is None:
                continue
            if value is None:
                value = _money(adj.get("amount"), p, "amount")
                if value is None:
                    break
            name, rank = kind
            if name not in found or rank < found[name][0]:
                found[name] = (rank, value)
    billed = found["billed"][1] if "billed" in found else _money(item.get("net"), path, "net")
    return Amounts(billed, found["allowed"][1] if "allowed" in found else None,
                   found["paid"][1] if "paid" in found else None)


def amounts_by_line(resource: dict) -> dict[str, Amounts]:
    """Each item's :class:`Amounts`, by line key (``Claim.item[0]``, ``ExplanationOfBenefit.item[0]``:
    ``Line.key``) of a Claim or ExplanationOfBenefit (whose resourceType the caller has checked)."""
    root = resource["resourceType"]
    return {p: item_amounts(item, p) for p, item in fr.objects(resource.get("item"), root, "item")}


def use_of(resource: dict) -> str | None:
    """``Claim.use`` / ``ExplanationOfBenefit.use``: "claim", "preauthorization" (a prior
    authorization request, e.g. a Da Vinci PAS Bundle's Claim) or "predetermination"; None when absent."""
    root = resource.get("resourceType") or "Claim"
    use = fr.string(resource.get("use"), root, "use")
    if use and use not in USES:
        raise fr.invalid(f"{root}.use", f"must be one of {', '.join(sorted(USES))}")
    return use or None


def case_from_eob(eob: dict, companions: Sequence[dict], reference: ReferenceData, *,
                  full_validation: bool = False, aliases: Mapping[str, dict] | None = None) -> Case:
    """An ExplanationOfBenefit reviewed as the Claim it adjudicates (``Case.kind`` "claim", Case.claim
    the EOB), its lines carrying the items' allowed and paid amounts; companions as for
    :func:`hooks.extract.case_from_claim`."""
    fr.resource_type(eob, EOB, EOB)
    if full_validation:
        fr.validate_full(eob)
    index = index_companions(companions, full_validation, aliases)
    parts = _claim_parts(eob, index, EOB)
    amounts = amounts_by_line(eob)
    lines = []
    for ln in parts.lines:
        a = amounts.get(ln.key)
        if a is not None and (a.allowed is not None or a.paid is not None):
            ln = replace(ln, allowed=a.allowed, paid=a.paid)
        lines.append(ln)
    return _case_from_claim_parts("claim", eob, parts._replace(lines=lines), index, reference, root=EOB)


def case_from_billing(resource: dict, companions: Sequence[dict], reference: ReferenceData, *,
                      aliases: Mapping[str, dict] | None = None) -> Case:
    """A Claim (:func:`hooks.extract.case_from_claim`) or an ExplanationOfBenefit
    (:func:`case_from_eob`), by its resourceType (which the caller has checked)."""
    if resource.get("resourceType") == EOB:
        return case_from_eob(resource, companions, reference, aliases=aliases)
    return case_from_claim(resource, companions, reference, aliases=aliases)


"""Turn a :class:`~hooks.findings.Fix` into CDS Hooks 2.0 actions (docs/contract.md#actions).

- order-sign (``Case.kind == "order"``): removing 76000 is a ``delete`` whose ``resourceId`` is the
  draft resource's "Type/id"; replacing is that ``delete`` plus a ``create`` of a copy of the draft
  order with the new code and a new id.
- claim review, and discharge when a Claim exists (``Case.claim``): ONE ``update`` action carrying
  the whole corrected Claim (see :mod:`hooks.claim_edit` for the consistency rules); none for a
  Claim without an id, which a client could not update (the card still says what to change).
- discharge without a Claim: no actions (the card explains what not to bill and what to document).

Pure functions: the only randomness is the id of a created draft order, drawn from the injected
`new_id` callable.
"""
from __future__ import annotations

import uuid
from typing import Callable

from . import claim_edit
from .claim_edit import clone
from .findings import (ADD_MODIFIER, DOCUMENT, REDUCE_UNITS, REMOVE_LINE, REMOVE_MODIFIER,
                       REPLACE_CODE, SET_PLACE_OF_SERVICE, Fix)
from .extract.codes import is_procedure_coding
from .model import Case, Line

CPT_SYSTEM = claim_edit.CPT_SYSTEM

# Short descriptors of the codes the service may write into an order or claim.
CODE_DISPLAY = {
    "76000": "Fluoroscopy (separate procedure), up to 1 hour physician or other qualified "
             "health care professional time",
    "77001": "Fluoroscopic guidance for central venous access device placement, replacement "
             "(catheter only or complete), or removal",
    "77002": "Fluoroscopic guidance for needle placement (eg, biopsy, aspiration, injection, "
             "localization device)",
    "77003": "Fluoroscopic guidance and localization of needle or catheter tip for spine or "
             "paraspinous diagnostic or therapeutic injection procedures",
}

class NotApplicable(Exception):
    """The fix cannot be expressed as actions for this case (e.g. a Claim line with no Claim)."""


def _line(case: Case, key: str | None) -> Line | None:
    for line in case.lines:
        if line.key == key:
            return line
    return None


def claim_sequence(case: Case, line: Line | None, key: str | None) -> int:
    """The Claim.item.sequence a fix applies to.

    Claim lines carry their sequence; other lines (the encounter's Procedures at discharge) map to
    the Claim item with the same code (and service date when both are known).
    """
    if line is not None and line.sequence is not None and line.kind == "claim-item":
        return line.sequence
    if line is None or case.claim is None:
        raise NotApplicable(f"no Claim item for line {key!r}")
    candidates = []
    for item in case.claim.get("item") or []:
        if claim_edit.item_code(item) != line.code:
            continue
        when = item.get("servicedDate") or (item.get("servicedPeriod") or {}).get("start")
        line_date = case.line_date(line)
        same_day = not when or line_date is None or str(when)[:10] == line_date.isoformat()
        candidates.append((0 if same_day else 1, item.get("sequence")))
    if not candidates:
        raise NotApplicable(f"the Claim has no {line.code} item")
    return sorted(candidates)[0][1]


def corrected_claim(case: Case, fix: Fix) -> dict:
    """The whole Claim with `fix` (and the edits it carries in ``then``) applied."""
    return _corrected_claim(case, fix, _line(case, fix.line))


def _corrected_claim(case: Case, fix: Fix, line: Line | None) -> dict:
    """corrected_claim with the case's line of `fix` already looked up."""
    if case.claim is None:
        raise NotApplicable("no Claim")
    claim = _edit(case.claim, fix, claim_sequence(case, line, fix.line))
    for more in fix.then:
        more_line = line if more.line == fix.line else _line(case, more.line)
        claim = _edit(claim, more, claim_sequence(case, more_line, more.line))
    return claim


def _edit(claim: dict, fix: Fix, seq: int) -> dict:
    """One Claim edit of a fix (its ``then`` aside) on item `seq`."""
    if fix.action == REMOVE_LINE:
        return claim_edit.remove_item(claim, seq)
    if fix.action == REPLACE_CODE and fix.code:
        out = claim_edit.replace_code(claim, seq, fix.code, CODE_DISPLAY.get(fix.code))
        # the new code's units (77002 is one unit whatever 76000's were): the item's quantity follows
        return claim_edit.set_units(out, seq, fix.units) if fix.units else out
    if fix.action == ADD_MODIFIER and fix.modifier:
        return claim_edit.add_modifier(claim, seq, fix.modifier)
    if fix.action == REMOVE_MODIFIER and fix.modifier:
        return claim_edit.remove_modifier(claim, seq, fix.modifier)
    if fix.action == REDUCE_UNITS and fix.units:
        return claim_edit.set_units(claim, seq, fix.units)
    if fix.action == SET_PLACE_OF_SERVICE and fix.pos:
        return claim_edit.set_place_of_service(claim, seq, fix.pos)
    raise NotApplicable(f"fix {fix.action} has no Claim edit")


def _describe(fix: Fix, line: Line | None) -> str:
    code = line.code if line else "76000"
    if fix.action == REMOVE_LINE:
        return f"Remove {code}"
    if fix.action == REPLACE_CODE:
        return f"Replace {code} with {fix.code}"
    if fix.action == ADD_MODIFIER:
        return f"Append modifier {fix.modifier} to {code}"
    if fix.action == REMOVE_MODIFIER:
        return f"Remove modifier {fix.modifier} from {code}"
    if fix.action == REDUCE_UNITS:
        return f"Bill {fix.units} unit(s) of {code}"
    if fix.action == SET_PLACE_OF_SERVICE:
        return f"Set the place of service of {code} to {fix.pos}"
    return fix.label or fix.action


def _new_draft(draft: dict, code: str, new_id: str) -> dict:
    """A copy of a draft order with `code` (CPT) in place of its procedure code, under a new id.

    Everything else of the original is kept (subject, encounter, requester, reasonCode /
    reasonReference, bodySite, occurrence, notes ...), and so are the EHR's own codings of the
    order (a local orderable, SNOMED CT): the new CPT coding comes first, the CPT / HCPCS
    codings of the old code are dropped. Not kept: the id, ``meta`` and ``identifier`` (they
    belong to the original order) and the narratives that described the old code."""
    order = clone(draft)
    order["id"] = new_id
    order.pop("meta", None)
    order.pop("identifier", None)  # identifiers belong to the original order
    order.pop("text", None)  # the narrative described the old code
    coding = {"system": CPT_SYSTEM, "code": code}
    if code in CODE_DISPLAY:
        coding["display"] = CODE_DISPLAY[code]
    old = order.get("code")
    kept = [c for c in (old.get("coding") if isinstance(old, dict) else None) or ()
            if isinstance(c, dict) and not is_procedure_coding(c)]
    order["code"] = {"coding": [coding, *kept]}  # code.text described the old code: not kept
    return order


def actions_for(fix: Fix, case: Case, *, drafts: dict[str, dict] | None = None,
                new_id: Callable[[], str] = lambda: str(uuid.uuid4())) -> list[dict]:
    """CDS Hooks actions implementing `fix`, or [] when the case has nothing to act on."""
    if fix.action == DOCUMENT:
        return []
    line = _line(case, fix.line)
    description = fix.label or _describe(fix, line)
    if case.claim is not None:
        claim_id = case.claim.get("id")
        if not isinstance(claim_id, str) or not claim_id.strip():
            return []  # an update is a PUT of [type]/[id]: a Claim without an id cannot be updated
        try:
            claim = _corrected_claim(case, fix, line)
        except (NotApplicable, claim_edit.ClaimEditError):
            return []
        return [{"type": "update", "description": description, "resource": claim}]
    if case.kind != "order":
        return []  # encounter without a Claim: the card explains, nothing to act on
    out = _order_actions(fix, line, description, drafts, new_id)
    for more in fix.then:  # every edit of the suggestion, or none of them
        part = _order_actions(more, _line(case, more.line), more.label or _describe(more, _line(case, more.line)),
                              drafts, new_id)
        if not part or not out:
            return []
        out += part
    return out


def _order_actions(fix: Fix, line: Line | None, description: str, drafts: dict[str, dict] | None,
                   new_id: Callable[[], str]) -> list[dict]:
    """The order-sign actions of one edit: a draft order deleted, or replaced (delete + create)."""
    if line is None or not line.resource or (line.kind == "procedure" and line.resource not in (drafts or {})
                                             and fix.action == REPLACE_CODE):
        return []  # a recorded Procedure (not a draft of this request) is not replaced from order-sign
    if fix.action == REMOVE_LINE:
        return [{"type": "delete", "description": description, "resourceId": line.resource}]
    if fix.action == REPLACE_CODE and fix.code:
        draft = (drafts or {}).get(line.resource)
        if draft is None:
            rtype = line.resource.split("/", 1)[0]
            draft = ({"resourceType": rtype, "status": "preparation"} if rtype == "Procedure"
                     else {"resourceType": rtype, "status": "draft", "intent": "order"})
        return [
            {"type": "delete", "description": f"Remove the {line.code} draft order",
             "resourceId": line.resource},
            {"type": "create", "description": f"Order {fix.code} instead of {line.code}",
             "resource": _new_draft(draft, fix.code, new_id())},
        ]
    return []  # modifiers and units are billing concepts: nothing to change on an order

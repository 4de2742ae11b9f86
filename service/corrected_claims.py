"""The batch's corrected Claims: every finding's fix applied, where the fix is unambiguous.

A claim's correction is unambiguous when each finding that edits the Claim offers exactly one
claim edit (its suggestion; a finding that only asks for documentation edits nothing) and no two
of them edit the same line. The edits are the service's own (:func:`hooks.actions.corrected_claim`,
:mod:`hooks.claim_edit`: sequences renumbered, ``net`` and ``total`` kept consistent): first the
edits that keep every item, then the removals from the last item back, so that each edit finds
its item under the sequence the claim was billed with.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from hooks import findings as F
from hooks.actions import NotApplicable, corrected_claim
from hooks.claim_edit import ClaimEditError
from hooks.findings import Finding, Fix
from hooks.model import Case
from hooks.rules.corrected import edits, touched


def _claim_fixes(finding: Finding) -> list[Fix]:
    return [f for f in finding.fixes if f.action != F.DOCUMENT]


def unambiguous_fixes(findings: Sequence[Finding]) -> list[Fix] | None:
    """The one claim edit of each finding that edits the Claim, or None when a finding offers
    several or two edit the same line (or none edits anything)."""
    chosen: list[Fix] = []
    lines: set[str] = set()
    for finding in findings:
        fixes = _claim_fixes(finding)
        if not fixes:
            continue
        if len(fixes) > 1:
            return None
        keys = touched(fixes[0])
        if lines.intersection(keys):
            return None
        lines.update(keys)
        chosen.append(fixes[0])
    return chosen or None


def corrected(case: Case, findings: Sequence[Finding]) -> dict | None:
    """The Claim with every finding's fix applied, or None when that is ambiguous (above) or the
    case has no Claim to edit."""
    if case.claim is None or case.claim.get("resourceType") != "Claim":
        return None
    fixes = unambiguous_fixes(findings)
    if fixes is None:
        return None
    sequences = {ln.key: ln.sequence or 0 for ln in case.lines}

    def order(fix: Fix) -> tuple[bool, int]:
        removes = any(e.action == F.REMOVE_LINE for e in edits(fix))
        return removes, -sequences.get(fix.line or "", 0)

    current = case
    try:
        for fix in sorted(fixes, key=order):
            current = replace(current, claim=corrected_claim(current, fix))
    except (NotApplicable, ClaimEditError):
        return None
    return current.claim

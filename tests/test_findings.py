"""The finding declarations (hooks.findings.KINDS): complete, one rule each, read by engine and cards."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hooks import findings as F
from hooks.findings import KINDS, DeclarationError, Kind, declare
from hooks.rules import engine

ROOT = Path(__file__).resolve().parent.parent
GOOD = dict(code="x-finding", display="X", severity="warning", priority=99, rank=None,
            fixes=frozenset({F.REMOVE_LINE}), citations=frozenset({"policy"}), source="CMS manual")


@pytest.mark.parametrize("part, value", [
    ("display", ""), ("source", " "), ("severity", "critical"), ("priority", None), ("rank", "1"),
    ("fixes", ("remove-line",)), ("fixes", frozenset({"shout"})), ("citations", frozenset()),
    ("citations", frozenset({"blog"})),
])
def test_a_declaration_missing_a_part_fails(part, value):
    with pytest.raises(DeclarationError, match="x-finding"):
        Kind(**{**GOOD, part: value})


def test_a_removal_problem_needs_its_also_wording():
    with pytest.raises(DeclarationError, match="also"):
        Kind(**{**GOOD, "rank": 9})
    assert Kind(**{**GOOD, "rank": 9, "also": "x with {partner}"}).switch == "x-finding"


def test_codes_and_ranks_are_unique():
    k = Kind(**GOOD)
    with pytest.raises(DeclarationError, match="twice"):
        declare([k, k])
    a = Kind(**{**GOOD, "rank": 1, "also": "a"})
    b = dataclasses.replace(a, code="y-finding")
    with pytest.raises(DeclarationError, match="rank"):
        declare([a, b])


def test_every_declared_finding_has_exactly_one_rule():
    engine.check_rules()  # what the engine runs at import
    extra = {**KINDS, "x-finding": Kind(**GOOD)}
    with pytest.raises(DeclarationError, match="x-finding"):
        engine.check_rules(extra)
    removal = dict(engine.REMOVAL_BUILDERS)
    removal.pop(F.PTP_BUNDLED)
    with pytest.raises(DeclarationError, match=F.PTP_BUNDLED):
        engine.check_rules(KINDS, removal)
    with pytest.raises(DeclarationError, match="x-finding"):
        engine.check_rules(KINDS, engine.REMOVAL_BUILDERS, {**engine.LINE_RULES, "x-finding": lambda *a: []})


def test_removal_codes_follow_the_ranks():
    assert F.REMOVAL_CODES == tuple(sorted((c for c, k in KINDS.items() if k.rank is not None),
                                           key=lambda c: KINDS[c].rank))
    assert F.REMOVAL_CODES[0] == F.MODIFIER_MISUSE and F.REMOVAL_CODES[-1] == F.PTP_MODIFIER_ALLOWED


def test_docs_list_every_finding_with_its_display_and_priority():
    cards_md = (ROOT / "docs" / "cards.md").read_text()
    rules_md = (ROOT / "docs" / "rules.md").read_text()
    for k in KINDS.values():
        assert f"| `{k.code}` | {k.display} |" in cards_md, k.code
        assert f"`{k.code}`" in rules_md, k.code
    listed = ", ".join(f"{c} {KINDS[c].priority}" for c in sorted(KINDS, key=lambda c: (KINDS[c].priority,
                                                                                       F.FINDING_CODES.index(c))))
    assert listed in " ".join(rules_md.split())

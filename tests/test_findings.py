"""The finding declarations (hooks.findings.KINDS): complete, one rule each, read by engine and cards."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from hooks import findings as F
from hooks.findings import KINDS, DeclarationError, Kind, declare
from hooks.model import DOC_ELEMENTS
from hooks.rules import engine

ROOT = Path(__file__).resolve().parent.parent
GOOD = dict(code="x-finding", display="X", severity="warning", priority=99, rank=None,
            fixes=frozenset({F.REMOVE_LINE}), citations=frozenset({"policy"}), source="CMS manual",
            wording={"summary": "Remove {code}", "reason": "Because {why}."})


@pytest.mark.parametrize("part, value", [
    ("display", ""), ("source", " "), ("severity", "critical"), ("priority", None), ("rank", "1"),
    ("fixes", ("remove-line",)), ("fixes", frozenset({"shout"})), ("citations", frozenset()),
    ("citations", frozenset({"blog"})),
])
def test_a_declaration_missing_a_part_fails(part, value):
    with pytest.raises(DeclarationError, match="x-finding"):
        Kind(**{**GOOD, part: value})


@pytest.mark.parametrize("wording, complaint", [
    (None, "wording"), ({}, "wording lacks summary, reason"), ({"summary": "S"}, "wording lacks reason"),
    ({"summary": "S", "reason": " "}, "'reason' must be a non-empty string"),
    ({"summary": "S {", "reason": "R"}, "'summary' is not a template"),
    ({"summary": "S", "reason": "R", "fix": 3}, "'fix' must be a non-empty string"),
])
def test_a_declaration_missing_its_wording_fails(wording, complaint):
    parts = {k: v for k, v in GOOD.items() if k != "wording"}
    with pytest.raises(DeclarationError, match=complaint):
        Kind(**parts) if wording is None else Kind(**parts, wording=wording)


def test_a_removal_problem_needs_its_also_wording():
    with pytest.raises(DeclarationError, match="also"):
        Kind(**{**GOOD, "rank": 9})
    k = Kind(**{**GOOD, "rank": 9, "wording": {**GOOD["wording"], "also": "x with {partner}"}})
    assert k.switch == "x-finding" and k.say("also", partner="29881") == "x with 29881"
    with pytest.raises(TypeError):
        k.wording["summary"] = "changed"  # the declaration is read-only


def _wording_used() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Per finding code: the wording names the rules and the cards ask for, as literals (also both
    branches of `a if c else b`), and the prefixes of names built as f"prefix.{x}"."""
    names: dict[str, set[str]] = {}
    prefixes: dict[str, set[str]] = {}

    def code_of(node, local: dict[str, str]) -> str | None:
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "F":
            return getattr(F, node.attr)
        if isinstance(node, ast.Name):
            return local.get(node.id)
        return None

    def collect(code: str, node) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.setdefault(code, set()).add(node.value)
        elif isinstance(node, ast.IfExp):
            collect(code, node.body)
            collect(code, node.orelse)
        elif isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant):
            prefixes.setdefault(code, set()).add(node.values[0].value)
        else:
            raise AssertionError(f"wording name not a literal: {ast.dump(node)}")

    for path in ("hooks/rules/engine.py",):
        tree = ast.parse((ROOT / path).read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            local = {}  # `code = F.X` / `kind = F.X` in the function
            for node in ast.walk(fn):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    value = code_of(node.value, {})
                    if value:
                        local[node.targets[0].id] = value
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_say":
                    code = code_of(node.args[0], local)
                    if code is not None:
                        collect(code, node.args[1])
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "_remove":
                    # _remove(c[, name]): the wording of the builder's own kind (its local `code`)
                    name = node.args[1] if len(node.args) > 1 else ast.Constant("remove")
                    collect(local["code"], name)
    return names, prefixes


def test_every_wording_the_rules_use_is_declared_and_every_declared_one_used():
    """A rule asking for wording its declaration lacks would fail on the request (a 500): caught here."""
    names, prefixes = _wording_used()
    assert set(names) | set(prefixes) <= set(KINDS) and len(set(names) | set(prefixes)) >= len(KINDS) - 1
    for code, kind in KINDS.items():
        used = names.get(code, set())
        assert used <= set(kind.wording), (code, sorted(used - set(kind.wording)))
        for name in kind.wording:
            if name == "also" or name.startswith(("missing", "link", "smart-link")):  # Problem.phrase; the cards
                continue
            assert name in used or any(name.startswith(p) for p in prefixes.get(code, ())), (code, name)
    cards_src = (ROOT / "hooks" / "cards.py").read_text()
    for name in ("missing-heading", "link", "smart-link"):
        assert f"'{name}'" in cards_src or f'"{name}"' in cards_src
    assert {m for m in KINDS[F.DOCUMENTATION_MISSING].wording if m.startswith("missing.")} == {
        f"missing.{e}" for e in DOC_ELEMENTS}
    assert {m for m in KINDS[F.DOCUMENTATION_MISSING].wording if m.startswith("element.")} == {
        f"element.{e}" for e in DOC_ELEMENTS}


def test_codes_and_ranks_are_unique():
    k = Kind(**GOOD)
    with pytest.raises(DeclarationError, match="twice"):
        declare([k, k])
    a = Kind(**{**GOOD, "rank": 1, "wording": {**GOOD["wording"], "also": "a"}})
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

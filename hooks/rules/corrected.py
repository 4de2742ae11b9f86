"""A suggestion applied to the normalized case: the corrected claim the rules review again
(issue 10 section 4, "every fix leaves a clean claim"; docs/rules.md, "Every fix leaves a clean claim").

:func:`corrected_case` makes on :class:`~hooks.model.Case` lines exactly the edits
:func:`hooks.actions.corrected_claim` makes on the FHIR Claim (tests/test_fix_clean.py checks that
both agree on the real tables): a removal drops the line, a replacement sets the code (and units)
and keeps the line's modifiers, modifiers are appended (once) or removed, units set, the place of
service set. Line keys stay those of the case, so the lines a fix touched can be found again.
Pure; the case is not changed.
"""
from __future__ import annotations

from dataclasses import replace

from .. import findings as F
from ..findings import Fix
from ..model import Case, Line


def edits(fix: Fix) -> tuple[Fix, ...]:
    """The edits of one suggestion, in the order they apply: the fix, then its ``then``."""
    return (fix,) + fix.then if fix.then else (fix,)


def touched(fix: Fix) -> tuple[str, ...]:
    """The line keys a suggestion edits (each once, in order)."""
    return tuple(dict.fromkeys(e.line for e in edits(fix) if e.line is not None))


def _edit_line(line: Line, fix: Fix) -> Line | None:
    """One edit of a line (None: the line is removed)."""
    action = fix.action
    if action == F.REMOVE_LINE:
        return None
    if action == F.REPLACE_CODE and fix.code:
        return replace(line, code=fix.code, units=fix.units or line.units)
    if action == F.ADD_MODIFIER and fix.modifier:
        return line if fix.modifier in line.modifiers else replace(line, modifiers=line.modifiers + (fix.modifier,))
    if action == F.REMOVE_MODIFIER and fix.modifier:
        return replace(line, modifiers=tuple(m for m in line.modifiers if m != fix.modifier))
    if action == F.REDUCE_UNITS and fix.units:
        return replace(line, units=fix.units)
    if action == F.SET_PLACE_OF_SERVICE and fix.pos:
        return replace(line, pos=fix.pos)
    return line


def corrected_case(case: Case, fix: Fix) -> Case:
    """`case` with the suggestion `fix` (and the edits it carries in ``then``) applied to its lines
    (a place-of-service edit sets the line's own POS, ``Line.pos``: the rules judge each line's)."""
    lines = list(case.lines)
    for e in edits(fix):
        for i, ln in enumerate(lines):
            if ln is not None and ln.key == e.line:
                lines[i] = _edit_line(ln, e)
                break
    return replace(case, lines=tuple(ln for ln in lines if ln is not None))

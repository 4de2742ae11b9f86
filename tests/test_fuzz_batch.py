"""Fuzz test of the payer batch (issue 14): damaged Bulk Data exports (tests/export_damage.py:
mutated resources, references pointed elsewhere, repeated resources with other content, broken
lines, gzip files cut short or corrupted, a mutated manifest) never crash `fluoro-cds batch`, its
counts add up, every error record names file, line, path and reason, and two workers give what one
gives. Bounded by rounds; benchmarks/fuzz_batch.py runs the long version."""
from __future__ import annotations

from tests.export_damage import fuzz_exports


def test_damaged_exports_never_crash_the_batch_and_their_counts_add_up():
    result = fuzz_exports(seed=20261203, rounds=40, claims=20, every=8)
    assert result["problems"] == 0, result["examples"]
    assert result["exit_codes"].get(0, 0) >= 30  # most rounds run (a damaged manifest may be refused: exit 2)
    assert result["errors"] > 0  # the damage was seen as bad records

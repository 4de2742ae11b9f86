"""LiveReference: a service started before any import follows its first import without a restart."""
from __future__ import annotations

from datetime import date
from pathlib import Path

from nccidata.importer import import_paths
from nccidata.live import LiveReference
from nccidata.starter import StarterData
from nccidata.store import SqliteStore

ROWS = "column_1\tcolumn_2\teffective_date\tdeletion_date\tmodifier_indicator\tptp_edit_rationale\n" \
       "29881\t76000\t20020101\t*\t1\tStandards of medical/surgical practice\n"


def test_first_import_is_picked_up(tmp_path: Path):
    db = str(tmp_path / "ncci.sqlite")
    live = LiveReference(db, interval=0.0)
    before = live.current()
    assert isinstance(before, StarterData)
    [edit] = before.ptp_edits(["29881", "76000"], date(2024, 8, 1), "practitioner")
    assert edit.release.starter
    src = tmp_path / "ptp_practitioner_2024q3.tsv"
    src.write_text(ROWS, encoding="utf-8")
    import_paths(db, [src])
    after = live.current()
    assert isinstance(after, SqliteStore)
    [edit] = after.ptp_edits(["29881", "76000"], date(2024, 8, 1), "practitioner")
    assert (edit.release.label, edit.release.starter, edit.row) == ("2024Q3", False, 2)
    assert live.current() is after  # settled: no more catalog checks


def test_checks_at_most_once_per_interval(tmp_path: Path):
    db = str(tmp_path / "ncci.sqlite")
    live = LiveReference(db, interval=3600.0)
    src = tmp_path / "ptp_practitioner_2024q3.tsv"
    src.write_text(ROWS, encoding="utf-8")
    import_paths(db, [src])
    assert isinstance(live.current(), StarterData)  # not re-checked within the interval


def test_no_database_means_the_starter_set(tmp_path: Path):
    live = LiveReference(None, interval=0.0)
    assert isinstance(live.current(), StarterData)
    assert isinstance(LiveReference(str(tmp_path / "ncci.sqlite")).current(), StarterData)

"""The pair index of a PTP release (nccidata/pairindex.py) gives exactly the rows SQL gives:
on the real July 2024 tables, on hand-made tables with runs of rows per pair, and on random
tables (hypothesis); releases it cannot index are answered by SQL alone."""
from __future__ import annotations

import random
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nccidata import open_reference
from nccidata.importer import import_paths
from nccidata.pairindex import PairIndex, code_number, code_numbers, index_paths
from nccidata.store import SqliteStore, releases_dir
from tests.ncci_support import real_ncci_db  # noqa: F401

HEADER = "column_1\tcolumn_2\teffective_date\tdeletion_date\tmodifier_indicator\tptp_edit_rationale\n"
DOS = date(2024, 8, 1)


def _write(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def _by_sql(db) -> SqliteStore:
    return SqliteStore(db, use_pair_index=False)


def _rows(store: SqliteStore, info, codes) -> list:
    return sorted(store._ptp_query(info, tuple(sorted(codes))), key=repr)


def test_code_numbers_read_codes_as_base36():
    assert code_number("76000") == int("76000", 36)
    assert code_number("0001A") == int("0001A", 36)
    for not_a_code in ("7600", "760000", "7600a", "76-00", "7600\u00e9"):
        assert code_number(not_a_code) is None
    assert code_numbers(["76000", "J1100"]).tolist() == [int("76000", 36), int("J1100", 36)]
    assert code_numbers(["76000", "7600"]) is None  # not all five characters: no index
    assert code_numbers(["76000", "j1100"]) is None  # lower case: SQL would not match it
    # numbers sort as the codes' text does (digits before letters), so keys sort as SQL's key
    codes = ["00100", "0001A", "99499", "A0021", "J1100", "Z9999", "76000", "7600A"]
    assert [c for _, c in sorted(zip(code_numbers(codes).tolist(), codes))] == sorted(codes)


def test_real_tables_index_equals_sql(real_ncci_db):
    """Every PTP release of the real store has an index, and for 400 claims of 10 codes (76000,
    its column-1 partners, codes from anywhere in the table) it returns SQL's rows exactly."""
    store = open_reference(str(real_ncci_db))
    sql = _by_sql(real_ncci_db)
    assert isinstance(store, SqliteStore)
    rng = random.Random(20240701)
    for setting in ("practitioner", "outpatient-hospital"):
        info = store.pick("ptp", setting, DOS)
        index = store.pair_index(info)
        assert index is not None, f"{setting} release has no pair index"
        assert len(index.rows) == info.row_count
        conn = store.connection(info)
        partners = [r[0] for r in conn.execute("SELECT column_1 FROM ptp WHERE column_2 = '76000'")]
        anywhere = [r[0] for r in conn.execute(
            "SELECT DISTINCT column_2 FROM ptp WHERE column_1 IN ('29881', '64483', '36556', '99213')")]
        pool = partners + anywhere + ["99999", "0000Z"]  # and codes with no edits at all
        total = 0
        for _ in range(200):
            codes = {"76000", *rng.sample(pool, 9)}
            got = _rows(store, info, codes)
            assert got == _rows(sql, info, codes), sorted(codes)
            total += len(got)
        assert total > 200, "the sampled claims should hit many edits"


def test_real_facts_through_the_index(real_ncci_db):
    store = open_reference(str(real_ncci_db))
    assert store.pair_index(store.pick("ptp", "practitioner", DOS)) is not None
    [e] = store.ptp_edits(["29881", "76000"], DOS, "practitioner")
    assert (e.column1, e.column2, e.modifier_indicator) == ("29881", "76000", "1")
    assert e.rationale == "Standards of medical/surgical practice"
    assert e.row is not None and e.source_file.startswith("ptp_practitioner_2024q3")
    [e] = store.ptp_edits(["33897", "76000"], DOS, "outpatient-hospital")
    assert e.modifier_indicator == "1"
    [e] = store.ptp_edits(["33897", "76000"], DOS, "practitioner")
    assert e.modifier_indicator == "0"
    assert store.ptp_edits(["50080", "76000"], DOS, "practitioner") == []  # deleted 2016-01-01


RUNS = [
    # a pair deleted and re-added: two rows, both kept, in file order
    "29881\t76000\t20020101\t20151231\t0\tStandards of medical/surgical practice",
    "29881\t76000\t20160101\t*\t1\tStandards of medical/surgical practice",
    "64483\t76000\t20240701\t*\t1\tHCPCS/CPT procedure code definition",
    "64483\t77003\t20100101\t*\t1\tHCPCS/CPT procedure code definition",
    "76000\t64483\t19960101\t20001231\t9\tMutually exclusive procedures",
    "ZZZZZ\t76000\t19960101\t*\t0\tMisuse of column two code with column one code",
]


def test_runs_of_rows_and_both_directions(tmp_path):
    db = str(tmp_path / "ncci.sqlite")
    [info] = import_paths(db, [_write(tmp_path / "ptp_practitioner_2024q3.tsv", RUNS)])
    store = open_reference(db)
    index = store.pair_index(info)
    assert index is not None
    codes = ["29881", "64483", "76000", "77003", "ZZZZZ"]
    got = store._ptp_query(info, tuple(codes))
    assert sorted(got, key=repr) == _rows(_by_sql(db), info, codes)
    assert [(e.column1, e.column2, e.row) for e in got] == [
        ("29881", "76000", 2), ("29881", "76000", 3), ("64483", "76000", 4), ("64483", "77003", 5),
        ("76000", "64483", 6), ("ZZZZZ", "76000", 7)]
    first, second = got[0], got[1]
    assert (first.deletion, first.modifier_indicator) == (date(2015, 12, 31), "0")
    assert (second.effective, second.deletion, second.modifier_indicator) == (date(2016, 1, 1), None, "1")
    # on a date of service only the row in force answers
    assert [e.modifier_indicator for e in store.ptp_edits(["29881", "76000"], DOS, "practitioner")] == ["1"]
    assert [e.modifier_indicator for e in store.ptp_edits(["29881", "76000"], date(2010, 1, 1),
                                                          "practitioner")] == ["0"]
    # codes that are not codes of the release, or not codes at all, find nothing
    assert store.ptp_edits(["29881", "7600", "76000x", "\u00e9\u00e9\u00e9\u00e9\u00e9"], DOS,
                           "practitioner") == []


def test_release_with_other_code_lengths_is_answered_by_sql(tmp_path):
    db = str(tmp_path / "ncci.sqlite")
    rows = RUNS + ["0001\t76000\t19960101\t*\t1\tStandards of medical/surgical practice"]
    [info] = import_paths(db, [_write(tmp_path / "ptp_practitioner_2024q3.tsv", rows)])
    assert not any(p.exists() for p in index_paths(releases_dir(db) / info.file))
    store = open_reference(db)
    assert store.pair_index(info) is None
    assert [e.column1 for e in store.ptp_edits(["0001", "76000"], DOS, "practitioner")] == ["0001"]
    assert len(store.ptp_edits(["29881", "76000"], DOS, "practitioner")) == 1


def test_damaged_or_missing_index_falls_back_to_sql(tmp_path):
    db = str(tmp_path / "ncci.sqlite")
    [info] = import_paths(db, [_write(tmp_path / "ptp_practitioner_2024q3.tsv", RUNS)])
    keys_path, rows_path = index_paths(releases_dir(db) / info.file)
    np.save(keys_path, np.arange(3, dtype=np.uint64))  # no sentinel: not an index this code wrote
    assert PairIndex.open(releases_dir(db) / info.file) is None
    rows_path.unlink()
    store = open_reference(db)
    assert store.pair_index(info) is None
    assert [e.row for e in store.ptp_edits(["29881", "76000"], DOS, "practitioner")] == [3]


CODES = ["29881", "64483", "76000", "77002", "77003", "20610", "J1100", "0001A"]
row_strategy = st.tuples(st.sampled_from(CODES), st.sampled_from(CODES),
                         st.sampled_from(["*", "19960101", "20240701"]),
                         st.sampled_from(["*", "20151231", "20240731"]), st.sampled_from("019"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row_strategy, min_size=1, max_size=40),
       codes=st.sets(st.sampled_from(CODES + ["99213"]), min_size=2, max_size=9))
def test_random_tables_index_equals_sql(tmp_path_factory, rows, codes):
    """Any table (duplicate pairs, self pairs, both directions) and any code set: same rows."""
    tmp = tmp_path_factory.mktemp("pairs")
    lines = [f"{a}\t{b}\t{'' if e == '*' else e}\t{d}\t{m}\tStandards of medical/surgical practice"
             for a, b, e, d, m in rows]
    db = str(tmp / "ncci.sqlite")
    [info] = import_paths(db, [_write(tmp / "ptp_practitioner_2024q3.tsv", lines)])
    store = open_reference(db)
    assert store.pair_index(info) is not None
    assert _rows(store, info, codes) == _rows(_by_sql(db), info, codes)
    for on in (date(2010, 1, 1), DOS):
        assert sorted(store.ptp_edits(codes, on, "practitioner"), key=repr) == \
            sorted(_by_sql(db).ptp_edits(codes, on, "practitioner"), key=repr)


def test_failed_import_leaves_no_index_files(tmp_path):
    db = str(tmp_path / "ncci.sqlite")
    bad = RUNS + ["29881\t76000\t20020101\t*\tX\tStandards of medical/surgical practice"]
    with pytest.raises(Exception, match="modifier indicator"):
        import_paths(db, [_write(tmp_path / "ptp_practitioner_2024q3.tsv", bad)])
    directory = releases_dir(db)
    assert not directory.exists() or list(directory.iterdir()) == []

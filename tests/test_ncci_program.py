"""Issue 10 s.8: the NCCI program (Medicare, Medicaid) as a dimension of every PTP and MUE release.

The Medicaid files are written here, in tmp dirs, in the Medicaid program's published layout
(tests/ncci_support.py::write_medicaid_ptp / write_medicaid_mue); ../shared/ncci has none.
"""
from __future__ import annotations

import sqlite3
from datetime import date
from pathlib import Path

from nccidata import MEDICAID, MEDICARE, open_reference, program_reference
from nccidata.starter import starter
from nccidata.store import CATALOG_VERSION, SqliteStore, read_catalog
from tests.ncci_support import run_ncci, write_cms_ptp_zip, write_medicaid_mue, write_medicaid_ptp

DOS = date(2024, 8, 1)
MEDICARE_ROWS = [("33289", "76000", "", "20190101", "*", "0", "CPT Manual or CMS manual coding instruction"),
                 ("29881", "76000", "", "20020101", "*", "1", "Standards of medical/surgical practice")]
# Medicaid rows that differ from Medicare's: 33289/76000 allows a modifier; 29881/76000 is absent;
# 27096/76000 is Medicaid's only; an edit deleted before the date of service.
MEDICAID_PTP = [("33289", "76000", "20101001", "*", "1", "CPT Manual or CMS manual coding instruction"),
                ("27096", "76000", "20101001", "*", "0", "HCPCS/CPT procedure code definition"),
                ("64483", "76000", "20101001", "20231231", "1", "HCPCS/CPT procedure code definition")]


def _store(tmp_path: Path) -> str:
    db = tmp_path / "store" / "ncci.sqlite"
    code, _out, err = run_ncci("import", str(write_cms_ptp_zip(tmp_path / "ccipra-v302r0-f1.zip", MEDICARE_ROWS)),
                               "--db", str(db))
    assert code == 0, err
    return str(db)


def _pairs(ref, codes, setting="practitioner", on=DOS):
    return {(e.column1, e.column2): e for e in ref.ptp_edits(codes, on, setting)}


def test_medicaid_files_import_as_their_own_program(tmp_path):
    db = _store(tmp_path)
    ptp = write_medicaid_ptp(tmp_path, "2024q3", "practitioner", MEDICAID_PTP)
    mue = write_medicaid_mue(tmp_path, "2024q3", "practitioner", [("76000", "2", "Clinical: Data")])
    code, out, err = run_ncci("import", str(ptp), str(mue), "--db", db)
    assert code == 0, err
    got = {(r["kind"], r["setting"], r["label"], r["program"]) for r in out["imported"]}
    assert got == {("ptp", "practitioner", "2024Q3", MEDICAID), ("mue", "practitioner", "2024Q3", MEDICAID)}

    ref = open_reference(db)
    assert isinstance(ref, SqliteStore) and ref.programs() == [MEDICARE, MEDICAID]
    codes = ["33289", "29881", "27096", "64483", "76000"]
    medicare = _pairs(ref, codes)  # Medicare lookups as before: only the Medicare release
    assert set(medicare) == {("33289", "76000"), ("29881", "76000")}
    assert medicare[("33289", "76000")].modifier_indicator == "0"
    assert medicare[("33289", "76000")].release.program == MEDICARE
    medicaid_ref = program_reference(ref, MEDICAID)
    medicaid = _pairs(medicaid_ref, codes)
    assert set(medicaid) == {("33289", "76000"), ("27096", "76000")}  # 64483 deleted 2023-12-31
    edit = medicaid[("33289", "76000")]
    assert edit.modifier_indicator == "1" and edit.effective == date(2010, 10, 1) and edit.row == 3
    assert edit.release.citation().startswith("CMS Medicaid NCCI PTP release 2024Q3 practitioner")
    assert medicare[("29881", "76000")].release.citation().startswith("CMS Medicare NCCI PTP release 2024Q3")
    # Medicaid MUEs: no adjudication indicator in the file, so claim line edits (MAI 1)
    limit = medicaid_ref.mue("76000", DOS, "practitioner")
    assert (limit.units, limit.mai, limit.release.program) == (2, 1, MEDICAID)
    assert ref.mue("76000", DOS, "practitioner").release.starter  # Medicare MUE: not imported, starter set
    # no Medicaid outpatient-hospital release: empty, never Medicare's rows or the starter set
    assert medicaid_ref.ptp_edits(codes, DOS, "outpatient-hospital") == []
    assert medicaid_ref.mue("76000", DOS, "outpatient-hospital") is None
    assert medicaid_ref.release("ptp", "outpatient-hospital", DOS) is None
    assert medicaid_ref.release("ptp", "practitioner", DOS).label == "2024Q3"
    # the other tables have no program: the store answers them
    assert medicaid_ref.place_of_service("22") == ref.place_of_service("22")


def test_no_medicaid_release_means_no_medicaid_reference(tmp_path):
    assert program_reference(starter(), MEDICAID) is None  # the starter set is Medicare's
    ref = open_reference(_store(tmp_path))
    assert program_reference(ref, MEDICAID) is None and program_reference(ref, MEDICARE) is ref


def test_a_version_1_catalog_keeps_working_and_is_migrated(tmp_path):
    """A catalog written before the program column: its releases are Medicare's; the next import
    adds the column (ALTER TABLE) and sets user_version 2."""
    db = _store(tmp_path)
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE old(id INTEGER PRIMARY KEY, kind TEXT NOT NULL, setting TEXT, label TEXT NOT NULL,
            period_start TEXT, period_end TEXT, file TEXT NOT NULL, sources TEXT NOT NULL,
            row_count INTEGER NOT NULL, imported_at TEXT NOT NULL);
        INSERT INTO old SELECT id, kind, setting, label, period_start, period_end, file, sources, row_count,
            imported_at FROM releases;
        DROP TABLE releases; ALTER TABLE old RENAME TO releases; PRAGMA user_version = 0;""")
    conn.close()
    (info,) = read_catalog(db)
    assert info.program == MEDICARE
    ref = open_reference(db)
    assert _pairs(ref, ["33289", "76000"])[("33289", "76000")].modifier_indicator == "0"
    assert program_reference(ref, MEDICAID) is None
    code, _out, err = run_ncci("import", str(write_medicaid_ptp(tmp_path, "2024q3", "practitioner", MEDICAID_PTP)),
                               "--db", db)
    assert code == 0, err
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == CATALOG_VERSION
    assert conn.execute("SELECT program FROM releases ORDER BY id").fetchall() == [(MEDICARE,), (MEDICAID,)]
    conn.close()
    ref = open_reference(db)
    assert _pairs(ref, ["33289", "76000"])[("33289", "76000")].modifier_indicator == "0"
    assert _pairs(program_reference(ref, MEDICAID), ["33289", "76000"])[("33289", "76000")].modifier_indicator == "1"


def test_quarter_and_provider_names_of_the_medicaid_files():
    from nccidata.layouts import label_from_name, program_from_name, setting_from_name

    for name in ("medicaid-ncci-q3-2024-ptp-edits-practitioner-services.zip",
                 "medicaid-ncci-2024-q3-ptp-edits-practitioner-services.zip", "MCD-PTP-PRA-v2024q3-F1.txt"):
        assert (label_from_name(name), program_from_name(name), setting_from_name(name)) == \
            ("2024Q3", MEDICAID, "practitioner"), name
    assert setting_from_name("medicaid-ncci-q3-2024-mue-edits-outpatient-hospital-services.zip") == "outpatient-hospital"
    assert setting_from_name("medicaid-ncci-q3-2024-ptp-edits-durable-medical-equipment.zip") == "dme"
    assert program_from_name("ccipra-v302r0-f1.zip") is None  # Medicare by default


def test_medicare_mue_without_an_adjudication_indicator_is_refused(tmp_path):
    path = tmp_path / "mue_practitioner_2024q3.tsv"
    path.write_text("HCPCS/CPT Code\tPractitioner Services MUE Values\tMUE Rationale\n76000\t3\tClinical\n")
    code, _out, err = run_ncci("import", str(path), "--db", str(tmp_path / "s" / "ncci.sqlite"))
    assert code == 2 and "no MUE Adjudication Indicator column" in err
    code, out, err = run_ncci("import", str(path), "--program", "medicaid", "--db", str(tmp_path / "s" / "ncci.sqlite"))
    assert code == 0 and out["imported"][0]["program"] == MEDICAID, err


def test_cli_pair_releases_and_retire_by_program(tmp_path):
    db = _store(tmp_path)
    code, _out, err = run_ncci("pair", "33289", "76000", "--date", "2024-08-01", "--program", "medicaid", "--db", db)
    assert code == 2 and "no medicaid NCCI release is imported" in err
    assert run_ncci("import", str(write_medicaid_ptp(tmp_path, "2024q3", "practitioner", MEDICAID_PTP)),
                    "--db", db)[0] == 0
    code, out, err = run_ncci("pair", "33289", "76000", "--date", "2024-08-01", "--program", "medicaid",
                              "--setting", "practitioner", "--json", "--db", db)
    assert code == 0, err
    (res,) = out["results"]
    assert res["program"] == MEDICAID and res["release"]["program"] == MEDICAID
    assert [r["modifier_indicator"] for r in res["rows"]] == ["1"]
    code, out, _ = run_ncci("pair", "33289", "76000", "--date", "2024-08-01", "--setting", "practitioner",
                            "--json", "--db", db)
    assert [r["modifier_indicator"] for r in out["results"][0]["rows"]] == ["0"]  # Medicare by default
    code, text, _ = run_ncci("releases", "--db", db)
    assert code == 0 and "medicaid" in text and "medicare" in text
    code, out, err = run_ncci("retire", "2024Q3", "--program", "medicaid", "--db", db)
    assert code == 0 and [r["program"] for r in out["retired"]] == [MEDICAID], err
    assert [r.program for r in read_catalog(db)] == [MEDICARE]

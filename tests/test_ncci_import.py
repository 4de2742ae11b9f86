"""Importers: CMS zip / XLSX / data.medicaid.gov CSV round trips, detection of kind, setting and
label, and bad input refused (exit 2, file and line named) with the previous release answering."""
from __future__ import annotations

import gzip
import zipfile
from datetime import date
from pathlib import Path

import pytest

from nccidata import open_reference
from nccidata.layouts import label_from_name, period_of_label, setting_from_name
from nccidata.store import SqliteStore, read_catalog
from tests.ncci_support import cms_ptp_text, run_ncci, write_cms_ptp_zip, write_ptp_xlsx

# (col1, col2, prior-1996 flag, effective, deletion, modifier, rationale); one rationale has a
# latin-1 character to prove the decoding.
ROWS = [
    ("29881", "76000", "", "20020101", "*", "1", "Standards of medical/surgical practice"),
    ("33289", "76000", "", "20190101", "*", "0", "CPT Manual or CMS manual coding instruction"),
    ("50080", "76000", "*", "19960101", "20160101", "9", "CPT Manual or CMS manual coding instruction"),
    ("64483", "76000", "", "20110101", "*", "1", "HCPCS/CPT procedure code definition"),
    ("99999", "76000", "", "20240701", "*", "1", "Misuse of Column Two code with Column One code \u00e9"),
]
DOS = date(2024, 8, 1)


def _db(tmp_path: Path) -> str:
    return str(tmp_path / "store" / "ncci.sqlite")


def _pairs(db: str, codes, on=DOS, setting="practitioner"):
    ref = open_reference(db)
    assert isinstance(ref, SqliteStore)
    return {(e.column1, e.column2): e for e in ref.ptp_edits(codes, on, setting)}


def test_cms_zip_round_trip(tmp_path):
    z = write_cms_ptp_zip(tmp_path / "ccipra-v302r0-f1.zip", ROWS)
    code, out, err = run_ncci("import", str(z), "--db", _db(tmp_path))
    assert code == 0, err
    [rel] = out["imported"]
    assert (rel["kind"], rel["setting"], rel["label"], rel["rows"]) == ("ptp", "practitioner", "2024Q3", 5)
    assert rel["sources"][0]["name"] == "ccipra-v302r0-f1.zip!ccipra-v302r0-f1.txt"
    edits = _pairs(_db(tmp_path), ["29881", "33289", "50080", "64483", "99999", "76000"])
    assert set(edits) == {("29881", "76000"), ("33289", "76000"), ("64483", "76000"), ("99999", "76000")}
    e = edits[("29881", "76000")]
    assert (e.effective, e.deletion, e.modifier_indicator) == (date(2002, 1, 1), None, "1")
    assert e.row == 7 and e.source_file.endswith("!ccipra-v302r0-f1.txt")
    assert edits[("99999", "76000")].rationale.endswith("\u00e9")
    assert edits[("33289", "76000")].modifier_indicator == "0"
    # effective date honoured: 99999 starts 2024-07-01
    assert ("99999", "76000") not in _pairs(_db(tmp_path), ["99999", "76000"], on=date(2024, 6, 30))
    # deleted edit in force up to and including its deletion date
    assert ("50080", "76000") in _pairs(_db(tmp_path), ["50080", "76000"], on=date(2016, 1, 1))


def test_cms_text_file_outpatient_setting_from_name(tmp_path):
    txt = tmp_path / "ccioph-v302r0-f2.txt"
    txt.write_bytes(cms_ptp_text(ROWS))
    code, out, err = run_ncci("import", str(txt), "--db", _db(tmp_path))
    assert code == 0, err
    assert out["imported"][0]["setting"] == "outpatient-hospital"
    assert ("29881", "76000") in _pairs(_db(tmp_path), ["29881", "76000"], setting="outpatient-hospital")


def test_xlsx_round_trip(tmp_path):
    rows = [(int(r[0]) if r[0].isdigit() else r[0], r[1], r[2], int(r[3]), r[4], int(r[5]), r[6]) for r in ROWS]
    x = write_ptp_xlsx(tmp_path / "ccipra_2024q3.xlsx", rows)
    code, out, err = run_ncci("import", str(x), "--db", _db(tmp_path))
    assert code == 0, err
    assert out["imported"][0]["rows"] == 5 and out["imported"][0]["label"] == "2024Q3"
    edits = _pairs(_db(tmp_path), ["29881", "33289", "76000"])
    assert edits[("33289", "76000")].modifier_indicator == "0"
    assert edits[("29881", "76000")].effective == date(2002, 1, 1)
    assert edits[("29881", "76000")].row == 3  # spreadsheet row (copyright, header, data)


def test_medicaid_csv_with_extra_columns(tmp_path):
    csv_path = tmp_path / "medicaid_ptp_practitioner.csv"
    lines = ["record_number,column_1,column_2,effective_date,deletion_date,modifier_indicator,"
             "ptp_edit_rationale,quarter_begin_date,category"]
    for i, r in enumerate(ROWS, 1):
        iso = f"{r[3][:4]}-{r[3][4:6]}-{r[3][6:]}"  # data.medicaid.gov writes ISO dates
        lines.append(f'{i},{r[0]},{r[1]},{iso},{r[4]},{r[5]},"{r[6]}",2024-07-01,Practitioner')
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run_ncci("import", str(csv_path), "--release", "2024Q3", "--db", _db(tmp_path))
    assert code == 0, err
    # "medicaid" in the file name: a Medicaid NCCI release (issue 10 s.8), not a Medicare one
    assert (out["imported"][0]["setting"], out["imported"][0]["program"]) == ("practitioner", "medicaid")
    ref = open_reference(_db(tmp_path))
    assert ref.ptp_edits(["64483", "76000"], DOS, "practitioner")[0].release.starter  # Medicare: starter set
    (edit,) = ref.for_program("medicaid").ptp_edits(["64483", "76000"], DOS, "practitioner")
    assert edit.rationale == "HCPCS/CPT procedure code definition" and edit.release.program == "medicaid"
    assert edit.effective == date(2011, 1, 1) and edit.row == 5


def test_header_named_gzip_tsv_without_effective_date(tmp_path):
    path = tmp_path / "ptp_outpatient_hospital_2024q2.tsv.gz"
    body = "column_1\tcolumn_2\tdeletion_date\tmodifier_indicator\tptp_edit_rationale\n"
    body += "".join(f"{r[0]}\t{r[1]}\t{r[4]}\t{r[5]}\t{r[6]}\n" for r in ROWS)
    path.write_bytes(gzip.compress(body.encode("utf-8")))
    code, out, err = run_ncci("import", str(path), "--db", _db(tmp_path))
    assert code == 0, err
    rel = out["imported"][0]
    assert (rel["setting"], rel["label"], rel["period"]) == ("outpatient-hospital", "2024Q2",
                                                             ["2024-04-01", "2024-06-30"])
    e = _pairs(_db(tmp_path), ["29881", "76000"], on=date(1990, 1, 1), setting="outpatient-hospital")
    assert e[("29881", "76000")].effective is None  # missing effective date: in force since the start


def test_cms_mue_and_aoc_layouts(tmp_path):
    mue = tmp_path / "MCR_MUE_PractitionerServices_Eff_07-01-2024.csv"
    mue.write_text(
        '"CPT codes and descriptions only are copyright 2023 American Medical Association."\n'
        '"HCPCS/ CPT Code","Practitioner Services MUE Values","MUE Adjudication Indicator","MUE Rationale"\n'
        '76000,3,"3 Date of Service Edit: Clinical","Clinical: Data"\n'
        '77002,1,"3 Date of Service Edit: Clinical","CMS Policy"\n', encoding="utf-8")
    aoc = tmp_path / "AOC_V2024Q3.txt"
    aoc.write_text("Add-on Code\tPrimary Code\tAOC Edit Type\tPrimary Code Effective Date\t"
                   "Primary Code Deletion Date\n77002\t20610\t1\t20040101\t*\n77002\t99999\t1\t20040101\t20200101\n"
                   "77001\tCCCCC\t2\t20040101\t*\n", encoding="utf-8")
    code, out, err = run_ncci("import", str(mue), str(aoc), "--db", _db(tmp_path))
    assert code == 0, err
    got = {(r["kind"], r["setting"], r["label"]) for r in out["imported"]}
    assert got == {("mue", "practitioner", "2024Q3"), ("aoc", None, "2024Q3")}
    ref = open_reference(_db(tmp_path))
    m = ref.mue("76000", DOS, "practitioner")
    assert (m.units, m.mai, m.rationale, m.release.starter) == (3, 3, "Clinical: Data", False)
    assert ref.mue("76000", DOS, "outpatient-hospital").release.starter  # not imported: starter set
    assert ref.add_on("77002", DOS).primaries == frozenset({"20610"})
    assert "99999" in ref.add_on("77002", date(2019, 1, 1)).primaries
    assert ref.add_on("77001", DOS).contractor_defined
    fallback = {(f["kind"], f["setting"]) for f in ref.describe(DOS)["fallback"]}
    assert ("ptp", "practitioner") in fallback and ("mue", "practitioner") not in fallback
    # PTP still answered by the starter set, which says so
    [edit] = ref.ptp_edits(["29881", "76000"], DOS, "practitioner")
    assert edit.release.starter and "not a CMS release" in edit.release.citation()


def test_explicit_kind_and_setting(tmp_path):
    path = tmp_path / "edits.tsv"
    path.write_text("column_1\tcolumn_2\tdeletion_date\tmodifier_indicator\tptp_edit_rationale\n"
                    "29881\t76000\t*\t1\tStandards of medical/surgical practice\n", encoding="utf-8")
    code, _, err = run_ncci("import", str(path), "--db", _db(tmp_path))
    assert code == 2 and "setting" in err and "edits.tsv" in err
    code, _, err = run_ncci("import", str(path), "--setting", "practitioner", "--db", _db(tmp_path))
    assert code == 2 and "--release" in err
    code, _, err = run_ncci("import", str(path), "--setting", "practitioner", "--release", "2024Q3",
                            "--kind", "mue", "--db", _db(tmp_path))
    assert code == 2 and "wrong layout" in err
    code, out, err = run_ncci("import", str(path), "--setting", "practitioner", "--release", "2024Q3",
                              "--kind", "ptp", "--db", _db(tmp_path))
    assert code == 0, err


def _import_good(tmp_path) -> str:
    z = write_cms_ptp_zip(tmp_path / "ccipra-v302r0-f1.zip", ROWS)
    code, _, err = run_ncci("import", str(z), "--db", _db(tmp_path))
    assert code == 0, err
    return _db(tmp_path)


def _still_answers(db: str) -> None:
    edits = _pairs(db, ["29881", "76000"])
    assert edits[("29881", "76000")].release.label == "2024Q3"
    [info] = read_catalog(db)
    # nothing of the refused import is left: only the release in service and its pair index
    leftovers = sorted(p.name for p in (Path(db).parent / "ncci.sqlite.releases").iterdir())
    assert leftovers == [info.file, info.file + ".pairkeys.npy", info.file + ".pairrows.npy"]


def test_truncated_zip_refused(tmp_path):
    db = _import_good(tmp_path)
    rows = [(f"{10000 + i}", "76000", "", "20200101", "*", "1", "Standards of medical/surgical practice")
            for i in range(20000)]
    full = write_cms_ptp_zip(tmp_path / "big.zip", rows, member="ccipra-v303r0-f1.txt").read_bytes()
    cut = tmp_path / "ccipra-v303r0-f1.zip"
    cut.write_bytes(full[: len(full) // 2])
    code, out, err = run_ncci("import", str(cut), "--db", db)
    assert code == 2
    assert "ccipra-v303r0-f1.zip!ccipra-v303r0-f1.txt:" in err and "truncated" in err
    line = int(err.split("ccipra-v303r0-f1.txt:")[1].split(":")[0])
    assert 7 < line < 20007
    _still_answers(db)


def test_zip_cut_in_the_header_refused(tmp_path):
    db = _import_good(tmp_path)
    cut = tmp_path / "ccipra-v303r0-f1.zip"
    cut.write_bytes(b"PK\x03\x04\x14\x00")
    code, _, err = run_ncci("import", str(cut), "--db", db)
    assert code == 2 and "ccipra-v303r0-f1.zip" in err and "zip" in err
    _still_answers(db)


@pytest.mark.parametrize("bad, message", [
    (("29880", "76000", "", "20240230", "*", "1", "Standards of medical/surgical practice"), "bad effective date"),
    (("29880", "76000", "", "20020101", "2016-13-01", "1", "Standards"), "bad deletion date"),
    (("29880", "76000", "", "20020101", "*", "7", "Standards"), "unknown modifier indicator '7'"),
    (("29880", "76000", "", "20020101", "*", "1"), "wrong layout"),
    (("29880", "76 000", "", "20020101", "*", "1", "Standards"), "bad procedure code"),
])
def test_bad_row_refused_with_file_and_line(tmp_path, bad, message):
    db = _import_good(tmp_path)
    rows = ROWS[:3] + [bad] + ROWS[3:]
    z = write_cms_ptp_zip(tmp_path / "ccipra-v303r0-f1.zip", rows)
    code, out, err = run_ncci("import", str(z), "--db", db)
    assert code == 2, (out, err)
    # six preamble lines, then data: the bad row is the 4th data row, line 10
    assert "ccipra-v303r0-f1.zip!ccipra-v303r0-f1.txt:10:" in err and message in err
    _still_answers(db)


def test_bad_file_in_a_multi_file_import_imports_nothing(tmp_path):
    db = _import_good(tmp_path)
    good = tmp_path / "mue_practitioner_2024q4.tsv"
    good.write_text("hcpcs_code\tmue_units\tmue_mai\tmue_rationale\n76000\t3\t3\tClinical: Data\n")
    bad = tmp_path / "aoc_2024q4.tsv"
    bad.write_text("primary_code\tadd_on_code\taoc_edit_type\n20610\t77002\t1\n20611\t77002\t4\n")
    code, _, err = run_ncci("import", str(good), str(bad), "--db", db)
    assert code == 2 and "aoc_2024q4.tsv:3: unknown add-on code edit type '4'" in err
    _still_answers(db)


def test_unknown_layout_and_missing_file(tmp_path):
    junk = tmp_path / "notes_2024q3.txt"
    junk.write_text("hello\tworld\n1\t2\n")
    code, _, err = run_ncci("import", str(junk), "--db", _db(tmp_path))
    assert code == 2 and "notes_2024q3.txt:1: wrong layout" in err
    code, _, err = run_ncci("import", str(tmp_path / "nope.zip"), "--db", _db(tmp_path))
    assert code == 2 and "nope.zip: no such file" in err
    assert open_reference(_db(tmp_path)).describe()["source"] == "starter"


def test_zip_with_several_parts_is_one_release(tmp_path):
    z = tmp_path / "ccipra-v302r0.zip"
    with zipfile.ZipFile(z, "w") as arc:
        arc.writestr("ccipra-v302r0-f1.txt", cms_ptp_text(ROWS[:2]))
        arc.writestr("ccipra-v302r0-f2.txt", cms_ptp_text(ROWS[2:]))
    code, out, err = run_ncci("import", str(z), "--db", _db(tmp_path))
    assert code == 0, err
    [rel] = out["imported"]
    assert rel["rows"] == 5 and [s["rows"] for s in rel["sources"]] == [2, 3]


@pytest.mark.parametrize("name, label", [
    ("ccipra-v302r0-f1.zip", "2024Q3"), ("ccioph-v310r0-f4.txt", "2025Q1"), ("ccipra-v243r1-f1.zip", "2018Q4"),
    ("ptp_practitioner_2024q3.tsv.gz", "2024Q3"), ("MCR_MUE_DME_Eff_10-01-2024.zip", "2024Q4"),
    ("mpfs_rvu_2024.tsv", "2024"), ("place_of_service_codes.tsv", None),
])
def test_label_from_name(name, label):
    assert label_from_name(name) == label


def test_setting_from_name_and_periods():
    assert setting_from_name("ccipra-v302r0-f1.txt") == "practitioner"
    assert setting_from_name("ptp_outpatient_hospital_2024q3.tsv.gz") == "outpatient-hospital"
    assert setting_from_name("MCR_MUE_DME_Eff_10-01-2024.csv") == "dme"
    assert setting_from_name("aoc_2024q3.tsv") is None
    assert period_of_label("2024Q4") == (date(2024, 10, 1), date(2024, 12, 31))
    assert period_of_label("2024") == (date(2024, 1, 1), date(2024, 12, 31))
    assert period_of_label("custom") == (None, None)


def test_dme_mue_file(tmp_path):
    dme = tmp_path / "MCR_MUE_DME_Eff_07-01-2024.csv"
    dme.write_text('"HCPCS/ CPT Code","DME Supplier Services MUE Values","MUE Adjudication Indicator",'
                   '"MUE Rationale"\nE0100,1,"3 Date of Service Edit: Clinical","Nature of Equipment"\n'
                   'E0105,x,"3 Date of Service Edit: Clinical","Nature of Equipment"\n', encoding="utf-8")
    code, _, err = run_ncci("import", str(dme), "--db", _db(tmp_path))
    assert code == 2 and "MCR_MUE_DME_Eff_07-01-2024.csv:3: bad MUE units 'x'" in err
    dme.write_text(dme.read_text().replace(",x,", ",2,"), encoding="utf-8")
    code, out, err = run_ncci("import", str(dme), "--db", _db(tmp_path))
    assert code == 0, err
    assert (out["imported"][0]["setting"], out["imported"][0]["label"]) == ("dme", "2024Q3")
    assert open_reference(_db(tmp_path)).mue("E0105", DOS, "dme").units == 2


def test_stray_latin1_byte_in_a_utf8_table(tmp_path):
    path = tmp_path / "ptp_practitioner_2024q3.tsv"
    path.write_bytes("column_1\tcolumn_2\tdeletion_date\tmodifier_indicator\tptp_edit_rationale\n"
                     "29881\t76000\t*\t1\tStandards \u2013 practice\n".encode("utf-8")
                     + b"33289\t76000\t*\t0\tCPT Manual caf\xe9\n"
                     + "".join(f"{20000 + i}\t76000\t*\t1\tStandards \u2013 practice\n"
                               for i in range(3000)).encode("utf-8"))
    code, _, err = run_ncci("import", str(path), "--db", _db(tmp_path))
    assert code == 0, err
    edits = _pairs(_db(tmp_path), ["29881", "33289", "76000"])
    assert edits[("33289", "76000")].rationale == "CPT Manual caf\u00e9"
    assert edits[("29881", "76000")].rationale == "Standards \u2013 practice"

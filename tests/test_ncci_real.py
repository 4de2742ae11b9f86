"""The store over the real CMS July 2024 tables (../shared/ncci): facts from docs/contract.md#reference-data-facts
and the shared README, checked through the query API and the CLI."""
from __future__ import annotations

from datetime import date

from nccidata import OUTPATIENT_HOSPITAL, PRACTITIONER, ReferenceData
from nccidata.store import SqliteStore
from tests.ncci_support import real_ncci_db, real_reference, run_ncci  # noqa: F401

DOS = date(2024, 8, 1)


def _one(ref, c1, c2, setting, on=DOS):
    edits = [e for e in ref.ptp_edits([c1, c2], on, setting) if (e.column1, e.column2) == (c1, c2)]
    assert len(edits) <= 1, edits
    return edits[0] if edits else None


def test_store_is_in_service_with_every_kind(real_reference):
    assert isinstance(real_reference, SqliteStore)
    assert isinstance(real_reference, ReferenceData)
    info = real_reference.describe(DOS)
    assert info["fallback"] == [] and info["starter"] is False
    kinds = {(r["kind"], r["setting"]) for r in info["in_service"]}
    assert ("ptp", PRACTITIONER) in kinds and ("ptp", OUTPATIENT_HOSPITAL) in kinds
    rows = {(r["kind"], r["setting"]): r["rows"] for r in info["in_service"]}
    assert rows[("ptp", PRACTITIONER)] == 2_546_017
    assert rows[("ptp", OUTPATIENT_HOSPITAL)] == 1_775_818


def test_29881_76000_indicator_1_standards(real_reference):
    for setting in (PRACTITIONER, OUTPATIENT_HOSPITAL):
        edit = _one(real_reference, "29881", "76000", setting)
        assert edit is not None
        assert edit.modifier_indicator == "1"
        assert edit.rationale == "Standards of medical/surgical practice"
        assert edit.release.label == "2024Q3" and not edit.release.starter
        assert edit.release.setting == setting
        assert edit.row and edit.row > 1 and edit.source_file.startswith("ptp_")


def test_33289_indicator_0_both_settings(real_reference):
    for setting in (PRACTITIONER, OUTPATIENT_HOSPITAL):
        assert _one(real_reference, "33289", "76000", setting).modifier_indicator == "0"


def test_33897_differs_by_setting(real_reference):
    assert _one(real_reference, "33897", "76000", PRACTITIONER).modifier_indicator == "0"
    assert _one(real_reference, "33897", "76000", OUTPATIENT_HOSPITAL).modifier_indicator == "1"


def test_50080_deleted_2016(real_reference):
    assert _one(real_reference, "50080", "76000", PRACTITIONER) is None
    old = _one(real_reference, "50080", "76000", PRACTITIONER, on=date(2015, 12, 31))
    assert old is not None and old.deletion == date(2016, 1, 1)
    assert _one(real_reference, "50080", "76000", PRACTITIONER, on=date(2016, 1, 1)) is not None
    assert _one(real_reference, "50080", "76000", PRACTITIONER, on=date(2016, 1, 2)) is None


def test_no_edit_pairs(real_reference):
    for c1 in ("20650", "47000", "10160"):
        assert _one(real_reference, c1, "76000", PRACTITIONER) is None


def test_claim_of_many_codes(real_reference):
    codes = ["29881", "76000", "33289", "20610", "99213", "64483"]
    edits = real_reference.ptp_edits(codes, DOS, PRACTITIONER)
    pairs = {(e.column1, e.column2) for e in edits}
    assert {("29881", "76000"), ("33289", "76000"), ("20610", "76000"), ("64483", "76000")} <= pairs
    assert all(e.in_force(DOS) and e.column1 in codes and e.column2 in codes for e in edits)


def test_mue_aoc_mpfs_pos(real_reference):
    for setting in (PRACTITIONER, OUTPATIENT_HOSPITAL):
        mue = real_reference.mue("76000", DOS, setting)
        assert (mue.units, mue.mai) == (3, 3) and not mue.release.starter
    assert real_reference.mue("77002", DOS, PRACTITIONER).units == 1
    aoc = real_reference.add_on("77002", DOS)
    assert {"20610", "47000", "10160"} <= aoc.primaries and len(aoc.primaries) == 73
    assert real_reference.add_on("77001", DOS).contractor_defined
    fee = real_reference.fee("76000")
    assert fee.pctc == "1" and fee.global_days == "XXX" and fee.rvu_nonfacility_total == 1.28
    assert real_reference.fee("76000", "26").rvu_facility_total == 0.44
    assert real_reference.fee("76000", "TC").conversion_factor == 33.2875
    assert real_reference.place_of_service("21").facility
    assert not real_reference.place_of_service("11").facility
    assert real_reference.place_of_service("2").code == "02"


def test_cli_pair_and_releases(real_ncci_db):
    code, out, err = run_ncci("pair", "33897", "76000", "--date", "2024-08-01", "--db", str(real_ncci_db),
                              "--json")
    assert code == 0, err
    by_setting = {r["setting"]: [row for row in r["rows"] if row["in_force"]] for r in out["results"]}
    assert [r["modifier_indicator"] for r in by_setting[PRACTITIONER]] == ["0"]
    assert [r["modifier_indicator"] for r in by_setting[OUTPATIENT_HOSPITAL]] == ["1"]
    assert out["results"][0]["release"]["label"] == "2024Q3"
    code, out, _ = run_ncci("pair", "50080", "76000", "--date", "2024-08-01", "--setting", PRACTITIONER,
                            "--db", str(real_ncci_db), "--json")
    assert code == 0
    [res] = out["results"]
    assert [r["in_force"] for r in res["rows"]] == [False]
    assert res["rows"][0]["deletion"] == "2016-01-01"
    code, out, _ = run_ncci("releases", "--db", str(real_ncci_db), "--json")
    assert code == 0
    assert {r["kind"] for r in out["releases"]} == {"ptp", "mue", "aoc", "mpfs-indicators", "mpfs-rvu", "pos"}
    sha = {s["name"]: s["sha256"] for r in out["releases"] for s in r["sources"]}
    assert len(sha["ptp_practitioner_2024q3.tsv.gz"]) == 64

"""The SQLite store: which release answers a date, read-only per-thread connections, refresh
after an import, diff between quarters, and the service opening the store."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path

import pytest

from nccidata import open_reference
from nccidata.importer import import_paths
from nccidata.starter import StarterData
from nccidata.store import ReleaseInfo, SqliteStore, pick_release
from tests.ncci_support import ROOT_DIR, run_ncci

DOS = date(2024, 8, 1)
HEADER = "column_1\tcolumn_2\teffective_date\tdeletion_date\tmodifier_indicator\tptp_edit_rationale\n"


def _ptp(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


Q2 = ["29881\t76000\t20020101\t*\t0\tStandards of medical/surgical practice",
      "50080\t76000\t19960101\t*\t1\tCPT Manual or CMS manual coding instruction",
      "33289\t76000\t20190101\t*\t0\tCPT Manual or CMS manual coding instruction"]
Q3 = ["29881\t76000\t20020101\t*\t1\tStandards of medical/surgical practice",
      "50080\t76000\t19960101\t20240630\t1\tCPT Manual or CMS manual coding instruction",
      "33289\t76000\t20190101\t*\t0\tCPT Manual or CMS manual coding instruction",
      "64483\t76000\t20240701\t*\t1\tHCPCS/CPT procedure code definition"]


@pytest.fixture
def two_quarters(tmp_path) -> str:
    db = str(tmp_path / "ncci.sqlite")
    import_paths(db, [_ptp(tmp_path / "ptp_practitioner_2024q3.tsv", Q3)])
    import_paths(db, [_ptp(tmp_path / "ptp_practitioner_2024q2.tsv", Q2)])
    return db


def _indicator(ref, on, c1="29881"):
    edits = ref.ptp_edits([c1, "76000"], on, "practitioner")
    return [(e.modifier_indicator, e.release.label) for e in edits]


def test_release_answering_each_date(two_quarters):
    ref = open_reference(two_quarters)
    assert _indicator(ref, date(2024, 5, 1)) == [("0", "2024Q2")]
    assert _indicator(ref, date(2024, 8, 1)) == [("1", "2024Q3")]
    assert _indicator(ref, date(2025, 2, 1)) == [("1", "2024Q3")]  # latest quarter started
    assert _indicator(ref, date(2019, 2, 1)) == [("0", "2024Q2")]  # none started: newest import
    assert ref.ptp_edits(["50080", "76000"], date(2024, 8, 1), "practitioner") == []
    assert _indicator(ref, date(2024, 6, 30), "50080") == [("1", "2024Q2")]
    # PTP for outpatient hospital was never imported: the starter set answers and says so
    [edit] = ref.ptp_edits(["29881", "76000"], date(2024, 8, 1), "outpatient-hospital")
    assert edit.release.starter


def test_reimport_of_a_quarter_replaces_it(two_quarters, tmp_path):
    ref = open_reference(two_quarters)
    assert _indicator(ref, date(2024, 8, 1)) == [("1", "2024Q3")]
    fixed = [r.replace("\t1\tStandards", "\t0\tStandards") for r in Q3]
    import_paths(two_quarters, [_ptp(tmp_path / "fix.tsv", fixed)], setting="practitioner", label="2024Q3")
    ref.refresh()
    assert _indicator(ref, date(2024, 8, 1)) == [("0", "2024Q3")]
    ref.REFRESH_SECONDS = 0  # automatic refresh on catalog change
    import_paths(two_quarters, [_ptp(tmp_path / "fix2.tsv", Q3)], setting="practitioner", label="2024Q3")
    assert _indicator(ref, date(2024, 8, 1)) == [("1", "2024Q3")]


def test_a_release_retired_after_it_was_picked_still_answers(two_quarters):
    """A request that picked a release just before the catalog was re-read (the quarter retired
    in between, from another process) gets that release's rows, not an error: the kept answers
    carry the release they were picked from, they do not look its id up in the new catalog (its
    files stay readable while the store has them open)."""
    from nccidata.store import retire

    ref = open_reference(two_quarters)
    picked = ref.pick("ptp", "practitioner", DOS)
    assert _indicator(ref, DOS) == [("1", "2024Q3")]  # its files opened
    assert retire(two_quarters, "2024Q3")
    ref.refresh()
    assert picked.id not in {info.id for info in ref.releases}
    assert _indicator(ref, DOS) == [("0", "2024Q2")]  # new requests: the quarter left
    ref.pick = lambda *args, **kwargs: picked  # the pick made before the re-read
    assert _indicator(ref, DOS, "33289") == [("0", "2024Q3")]  # a new question of it


def _info(i, label, start, end):
    return ReleaseInfo(id=i, kind="ptp", setting="practitioner", label=label, period_start=start,
                       period_end=end, file=f"{i}.sqlite", sources=[], row_count=0, imported_at="")


def test_pick_release_rule():
    yearly = _info(1, "2024", date(2024, 1, 1), date(2024, 12, 31))
    q3 = _info(2, "2024Q3", date(2024, 7, 1), date(2024, 9, 30))
    q3_again = _info(3, "2024Q3", date(2024, 7, 1), date(2024, 9, 30))
    custom = _info(4, "custom", None, None)
    assert pick_release([], date(2024, 8, 1)) is None
    assert pick_release([yearly, q3, q3_again, custom], date(2024, 8, 1)) is q3_again
    assert pick_release([yearly, q3, custom], date(2024, 3, 1)) is yearly
    assert pick_release([yearly, q3, custom], date(2025, 3, 1)) is q3
    assert pick_release([yearly, q3, custom], date(2020, 3, 1)) is custom
    assert pick_release([yearly, q3, custom], None) is custom


def test_connections_are_per_thread_and_read_only(two_quarters):
    ref = open_reference(two_quarters)
    info = ref.pick("ptp", "practitioner", date(2024, 8, 1))
    with pytest.raises(sqlite3.OperationalError):
        ref.connection(info).execute("DELETE FROM ptp")
    seen, errors = [], []
    codes = ["29881", "33289", "64483", "50080", "76000"]
    expected = {(e.column1, e.column2) for e in ref.ptp_edits(codes, date(2024, 8, 1), "practitioner")}
    assert expected == {("29881", "76000"), ("33289", "76000"), ("64483", "76000")}

    def work():
        try:
            conn = ref.connection(info)
            seen.append(conn)  # keep the object: ids of freed connections can be reused
            for i in range(200):
                ref._ptp_cached.cache_clear()
                got = {(e.column1, e.column2) for e in ref.ptp_edits(codes, date(2024, 8, 1), "practitioner")}
                assert got == expected
            assert ref.connection(info) is conn
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({id(c) for c in seen}) == 6


def test_open_reference_without_releases_is_the_starter_set(tmp_path):
    assert isinstance(open_reference(str(tmp_path / "absent.sqlite")), StarterData)
    assert isinstance(open_reference(None), StarterData)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()
    assert isinstance(open_reference(str(empty)), StarterData)
    assert not (tmp_path / "absent.sqlite").exists()  # opening never creates the store


def test_diff_between_quarters(two_quarters):
    code, out, err = run_ncci("diff", "2024Q2", "2024Q3", "--db", two_quarters)
    assert code == 0, err
    res = out["settings"]["practitioner"]
    assert res["counts"] == {"added": 1, "deleted": 1, "changed": 1}
    assert res["added"][0]["column_1"] == "64483"
    assert res["deleted"][0]["column_1"] == "50080" and res["deleted"][0]["after"][0]["deletion"] == "2024-06-30"
    changed = res["changed"][0]
    assert changed["column_1"] == "29881"
    assert (changed["before"][0]["modifier_indicator"], changed["after"][0]["modifier_indicator"]) == ("0", "1")
    code, out, _ = run_ncci("diff", "2024Q2", "2024Q3", "--code", "64483", "--db", two_quarters)
    assert out["settings"]["practitioner"]["counts"] == {"added": 1, "deleted": 0, "changed": 0}
    code, out, err = run_ncci("diff", "2024Q2", "2023Q1", "--db", two_quarters)
    assert code == 2 and "2023Q1" in err


def test_diff_of_mue_quarters(tmp_path):
    db = str(tmp_path / "ncci.sqlite")
    head = "hcpcs_code\tmue_units\tmue_mai\tmue_rationale\n"
    (tmp_path / "mue_practitioner_2024q2.tsv").write_text(head + "76000\t2\t3\tClinical: Data\n77001\t2\t3\tx\n")
    (tmp_path / "mue_practitioner_2024q3.tsv").write_text(head + "76000\t3\t3\tClinical: Data\n77002\t1\t3\ty\n")
    import_paths(db, [tmp_path / "mue_practitioner_2024q2.tsv", tmp_path / "mue_practitioner_2024q3.tsv"])
    code, out, err = run_ncci("diff", "2024Q2", "2024Q3", "--kind", "mue", "--db", db)
    assert code == 0, err
    res = out["settings"]["practitioner"]
    assert res["counts"] == {"added": 1, "deleted": 1, "changed": 1}
    assert res["changed"][0]["after"]["units"] == 3


def test_console_entry_exit_codes(tmp_path):
    bad = tmp_path / "ptp_practitioner_2024q3.tsv"
    _ptp(bad, Q3[:1] + ["29880\t76000\t20020101\t*\tX\tStandards"])
    env = dict(os.environ, PYTHONPATH=str(ROOT_DIR), FLUORO_CDS_DB=str(tmp_path / "env.sqlite"))
    proc = subprocess.run([sys.executable, "-m", "service.cli", "ncci", "import", str(bad)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "ptp_practitioner_2024q3.tsv:3: unknown modifier indicator 'X'" in proc.stderr
    assert proc.stdout == ""
    good = _ptp(tmp_path / "ccipra_2024q3.tsv", Q3)
    proc = subprocess.run([sys.executable, "-m", "service.cli", "ncci", "import", str(good)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "importing" not in proc.stderr  # no progress bar when stderr is not a terminal
    assert (tmp_path / "env.sqlite").exists()  # FLUORO_CDS_DB is the default store


def test_service_serves_from_the_store(two_quarters):
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(db_path=two_quarters, state_db_path=two_quarters + ".state"))
    ref = app.config["FLUORO_REFERENCE"].current()
    assert isinstance(ref, SqliteStore)
    body = app.test_client().get("/readyz").get_json()
    assert body["data"]["source"] == "sqlite"
    assert {(f["kind"], f["setting"]) for f in body["data"]["fallback"]} >= {("mue", "practitioner")}


def test_running_service_follows_its_first_import(tmp_path):
    """Started before any import, the service answers from the starter set; after the first
    import it answers from the store, without a restart (the catalog is re-checked)."""
    from service.app import create_app
    from service.settings import Settings
    from tests.scenario_fixtures import scenario

    db = str(tmp_path / "ncci.sqlite")
    app = create_app(Settings(db_path=db, state_db_path=str(tmp_path / "state.sqlite")))
    app.config["FLUORO_REFERENCE"].interval = 0.0  # re-check on every request (default: 1 s)
    client = app.test_client()
    assert client.get("/readyz").get_json()["data"]["source"] == "starter"
    body = scenario(1).request(with_prefetch=True)
    url = "/cds-services/fluoroscopy-claim-review"
    before = client.post(url, json=body).get_json()
    assert "starter data set" in str(before)
    import_paths(db, [_ptp(tmp_path / "ptp_practitioner_2024q3.tsv", Q3)])
    assert client.get("/readyz").get_json()["data"]["source"] == "sqlite"
    after = client.post(url, json=body).get_json()
    assert "ptp_practitioner_2024q3.tsv" in str(after)


def _tables(tmp_path: Path, units: int, primary: str, cf: str, facility: str) -> list[Path]:
    """An MUE, add-on, MPFS (indicators and RVUs) and place-of-service table, in the layouts of
    the CMS files of ../shared/ncci, with the values that differ between two imports."""
    files = {
        "mue_practitioner_2024q3.tsv": f"hcpcs_code\tmue_units\tmue_mai\tmue_rationale\n76000\t{units}\t3\tClinical: Data\n",
        "aoc_2024q3.tsv": f"primary_code\tadd_on_code\taoc_edit_type\n{primary}\t77002\t1\n",
        "mpfs_indicators_2024.tsv": "hcpcs_code\tmod\tstatus\tpctc\tglob\tmult_proc\tfac_na\tnon_na\n"
                                    "76000\t\tA\t1\tXXX\t0\t\t\n",
        "mpfs_rvu_2024.tsv": "hcpcs_code\tmod\trvu_work\trvu_non_pe\trvu_fac_pe\trvu_mp\trvu_non_sum\trvu_fac_sum\tcf\n"
                             f"76000\t\t0.3\t1.5\t1.5\t0.02\t1.82\t1.82\t{cf}\n",
        "place_of_service_codes.tsv": f"pos_code\tpos_type\tpos_name\n22\t{facility}\tOn Campus-Outpatient Hospital\n",
    }
    out = []
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
        out.append(tmp_path / name)
    return out


def test_mue_add_on_fee_and_place_of_service_answers_follow_a_new_import(tmp_path):
    """The store keeps its MUE, add-on, MPFS and place-of-service answers by release (a batch asks
    the same codes of every claim): asked again, the same answer; after an import replaces those
    releases, the new rows, never a kept answer of the old ones."""
    db = str(tmp_path / "ncci.sqlite")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    for path in _tables(first, 1, "20610", "33.2875", "Facility"):
        import_paths(db, [path], label="2024Q3" if path.name.startswith("place") else None)
    ref = open_reference(db)
    ref.REFRESH_SECONDS = 0  # follow the catalog at once

    def answers():
        return (ref.mue("76000", DOS, "practitioner"), ref.add_on("77002", DOS), ref.fee("76000", "", DOS),
                ref.place_of_service("22"))

    mue, aoc, fee, pos = before = answers()
    assert (mue.units, aoc.primaries, fee.conversion_factor, pos.facility) == (1, frozenset({"20610"}), 33.2875, True)
    assert not any(a.release.starter for a in (mue, aoc, pos))
    assert all(a is b for a, b in zip(answers(), before))  # kept, not asked again
    for path in _tables(second, 2, "20611", "32.7442", "Non-Facility"):
        import_paths(db, [path], label="2024Q3" if path.name.startswith("place") else None)
    mue, aoc, fee, pos = answers()
    assert (mue.units, aoc.primaries, fee.conversion_factor, pos.facility) == (2, frozenset({"20611"}), 32.7442, False)

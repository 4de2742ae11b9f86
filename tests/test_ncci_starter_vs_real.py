"""The embedded starter set agrees with the real CMS July 2024 tables for every row it holds."""
from __future__ import annotations

from datetime import date

import pytest

from nccidata import SETTINGS
from nccidata.starter import StarterData, starter
from tests.ncci_support import real_ncci_db, real_reference  # noqa: F401

DOS = date(2024, 8, 1)


@pytest.fixture(scope="module")
def start() -> StarterData:
    return starter()


@pytest.mark.parametrize("setting", SETTINGS)
def test_every_starter_ptp_row_matches_the_real_table(start, real_reference, setting):
    rows = start.ptp[setting]
    assert len(rows) > 100
    mismatches = []
    for (c1, c2), edit in rows.items():
        real = [e for e in real_reference.ptp_edits([c1, c2], DOS, setting)
                if (e.column1, e.column2) == (c1, c2)]
        got = [(e.modifier_indicator, e.rationale) for e in real]
        if got != [(edit.modifier_indicator, edit.rationale)]:
            mismatches.append((c1, c2, (edit.modifier_indicator, edit.rationale), got))
    assert mismatches == []


@pytest.mark.parametrize("setting", SETTINGS)
def test_starter_holds_every_indicator_0_edit_of_76000(start, real_reference, setting):
    info = real_reference.pick("ptp", setting, DOS)
    conn = real_reference.connection(info)
    real_zero = {r[0] for r in conn.execute(
        "SELECT column_1 FROM ptp WHERE column_2 = '76000' AND modifier = '0' AND deletion IS NULL")}
    starter_zero = {c1 for (c1, c2), e in start.ptp[setting].items()
                    if c2 == "76000" and e.modifier_indicator == "0"}
    assert real_zero == starter_zero


def test_starter_no_edit_codes_have_no_real_edit(real_reference):
    for setting in SETTINGS:
        for c1 in ("20650", "47000", "10160"):
            assert real_reference.ptp_edits([c1, "76000"], DOS, setting) == []


def test_starter_mue_rows(start, real_reference):
    assert set(start.mues_by_setting) == set(SETTINGS)
    for setting in SETTINGS:
        for code in start.mues_by_setting[setting]:
            mue = start.mue(code, DOS, setting)
            real = real_reference.mue(code, DOS, setting)
            assert (real.units, real.mai, real.rationale) == (mue.units, mue.mai, mue.rationale), \
                (code, setting)


def test_starter_add_on_rows(start, real_reference):
    assert start.add_ons
    for code, aoc in start.add_ons.items():
        real = real_reference.add_on(code, DOS)
        assert real.edit_type == aoc.edit_type, code
        assert real.contractor_defined == aoc.contractor_defined, code
        assert aoc.primaries <= real.primaries, (code, aoc.primaries - real.primaries)


def test_starter_mpfs_rows(start, real_reference):
    assert start.fees
    for (code, mod), fee in start.fees.items():
        real = real_reference.fee(code, mod)
        assert (real.status, real.pctc, real.global_days) == (fee.status, fee.pctc, fee.global_days)
        assert (real.rvu_facility_total, real.rvu_nonfacility_total, real.conversion_factor) == \
            (fee.rvu_facility_total, fee.rvu_nonfacility_total, fee.conversion_factor), (code, mod)


def test_starter_places_of_service(start, real_reference):
    for code, pos in start.places.items():
        assert real_reference.place_of_service(code).facility == pos.facility, code
    real_facility = {f"{n:02d}" for n in range(1, 100) if real_reference.place_of_service(f"{n:02d}").facility}
    starter_facility = {c for c, p in start.places.items() if p.facility}
    assert real_facility == starter_facility

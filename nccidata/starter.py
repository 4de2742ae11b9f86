"""The embedded starter data set: a small, hand-authored, in-memory :class:`ReferenceData`.

It lets the service answer out of the box before any CMS release is imported. Its rows are
authored from the facts in docs/contract.md#reference-data-facts (checked against the CMS July 2024 tables) and
every :class:`Release` it returns has ``starter=True``, so every card that cites it says it is a
starter set, not a CMS release. The TSV files live in ``nccidata/starter_data/``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib import resources
from typing import Iterable, Iterator

from .api import (OUTPATIENT_HOSPITAL, PRACTITIONER, SETTINGS, AddOnEdit, FeeSchedule, MueLimit,
                  PlaceOfService, PtpEdit, Release)

STARTER_LABEL = "starter-2024Q3"
STARTER_SOURCE = "fluoro-cds starter set"


def _rows(name: str) -> Iterator[dict[str, str]]:
    """Rows of a starter TSV, skipping '#' comment lines."""
    text = resources.files("nccidata.starter_data").joinpath(name).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    yield from csv.DictReader(lines, delimiter="\t")


def expand_codes(spec: str) -> list[str]:
    """Expand "20600 22510-22515" into individual five-character codes (ranges are inclusive)."""
    out: list[str] = []
    for token in spec.split():
        if "-" in token:
            lo, hi = token.split("-", 1)
            width = len(lo)
            out.extend(str(n).zfill(width) for n in range(int(lo), int(hi) + 1))
        else:
            out.append(token)
    return out


def _release(kind: str, setting: str | None) -> Release:
    return Release(label=STARTER_LABEL, kind=kind, setting=setting, starter=True, source=STARTER_SOURCE)


@dataclass
class StarterData:
    """In-memory starter set implementing :class:`nccidata.api.ReferenceData`."""

    ptp: dict[str, dict[tuple[str, str], PtpEdit]] = field(default_factory=dict)
    mues: dict[str, MueLimit] = field(default_factory=dict)  # practitioner values (compatibility)
    mues_by_setting: dict[str, dict[str, MueLimit]] = field(default_factory=dict)
    add_ons: dict[str, AddOnEdit] = field(default_factory=dict)
    fees: dict[tuple[str, str], FeeSchedule] = field(default_factory=dict)
    places: dict[str, PlaceOfService] = field(default_factory=dict)

    @classmethod
    def load(cls) -> "StarterData":
        data = cls(ptp={s: {} for s in SETTINGS})
        for row in _rows("ptp.tsv"):
            settings = SETTINGS if row["settings"] == "both" else (row["settings"],)
            for setting in settings:
                rel = _release("ptp", setting)
                for col1 in expand_codes(row["column_1"]):
                    data.ptp[setting][(col1, row["column_2"])] = PtpEdit(
                        column1=col1, column2=row["column_2"], effective=None, deletion=None,
                        modifier_indicator=row["modifier_indicator"],
                        rationale=row["ptp_edit_rationale"], release=rel)
        for row in _rows("mue.tsv"):
            spec = row.get("settings") or "both"
            for setting in (SETTINGS if spec == "both" else (spec,)):
                data.mues_by_setting.setdefault(setting, {})[row["hcpcs_code"]] = MueLimit(
                    code=row["hcpcs_code"], units=int(row["mue_units"]), mai=int(row["mue_mai"]),
                    rationale=row["mue_rationale"], release=_release("mue", setting))
            if spec == "both" or spec == PRACTITIONER:
                data.mues[row["hcpcs_code"]] = data.mues_by_setting[spec if spec != "both" else PRACTITIONER][
                    row["hcpcs_code"]]
        for row in _rows("aoc.tsv"):
            contractor = row["primary_codes"].strip() == "CCCCC"
            prim = frozenset() if contractor else frozenset(expand_codes(row["primary_codes"]))
            data.add_ons[row["add_on_code"]] = AddOnEdit(
                add_on=row["add_on_code"], edit_type=int(row["aoc_edit_type"]), primaries=prim,
                contractor_defined=contractor, release=_release("aoc", None))
        for row in _rows("mpfs.tsv"):
            data.fees[(row["hcpcs_code"], row["mod"])] = FeeSchedule(
                code=row["hcpcs_code"], modifier=row["mod"], status=row["status"], pctc=row["pctc"],
                global_days=row["glob"], rvu_facility_total=float(row["rvu_fac_sum"]),
                rvu_nonfacility_total=float(row["rvu_non_sum"]), conversion_factor=float(row["cf"]),
                release=_release("mpfs", None))
        for row in _rows("pos.tsv"):
            data.places[row["pos_code"]] = PlaceOfService(
                code=row["pos_code"], facility=row["pos_type"] == "Facility", name=row["pos_name"],
                release=_release("pos", None))
        return data

    # --- ReferenceData -------------------------------------------------------------------
    def ptp_edits(self, codes: Iterable[str], on: date, setting: str) -> list[PtpEdit]:
        table = self.ptp.get(setting, {})
        wanted = sorted(set(codes))
        out = []
        for c1 in wanted:
            for c2 in wanted:
                edit = table.get((c1, c2))
                if edit is not None and edit.in_force(on):
                    out.append(edit)
        return out

    def mue(self, code: str, on: date, setting: str) -> MueLimit | None:
        by_setting = self.mues_by_setting.get(setting)
        if by_setting is not None:
            return by_setting.get(code)
        return self.mues.get(code)

    def add_on(self, add_on_code: str, on: date) -> AddOnEdit | None:
        return self.add_ons.get(add_on_code)

    def fee(self, code: str, modifier: str = "", on: date | None = None) -> FeeSchedule | None:
        return self.fees.get((code, modifier))

    def place_of_service(self, code: str) -> PlaceOfService | None:
        code = code.strip().zfill(2)
        known = self.places.get(code)
        if known is not None:
            return known
        if len(code) == 2 and code.isdigit() and code != "00":  # CMS POS codes: two digits
            return PlaceOfService(code=code, facility=False, name="(non-facility)",
                                  release=_release("pos", None))
        return None

    def describe(self) -> dict:
        return {"source": "starter", "label": STARTER_LABEL, "starter": True,
                "note": "fluoro-cds starter data set, authored from CMS NCCI facts; not a CMS release",
                "ptp_rows": {s: len(t) for s, t in self.ptp.items()}}


@lru_cache(maxsize=1)
def starter() -> StarterData:
    """The process-wide starter set (immutable after load)."""
    return StarterData.load()


__all__ = ["StarterData", "starter", "expand_codes", "STARTER_LABEL", "PRACTITIONER",
           "OUTPATIENT_HOSPITAL"]

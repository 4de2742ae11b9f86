"""Test support for the rules: a small :class:`nccidata.api.ReferenceData` over the real CMS July 2024
tables in ``../shared/ncci`` (read in place, once per session; nothing is copied into the repository),
and helpers to run a scenario through extraction and the rules.

The real-table reference loads only what the fluoroscopy rules ask about: PTP rows with 76000 in
column 1 or 2 (both settings), the MUE rows, the add-on rows of 77001-77003, the MPFS rows of
76000 and 77001-77003, and all place-of-service codes. It applies the CMS effective-date rule
(deletion date ``*`` or on/after the date of service); the shared copy carries no effective dates.
When the nccidata store lands on main, ``tests/ncci_support.py::real_ncci_db`` can replace it.
"""
from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from nccidata.api import (OUTPATIENT_HOSPITAL, PRACTITIONER, AddOnEdit, FeeSchedule, MueLimit, PlaceOfService,
                          PtpEdit, Release)

LABEL = "2024Q3"
GUIDANCE = ("77001", "77002", "77003")
FEE_CODES = ("76000",) + GUIDANCE


def _release(kind: str, setting: str | None, source: str) -> Release:
    return Release(label=LABEL, kind=kind, setting=setting, starter=False, source=source)


def _tsv(path: Path) -> Iterable[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh, delimiter="\t")


@dataclass
class RealNcci:
    """ReferenceData over the fluoroscopy-relevant rows of the real CMS July 2024 tables."""

    ptp: dict[str, dict[tuple[str, str], PtpEdit]] = field(default_factory=dict)
    mues: dict[str, dict[str, MueLimit]] = field(default_factory=dict)
    add_ons: dict[str, AddOnEdit] = field(default_factory=dict)
    fees: dict[tuple[str, str], FeeSchedule] = field(default_factory=dict)
    places: dict[str, PlaceOfService] = field(default_factory=dict)

    @classmethod
    def load(cls, ncci: Path) -> "RealNcci":
        data = cls()
        for setting, name in ((PRACTITIONER, "ptp_practitioner_2024q3.tsv.gz"),
                              (OUTPATIENT_HOSPITAL, "ptp_outpatient_hospital_2024q3.tsv.gz")):
            rel = _release("ptp", setting, name)
            table: dict[tuple[str, str], PtpEdit] = {}
            raw = gzip.decompress((ncci / name).read_bytes())
            for line in raw.split(b"\n"):
                if b"76000" not in line:
                    continue
                cells = line.decode("utf-8").split("\t")
                if len(cells) < 5 or "76000" not in (cells[0], cells[1]):
                    continue
                c1, c2, deletion, indicator, rationale = cells[:5]
                deleted = None if deletion.strip() == "*" else date(int(deletion[:4]), int(deletion[4:6]),
                                                                     int(deletion[6:8]))
                table[(c1, c2)] = PtpEdit(column1=c1, column2=c2, effective=None, deletion=deleted,
                                          modifier_indicator=indicator.strip(), rationale=rationale.strip(),
                                          release=rel)
            data.ptp[setting] = table
        for setting, name in ((PRACTITIONER, "mue_practitioner_2024q3.tsv"),
                              (OUTPATIENT_HOSPITAL, "mue_outpatient_hospital_2024q3.tsv")):
            rel = _release("mue", setting, name)
            data.mues[setting] = {r["hcpcs_code"]: MueLimit(r["hcpcs_code"], int(r["mue_units"]), int(r["mue_mai"]),
                                                            r["mue_rationale"], rel)
                                  for r in _tsv(ncci / name)}
        rel = _release("aoc", None, "aoc_2024q3.tsv")
        primaries: dict[str, set[str]] = {a: set() for a in GUIDANCE}
        types: dict[str, int] = {}
        for r in _tsv(ncci / "aoc_2024q3.tsv"):
            if r["add_on_code"] in primaries:
                primaries[r["add_on_code"]].add(r["primary_code"])
                types[r["add_on_code"]] = int(r["aoc_edit_type"])
        for add_on, prims in primaries.items():
            contractor = prims == {"CCCCC"}
            data.add_ons[add_on] = AddOnEdit(add_on, types.get(add_on, 1),
                                             frozenset() if contractor else frozenset(prims - {"CCCCC"}),
                                             contractor, rel)
        rel = _release("mpfs", None, "mpfs_indicators_2024.tsv, mpfs_rvu_2024.tsv")
        rvus = {(r["hcpcs_code"], r["mod"]): r for r in _tsv(ncci / "mpfs_rvu_2024.tsv")
                if r["hcpcs_code"] in FEE_CODES}
        for r in _tsv(ncci / "mpfs_indicators_2024.tsv"):
            key = (r["hcpcs_code"], r["mod"])
            if key[0] in FEE_CODES and key in rvus:
                v = rvus[key]
                data.fees[key] = FeeSchedule(key[0], key[1], r["status"], r["pctc"], r["glob"],
                                             float(v["rvu_fac_sum"]), float(v["rvu_non_sum"]), float(v["cf"]), rel)
        rel = _release("pos", None, "place_of_service_codes.tsv")
        for r in _tsv(ncci / "place_of_service_codes.tsv"):
            data.places[r["pos_code"]] = PlaceOfService(r["pos_code"], r["pos_type"] == "Facility", r["pos_name"], rel)
        return data

    # --- ReferenceData ---
    def ptp_edits(self, codes: Iterable[str], on: date, setting: str) -> list[PtpEdit]:
        table = self.ptp.get(setting, {})
        wanted = sorted(set(codes))
        return [e for c1 in wanted for c2 in wanted
                if (e := table.get((c1, c2))) is not None and e.in_force(on)]

    def mue(self, code: str, on: date, setting: str) -> MueLimit | None:
        return self.mues.get(setting, {}).get(code)

    def add_on(self, add_on_code: str, on: date) -> AddOnEdit | None:
        return self.add_ons.get(add_on_code)

    def fee(self, code: str, modifier: str = "") -> FeeSchedule | None:
        return self.fees.get((code, modifier))

    def place_of_service(self, code: str) -> PlaceOfService | None:
        return self.places.get(code.strip().zfill(2))

    def describe(self) -> dict:
        return {"source": "tests.rules_support.RealNcci", "label": LABEL, "starter": False}


@lru_cache(maxsize=1)
def real_ncci(ncci_dir: str) -> RealNcci:
    return RealNcci.load(Path(ncci_dir))


# --- running scenarios -------------------------------------------------------------------------
def case_of(s, reference, *, with_prefetch: bool = True):
    """Extract the Case of a scenario the way its service would (prefetch run or the Claim alone
    plus every companion fetched from a server: same resources, so the same Case)."""
    from hooks.extract import case_from_claim, case_from_encounter, case_from_orders, split_claim_bundle

    if s.hook == "org.fluoro-cds.claim-review":
        if with_prefetch:
            claim, companions = split_claim_bundle(s.context["claim"])
        else:
            claim, companions = s.context_without_prefetch["claim"], s.companions
        return case_from_claim(claim, companions, reference)
    if s.hook == "order-sign":
        return case_from_orders(s.context["draftOrders"], s.companions, reference)
    return case_from_encounter(s.encounter, [r for r in s.companions if r is not s.encounter], s.claim, reference)


def findings_of(s, reference, **kw):
    from hooks.config import resolve
    from hooks.rules import evaluate

    return evaluate(case_of(s, reference, **kw), reference, resolve(s.extension))


def assert_as_declared(f) -> None:
    """A finding agrees with its declaration (hooks.findings.KINDS): severity, the fixes it may offer
    (the extra edits of a fix too), the citations it may give (at least one), its override reasons."""
    from hooks.findings import KINDS
    kind = KINDS[f.code]
    assert f.severity == kind.severity, f.code
    assert f.citations and {c.kind for c in f.citations} <= kind.citations, (f.code, f.citations)
    assert f.override_reasons == kind.override_reasons, f.code
    for fix in f.fixes:
        for part in (fix,) + tuple(getattr(fix, "then", ())):
            assert part.action in kind.fixes, (f.code, part.action)

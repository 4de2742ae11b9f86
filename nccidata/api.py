"""The query API the rules use: plain immutable records and one Protocol.

Every answer carries the :class:`Release` it came from so that a card can cite it
("NCCI PTP practitioner 2024Q3, row column 1 29881 / column 2 76000, modifier indicator 1,
Standards of medical/surgical practice"). Two implementations exist: the embedded starter
set (:mod:`nccidata.starter`) and the SQLite store of imported CMS releases
(:mod:`nccidata.store`). Nothing here knows FHIR or Flask.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Iterable, NamedTuple, Protocol, runtime_checkable

PRACTITIONER = "practitioner"
OUTPATIENT_HOSPITAL = "outpatient-hospital"
SETTINGS = (PRACTITIONER, OUTPATIENT_HOSPITAL)
DME = "dme"  # MUE tables (and Medicaid PTP tables): DME supplier services
# The NCCI programs, a dimension of every PTP and MUE release: the Medicare NCCI (CMS "Medicare NCCI
# Procedure to Procedure (PTP) Edits" / "Medicare NCCI Medically Unlikely Edits" pages, the default) and
# the Medicaid NCCI (CMS "Medicaid NCCI Edit Files": its own PTP and MUE files, which states apply to
# Medicaid claims; Medicaid NCCI Technical Guidance Manual). Add-on, MPFS and POS tables have none.
MEDICARE = "medicare"
MEDICAID = "medicaid"
PROGRAMS = (MEDICARE, MEDICAID)
PROGRAM_NAMES = {MEDICARE: "Medicare", MEDICAID: "Medicaid"}


@dataclass(frozen=True)
class Release:
    """Provenance of one table: which quarter, which setting, and whether it is a CMS file."""

    label: str  # e.g. "2024Q3" or "starter-2024Q3"
    kind: str  # "ptp" | "mue" | "aoc" | "mpfs" | "pos"
    setting: str | None  # practitioner | outpatient-hospital | None for setting-free tables
    starter: bool  # True for the embedded starter set: it is NOT a CMS release
    source: str  # file name(s) or "fluoro-cds starter set"
    program: str = MEDICARE  # the NCCI program of a PTP / MUE table (MEDICARE for the other kinds)

    def citation(self) -> str:
        """Human-readable citation naming the NCCI program (PTP, MUE) and the release; it always
        says when the data is the starter set (authored from Medicare NCCI facts)."""
        where = f" {self.setting}" if self.setting else ""
        if self.starter:
            return (f"fluoro-cds starter data set ({self.label}{where}), authored from CMS Medicare NCCI "
                    "facts; not a CMS release")
        program = f"{PROGRAM_NAMES.get(self.program, self.program)} NCCI " if self.kind in ("ptp", "mue") else ""
        return f"CMS {program}{self.kind.upper()} release {self.label}{where} ({self.source})"


class PtpEdit(NamedTuple):
    """One NCCI procedure-to-procedure edit row (immutable).

    In force on a date of service D when effective <= D and (deletion is None or D <= deletion).
    modifier_indicator: "0" no modifier allowed, "1" an NCCI-associated modifier may bypass,
    "9" not applicable (deleted edits only).

    A NamedTuple rather than a frozen dataclass: the store builds one per row of a claim's
    edits, and a tuple is built several times faster (benchmarks/RESULTS.md, claim lookup).
    """

    column1: str
    column2: str
    effective: date | None  # None: in force since before the table's history
    deletion: date | None  # None: CMS "*" (no deletion date)
    modifier_indicator: str
    rationale: str
    release: Release
    row: int | None = None  # line of the row in its source file (None for the starter set)
    source_file: str | None = None  # the file that line is in (a zip member as "x.zip!y.txt")

    def in_force(self, on: date) -> bool:
        """Effective-date rule of the NCCI PTP files."""
        if self.effective is not None and on < self.effective:
            return False
        return self.deletion is None or on <= self.deletion


@dataclass(frozen=True)
class MueLimit:
    """Medically unlikely edit: max units of a code per line (MAI 1) or per date of service (2, 3)."""

    code: str
    units: int
    mai: int
    rationale: str
    release: Release


@dataclass(frozen=True)
class AddOnEdit:
    """Primaries of an add-on code (CMS add-on code edit file)."""

    add_on: str
    edit_type: int  # 1, 2 or 3
    primaries: frozenset[str]
    contractor_defined: bool  # primaries listed as CCCCC
    release: Release


@dataclass(frozen=True)
class FeeSchedule:
    """MPFS row of a code (and modifier "", "26" or "TC")."""

    code: str
    modifier: str
    status: str
    pctc: str  # PC/TC indicator, "1" = 26 and TC apply
    global_days: str
    rvu_facility_total: float | None
    rvu_nonfacility_total: float | None
    conversion_factor: float | None
    release: Release

    def dollars(self, facility: bool) -> float | None:
        """Unadjusted national payment: total RVU x conversion factor."""
        rvu = self.rvu_facility_total if facility else self.rvu_nonfacility_total
        if rvu is None or self.conversion_factor is None:
            return None
        return round(rvu * self.conversion_factor, 2)


@dataclass(frozen=True)
class PlaceOfService:
    code: str
    facility: bool
    name: str
    release: Release


@runtime_checkable
class ReferenceData(Protocol):
    """What the rules may ask of the reference data. All methods are cheap and side-effect free."""

    def ptp_edits(self, codes: Iterable[str], on: date, setting: str) -> list[PtpEdit]:
        """All PTP edits in force on `on` in `setting` whose column 1 and column 2 are both in `codes`."""

    def mue(self, code: str, on: date, setting: str) -> MueLimit | None:
        """The MUE of `code` in `setting`, or None."""

    def add_on(self, add_on_code: str, on: date) -> AddOnEdit | None:
        """The add-on edit of `add_on_code` (its primaries), or None."""

    def fee(self, code: str, modifier: str = "", on: date | None = None) -> FeeSchedule | None:
        """The MPFS row of `code` with `modifier` ("", "26", "TC"), or None; `on` picks the
        release by date of service (None: the newest)."""

    def place_of_service(self, code: str) -> PlaceOfService | None:
        """The CMS place-of-service code, or None if unknown."""

    def describe(self) -> dict:
        """Releases in service, for /readyz, audit records and `ncci releases`."""

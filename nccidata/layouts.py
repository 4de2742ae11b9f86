"""Which table a file holds, where its columns are, and what its name says (setting, quarter).

Kinds (``--kind``): ``ptp`` (NCCI procedure-to-procedure edits), ``mue`` (medically unlikely
edits), ``aoc`` (add-on code edits), ``mpfs-indicators`` (MPFS status, PC/TC, global),
``mpfs-rvu`` (MPFS RVUs and conversion factor), ``pos`` (CMS place-of-service codes).

Two layouts are recognised:
- the CMS quarterly PTP text layout: a six-line preamble (AMA copyright line,
  "Column1/Column2 Edits", a four-line wrapped header) and seven tab-separated columns
  (Column 1, Column 2, "*=in existence prior to 1996", Effective Date, Deletion Date,
  Modifier, PTP Edit Rationale);
- header-named tables (CSV, TSV, XLSX, text inside zips): a header row in the first 20 rows whose
  names identify the columns (``column_1``, ``Column 1``, ``Deletion Date *=no data`` ...). Names
  are compared after lower-casing and turning every run of other characters into ``_``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from .readers import BadInput, Source

KINDS = ("ptp", "mue", "aoc", "mpfs-indicators", "mpfs-rvu", "pos")
SETTING_KINDS = ("ptp", "mue")  # kinds that come per setting
DME = "dme"

# field -> pattern over normalized header names; required fields first in REQUIRED.
_FIELDS: dict[str, dict[str, str]] = {
    "ptp": {
        "column_1": r"^column_?1(_|$)", "column_2": r"^column_?2(_|$)",
        "prior_1996": r"prior_to_1996|in_existence", "effective": r"^effective",
        "deletion": r"^deletion", "modifier": r"^modifier", "rationale": r"rationale",
    },
    "mue": {
        "code": r"^(hcpcs|cpt|hcpcs_cpt)(_cpt)?(_code)?$|^code$",
        "units": r"mue_values?$|^mue_units$|^mue$|^units$",
        "mai": r"adjudication_indicator|^mue_mai$|^mai$",
        "rationale": r"rationale",
    },
    "aoc": {
        "primary": r"^primary(_code)?$", "add_on": r"^add_?on(_code)?$|^aoc$|^aoc_code$",
        "edit_type": r"edit_type$|^aoc_type$|^type$",
        "add_on_effective": r"^(add_?on_code_|aoc_)?effective(_date)?$",
        "add_on_deletion": r"^(add_?on_code_|aoc_)?deletion(_date)?$",
        "primary_effective": r"^primary_code_effective", "primary_deletion": r"^primary_code_deletion",
    },
    "mpfs-indicators": {
        "code": r"^hcpcs(_code)?$", "mod": r"^mod(ifier)?$", "status": r"^status(_code|_indicator)?$",
        "pctc": r"^pctc(_ind|_indicator)?$|^pc_tc", "glob": r"^glob(_days)?$|^global",
    },
    "mpfs-rvu": {
        "code": r"^hcpcs(_code)?$", "mod": r"^mod(ifier)?$",
        "rvu_non_sum": r"^rvu_non_sum$|^non_?fac(ility)?.*total", "rvu_fac_sum": r"^rvu_fac_sum$|^fac(ility)?.*total",
        "rvu_work": r"^rvu_work$|^work(_rvu)?$", "rvu_mp": r"^rvu_mp$|^mp(_rvu)?$",
        "cf": r"^cf$|conversion_factor",
    },
    "pos": {
        "code": r"^pos(_code)?$|^place_of_service_code", "type": r"^pos_type$|^facility|^type$",
        "name": r"^pos_name$|^name$|place_of_service_name",
    },
}
REQUIRED = {
    "ptp": ("column_1", "column_2", "deletion", "modifier"),
    "mue": ("code", "units"),  # "mai": required of Medicare MUE tables (see loaders.load_mue)
    "aoc": ("primary", "add_on", "edit_type"),
    "mpfs-indicators": ("code", "mod", "status", "pctc"),
    "mpfs-rvu": ("code", "mod", "rvu_non_sum", "rvu_fac_sum"),
    "pos": ("code", "type", "name"),
}
CMS_PTP_COLUMNS = {"column_1": 0, "column_2": 1, "prior_1996": 2, "effective": 3, "deletion": 4,
                   "modifier": 5, "rationale": 6}


def normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


@dataclass
class Layout:
    """Where the data of one source is: kind, columns, first data line."""

    kind: str
    columns: dict[str, int]
    header_rows: int  # rows before the data (preamble + header)
    cms_text: bool = False  # the CMS quarterly PTP text layout
    setting_hint: str | None = None  # from header names (MUE "Practitioner Services MUE Values")
    default_mai: int | None = None  # MUE tables without an MAI column (Medicaid): the MAI of every row
    width: int = field(default=0)  # number of cells a data row needs

    def __post_init__(self):
        if not self.width:
            self.width = max(self.columns.values()) + 1


def _match_header(kind: str, cells: list[str]) -> dict[str, int] | None:
    names = [normalize(c) for c in cells]
    found: dict[str, int] = {}
    for fld, pattern in _FIELDS[kind].items():
        rx = re.compile(pattern)
        for i, name in enumerate(names):
            if name and rx.search(name) and i not in found.values():
                found[fld] = i
                break
    if all(f in found for f in REQUIRED[kind]):
        return found
    return None


def _setting_from_text(text: str) -> str | None:
    """practitioner: ccipra, practitioner, the Medicaid file code PRA; outpatient-hospital: ccioph,
    outpatient, hospital, OPH; dme: DME, durable medical equipment (Medicaid NCCI file names, e.g.
    medicaid-ncci-q3-2024-ptp-edits-practitioner-services.zip, MCD-MUE-PRA-v2024q3-F1.txt)."""
    t = text.lower()
    if "ccipra" in t or "practitioner" in t or re.search(r"(^|[^a-z])pra([^a-z]|$)", t):
        return "practitioner"
    if "ccioph" in t or "outpatient" in t or "hospital" in t or re.search(r"(^|[^a-z])oph([^a-z]|$)", t):
        return "outpatient-hospital"
    if re.search(r"(^|[^a-z])dme([^a-z]|$)", t) or "durable" in t:
        return DME
    return None


def program_from_name(name: str) -> str | None:
    """The NCCI program a file name says: "medicaid" or the Medicaid file prefix MCD (CMS Medicaid NCCI
    Edit Files: medicaid-ncci-q3-2024-ptp-edits-practitioner-services.zip; Medicaid NCCI Edit Design
    Manual: MCD-PTP-PRA-..., MCD-MUE-OPH-...) gives medicaid; "medicare" gives medicare; else None."""
    t = name.lower()
    if "medicaid" in t or re.search(r"(^|[^a-z])mcd([^a-z]|$)", t):
        return "medicaid"
    if "medicare" in t:
        return "medicare"
    return None


def detect_layout(source: Source, kind: str | None = None) -> Layout:
    """Layout of `source`, optionally forcing `kind`; BadInput when nothing fits."""
    head = source.head
    if not head:
        raise BadInput(source.name, 1, "empty table")
    first = ["\t".join(r) for r in head[:6]]
    if kind in (None, "ptp") and any("column1/column2" in ln.replace(" ", "").lower() for ln in first):
        return Layout(kind="ptp", columns=dict(CMS_PTP_COLUMNS), header_rows=6, cms_text=True)
    kinds = (kind,) if kind else KINDS
    for i, row in enumerate(head):
        for k in kinds:
            cols = _match_header(k, row)
            if cols is not None:
                hint = None
                if k == "mue":
                    hint = _setting_from_text(row[cols["units"]])
                return Layout(kind=k, columns=cols, header_rows=i + 1, setting_hint=hint)
    wanted = ", ".join(REQUIRED[kind]) if kind else "a known header (see docs/ncci.md)"
    raise BadInput(source.name, 1, f"wrong layout: no header row with {wanted} in the first "
                                   f"{len(head)} rows, and not the CMS PTP text layout")


def setting_from_name(name: str) -> str | None:
    """practitioner (ccipra, practitioner), outpatient-hospital (ccioph, outpatient_hospital), dme."""
    return _setting_from_text(name)


def label_from_name(name: str) -> str | None:
    """Release label from a file name: 2024q3, 2024-q3 and q3-2024 (Medicaid NCCI file names) -> 2024Q3; CMS NCCI version v302r0 -> 2024Q3
    (version XX.Y is valid in year 1994+XX, quarter Y+1: version 24.0 covered 2018-01-01 to
    2018-03-31); Eff_07-01-2024 -> 2024Q3; a bare year -> 2024."""
    low = name.lower()
    m = re.search(r"(?<!\d)(19\d\d|20\d\d)[ _\-]?q([1-4])(?!\d)", low)
    if m:
        return f"{m.group(1)}Q{m.group(2)}"
    m = re.search(r"(?<![a-z0-9])q([1-4])[ _\-]?(19\d\d|20\d\d)(?!\d)", low)  # Medicaid: q3-2024
    if m:
        return f"{m.group(2)}Q{m.group(1)}"
    m = re.search(r"(?<![a-z0-9])v(\d\d)([0-3])r\d+", low)
    if m:
        return f"{1994 + int(m.group(1))}Q{int(m.group(2)) + 1}"
    m = re.search(r"(?<!\d)(\d\d)[-_](\d\d)[-_](20\d\d)(?!\d)", low)
    if m and 1 <= int(m.group(1)) <= 12:
        return f"{m.group(3)}Q{(int(m.group(1)) - 1) // 3 + 1}"
    m = re.search(r"(?<!\d)(20\d\d)(?!\d)", low)
    if m:
        return m.group(1)
    return None


def period_of_label(label: str) -> tuple[date | None, date | None]:
    """The dates a release label covers: 2024Q3 -> 2024-07-01..2024-09-30; 2024 -> the year."""
    m = re.match(r"^(\d{4})Q([1-4])(?![0-9])", label, re.IGNORECASE)
    if m:
        year, q = int(m.group(1)), int(m.group(2))
        start = date(year, 3 * q - 2, 1)
        end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
        return start, date.fromordinal(end.toordinal() - 1)
    m = re.match(r"^(\d{4})(?![0-9Qq])", label)
    if m:
        year = int(m.group(1))
        return date(year, 1, 1), date(year, 12, 31)
    return None, None

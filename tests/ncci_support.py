"""Shared helpers for tests that need NCCI reference data.

- ``real_ncci_db``: a store built once per test session (and shared by every module that
  imports the fixture) from the real CMS July 2024 tables in ../shared/ncci: PTP practitioner
  and outpatient hospital, MUE both settings, add-on codes, MPFS indicators and RVUs, place of
  service. Skips with a clear reason when the tables are absent.
- ``real_reference``: ``nccidata.open_reference`` over that store.
- writers of CMS-layout files (zip with the six-line preamble, XLSX) for importer tests.
- ``run_ncci``: the ``fluoro-cds`` CLI in-process, returning (exit code, stdout JSON or text, stderr).

Use: ``from tests.ncci_support import real_ncci_db, real_reference  # noqa: F401``.
"""
from __future__ import annotations

import contextlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.conftest import require_shared_ncci

ROOT_DIR = Path(__file__).resolve().parent.parent
_BUILT: dict[str, Path] = {}

CMS_PREAMBLE = [
    "CPT codes and descriptions only are copyright 2023 American Medical Association. All Rights Reserved.",
    "Column1/Column2 Edits",
    "Column 1\tColumn 2\t*=in existence\tEffective \tDeletion \tModifier\tPTP Edit Rationale",
    "\t\tprior to 1996\tDate\tDate\t0=not allowed\t",
    "\t\t\t\t*=no data\t1=allowed\t",
    "\t\t\t\t\t9=not applicable\t",
]
XLSX_HEADER = ["Column 1", "Column 2", "*=in existence prior to 1996", "Effective Date",
               "Deletion Date *=no data", "Modifier 0=not allowed 1=allowed 9=not applicable",
               "PTP Edit Rationale"]


def build_real_db(directory: Path) -> Path:
    """Import every real table in ../shared/ncci into `directory`/ncci.sqlite."""
    from nccidata.importer import import_paths

    src = require_shared_ncci()
    db = directory / "ncci.sqlite"
    import_paths(db, [src / "ptp_practitioner_2024q3.tsv.gz", src / "ptp_outpatient_hospital_2024q3.tsv.gz",
                      src / "mue_practitioner_2024q3.tsv", src / "mue_outpatient_hospital_2024q3.tsv",
                      src / "aoc_2024q3.tsv"])
    import_paths(db, [src / "mpfs_indicators_2024.tsv", src / "mpfs_rvu_2024.tsv"])
    import_paths(db, [src / "place_of_service_codes.tsv"], label="2024Q3")
    return db


@pytest.fixture(scope="session")
def real_ncci_db(tmp_path_factory) -> Path:
    """Path of a store holding all the real July 2024 tables (built once per session)."""
    require_shared_ncci()
    if "db" not in _BUILT:
        _BUILT["db"] = build_real_db(tmp_path_factory.mktemp("real_ncci"))
    return _BUILT["db"]


@pytest.fixture(scope="session")
def real_reference(real_ncci_db):
    """The ReferenceData over the real store (a SqliteStore)."""
    from nccidata import open_reference

    return open_reference(str(real_ncci_db))


def cms_ptp_text(rows: list[tuple], preamble: list[str] | None = None) -> bytes:
    """A CMS quarterly PTP text file: six-line preamble, seven tab-separated columns,
    latin-1, CRLF. Rows: (col1, col2, prior1996, effective, deletion, modifier, rationale)."""
    lines = list(CMS_PREAMBLE if preamble is None else preamble)
    lines += ["\t".join(str(c) for c in r) for r in rows]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def write_cms_ptp_zip(path: Path, rows: list[tuple], member: str | None = None) -> Path:
    """A zip as CMS ships it: the text table plus a PDF-like read-me that must be skipped."""
    member = member or path.with_suffix(".txt").name
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, cms_ptp_text(rows))
        z.writestr("NCCI_PTP_Edits_Readme.pdf", b"%PDF-1.4 not a table")
    return path


# The Medicaid NCCI program's published layout (CMS "Medicaid NCCI Edit Files"; Medicaid NCCI Edit Design
# Manual / Technical Guidance Manual, publication formats): one zip per quarter, table kind and provider
# type, named e.g. medicaid-ncci-q3-2024-ptp-edits-practitioner-services.zip, holding a tab-delimited text
# table (an AMA copyright line, then a header row) without Medicare's "in existence prior to 1996" column;
# MUE tables without an MUE Adjudication Indicator (Medicaid MUEs are claim line edits).
MEDICAID_PTP_HEADER = ["Column 1", "Column 2", "Effective Date", "Deletion Date *=no data",
                       "Modifier 0=not allowed 1=allowed 9=not applicable", "PTP Edit Rationale"]


def medicaid_name(quarter: str, kind: str, provider: str) -> str:
    """medicaid-ncci-q3-2024-ptp-edits-practitioner-services.zip for ("2024q3", "ptp", "practitioner")."""
    year, q = quarter.lower().split("q")
    return f"medicaid-ncci-q{q}-{year}-{kind}-edits-{provider}-services.zip"


def write_medicaid_zip(path: Path, header: list[str], rows: list[tuple]) -> Path:
    """A Medicaid NCCI edit zip: the tab-delimited table (latin-1, CRLF) and a read-me to skip."""
    lines = [CMS_PREAMBLE[0], "\t".join(header)] + ["\t".join(str(c) for c in r) for r in rows]
    member = path.name.replace(".zip", ".txt")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(member, ("\r\n".join(lines) + "\r\n").encode("latin-1"))
        z.writestr("Medicaid_NCCI_Readme.pdf", b"%PDF-1.4 not a table")
    return path


def write_medicaid_ptp(directory: Path, quarter: str, provider: str, rows: list[tuple]) -> Path:
    """Rows: (column 1, column 2, effective YYYYMMDD, deletion YYYYMMDD or *, modifier, rationale)."""
    return write_medicaid_zip(directory / medicaid_name(quarter, "ptp", provider), MEDICAID_PTP_HEADER, rows)


def write_medicaid_mue(directory: Path, quarter: str, provider: str, rows: list[tuple]) -> Path:
    """Rows: (HCPCS/CPT code, MUE value, MUE rationale)."""
    title = {"practitioner": "Practitioner", "outpatient-hospital": "Outpatient Hospital"}.get(provider, "DME")
    header = ["HCPCS/CPT Code", f"{title} Services MUE Values", "MUE Rationale"]
    return write_medicaid_zip(directory / medicaid_name(quarter, "mue", provider), header, rows)


def write_ptp_xlsx(path: Path, rows: list[tuple], header: list[str] | None = None) -> Path:
    """An XLSX in the CMS PTP layout (copyright row, header row, data)."""
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append([CMS_PREAMBLE[0]])
    sheet.append(header or XLSX_HEADER)
    for r in rows:
        sheet.append(list(r))
    book.save(path)
    return path


def run_ncci(*args: str) -> tuple[int, object, str]:
    """Run ``fluoro-cds ncci ARGS`` in-process: (exit code, parsed JSON stdout or text, stderr)."""
    from service.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["ncci", *args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    text = out.getvalue()
    try:
        parsed: object = json.loads(text) if text.strip() else text
    except json.JSONDecodeError:
        parsed = text
    return code, parsed, err.getvalue()

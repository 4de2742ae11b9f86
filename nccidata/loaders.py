"""Validate the rows of one table kind and write them into a release file being built.

A release file is a standalone SQLite database holding one table kind of one setting and
quarter (see :mod:`nccidata.store`). It is built aside with journal_mode=OFF and
synchronous=OFF (it only becomes visible when the catalog registers it), indexes are created
after the rows are in, and the PTP table is a WITHOUT ROWID table keyed by
(column_1, column_2, source, line) so that the pair lookups of a claim are index seeks.

Validation rules (each failure names the file and the line):
- PTP: codes are 1-7 letters or digits; dates are YYYYMMDD (also YYYY-MM-DD or MM/DD/YYYY, as
  data.medicaid.gov exports write them); the deletion date may be ``*`` (CMS: "no data") or
  blank; the modifier indicator is 0, 1 or 9 (CMS PTP file header).
- MUE: units a whole number; MAI 1, 2 or 3 (CMS MUE files write "3 Date of Service Edit: ...").
- Add-on codes: edit type 1, 2 or 3; primary CCCCC = contractor-defined (CMS AOC file).
- MPFS: PC/TC indicator one digit 0-9; RVUs decimal numbers (blank or NA = none).
- Place of service: codes 01-99, type Facility, Non-Facility or Unassigned.
"""
from __future__ import annotations

import re
import sqlite3
from datetime import date
from typing import Callable

from .layouts import Layout
from .readers import BadInput, Source, clean_text

BATCH = 100_000
PTP_MODIFIERS = frozenset({"0", "1", "9"})
_CODE = re.compile(r"^[A-Za-z0-9]{1,7}$")

SCHEMAS = {
    "ptp": [
        "CREATE TABLE rationale(id INTEGER PRIMARY KEY, text TEXT NOT NULL)",
        "CREATE TABLE ptp(column_1 TEXT NOT NULL, column_2 TEXT NOT NULL, source_id INTEGER NOT NULL,"
        " line INTEGER NOT NULL, effective INTEGER, deletion INTEGER, modifier TEXT NOT NULL,"
        " rationale_id INTEGER NOT NULL, PRIMARY KEY(column_1, column_2, source_id, line)) WITHOUT ROWID",
    ],
    "mue": ["CREATE TABLE mue(code TEXT NOT NULL, units INTEGER NOT NULL, mai INTEGER NOT NULL,"
            " rationale TEXT NOT NULL, source_id INTEGER NOT NULL, line INTEGER NOT NULL)"],
    "aoc": ["CREATE TABLE aoc(add_on TEXT NOT NULL, primary_code TEXT NOT NULL, edit_type INTEGER NOT NULL,"
            " effective INTEGER, deletion INTEGER, source_id INTEGER NOT NULL, line INTEGER NOT NULL)"],
    "mpfs-indicators": ["CREATE TABLE mpfs_indicators(code TEXT NOT NULL, mod TEXT NOT NULL,"
                        " status TEXT NOT NULL, pctc TEXT NOT NULL, glob TEXT NOT NULL,"
                        " source_id INTEGER NOT NULL, line INTEGER NOT NULL)"],
    "mpfs-rvu": ["CREATE TABLE mpfs_rvu(code TEXT NOT NULL, mod TEXT NOT NULL, rvu_work REAL, rvu_mp REAL,"
                 " rvu_non_sum REAL, rvu_fac_sum REAL, cf REAL, source_id INTEGER NOT NULL,"
                 " line INTEGER NOT NULL)"],
    "pos": ["CREATE TABLE pos(code TEXT NOT NULL, facility INTEGER NOT NULL, type TEXT NOT NULL,"
            " name TEXT NOT NULL, source_id INTEGER NOT NULL, line INTEGER NOT NULL)"],
}
INDEXES = {
    "ptp": [],
    "mue": ["CREATE INDEX mue_code ON mue(code)"],
    "aoc": ["CREATE INDEX aoc_add_on ON aoc(add_on)"],
    "mpfs-indicators": ["CREATE INDEX mpfs_ind_code ON mpfs_indicators(code, mod)"],
    "mpfs-rvu": ["CREATE INDEX mpfs_rvu_code ON mpfs_rvu(code, mod)"],
    "pos": ["CREATE INDEX pos_code ON pos(code)"],
}

Progress = Callable[[int], None]


def date_int(text: str) -> int:
    """YYYYMMDD as an int from YYYYMMDD, YYYY-MM-DD or MM/DD/YYYY text; ValueError if not a date."""
    t = text.strip()
    if len(t) == 8 and t.isdigit():
        y, m, d = int(t[:4]), int(t[4:6]), int(t[6:])
    elif len(t) == 10 and t[4] == "-" and t[7] == "-":
        y, m, d = int(t[:4]), int(t[5:7]), int(t[8:])
    elif re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4}", t):
        mm, dd, yy = t.split("/")
        y, m, d = int(yy), int(mm), int(dd)
    elif re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?", t):
        y, m, d = int(t[:4]), int(t[5:7]), int(t[8:10])
    else:
        raise ValueError(t)
    date(y, m, d)  # raises ValueError for 20240231
    if y < 1900:
        raise ValueError(t)
    return y * 10000 + m * 100 + d


class DateCache(dict):
    """Text -> YYYYMMDD int (or None for '*' / blank); CMS tables hold a few hundred distinct dates."""

    def __init__(self):
        super().__init__({"*": None, "": None})

    def parse(self, text: str, file: str, line: int, what: str) -> int | None:
        if text.strip() in ("*", ""):
            self[text] = None
            return None
        try:
            value = date_int(text)
        except ValueError:
            raise BadInput(file, line, f"bad {what} {text!r} (expected YYYYMMDD or *)") from None
        self[text] = value
        return value


def _open(source: Source, layout: Layout):
    rows, close = source.open_rows(None)
    for _ in range(layout.header_rows):
        try:
            next(rows)
        except StopIteration:
            break
    return rows, close


def _short_row(source: Source, line: int, row: list[str], layout: Layout) -> BadInput:
    return BadInput(source.name, line, f"wrong layout: {len(row)} columns, the {layout.kind} "
                                       f"layout needs {layout.width}")


def load_ptp(conn: sqlite3.Connection, source: Source, source_id: int, layout: Layout,
             rationales: dict[str, int], progress: Progress | None = None) -> int:
    """Rows of a PTP table into ``ptp``; returns the row count."""
    cols = layout.columns
    i1, i2, idel, imod = cols["column_1"], cols["column_2"], cols["deletion"], cols["modifier"]
    ieff, irat = cols.get("effective"), cols.get("rationale")
    width, name = layout.width, source.name
    dates = DateCache()
    codes: set[str] = set()
    insert = "INSERT INTO ptp VALUES (?,?,?,?,?,?,?,?)"
    batch: list[tuple] = []
    count = 0
    seen_data = False
    rows, close = _open(source, layout)
    try:
        for row in rows:
            if len(row) < width:
                if not any(c.strip() for c in row):
                    continue
                raise _short_row(source, rows.line_num, row, layout)
            c1 = row[i1]
            c2 = row[i2]
            if c1 not in codes or c2 not in codes:
                if not c1 and not c2 and not seen_data:
                    continue  # continuation lines of a wrapped header
                for c in (c1, c2):
                    if not _CODE.match(c):
                        raise BadInput(name, rows.line_num, f"bad procedure code {c!r}")
                    codes.add(c)
            seen_data = True
            text = row[idel]
            deletion = dates.get(text, 0)
            if deletion == 0:
                deletion = dates.parse(text, name, rows.line_num, "deletion date")
            if ieff is None:
                effective = None
            else:
                text = row[ieff]
                effective = dates.get(text, 0)
                if effective == 0:
                    effective = dates.parse(text, name, rows.line_num, "effective date")
            mod = row[imod]
            if mod not in PTP_MODIFIERS:
                mod = mod.strip()
                if mod not in PTP_MODIFIERS:
                    raise BadInput(name, rows.line_num,
                                   f"unknown modifier indicator {row[imod]!r} (expected 0, 1 or 9)")
            text = row[irat] if irat is not None else ""
            rid = rationales.get(text)
            if rid is None:
                rid = len(rationales) + 1
                rationales[text] = rid
                conn.execute("INSERT INTO rationale VALUES (?,?)", (rid, clean_text(text.strip())))
            batch.append((c1, c2, source_id, rows.line_num, effective, deletion, mod, rid))
            if len(batch) >= BATCH:
                conn.executemany(insert, batch)
                count += len(batch)
                if progress:
                    progress(len(batch))
                batch.clear()
    finally:
        close()
    if batch:
        conn.executemany(insert, batch)
        count += len(batch)
        if progress:
            progress(len(batch))
    if count == 0:
        raise BadInput(name, None, "no PTP rows after the header")
    return count


def _rows(source: Source, layout: Layout):
    rows, close = _open(source, layout)
    try:
        for row in rows:
            if not any(c.strip() for c in row if c):
                continue
            if len(row) < layout.width:
                # trailing optional columns may be absent in hand-made CSVs; pad them
                row = row + [""] * (layout.width - len(row))
            yield rows.line_num, row
    finally:
        close()


def _code(source: Source, line: int, text: str, what: str = "code") -> str:
    code = text.strip().upper()
    if not _CODE.match(code):
        raise BadInput(source.name, line, f"bad {what} {text!r}")
    return code


def _number(source: Source, line: int, text: str, what: str) -> float | None:
    t = text.strip()
    if t in ("", "NA", "N/A"):
        return None
    try:
        return float(t)
    except ValueError:
        raise BadInput(source.name, line, f"bad {what} {text!r} (expected a number)") from None


def load_mue(conn, source, source_id, layout, progress=None) -> int:
    c = layout.columns
    out = []
    for line, row in _rows(source, layout):
        code = _code(source, line, row[c["code"]])
        units_text = row[c["units"]].strip()
        if not units_text.isdigit():
            raise BadInput(source.name, line, f"bad MUE units {units_text!r} (expected a whole number)")
        mai_text = row[c["mai"]].strip()
        if not mai_text or mai_text[0] not in "123" or (len(mai_text) > 1 and mai_text[1].isdigit()):
            raise BadInput(source.name, line,
                           f"unknown MUE adjudication indicator {mai_text!r} (expected 1, 2 or 3)")
        rationale = clean_text(row[c["rationale"]].strip()) if "rationale" in c else ""
        out.append((code, int(units_text), int(mai_text[0]), rationale, source_id, line))
    conn.executemany("INSERT INTO mue VALUES (?,?,?,?,?,?)", out)
    return _done(source, out, progress)


def load_aoc(conn, source, source_id, layout, progress=None) -> int:
    c = layout.columns
    dates = DateCache()
    out = []
    for line, row in _rows(source, layout):
        primary = _code(source, line, row[c["primary"]], "primary code")
        add_on = _code(source, line, row[c["add_on"]], "add-on code")
        kind = row[c["edit_type"]].strip()
        if kind not in ("1", "2", "3"):
            raise BadInput(source.name, line, f"unknown add-on code edit type {kind!r} (expected 1, 2 or 3)")
        eff = dele = None
        for fld in ("add_on_effective", "primary_effective"):
            if fld in c:
                text = row[c[fld]].strip()
                v = dates[text] if text in dates else dates.parse(text, source.name, line, "effective date")
                eff = v if eff is None or (v is not None and v > eff) else eff
        for fld in ("add_on_deletion", "primary_deletion"):
            if fld in c:
                text = row[c[fld]].strip()
                v = dates[text] if text in dates else dates.parse(text, source.name, line, "deletion date")
                dele = v if dele is None or (v is not None and v < dele) else dele
        out.append((add_on, primary, int(kind), eff, dele, source_id, line))
    conn.executemany("INSERT INTO aoc VALUES (?,?,?,?,?,?,?)", out)
    return _done(source, out, progress)


def load_mpfs_indicators(conn, source, source_id, layout, progress=None) -> int:
    c = layout.columns
    out = []
    for line, row in _rows(source, layout):
        code = _code(source, line, row[c["code"]])
        mod = row[c["mod"]].strip().upper()
        status = row[c["status"]].strip().upper()
        if len(status) != 1 or not status.isalpha():
            raise BadInput(source.name, line, f"unknown MPFS status indicator {status!r}")
        pctc = row[c["pctc"]].strip()
        if len(pctc) != 1 or not pctc.isdigit():
            raise BadInput(source.name, line, f"unknown PC/TC indicator {pctc!r} (expected 0-9)")
        glob = row[c["glob"]].strip().upper() if "glob" in c else ""
        out.append((code, mod, status, pctc, glob, source_id, line))
    conn.executemany("INSERT INTO mpfs_indicators VALUES (?,?,?,?,?,?,?)", out)
    return _done(source, out, progress)


def load_mpfs_rvu(conn, source, source_id, layout, progress=None) -> int:
    c = layout.columns
    out = []
    for line, row in _rows(source, layout):
        code = _code(source, line, row[c["code"]])
        mod = row[c["mod"]].strip().upper()
        vals = [(_number(source, line, row[c[f]], f) if f in c else None)
                for f in ("rvu_work", "rvu_mp", "rvu_non_sum", "rvu_fac_sum", "cf")]
        out.append((code, mod, *vals, source_id, line))
    conn.executemany("INSERT INTO mpfs_rvu VALUES (?,?,?,?,?,?,?,?,?)", out)
    return _done(source, out, progress)


def load_pos(conn, source, source_id, layout, progress=None) -> int:
    c = layout.columns
    out = []
    for line, row in _rows(source, layout):
        code = row[c["code"]].strip()
        if not code.isdigit() or not 1 <= int(code) <= 99:
            raise BadInput(source.name, line, f"bad place-of-service code {code!r} (expected 01-99)")
        kind = normalize_pos_type(row[c["type"]])
        if kind is None:
            raise BadInput(source.name, line, f"unknown place-of-service type {row[c['type']]!r} "
                                              "(expected Facility, Non-Facility or Unassigned)")
        out.append((code.zfill(2), 1 if kind == "Facility" else 0, kind,
                    clean_text(row[c["name"]].strip()), source_id, line))
    conn.executemany("INSERT INTO pos VALUES (?,?,?,?,?,?)", out)
    return _done(source, out, progress)


def normalize_pos_type(text: str) -> str | None:
    t = re.sub(r"[^a-z]", "", text.lower())
    if t in ("facility", "f", "fac"):
        return "Facility"
    if t in ("nonfacility", "nf", "nonfac"):
        return "Non-Facility"
    if t == "unassigned":
        return "Unassigned"  # CMS lists unassigned codes; they are paid at the non-facility rate
    return None


def _done(source: Source, out: list, progress: Progress | None) -> int:
    if not out:
        raise BadInput(source.name, None, "no rows after the header")
    if progress:
        progress(len(out))
    return len(out)


LOADERS = {
    "mue": load_mue, "aoc": load_aoc, "mpfs-indicators": load_mpfs_indicators,
    "mpfs-rvu": load_mpfs_rvu, "pos": load_pos,
}

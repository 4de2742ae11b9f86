"""Validate the rows of one table kind and write them into a release file being built.

A release file is a standalone SQLite database holding one table kind of one setting and
quarter (see :mod:`nccidata.store`). It is built aside with journal_mode=OFF and
synchronous=OFF (it only becomes visible when the catalog registers it), indexes are created
after the rows are in, and the PTP table is a WITHOUT ROWID table keyed by
(column_1, column_2, source, line) (for `ncci pair` / `ncci diff` and the SQL fallback). PTP
rows also go to the release's pair index (:mod:`nccidata.pairindex`), which answers a claim's
pair lookups.

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

import gc
import re
import sqlite3
from datetime import date
from itertools import repeat
from typing import Callable

from .layouts import Layout
from .pairindex import PairIndexBuilder
from .readers import BadInput, Source, clean_text, read_batch

BATCH = 20_000  # rows per executemany; small enough to stay in CPU caches
PTP_MODIFIERS = frozenset({"0", "1", "9"})
_CODE = re.compile(r"^[A-Za-z0-9]{1,7}$")

SCHEMAS = {
    "ptp": [
        "CREATE TABLE rationale(id INTEGER PRIMARY KEY, text TEXT NOT NULL, raw TEXT NOT NULL UNIQUE)",
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


class _PtpBatcher:
    """Validates PTP rows a batch at a time.

    The fast path checks a whole batch with set operations (new codes, dates, indicators and
    rationales are few: a CMS table holds ~20k codes and a few hundred dates) and builds the
    row tuples in one comprehension. A batch with anything unusual (blank or short rows,
    continuation lines of a wrapped header, a bad value) goes through the row-by-row path,
    which names the exact line of the first error.
    """

    INSERT = "INSERT INTO ptp VALUES (?,?,?,?,?,?,?,?)"
    INSERT_NUMBERS = "INSERT INTO ptp VALUES (?,?,?,?,NULLIF(?,0),NULLIF(?,0),?,?)"  # dates: 0 is none

    def __init__(self, conn, source: Source, source_id: int, layout: Layout, rationales: dict[str, int],
                 pairs: PairIndexBuilder | None = None):
        cols = layout.columns
        self.pairs = pairs if pairs is not None and pairs.usable else None
        self.conn, self.source, self.sid, self.layout = conn, source, source_id, layout
        self.i1, self.i2, self.idel, self.imod = (cols["column_1"], cols["column_2"], cols["deletion"],
                                                  cols["modifier"])
        self.ieff, self.irat = cols.get("effective"), cols.get("rationale")
        self.width = layout.width
        self.dates = DateCache()
        self.date_numbers: dict[str, int] = {"*": 0, "": 0}  # as dates, with 0 for none (pair index)
        self.codes: set[str] = set()
        self.rationales = rationales
        self.seen_data = False

    def _rationale(self, text: str) -> int:
        rid = self.rationales.get(text)
        if rid is None:
            rid = len(self.rationales) + 1
            self.rationales[text] = rid
            clean = clean_text(text)
            self.conn.execute("INSERT INTO rationale VALUES (?,?,?)", (rid, clean.strip(), clean))
        return rid

    def fast(self, batch: list[list[str]], lines) -> tuple[str, object] | None:
        """(INSERT statement, rows) for a clean batch, or None when the batch needs the
        row-by-row path. The batch is transposed once (in C) so that every check is a set
        built from a column; dates and rationales become numbers by dict lookups (a table holds
        a few hundred of each), shared by the SQLite rows and the pair index."""
        if not batch:
            return None
        widths = set(map(len, batch))
        if min(widths) < self.width:
            return None
        cols = list(zip(*batch))
        i1, i2, idel, imod, ieff, irat = self.i1, self.i2, self.idel, self.imod, self.ieff, self.irat
        new_codes = (set(cols[i1]) | set(cols[i2])) - self.codes
        if any(not _CODE.match(c) for c in new_codes):
            return None
        texts = set(cols[idel])
        if ieff is not None:
            texts |= set(cols[ieff])
        for text in texts - self.dates.keys():
            try:
                self.dates[text] = None if text.strip() in ("*", "") else date_int(text)
            except ValueError:
                return None
            self.date_numbers[text] = self.dates[text] or 0
        if not set(cols[imod]) <= PTP_MODIFIERS:
            return None
        self.codes |= new_codes
        self.seen_data = True
        n, numbers, sid = len(batch), self.date_numbers, self.sid
        if irat is None:
            rat = [self._rationale("")] * n
        else:
            for text in set(cols[irat]) - self.rationales.keys():
                self._rationale(text)
            rat = list(map(self.rationales.__getitem__, cols[irat]))
        eff = [0] * n if ieff is None else list(map(numbers.__getitem__, cols[ieff]))
        dele = list(map(numbers.__getitem__, cols[idel]))
        if self.pairs is not None:
            self.pairs.add(cols[i1], cols[i2], eff, dele, cols[imod], rat, sid, lines)
        return self.INSERT_NUMBERS, zip(cols[i1], cols[i2], repeat(sid, n), lines, eff, dele, cols[imod], rat)

    def slow(self, batch: list[list[str]], lines) -> list[tuple]:
        """Row by row: skips blank rows and wrapped-header lines; BadInput names the line."""
        name, out = self.source.name, []
        for line, row in zip(lines, batch):
            if len(row) < self.width:
                if not any(c.strip() for c in row):
                    continue
                raise _short_row(self.source, line, row, self.layout)
            c1, c2 = row[self.i1], row[self.i2]
            if not c1 and not c2 and not self.seen_data:
                continue  # continuation lines of a wrapped header
            for c in (c1, c2):
                if c not in self.codes:
                    if not _CODE.match(c):
                        raise BadInput(name, line, f"bad procedure code {c!r}")
                    self.codes.add(c)
            self.seen_data = True
            text = row[self.idel]
            deletion = self.dates[text] if text in self.dates else self.dates.parse(
                text, name, line, "deletion date")
            effective = None
            if self.ieff is not None:
                text = row[self.ieff]
                effective = self.dates[text] if text in self.dates else self.dates.parse(
                    text, name, line, "effective date")
            mod = row[self.imod].strip()
            if mod not in PTP_MODIFIERS:
                raise BadInput(name, line, f"unknown modifier indicator {row[self.imod]!r} (expected 0, 1 or 9)")
            rid = self._rationale(row[self.irat] if self.irat is not None else "")
            out.append((c1, c2, self.sid, line, effective, deletion, mod, rid))
        if self.pairs is not None and out:
            c1s, c2s, _, lines_, effs, dels, mods, rids = zip(*out)
            self.pairs.add(c1s, c2s, (e or 0 for e in effs), (d or 0 for d in dels), mods, rids,
                           self.sid, lines_)
        return out


def load_ptp(conn: sqlite3.Connection, source: Source, source_id: int, layout: Layout,
             rationales: dict[str, int], progress: Progress | None = None,
             pairs: PairIndexBuilder | None = None) -> int:
    """Rows of a PTP table into ``ptp`` (and into `pairs`, the release's pair index, when
    given); returns the row count."""
    batcher = _PtpBatcher(conn, source, source_id, layout, rationales, pairs)
    count = 0
    rows, close = _open(source, layout)
    # Millions of short-lived row lists would trigger the cyclic GC over and over; none of
    # them forms a cycle, so collection is paused while the rows stream through.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        while True:
            batch, lines = read_batch(rows, source.name, BATCH)
            if not batch:
                break
            fast = batcher.fast(batch, lines)
            if fast is None:
                out = batcher.slow(batch, lines)
                conn.executemany(batcher.INSERT, out)
                n = len(out)
            else:
                conn.executemany(*fast)
                n = len(batch)
            count += n
            if progress:
                progress(n)
    finally:
        if gc_was_enabled:
            gc.enable()
        close()
    if count == 0:
        raise BadInput(source.name, None, "no PTP rows after the header")
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
        mai_text = row[c["mai"]].strip() if "mai" in c else str(layout.default_mai)
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

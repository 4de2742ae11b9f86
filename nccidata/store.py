"""The SQLite store of imported CMS releases, side by side, answering by date of service.

Layout on disk:
- ``<db>`` (``--db`` / ``FLUORO_CDS_DB``): the catalog, one row per release with its provenance
  (kind, setting, label, period covered, source file names and sha256, row count, import time);
- ``<db>.releases/``: one SQLite file per release (one table kind of one setting and quarter),
  built aside and never modified once registered.

An import builds its release files first and then registers them all in one catalog
transaction: that commit is the switch. A failed import leaves no catalog row, so the releases
in service keep answering. Queries open every file read-only (``mode=ro``; release files also
``immutable=1``), one connection per thread (gunicorn gthread), and never load a table into
memory: a claim's PTP edits are index seeks on (column_1, column_2).

Which release answers a date of service D, per table kind and setting (NCCI tables are
quarterly): the releases whose label covers D (2024Q3 covers 2024-07-01..2024-09-30, 2024 the
year); among several, the latest period start, then the newest import; if none covers D, the
latest period start <= D; if none, the newest import. Within a PTP release an edit applies
when effective <= D and (deletion is ``*`` or D <= deletion) (CMS NCCI PTP file rules).

The NCCI program (Medicare, Medicaid) is a dimension of every release (catalog column ``program``,
``medicare`` by default): Medicare releases answer :class:`SqliteStore`'s own queries, as before;
another program's releases answer only through :meth:`SqliteStore.for_program` (never falling back
to Medicare rows or the starter set). Catalogs written before the column existed (schema version 1)
read as Medicare; the next import adds the column (``ALTER TABLE``) and sets ``user_version`` 2.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import quote

from .api import MEDICARE, AddOnEdit, FeeSchedule, MueLimit, PlaceOfService, PtpEdit, Release
from .layouts import KINDS, period_of_label
from .pairindex import PairIndex, PairIndexBuilder, index_paths

CATALOG_SCHEMA = """
CREATE TABLE IF NOT EXISTS releases(
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    setting TEXT,
    label TEXT NOT NULL,
    period_start TEXT,
    period_end TEXT,
    file TEXT NOT NULL,
    sources TEXT NOT NULL,
    row_count INTEGER NOT NULL,
    imported_at TEXT NOT NULL,
    program TEXT NOT NULL DEFAULT 'medicare'
)"""
CATALOG_VERSION = 2  # PRAGMA user_version: 1 (or 0) = no program column (every release Medicare)
# Table kinds and settings the rules ask for; a missing one falls back to the starter set.
EXPECTED = (("ptp", "practitioner"), ("ptp", "outpatient-hospital"), ("mue", "practitioner"),
            ("mue", "outpatient-hospital"), ("aoc", None), ("mpfs-indicators", None),
            ("mpfs-rvu", None), ("pos", None))


def default_db_path() -> str:
    """FLUORO_CDS_DB, else ncci.sqlite in the user's data dir (as service.settings computes)."""
    env = os.environ.get("FLUORO_CDS_DB")
    if env:
        return env
    from platformdirs import user_data_dir

    return str(Path(user_data_dir("fluoro-cds", appauthor=False)) / "ncci.sqlite")


def releases_dir(db_path: str | Path) -> Path:
    p = Path(db_path)
    return p.with_name(p.name + ".releases")


def date_key(on: date) -> int:
    return on.year * 10000 + on.month * 100 + on.day


def int_date(value: int | None) -> date | None:
    if value is None:
        return None
    return date(value // 10000, value // 100 % 100, value % 100)


class _DateTable(dict):
    """YYYYMMDD int -> date, 0 and None -> None; filled on first sight (a release holds a few
    hundred distinct dates)."""

    def __missing__(self, value: int | None) -> date | None:
        self[value] = result = int_date(value or None)
        return result


_MODIFIERS = {0: "0", 1: "1", 9: "9"}  # pair index modifier indicator -> the CMS text
_PTP_COLUMNS = "column_1, column_2, effective, deletion, modifier, rationale_id, source_id, line"
_tuple_new = tuple.__new__


def ro_connect(path: Path, immutable: bool = False) -> sqlite3.Connection:
    uri = f"file:{quote(str(path))}?mode=ro" + ("&immutable=1" if immutable else "")
    return sqlite3.connect(uri, uri=True)


@dataclass
class ReleaseInfo:
    """A catalog row."""

    id: int
    kind: str
    setting: str | None
    label: str
    period_start: date | None
    period_end: date | None
    file: str
    sources: list[dict]
    row_count: int
    imported_at: str
    program: str = MEDICARE  # the NCCI program (PTP, MUE); MEDICARE for the other kinds
    _release: Release | None = field(default=None, repr=False)
    _lookups: dict = field(default_factory=dict, repr=False)
    _pairs: list = field(default_factory=list, repr=False)  # [PairIndex | None] once opened

    @property
    def release(self) -> Release:
        if self._release is None:
            kind = "mpfs" if self.kind.startswith("mpfs") else self.kind
            self._release = Release(label=self.label, kind=kind, setting=self.setting, starter=False,
                                    source=", ".join(s["name"] for s in self.sources), program=self.program)
        return self._release

    def covers(self, on: date) -> bool:
        return (self.period_start is not None and self.period_end is not None
                and self.period_start <= on <= self.period_end)

    def as_dict(self) -> dict:
        return {"id": self.id, "kind": self.kind, "setting": self.setting, "label": self.label,
                "period": ([self.period_start.isoformat(), self.period_end.isoformat()]
                           if self.period_start and self.period_end else None),
                "sources": self.sources, "rows": self.row_count, "imported_at": self.imported_at,
                "file": self.file, "program": self.program}


def read_catalog(db_path: str | Path) -> list[ReleaseInfo]:
    """All releases in the catalog (empty when the file or its table is absent)."""
    path = Path(db_path)
    if not path.is_file():
        return []
    columns = ("SELECT id, kind, setting, label, period_start, period_end, file, sources, row_count,"
               " imported_at, {} FROM releases ORDER BY id")
    try:
        conn = ro_connect(path)
        try:
            try:
                rows = conn.execute(columns.format("program")).fetchall()
            except sqlite3.OperationalError:  # a version 1 catalog: no program column, all Medicare
                rows = conn.execute(columns.format(f"'{MEDICARE}'")).fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return []
    return [ReleaseInfo(id=r[0], kind=r[1], setting=r[2], label=r[3],
                        period_start=date.fromisoformat(r[4]) if r[4] else None,
                        period_end=date.fromisoformat(r[5]) if r[5] else None,
                        file=r[6], sources=json.loads(r[7]), row_count=r[8], imported_at=r[9],
                        program=r[10] or MEDICARE)
            for r in rows]


def migrate_catalog(conn: sqlite3.Connection) -> None:
    """Bring a catalog (open for writing, outside a transaction) to CATALOG_VERSION: create the
    table, or add the ``program`` column to a version 1 catalog (its releases are Medicare's)."""
    conn.execute(CATALOG_SCHEMA)
    names = {r[1] for r in conn.execute("PRAGMA table_info(releases)")}
    if "program" not in names:
        conn.execute(f"ALTER TABLE releases ADD COLUMN program TEXT NOT NULL DEFAULT '{MEDICARE}'")
    if conn.execute("PRAGMA user_version").fetchone()[0] < CATALOG_VERSION:
        conn.execute(f"PRAGMA user_version = {CATALOG_VERSION}")


def pick_release(candidates: list[ReleaseInfo], on: date | None) -> ReleaseInfo | None:
    """The release answering date of service `on` among releases of one kind and setting
    (`candidates` in import order). See the module docstring for the rule."""
    if not candidates:
        return None
    if on is None:
        return candidates[-1]
    covering = [c for c in candidates if c.covers(on)]
    if covering:
        return max(covering, key=lambda c: (c.period_start, c.id))
    started = [c for c in candidates if c.period_start is not None and c.period_start <= on]
    if started:
        return max(started, key=lambda c: (c.period_start, c.id))
    return candidates[-1]


# --- building ------------------------------------------------------------------------------

class ReleaseBuilder:
    """Builds one release file aside (journal off, sync off); `finish` indexes and closes it."""

    def __init__(self, db_path: str | Path, kind: str, setting: str | None, label: str,
                 program: str = MEDICARE):
        from .loaders import SCHEMAS

        self.kind, self.setting, self.label, self.program = kind, setting, label, program
        self.dir = releases_dir(db_path)
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in label)
        prefix = "" if program == MEDICARE else f"{program}-"
        self.name = f"{prefix}{kind}-{setting or 'all'}-{safe}-{stamp}-{uuid.uuid4().hex[:8]}.sqlite"
        self.tmp = self.dir / f".building-{self.name}"
        self.conn = sqlite3.connect(self.tmp, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-262144",
                       "temp_store=MEMORY", "locking_mode=EXCLUSIVE"):
            self.conn.execute(f"PRAGMA {pragma}")
        self.conn.execute("BEGIN")
        self.conn.execute("CREATE TABLE sources(id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                          " sha256 TEXT NOT NULL, rows INTEGER NOT NULL)")
        self.conn.execute("CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT)")
        for ddl in SCHEMAS[kind]:
            self.conn.execute(ddl)
        self.sources: list[dict] = []
        self.rationales: dict[str, int] = {}
        self.rows = 0
        self.pairs = PairIndexBuilder() if kind == "ptp" else None

    def add(self, source, layout, progress=None) -> int:
        from .loaders import LOADERS, load_ptp

        source_id = len(self.sources) + 1
        if self.kind == "ptp":
            n = load_ptp(self.conn, source, source_id, layout, self.rationales, progress, self.pairs)
        else:
            n = LOADERS[self.kind](self.conn, source, source_id, layout, progress)
        self.conn.execute("INSERT INTO sources VALUES (?,?,?,?)", (source_id, source.name, source.sha256, n))
        self.sources.append({"name": source.name, "sha256": source.sha256, "rows": n})
        self.rows += n
        return n

    def finish(self) -> Path:
        from .loaders import INDEXES

        for ddl in INDEXES[self.kind]:
            self.conn.execute(ddl)
        meta = {"kind": self.kind, "setting": self.setting or "", "label": self.label, "program": self.program}
        self.conn.executemany("INSERT INTO meta VALUES (?,?)", list(meta.items()))
        self.conn.execute("COMMIT")
        self.conn.execute("PRAGMA journal_mode=DELETE")
        self.conn.close()
        final = self.dir / self.name
        os.replace(self.tmp, final)
        if self.pairs is not None:
            try:
                self.pairs.write(final)
            except BaseException:
                remove_release_file(final)
                raise
        return final

    def discard(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
        for p in (self.tmp, Path(str(self.tmp) + "-journal")):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


STALE_BUILD_SECONDS = 60.0  # a ".building-" file this old whose lock is free was left by a killed import
STALE_RELEASE_SECONDS = 3600.0  # a finished release file this old and not in the catalog: the same


def _locked(path: Path) -> bool:
    """True while a ReleaseBuilder has `path` open (it holds SQLite's exclusive lock)."""
    try:
        conn = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            conn.execute("ROLLBACK")
            return False
        finally:
            conn.close()
    except sqlite3.OperationalError as exc:
        return "locked" in str(exc)
    except sqlite3.Error:
        return False


def clean_interrupted_imports(db_path: str | Path, now: float | None = None) -> list[str]:
    """Delete what an interrupted import (killed, even with SIGKILL) left in the releases
    directory: ``.building-*`` files no import holds any more (free lock, older than
    STALE_BUILD_SECONDS), and release files and pair indexes that no catalog row names, older
    than STALE_RELEASE_SECONDS (an import between its finish and its catalog switch is younger).
    Run at the start of every import. Returns the names removed."""
    directory = releases_dir(db_path)
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    registered = {r.file for r in read_catalog(db_path)}
    keep = registered | {str(q.name) for f in registered for q in index_paths(directory / f)}
    removed = []
    for path in sorted(directory.iterdir()):
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if path.name.startswith(".building-"):
            stale = age > STALE_BUILD_SECONDS and (path.name.endswith("-journal") or not _locked(path))
        else:
            stale = path.name not in keep and age > STALE_RELEASE_SECONDS
        if stale and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def remove_release_file(path: str | Path) -> None:
    """Delete an unregistered release file and its pair index, if any."""
    for p in (Path(path), *index_paths(path)):
        p.unlink(missing_ok=True)


def register(db_path: str | Path, builders: list[ReleaseBuilder]) -> list[ReleaseInfo]:
    """Register finished release files in one catalog transaction: the atomic switch."""
    path = Path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        migrate_catalog(conn)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for b in builders:
            start, end = period_of_label(b.label)
            conn.execute(
                "INSERT INTO releases(kind, setting, label, period_start, period_end, file, sources,"
                " row_count, imported_at, program) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (b.kind, b.setting, b.label, start.isoformat() if start else None,
                 end.isoformat() if end else None, b.name, json.dumps(b.sources), b.rows, now, b.program))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    names = {b.name for b in builders}
    return [r for r in read_catalog(path) if r.file in names]


def retire(db_path: str | Path, label: str, kind: str | None = None,
           setting: str | None = None, program: str | None = None) -> list[ReleaseInfo]:
    """Remove the releases labelled `label` (of one `kind` / `setting` / `program` when given) from the
    catalog in one transaction, then delete their release files and pair indexes. Returns the
    releases removed (none: nothing changed). A running service drops them within a second
    (its catalog stamp changes); files it still has open stay readable until it does."""
    gone = [r for r in read_catalog(db_path) if r.label.lower() == label.lower()
            and (kind is None or r.kind == kind) and (setting is None or r.setting == setting)
            and (program is None or r.program == program)]
    if not gone:
        return []
    conn = sqlite3.connect(Path(db_path), isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("DELETE FROM releases WHERE id = ?", [(r.id,) for r in gone])
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    for r in gone:
        remove_release_file(releases_dir(db_path) / r.file)
    return gone


# --- querying ------------------------------------------------------------------------------

class _ByRelease:
    """A release as a cache key (:class:`SqliteStore`'s kept answers): equal by its id, as a
    release file never changes, and carrying its catalog row, so an answer is computed from the
    row picked even when the catalog was re-read (the release retired) in between."""

    __slots__ = ("info",)

    def __init__(self, info: ReleaseInfo) -> None:
        self.info = info

    def __hash__(self) -> int:
        return hash(self.info.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _ByRelease) and other.info.id == self.info.id


def _kept(query: Callable, maxsize: int = 8192) -> Callable:
    """`query(*args)` with its answers kept by its arguments (an LRU of `maxsize`), each release
    among them given as its :class:`_ByRelease` key (the query gets the catalog row)."""
    return lru_cache(maxsize=maxsize)(
        lambda *args: query(*(a.info if isinstance(a, _ByRelease) else a for a in args)))


class SqliteStore:
    """:class:`nccidata.api.ReferenceData` over the catalog at `db_path`; kinds the store lacks
    are answered by `fallback` (the starter set), and describe() says so."""

    REFRESH_SECONDS = 1.0

    def __init__(self, db_path: str | Path, fallback=None, use_pair_index: bool = True):
        from .starter import starter

        self.db_path = Path(db_path)
        self.fallback = fallback if fallback is not None else starter()
        self.use_pair_index = use_pair_index  # False: SQL only (for comparisons and tests)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._by_kind: dict[tuple[str, str | None], list[ReleaseInfo]] = {}  # Medicare's releases
        self._by_program: dict[tuple[str, str, str | None], list[ReleaseInfo]] = {}  # (program, kind, setting)
        self._views: dict[str, ProgramReference] = {}
        self._all: list[ReleaseInfo] = []
        self._picks: dict = {}
        # Answers kept by release (_ByRelease): the same codes are asked of every claim of a batch
        # (on the CMS tables the MPFS, add-on, MUE and place-of-service queries were ~12% of a
        # batch's CPU); emptied when the catalog changes.
        self._ptp_cached = _kept(self._ptp_query)
        self._mue_cached = _kept(self._mue_query)
        self._aoc_cached = _kept(self._aoc_query)
        self._fee_cached = _kept(self._fee_query)
        self._pos_cached = _kept(self._pos_query, maxsize=1024)
        self._caches = (self._ptp_cached, self._mue_cached, self._aoc_cached, self._fee_cached, self._pos_cached)
        self.refresh()

    # --- catalog -------------------------------------------------------------------------
    def _file_stamp(self) -> tuple | None:
        """What identifies the catalog's content: its inode and its release ids (file times are
        too coarse: two imports can land in the same clock tick)."""
        try:
            st = os.stat(self.db_path)
        except FileNotFoundError:
            return None
        try:
            conn = ro_connect(self.db_path)
            try:
                ids = conn.execute("SELECT count(*), max(id) FROM releases").fetchone()
            finally:
                conn.close()
        except sqlite3.Error:
            ids = None
        return (st.st_ino, ids)

    def refresh(self) -> None:
        """Re-read the catalog (done automatically when the catalog file changes)."""
        with self._lock:
            self._stamp = self._file_stamp()
            self._checked = time.monotonic()
            infos = read_catalog(self.db_path)
            by_kind: dict = {}
            by_program: dict = {}
            for info in infos:
                if info.program == MEDICARE:
                    by_kind.setdefault((info.kind, info.setting), []).append(info)
                else:
                    by_program.setdefault((info.program, info.kind, info.setting), []).append(info)
            self._all, self._by_kind, self._by_program = infos, by_kind, by_program
            self._picks = {}
            for cache in self._caches:
                cache.cache_clear()

    def _maybe_refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.REFRESH_SECONDS:
            return
        self._checked = now
        if self._file_stamp() != self._stamp:
            self.refresh()

    @property
    def releases(self) -> list[ReleaseInfo]:
        self._maybe_refresh()
        return list(self._all)

    def has_releases(self) -> bool:
        return bool(self._all)

    def pick(self, kind: str, setting: str | None, on: date | None) -> ReleaseInfo | None:
        self._maybe_refresh()
        key = (kind, setting, on)
        picks = self._picks
        if key in picks:
            return picks[key]
        info = pick_release(self._by_kind.get((kind, setting), []), on)
        if len(picks) > 10000:
            picks.clear()
        picks[key] = info
        return info

    def pick_program(self, program: str, kind: str, setting: str | None, on: date | None) -> ReleaseInfo | None:
        """The release of NCCI `program` answering `on` (pick() is Medicare's; the same rule)."""
        if program == MEDICARE:
            return self.pick(kind, setting, on)
        self._maybe_refresh()
        key = (program, kind, setting, on)
        picks = self._picks
        if key in picks:
            return picks[key]
        info = pick_release(self._by_program.get((program, kind, setting), []), on)
        if len(picks) > 10000:
            picks.clear()
        picks[key] = info
        return info

    def programs(self) -> list[str]:
        """The NCCI programs with at least one imported release (Medicare first)."""
        self._maybe_refresh()
        return ([MEDICARE] if self._by_kind else []) + sorted({p for p, _k, _s in self._by_program})

    def for_program(self, program: str) -> "ProgramReference | SqliteStore":
        """The reference data of NCCI `program`: this store for Medicare; for another program a
        view whose PTP and MUE queries answer from that program's releases only."""
        if program == MEDICARE:
            return self
        view = self._views.get(program)
        if view is None:
            view = self._views[program] = ProgramReference(self, program)
        return view

    def connection(self, info: ReleaseInfo) -> sqlite3.Connection:
        """This thread's read-only connection to a release file."""
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        conn = conns.get(info.file)
        if conn is None:
            conn = conns[info.file] = ro_connect(releases_dir(self.db_path) / info.file, immutable=True)
        return conn

    def _lookups(self, info: ReleaseInfo) -> dict:
        """Small per-release tables: rationale texts and source names."""
        if not info._lookups:
            conn = self.connection(info)
            lk = {"sources": dict(conn.execute("SELECT id, name FROM sources"))}
            if info.kind == "ptp":
                lk["rationale"] = dict(conn.execute("SELECT id, text FROM rationale"))
                lk["dates"] = _DateTable()
            info._lookups = lk
        return info._lookups

    # --- ReferenceData ------------------------------------------------------------------
    def ptp_edits(self, codes: Iterable[str], on: date, setting: str) -> list[PtpEdit]:
        info = self.pick("ptp", setting, on)
        if info is None:
            return self.fallback.ptp_edits(codes, on, setting)
        return self.ptp_in_force(info, codes, on)

    def ptp_in_force(self, info: ReleaseInfo, codes: Iterable[str], on: date) -> list[PtpEdit]:
        """The PTP rows of release `info` among `codes` in force on `on` (what both
        :meth:`ptp_edits` and a program's, :class:`ProgramReference`, answer)."""
        key = tuple(sorted({c.strip().upper() for c in codes}))
        if len(key) < 2:
            return []
        # The cache holds every row among the codes, whatever its dates, so that the same
        # codes on another date of service are a hit; the date rule (PtpEdit.in_force) is
        # applied here, inlined.
        return [e for e in self._ptp_cached(_ByRelease(info), key)
                if (e.effective is None or e.effective <= on) and (e.deletion is None or on <= e.deletion)]

    def pair_index(self, info: ReleaseInfo) -> PairIndex | None:
        """The release's memory-mapped pair index (None: answered by SQL)."""
        if not self.use_pair_index:
            return None
        if not info._pairs:
            info._pairs.append(PairIndex.open(releases_dir(self.db_path) / info.file))
        return info._pairs[0]

    def _ptp_query(self, info: ReleaseInfo, codes: tuple[str, ...]) -> tuple[PtpEdit, ...]:
        """Every row of the release among `codes`: from the pair index (a vectorised binary
        search over a memory-mapped sorted array) or, for a release without one, SQL (one
        prepared IN x IN statement on the (column_1, column_2) key)."""
        index = self.pair_index(info)
        if index is not None:
            lk = self._lookups(info)
            dates, rationale, sources, rel = lk["dates"], lk["rationale"], lk["sources"], info.release
            # PtpEdit built as a plain tuple: the fields in order, converted by table lookups
            return tuple([_tuple_new(PtpEdit, (c1, c2, dates[eff], dates[dele], _MODIFIERS[mod], rationale[rat],
                                               rel, line, sources.get(src)))
                          for c1, c2, (eff, dele, mod, rat, src, line) in index.among(codes)])
        marks = ",".join("?" * len(codes))
        sql = f"SELECT {_PTP_COLUMNS} FROM ptp WHERE column_1 IN ({marks}) AND column_2 IN ({marks})"
        return tuple(self._sql_edits(info, self.connection(info).execute(sql, (*codes, *codes))))

    def _sql_edits(self, info: ReleaseInfo, rows: Iterable[tuple]) -> list[PtpEdit]:
        """PtpEdits of rows of the ptp table read as _PTP_COLUMNS."""
        lk = self._lookups(info)
        dates, rationale, sources, rel = lk["dates"], lk["rationale"], lk["sources"], info.release
        return [_tuple_new(PtpEdit, (c1, c2, dates[eff], dates[dele], mod, rationale[rat], rel, line,
                                     sources.get(src)))
                for c1, c2, eff, dele, mod, rat, src, line in rows]

    def ptp_rows(self, column1: str, column2: str, setting: str, on: date | None) -> list[PtpEdit]:
        """Every row of the pair in the release answering `on`, in force or not (for `ncci pair`)."""
        info = self.pick("ptp", setting, on)
        if info is None:
            return []
        rows = self.connection(info).execute(f"SELECT {_PTP_COLUMNS} FROM ptp WHERE column_1=? AND column_2=?",
                                             (column1.strip().upper(), column2.strip().upper()))
        return self._sql_edits(info, rows)

    def mue(self, code: str, on: date, setting: str) -> MueLimit | None:
        info = self.pick("mue", setting, on)
        if info is None:
            return self.fallback.mue(code, on, setting)
        return self.mue_in(info, code)

    def mue_in(self, info: ReleaseInfo, code: str) -> MueLimit | None:
        """The MUE of `code` in release `info`."""
        return self._mue_cached(_ByRelease(info), code.strip().upper())

    def _mue_query(self, info: ReleaseInfo, code: str) -> MueLimit | None:
        row = self.connection(info).execute(
            "SELECT units, mai, rationale FROM mue WHERE code=? ORDER BY source_id, line LIMIT 1", (code,)).fetchone()
        if row is None:
            return None
        return MueLimit(code=code, units=row[0], mai=row[1], rationale=row[2], release=info.release)

    def add_on(self, add_on_code: str, on: date) -> AddOnEdit | None:
        info = self.pick("aoc", None, on)
        if info is None:
            return self.fallback.add_on(add_on_code, on)
        return self._aoc_cached(_ByRelease(info), add_on_code.strip().upper(), date_key(on))

    def _aoc_query(self, info: ReleaseInfo, add_on_code: str, day: int) -> AddOnEdit | None:
        rows = self.connection(info).execute(
            "SELECT primary_code, edit_type FROM aoc WHERE add_on=?"
            " AND (effective IS NULL OR effective <= ?) AND (deletion IS NULL OR deletion >= ?)"
            " ORDER BY source_id, line", (add_on_code, day, day)).fetchall()
        if not rows:
            return None
        contractor = any(r[0] == "CCCCC" for r in rows)
        return AddOnEdit(add_on=add_on_code, edit_type=rows[0][1],
                         primaries=frozenset(r[0] for r in rows if r[0] != "CCCCC"),
                         contractor_defined=contractor, release=info.release)

    def fee(self, code: str, modifier: str = "", on: date | None = None) -> FeeSchedule | None:
        ind = self.pick("mpfs-indicators", None, on)
        rvu = self.pick("mpfs-rvu", None, on)
        if ind is None and rvu is None:
            return self.fallback.fee(code, modifier, on)
        return self._fee_cached(_ByRelease(ind) if ind is not None else None,
                                _ByRelease(rvu) if rvu is not None else None,
                                code.strip().upper(), (modifier or "").strip().upper())

    def _fee_query(self, ind: ReleaseInfo | None, rvu: ReleaseInfo | None, code: str,
                   modifier: str) -> FeeSchedule | None:
        irow = rrow = None
        if ind is not None:
            irow = self.connection(ind).execute(
                "SELECT status, pctc, glob FROM mpfs_indicators WHERE code=? AND mod=? LIMIT 1",
                (code, modifier)).fetchone()
        if rvu is not None:
            rrow = self.connection(rvu).execute(
                "SELECT rvu_fac_sum, rvu_non_sum, cf FROM mpfs_rvu WHERE code=? AND mod=? LIMIT 1",
                (code, modifier)).fetchone()
        if irow is None and rrow is None:
            return None
        main = ind if irow is not None else rvu
        rel = main.release
        if ind is not None and rvu is not None:
            rel = Release(label=ind.label, kind="mpfs", setting=None, starter=False,
                          source=", ".join(s["name"] for s in ind.sources + rvu.sources))
        return FeeSchedule(code=code, modifier=modifier, status=irow[0] if irow else "",
                           pctc=irow[1] if irow else "", global_days=irow[2] if irow else "",
                           rvu_facility_total=rrow[0] if rrow else None,
                           rvu_nonfacility_total=rrow[1] if rrow else None,
                           conversion_factor=rrow[2] if rrow else None, release=rel)

    def place_of_service(self, code: str) -> PlaceOfService | None:
        info = self.pick("pos", None, None)
        if info is None:
            return self.fallback.place_of_service(code)
        return self._pos_cached(_ByRelease(info), code.strip().zfill(2))

    def _pos_query(self, info: ReleaseInfo, code: str) -> PlaceOfService | None:
        row = self.connection(info).execute("SELECT facility, name FROM pos WHERE code=? LIMIT 1", (code,)).fetchone()
        if row is None:
            return None
        return PlaceOfService(code=code, facility=bool(row[0]), name=row[1], release=info.release)

    def describe(self, on: date | None = None) -> dict:
        """Releases in service on `on` (default today) per kind and setting, and fallbacks."""
        self._maybe_refresh()
        on = on or date.today()
        in_service, fallback = [], []
        seen = set()
        for kind, setting in list(EXPECTED) + sorted(k for k in self._by_kind if k not in EXPECTED):
            if (kind, setting) in seen:
                continue
            seen.add((kind, setting))
            info = self.pick(kind, setting, on)
            if info is None:
                fallback.append({"kind": kind, "setting": setting,
                                 "answered_by": "fluoro-cds starter data set (not a CMS release)"})
            else:
                in_service.append(info.as_dict())
        for program, kind, setting in sorted(self._by_program):  # other NCCI programs: no fallback
            info = self.pick_program(program, kind, setting, on)
            if info is not None:
                in_service.append(info.as_dict())
        return {"source": "sqlite", "db": str(self.db_path), "date": on.isoformat(),
                "starter": bool(fallback), "in_service": in_service, "fallback": fallback,
                "releases": len(self._all)}

    def close(self) -> None:
        """Close this thread's connections."""
        for conn in getattr(self._local, "conns", {}).values():
            conn.close()
        self._local.conns = {}


class ProgramReference:
    """:class:`nccidata.api.ReferenceData` of an NCCI program other than Medicare (Medicaid): PTP
    edits and MUEs from that program's releases only: where it has none for a setting the answer is
    empty (never Medicare's rows, never the starter set; :meth:`release` says so). Add-on, MPFS and
    POS tables have no program: the store answers them."""

    def __init__(self, store: SqliteStore, program: str):
        self.store, self.program = store, program

    def release(self, kind: str, setting: str | None, on: date | None) -> ReleaseInfo | None:
        """The release of this program answering `on`, or None (none imported)."""
        return self.store.pick_program(self.program, kind, setting, on)

    def ptp_edits(self, codes: Iterable[str], on: date, setting: str) -> list[PtpEdit]:
        info = self.store.pick_program(self.program, "ptp", setting, on)
        return [] if info is None else self.store.ptp_in_force(info, codes, on)

    def ptp_rows(self, column1: str, column2: str, setting: str, on: date | None) -> list[PtpEdit]:
        info = self.store.pick_program(self.program, "ptp", setting, on)
        if info is None:
            return []
        rows = self.store.connection(info).execute(
            f"SELECT {_PTP_COLUMNS} FROM ptp WHERE column_1=? AND column_2=?",
            (column1.strip().upper(), column2.strip().upper()))
        return self.store._sql_edits(info, rows)

    def mue(self, code: str, on: date, setting: str) -> MueLimit | None:
        info = self.store.pick_program(self.program, "mue", setting, on)
        return None if info is None else self.store.mue_in(info, code)

    def add_on(self, add_on_code: str, on: date) -> AddOnEdit | None:
        return self.store.add_on(add_on_code, on)

    def fee(self, code: str, modifier: str = "", on: date | None = None) -> FeeSchedule | None:
        return self.store.fee(code, modifier, on)

    def place_of_service(self, code: str) -> PlaceOfService | None:
        return self.store.place_of_service(code)

    def describe(self) -> dict:
        return self.store.describe()


__all__ = ["SqliteStore", "ProgramReference", "CATALOG_VERSION", "migrate_catalog", "ReleaseBuilder", "clean_interrupted_imports", "ReleaseInfo", "register", "retire", "read_catalog", "pick_release",
           "default_db_path", "releases_dir", "KINDS"]

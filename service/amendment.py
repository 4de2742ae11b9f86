"""The batch's amendment of the claims the edits across claims edit, staged on disk (--out-dir;
and the single-file output's, :class:`AmendedRecords`).

The edits across claims are found once every claim is reviewed (service/claim_groups.py); a claim
they edit has the outputs of its first review replaced by its amended ones (service.batch
``amended_outputs``, in the workers). Those amended outputs come back from the workers a part at
a time (:class:`AmendedPart`) and go straight to disk (:class:`Amended`: their table rows and
corrected Claims in files, which claims they are in SQLite), as do the claims the findings across
claims name: the main process holds none of them, so its memory does not grow with the number of
claims amended (docs/batch.md "Edits across claims"). :func:`finish_outputs` then writes the
findings table from its staged copy (:class:`StagedTable`) and claims-corrected.ndjson without the
first review of those claims and with their amended outputs, and takes that first review back
from the tally (:func:`retraction`: what the rewrite removes, counted as it streams by).
"""
from __future__ import annotations

import os
import shutil
import sqlite3
from collections import Counter
from typing import Iterable, Iterator, Sequence

import orjson

from .batch_report import Tally
from .findings_table import ACROSS, NAMES, SCHEMA, SOURCE_FILE, SOURCE_LINE, ParquetRows, ndjson_rows, record_batch
from .jsonio import dumps, loads

_BLOCK = 4096  # table rows / corrected Claims read (and looked up) at a time in the rewrite


def source_key(file: str, line: int) -> str:
    """The key of the claim read from (file, line): what the table's source_file and source_line
    give, joined by a newline (as :func:`write_table` builds it from the table's columns)."""
    return f"{file}\n{line}"


class AmendedPart:
    """The amended outputs of some claims, made in a worker (service.batch ``_cross_chunk``), sent
    back as plain data: their table rows (an Arrow record batch or NDJSON bytes once
    :meth:`packed`), their corrected Claims (NDJSON bytes), (key, "Type/id", keeps rows of its own)
    of each, and the tally of those outputs."""

    __slots__ = ("rows", "fixed", "claims", "tally")

    def __init__(self) -> None:
        self.rows: list[tuple] | object = []
        self.fixed: list[bytes] | bytes = []
        self.claims: list[tuple[str, str, bool]] = []
        self.tally = Tally()

    def add(self, where: tuple[str, int], claim: str, out: tuple[list[tuple], dict | None, Tally]) -> None:
        rows, fixed, change = out
        self.rows += rows
        if fixed is not None:
            self.fixed.append(dumps(fixed))
        self.claims.append((source_key(*where), claim, bool(rows)))
        self.tally.merge(change)

    def packed(self, fmt: str) -> "AmendedPart":
        """Itself with its rows as the table's format writes them (cheap to send between processes)."""
        self.rows = record_batch(self.rows) if fmt == "parquet" else ndjson_rows(self.rows)
        self.fixed = b"".join(c + b"\n" for c in self.fixed)
        return self

    def __getstate__(self):
        return tuple(getattr(self, n) for n in self.__slots__)

    def __setstate__(self, state) -> None:
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)


class Amended:
    """The amended outputs of a run (:class:`AmendedPart` s, in the order the workers' parts come
    back) and the claims its findings across claims name, on disk in `workdir`: table rows in an
    Arrow IPC stream (Parquet) or NDJSON file, corrected Claims in an NDJSON file, the claims in
    SQLite (a small page cache: memory stays flat whatever the input). A context manager."""

    CACHE_KIB = 2048  # SQLite page cache

    def __init__(self, workdir: str, fmt: str) -> None:
        self.fmt = fmt
        self.count = 0  # claims amended
        self.tally = Tally()  # of their amended outputs
        self.db = sqlite3.connect(os.path.join(workdir, "amended.sqlite"), isolation_level=None)
        self.db.executescript(
            f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{self.CACHE_KIB};"
            # source: source_key of the claim; own: its amended outputs keep rows of its own; first:
            # its first review's rows were found in the table (set by the rewrite)
            "CREATE TABLE amended (source TEXT PRIMARY KEY, claim TEXT NOT NULL, own INTEGER NOT NULL,"
            " first INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
            "CREATE INDEX amended_by_claim ON amended (claim);"
            # the claims a finding across claims names, and whether their own review found something
            "CREATE TABLE named (source TEXT PRIMARY KEY, own INTEGER NOT NULL) WITHOUT ROWID;")
        self.db.execute("BEGIN")
        self.rows_path = os.path.join(workdir, "amended-rows." + ("arrows" if fmt == "parquet" else "ndjson"))
        self.fixed_path = os.path.join(workdir, "amended-fixed.ndjson")
        self._rows = open(self.rows_path, "wb")
        self._fixed = open(self.fixed_path, "wb")
        self._ipc = None

    def __enter__(self) -> "Amended":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._close_files()
        self.db.close()

    def _close_files(self) -> None:
        if self._ipc is not None:
            self._ipc.close()
            self._ipc = None
        self._rows.close()
        self._fixed.close()

    def add(self, part: AmendedPart) -> None:
        """Store a worker's part (packed)."""
        if self.fmt == "parquet":
            if part.rows.num_rows:
                if self._ipc is None:
                    import pyarrow as pa

                    self._ipc = pa.ipc.new_stream(self._rows, SCHEMA)
                self._ipc.write_batch(part.rows)
        else:
            self._rows.write(part.rows)
        self._fixed.write(part.fixed)
        self.db.executemany("INSERT OR REPLACE INTO amended (source, claim, own) VALUES (?, ?, ?)", part.claims)
        self.count += len(part.claims)
        self.tally.merge(part.tally)

    def name(self, named: Iterable[tuple[tuple[str, int], bool]]) -> None:
        """Note the claims (file, line) a finding across claims names, with whether their own
        review found something (a later note of a claim replaces an earlier one)."""
        self.db.executemany("INSERT OR REPLACE INTO named VALUES (?, ?)",
                            [(source_key(*where), own) for where, own in named])

    def finished(self) -> None:
        """Every part is in: the files are closed for reading back."""
        self._close_files()
        self.db.execute("COMMIT")

    def amended_of(self, keys: Sequence[str]) -> list[str]:
        """Those of `keys` (:func:`source_key`) that are amended claims."""
        return [k for (k,) in self.db.execute(
            "SELECT source FROM amended WHERE source IN (SELECT value FROM json_each(?))", (orjson.dumps(keys),))]

    def found(self, keys: Sequence[str]) -> int:
        """Note that the first review of the amended claims `keys` had rows in the table; returns
        how many of them were not noted before."""
        before = self.db.total_changes
        self.db.execute("UPDATE amended SET first = 1 WHERE first = 0 AND source IN (SELECT value FROM json_each(?))",
                        (orjson.dumps(keys),))
        return self.db.total_changes - before

    def claims_of(self, names: Sequence[str]) -> set[str]:
        """Those of `names` ("Type/id") that are amended claims."""
        return {c for (c,) in self.db.execute(
            "SELECT claim FROM amended WHERE claim IN (SELECT value FROM json_each(?))", (orjson.dumps(names),))}

    def named_without_own(self) -> int:
        """How many claims a finding across claims names have no rows of their own at the end (none
        found by their review, or, for an amended claim, none left by its amendment)."""
        return self.db.execute("SELECT COUNT(*) FROM named n LEFT JOIN amended a ON a.source = n.source"
                               " WHERE NOT COALESCE(a.own, n.own)").fetchone()[0]

    def row_parts(self) -> Iterator[object]:
        """The amended table rows as stored: Arrow record batches (Parquet) or NDJSON bytes."""
        if self.fmt == "parquet":
            if os.path.getsize(self.rows_path):
                import pyarrow as pa

                with pa.OSFile(self.rows_path) as source:  # read (not mapped): its batches outlive the file
                    yield from pa.ipc.open_stream(source)
        else:
            with open(self.rows_path, "rb") as fh:
                yield from iter(lambda: fh.read(1 << 20), b"")


class AmendedRecords:
    """The single-file output's amendment (service.batch ``run``): the amended findings records of
    the claims the edits across claims edit, by :func:`source_key`, in SQLite in `workdir` (a small
    page cache: the main process holds none of them, whatever their number). A context manager."""

    BLOCK = 1024  # output records read (and looked up) at a time in the rewrite

    def __init__(self, workdir: str) -> None:
        self.db = sqlite3.connect(os.path.join(workdir, "amended-records.sqlite"), isolation_level=None)
        self.db.executescript(f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{Amended.CACHE_KIB};"
                              "CREATE TABLE amended (source TEXT PRIMARY KEY, findings BLOB NOT NULL) WITHOUT ROWID;")

    def __enter__(self) -> "AmendedRecords":
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()

    def add(self, part: dict[tuple[str, int], list[dict]]) -> None:
        """Store a worker's amended findings records, by (file, line) of their claims (a later one
        of a claim replaces an earlier one)."""
        self.db.executemany("INSERT OR REPLACE INTO amended VALUES (?, ?)",
                            [(source_key(*where), dumps(found)) for where, found in part.items()])

    @property
    def count(self) -> int:
        """How many claims are amended."""
        return self.db.execute("SELECT COUNT(*) FROM amended").fetchone()[0]

    def of(self, keys: Sequence[str]) -> dict[str, list[dict]]:
        """The amended findings records of those of `keys` (:func:`source_key`) that are amended."""
        return {k: loads(found) for k, found in self.db.execute(
            "SELECT source, findings FROM amended WHERE source IN (SELECT value FROM json_each(?))",
            (orjson.dumps(keys),))}

    def rewrite(self, staged: Iterable[bytes], one_file: str | None, counts: Counter[str]) -> Iterator[bytes]:
        """The staged output records (NDJSON lines, in input order), each amended claim's findings
        replaced by its amended ones, a block at a time; `counts` (findings by code) follows.
        `one_file`: the claim file of a single-file run (its records name no file)."""
        if not self.count:
            yield from staged
            return
        for block in chunks(staged, self.BLOCK):
            # the block's keys, its lines kept as bytes (4,096 parsed records held the main process
            # ~30 MB higher at 20,000 claims); an amended claim's record is parsed again
            keys = [source_key(r.get("file", one_file), r["line"]) for r in map(loads, block)]
            new = self.of(keys)
            for line, key in zip(block, keys):
                found = new.get(key)
                if found is not None:
                    record = loads(line)
                    if "findings" in record:
                        counts.subtract(f["code"] for f in record["findings"])
                        counts.update(f["code"] for f in found)
                        record["findings"] = found
                        line = dumps(record) + b"\n"
                yield line


def finish_outputs(table: "StagedTable", amended: Amended, fixed_path: str, tally: Tally) -> None:
    """Write the findings table from its staged copy and, when the edits across claims amended
    claims, replace the outputs of their first review with the amended ones: the findings table and
    claims-corrected.ndjson are written without the first (the rows across claims stay) and with
    the amended ones, and the tally takes back what that drops (:func:`retraction`: no second
    review of the first)."""
    amended.finished()
    taken_back = Tally()
    with_rows = write_table(table, amended, taken_back)
    if not amended.count:
        return
    fixed_dropped = 0
    with open(fixed_path, "rb") as old, open(fixed_path + ".new", "wb") as new:
        for block in chunks(old):
            names = [_claim_name(loads(line)) for line in block]  # (not the parsed Claims: a block of them is large)
            gone = amended.claims_of(names)
            for line, name in zip(block, names):
                if name in gone:
                    fixed_dropped += 1
                else:
                    new.write(line)
        with open(amended.fixed_path, "rb") as fixed:
            shutil.copyfileobj(fixed, new)
    os.replace(fixed_path + ".new", fixed_path)
    tally.merge(amended.tally)
    tally.merge(_taken_back(taken_back, amended.count, fixed_dropped, with_rows))


def _claim_name(claim: dict) -> str:
    return f"{claim.get('resourceType')}/{claim.get('id')}"


def chunks(items: Iterable, size: int = _BLOCK) -> Iterator[list]:
    """`items` in lists of `size` (the last one shorter); the batch's chunks for its workers too."""
    block: list = []
    for item in items:
        block.append(item)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def retraction(dropped: Sequence[tuple], claims: int, corrected: int) -> Tally:
    """The tally change that takes back the first review of `claims` amended claims (their outputs
    replaced by service.batch ``amended_outputs``): `dropped`, their own table rows taken out of the
    findings table, and `corrected`, how many corrected Claims were taken out of
    claims-corrected.ndjson. The table is the record of the first review: what it held of a claim
    is what :meth:`Tally.add_claim` counted. (:func:`finish_outputs` counts the same as it streams.)"""
    change = Tally()
    change.add_rows(dropped, -1)
    return _taken_back(change, claims, corrected, len({(r[SOURCE_FILE], r[SOURCE_LINE]) for r in dropped}))


def _taken_back(change: Tally, claims: int, corrected: int, with_rows: int) -> Tally:
    """`change` (the dropped rows counted with sign -1) with `claims` reviewed claims, `corrected`
    corrected Claims and `with_rows` claims with findings taken back."""
    change.reviewed -= claims
    change.corrected -= corrected
    change.with_findings -= with_rows
    return change


class StagedTable:
    """The findings table while the run writes it, chunk by chunk (:meth:`write` takes the tables
    of ``finding_rows`` as the workers send them: an Arrow record batch, or NDJSON bytes). NDJSON:
    the output file itself. Parquet: an uncompressed Arrow IPC stream in `workdir`, read back a
    batch at a time when :func:`write_table` writes findings.parquet from it at the end (reading
    back a staged Parquet file instead took ~45 MB more, Arrow's decoding buffers, and compressed
    the rows twice; memory-mapping the stream would count all its pages in the process's
    resident set, file-backed but growing with the input)."""

    def __init__(self, path: str, fmt: str, workdir: str) -> None:
        self.path, self.fmt = path, fmt  # the output's path and format
        self.staged = os.path.join(workdir, "findings.arrows") if fmt == "parquet" else path
        self._fh = open(self.staged, "wb")
        self._ipc = None
        if fmt == "parquet":
            import pyarrow as pa

            self._ipc = pa.ipc.new_stream(self._fh, SCHEMA)

    def write(self, part) -> None:
        if self._ipc is None:
            self._fh.write(part)
        elif part.num_rows:
            self._ipc.write_batch(part)

    def close(self) -> None:
        if self._ipc is not None:
            self._ipc.close()
            self._ipc = None
        self._fh.close()


def write_table(table: StagedTable, amended: Amended, taken_back: Tally) -> int:
    """Write the findings table from its staged copy (:class:`StagedTable`, closed): without the
    rows of the amended claims (read from (file, line)) that are not across claims, with the
    amended rows at the end; Parquet in row groups of about :data:`_BLOCK` rows. The rows taken out
    are counted into `taken_back` (sign -1), a block at a time; returns how many claims had rows
    taken out. An NDJSON table with no amended claim stays as written."""
    if table.fmt == "parquet":
        return _write_parquet(table, amended, taken_back)
    if not amended.count:
        return 0
    with_rows = 0
    new_path = table.path + ".new"
    with open(table.path, "rb") as old, open(new_path, "wb") as new:
        for block in chunks(old):
            rows = [loads(line) for line in block]
            keys = [source_key(r["source_file"], r["source_line"]) for r in rows]
            wanted = set(amended.amended_of(list(set(keys))))
            dropped, found = [], set()
            for line, row, key in zip(block, rows, keys):
                if row["across_claims"] or key not in wanted:
                    new.write(line)
                else:
                    dropped.append(tuple(row[name] for name in NAMES))
                    found.add(key)
            if dropped:
                taken_back.add_rows(dropped, -1)
                with_rows += amended.found(sorted(found))
        for part in amended.row_parts():
            new.write(part)
    os.replace(new_path, table.path)
    return with_rows


def _write_parquet(table: StagedTable, amended: Amended, taken_back: Tally) -> int:
    import pyarrow as pa
    import pyarrow.compute as pc

    with_rows = 0
    writer = ParquetRows(table.path)
    kept: list = []  # record batches, up to a row group

    def keep(batch) -> None:
        kept.append(batch)
        if sum(b.num_rows for b in kept) >= _BLOCK:
            flush()

    def flush() -> None:
        nonlocal kept
        if kept:
            writer.write(pa.Table.from_batches(kept, schema=SCHEMA).combine_chunks().to_batches()[0])
            kept = []

    with pa.OSFile(table.staged) as source:  # read, not mapped: see StagedTable
        for batch in pa.ipc.open_stream(source):
            if amended.count:
                key = pc.binary_join_element_wise(batch.column(SOURCE_FILE),
                                                  pc.cast(batch.column(SOURCE_LINE), pa.string()), "\n")
                wanted = amended.amended_of(pc.unique(key).to_pylist())
                if wanted:
                    drop = pc.and_(pc.is_in(key, value_set=pa.array(wanted, type=pa.string())),
                                   pc.invert(batch.column(ACROSS)))
                    gone = batch.filter(drop)
                    if gone.num_rows:
                        taken_back.add_rows(list(zip(*(column.to_pylist() for column in gone.columns))), -1)
                        with_rows += amended.found(pc.unique(key.filter(drop)).to_pylist())
                        batch = batch.filter(pc.invert(drop))
            keep(batch)
        for part in amended.row_parts():
            keep(part)
        flush()
    writer.close()
    return with_rows

"""Opening CMS reference files as rows of text cells, whatever their container.

A path may be a zip as downloaded from CMS (every .txt/.csv/.tsv/.xlsx member is read; PDFs and
read-me files are skipped), a gzip of a text table, a plain text table (tab or comma delimited),
or an XLSX workbook (first sheet, read with openpyxl). Every row comes with its line number in
its own file, so that bad input can be reported as ``file:line: problem``.

CMS quarterly PTP text files are latin-1 with CRLF line ends; other text tables are read as UTF-8,
and any byte that is not UTF-8 is decoded as latin-1 (see :func:`clean_text`).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import threading
import zipfile
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Callable, Iterator

TEXT_SUFFIXES = (".txt", ".csv", ".tsv")
TABLE_SUFFIXES = TEXT_SUFFIXES + (".xlsx",)
SNIFF_LINES = 20


class BadInput(Exception):
    """A reference file cannot be imported. Names the file and, when known, the line."""

    def __init__(self, file: str, line: int | None, message: str):
        super().__init__(message)
        self.file = file
        self.line = line
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class FileDigest:
    """sha256 of a file, computed in a background thread while the file is imported
    (hashlib releases the GIL on large blocks, so this costs no import time on two cores)."""

    def __init__(self, path: Path):
        self._value: str | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        try:
            self._value = sha256_of(path)
        except BaseException as exc:  # reported by hexdigest()
            self._error = exc

    def hexdigest(self) -> str:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clean_text(value: str) -> str:
    """Undo surrogate escapes: bytes that were not UTF-8 are taken as latin-1 (CMS files)."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("latin-1")


def cell_text(value) -> str:
    """An XLSX cell as the text a CMS text file would hold (dates as YYYYMMDD)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y%m%d")
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


class Rows:
    """An iterator of rows (lists of str) whose ``line_num`` is the line of the last row read."""

    line_num: int
    one_row_per_line: bool = False  # unquoted text: row i of a batch is line start + i
    reader = None

    def __iter__(self) -> "Rows":
        return self

    def __next__(self) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class Source:
    """One table to read: a file, or a member of a zip."""

    name: str  # display name: "file.zip!member.txt" or the file name
    path: Path  # the file on disk (the zip for members)
    member: str | None  # member name inside the zip
    digest: FileDigest  # sha256 of the file on disk
    open_rows: Callable[[str | None], tuple[Rows, Callable[[], None]]]
    head: list[list[str]]  # the first rows (for layout detection)
    text: bool  # a text table (latin-1 CMS layout is detected from its head)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()

    @property
    def file_name(self) -> str:
        return self.member or self.path.name


def _text_rows(raw: io.BufferedIOBase, name: str, encoding: str, delimiter: str,
               quoting: int) -> Rows:
    stream = io.TextIOWrapper(raw, encoding=encoding, errors="surrogateescape", newline="")
    reader = csv.reader(stream, delimiter=delimiter, quoting=quoting)
    rows = _wrap_csv(reader, name)
    rows.one_row_per_line = quoting == csv.QUOTE_NONE
    return rows


def _wrap_csv(reader, name: str) -> Rows:
    """csv.reader already has line_num; translate container errors into BadInput."""

    class _R(Rows):
        def __init__(self):
            self.line_num = 0
            self.reader = reader  # the csv reader itself, for batch reading (see read_batch)

        def __next__(self):
            try:
                row = next(reader)
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, csv.Error) as exc:
                raise BadInput(name, reader.line_num + 1,
                               f"unreadable or truncated file ({type(exc).__name__}: {exc})") from exc
            self.line_num = reader.line_num
            return row

    return _R()


class _XlsxRows(Rows):
    def __init__(self, rows_iter, name: str):
        self._it = rows_iter
        self._name = name
        self.line_num = 0

    def __next__(self) -> list[str]:
        try:
            row = next(self._it)
        except StopIteration:
            raise
        except Exception as exc:  # openpyxl raises many types on broken files
            raise BadInput(self._name, self.line_num + 1, f"unreadable workbook row ({exc})") from exc
        self.line_num += 1
        return [cell_text(v) for v in row]


def _delimiter(first_lines: list[str]) -> str:
    tabs = sum(ln.count("\t") for ln in first_lines)
    commas = sum(ln.count(",") for ln in first_lines)
    return "\t" if tabs >= commas and tabs > 0 else ","


def _sniff_text(opener: Callable[[], io.BufferedIOBase], name: str) -> tuple[str, str, int]:
    """Encoding, delimiter and quoting of a text table from its first lines."""
    head = b""
    try:
        with opener() as raw:
            while len(head) < 64 * 1024:
                chunk = raw.read(4096)
                if not chunk:
                    break
                head += chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        if not head:
            raise BadInput(name, 1, f"unreadable or truncated file ({type(exc).__name__}: {exc})") from exc
        # Truncated further on: the rows up to the break are readable, the loader names the line.
    if b"\x00" in head:
        raise BadInput(name, 1, "not a text table (binary content)")
    text = head.decode("latin-1")
    lines = text.splitlines()[:SNIFF_LINES]
    if not any(ln.strip() for ln in lines):
        raise BadInput(name, 1, "empty file")
    cms_layout = any("Column1/Column2" in ln.replace(" ", "") for ln in lines[:6])
    # CMS quarterly PTP text is latin-1. Anything else is read as UTF-8; a stray non-UTF-8
    # byte is kept as a surrogate escape and decoded as latin-1 per value (clean_text).
    encoding = "latin-1" if cms_layout else "utf-8"
    delimiter = _delimiter(lines)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    return encoding, delimiter, quoting


def _text_source(name: str, path: Path, member: str | None, sha: FileDigest,
                 opener: Callable[[], io.BufferedIOBase]) -> Source:
    encoding, delimiter, quoting = _sniff_text(opener, name)

    def open_rows(_: str | None = None):
        raw = opener()
        return _text_rows(raw, name, encoding, delimiter, quoting), raw.close

    rows, close = open_rows()
    head: list[list[str]] = []
    try:
        for row in rows:
            head.append(row)
            if len(head) >= SNIFF_LINES:
                break
    except BadInput:
        pass  # reported again, with its line, when the rows are read for real
    finally:
        close()
    return Source(name=name, path=path, member=member, digest=sha, open_rows=open_rows,
                  head=head, text=True)


def _xlsx_source(name: str, path: Path, member: str | None, sha: FileDigest,
                 opener: Callable[[], io.BufferedIOBase]) -> Source:
    import openpyxl

    def open_rows(_: str | None = None):
        raw = opener()
        data = io.BytesIO(raw.read()) if member else raw
        try:
            book = openpyxl.load_workbook(data, read_only=True, data_only=True)
        except Exception as exc:
            raw.close()
            raise BadInput(name, None, f"not a readable XLSX workbook ({type(exc).__name__}: {exc})") from exc
        sheet = book.worksheets[0]

        def close():
            book.close()
            raw.close()

        return _XlsxRows(sheet.iter_rows(values_only=True), name), close

    rows, close = open_rows()
    head = []
    try:
        for row in rows:
            head.append(row)
            if len(head) >= SNIFF_LINES:
                break
    finally:
        close()
    return Source(name=name, path=path, member=member, digest=sha, open_rows=open_rows,
                  head=head, text=False)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"PK\x03\x04"


def open_sources(path: str | Path) -> list[Source]:
    """The tables in `path` (a zip yields one source per table member)."""
    path = Path(path)
    display = path.name
    if not path.is_file():
        raise BadInput(display, None, "no such file")
    sha = FileDigest(path)
    lower = path.name.lower()
    if lower.endswith(".xlsx"):
        return [_xlsx_source(display, path, None, sha, lambda: open(path, "rb"))]
    if _is_zip(path):
        return _zip_sources(path, sha)
    if _is_gzip(path):
        # a C-level buffer in front of GzipFile: the csv reader then asks the Python-level
        # GzipFile for a chunk per megabyte instead of checking it once per line
        return [_text_source(display, path, None, sha,
                             lambda: io.BufferedReader(gzip.open(path, "rb"), buffer_size=1 << 20))]
    return [_text_source(display, path, None, sha, lambda: open(path, "rb"))]


def _zip_sources(path: Path, sha: FileDigest) -> list[Source]:
    try:
        archive = zipfile.ZipFile(path)
        names = [i.filename for i in archive.infolist() if not i.is_dir()]
        archive.close()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        salvaged = _truncated_zip_sources(path, sha)
        if salvaged:
            return salvaged
        raise BadInput(path.name, None, f"truncated or corrupt zip ({exc})") from exc
    tables = sorted(n for n in names if n.lower().endswith(TABLE_SUFFIXES)
                    and not Path(n).name.startswith((".", "~$")) and "__MACOSX" not in n
                    and "readme" not in Path(n).name.lower())
    if not tables:
        raise BadInput(path.name, None, "zip holds no .txt, .csv, .tsv or .xlsx table")
    out = []
    for member in tables:
        name = f"{path.name}!{member}"

        def opener(member=member, name=name):
            try:
                archive = zipfile.ZipFile(path)
                raw = archive.open(member)
            except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
                raise BadInput(name, None, f"truncated or corrupt zip ({exc})") from exc
            return io.BufferedReader(_ClosingMember(raw, archive))

        if member.lower().endswith(".xlsx"):
            out.append(_xlsx_source(name, path, member, sha, opener))
        else:
            out.append(_text_source(name, path, member, sha, opener))
    return out


class _ClosingMember(io.RawIOBase):
    """A zip member that also closes its archive."""

    def __init__(self, member, archive):
        self._member = member
        self._archive = archive

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._member.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        return self._member.read(size)

    def close(self) -> None:
        if not self.closed:
            self._member.close()
            self._archive.close()
        super().close()


def iter_rows(source: Source) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of every row of `source` (small tables; the PTP loader reads rows directly)."""
    rows, close = source.open_rows(None)
    try:
        for row in rows:
            yield rows.line_num, row
    finally:
        close()


class _LocalMemberStream(io.RawIOBase):
    """The first member of a zip whose central directory is missing (a truncated download),
    decompressed from its local header; raises EOFError where the data stops short."""

    def __init__(self, path: Path, offset: int, method: int):
        self._fh = open(path, "rb")
        self._fh.seek(offset)
        self._inflate = zlib.decompressobj(-15) if method == 8 else None
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._fh.read(1 << 16)
            if self._inflate is None:
                self._pending = chunk
                if not chunk:
                    return 0
                break
            if not chunk:
                if self._inflate.eof:
                    return 0
                raise EOFError("the zip is truncated: its data ends before the end of the member")
            self._pending = self._inflate.decompress(chunk)
            if self._inflate.eof:
                break
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _truncated_zip_sources(path: Path, sha: FileDigest) -> list[Source]:
    """Read the first member of a zip without central directory, so that the error can name
    the member and the line where its data stops."""
    import struct

    with open(path, "rb") as fh:
        header = fh.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            return []
        method = struct.unpack("<H", header[8:10])[0]
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        member = fh.read(name_len).decode("cp437", "replace")
    if method not in (0, 8) or not member.lower().endswith(TEXT_SUFFIXES):
        return []
    offset = 30 + name_len + extra_len
    name = f"{path.name}!{member}"

    def opener():
        return io.BufferedReader(_LocalMemberStream(path, offset, method))

    return [_text_source(name, path, member, sha, opener)]


def read_batch(rows: Rows, name: str, size: int) -> tuple[list[list[str]], range | list[int]]:
    """Up to `size` rows and their line numbers. Unquoted text tables are read straight from
    the csv reader (one row per line), which is what makes 2.5M-row imports fast."""
    if rows.one_row_per_line and rows.reader is not None:
        reader = rows.reader
        first = reader.line_num + 1
        try:
            batch = list(itertools.islice(reader, size))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, csv.Error) as exc:
            raise BadInput(name, reader.line_num + 1,
                           f"unreadable or truncated file ({type(exc).__name__}: {exc})") from exc
        rows.line_num = reader.line_num
        return batch, range(first, first + len(batch))
    batch, lines = [], []
    for row in rows:
        batch.append(row)
        lines.append(rows.line_num)
        if len(batch) >= size:
            break
    return batch, lines

"""What the payer batch reads: its INPUTs, as claims to review with their companions.

**Records.** A claim record is a Claim, an ExplanationOfBenefit, or a Bundle whose first entry is
one of them followed by its companions (:func:`split_record`). Error paths name the resource
(``ExplanationOfBenefit.item[0].servicedDate``, ``$.resourceType``), never a CDS Hooks context.

**Inputs** (:class:`BatchInput`; one or more, each plain or gzip, ``-`` for stdin):

- an NDJSON file of claim records (as before);
- a FHIR Bulk Data export: its directory, or its manifest (the ``$export`` status response: a JSON
  object with ``output[].type`` / ``output[].url``; an url is read as a file of the manifest's
  directory, by its last path segment), or a directory of per-type NDJSON files without a manifest;
- per-type NDJSON files given directly (``Encounter.ndjson``, ``Encounter.000.ndjson.gz``, ...).

A file's type is the manifest's ``type``, else the FHIR type its name starts with, else its first
record's resourceType. Files of Claims, ExplanationOfBenefits or Bundles are the claims to review
(read second); every other file is a companion file (read first), whose resources go into an
on-disk index (:class:`ExportIndex`: SQLite and a file of the bodies, in a temporary directory;
memory does not grow with the export). A record whose resourceType is not of its file's kind is a bad record.

**Join.** Each claim gets, from the index, what the claim-review service would fetch and search
(hooks/services/gather.py): the resources the claim references (``item.encounter``,
``item.locationReference``, ``facility``, ``procedure.procedureReference``,
``supportingInfo.valueReference``, ``insurance.coverage``), the Procedures, Observations,
DiagnosticReports and ImagingStudies of its encounters (their ``encounter``), the reports and studies
``basedOn`` the order of a 76000 Procedure, and the second-hop references (``Encounter.location``,
``Procedure.location`` / ``report``, ``DiagnosticReport.imagingStudy``, ``Coverage.payor``).
References may be relative (``Encounter/e1``), absolute (``https://x/fhir/Encounter/e1``) or
``urn:uuid:<id>`` (the resource of that id; e.g. Synthea's exports); the latter resolve through
the case's aliases. A reference to a type the export holds resources of, but not to that resource,
is *dangling*: the claim is a bad record naming the element. A type the export has no file of is
not checked (partial exports): the claim is reviewed without it.

**What a caller gets** (the iterator and record shapes ``service/batch.py`` and the Spark job
depend on)::

    with BatchInput(paths) as source:
        for item in source.records():     # in input order; companion files' bad records first
            if isinstance(item, InputError): ...   # item.as_dict() -> errors.ndjson
            else: ...                               # an InputRecord: review_input(item, reference, config)

For worker processes: ``source.raw()`` yields :class:`RawRecord` (file, line, bytes; cheap to
pickle) and :class:`InputError`; each worker opens ``Joiner(source.index_path)`` once and turns a
RawRecord into an InputRecord or an InputError with ``joiner.join(raw)``. ``source.raw(check=False)``
leaves the repeats check to the caller: ``joiner.join_identified(raw)`` also gives the claim's
identity, and ``source.admit(chunk, identities)``, called in input order, decides it (None: keep
the workers' outputs; else the chunk to review again). :func:`review_input`
turns an InputRecord into a :class:`Reviewed` (case, findings, use) or an InputError (an invalid
resource found while building the case).
"""
from __future__ import annotations

import gzip
import hashlib
import itertools
import os
import re
import secrets
import shutil
import sqlite3
import sys
import tempfile
import zlib
from collections import Counter, OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Callable, Iterable, Iterator, NamedTuple, Sequence

import orjson

from hooks import fhir_read as fr
from hooks.context import InvalidResource
from hooks.extract import bundle_aliases
from hooks.extract.bundle import split_claim_bundle
from hooks.extract.codes import procedure_code
from hooks.extract.eob import case_from_billing, use_of
from hooks.findings import Finding
from hooks.model import FLUORO, Case
from hooks.rules import evaluate
from nccidata.api import ReferenceData

from .jsonio import MAX_DEPTH, too_deep

# What a claim record may be: reviewed alone, or a Bundle whose first entry is one of the others.
RECORD_TYPES = ("Claim", "ExplanationOfBenefit", "Bundle")
CLAIM_TYPES = frozenset(RECORD_TYPES)
# The resource types whose `encounter` links them to a claim's encounters (the service's searches).
ENCOUNTER_LINKED = frozenset({"Procedure", "Observation", "DiagnosticReport", "ImagingStudy"})
BASED_ON_LINKED = frozenset({"DiagnosticReport", "ImagingStudy"})
DUPLICATE_COUNTS = ("claims_identical", "claims_conflicting", "companions_identical", "companions_conflicting")
MAX_HOPS = 3  # rounds of second-hop references followed from the companions
NDJSON_NAME = re.compile(r"\.(ndjson|jsonl)(\.gz)?$")  # the files of an export directory that are read
_TYPE_IN_NAME = re.compile(r"(?:\d+[._-])?([A-Z][A-Za-z]+)")
_UUID = "urn:uuid:"


# --- the shapes callers depend on --------------------------------------------------------------
class InputError(NamedTuple):
    """A record that could not be read or reviewed: where it is, the FHIR path, and why (the value
    itself is never repeated). ``claim``: the record was a claim to review (it counts among the
    claims in: claims in = reviewed + errors whose ``claim`` is true); false for a companion file's
    bad record or an unreadable file."""

    file: str  # the input file ("-": stdin)
    line: int | None  # 1-based line number in it; None for the file as a whole (e.g. a bad manifest)
    path: str  # FHIR path in the record: "ExplanationOfBenefit.item[0].servicedDate", "$" for the record
    reason: str  # what is wrong
    resource_type: str | None = None  # of the record, when known
    resource_id: str | None = None
    claim: bool = True

    def as_dict(self) -> dict:
        """The errors.ndjson record: {"file", "line", "path", "reason", "resourceType", "id", "claim"}."""
        return {"file": self.file, "line": self.line, "path": self.path, "reason": self.reason,
                "resourceType": self.resource_type, "id": self.resource_id, "claim": self.claim}


class RawRecord(NamedTuple):
    """A claim record as read, before parsing (what the reader hands to worker processes)."""

    file: str
    line: int
    data: bytes


class InputRecord(NamedTuple):
    """A claim to review: the Claim or ExplanationOfBenefit, its companions (its Bundle's entries
    and what the export join found) and the references they answer to besides "Type/id"
    ("urn:uuid:..."; hooks.extract.bundle_aliases)."""

    file: str
    line: int
    resource: dict
    companions: list[dict]
    aliases: dict[str, dict]


class Reviewed(NamedTuple):
    """A reviewed claim: its case (normalized lines; ``case.claim`` is the resource), its findings,
    and ``use``: Claim.use / ExplanationOfBenefit.use ("claim", "preauthorization": a prior
    authorization request such as a Da Vinci PAS Bundle's Claim, "predetermination"; None: absent)."""

    record: InputRecord
    case: Case
    findings: list[Finding]
    use: str | None


# --- one record ---------------------------------------------------------------------------------
def split_record(value: object) -> tuple[dict, list[dict]]:
    """(the Claim or ExplanationOfBenefit, its companions) of one claim record; raises
    InvalidResource naming the path in the record (its resourceType; "$" when that is not one of
    RECORD_TYPES)."""
    if not isinstance(value, dict):
        raise InvalidResource("$: record must be a JSON object (a Claim, an ExplanationOfBenefit or a "
                              "Bundle)", "$")
    rtype = value.get("resourceType")
    return split_claim_bundle(value, rtype if rtype in RECORD_TYPES else "$", RECORD_TYPES)


def _ident(value: object) -> tuple[str | None, str | None]:
    """(resourceType, id) of a record, where they are strings."""
    if not isinstance(value, dict):
        return None, None
    if value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        first = entries[0] if isinstance(entries, list) and entries and isinstance(entries[0], dict) else {}
        res = first.get("resource")
        if isinstance(res, dict):
            value = res
    rtype, rid = value.get("resourceType"), value.get("id")
    return (rtype if type(rtype) is str and len(rtype) <= 64 else None,
            rid if type(rid) is str and len(rid) <= 64 else None)


def review_input(record: InputRecord, reference: ReferenceData, config: dict) -> Reviewed | InputError:
    """Review one claim with the claim-review rules (hooks.extract case builders, hooks.rules); an
    invalid resource is an InputError naming its path."""
    try:
        use = use_of(record.resource)
        case = case_from_billing(record.resource, record.companions, reference, aliases=record.aliases)
        findings = evaluate(case, reference, config)
    except InvalidResource as exc:
        rtype, rid = _ident(record.resource)
        return InputError(record.file, record.line, exc.path, str(exc), rtype, rid)
    return Reviewed(record, case, findings, use)


# --- repeated resources ------------------------------------------------------------------------
def same_content(a: bytes, b: bytes) -> bool:
    """Whether two NDJSON records hold the same JSON value (the same bytes, or the same value
    written with other spacing or key order)."""
    return a == b or orjson.loads(a) == orjson.loads(b)


def content_digest(value: object) -> bytes:
    """A digest of a JSON value that does not depend on spacing or key order."""
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=16).digest()


def repeat_reason(key: str, first_file: str, first_line: int) -> str:
    """The reason of a conflicting repeat of `key` (the value is never repeated)."""
    return (f"{key} is also at {first_file} line {first_line} with other content (a repeated resource); "
            "the first is kept")


MAX_RECORD_BYTES = 64 * 1024 * 1024  # one NDJSON record (line): a longer one is read past, never held whole
# The most a claim's companions read from an export's index may hold: what a claim-first Bundle line
# (the claim with its companions) may hold (ExportIndex._read; past it the claim is an error record).
MAX_JOINED_BYTES = MAX_RECORD_BYTES
OVERSIZED = b"\x00oversized\x00"  # what numbered_lines gives for such a line (parse_record refuses it)
DAMAGED = b"\x00damaged\x00"  # what numbered_lines gives where a gzip file cannot be read on (its last line)


class BadRecord(ValueError):
    """A line that is not a JSON value the batch reads (:func:`parse_record`); its text is the
    reason an error record gives, at path "$"."""


def parse_record(data: bytes) -> object:
    """The JSON value of one NDJSON record. Raises BadRecord when it is not JSON, or nests arrays
    and objects more than MAX_DEPTH deep (service/jsonio.py, the limit of the services' request
    bodies: no FHIR resource comes near it, and deeper values would exceed the recursion limits
    of what reads and writes them again, e.g. orjson's 254 levels when a digest or a stored copy
    is written), or when it is longer than MAX_RECORD_BYTES (:data:`OVERSIZED`: not read)."""
    if data == OVERSIZED:
        raise BadRecord(f"a record is at most {MAX_RECORD_BYTES >> 20} MiB (this line is longer; not read)")
    if data == DAMAGED:
        raise BadRecord("the gzip file is cut short or damaged here: this line and the rest of the file "
                        "could not be read (decompress it to see where; download or export it again)")
    if too_deep(data):
        raise BadRecord(f"nests arrays and objects more than {MAX_DEPTH} deep")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    # The reason is the one for the line without its end, whoever read it (Spark gives lines without):
    # a line cut inside a string then ends there ("unexpected end of data"), not at a control character.
    try:
        return orjson.loads(data.rstrip(b"\r\n"))
    except orjson.JSONDecodeError as exc:
        raise BadRecord(f"not valid JSON: {exc}") from None


def claim_identity(data: bytes) -> tuple[str, str, bytes] | None:
    """(type, id, :func:`content_digest`) of a claim record (a Claim or ExplanationOfBenefit, alone or
    first in its Bundle) with an id; None for any other line (its review says what is wrong)."""
    try:
        value = parse_record(data)
    except BadRecord:
        return None
    return identity_of(value)


def identity_of(value: object) -> tuple[str, str, bytes] | None:
    """:func:`claim_identity` of a record already parsed."""
    rtype, rid = _ident(value)
    if rtype not in ("Claim", "ExplanationOfBenefit") or not rid:
        return None
    return rtype, rid, content_digest(value)


class ClaimsSeen:
    """The claims read so far, by "Type/id", on disk (SQLite: memory does not grow with the
    input): :meth:`check` says whether a claim record is the first of its "Type/id", an identical
    repeat (skipped) or a conflicting one (an error)."""

    def __init__(self, path: str) -> None:
        # made by the reader (in a pool's task thread, service.batch), read by admit() in the main one
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-8192;"
                              "CREATE TABLE claims (key TEXT PRIMARY KEY, file TEXT NOT NULL, line INTEGER NOT "
                              "NULL, digest BLOB NOT NULL) WITHOUT ROWID; BEGIN")

    def check(self, raw: RawRecord) -> tuple[str, str | None, str | None, tuple[str, int] | None]:
        """("first" | "identical" | "conflicting", type, id, (file, line) of the first); a record
        without a readable Claim / ExplanationOfBenefit id is "first" (its review says what is wrong)."""
        return self.admit([(raw.file, raw.line, claim_identity(raw.data))])[0]

    def admit(self, claims: Sequence[tuple[str, int, tuple[str, str, bytes] | None]]
              ) -> list[tuple[str, str | None, str | None, tuple[str, int] | None]]:
        """:meth:`check` of (file, line, :func:`claim_identity`) triples, in their order: one
        statement for all when none is a repeat (the common case)."""
        known = [(f"{c[2][0]}/{c[2][1]}", c[0], c[1], c[2][2]) for c in claims if c[2] is not None]
        before = self.db.total_changes
        self.db.executemany("INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?)", known)
        every_first = self.db.total_changes - before == len(known)
        out = []
        for file, line, identity in claims:
            if identity is None:
                out.append(("first", None, None, None))
                continue
            rtype, rid, digest = identity
            if every_first:
                out.append(("first", rtype, rid, None))
                continue
            first_file, first_line, first = self.db.execute(
                "SELECT file, line, digest FROM claims WHERE key = ?", (f"{rtype}/{rid}",)).fetchone()
            if (first_file, first_line) == (file, line):
                out.append(("first", rtype, rid, None))
            else:
                out.append(("identical" if first == digest else "conflicting", rtype, rid, (first_file, first_line)))
        return out

    def close(self) -> None:
        self.db.close()


# --- files ---------------------------------------------------------------------------------------
GZIP_MAGIC = b"\x1f\x8b"  # the first two bytes of a gzip file


def open_input(path: str) -> IO[bytes]:
    """A plain or gzip file (by its first two bytes), or stdin for "-"."""
    if path == "-":
        stream = sys.stdin.buffer
        head = stream.peek(2)[:2] if hasattr(stream, "peek") else b""
        return gzip.GzipFile(fileobj=stream) if head == GZIP_MAGIC else stream
    fh = open(path, "rb")
    if fh.read(2) == GZIP_MAGIC:
        fh.seek(0)
        return gzip.GzipFile(fileobj=fh)  # type: ignore[return-value]
    fh.seek(0)
    return fh


def bounded_lines(stream: IO[bytes]) -> Iterator[bytes]:
    """The lines of `stream`, each read with at most MAX_RECORD_BYTES (+ its newline) in memory: a
    longer line is read past a block at a time and given as :data:`OVERSIZED`. Where a gzip stream
    cannot be read on (cut short, corrupt data, a wrong checksum) the last line given is
    :data:`DAMAGED`: what was read before it stands, the rest of the file is lost."""
    try:
        while True:
            line = stream.readline(MAX_RECORD_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_RECORD_BYTES and not line.endswith(b"\n"):
                while True:
                    rest = stream.readline(1 << 20)
                    if not rest or rest.endswith(b"\n"):
                        break
                line = OVERSIZED
            yield line
    except (EOFError, gzip.BadGzipFile, zlib.error):
        yield DAMAGED


def numbered_lines(path: str, check: bool = False) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of the non-blank lines of a plain or gzip file (a line longer
    than MAX_RECORD_BYTES: :data:`OVERSIZED`, see :func:`bounded_lines`); `check`: raise
    NotNdjson (naming the file) when it is pretty-printed JSON (:func:`ndjson_lines`)."""
    stream = open_input(path)
    try:
        lines: Iterable[bytes] = bounded_lines(stream)
        if check:
            try:
                lines = ndjson_lines(lines)
            except NotNdjson as exc:
                raise NotNdjson(f"{path}: {exc}") from None
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


class NotNdjson(ValueError):
    """The input is one JSON document spread over lines (pretty-printed), not NDJSON."""


def _parses(line: bytes) -> bool:
    try:
        orjson.loads(line.strip())
    except Exception:  # orjson.JSONDecodeError
        return False
    return True


def ndjson_lines(stream: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of `stream`, after checking that its first record is on one line: input whose
    first two non-blank lines are both not JSON, the first opening an object or array, is
    pretty-printed JSON (raises NotNdjson). A single bad line is left to its own error record."""
    head: list[bytes] = []
    lines = iter(stream)
    for line in lines:
        head.append(line)
        if sum(1 for h in head if h.strip()) == 2:
            break
    records = [h for h in head if h.strip()]
    if (len(records) == 2 and records[0].lstrip()[:1] in (b"{", b"[") and records[1] not in (OVERSIZED, DAMAGED)
            and not _parses(records[0]) and not _parses(records[1])):
        raise NotNdjson("the input must be NDJSON, one Claim or Bundle per line; its first "
                        "record spans several lines (pretty-printed JSON?). Convert it with "
                        "`jq -c . FILE` (or `jq -c '.[]' FILE` for an array)")
    return itertools.chain(head, lines)


@dataclass
class InputFile:
    path: str
    kind: str | None  # the file's resource type (manifest type, name, else its first record's); None: unknown yet
    claims: bool  # a file of claim records (Claim, ExplanationOfBenefit, Bundle)


class UsageError(ValueError):
    """An INPUT that cannot be used at all (missing, not a file or directory, a manifest that is not
    one): the CLI says so and exits 2."""


def _type_from_name(name: str) -> str | None:
    m = _TYPE_IN_NAME.match(os.path.basename(name))
    return m.group(1) if m else None


def record_type(line: bytes | str | None) -> str | None:
    """The resourceType of one NDJSON record (None: not JSON, not an object, or none)."""
    try:
        value = orjson.loads(line) if line is not None else None
    except orjson.JSONDecodeError:
        return None
    rtype = value.get("resourceType") if isinstance(value, dict) else None
    return rtype if type(rtype) is str else None


def _first_type(path: str) -> str | None:
    for _n, line in numbered_lines(path):
        return record_type(line)
    return None


def manifest_outputs(manifest: object, where: str) -> list[tuple[str, str]]:
    """(type, file name) of each ``output[]`` of a Bulk Data manifest (its url read as a file of the
    manifest's directory, by the url's last path segment); `where` names the manifest in the
    UsageError raised when it is not one."""
    outputs = manifest.get("output") if isinstance(manifest, dict) else None
    if not isinstance(outputs, list):
        raise UsageError(f"{where}: a Bulk Data manifest has an `output` array (of {{type, url}})")
    found = []
    for i, out in enumerate(outputs):
        rtype = out.get("type") if isinstance(out, dict) else None
        url = out.get("url") if isinstance(out, dict) else None
        if type(rtype) is not str or type(url) is not str or not url.strip():
            raise UsageError(f"{where}: output[{i}] must have a `type` and a `url`")
        found.append((rtype, url.rstrip("/").rsplit("/", 1)[-1]))
    return found


def _manifest_files(path: str) -> list[InputFile]:
    """The files of a Bulk Data manifest (``output[].type`` and ``url``)."""
    try:
        with open(path, "rb") as fh:
            manifest = orjson.loads(fh.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"{path}: not a readable JSON manifest ({exc.__class__.__name__})") from None
    base = os.path.dirname(os.path.abspath(path))
    files = []
    for i, (rtype, name) in enumerate(manifest_outputs(manifest, path)):
        local = os.path.join(base, name)
        if not os.path.isfile(local):
            raise UsageError(f"{path}: output[{i}].url names a file that is not in {base}")
        files.append(InputFile(local, rtype, rtype in CLAIM_TYPES))
    return files


def is_manifest(path: str) -> bool:
    if not path.endswith(".json"):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        value = orjson.loads(head)
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(value, dict) and "output" in value and "resourceType" not in value


def input_files(paths: Sequence[str]) -> list[InputFile]:
    """The files of the INPUTs, each with its kind (see the module docstring). Raises UsageError."""
    files: list[InputFile] = []
    for path in paths:
        if path == "-":
            files.append(InputFile("-", None, True))
        elif os.path.isdir(path):
            names = sorted(os.listdir(path))
            manifests = [n for n in names if is_manifest(os.path.join(path, n))]
            if manifests:
                for n in manifests:
                    files += _manifest_files(os.path.join(path, n))
            else:
                for n in names:
                    full = os.path.join(path, n)
                    if os.path.isfile(full) and NDJSON_NAME.search(n):
                        files.append(classified(full))
        elif os.path.isfile(path):
            files += _manifest_files(path) if is_manifest(path) else [classified(path)]
        else:
            raise UsageError(f"no such input file or directory: {path}")
    return files


def classified(path: str, first_type: Callable[[], str | None] | None = None) -> InputFile:
    """A file by its name's FHIR type, else its first record's (`first_type`: how to read that
    type, for files not on the local disk)."""
    named = _type_from_name(path)
    if named in CLAIM_TYPES or named in _companion_names():
        return InputFile(path, named, named in CLAIM_TYPES)
    kind = first_type() if first_type is not None else _first_type(path)
    return InputFile(path, kind, kind is None or kind in CLAIM_TYPES)


@lru_cache(maxsize=1)
def _companion_names() -> frozenset[str]:
    """FHIR types a per-type export file may be named after (the companions the join reads)."""
    return frozenset({"Encounter", "Procedure", "Observation", "DiagnosticReport", "Location", "Coverage",
                      "Patient", "ImagingStudy", "Organization", "Practitioner", "PractitionerRole",
                      "ServiceRequest", "Condition", "Media", "DocumentReference"})


# --- the on-disk index of the companions ------------------------------------------------------------
# Each companion's body is stored once, in a flat file beside the index (a store: IndexShard), written
# by the process that parsed its line (a worker of the load, or the loading process: the bodies never
# cross a pipe), a part at a time in one write (as SQLite rows, each body cost ~3 us to write, more
# than the rest of its indexing); its row too goes into that process's shard, copied into the index
# in SQLite as each part comes in (no row crosses a pipe either: receiving and binding them here cost
# ~2.9 us a row, the copy ~0.4; the loading process's own rows go straight in); `resources` names
# each by (store, offset, size), by "Type/id", with
# the encounter it is a member of: an Encounter's own id, or the encounter the `encounter` of a
# linked resource names (ENCOUNTER_LINKED). The index by encounter, made after the load, holds each
# encounter's members in reading order (file, line) with their places: what the join reads for an
# encounter, in one statement (ExportIndex.encounter).
# `resources` rows have their reading order as `id` (LINE_BITS); its indexes are made once the rows are in,
# one sort each: inserting 1.3 million rows into a B-tree by their random "Type/id" took ~4x as long
# as appending them and sorting once (SQLite, 16 MiB page cache), more as the export grows.
# the rows of the index, as each shard (IndexShard) holds them too
_ROW_TABLES = """
CREATE TABLE resources (id INTEGER PRIMARY KEY, key TEXT NOT NULL, rid TEXT NOT NULL, rtype TEXT NOT NULL,
                        file INTEGER NOT NULL, line INTEGER NOT NULL, store INTEGER NOT NULL, offset INTEGER NOT NULL,
                        size INTEGER NOT NULL, encounter TEXT);
CREATE TABLE based_on (target_id TEXT NOT NULL, target_type TEXT, source TEXT NOT NULL, row INTEGER NOT NULL);
"""
_SCHEMA = _ROW_TABLES + """
CREATE TABLE stores (store INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE files (file INTEGER PRIMARY KEY, path TEXT NOT NULL);
"""
# the index by "Type/id", made first: the repeats are found with it (ExportIndex._drop_repeats)
_BY_KEY = "CREATE INDEX resources_by_key ON resources (key, store, offset, size)"
# the others, once the repeats are gone; based_on_by_target last: readers check for it
# (ExportIndex.__init__)
_INDEXES = """
CREATE INDEX resources_by_id ON resources (rid, key, store, offset, size);
CREATE INDEX resources_by_encounter ON resources (encounter, file, line, rtype, store, offset, size)
    WHERE encounter IS NOT NULL;
CREATE INDEX based_on_by_target ON based_on (target_id, row);
"""
_PAGE_SIZE = 16384  # the load's appends and B-tree inserts ~2x faster than with 4 KiB pages
# how the index and each shard are written: no journal, no sync (a failed load leaves nothing to keep)
_WRITING = f"PRAGMA page_size={_PAGE_SIZE}; PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
INDEX_NAME = "index.sqlite"  # BatchInput's index, in its temporary folder
BODIES_SUFFIX = ".bodies-"  # a store beside the index: INDEX + BODIES_SUFFIX + the writer's pid and number
ROWS_SUFFIX = ".rows-"  # a shard's rows while the index loads (IndexShard): merged, then removed
_FLUSH_ROWS = 1000  # companions read between two writes to the index


def _target(ref: str) -> tuple[str, str | None] | None:
    """(id, type or None) a reference points at: "Type/id" (absolute URLs reduced), "urn:uuid:id"."""
    if ref.startswith(_UUID):
        return ref[len(_UUID):], None
    if ref.count("/") == 1:
        rtype, rid = ref.split("/")
        return rid, rtype
    return None


def _target_of(node: object) -> tuple[str, str | None] | None:
    """:func:`_target` of a Reference element; None when it is unreadable (the case builder
    reports that when it reads the resource)."""
    ref = node.get("reference") if isinstance(node, dict) else None
    if type(ref) is str and ref.strip():
        return _target(fr.normalize_reference(ref.strip()))
    return None


def _encounter_of(res: dict, rtype: str, rid: str) -> str | None:
    """The id of the encounter row a companion is stored in: an Encounter's own; for the
    encounter-linked types, the encounter their `encounter` names ("Encounter/id", absolute, or
    "urn:uuid:id"; not a reference to another type); else None."""
    if rtype == "Encounter":
        return rid
    if rtype in ENCOUNTER_LINKED:
        node = res.get("encounter")
        ref = node.get("reference") if type(node) is dict else None
        if type(ref) is str and ref.startswith("Encounter/") and ref.count("/") == 1 and ref.strip() == ref:
            return ref[10:]  # hot path: what _target_of gives for "Encounter/id"
        t = _target_of(node)
        if t is not None and t[1] in (None, "Encounter"):
            return t[0]
    return None


class IndexedPart(NamedTuple):
    """What a run of companion lines added to the index (:func:`index_records`): the bad records;
    the shard of the process that parsed them (:class:`IndexShard`: its number, its bodies file's
    name, its rows file's name); and where in that shard its rows are (the first and last ``id`` of
    ``resources``, the first and last rowid of ``based_on``; empty: first > last), which
    :meth:`ExportIndex.load` copies into the index as the part comes in."""
    errors: list[InputError]
    shard: tuple[int, str, str]
    rows: tuple[int, int]
    links: tuple[int, int]


# A row's id in ``resources``: its file's number and its line, ``file << LINE_BITS | line``, so that
# id order is reading order whichever process parsed the line and however the shards are merged.
LINE_BITS = 40


class IndexShard:
    """What one process (a worker of the load, or the loading process) writes of an index: the
    bodies of the companions it parsed, appended to a file of its own a part at a time (`writev`:
    one call, no joined copy), and their rows and basedOn links, committed a part at a time: a
    worker's in a SQLite file of its own, which :meth:`ExportIndex.load` copies into the index in
    SQLite as each part comes in (the loading process binds none of their rows) and removes at the
    end; the loading process's own (`index_db`, the index's connection: gzip files, stdin, a run
    without workers) straight into the index in one transaction, committed only before a worker's
    part is copied (a commit a part cost ~4% of a load in one process), nothing to copy
    (``rows_name`` empty). Numbered at random (a worker's pid may be reused by a later one); the
    index names its bodies file in ``stores``."""

    def __init__(self, index_path: str, *, index_db: sqlite3.Connection | None = None) -> None:
        self.pid = os.getpid()
        self.number = secrets.randbits(62)
        folder, base = os.path.split(index_path)
        self.name = f"{base}{BODIES_SUFFIX}{self.pid}-{self.number:x}"
        self.fd = os.open(os.path.join(folder, self.name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self.end = 0
        self.links = 0  # the basedOn links written: the rowid of the last
        if index_db is not None:
            self.rows_name, self.db = "", index_db
            return
        self.rows_name = f"{base}{ROWS_SUFFIX}{self.pid}-{self.number:x}"
        rows_path = os.path.join(folder, self.rows_name)
        if os.path.exists(rows_path):
            raise FileExistsError(rows_path)
        self.db = sqlite3.connect(rows_path, isolation_level=None, check_same_thread=False)
        self.db.executescript(_WRITING + _ROW_TABLES)

    def append(self, bodies: list[bytes]) -> int:
        """Write `bodies` one after the other; returns the offset of the first."""
        start, self.end = self.end, _write_all(self.fd, bodies)
        return start

    def write(self, rows: list[list], based: list[tuple]) -> tuple[int, int]:
        """Commit a part's rows (as ``resources`` takes them, id first) and basedOn links; returns
        the rowids of the first and last link (none to copy: first > last, when the rows are in the
        index already)."""
        db = self.db
        if not self.rows_name:  # the index's own connection (ExportIndex._merge commits)
            if not db.in_transaction:
                db.execute("BEGIN")
            db.executemany("INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO based_on VALUES (?, ?, ?, ?)", based)
            return 1, 0
        db.execute("BEGIN")
        db.executemany("INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.executemany("INSERT INTO based_on (rowid, target_id, target_type, source, row) VALUES (?, ?, ?, ?, ?)",
                       [(self.links + i, *b) for i, b in enumerate(based, start=1)])
        db.execute("COMMIT")
        first, self.links = self.links + 1, self.links + len(based)
        return first, self.links

    def close(self) -> None:
        os.close(self.fd)
        if self.rows_name:  # (the index's connection is the index's to close)
            self.db.close()


_shards: dict[str, IndexShard] = {}  # this process's shard of each index it parses lines for
# (index path, pid) -> the index's connection, of the indexes this process loads (ExportIndex.load)
_loading: dict[tuple[str, int], sqlite3.Connection] = {}


def index_shard(index_path: str) -> IndexShard:
    """This process's :class:`IndexShard` of the index at `index_path` (made on first use; its rows
    straight into the index when this process loads it)."""
    shard = _shards.get(index_path)
    if shard is None or shard.pid != os.getpid():
        shard = _shards[index_path] = IndexShard(index_path, index_db=_loading.get((index_path, os.getpid())))
    return shard


def close_shard(index_path: str) -> None:
    """Close this process's shard of the index at `index_path`, if it has one."""
    shard = _shards.pop(index_path, None)
    if shard is not None and shard.pid == os.getpid():
        shard.close()


def index_records(number: int, f: InputFile, lines: Iterable[tuple[int, bytes]], index_path: str) -> IndexedPart:
    """The index rows of (line number, line) records of companion file number `number`, written
    with their bodies to this process's shard of the index at `index_path` (the per-record half of
    :meth:`ExportIndex.load`; the repeats are found once every shard is merged,
    :meth:`ExportIndex._drop_repeats`)."""
    shard = index_shard(index_path)
    errors: list[InputError] = []
    rows: list[list] = []
    based: list[tuple] = []
    bodies: list[bytes] = []
    file_bits = number << LINE_BITS
    for line, data in lines:
        try:
            res = parse_record(data)
        except BadRecord as exc:
            errors.append(InputError(f.path, line, "$", str(exc), claim=False))
            continue
        rtype, rid = _ident(res)
        if not isinstance(res, dict) or rtype is None:
            errors.append(InputError(f.path, line, "$.resourceType", "a FHIR resource has a resourceType",
                                     claim=False))
            continue
        if rtype in CLAIM_TYPES or (f.kind is not None and rtype != f.kind):
            errors.append(InputError(f.path, line, f"{rtype}.resourceType" if rtype in _companion_names()
                                     or rtype in CLAIM_TYPES else "$.resourceType",
                                     f"a file of {f.kind} resources holds another type", rtype, rid, claim=False))
            continue
        if rid is None or not rid.strip():
            errors.append(InputError(f.path, line, f"{rtype}.id", "a resource in a Bulk Data export has an id "
                                     "(references name it)", rtype, claim=False))
            continue
        key = f"{rtype}/{rid}"
        body = data.strip()
        bodies.append(body)
        row_id = file_bits | line
        rows.append([row_id, key, rid, rtype, number, line, shard.number, 0, len(body), _encounter_of(res, rtype, rid)])
        if rtype in BASED_ON_LINKED and isinstance(res.get("basedOn"), list):
            for node in res["basedOn"]:
                t = _target_of(node)
                if t is not None:
                    based.append((t[0], t[1], key, row_id))
    offset = shard.append(bodies)
    for row in rows:  # each body's place in the store
        row[7] = offset
        offset += row[8]
    links = shard.write(rows, based)
    span = (rows[0][0], rows[-1][0]) if rows else (1, 0)
    return IndexedPart(errors, (shard.number, shard.name, shard.rows_name), span, links)


_RANGE_BYTES = 1 << 20  # a task of the load: the lines of ~1 MiB of a plain companion file


def line_ranges(path: str, size: int | None = None) -> Iterator[tuple[int, int, int]]:
    """(offset, length, number of its first line) of consecutive runs of whole lines of a plain
    file, each about `size` bytes (default _RANGE_BYTES; longer where a line is), covering the file."""
    size = size or _RANGE_BYTES
    with open(path, "rb") as fh:
        start, first, pos = 0, 1, 0
        while block := fh.read(size):
            cut = block.rfind(b"\n")
            if cut >= 0:
                yield start, pos + cut + 1 - start, first
                first += block.count(b"\n")  # the block's bytes after `cut` hold no newline
                start = pos + cut + 1
            pos += len(block)
        if pos > start:
            yield start, pos - start, first


def range_lines(path: str, offset: int, length: int, first: int) -> Iterator[tuple[int, bytes]]:
    """:func:`numbered_lines` of the run of lines at `offset` (:func:`line_ranges`)."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        end = offset + length
        for number, line in enumerate(bounded_lines(fh), start=first):
            if line.strip():
                yield number, line
            if fh.tell() >= end:
                return


def index_range(task: tuple[str, int, InputFile, int, int, int]) -> IndexedPart:
    """:func:`index_records` of one range of lines (index path, file number, file, offset, length,
    first line): a task of the load, run where `map_parts` runs it."""
    index_path, number, f, offset, length, first = task
    return index_records(number, f, range_lines(f.path, offset, length, first), index_path)


PartMap = Callable[[Callable[[tuple], IndexedPart], Iterable[tuple]], Iterable[IndexedPart]]


def _plain(path: str) -> bool:
    """A file on disk that is not gzip (its lines can be read from any offset)."""
    if path == "-" or not os.path.isfile(path):
        return False
    with open(path, "rb") as fh:
        return fh.read(2) != GZIP_MAGIC


def _indexed_parts(files: Sequence[InputFile], map_parts: PartMap | None, index_path: str) -> Iterator[IndexedPart]:
    """:func:`index_records` of every line of `files`, in reading order: with `map_parts`, the
    ranges of consecutive plain files in one call of it; else (and for gzip files and stdin) here,
    _FLUSH_ROWS lines a part."""
    numbered = list(enumerate(files))
    i = 0
    while i < len(numbered):
        number, f = numbered[i]
        if map_parts is not None and _plain(f.path):
            j = i
            while j < len(numbered) and _plain(numbered[j][1].path):
                j += 1
            tasks = ((index_path, n, g, *r) for n, g in numbered[i:j] for r in line_ranges(g.path))
            yield from map_parts(index_range, tasks)
            i = j
            continue
        lines = numbered_lines(f.path)
        while (first := next(lines, None)) is not None:  # the lines read as they are indexed, not held
            yield index_records(number, f, itertools.chain((first,), itertools.islice(lines, _FLUSH_ROWS - 1)),
                                index_path)
        i += 1


_IOV_MAX = 1024  # buffers one writev takes (Linux's IOV_MAX)


def _write_all(fd: int, buffers: list[bytes]) -> int:
    """Write `buffers` one after the other at the end of `fd` (writev: not joined into a copy
    first); returns the file's new size."""
    for start in range(0, len(buffers), _IOV_MAX):
        batch = buffers[start:start + _IOV_MAX]
        left = sum(map(len, batch)) - os.writev(fd, batch)
        if left:  # the system wrote less (rare for a file): the rest, a buffer at a time
            rest = b"".join(batch)[-left:]
            while rest:
                rest = rest[os.write(fd, rest):]
    return os.lseek(fd, 0, os.SEEK_CUR)


class ExportIndex:
    """The companion resources of the inputs on disk (SQLite, the bodies in files beside it):
    by "Type/id", by id (for urn:uuid references), by encounter id the Encounter and its linked
    resources (what the join reads for an encounter in one statement, :meth:`encounter`), and by
    basedOn. Each body is stored once. Written once by :meth:`load`, then read (by any number of
    processes); its page cache is bounded."""

    CACHE_KIB = 16 * 1024  # SQLite page cache per connection

    def __init__(self, path: str, *, create: bool = False) -> None:
        self.path = path
        if create:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.executescript(_WRITING + _SCHEMA)
        else:
            # immutable: written once before any reader opens it, so no locks and no change checks on
            # each statement (half a lookup's cost when measured: 5.3 against 11 us for a resource,
            # best of 3, 5,000 of a 20,000-claim sample export)
            self.db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None,
                                      check_same_thread=False)
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'based_on_by_target'").fetchone() is None:
                self.db.close()  # its last index, made when the load ends
                raise RuntimeError(f"{path}: the export index is read before its load ended")
        self.db.execute(f"PRAGMA cache_size=-{self.CACHE_KIB}")
        self._types: frozenset[str] | None = None
        self._files: dict[int, str] | None = None
        self.duplicates: Counter[str] = Counter()  # repeated "Type/id"s: see load()
        self._fds: dict[int, int] = {}  # each store's file, opened to read on first use
        self._cache: OrderedDict[str, dict | None] = OrderedDict()  # get(): shared Locations, Organizations, ...
        self.read_bytes = 0  # the bodies read since the reader last set it to 0 (a join: Joiner)

    def close(self) -> None:
        self.db.close()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, store: int) -> int:
        fd = self._fds.get(store)
        if fd is None:
            (name,) = self.db.execute("SELECT name FROM stores WHERE store = ?", (store,)).fetchone()
            fd = self._fds[store] = os.open(os.path.join(os.path.dirname(self.path), name), os.O_RDONLY)
        return fd

    def _body(self, store: int, offset: int, size: int) -> bytes:
        """The body stored at `offset` of a store's file."""
        return os.pread(self._fd(store), size, offset)

    def load(self, files: Sequence[InputFile], map_parts: PartMap | None = None) -> Iterator[InputError]:
        """Index every record of the companion `files`; yields the bad ones (broken JSON, no
        resourceType or id, a record of another kind than its file's, a conflicting repeat). A
        repeated "Type/id" keeps its first record: an identical repeat (the same JSON value) is
        counted in ``duplicates["companions_identical"]``, one with other content is an error
        naming both places (``duplicates["companions_conflicting"]``). `map_parts` (an ordered,
        bounded map, e.g. over a process pool): where the records of plain files are read and
        parsed, a range of lines a task (:func:`index_range`), each process into its own shard;
        this process merges the shards (:meth:`_merge`), and as a row's id is its reading order,
        what is kept is the same."""
        db = self.db
        db.executemany("INSERT INTO files VALUES (?, ?)", enumerate(f.path for f in files))
        shards: dict[int, str] = {}  # the rows file of each shard the parts came from ("": the index)
        loading = (self.path, os.getpid())
        _loading[loading] = db
        try:
            for part in _indexed_parts(files, map_parts, self.path):
                yield from part.errors
                self._merge(part, shards)
        finally:
            _loading.pop(loading, None)
            close_shard(self.path)  # this process's (the workers' close as they exit)
            folder = os.path.dirname(self.path)
            for rows in filter(None, shards.values()):
                os.remove(os.path.join(folder, rows))
        if not db.in_transaction:  # (this process's own rows: in one still open)
            db.execute("BEGIN")
        db.execute(_BY_KEY)
        yield from self._drop_repeats(files)
        db.execute("COMMIT")
        db.executescript(_INDEXES)

    def _merge(self, part: IndexedPart, shards: dict[int, str]) -> None:
        """Copy a part's rows and basedOn links from its shard into the index (in SQLite, outside a
        transaction: SQLite attaches no file inside one; as the parts come in, in reading order:
        appended); a shard first seen: its bodies file named in ``stores``, its rows file kept in
        `shards` by its number (removed once the load ends)."""
        db = self.db
        number, bodies, rows = part.shard
        if number not in shards:
            db.execute("INSERT INTO stores VALUES (?, ?)", (number, bodies))
            shards[number] = rows
        if not rows or part.rows[0] > part.rows[1]:  # (rows written by this process: in the index)
            return
        if db.in_transaction:  # this process's own rows so far
            db.execute("COMMIT")
        db.execute("ATTACH DATABASE ? AS shard", (os.path.join(os.path.dirname(self.path), rows),))
        try:
            db.execute("BEGIN")
            db.execute("INSERT INTO resources SELECT * FROM shard.resources WHERE id BETWEEN ? AND ?", part.rows)
            db.execute("INSERT INTO based_on (target_id, target_type, source, row) SELECT target_id, target_type, "
                       "source, row FROM shard.based_on WHERE rowid BETWEEN ? AND ?", part.links)
            db.execute("COMMIT")
        finally:
            db.execute("DETACH DATABASE shard")

    def _drop_repeats(self, files: Sequence[InputFile]) -> Iterator[InputError]:
        """Leave out every repeat of a "Type/id" but its first record (see :meth:`load`): identical
        ones counted, conflicting ones yielded as errors in reading order; their rows and basedOn
        links deleted (their bodies stay in the file, never read). Memory: one key's rows at a time."""
        db = self.db
        db.execute("CREATE TEMP TABLE repeats (id INTEGER PRIMARY KEY, first INTEGER NOT NULL, same INTEGER NOT NULL)")
        for (key,) in db.execute("SELECT key FROM resources GROUP BY key HAVING count(*) > 1"):
            (first, *place), *later = db.execute(
                "SELECT id, store, offset, size FROM resources WHERE key = ? ORDER BY id", (key,)).fetchall()
            stored = self._body(*place)
            db.executemany("INSERT INTO temp.repeats VALUES (?, ?, ?)", [
                (rid, first, same_content(stored, self._body(*other))) for rid, *other in later])
        counted = dict(db.execute("SELECT same, count(*) FROM temp.repeats GROUP BY same"))
        self.duplicates["companions_identical"] += counted.get(1, 0)
        self.duplicates["companions_conflicting"] += counted.get(0, 0)
        for number, line, rtype, rid, key, first_file, first_line in db.execute(
                "SELECT r.file, r.line, r.rtype, r.rid, r.key, f.file, f.line FROM temp.repeats g "
                "JOIN resources r ON r.id = g.id JOIN resources f ON f.id = g.first WHERE NOT g.same ORDER BY g.id"):
            yield InputError(files[number].path, line, f"{rtype}.id", repeat_reason(
                key, files[first_file].path, first_line), rtype, rid, claim=False)
        db.execute("DELETE FROM resources WHERE id IN (SELECT id FROM temp.repeats)")
        db.execute("DELETE FROM based_on WHERE row IN (SELECT id FROM temp.repeats)")
        db.execute("DROP TABLE temp.repeats")

    @property
    def types(self) -> frozenset[str]:
        """The resource types the export holds."""
        if self._types is None:
            self._types = frozenset(r[0] for r in self.db.execute("SELECT DISTINCT rtype FROM resources"))
        return self._types

    CACHED = 512  # resources get() keeps, the least recently used first to go
    CACHED_BYTES = 64 * 1024  # and only those of at most this size (a Location, a Coverage: a few KB),
    # so that what the cache holds stays bounded (512 x 64 KiB) whatever the export's resources weigh

    def get(self, ref: str) -> dict | None:
        """The resource a reference names ("Type/id"; "urn:uuid:id": the resource of that id), or
        None; the small ones kept for the next claims (shared Locations, Organizations, Coverages)."""
        cache = self._cache
        if ref in cache:
            cache.move_to_end(ref)
            return cache[ref]
        value, size = self._get(ref)
        if size <= self.CACHED_BYTES:
            cache[ref] = value
            if len(cache) > self.CACHED:
                cache.popitem(last=False)
        return value

    def _get(self, ref: str) -> tuple[dict | None, int]:
        """(the resource `ref` names, its body's size); (None, 0) for none."""
        if ref.startswith(_UUID):
            row = self.db.execute("SELECT store, offset, size FROM resources WHERE rid = ? LIMIT 1",
                                  (ref[len(_UUID):],)).fetchone()
        else:
            row = self.db.execute("SELECT store, offset, size FROM resources WHERE key = ?", (ref,)).fetchone()
        if row is None:
            return None, 0
        self._read(row[2])
        return orjson.loads(self._body(*row)), row[2]

    def _read(self, size: int) -> None:
        """Count `size` bytes about to be read into :attr:`read_bytes`; raises TooLarge, before
        reading them, when that makes more than MAX_JOINED_BYTES."""
        self.read_bytes += size
        if self.read_bytes > MAX_JOINED_BYTES:
            raise TooLarge(self.read_bytes)

    def key_of_id(self, rid: str) -> str | None:
        """The "Type/id" a "urn:uuid:`rid`" reference names (what :meth:`get` reads for it), or None."""
        row = self.db.execute("SELECT key FROM resources WHERE rid = ? LIMIT 1", (rid,)).fetchone()
        return row[0] if row else None

    def encounter(self, rid: str) -> tuple[dict | None, list[dict]]:
        """The Encounter of id `rid` (None: none) and the resources linked to it (:meth:`linked`), in
        one lookup."""
        # in reading order, from the index alone (resources_by_encounter: no sort, no table row)
        rows = self.db.execute("SELECT rtype != 'Encounter', store, offset, size FROM resources WHERE encounter = ? "
                               "ORDER BY file, line", (rid,)).fetchall()
        if not rows:
            return None, []
        self._read(sum(row[3] for row in rows))
        encounter, linked = None, []
        values = orjson.loads(b"[" + b",".join([os.pread(self._fd(store), size, offset)
                                                for _l, store, offset, size in rows]) + b"]")
        for (is_linked, *_place), value in zip(rows, values):
            if is_linked:
                linked.append(value)
            else:
                encounter = value
        return encounter, linked

    def based_on(self, target: dict) -> list[str]:
        """The "Type/id"s of the resources whose basedOn names `target`, in reading order (file,
        then line)."""
        # In the order the resources were read (file, then line): a link's `row` is its resource's
        # id, reading order (LINE_BITS), and the index by target holds it: no sort. ORDER BY r.file,
        # r.line sorted every answer in a temporary B-tree: 58 us a call against 24 us (best of 3,
        # 3,000 encounters of a 20,000-claim sample export); tests/test_bulk_input.py checks the
        # order across files.
        return [k for (k,) in self.db.execute(
            "SELECT source FROM based_on WHERE target_id = ? AND (target_type IS NULL OR target_type = ?) "
            "ORDER BY row", (target.get("id"), target.get("resourceType")))]

    def linked(self, param: str, target: dict) -> list[dict]:
        """The resources whose `param` reference names `target`, in reading order (file, then line):
        "encounter" (`target` an Encounter; grouped at load, :meth:`encounter`), "based-on"."""
        if param == "encounter":
            return self.encounter(target.get("id"))[1] if target.get("resourceType") == "Encounter" else []
        return [r for r in map(self.get, self.based_on(target)) if r is not None]

    def location(self, key: str) -> tuple[str, int] | None:
        """(file, line) a companion was read from."""
        if self._files is None:
            self._files = dict(self.db.execute("SELECT file, path FROM files"))
        row = self.db.execute("SELECT file, line FROM resources WHERE key = ?", (key,)).fetchone()
        return (self._files[row[0]], row[1]) if row else None


# --- the join -------------------------------------------------------------------------------------
class TooLarge(Exception):
    """A claim's companions in the export come to more than MAX_JOINED_BYTES (ExportIndex._read)."""


class Dangling(Exception):
    def __init__(self, path: str, ref: str) -> None:
        super().__init__(path)
        self.path, self.ref = path, ref


def _claim_refs(claim: dict) -> list[tuple[str, str]]:
    """(path, reference) the join resolves in a Claim / ExplanationOfBenefit (validated)."""
    root = claim["resourceType"]
    out = []
    facility = fr.reference(claim.get("facility"), root, "facility")
    if facility:
        out.append((f"{root}.facility", facility))
    for p, item in fr.objects(claim.get("item"), root, "item"):
        for j, r in enumerate(fr.elements(item.get("encounter"), p, "encounter")):
            ref = fr.reference(r, f"{p}.encounter", None, j)
            if ref:
                out.append((f"{p}.encounter[{j}]", ref))
        loc = fr.reference(item.get("locationReference"), p, "locationReference")
        if loc:
            out.append((f"{p}.locationReference", loc))
    for key, element in (("procedure", "procedureReference"), ("supportingInfo", "valueReference"),
                         ("insurance", "coverage")):
        for p, entry in fr.objects(claim.get(key), root, key):
            ref = fr.reference(entry.get(element), p, element)
            if ref:
                out.append((f"{p}.{element}", ref))
    return out


def _hop_refs(res: dict, path: str) -> list[tuple[str, str]]:
    """(path, reference) of the second-hop references of a companion (validated)."""
    rtype = res.get("resourceType")
    pairs: list[tuple[str, object]] = []
    if rtype == "Encounter":
        pairs = [(f"{p}.location", e.get("location")) for p, e in fr.objects(res.get("location"), path, "location")]
    elif rtype == "Procedure":
        pairs = [(f"{path}.location", res.get("location"))]
        pairs += [(f"{path}.report[{i}]", r) for i, r in enumerate(fr.elements(res.get("report"), path, "report"))]
    elif rtype == "DiagnosticReport":
        pairs = [(f"{path}.imagingStudy[{i}]", r)
                 for i, r in enumerate(fr.elements(res.get("imagingStudy"), path, "imagingStudy"))]
    elif rtype == "Coverage":
        pairs = [(f"{path}.payor[{i}]", r) for i, r in enumerate(fr.elements(res.get("payor"), path, "payor"))]
    out = []
    for p, node in pairs:
        ref = fr.reference(node, p)
        if ref:
            out.append((p, ref))
    return out


# The join's hot path: the references of a claim and of its companions when every one of them is
# valid or absent, without formatting a FHIR path for each (a Where, formatted by _path only for a
# dangling one); any other shape takes _claim_refs / _hop_refs, which say what is wrong.
Where = tuple  # (template with {p}, {i}, {j}; the owner: its path, or the resource whose key it is; i; j)
_SLOW = object()
_CLAIM_ENTRIES = tuple((key, element, f"{{p}}.{key}[{{i}}].{element}") for key, element in (
    ("procedure", "procedureReference"), ("supportingInfo", "valueReference"), ("insurance", "coverage")))
_HOP_LISTS = {"Procedure": ("report", "{p}.report[{i}]"), "DiagnosticReport": ("imagingStudy", "{p}.imagingStudy[{i}]"),
              "Coverage": ("payor", "{p}.payor[{i}]")}


def _path(where: str | Where) -> str:
    """The FHIR path of a reference the join resolves (see :data:`Where`)."""
    if type(where) is str:
        return where
    template, owner, i, j = where
    if type(owner) is not str:
        owner = fr.key_of(owner) or owner.get("resourceType", "resource")
    return template.format(p=owner, i=i, j=j)


def _hot_reference(node: object) -> str | None | object:
    """:func:`hooks.fhir_read.reference` of an absent Reference, one without `reference`, or one
    with a non-blank string; _SLOW for any other."""
    if node is None:
        return None
    if type(node) is dict:
        value = node.get("reference")
        if value is None:
            return None
        if type(value) is str and value.strip():
            return value if value.count("/") == 1 and value[-1:] != "\n" else fr.normalize_reference(value)
    return _SLOW


def _claim_refs_fast(claim: dict) -> list[tuple[Where, str]] | None:
    """:func:`_claim_refs` (the same references in the same order), or None: take it."""
    root = claim["resourceType"]
    out: list[tuple[Where, str]] = []
    ref = _hot_reference(claim.get("facility"))
    if ref is _SLOW:
        return None
    if ref:
        out.append((("{p}.facility", root, 0, 0), ref))  # type: ignore[arg-type]
    items = claim.get("item")
    if items is not None:
        if type(items) is not list:
            return None
        for i, item in enumerate(items):
            if type(item) is not dict:
                return None
            encounters = item.get("encounter")
            if encounters is not None:
                if type(encounters) is not list:
                    return None
                for j, node in enumerate(encounters):
                    ref = _hot_reference(node)
                    if ref is _SLOW:
                        return None
                    if ref:
                        out.append((("{p}.item[{i}].encounter[{j}]", root, i, j), ref))  # type: ignore[arg-type]
            ref = _hot_reference(item.get("locationReference"))
            if ref is _SLOW:
                return None
            if ref:
                out.append((("{p}.item[{i}].locationReference", root, i, 0), ref))  # type: ignore[arg-type]
    for key, element, template in _CLAIM_ENTRIES:
        if not _listed_refs(claim.get(key), element, template, root, out):
            return None
    return out


def _listed_refs(nodes: object, element: str | None, template: str, owner: object,
                 out: list[tuple[Where, str]]) -> bool:
    """Append ((template, owner, i, 0), reference) for each entry of the list `nodes` that holds a
    reference (the entry itself when `element` is None, else its `element`); False when a shape
    needs the checked reading (not a list, an entry not an object, a reference not plain)."""
    if nodes is None:
        return True
    if type(nodes) is not list:
        return False
    for i, node in enumerate(nodes):
        if element is not None:
            if type(node) is not dict:
                return False
            node = node.get(element)
        ref = _hot_reference(node)
        if ref is _SLOW:
            return False
        if ref:
            out.append(((template, owner, i, 0), ref))  # type: ignore[arg-type]
    return True


def _hop_refs_fast(res: dict) -> list[tuple[Where, str]] | None:
    """:func:`_hop_refs` (the same references in the same order), or None: take it."""
    rtype = res.get("resourceType")
    out: list[tuple[Where, str]] = []
    if rtype == "Encounter":
        return out if _listed_refs(res.get("location"), "location", "{p}.location[{i}].location", res, out) else None
    if rtype not in _HOP_LISTS:
        return out
    if rtype == "Procedure":
        ref = _hot_reference(res.get("location"))
        if ref is _SLOW:
            return None
        if ref:
            out.append((("{p}.location", res, 0, 0), ref))
    key, template = _HOP_LISTS[rtype]
    return out if _listed_refs(res.get(key), None, template, res, out) else None


class Joiner:
    """Joins claim records with their companions from an :class:`ExportIndex` (None: no companion
    files; each record carries what it needs, as before). One per process."""

    def __init__(self, index_path: str | None) -> None:
        self.index_path = index_path
        self.index = ExportIndex(index_path) if index_path else None

    def close(self) -> None:
        if self.index is not None:
            self.index.close()

    def join(self, raw: RawRecord) -> InputRecord | InputError:
        """The claim of one raw record with its companions, or the InputError saying why not."""
        return self.join_identified(raw)[0]

    def join_identified(self, raw: RawRecord) -> tuple[InputRecord | InputError, tuple[str, str, bytes] | None]:
        """:meth:`join`, with the record's :func:`claim_identity` from the same parse (for
        :meth:`BatchInput.admit`: the worker that parses the claim says what it is)."""
        try:
            value = parse_record(raw.data)
        except BadRecord as exc:
            return InputError(raw.file, raw.line, "$", str(exc)), None
        identity = identity_of(value)
        return self._joined(raw, value), identity

    def _joined(self, raw: RawRecord, value: object) -> InputRecord | InputError:
        rtype, rid = _ident(value)
        try:
            resource, companions = split_record(value)
            aliases = bundle_aliases(value)
            if self.index is not None:
                self.index.read_bytes = 0
                found, more = self._companions(resource, companions, aliases)
                companions = companions + found
                aliases.update(more)
        except InvalidResource as exc:
            return InputError(raw.file, raw.line, exc.path, str(exc), rtype, rid)
        except TooLarge:
            where = rtype or "$"
            return InputError(raw.file, raw.line, where, f"{where}: its companions in the export (the resources it "
                              f"references and those of its encounters) come to more than {MAX_JOINED_BYTES >> 20} "
                              "MiB, the most one record may hold; not joined", rtype, rid)
        except Dangling as exc:
            return InputError(raw.file, raw.line, exc.path, f"{exc.path}: the reference names no resource in the "
                              "export (dangling reference)", rtype, rid)
        return InputRecord(raw.file, raw.line, resource, companions, aliases)

    def _companions(self, claim: dict, bundled: list[dict], aliases: dict[str, dict]
                    ) -> tuple[list[dict], dict[str, dict]]:
        """The companions of `claim` the index holds and `bundled` lacks, and their urn:uuid aliases."""
        index = self.index
        have: dict[str, dict] = {k: r for r in bundled if (k := fr.key_of(r)) is not None}
        have.update(aliases)
        found: list[dict] = []
        more: dict[str, dict] = {}
        linked: dict[str, list[dict]] = {}  # of the Encounters read with their linked resources

        def fetch(key: str) -> dict | None:
            """The resource of a "Type/id" not in hand, from the index (joined)."""
            if key.startswith("Encounter/"):  # the Encounter and its linked resources: one lookup
                res, linked[key] = index.encounter(key[10:])
            else:
                res = None
                rtype, _, rid = key.partition("/")
                if rtype in ENCOUNTER_LINKED:  # read already with an encounter?
                    res = next((r for members in linked.values() for r in members
                                if r["id"] == rid and r["resourceType"] == rtype), None)
                if res is None:
                    res = index.get(key)
            if res is not None:
                have[key] = res
                found.append(res)
            return res

        def resolve(where: str | Where, ref: str) -> dict | None:
            res = have.get(ref)
            if res is not None:
                return res
            if ref.startswith(_UUID):  # the resource of that id: its "Type/id" first, its body if not in hand
                key = index.key_of_id(ref[len(_UUID):])
                res = None if key is None else have.get(key) or fetch(key)
                if res is not None:
                    have[ref] = more[ref] = res
                    return res
            else:
                res = fetch(ref)
            if res is None:
                t = _target(ref)
                if t is None or t[1] is not None and t[1] not in index.types:
                    return None  # a type the export has no file of: not checked
                raise Dangling(_path(where), ref)
            return res

        refs: Sequence[tuple[str | Where, str]] | None = _claim_refs_fast(claim)
        todo = [res for p, ref in (_claim_refs(claim) if refs is None else refs) if (res := resolve(p, ref)) is not None]
        todo += [r for r in bundled if r.get("resourceType") == "Encounter"]
        encounters = {fr.key_of(r): r for r in todo if r.get("resourceType") == "Encounter"}
        for enc_key, enc in encounters.items():
            for res in linked[enc_key] if enc_key in linked else index.linked("encounter", enc):
                key = f"{res['resourceType']}/{res['id']}"  # the index's resources have both
                if key not in have:
                    have[key] = res
                    found.append(res)
                    todo.append(res)
        for res in list(have.values()):
            if res.get("resourceType") == "Procedure" and "basedOn" in res and \
                    procedure_code(res.get("code"), fr.key_of(res) or "Procedure", "code") == FLUORO:
                for order in fr.elements(res.get("basedOn"), "Procedure", "basedOn"):
                    ref = order.get("reference") if isinstance(order, dict) else None
                    t = _target(fr.normalize_reference(ref)) if type(ref) is str else None
                    if t is None:
                        continue
                    for key in index.based_on({"resourceType": t[1] or "ServiceRequest", "id": t[0]}):
                        if key not in have and (got := index.get(key)) is not None:
                            have[key] = got
                            found.append(got)
                            todo.append(got)
        seen: set[int] = set()
        for _hop in range(MAX_HOPS):
            nxt = []
            for res in todo:
                if id(res) in seen:
                    continue
                seen.add(id(res))
                hops: Sequence[tuple[str | Where, str]] | None = _hop_refs_fast(res)
                if hops is None:
                    hops = _hop_refs(res, fr.key_of(res) or res.get("resourceType", "resource"))
                for p, ref in hops:
                    got = resolve(p, ref)
                    if got is not None:
                        nxt.append(got)
            if not nxt:
                break
            todo = nxt
        return found, more


# --- the inputs as a whole ------------------------------------------------------------------------
class BatchInput:
    """The claim records of the INPUTs, joined with the companions of their export(s); a context
    manager (the index lives in a temporary directory, removed on exit). See the module docstring."""

    def __init__(self, paths: Sequence[str], workdir: str | None = None,
                 files: Sequence[InputFile] | None = None, map_parts: PartMap | None = None) -> None:
        self.files = list(files) if files is not None else input_files(paths)  # `files`: classified already
        self._map_parts = map_parts  # where the index load parses (ExportIndex.load); None: here
        self._workdir = workdir
        self._tmp: str | None = None
        self.index_path: str | None = None
        self._pending: list[InputError] = []
        self._readings = 0
        self._admitted: tuple[ClaimsSeen, bool] | None = None  # raw(check=False)'s, for admit()
        # repeated "Type/id"s: claims_identical (skipped), claims_conflicting (errors), and the
        # companions' (ExportIndex.load); DUPLICATE_COUNTS are its keys
        self.duplicates: Counter[str] = Counter()

    def __enter__(self) -> "BatchInput":
        self._tmp = tempfile.mkdtemp(prefix="fluoro-cds-export-", dir=self._workdir)
        companions = [f for f in self.files if not f.claims]
        if companions:
            self.index_path = os.path.join(self._tmp, INDEX_NAME)
            index = ExportIndex(self.index_path, create=True)
            try:
                self._pending = list(_bounded(index.load(companions, self._map_parts)))
                self.duplicates.update(index.duplicates)
            finally:
                index.close()
        return self

    def __exit__(self, *exc) -> None:
        if self._admitted is not None:
            self._admitted[0].close()
            self._admitted = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def companion_errors(self) -> list[InputError]:
        """The companion files' bad records (what :meth:`raw` yields first)."""
        return list(self._pending)

    def raw(self, check: bool = True) -> Iterator[RawRecord | InputError]:
        """The companion files' bad records, then each claim record as read, in input order. A
        claim whose "Type/id" was read before is skipped when it is the same JSON value (counted in
        ``duplicates["claims_identical"]``), else an InputError naming both places
        (``duplicates["claims_conflicting"]``): the first is reviewed. `check` false: every claim
        line as read, unparsed; the caller passes each chunk, with the identities its worker found,
        to :meth:`admit`, which decides the same in the same order."""
        if self._tmp is None:
            raise RuntimeError("BatchInput is a context manager: read it inside `with`")
        yield from self._pending
        first_reading, self._readings = self._readings == 0, self._readings + 1
        fd, seen_path = tempfile.mkstemp(suffix=".sqlite", dir=self._tmp)  # one per reading
        os.close(fd)
        seen = ClaimsSeen(seen_path)
        if not check:  # admit() reads it, after this generator has ended
            if self._admitted is not None:
                self._admitted[0].close()
            self._admitted, seen = (seen, first_reading), None
        try:
            for f in self.files:
                if f.claims:
                    for line, data in numbered_lines(f.path, check=True):
                        raw = RawRecord(f.path, line, data)
                        if seen is None:
                            yield raw
                            continue
                        repeat = self._repeat(raw, seen.check(raw), first_reading)
                        if repeat is not False:
                            if repeat is not None:
                                yield repeat
                            continue
                        yield raw
        finally:
            if seen is not None:
                seen.close()

    def admit(self, chunk: Sequence[RawRecord | InputError],
              identities: Sequence[tuple[str, str, bytes] | None]) -> list[RawRecord | InputError] | None:
        """The repeats check of :meth:`raw` for a chunk of ``raw(check=False)``, given each record's
        :func:`claim_identity` (None for an InputError; from the worker that parsed it,
        :meth:`Joiner.join_identified`), chunks in input order: None when every claim is the first of
        its "Type/id" (the worker's outputs stand), else the chunk as :meth:`raw` gives it
        (identical repeats left out, conflicting ones as InputErrors), to review again."""
        if self._admitted is None:
            raise RuntimeError("admit() follows raw(check=False)")
        seen, first_reading = self._admitted
        claims = [(item, identity) for item, identity in zip(chunk, identities) if isinstance(item, RawRecord)]
        verdicts = seen.admit([(raw.file, raw.line, identity) for raw, identity in claims])
        if all(v[0] == "first" for v in verdicts):
            return None
        verdict_of = {id(raw): v for (raw, _i), v in zip(claims, verdicts)}
        out: list[RawRecord | InputError] = []
        for item in chunk:
            repeat = self._repeat(item, verdict_of[id(item)], first_reading) if isinstance(item, RawRecord) else False
            if repeat is False:
                out.append(item)
            elif repeat is not None:
                out.append(repeat)
        return out

    def _repeat(self, raw: RawRecord, verdict: tuple, first_reading: bool) -> InputError | None | bool:
        """False: `raw` is the first of its "Type/id"; None: an identical repeat (skipped); else the
        InputError of a conflicting one. Counts the repeats of the first reading."""
        kind, rtype, rid, first = verdict
        if kind == "first":
            return False
        if first_reading:  # read again (service.batch: amended claims): counted once
            self.duplicates[f"claims_{kind}"] += 1
        if kind == "identical":
            return None
        return InputError(raw.file, raw.line, f"{rtype}.id", repeat_reason(f"{rtype}/{rid}", *first), rtype, rid)

    def records(self) -> Iterator[InputRecord | InputError]:
        """:meth:`raw` joined in this process."""
        joiner = Joiner(self.index_path)
        for raw in self.raw():
            yield raw if isinstance(raw, InputError) else joiner.join(raw)


def _bounded(errors: Iterable[InputError], keep: int = 100_000) -> Iterator[InputError]:
    """The companion files' bad records, at most `keep` held (the rest counted in one record)."""
    extra = 0
    for n, err in enumerate(errors):
        if n < keep:
            yield err
        else:
            extra += 1
    if extra:
        yield InputError("-", None, "$", f"{extra} more bad records in the companion files (not listed)",
                         claim=False)

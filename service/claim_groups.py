"""The batch's edits across claims: reviewed claims grouped on disk by beneficiary, then
:func:`hooks.rules.cross_claim.cross_claim_findings` over each beneficiary's claims.

Memory stays bounded whatever the input: each reviewed claim's normalized case (its resource,
lines, setting, evidence and program, and which lines its own review removes) goes into a flat
file in a temporary directory, and into a SQLite file beside it its place and the grouping keys of its lines
(:func:`hooks.rules.cross_claim.line_group`); once every claim is in, the claims of the groups that
have 76000 on one claim and lines on another are read back a beneficiary at a time. The same for
NDJSON inputs and Bulk Data exports.

The case is stored as compact JSON (:func:`encode_case` / :func:`decode_case`: orjson writes the
dates and tuples of the model as they are; only the claims read back are decoded; a claim the
findings across claims edit is amended from it, not read and joined again), not pickled: pickling a slim copy of every case cost about 40 us a claim in the workers, a fifth of
a review (benchmarks/RESULTS.md "Payer batch"); in a flat file beside the SQLite file, which names
each by offset and size.

Use (worker processes make the rows and review the groups, the main process stores them)::

    with ClaimGroups() as groups:
        for reviewed in ...:                      # service.bulk_input.Reviewed
            row = group_row(reviewed.case, program, source, reviewed.findings)  # None: nothing can pair
            if row is not None:
                groups.add(row)                   # a GroupRow: plain data, cheap to pickle
        for members in groups.beneficiaries():    # (in a worker, or here)
            for found, cases in beneficiary_findings(members, reference, config):
                ...  # found: CrossClaimFinding; cases: {"Claim/c1": (Case, (file, line))} of its claims
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from datetime import date, datetime
from operator import attrgetter
from typing import Iterable, Iterator, NamedTuple, Sequence

import orjson

from hooks.findings import Finding
from hooks.model import FLUORO, NO_EVIDENCE, Case, Evidence, Line, Setting, Site
from hooks.rules.cross_claim import (CrossClaimFinding, beneficiary, claim_name, cross_claim_findings, line_group,
                                     removed_lines)
from nccidata.api import ReferenceData

# the fields of a Line, a Setting and an Evidence, in the order encode_case writes them
# (tests/test_claim_groups.py checks they are all the model's fields)
LINE_FIELDS = ("key", "code", "modifiers", "units", "service_date", "body_sites", "diagnoses", "kind", "resource",
               "sequence", "encounters", "performers", "start", "end", "sessions", "pos", "allowed", "paid")
SETTING_FIELDS = ("facility", "ncci_setting", "pos", "reasons", "record_pos", "pos_contradicted", "record_facility")
EVIDENCE_FIELDS = ("indication", "fluoro_minutes", "radiation_dose", "body_site", "findings", "images_retained",
                   "signed_interpretation", "separate_procedure", "implausible_minutes", "unrelated")
_line_values = attrgetter(*LINE_FIELDS)
_setting_values = attrgetter(*SETTING_FIELDS)
_evidence_values = attrgetter(*EVIDENCE_FIELDS)


def _plain(value: object) -> tuple:
    """A named tuple (Site) as the plain tuple orjson writes."""
    if isinstance(value, tuple):
        return tuple(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def encode_case(case: Case, gone: Iterable[str] = ()) -> bytes:
    """A reviewed claim's case as compact JSON, with the keys of the lines its own review removes
    (`gone`): all of it (its resource, lines, setting, evidence, context lines, program), so that
    :func:`decode_case` gives back the case the claim's review had, to amend it without reading
    and joining the claim again."""
    evidence = case.evidence
    return orjson.dumps((case.kind, _setting_values(case.setting), [_line_values(ln) for ln in case.lines],
                         None if evidence is NO_EVIDENCE else _evidence_values(evidence), case.default_date,
                         case.claim, case.evidence_checked, [_line_values(ln) for ln in case.context_lines],
                         case.program, case.program_source, sorted(gone)), default=_plain)


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _line(v: list) -> Line:
    (key, code, modifiers, units, service_date, sites, diagnoses, kind, resource, sequence, encounters, performers,
     start, end, sessions, pos, allowed, paid) = v
    return Line(key, code, tuple(modifiers), units, _day(service_date),
                tuple(Site(tuple(codes), text, side) for codes, text, side in sites), tuple(diagnoses), kind, resource,
                sequence, tuple(encounters), tuple(performers), _time(start), _time(end), sessions, pos, allowed, paid)


def decode_case(blob: bytes, grouped: bool = True) -> Case:
    """The case :func:`encode_case` wrote: as reviewed (`grouped` false), or as grouped: without
    the lines its own review removes (not billable: in no edit across claims)."""
    (kind, setting, lines, evidence, default_date, claim, checked, context, program, source,
     gone) = orjson.loads(blob)
    facility, ncci, pos, reasons, record_pos, contradicted, record_facility = setting
    if evidence is not None:
        *flags, implausible, unrelated = evidence
        evidence = Evidence(*flags, tuple(implausible), tuple(unrelated))
    if grouped and gone:
        lines = [v for v in lines if v[0] not in gone]
    return Case(kind, Setting(facility, ncci, pos, tuple(reasons), record_pos, contradicted, record_facility),
                tuple(_line(v) for v in lines), evidence or NO_EVIDENCE, _day(default_date), claim, checked,
                tuple(_line(v) for v in context), program, source)


class GroupRow(NamedTuple):
    """What the grouping keeps of one reviewed claim."""

    patient: str
    claim: str  # "Claim/c1"
    keys: tuple[tuple[str, bool], ...]  # (grouping key, the line is 76000) of each groupable line
    case: bytes  # the reviewed case and the lines its review removes (encode_case)
    source: tuple[str, int] = ("", 0)  # (file, line) the claim was read from
    own: bool = False  # its own review found something (summary.json claims_with_findings)


def group_row(case: Case, program: str | None = None, source: tuple[str, int] = ("", 0),
              findings: Sequence[Finding] = ()) -> GroupRow | None:
    """The grouping row of a reviewed claim's case without the lines its own `findings` remove
    (:func:`hooks.rules.cross_claim.removed_lines`: not billable, so in no edit across claims);
    `program`: the configured program, for a case whose coverage does not say (as
    :func:`~hooks.rules.cross_claim.cross_claim_findings` groups). None when no line of it has a
    group (no patient, provider or date; an inpatient claim; no id)."""
    name, patient = claim_name(case), beneficiary(case)
    if name is None or patient is None:
        return None
    gone = removed_lines(findings) if findings else ()
    lines = tuple(ln for ln in case.lines if ln.key not in gone) if gone else case.lines
    keys = {}
    program = case.program or program
    for line in lines:
        g = line_group(case, line, program)
        if g is not None:
            k = f"{g.patient}|{g.provider}|{g.day.isoformat()}|{g.setting}|{g.program}"
            keys[k] = keys.get(k, False) or line.code == FLUORO
    if not keys:
        return None
    return GroupRow(patient, name, tuple(keys.items()), encode_case(case, gone), source, bool(findings))


class ClaimGroups:
    """The on-disk grouping (a context manager: its temporary directory is removed on exit)."""

    # SQLite page cache, also the memory bound of the sort in beneficiaries(): the rows are appended
    # and read back once, so a larger cache buys no speed, only resident memory (16 MiB took ~25 MB)
    CACHE_KIB = 4096

    def __init__(self, workdir: str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="fluoro-cds-groups-", dir=workdir)
        # check_same_thread off: beneficiaries() is read by the worker pool's task thread (one
        # thread at a time uses the connection)
        self.db = sqlite3.connect(os.path.join(self._dir, "groups.sqlite"), isolation_level=None,
                                  check_same_thread=False)
        self.db.executescript(
            f"PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-{self.CACHE_KIB};"
            "PRAGMA temp_store=FILE;"  # the sort and temporary table of beneficiaries() spill to disk
            "CREATE TABLE claims (n INTEGER PRIMARY KEY, patient TEXT NOT NULL, claim TEXT NOT NULL, "
            "offset INTEGER NOT NULL, size INTEGER NOT NULL, file TEXT NOT NULL, line INTEGER NOT NULL, "
            "own INTEGER NOT NULL);"
            "CREATE TABLE keys (gkey TEXT NOT NULL, n INTEGER NOT NULL, fluoro INTEGER NOT NULL);")
        self.db.execute("BEGIN")
        self._n = 0
        # The cases, one after the other in a flat file (`claims` names each by offset and size): as
        # SQLite rows their ~2.5 KB each cost ~23 us a claim to insert at 200,000 claims, and every
        # page the grouping query read of `claims` carried them (benchmarks/RESULTS.md "Payer batch").
        self._cases = open(os.path.join(self._dir, "cases.bin"), "w+b")
        self._end = 0

    @property
    def workdir(self) -> str:
        """The temporary directory (removed on exit): room for a run's other staged files."""
        return self._dir

    def __enter__(self) -> "ClaimGroups":
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()
        self._cases.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def add(self, row: GroupRow) -> None:
        self.add_all((row,))

    def add_all(self, rows: Iterable[GroupRow]) -> None:
        claims, keys, cases = [], [], []
        end = self._end
        for row in rows:
            self._n += 1
            size = len(row.case)
            claims.append((self._n, row.patient, row.claim, end, size, *row.source, int(row.own)))
            cases.append(row.case)
            end += size
            keys += [(k, self._n, int(f)) for k, f in row.keys]
        self._cases.write(b"".join(cases))
        self._end = end
        self.db.executemany("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?, ?, ?)", claims)
        self.db.executemany("INSERT INTO keys VALUES (?, ?, ?)", keys)

    def beneficiaries(self) -> Iterator[list[tuple[str, bytes, tuple[str, int], bool]]]:
        """For each beneficiary with a group of lines on several claims, one of them 76000: the
        claims of such groups, in input order, as (claim, grouped case, (file, line), its own
        review found something): what :func:`beneficiary_findings` takes. A claim in no such group
        has no line any finding across claims could be about."""
        db = self.db
        db.execute("COMMIT")
        # covering (fluoro, n): the grouping query reads no row of `keys` (~0.5 against 0.8 s to the
        # first beneficiary at 200,000 claims)
        db.execute("CREATE INDEX keys_by_key ON keys (gkey, fluoro, n)")
        db.execute("CREATE TEMP TABLE wanted AS SELECT DISTINCT k.n FROM keys k WHERE k.gkey IN ("
                   " SELECT gkey FROM keys k2 JOIN claims c2 ON c2.n = k2.n GROUP BY gkey"
                   " HAVING COUNT(DISTINCT c2.claim) > 1 AND MAX(k2.fluoro) = 1)")
        self._cases.flush()
        fd = self._cases.fileno()
        members: list[tuple[str, bytes, tuple[str, int], bool]] = []
        current = None
        for patient, claim, offset, size, file, line, own in db.execute(
                "SELECT c.patient, c.claim, c.offset, c.size, c.file, c.line, c.own FROM claims c "
                "JOIN wanted w ON w.n = c.n ORDER BY c.patient, c.n"):
            if patient != current:
                if members:
                    yield members
                members, current = [], patient
            members.append((claim, os.pread(fd, size, offset), (file, line), bool(own)))
        if members:
            yield members


def beneficiary_findings(members: Iterable[tuple[str, bytes, tuple[str, int], bool]], reference: ReferenceData,
                         config: dict) -> Iterator[tuple[CrossClaimFinding, dict[str, tuple[Case, tuple[str, int]]]]]:
    """The findings across claims of one beneficiary's grouped claims (:meth:`ClaimGroups.beneficiaries`;
    a claim id given twice: its first record), each with the (case, (file, line)) of the claims it
    names. Pure: the local engine's workers and the Spark job's partitions call it alike."""
    cases: dict[str, tuple[Case, tuple[str, int]]] = {}
    for claim, blob, source, _own in members:
        if claim not in cases:
            cases[claim] = (decode_case(blob), source)
    for found in cross_claim_findings([c for c, _s in cases.values()], reference, config):
        yield found, {c: cases[c] for c in found.claims}

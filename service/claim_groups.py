"""The batch's edits across claims: reviewed claims grouped on disk by beneficiary, then
:func:`hooks.rules.cross_claim.cross_claim_findings` over each beneficiary's claims.

Memory stays bounded whatever the input: each reviewed claim's normalized case (its lines, setting
and program; the FHIR resource reduced to its type, id, patient and provider) goes into a SQLite
file in a temporary directory with the grouping keys of its lines
(:func:`hooks.rules.cross_claim.line_group`); once every claim is in, the beneficiaries having a
group with 76000 on one claim and lines on another are read back one at a time. The same for
NDJSON inputs and Bulk Data exports.

Use (worker processes make the rows, the main process stores them)::

    with ClaimGroups() as groups:
        for reviewed in ...:                      # service.bulk_input.Reviewed
            row = group_row(reviewed.case, program, source, reviewed.findings)  # None: nothing can pair
            if row is not None:
                groups.add(row)                   # a GroupRow: plain data, cheap to pickle
        for found, cases in groups.findings(reference, config):
            ...  # found: CrossClaimFinding; cases: {"Claim/c1": (Case, (file, line))} of its claims
"""
from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import tempfile
from dataclasses import replace
from typing import Iterator, NamedTuple, Sequence

from hooks.model import FLUORO, Case, Evidence
from hooks.findings import Finding
from hooks.rules.cross_claim import (CrossClaimFinding, beneficiary, claim_name, cross_claim_findings, line_group,
                                     removed_lines)
from nccidata.api import ReferenceData

_STUB_KEYS = ("resourceType", "id", "identifier", "patient", "provider", "item")


class GroupRow(NamedTuple):
    """What the grouping keeps of one reviewed claim."""

    patient: str
    claim: str  # "Claim/c1"
    keys: tuple[tuple[str, bool], ...]  # (grouping key, the line is 76000) of each groupable line
    case: bytes  # the pickled slim case
    source: tuple[str, int] = ("", 0)  # (file, line) the claim was read from
    own: bool = False  # its own review found something (summary.json claims_with_findings)


def group_row(case: Case, program: str | None = None, source: tuple[str, int] = ("", 0),
              findings: Sequence[Finding] = ()) -> GroupRow | None:
    """The grouping row of a reviewed claim's case without the lines its own `findings` remove
    (:func:`hooks.rules.cross_claim.removed_lines`: not billable, so in no edit across claims);
    None when no line of it has a group (no patient, provider or date; an inpatient claim; no id)."""
    name, patient = claim_name(case), beneficiary(case)
    if name is None or patient is None:
        return None
    gone = removed_lines(findings) if findings else ()
    lines = tuple(ln for ln in case.lines if ln.key not in gone) if gone else case.lines
    keys = {}
    for line in lines:
        g = line_group(case, line, program)
        if g is not None:
            k = f"{g.patient}|{g.provider}|{g.day.isoformat()}|{g.setting}|{g.program}"
            keys[k] = keys.get(k, False) or line.code == FLUORO
    if not keys:
        return None
    stub = {k: case.claim[k] for k in _STUB_KEYS if k in case.claim}
    slim = replace(case, claim=stub, lines=lines, evidence=Evidence(), context_lines=())
    return GroupRow(patient, name, tuple(keys.items()), pickle.dumps(slim, protocol=pickle.HIGHEST_PROTOCOL), source,
                    bool(findings))


class ClaimGroups:
    """The on-disk grouping (a context manager: its temporary directory is removed on exit)."""

    def __init__(self, workdir: str | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="fluoro-cds-groups-", dir=workdir)
        self.db = sqlite3.connect(os.path.join(self._dir, "groups.sqlite"), isolation_level=None)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-16384;"
            "CREATE TABLE claims (n INTEGER PRIMARY KEY, patient TEXT NOT NULL, claim TEXT NOT NULL, "
            "case_blob BLOB NOT NULL, file TEXT NOT NULL, line INTEGER NOT NULL, own INTEGER NOT NULL);"
            "CREATE TABLE keys (gkey TEXT NOT NULL, n INTEGER NOT NULL, fluoro INTEGER NOT NULL);")
        self.db.execute("BEGIN")
        self._n = 0
        # (file, line) of each claim a finding across claims names -> its own review found something:
        # filled by findings(), as many entries as such claims (the batch's `amend` holds as many)
        self.named: dict[tuple[str, int], bool] = {}

    def __enter__(self) -> "ClaimGroups":
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def add(self, row: GroupRow) -> None:
        self._n += 1
        self.db.execute("INSERT INTO claims VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (self._n, row.patient, row.claim, row.case, *row.source, int(row.own)))
        self.db.executemany("INSERT INTO keys VALUES (?, ?, ?)", [(k, self._n, int(f)) for k, f in row.keys])

    def findings(self, reference: ReferenceData, config: dict
                 ) -> Iterator[tuple[CrossClaimFinding, dict[str, tuple[Case, tuple[str, int]]]]]:
        """The findings across claims, beneficiary by beneficiary, each with the (case, (file, line))
        of the claims it names (a claim id given twice: the first record of it); the claims named
        are kept in :attr:`named`."""
        db = self.db
        db.execute("COMMIT")
        db.execute("CREATE INDEX keys_by_key ON keys (gkey)")
        # each wanted beneficiary's claims are read by patient: without this index every read scanned
        # the whole table (83% of a 20,000-claim export run under py-spy; benchmarks/RESULTS.md)
        db.execute("CREATE INDEX claims_by_patient ON claims (patient, n)")
        wanted = db.execute(
            "SELECT DISTINCT c.patient FROM claims c JOIN keys k ON k.n = c.n WHERE k.gkey IN ("
            " SELECT gkey FROM keys k2 JOIN claims c2 ON c2.n = k2.n GROUP BY gkey"
            " HAVING COUNT(DISTINCT c2.claim) > 1 AND MAX(k2.fluoro) = 1) ORDER BY c.patient").fetchall()
        for (patient,) in wanted:
            cases: dict[str, tuple[Case, tuple[str, int]]] = {}
            own: dict[str, bool] = {}
            for claim, blob, file, line, found_own in db.execute(
                    "SELECT claim, case_blob, file, line, own FROM claims WHERE patient = ? ORDER BY n", (patient,)):
                if claim not in cases:
                    cases[claim] = (pickle.loads(blob), (file, line))
                    own[claim] = bool(found_own)
            for found in cross_claim_findings([c for c, _s in cases.values()], reference, config):
                for c in found.claims:
                    self.named[cases[c][1]] = own[c]
                yield found, {c: cases[c] for c in found.claims}

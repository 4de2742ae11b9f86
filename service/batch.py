"""Batch review for payers and billing companies: the same rules over many FHIR claims.

Input: NDJSON, one record per line: a FHIR R4 Claim or ExplanationOfBenefit, or a Bundle whose
first entry is one of them followed by its companions (Encounter, Procedures, Observations,
DiagnosticReports, Locations), as ``context.claim`` of the claim-review service
(service/bulk_input.py). Output: NDJSON, one record per input line (an identical repeat of a claim
already read is skipped: docs/batch.md "Repeated resources"), in input order, then one record per
finding across claims (the records of the claims those edit amended: docs/batch.md "Edits across
claims"), written at the end of the run::

    {"line": 1, "claim": "c1", "resourceType": "Claim", "use": "claim", "findings": [{"code": "ptp-bundled", ...}]}
    {"line": 2, "claim": "c2", "resourceType": "ExplanationOfBenefit", "error": "...",
     "path": "ExplanationOfBenefit.item[0].servicedDate"}

A bad record never stops the run: it is reported on its own output line. The run's summary (claims,
errors, findings per code, claims per second) goes to stderr as JSON. Nothing is fetched: each
record must carry what it needs. :func:`review_lines` is the partition function the Spark job
(deploy/spark_job.py) maps over its partitions.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import IO, Callable, Iterable, Iterator, Sequence

from hooks.config import CONFIG_KEY, ConfigError, resolve
from hooks.context import InvalidResource
from hooks.extract import bundle_aliases
from hooks.extract.eob import case_from_billing, use_of
from hooks.findings import Finding
from hooks.rules import evaluate
from hooks.model import Case
from hooks.rules.cross_claim import CrossClaimFinding, amended_findings, claim_parts, edits_claim
from nccidata import open_reference
from nccidata.api import ReferenceData

from . import metrics
from .amendment import retraction  # noqa: F401  (the Spark job's, service/spark.py)
from .amendment import Amended, AmendedPart, AmendedRecords, StagedTable, chunks, finish_outputs
from .batch_report import Tally, render_html, summary
from .bulk_input import (DUPLICATE_COUNTS, BadRecord, BatchInput, InputError, InputRecord, Joiner, NotNdjson, RawRecord,
                         UsageError, bounded_lines, input_files, ndjson_lines, open_input, parse_record, review_input,
                         split_record)
from .claim_groups import ClaimGroups, GroupRow, beneficiary_findings, decode_case, group_row
from .corrected_claims import corrected
from .findings_table import (LINE_INDEX, OTHER_CLAIMS_LISTED, config_hash, data_release, finding_rows, ndjson_rows,
                             record_batch)
from .jsonio import dumps, loads

REVIEWED_TYPES = ("Claim", "ExplanationOfBenefit")  # the resources a batch record reviews


def finding_record(finding: Finding) -> dict:
    """A finding as plain JSON (codes, lines, fixes, citations, payment effect)."""
    rec = dataclasses.asdict(finding)
    rec["citations"] = [{**c, "details": dict(c["details"])} for c in rec["citations"]]
    rec["override_reasons"] = [{"code": c, "display": d} for c, d in finding.override_reasons]
    return rec


def _reviewed_resource(value: object) -> dict | None:
    """The record's Claim (a lone Claim, or a Bundle's first entry; or ExplanationOfBenefit)."""
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        first = entries[0] if isinstance(entries, list) and entries and isinstance(entries[0], dict) else {}
        value = first.get("resource")
    return value if isinstance(value, dict) and value.get("resourceType") in REVIEWED_TYPES else None


def _resource_name(value: object) -> str | None:
    """"Claim/c1" for the record's Claim (or ExplanationOfBenefit), when it has an id."""
    res = _reviewed_resource(value)
    rid = res.get("id") if res else None
    return f"{res['resourceType']}/{rid}" if isinstance(rid, str) else None


def review_record(value: object, reference: ReferenceData, config: dict) -> dict:
    """Review one decoded record (a Claim, an ExplanationOfBenefit or a Bundle whose first entry is
    one); invalid resources become an error record naming the FHIR path in the resource. The
    record says the resource's type and its ``use`` ("claim", "preauthorization" for a prior
    authorization request such as a Da Vinci PAS Bundle, "predetermination"; null when absent)."""
    claim_id = rtype = None
    try:
        claim, companions = split_record(value)
        rtype = claim["resourceType"]
        claim_id = claim.get("id") if isinstance(claim.get("id"), str) else None
        use = use_of(claim)
        case = case_from_billing(claim, companions, reference, aliases=bundle_aliases(value))
        findings = evaluate(case, reference, config)
    except InvalidResource as exc:
        return {"claim": claim_id, "resourceType": rtype, "error": str(exc), "path": exc.path}
    return {"claim": claim_id, "resourceType": rtype, "use": use,
            "findings": [finding_record(f) for f in findings]}


def review_table(raw: bytes | dict | InputRecord | InputError, source: tuple[str, int], reference: ReferenceData,
                 config: dict, run: tuple[str, str, str], groups: list | None = None
                 ) -> tuple[list[tuple], dict | None, dict | None]:
    """One record of an --out-dir run: (findings table rows, error record or None, corrected
    Claim or None). `raw`: the NDJSON line, the record already decoded, or what the input reader
    made of it (service/bulk_input.py: a joined InputRecord, or an InputError); `source`: (file, line).
    `groups`: where to append the claim's GroupRow for the edits across claims (service/claim_groups.py)."""
    if isinstance(raw, InputError):
        name = f"{raw.resource_type}/{raw.resource_id}" if raw.resource_type in REVIEWED_TYPES and raw.resource_id \
            else None
        return [], {"file": raw.file, "line": raw.line, "resource": name, "path": raw.path, "reason": raw.reason}, None
    value: object = raw.resource if isinstance(raw, InputRecord) else raw
    try:
        value, case = billing_case(raw, reference)
        findings = evaluate(case, reference, config)
    except InvalidResource as exc:
        return [], {"file": source[0], "line": source[1], "resource": _resource_name(getattr(exc, "value", value)),
                    "path": exc.path, "reason": str(exc)}, None
    rows = finding_rows(case, findings, reference, source, run)
    if groups is not None and (row := group_row(case, config.get("program"), source, findings)) is not None:
        groups.append(row)
    return rows, None, corrected(case, findings) if findings else None


class _Unreadable(InvalidResource):
    """An InvalidResource with the record it was raised for (what the error record names)."""

    def __init__(self, exc: InvalidResource, value: object) -> None:
        super().__init__(str(exc), exc.path)
        self.value = value


def billing_case(raw: bytes | dict | InputRecord, reference: ReferenceData) -> tuple[object, Case]:
    """(the record, its case) of an NDJSON line, a decoded record or a joined InputRecord; raises
    InvalidResource carrying the record as ``.value``."""
    value: object = raw
    try:
        if isinstance(raw, InputRecord):
            value = raw.resource
            claim, companions, aliases = raw.resource, raw.companions, raw.aliases
        else:
            if not isinstance(raw, dict):
                try:
                    value = parse_record(raw.strip())
                except BadRecord as exc:
                    raise InvalidResource(str(exc), "$") from None
            claim, companions = split_record(value)
            aliases = bundle_aliases(value)
        return value, case_from_billing(claim, companions, reference, aliases=aliases)
    except InvalidResource as exc:
        raise _Unreadable(exc, value) from None


def amended_review(raw: bytes | dict | InputRecord | Case, across: Sequence[Finding], reference: ReferenceData,
                   config: dict) -> tuple[Case, list[Finding]] | None:
    """(the case, its own findings re-evaluated on the claim as the findings across claims that edit
    it leave it: :func:`amended_findings`) of a claim `across` edits (their parts on it,
    :func:`hooks.rules.cross_claim.for_claim`); the findings that depended on a line removed across
    claims are withdrawn. `raw`: the claim's record, or its case as reviewed (the grouping's,
    :func:`service.claim_groups.decode_case`). None when the record no longer reads (it did in the first review)."""
    if isinstance(raw, Case):
        case = raw
    else:
        try:
            _value, case = billing_case(raw, reference)
        except InvalidResource:
            return None
    return case, amended_findings(case, across, reference, config)


def amended_outputs(raw: bytes | dict | InputRecord | Case, source: tuple[str, int], across: Sequence[Finding],
                    reference: ReferenceData, config: dict, run: tuple[str, str, str]
                    ) -> tuple[list[tuple], dict | None, Tally] | None:
    """The --out-dir outputs of a claim the findings across claims edit, to replace those of its
    first review (:func:`amended_review`): the table rows of its amended findings, its corrected
    Claim with both its own and the across-claims fixes (None when ambiguous), and their tally
    (the first review's outputs are taken back by the caller from what it removes of them:
    :func:`retraction`). None when the record no longer reads."""
    amended = amended_review(raw, across, reference, config)
    if amended is None:
        return None
    case, own = amended
    rows = finding_rows(case, own, reference, source, run)
    fixed = corrected(case, [*own, *across])
    change = Tally()
    change.add_claim(rows, fixed is not None)
    return rows, fixed, change


def cross_claim_rows(found: CrossClaimFinding, cases: dict[str, tuple[Case, tuple[str, int]]],
                     reference: ReferenceData, run: tuple[str, str, str]) -> list[tuple]:
    """The table rows of a finding across claims: for each claim it names, the rows of its own lines
    (finding_rows over that claim's case, :func:`for_claim`: the finding's lines and fixes of that
    claim), ``across_claims`` true and ``other_claims`` the others."""
    rows: list[tuple] = []
    offset = 0  # line_index runs over the finding's lines on all its claims (0: the finding's first row)
    at = LINE_INDEX
    parts = claim_parts(found)
    named = found.claims[:OTHER_CLAIMS_LISTED + 1]  # the others of each claim are listed from these
    for claim, (case, source) in cases.items():
        local = parts[claim]
        others = [c for c in named if c != claim]
        rows += [r[:at] + (r[at] + offset,) + r[at + 1:]
                 for r in finding_rows(case, [local], reference, source, run, others, len(found.claims) - 1)]
        offset += len(local.lines)
    return rows


def claim_edits(found: CrossClaimFinding, cases: dict[str, tuple[Case, tuple[str, int]]]
                ) -> Iterator[tuple[tuple[str, int], str, Finding]]:
    """((file, line), claim, its part of the finding) of each claim a finding across claims edits
    (its recommended fix touches a line of that claim): the claims to amend (:func:`amended_outputs`)."""
    parts = claim_parts(found)
    for claim, (_case, source) in cases.items():
        part = parts[claim]
        if edits_claim(part):
            yield source, claim, part


def review_lines(lines: Iterable[str | bytes], reference: ReferenceData, config: dict,
                 first_line: int = 1) -> Iterator[dict]:
    """Review NDJSON lines (blank lines skipped), yielding one output record per record."""
    for number, raw in enumerate(lines, start=first_line):
        if raw.strip():
            yield {"line": number, **review_raw(raw, reference, config)}


def review_raw(raw: str | bytes, reference: ReferenceData, config: dict) -> dict:
    """Decode and review one NDJSON line; a line that is not JSON becomes an error record."""
    if isinstance(raw, str):
        raw = raw.encode()  # same bytes path (and error messages) as the file reader
    try:
        value = parse_record(raw.strip())
    except BadRecord as exc:
        return {"claim": None, "resourceType": None, "error": str(exc), "path": "$"}
    return review_record(value, reference, config)




# --- process pool -------------------------------------------------------------------------------
@contextlib.contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[int], object]]:
    """A progress bar of claims on stderr (tqdm) when `enabled`, closed on exit: yields its update."""
    if not enabled:
        yield lambda n: None
        return
    from tqdm import tqdm

    bar = tqdm(unit=" claims", file=sys.stderr)
    try:
        yield bar.update
    finally:
        bar.close()


@contextlib.contextmanager
def _pool(workers: int, initializer: Callable, initargs: tuple) -> Iterator[Callable[[Callable, Iterable], Iterable]]:
    """An ordered map, ``imap(function, chunks)``, to call as often as needed (the export index
    load, the review, then the amendment of the claims the edits across claims edit): in this
    process when `workers` <= 1, else in a pool of `workers` spawned processes (each set up by
    `initializer(*initargs)`), with at most 2 x `workers` + 2 chunks sent and not yet taken back
    (:func:`_bounded_imap`). On an error (e.g. a closed output pipe) the pool is stopped at once;
    otherwise it is closed and joined."""
    if workers <= 1:
        initializer(*initargs)
        yield map
        return
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=initializer, initargs=initargs)
    try:
        yield functools.partial(_bounded_imap, pool, 2 * workers + 2)
    except BaseException:
        pool.terminate()
        pool.join()
        raise
    pool.close()
    pool.join()


def _bounded_imap(pool, window: int, function: Callable, chunks: Iterable) -> Iterator:
    """``pool.imap(function, chunks)`` with at most `window` chunks in flight: Pool.imap reads ahead
    and keeps every result until it is taken, so results this process takes slower than the workers
    make them (the index load: the workers parse, this process writes) would pile up in memory."""
    pending: collections.deque = collections.deque()
    for chunk in chunks:
        if len(pending) >= window:
            yield pending.popleft().get()
        pending.append(pool.apply_async(function, (chunk,)))
    while pending:
        yield pending.popleft().get()


@contextlib.contextmanager
def system_arrow_pool() -> Iterator[None]:
    """Arrow allocates from the C library's allocator in this process while the block runs (the
    previous default pool back after it): the main process of an --out-dir run receives the
    workers' record batches and writes findings.parquet, and with Arrow's default mimalloc pool its
    resident memory kept ~40 MB more of that churn, growing with the staged batches (a 100,000-claim
    run's final write: +42 MB against +2 MB; benchmarks/RESULTS.md "Payer batch")."""
    import pyarrow as pa

    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


_worker_state: dict = {}


def _init_worker(db_path: str | None, config: dict) -> None:
    """A worker of a batch run (started before the export index exists: each task names it,
    :func:`_joiner_for`)."""
    _worker_state["reference"] = open_reference(db_path)
    _worker_state["config"] = config
    _worker_state["joiner"] = Joiner(None)


def _joiner_for(index_path: str | None) -> Joiner:
    """This process's Joiner of the export index at `index_path` (opened on first use)."""
    joiner = _worker_state["joiner"]
    if joiner.index_path != index_path:
        joiner.close()
        joiner = _worker_state["joiner"] = Joiner(index_path)
    return joiner


def input_record(item: RawRecord | InputError, reference: ReferenceData, config: dict, joiner: Joiner,
                 several: bool) -> tuple[dict, GroupRow | None]:
    """The output record of one input record (joined with its companions and reviewed), and its
    row for the edits across claims (None for an error)."""
    if isinstance(item, RawRecord):
        item = joiner.join(item)
    if isinstance(item, InputRecord):
        item = review_input(item, reference, config)
    at = item if isinstance(item, InputError) else item.record
    where = {"file": at.file, "line": at.line} if several else {"line": at.line}
    if isinstance(item, InputError):
        reviewed = item.resource_type in REVIEWED_TYPES
        return {**where, "claim": item.resource_id if reviewed else None,
                "resourceType": item.resource_type if reviewed else None, "error": item.reason,
                "path": item.path}, None
    res = item.record.resource
    rid = res.get("id")
    return ({**where, "claim": rid if isinstance(rid, str) else None, "resourceType": res["resourceType"],
             "use": item.use, "findings": [finding_record(f) for f in item.findings]},
            group_row(item.case, config.get("program"), (at.file, at.line), item.findings))


def _review_chunk(chunk: tuple[str | None, list[RawRecord | InputError], bool]
                  ) -> tuple[bytes, Counter, Counter, list[GroupRow]]:
    """Review a chunk in a worker; return the encoded NDJSON, its tallies (records: claims in,
    errors: claims in error, companion_errors: bad records of companion files) and the grouping
    rows of the edits across claims (cheap to pickle)."""
    index_path, items, several = chunk
    parts, tally, counts, rows = [], Counter(), Counter(), []
    state = _worker_state
    joiner = _joiner_for(index_path)
    for item in items:
        rec, row = input_record(item, state["reference"], state["config"], joiner, several)
        if isinstance(item, InputError) and not item.claim:
            tally["companion_errors"] += 1  # a companion file's bad record: reported, not a claim
        elif "error" in rec:
            tally["records"] += 1
            tally["errors"] += 1
        else:
            tally["records"] += 1
            counts.update(f["code"] for f in rec["findings"])
        if row is not None:
            rows.append(row)
        parts.append(dumps(rec))
    return (b"\n".join(parts) + b"\n") if parts else b"", tally, counts, rows


def cross_claim_record(found: CrossClaimFinding) -> dict:
    """The output record of a finding across claims: the claims and lines involved, the finding."""
    return {"claims": list(found.claims), "lines": [{"claim": c, "line": ln.key} for c, ln in found.lines],
            "findings": [finding_record(found.finding)]}


def run(inputs: str | Sequence[str], output: IO[bytes], *, db_path: str | None, config: dict,
        workers: int = 1, chunk_size: int = 500, progress: bool = False) -> dict:
    """Review every claim record of `inputs` (NDJSON files, Bulk Data exports: service/bulk_input.py;
    "-" = stdin) into `output`, then the edits across claims (service/claim_groups.py); return the
    summary. The records are staged in a temporary file and written at the end: a claim the
    findings across claims edit has its record's findings replaced by its amended ones
    (:func:`amended_review`, as --out-dir does), then come the findings across claims. Raises
    UsageError for an INPUT that cannot be used, NotNdjson for pretty-printed JSON."""
    started = time.perf_counter()
    paths = [inputs] if isinstance(inputs, str) else list(inputs)
    counts: Counter[str] = Counter()
    tally: Counter[str] = Counter()
    cross = 0
    # the workers start first: the export index load parses its companion files in them
    with _pool(workers, _init_worker, (db_path, config)) as imap, BatchInput(paths, map_parts=imap) as source, \
            ClaimGroups() as groups:
        several = len(source.files) > 1
        for f in source.files:
            if f.claims and f.path != "-":
                _check_ndjson(f.path)  # NotNdjson before any output
        batches = ((source.index_path, items, several) for items in chunks(source.raw(), chunk_size))
        with open(os.path.join(groups.workdir, "records.ndjson"), "w+b") as staged, \
                open(os.path.join(groups.workdir, "across.ndjson"), "w+b") as across, \
                AmendedRecords(groups.workdir) as amended, _progress(progress) as advance:
            for blob, n_tally, n_counts, rows in imap(_review_chunk, batches):
                staged.write(blob)
                tally.update(n_tally)
                counts.update(n_counts)
                groups.add_all(rows)
                advance(n_tally["records"])
            for blob, codes, part in imap(_cross_records_chunk, chunks(groups.beneficiaries(), _CROSS_CHUNK)):
                across.write(blob)  # the findings across claims, and the claims they edit amended, in the workers
                counts.update(codes)
                cross += sum(codes.values())
                amended.add(part)
            one_file = None if several else next((f.path for f in source.files if f.claims), None)
            staged.seek(0)
            for line in amended.rewrite(staged, one_file, counts):
                output.write(line)
            across.seek(0)
            shutil.copyfileobj(across, output)
            amended_count = amended.count
    seconds = time.perf_counter() - started
    claims = tally["records"]
    return {"records": claims, "errors": tally["errors"], "companion_errors": tally["companion_errors"],
            "duplicates": {k: source.duplicates.get(k, 0) for k in DUPLICATE_COUNTS},
            "findings": dict(sorted((k, n) for k, n in counts.items() if n > 0)), "cross_claim_findings": cross,
            "amended": amended_count, "seconds": round(seconds, 3),
            "records_per_second": round(claims / seconds, 1) if seconds > 0 else None,
            "data": open_reference(db_path).describe()}


def _cross_records_chunk(chunk: list[list[tuple[str, bytes, tuple[str, int], bool]]]
                         ) -> tuple[bytes, Counter, dict[tuple[str, int], list[dict]]]:
    """The single-file output's edits across claims of some beneficiaries, in a worker
    (:meth:`ClaimGroups.beneficiaries`): the records of their findings across claims (NDJSON), their
    codes counted, and the claims they edit amended (:func:`amended_review`), by (file, line): their
    findings as output records."""
    state = _worker_state
    reference, config = state["reference"], state["config"]
    records: list[bytes] = []
    codes: Counter[str] = Counter()
    amended: dict[tuple[str, int], list[dict]] = {}
    for members in chunk:
        found_all, edited, _named = edits_across(members, reference, config)
        for found, _cases in found_all:
            records.append(dumps(cross_claim_record(found)))
            codes[found.finding.code] += 1
        for where, (_claim, case, parts) in edited.items():
            amended[where] = [finding_record(f) for f in amended_review(case, parts, reference, config)[1]]
    return b"".join(r + b"\n" for r in records), codes, amended


def edits_across(members: list[tuple[str, bytes, tuple[str, int], bool]], reference: ReferenceData, config: dict
                 ) -> tuple[list[tuple[CrossClaimFinding, dict]], dict[tuple[str, int], tuple[str, Case, list[Finding]]],
                            dict[tuple[str, int], bool]]:
    """One beneficiary's edits across claims (:func:`service.claim_groups.beneficiary_findings` over
    its grouped claims): the findings with the (grouped case, (file, line)) of their claims; the
    claims they edit (:func:`claim_edits`), by (file, line), with their cases as reviewed (decoded
    from the grouping: no second read nor join) and their parts of the findings; and, for each
    claim named, whether its own review found something."""
    blobs = {source: blob for _claim, blob, source, _own in members}
    own = {source: found_own for _claim, _blob, source, found_own in members}
    found_all = list(beneficiary_findings(members, reference, config))
    edits: dict[tuple[str, int], tuple[str, list[Finding]]] = {}
    named: dict[tuple[str, int], bool] = {}
    for found, cases in found_all:
        for where, claim, part in claim_edits(found, cases):
            edits.setdefault(where, (claim, []))[1].append(part)
        named.update((where, own[where]) for _case, where in cases.values())
    edited = {where: (claim, decode_case(blobs[where], grouped=False), parts) for where, (claim, parts) in edits.items()}
    return found_all, edited, named


# --- --out-dir: the findings table, corrected claims, errors, summary and report ------------------
FORMATS = ("parquet", "ndjson")
OUTPUT_NAMES = {"findings": "findings.{fmt}", "claims_corrected": "claims-corrected.ndjson",
                "errors": "errors.ndjson", "summary": "summary.json", "report": "report.html"}


def output_names(fmt: str) -> dict[str, str]:
    """The files an --out-dir run writes, by role."""
    return {k: v.format(fmt=fmt) for k, v in OUTPUT_NAMES.items()}


def _init_table_worker(db_path: str | None, config: dict, run: tuple[str, str, str], fmt: str) -> None:
    """A worker of an --out-dir run (:func:`_init_worker`)."""
    _init_worker(db_path, config)
    _worker_state["run"], _worker_state["format"] = run, fmt


def review_chunk_outputs(records: Iterable[tuple[str, int, bytes | dict | InputRecord | InputError]],
                         reference: ReferenceData, config: dict, run: tuple[str, str, str],
                         groups: list | None = None) -> tuple[list[tuple], list[bytes], list[bytes], Tally]:
    """Review (file, line, record) triples: the table rows, the errors and corrected Claims as
    NDJSON lines, and their tally. The partition function of the local pool and the Spark job.
    A companion file's bad record (InputError.claim false) is an error line, not a claim in."""
    rows: list[tuple] = []
    errors: list[bytes] = []
    fixed: list[bytes] = []
    tally = Tally()
    for file, number, raw in records:
        claim_rows, error, claim = review_table(raw, (file, number), reference, config, run, groups)
        if error is not None:
            if not (isinstance(raw, InputError) and not raw.claim):
                tally.errors += 1
            errors.append(dumps(error))
            continue
        tally.add_claim(claim_rows, claim is not None)
        rows += claim_rows
        if claim is not None:
            fixed.append(dumps(claim))
    return rows, errors, fixed, tally


def _table_chunk(task: tuple[str | None, list[RawRecord | InputError]]
                 ) -> tuple[object, bytes, bytes, Tally, list[GroupRow], list]:
    """Review a chunk of the input reader's records in a worker (joined here with the companions of
    the export index the task names); the rows come back as one Arrow record batch (Parquet) or NDJSON bytes, with the
    grouping rows of the edits across claims: cheap to send between processes; and each record's
    claim identity (BatchInput.admit: the repeats check, from the parse the join makes anyway)."""
    index_path, chunk = task
    joiner = _joiner_for(index_path)
    identities: list = []

    def joined(item: RawRecord | InputError) -> InputRecord | InputError:
        if isinstance(item, InputError):
            identities.append(None)
            return item
        record, identity = joiner.join_identified(item)
        identities.append(identity)
        return record

    records = ((item.file, item.line, joined(item)) for item in chunk)
    groups: list[GroupRow] = []
    rows, errors, fixed, tally = review_chunk_outputs(records, _worker_state["reference"], _worker_state["config"],
                                                      _worker_state["run"], groups)
    table = record_batch(rows) if _worker_state["format"] == "parquet" else ndjson_rows(rows)
    return table, b"".join(e + b"\n" for e in errors), b"".join(c + b"\n" for c in fixed), tally, groups, identities


def check_inputs(inputs: Sequence[str]) -> None:
    """Each claim file's first record is on one line (NotNdjson otherwise), before any output is
    made; raises UsageError for an INPUT that cannot be used (service/bulk_input.py)."""
    for f in input_files(inputs):
        if f.claims and f.path != "-":
            _check_ndjson(f.path)


def _check_ndjson(path: str) -> None:
    """Raise NotNdjson (naming the file) when its first two records are not one a line."""
    stream = open_input(path)
    try:
        ndjson_lines(itertools.islice(bounded_lines(stream), 64))
    except NotNdjson as exc:
        raise NotNdjson(f"{path}: {exc}") from None
    finally:
        stream.close()


def run_info(db_path: str | None, config: dict, run_id: str | None = None) -> tuple[tuple[str, str, str], dict]:
    """((run id, config hash, data release), the reference data's description) of a run."""
    described = open_reference(db_path).describe()
    return (run_id or uuid.uuid4().hex, config_hash(config), data_release(described)), described


def run_summary(tally: Tally, run: tuple[str, str, str], described: dict, fmt: str, seconds: float,
                duplicates: dict[str, int] | None = None) -> dict:
    return summary(tally, run={"run_id": run[0], "config_hash": run[1], "data_release": run[2],
                               "format": fmt, "data": described}, seconds=seconds, outputs=output_names(fmt),
                   duplicates=duplicates)


def summary_files(result: dict) -> dict[str, bytes]:
    """summary.json and report.html of a run's summary, by file name."""
    names = result["outputs"]
    return {names["summary"]: dumps(result) + b"\n", names["report"]: render_html(result).encode()}


def run_dir(inputs: Sequence[str], out_dir: str, *, db_path: str | None, config: dict, fmt: str = "parquet",
            workers: int = 1, chunk_size: int = 500, progress: bool = False, run_id: str | None = None) -> dict:
    """Review every record of `inputs` (NDJSON files, Bulk Data exports: service/bulk_input.py) into
    the files of :func:`output_names` under `out_dir` (created if missing; written aside in it and
    renamed at the end, so a failed run leaves the previous outputs), then the edits across claims
    (service/claim_groups.py: their rows follow the claims'); returns the summary (also summary.json)."""
    import pyarrow  # noqa: F401  (fail before any work when the table library is missing)

    started = time.perf_counter()
    run, described = run_info(db_path, config, run_id)
    names = output_names(fmt)
    os.makedirs(out_dir, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".fluoro-batch-", dir=out_dir)
    tally = Tally()
    initargs = (db_path, config, run, fmt)
    try:
        # the workers start first: the export index load parses its companion files in them
        with system_arrow_pool(), _pool(workers, _init_table_worker, initargs) as imap, \
                BatchInput(inputs, map_parts=imap) as source, ClaimGroups() as groups, \
                Amended(groups.workdir, fmt) as amended:
            return _run_dir(source, groups, amended, imap, initargs, out_dir, staging, names, described, run, tally,
                            fmt, chunk_size, progress, started)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _run_dir(source: BatchInput, groups: ClaimGroups, amended: Amended, imap: Callable, initargs: tuple, out_dir: str,
             staging: str, names: dict, described: dict, run: tuple[str, str, str], tally: Tally, fmt: str,
             chunk_size: int, progress: bool, started: float) -> dict:
    findings_path = os.path.join(staging, names["findings"])
    # the repeats check is the workers' (each claim's identity from its join's parse): a chunk is
    # kept here until its outputs are back, and one holding a repeated claim (rare) is reviewed
    # again here, as BatchInput.raw would have given it
    sent: collections.deque = collections.deque()
    batches = ((source.index_path, sent.append(chunk) or chunk) for chunk in chunks(source.raw(check=False),
                                                                                     chunk_size))
    with _progress(progress) as advance:
        table = StagedTable(findings_path, fmt, groups.workdir)
        with open(os.path.join(staging, names["errors"]), "wb") as errors_out, \
                open(os.path.join(staging, names["claims_corrected"]), "wb") as fixed_out:
            for rows, errors, fixed, part, group_rows, identities in imap(_table_chunk, batches):
                again = source.admit(sent.popleft(), identities)
                if again is not None:
                    if "run" not in _worker_state:
                        _init_table_worker(*initargs)
                    rows, errors, fixed, part, group_rows, _ = _table_chunk((source.index_path, again))
                table.write(rows)
                errors_out.write(errors)
                fixed_out.write(fixed)
                tally.merge(part)
                groups.add_all(group_rows)
                advance(part.claims_in)
            for rows, part, done, named in imap(_cross_chunk, chunks(groups.beneficiaries(), _CROSS_CHUNK)):
                table.write(rows)  # the edits across claims, beneficiaries reviewed in the workers
                tally.merge(part)
                amended.add(done)  # the claims they edit, amended in the workers: staged on disk
                amended.name(named)
            table.close()
    finish_outputs(table, amended, os.path.join(staging, names["claims_corrected"]), tally)
    # a claim with rows across claims and none of its own (none found, or withdrawn by the
    # amendment) has findings too: add_claim counted only claims with rows of their own
    tally.with_findings += amended.named_without_own()
    result = run_summary(tally, run, described, fmt, time.perf_counter() - started, source.duplicates)
    for name, text in summary_files(result).items():
        with open(os.path.join(staging, name), "wb") as fh:
            fh.write(text)
    for name in names.values():
        os.replace(os.path.join(staging, name), os.path.join(out_dir, name))
    return result


_CROSS_CHUNK = 200  # beneficiaries per task of the edits across claims


def _cross_chunk(chunk: list[list[tuple[str, bytes, tuple[str, int], bool]]]
                 ) -> tuple[object, Tally, AmendedPart, list[tuple[tuple[str, int], bool]]]:
    """The edits across claims of some beneficiaries in a worker (:meth:`ClaimGroups.beneficiaries`):
    their table rows (an Arrow record batch or NDJSON bytes) and tally; the claims they edit
    (:func:`claim_edits`) amended from their stored cases (no second read nor join); and, for each
    claim they name ((file, line)), whether its own review found something."""
    state = _worker_state
    reference, config, run = state["reference"], state["config"], state["run"]
    rows: list[tuple] = []
    amended = AmendedPart()
    named: dict[tuple[str, int], bool] = {}
    for members in chunk:
        found_all, edited, named_part = edits_across(members, reference, config)
        for found, cases in found_all:
            rows += cross_claim_rows(found, cases, reference, run)
        for where, (claim, case, parts) in edited.items():
            out = amended_outputs(case, where, parts, reference, config, run)
            if out is not None:
                amended.add(where, claim, out)
        named.update(named_part)
    tally = Tally()
    tally.add_rows(rows)
    fmt = state["format"]
    return (record_batch(rows) if fmt == "parquet" else ndjson_rows(rows)), tally, amended.packed(fmt), list(named.items())


def _usage(message: str) -> int:
    print(f"fluoro-cds batch: {message}", file=sys.stderr)
    return 2


def _check_usage(args) -> str | None:
    """The first usage error of the command line, or None."""
    if args.out_dir and args.out:
        return "--out and --out-dir are exclusive (--out: one NDJSON file; --out-dir: the table and report)"
    if not args.out_dir and len(args.input) > 1:
        return "several inputs need --out-dir (the single-file output reviews one input: a file or an export)"
    if not args.out_dir and (args.format or args.max_error_rate is not None):
        return "--format and --max-error-rate go with --out-dir"
    if args.input.count("-") > 1:
        return "stdin ('-') can be read once"
    for path in args.input:
        if path != "-" and not os.path.exists(path):
            return f"no such input file: {path}"
    if args.workers < 1:
        return "--workers must be at least 1"
    if args.max_error_rate is not None and not 0 <= args.max_error_rate <= 1:
        return "--max-error-rate must be a share from 0 to 1 (0.01 = 1% of the records)"
    if args.out_dir and os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        return f"--out-dir {args.out_dir} is not a directory"
    if args.metrics_file and (not args.metrics_file.endswith(metrics.BATCH_METRICS_SUFFIX)
                              or not os.path.isdir(os.path.dirname(os.path.abspath(args.metrics_file)))):
        return ("--metrics-file must be a file name ending in .prom in an existing directory "
                "(node_exporter's textfile collector reads *.prom)")
    return None


def starter_in_use(described: dict) -> str | None:
    """What of the reference data is the starter set (not a CMS release), or None."""
    if described.get("source") == "starter":
        return "the store holds no CMS release (the embedded starter set would answer every table)"
    fallback = described.get("fallback") or []
    if fallback:
        tables = ", ".join(f"{f.get('kind')}{' ' + f['setting'] if f.get('setting') else ''}" for f in fallback)
        return f"the store has no CMS release of: {tables} (the starter set would answer them)"
    return None


def command(args) -> int:
    """`fluoro-cds batch INPUT... [--out-dir DIR [--format parquet|ndjson] [--max-error-rate R]]
    [--out OUT] [--db PATH] [--config JSON] [--workers N] [--require-cms-data]
    [--metrics-file PATH.prom]`. Exit 0: the run completed; 1: the share of bad records is over
    --max-error-rate; 2: usage."""
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        config = resolve({CONFIG_KEY: loads(args.config)} if args.config else None,
                         settings.defaults)
    except (SettingsError, ConfigError) as exc:
        return _usage(f"configuration error: {exc}")
    except Exception as exc:  # --config not JSON
        return _usage(f"--config is not a JSON object: {exc}")
    problem = _check_usage(args)
    if problem:
        return _usage(problem)
    db_path = args.db or settings.db_path
    if args.require_cms_data:
        starter = starter_in_use(open_reference(db_path).describe())
        if starter:
            return _usage(f"--require-cms-data: {starter}; import the quarter's CMS files first "
                          "(`fluoro-cds ncci import FILE...`, README \"Payer data team\") or point --db at a "
                          "store that holds them")
    progress = sys.stderr.isatty() and not args.quiet
    try:
        if args.out_dir:
            check_inputs(args.input)
            summary_ = run_dir(args.input, args.out_dir, db_path=db_path, config=config,
                               fmt=args.format or "parquet", workers=args.workers, progress=progress)
            counts = {"records": summary_["claims_in"], "errors": summary_["errors"],
                      "findings": summary_["findings"], "seconds": summary_["seconds"]}
            brief = {k: summary_[k] for k in ("run_id", "claims_in", "reviewed", "errors", "findings",
                                              "seconds", "claims_per_second")}
            sys.stderr.write(dumps({**brief, "out_dir": args.out_dir}).decode() + "\n")
        else:
            counts = summary_ = _run_to(args, db_path, config, progress)
            sys.stderr.write(dumps(summary_).decode() + "\n")
    except (NotNdjson, UsageError) as exc:
        return _usage(f"{exc}")
    if args.max_error_rate is not None and counts["records"] and \
            counts["errors"] / counts["records"] > args.max_error_rate:  # not a success: no metrics
        print(f"fluoro-cds batch: {counts['errors']} of {counts['records']} records could not be read "
              f"({counts['errors'] / counts['records']:.2%}), over --max-error-rate "
              f"{args.max_error_rate:.2%}: see errors.ndjson", file=sys.stderr)
        return 1
    if args.metrics_file:
        metrics.write_batch_textfile(args.metrics_file, counts, time.time())
    return 0


def _run_to(args, db_path: str, config: dict, progress: bool) -> dict:
    """Run the batch into stdout, or into --out written aside and renamed."""
    source = args.input[0]
    if args.out in (None, "-"):
        summary_ = run(source, sys.stdout.buffer, db_path=db_path, config=config,
                       workers=args.workers, progress=progress)
    else:
        # Write aside and rename: a failed run never leaves a half-written output file behind.
        directory = os.path.dirname(os.path.abspath(args.out))
        fd, tmp = tempfile.mkstemp(prefix=".fluoro-batch-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                summary_ = run(source, out, db_path=db_path, config=config,
                               workers=args.workers, progress=progress)
            os.replace(tmp, args.out)
        except BaseException:
            os.unlink(tmp)
            raise
    return summary_


def _share(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        import argparse

        raise argparse.ArgumentTypeError("a number from 0 to 1") from None


def add_command(sub) -> None:
    p = sub.add_parser("batch", help="review FHIR claims offline (payer batch)")
    p.add_argument("input", nargs="+", help="NDJSON files of Claims, ExplanationOfBenefits or Bundles (the "
                                            "claim first), FHIR Bulk Data exports (directory or manifest), "
                                            "per-type NDJSON files; plain or gzip; '-' for stdin")
    p.add_argument("--out-dir", help="write findings.parquet (or .ndjson), claims-corrected.ndjson, "
                                     "errors.ndjson, summary.json and report.html here")
    p.add_argument("--format", choices=FORMATS, help="the findings table's format with --out-dir "
                                                     "(default parquet)")
    p.add_argument("--max-error-rate", type=_share, metavar="SHARE",
                   help="exit 1 when more than this share of the records (0 to 1) cannot be read "
                        "(default: bad records are reported in errors.ndjson, never fatal)")
    p.add_argument("--require-cms-data", action="store_true",
                   help="refuse to run (exit 2) unless every table comes from an imported CMS release")
    p.add_argument("--out", help="without --out-dir: one NDJSON line per input line, written aside and "
                                 "renamed (default: stdout)")
    p.add_argument("--db", help="NCCI store (default: $FLUORO_CDS_DB or the user data dir; the "
                                "starter set when it holds no release)")
    p.add_argument("--config", help="configuration options as a JSON object, e.g. "
                                    "'{\"global-billing\": true}' (over the defaults in $FLUORO_CDS_DEFAULTS)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--metrics-file", help="write the run's counts here for node_exporter's "
                                          "textfile collector (a *.prom file, replaced atomically)")
    p.set_defaults(func=command)

"""Batch review for payers and billing companies: the same rules over many FHIR claims.

Input: NDJSON, one record per line: a FHIR R4 Claim or ExplanationOfBenefit, or a Bundle whose
first entry is one of them followed by its companions (Encounter, Procedures, Observations,
DiagnosticReports, Locations), as ``context.claim`` of the claim-review service
(service/bulk_input.py). Output: NDJSON, one record per input line, in input order::

    {"line": 1, "claim": "c1", "resourceType": "Claim", "use": "claim", "findings": [{"code": "ptp-bundled", ...}]}
    {"line": 2, "claim": "c2", "resourceType": "ExplanationOfBenefit", "error": "...",
     "path": "ExplanationOfBenefit.item[0].servicedDate"}

A bad record never stops the run: it is reported on its own output line. The run's summary (claims,
errors, findings per code, claims per second) goes to stderr as JSON. Nothing is fetched: each
record must carry what it needs. :func:`review_lines` is the partition function the Spark job
(deploy/spark_job.py) maps over its partitions.
"""
from __future__ import annotations

import dataclasses
import itertools
import multiprocessing
import os
import sys
import tempfile
import time
from collections import Counter
from typing import IO, Iterable, Iterator, Sequence

from hooks.config import CONFIG_KEY, ConfigError, resolve
from hooks.context import InvalidResource
from hooks.extract import bundle_aliases
from hooks.extract.eob import case_from_billing, use_of
from hooks.findings import Finding
from hooks.rules import evaluate
from hooks.rules.cross_claim import CrossClaimFinding
from nccidata import open_reference
from nccidata.api import ReferenceData

from . import metrics
from .bulk_input import (BatchInput, InputError, InputRecord, Joiner, NotNdjson, RawRecord, UsageError,
                         ndjson_lines, open_input, review_input, split_record)
from .bulk_input import RECORD_TYPES
from .claim_groups import ClaimGroups, GroupRow, group_row
from .jsonio import dumps, loads


def finding_record(finding: Finding) -> dict:
    """A finding as plain JSON (codes, lines, fixes, citations, payment effect)."""
    rec = dataclasses.asdict(finding)
    rec["citations"] = [{**c, "details": dict(c["details"])} for c in rec["citations"]]
    rec["override_reasons"] = [{"code": c, "display": d} for c, d in finding.override_reasons]
    return rec


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
        value = loads(raw.strip())
    except Exception as exc:  # orjson.JSONDecodeError
        return {"claim": None, "resourceType": None, "error": f"not valid JSON: {exc}", "path": "$"}
    return review_record(value, reference, config)


REVIEWED_TYPES = RECORD_TYPES[:2]  # Claim, ExplanationOfBenefit


# --- process pool -------------------------------------------------------------------------------
_worker_state: dict = {}


def _init_worker(db_path: str | None, config: dict, index_path: str | None = None) -> None:
    _worker_state["reference"] = open_reference(db_path)
    _worker_state["config"] = config
    _worker_state["joiner"] = Joiner(index_path)


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
            group_row(item.case, config.get("program")))


def _review_chunk(chunk: tuple[list[RawRecord | InputError], bool]) -> tuple[bytes, Counter, Counter, list[GroupRow]]:
    """Review a chunk in a worker; return the encoded NDJSON, its tallies (records: claims in,
    errors: claims in error, companion_errors: bad records of companion files) and the grouping
    rows of the edits across claims (cheap to pickle)."""
    items, several = chunk
    parts, tally, counts, rows = [], Counter(), Counter(), []
    state = _worker_state
    for item in items:
        rec, row = input_record(item, state["reference"], state["config"], state["joiner"], several)
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


def _chunks(stream: Iterable, size: int) -> Iterator[list]:
    buf: list = []
    for item in stream:
        buf.append(item)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def run(inputs: str | Sequence[str], output: IO[bytes], *, db_path: str | None, config: dict,
        workers: int = 1, chunk_size: int = 500, progress: bool = False) -> dict:
    """Review every claim record of `inputs` (NDJSON files, Bulk Data exports: service/bulk_input.py;
    "-" = stdin) into `output`, then the edits across claims (service/claim_groups.py); return the
    summary. Raises UsageError for an INPUT that cannot be used, NotNdjson for pretty-printed JSON."""
    started = time.perf_counter()
    paths = [inputs] if isinstance(inputs, str) else list(inputs)
    counts: Counter[str] = Counter()
    tally: Counter[str] = Counter()
    cross = 0
    bar = None
    with BatchInput(paths) as source, ClaimGroups() as groups:
        several = len(source.files) > 1
        for f in source.files:
            if f.claims and f.path != "-":
                stream = open_input(f.path)
                try:
                    ndjson_lines(itertools.islice(stream, 64))  # NotNdjson before any output
                except NotNdjson as exc:
                    raise NotNdjson(f"{f.path}: {exc}") from None
                finally:
                    stream.close()
        chunks = ((items, several) for items in _chunks(source.raw(), chunk_size))
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit=" claims", file=sys.stderr)
        if workers <= 1:
            _init_worker(db_path, config, source.index_path)
            results: Iterable[tuple[bytes, Counter, Counter, list]] = map(_review_chunk, chunks)
            pool = None
        else:
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(db_path, config, source.index_path))
            results = pool.imap(_review_chunk, chunks)
        try:
            for blob, n_tally, n_counts, rows in results:
                output.write(blob)
                tally.update(n_tally)
                counts.update(n_counts)
                for row in rows:
                    groups.add(row)
                if bar is not None:
                    bar.update(n_tally["records"])
        except BaseException:  # e.g. a closed output pipe: stop the workers, do not finish
            if pool is not None:
                pool.terminate()
                pool.join()
                pool = None
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
            if bar is not None:
                bar.close()
        reference = open_reference(db_path)
        for found, _cases in groups.findings(reference, config):
            output.write(dumps(cross_claim_record(found)) + b"\n")
            counts[found.finding.code] += 1
            cross += 1
    seconds = time.perf_counter() - started
    claims = tally["records"]
    return {"records": claims, "errors": tally["errors"], "companion_errors": tally["companion_errors"],
            "findings": dict(sorted(counts.items())), "cross_claim_findings": cross, "seconds": round(seconds, 3),
            "records_per_second": round(claims / seconds, 1) if seconds > 0 else None,
            "data": open_reference(db_path).describe()}


def command(args) -> int:
    """`fluoro-cds batch INPUT [--out OUT] [--db PATH] [--config JSON] [--workers N]
    [--metrics-file PATH.prom]`."""
    from .settings import Settings, SettingsError

    try:
        settings = Settings.from_env()
        config = resolve({CONFIG_KEY: loads(args.config)} if args.config else None,
                         settings.defaults)
    except (SettingsError, ConfigError) as exc:
        print(f"fluoro-cds batch: configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # --config not JSON
        print(f"fluoro-cds batch: --config is not a JSON object: {exc}", file=sys.stderr)
        return 2
    for path in args.input:
        if path != "-" and not os.path.exists(path):
            print(f"fluoro-cds batch: no such input file: {path}", file=sys.stderr)
            return 2
    if args.metrics_file and (not args.metrics_file.endswith(metrics.BATCH_METRICS_SUFFIX)
                              or not os.path.isdir(os.path.dirname(os.path.abspath(args.metrics_file)))):
        print("fluoro-cds batch: --metrics-file must be a file name ending in .prom in an existing "
              "directory (node_exporter's textfile collector reads *.prom)", file=sys.stderr)
        return 2
    db_path = args.db or settings.db_path
    progress = sys.stderr.isatty() and not args.quiet
    try:
        summary = _run_to(args, db_path, config, progress)
    except (NotNdjson, UsageError) as exc:
        print(f"fluoro-cds batch: {exc}", file=sys.stderr)
        return 2
    sys.stderr.write(dumps(summary).decode() + "\n")
    if args.metrics_file:
        metrics.write_batch_textfile(args.metrics_file, summary, time.time())
    return 0


def _run_to(args, db_path: str, config: dict, progress: bool) -> dict:
    """Run the batch into stdout, or into --out written aside and renamed."""
    if args.out in (None, "-"):
        summary = run(args.input, sys.stdout.buffer, db_path=db_path, config=config,
                      workers=args.workers, progress=progress)
    else:
        # Write aside and rename: a failed run never leaves a half-written output file behind.
        directory = os.path.dirname(os.path.abspath(args.out))
        fd, tmp = tempfile.mkstemp(prefix=".fluoro-batch-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as out:
                summary = run(args.input, out, db_path=db_path, config=config,
                              workers=args.workers, progress=progress)
            os.replace(tmp, args.out)
        except BaseException:
            os.unlink(tmp)
            raise
    return summary


def add_command(sub) -> None:
    p = sub.add_parser("batch", help="review NDJSON FHIR claims offline (payer batch)")
    p.add_argument("input", nargs="+", help="NDJSON files of Claims, ExplanationOfBenefits or Bundles (the "
                                            "claim first), FHIR Bulk Data exports (directory or manifest), "
                                            "per-type NDJSON files; plain or gzip; '-' for stdin")
    p.add_argument("--out", help="output NDJSON file, written aside and renamed (default: stdout)")
    p.add_argument("--db", help="NCCI store (default: $FLUORO_CDS_DB or the user data dir; the "
                                "starter set when it holds no release)")
    p.add_argument("--config", help="configuration options as a JSON object, e.g. "
                                    "'{\"global-billing\": true}' (over the defaults in $FLUORO_CDS_DEFAULTS)")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--metrics-file", help="write the run's counts here for node_exporter's "
                                          "textfile collector (a *.prom file, replaced atomically)")
    p.set_defaults(func=command)

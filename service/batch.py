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
from typing import IO, Iterable, Iterator

from hooks.config import CONFIG_KEY, ConfigError, resolve
from hooks.context import InvalidResource
from hooks.extract import bundle_aliases
from hooks.extract.eob import case_from_billing, use_of
from hooks.findings import Finding
from hooks.rules import evaluate
from nccidata import open_reference
from nccidata.api import ReferenceData

from . import metrics
from .bulk_input import split_record
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
        return {"claim": None, "error": f"not valid JSON: {exc}", "path": "$"}
    return review_record(value, reference, config)


# --- process pool -------------------------------------------------------------------------------
_worker_state: dict = {}


def _init_worker(db_path: str | None, config: dict) -> None:
    _worker_state["reference"] = open_reference(db_path)
    _worker_state["config"] = config


def _review_chunk(chunk: tuple[int, list[bytes]]) -> tuple[bytes, int, int, Counter]:
    """Review a chunk in a worker; return the encoded NDJSON and its tallies (cheap to pickle)."""
    first, lines = chunk
    parts, records, errors, counts = [], 0, 0, Counter()
    for rec in review_lines(lines, _worker_state["reference"], _worker_state["config"], first):
        records += 1
        if "error" in rec:
            errors += 1
        else:
            counts.update(f["code"] for f in rec["findings"])
        parts.append(dumps(rec))
    return (b"\n".join(parts) + b"\n") if parts else b"", records, errors, counts


class NotNdjson(ValueError):
    """The input is one JSON document spread over lines (pretty-printed), not NDJSON."""


def _parses(line: bytes) -> bool:
    try:
        loads(line.strip())
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
    if (len(records) == 2 and records[0].lstrip()[:1] in (b"{", b"[")
            and not _parses(records[0]) and not _parses(records[1])):
        raise NotNdjson("the input must be NDJSON, one Claim or Bundle per line; its first "
                        "record spans several lines (pretty-printed JSON?). Convert it with "
                        "`jq -c . FILE` (or `jq -c '.[]' FILE` for an array)")
    return itertools.chain(head, lines)


def _chunks(stream: Iterable[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    buf: list[bytes] = []
    first = 1
    for number, line in enumerate(stream, start=1):
        if not buf:
            first = number
        buf.append(line)
        if len(buf) >= size:
            yield first, buf
            buf = []
    if buf:
        yield first, buf


def run(input_path: str, output: IO[bytes], *, db_path: str | None, config: dict,
        workers: int = 1, chunk_size: int = 500, progress: bool = False) -> dict:
    """Review every record of `input_path` ("-" = stdin) into `output`; return the summary."""
    started = time.perf_counter()
    counts: Counter[str] = Counter()
    claims = errors = 0
    stream = sys.stdin.buffer if input_path == "-" else open(input_path, "rb")
    bar = None
    try:
        lines = ndjson_lines(stream)
        if progress:
            from tqdm import tqdm

            bar = tqdm(unit=" claims", file=sys.stderr)
        if workers <= 1:
            _init_worker(db_path, config)
            results: Iterable[tuple[bytes, int, int, Counter]] = map(
                _review_chunk, _chunks(lines, chunk_size))
            pool = None
        else:
            ctx = multiprocessing.get_context("spawn")
            pool = ctx.Pool(workers, initializer=_init_worker, initargs=(db_path, config))
            results = pool.imap(_review_chunk, _chunks(lines, chunk_size))
        try:
            for blob, n_records, n_errors, n_counts in results:
                output.write(blob)
                claims += n_records
                errors += n_errors
                counts.update(n_counts)
                if bar is not None:
                    bar.update(n_records)
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
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    return {"records": claims, "errors": errors, "findings": dict(sorted(counts.items())),
            "seconds": round(seconds, 3),
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
    if args.input != "-" and not os.path.isfile(args.input):
        print(f"fluoro-cds batch: no such input file: {args.input}", file=sys.stderr)
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
    except NotNdjson as exc:
        print(f"fluoro-cds batch: {args.input}: {exc}", file=sys.stderr)
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
    p.add_argument("input", help="NDJSON file of Claims or Bundles (Claim first); '-' for stdin")
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

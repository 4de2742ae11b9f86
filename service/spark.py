"""Payer batch on Apache Spark: the claim-review rules mapped over NDJSON claims and Bulk Data exports.

Each executor opens the reference data once per partition (the SQLite store's catalog and
release files, shipped as one directory with ``SparkContext.addFile``, or the embedded starter
set) and reviews its records exactly as ``fluoro-cds batch`` does. Two outputs:

- :func:`run_table_job` (``--out-dir``): the outputs of ``fluoro-cds batch --out-dir``: the findings
  table written as Parquet from a typed DataFrame (its StructType built from
  service/findings_table.py's one declaration) or as NDJSON text, errors.ndjson and
  claims-corrected.ndjson as text, summary.json and report.html written by the driver from the
  partitions' tallies; each record joined with its export's companions (:class:`ExportOnDriver`:
  the local engine's on-disk index, built on the driver and shipped) and reviewed by
  :func:`service.batch.review_table`, the local engine's own function, so the rows are the same.
- :func:`run_job`: one JSON line per input line (:func:`service.batch.review_record`), with its
  1-based global line number.

Entry point: deploy/spark_job.py.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from hooks.config import CONFIG_KEY, resolve

from .batch import (amended_outputs, cross_claim_rows, edits_across, output_names, retraction, review_raw, review_table,
                    run_info, run_summary, summary_files)
from .batch_report import Tally, merged
from .bulk_input import (INDEX_NAME, MAX_RECORD_BYTES, OVERSIZED, InputError, Joiner, RawRecord, UsageError,
                         claim_identity, repeat_reason)
from .findings_table import SOURCE_FILE, SOURCE_LINE, ndjson_rows, spark_schema
from .jsonio import dumps, loads
from .spark_inputs import ExportOnDriver, local_path


def ship_store(sc, db_path: str) -> Path:
    """Ship the store to the executors: its catalog and its release files (with their pair
    indexes), staged as one directory (hard links where the file system allows, else copies)
    and sent with ``addFile(recursive=True)``. Returns the staging directory (remove it once the
    job is done); its name and the catalog's name locate the store for :func:`review_partition`.
    A missing store ships an empty directory: executors then use the starter set."""
    from nccidata.store import releases_dir

    catalog = Path(db_path)
    staging = Path(tempfile.mkdtemp(prefix="fluoro-cds-store-"))
    if catalog.is_file():
        shutil.copy2(catalog, staging / catalog.name)  # small, and written by imports: a copy
        source = releases_dir(catalog)
        if source.is_dir():
            target = releases_dir(staging / catalog.name)
            target.mkdir()
            for f in source.iterdir():
                if f.is_file() and not f.name.startswith("."):  # not releases being built
                    try:
                        os.link(f, target / f.name)  # release files are never changed
                    except OSError:
                        shutil.copy2(f, target / f.name)
    sc.addFile(str(staging), recursive=True)
    return staging


def _executor_reference(store: tuple[str, str] | None):
    """The reference data on an executor: the shipped store (:func:`ship_store`), else the starter set."""
    from nccidata import open_reference

    db_path = None
    if store:
        from pyspark import SparkFiles

        directory, catalog = store
        db_path = os.path.join(SparkFiles.get(directory), catalog)
    return open_reference(db_path)


def review_partition(rows: Iterable[tuple[str, int]], store: tuple[str, str] | None,
                     config: dict) -> Iterator[str]:
    """Review (line, index) pairs of one partition; yields NDJSON strings (blank lines skipped)."""
    reference = _executor_reference(store)
    for line, index in rows:
        if line.strip():
            yield dumps({"line": index + 1, **review_raw(line, reference, config)}).decode()


def local_session(app_name: str = "fluoro-cds", master: str | None = None):
    """A SparkSession bound to 127.0.0.1 (local mode unless spark-submit says otherwise;
    `master`, e.g. "local[2]", sets it)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers use this interpreter (and so this environment's packages) unless told otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master) if master else SparkSession.builder
    return (builder.appName(app_name)
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.ui.enabled", "false")
            .getOrCreate())


class OutputExists(FileExistsError):
    """The output folder is there already (Spark never overwrites one)."""


def local_output_exists(output_path: str) -> bool:
    """Whether `output_path`, a plain path or a file: URI, names something that exists (other
    schemes, e.g. hdfs:, are left to Spark)."""
    if output_path.startswith("file:"):
        output_path = output_path.removeprefix("file:").removeprefix("//")
    elif "://" in output_path:
        return False
    return os.path.lexists(output_path)


def check_output(output_path: str) -> None:
    """Refuse an output folder that exists already (OutputExists), before Spark does with a Java
    traceback."""
    if local_output_exists(output_path):
        raise OutputExists(f"output folder {output_path} exists already; remove it or choose another")


# the Java exceptions of a compressed input Hadoop cannot read to its end (cut short, corrupt data)
_DAMAGED_INPUT = ("java.io.EOFException", "java.util.zip.ZipException", "java.util.zip.DataFormatException")


@contextlib.contextmanager
def readable_inputs() -> Iterator[None]:
    """Turn a job that failed because Spark could not read a gzip input to its end into a
    UsageError that says so (the CLI's one line and exit 2; no output is committed). The local
    engine reads such a file up to the damage and reports the rest as one error record
    (service.bulk_input.DAMAGED); Spark's text reader cannot give the lines before it, so the job
    refuses the input instead of reviewing part of it without saying."""
    try:
        yield
    except Exception as exc:
        cause = getattr(exc, "java_exception", None)
        while cause is not None:
            name = cause.getClass().getName()
            if name in _DAMAGED_INPUT:
                raise UsageError(f"a gzip input could not be read to its end ({name}: {cause.getMessage()}): "
                                 "it is cut short or damaged; find it with `gzip -t FILE...` and export or "
                                 "download it again (`fluoro-cds batch` reviews such a file up to the damage and "
                                 "reports the rest as an error record)") from None
            cause = cause.getCause()
        raise


def _discard(outputs: list[str]) -> None:
    """Remove what a failed job left of its outputs on a local file system (none of them existed
    before it: check_output), so that running it again is not refused; on a cluster file system
    they are left to the operator."""
    for output in outputs:
        local = local_path(output)
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)


@readable_inputs()
def run_job(spark, input_path: str, output_path: str, *, db_path: str | None = None,
            config_overrides: dict | None = None, defaults: dict | None = None) -> int:
    """Review every line of `input_path` into text files under `output_path`; returns the count.

    `defaults` are the deployment's configuration defaults (FLUORO_CDS_DEFAULTS, as for
    ``fluoro-cds batch``), `config_overrides` the job's own options over them. Configuration is
    validated on the driver before any task runs (bad options: ConfigError); an existing local
    output folder is refused before any task runs (OutputExists).
    """
    config = resolve({CONFIG_KEY: config_overrides or {}}, defaults)
    check_output(output_path)
    sc = spark.sparkContext
    staging = ship_store(sc, db_path) if db_path else None
    store = (staging.name, Path(db_path).name) if staging else None
    try:
        out = (sc.textFile(input_path).zipWithIndex()
               .mapPartitions(lambda rows: review_partition(rows, store, config)))
        out.saveAsTextFile(output_path)
        return sc.textFile(output_path).count()
    except BaseException:
        _discard([output_path])
        raise
    finally:
        if staging:  # the staged copy of the store, once every task has fetched it
            shutil.rmtree(staging, ignore_errors=True)


# --- --out-dir: the batch's outputs ------------------------------------------------------------------
ROW, ERROR, FIXED, TALLY, GROUP, AMEND = "r", "e", "c", "t", "g", "a"


def _executor_joiner(index: str | None) -> Joiner:
    """The export's companions on an executor: the driver's on-disk index (:func:`ship_index`), or
    none (each record carries what it needs)."""
    if index is None:
        return Joiner(None)
    from pyspark import SparkFiles

    return Joiner(os.path.join(SparkFiles.get(index), INDEX_NAME))


def table_partition(records: Iterable[tuple[str, int, str]], store: tuple[str, str] | None, config: dict,
                    run: tuple[str, str, str], index: str | None = None, repeats=None) -> Iterator[tuple[str, object]]:
    """Review (file, line number, line) triples of one partition (blank lines skipped), each joined
    with the export's companions (`index`: the shipped index's name; :class:`~service.bulk_input.Joiner`,
    as the local engine's workers do); `repeats`: a broadcast of the repeated claims
    (:func:`_repeats`: identical ones skipped, conflicting ones errors). Yields tagged items: (ROW, a
    table row), (ERROR, an errors.ndjson line), (FIXED, a corrected Claim line), (GROUP, the claim's
    :class:`~service.claim_groups.GroupRow` for the edits across claims), and last (TALLY, the
    partition's :class:`~service.batch_report.Tally`)."""
    reference = _executor_reference(store)
    joiner = _executor_joiner(index)
    repeated = repeats.value if repeats is not None else {}
    tally = Tally()
    for path, number, line in records:
        if not line.strip():
            continue
        repeat = repeated.get((path, number))
        if repeat is not None and repeat[0] == "identical":
            continue
        raw = RawRecord(path, number, _record_bytes(line))
        record = InputError(path, number, *repeat[1:]) if repeat is not None else joiner.join(raw)
        groups: list = []
        rows, error, claim = review_table(record, (path, number), reference, config, run, groups)
        for row in groups:
            yield GROUP, row
        if error is not None:
            tally.errors += 1
            yield ERROR, dumps(error).decode()
            continue
        tally.add_claim(rows, claim is not None)
        for row in rows:
            yield ROW, row
        if claim is not None:
            yield FIXED, dumps(claim).decode()
    yield TALLY, tally


def _record_bytes(line: str) -> bytes:
    """A line as Spark read it, as the local reader gives it (service.bulk_input.numbered_lines):
    its bytes, or OVERSIZED past MAX_RECORD_BYTES."""
    data = line.encode()
    return data if len(data) <= MAX_RECORD_BYTES else OVERSIZED


def _identity(record: tuple[str, int, str], order: dict[str, int]) -> list[tuple[str, tuple]]:
    """[(Type/id, (file order, line, file, type, id, digest))] of a claim line with an id, else []."""
    path, number, line = record
    found = claim_identity(_record_bytes(line)) if line.strip() else None
    if found is None:
        return []
    rtype, rid, digest = found
    return [(f"{rtype}/{rid}", (order.get(path, 0), number, path, rtype, rid, digest))]


def _repeats(lines, order: dict[str, int]) -> dict[tuple[str, int], tuple]:
    """The repeated claims, found with Spark's grouping by Type/id: {(file, line): ("identical",) or
    ("conflicting", path, reason, type, id)} of every record after the first of its Type/id (in input
    order), as :class:`service.bulk_input.ClaimsSeen` decides while the local engine reads."""
    def later(group):
        first, *rest = sorted(group[1])
        for _o, number, path, rtype, rid, digest in rest:
            if digest == first[5]:
                yield (path, number), ("identical",)
            else:
                yield (path, number), ("conflicting", f"{rtype}.id", repeat_reason(group[0], first[2], first[1]),
                                       rtype, rid)

    return dict(lines.flatMap(lambda r: _identity(r, order)).groupByKey().filter(lambda g: len(g[1]) > 1)
                .flatMap(later).collect())


def cross_partition(patients: Iterable[tuple[str, Iterable]], store: tuple[str, str] | None, config: dict,
                    run: tuple[str, str, str], order: dict[str, int]) -> Iterator[tuple[str, object]]:
    """The edits across claims of the beneficiaries of one partition (Spark has grouped their
    GroupRows by beneficiary), as the local engine's workers make them
    (:func:`service.batch.edits_across` over each beneficiary's claims in input order, a claim id
    given twice: its first record): (ROW, a row across claims); for each claim they edit, amended
    from its grouped case (:func:`service.batch.amended_outputs`: no second read nor join), its
    (ROW, an amended row)s, (FIXED, its corrected Claim line) and (AMEND, ((file, line), "Type/id")),
    whose first review's outputs the driver leaves out; and last (TALLY, the partition's tally, which counts
    the claims named across claims that have no rows of their own, as the local engine does)."""
    reference = _executor_reference(store)
    tally = Tally()
    for _patient, rows in patients:
        members = [(r.claim, r.case, r.source, r.own)
                   for r in sorted(rows, key=lambda r: (order.get(r.source[0], 0), r.source[1]))]
        found_all, edited, named = edits_across(members, reference, config)
        for found, cases in found_all:
            out = cross_claim_rows(found, cases, reference, run)
            tally.add_rows(out)
            for r in out:
                yield ROW, r
        own_after: dict[tuple[str, int], bool] = {}
        for where, (claim, case, parts) in edited.items():
            amended = amended_outputs(case, where, parts, reference, config, run)
            if amended is None:
                continue
            own_rows, fixed, change = amended
            for r in own_rows:
                yield ROW, r
            if fixed is not None:
                yield FIXED, dumps(fixed).decode()
            tally.merge(change)
            own_after[where] = bool(own_rows)
            yield AMEND, (where, claim)
        # a claim with rows across claims and none of its own (none found, or withdrawn by the
        # amendment) has findings too (the reviews' tallies count the claims with rows of their own)
        tally.with_findings += sum(1 for where, own in named.items() if not own_after.get(where, own))
    yield TALLY, tally


def _cross_claim(tagged, store: tuple[str, str] | None, config: dict, run: tuple[str, str, str], inputs: list[str]):
    """The tagged rows and tally of the edits across claims, with Spark's own grouping: the claims'
    grouping keys (beneficiary, rendering provider, date of service, NCCI table, program) grouped to
    find the groups with 76000 on one claim and lines on another; the claims of those groups'
    beneficiaries grouped by beneficiary and reviewed together (:func:`cross_partition`)."""
    order = {path: i for i, path in enumerate(inputs)}
    group_rows = tagged.filter(lambda t: t[0] == GROUP).map(lambda t: t[1])
    wanted = (group_rows.flatMap(lambda r: [(k, (r.patient, r.claim, fluoro)) for k, fluoro in r.keys])
              .groupByKey()
              .filter(lambda kv: len({c for _p, c, _f in kv[1]}) > 1 and any(f for _p, _c, f in kv[1]))
              .flatMap(lambda kv: {p for p, _c, _f in kv[1]})
              .distinct().map(lambda p: (p, None)))
    by_patient = group_rows.map(lambda r: (r.patient, r)).join(wanted).map(lambda kv: (kv[0], kv[1][0])).groupByKey()
    return by_patient.mapPartitions(lambda it: cross_partition(it, store, config, run, order))


def _claim_key(line: str) -> str:
    """"Claim/c1" of a corrected Claim's NDJSON line."""
    claim = loads(line)
    return f"{claim.get('resourceType')}/{claim.get('id')}"


def _join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


@readable_inputs()
def run_table_job(spark, inputs: list[str], out_dir: str, *, db_path: str | None = None,
                  config_overrides: dict | None = None, defaults: dict | None = None, fmt: str = "parquet",
                  run_id: str | None = None) -> dict:
    """The outputs of ``fluoro-cds batch --out-dir`` under `out_dir` (Spark writes each of
    findings.parquet, findings.ndjson, errors.ndjson and claims-corrected.ndjson as a folder of
    part files; summary.json and report.html are files, written by the driver). Configuration
    is validated and existing outputs refused (OutputExists) before any task runs; a gzip claim
    file Spark cannot read to its end is a UsageError (:func:`readable_inputs`). Returns the
    summary."""
    import time

    from pyspark import StorageLevel

    started = time.perf_counter()
    config = resolve({CONFIG_KEY: config_overrides or {}}, defaults)
    names = output_names(fmt)
    for name in names.values():
        check_output(_join(out_dir, name))
    run, described = run_info(db_path, config, run_id)
    sc = spark.sparkContext
    staging = ship_store(sc, db_path) if db_path else None
    store = (staging.name, Path(db_path).name) if staging else None
    tagged = cross = export = None
    try:
        export = ExportOnDriver(inputs, sc)
        claim_files = export.claim_files
        order = {path: i for i, path in enumerate(claim_files)}
        parts = [sc.textFile(path).zipWithIndex().map(lambda li, path=path: (path, li[1] + 1, li[0]))
                 for path in claim_files]
        lines = parts[0] if len(parts) == 1 else sc.union(parts)
        repeated = _repeats(lines, order)
        repeats = sc.broadcast(repeated)
        index = export.index_name
        tagged = lines.mapPartitions(lambda it: table_partition(it, store, config, run, index, repeats)) \
            .persist(StorageLevel.MEMORY_AND_DISK)
        cross = _cross_claim(tagged, store, config, run, claim_files).persist(StorageLevel.MEMORY_AND_DISK)
        # the claims the edits across claims edit, amended in `cross` from their grouped cases
        # (service.batch.amended_outputs): their first review's outputs left out, as the local engine does
        edited = dict(cross.filter(lambda t: t[0] == AMEND).map(lambda t: (tuple(t[1][0]), t[1][1])).collect())
        if edited:
            amend = sc.broadcast(edited)
            edited_claims = set(edited.values())

            def first_review(t) -> bool:  # an amended claim's row or corrected Claim from its first review
                return (t[0] == ROW and (t[1][SOURCE_FILE], t[1][SOURCE_LINE]) in amend.value
                        or t[0] == FIXED and _claim_key(t[1]) in edited_claims)

            tagged_kept = tagged.filter(lambda t: not first_review(t))
            # what the amendment replaces, taken back from the tally (service.batch.retraction)
            dropped = tagged.filter(first_review).collect()
            taken_back = retraction([r for tag, r in dropped if tag == ROW], len(edited),
                                    sum(1 for tag, _r in dropped if tag == FIXED))
        else:
            tagged_kept = tagged
            taken_back = Tally()
        rows = tagged_kept.union(cross).filter(lambda t: t[0] == ROW).map(lambda t: t[1])
        if fmt == "parquet":
            spark.createDataFrame(rows, spark_schema()).write.parquet(_join(out_dir, names["findings"]))
        else:
            rows.map(lambda r: ndjson_rows([r]).decode().rstrip("\n")).saveAsTextFile(_join(out_dir, names["findings"]))
        companion_errors = sc.parallelize([(ERROR, e) for e in export.errors], 1)
        for tag, name in ((ERROR, "errors"), (FIXED, "claims_corrected")):
            companion_errors.union(tagged_kept).union(cross).filter(lambda t, tag=tag: t[0] == tag) \
                .map(lambda t: t[1]).saveAsTextFile(_join(out_dir, names[name]))
        duplicates = Counter(export.duplicates)
        duplicates.update(f"claims_{kind[0]}" for kind in repeated.values())
        tally = merged(tagged.union(cross).filter(lambda t: t[0] == TALLY).map(lambda t: t[1])
                       .collect()).merge(taken_back)
    except BaseException:
        _discard([_join(out_dir, name) for name in names.values()])
        raise
    finally:
        for rdd in (tagged, cross):
            if rdd is not None:
                rdd.unpersist()
        if export is not None:
            export.close()
        if staging:
            shutil.rmtree(staging, ignore_errors=True)
    result = run_summary(tally, run, described, fmt, time.perf_counter() - started, duplicates)
    local = local_path(out_dir)
    for name, blob in summary_files(result).items():
        if local is not None:
            with open(os.path.join(local, name), "wb") as fh:
                fh.write(blob)
        else:  # a cluster file system: one part file in a folder of that name
            sc.parallelize([blob.decode().rstrip("\n")], 1).saveAsTextFile(_join(out_dir, name))
    return result

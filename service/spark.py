"""Payer batch on Apache Spark: the claim-review rules mapped over NDJSON claims.

Each executor opens the reference data once per partition (the SQLite store's catalog and
release files, shipped as one directory with ``SparkContext.addFile``, or the embedded starter
set) and reviews its records with
:func:`service.batch.review_record`, exactly as ``fluoro-cds batch`` does. Output: one JSON line
per input line, with its 1-based global line number. Entry point: deploy/spark_job.py.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from hooks.config import CONFIG_KEY, resolve

from .batch import review_raw
from .jsonio import dumps


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


def review_partition(rows: Iterable[tuple[str, int]], store: tuple[str, str] | None,
                     config: dict) -> Iterator[str]:
    """Review (line, index) pairs of one partition; yields NDJSON strings (blank lines skipped)."""
    from nccidata import open_reference

    db_path = None
    if store:
        from pyspark import SparkFiles

        directory, catalog = store
        db_path = os.path.join(SparkFiles.get(directory), catalog)
    reference = open_reference(db_path)
    for line, index in rows:
        if line.strip():
            yield dumps({"line": index + 1, **review_raw(line, reference, config)}).decode()


def local_session(app_name: str = "fluoro-cds"):
    """A SparkSession bound to 127.0.0.1 (local mode unless spark-submit says otherwise)."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    # Python workers use this interpreter (and so this environment's packages) unless told otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    return (SparkSession.builder.appName(app_name)
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
    finally:
        if staging:  # the staged copy of the store, once every task has fetched it
            shutil.rmtree(staging, ignore_errors=True)

"""Payer batch on Apache Spark: the claim-review rules mapped over NDJSON claims.

Each executor opens the reference data once per partition (the SQLite store shipped with
``SparkContext.addFile``, or the embedded starter set) and reviews its records with
:func:`service.batch.review_record`, exactly as ``fluoro-cds batch`` does. Output: one JSON line
per input line, with its 1-based global line number. Entry point: deploy/spark_job.py.
"""
from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator

from hooks.config import resolve

from .batch import review_raw
from .jsonio import dumps


def review_partition(rows: Iterable[tuple[str, int]], db_name: str | None,
                     config: dict) -> Iterator[str]:
    """Review (line, index) pairs of one partition; yields NDJSON strings (blank lines skipped)."""
    from nccidata import open_reference

    db_path = None
    if db_name:
        from pyspark import SparkFiles

        db_path = SparkFiles.get(db_name)
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


def run_job(spark, input_path: str, output_path: str, *, db_path: str | None = None,
            config_overrides: dict | None = None) -> int:
    """Review every line of `input_path` into text files under `output_path`; returns the count.

    Configuration is validated on the driver before any task runs (bad options: ConfigError).
    """
    config = resolve({"fluoro-cds.configuration": config_overrides or {}})
    sc = spark.sparkContext
    db_name = None
    if db_path:
        sc.addFile(db_path)
        db_name = os.path.basename(db_path)
    out = (sc.textFile(input_path).zipWithIndex()
           .mapPartitions(lambda rows: review_partition(rows, db_name, config)))
    out.saveAsTextFile(output_path)
    return sc.textFile(output_path).count()

"""Spark job entry: review NDJSON FHIR claims with the claim-review rules at scale.

    spark-submit deploy/spark_job.py INPUT... --out-dir DIR [--format parquet|ndjson] [--db ncci.sqlite]
        [--config '{"global-billing": true}']
    spark-submit deploy/spark_job.py INPUT OUTPUT_DIR [--db ncci.sqlite] [--config ...]

INPUT: NDJSON (a path, a glob or a directory Spark can read; gzip as Spark reads it) of Claims,
ExplanationOfBenefits or Claim-first Bundles; with --out-dir also a FHIR Bulk Data export (its
directory, manifest or per-type files, local or on a Hadoop file system such as hdfs: or s3a:: the
companion files indexed on the driver, joined on the executors, as ``fluoro-cds batch`` does;
service/spark_inputs.py). With --out-dir: the outputs of ``fluoro-cds batch
--out-dir`` (findings.parquet from a typed DataFrame, or findings.ndjson; errors.ndjson;
claims-corrected.ndjson; each a folder of part files; summary.json and report.html written by
the driver), with the same rows as the local engine; none of them may exist yet. Without it:
OUTPUT_DIR gets Spark text output, one JSON line per input line (findings, or an error with its
FHIR path); it must not exist yet. The fluoro-cds package must be installed where the executors run.
Settings as for ``fluoro-cds batch``: the store is --db, else FLUORO_CDS_DB, else the user data
dir's ``ncci.sqlite`` (the starter set when it holds no release); FLUORO_CDS_DEFAULTS gives the
configuration defaults, --config options over them. Bad usage: one line on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from hooks.config import CONFIG_KEY, ConfigError, resolve
from nccidata.cli import Parser
from service.settings import Settings, SettingsError
from service.batch import FORMATS, output_names
from service.bulk_input import UsageError
from service.spark import OutputExists, check_output, local_session, run_job, run_table_job


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="spark_job.py", description="the claim-review rules over NDJSON claims on Spark")
    ap.add_argument("paths", nargs="+", metavar="INPUT",
                    help="NDJSON claims (paths, globs or directories Spark can read) or, with --out-dir, "
                         "Bulk Data exports (directory or manifest, local or hdfs:/s3a:/...); without --out-dir: "
                         "INPUT OUTPUT_DIR (the output folder, must not exist)")
    ap.add_argument("--out-dir", help="write the batch outputs here (as `fluoro-cds batch --out-dir`)")
    ap.add_argument("--format", choices=FORMATS, default="parquet", help="the findings table's format")
    ap.add_argument("--master", help="the Spark master when not run by spark-submit, e.g. local[2]")
    ap.add_argument("--db", help="NCCI store (default: $FLUORO_CDS_DB or the user data dir; the "
                                 "starter set when it holds no release)")
    ap.add_argument("--config", help="configuration options as a JSON object "
                                     "(over the defaults in $FLUORO_CDS_DEFAULTS)")
    args = ap.parse_args(argv)
    if not args.out_dir and len(args.paths) != 2:
        print("spark_job: give INPUT OUTPUT_DIR, or INPUT... --out-dir DIR", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        overrides = json.loads(args.config) if args.config else {}
        if not isinstance(overrides, dict):
            raise ConfigError("--config must be a JSON object")
        resolve({CONFIG_KEY: overrides}, settings.defaults)  # before Spark starts
    except (SettingsError, ConfigError, json.JSONDecodeError) as exc:
        print(f"spark_job: configuration error: {exc}", file=sys.stderr)
        return 2
    db_path = args.db or settings.db_path
    try:
        if args.out_dir:
            for name in output_names(args.format).values():  # before Spark starts
                check_output(args.out_dir.rstrip("/") + "/" + name)
            spark = local_session("fluoro-cds-claim-review", args.master)
            summary = run_table_job(spark, args.paths, args.out_dir, db_path=db_path, config_overrides=overrides,
                                    defaults=settings.defaults, fmt=args.format)
            print(json.dumps({k: summary[k] for k in ("run_id", "claims_in", "reviewed", "errors", "findings")}
                             | {"out_dir": args.out_dir}))
            return 0
        source, output = args.paths
        check_output(output)  # before Spark starts
        spark = local_session("fluoro-cds-claim-review", args.master)
        count = run_job(spark, source, output, db_path=db_path,
                        config_overrides=overrides, defaults=settings.defaults)
    except (OutputExists, UsageError) as exc:
        print(f"spark_job: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"records": count, "output": output}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

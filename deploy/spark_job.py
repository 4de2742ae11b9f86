"""Spark job entry: review NDJSON FHIR claims with the claim-review rules at scale.

    spark-submit deploy/spark_job.py INPUT OUTPUT_DIR [--db ncci.sqlite] [--config '{"global-billing": true}']

INPUT: NDJSON (a path, a glob or a directory Spark can read) of Claims or Claim-first Bundles.
OUTPUT_DIR: Spark text output, one JSON line per input line (findings, or an error with its FHIR
path); it must not exist yet. The fluoro-cds package must be installed where the executors run.
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
from service.spark import OutputExists, check_output, local_session, run_job


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="spark_job.py", description="the claim-review rules over NDJSON claims on Spark")
    ap.add_argument("input", help="NDJSON claims: a path, glob or directory Spark can read")
    ap.add_argument("output", help="output folder (must not exist)")
    ap.add_argument("--db", help="NCCI store (default: $FLUORO_CDS_DB or the user data dir; the "
                                 "starter set when it holds no release)")
    ap.add_argument("--config", help="configuration options as a JSON object "
                                     "(over the defaults in $FLUORO_CDS_DEFAULTS)")
    args = ap.parse_args(argv)
    try:
        settings = Settings.from_env()
        overrides = json.loads(args.config) if args.config else {}
        if not isinstance(overrides, dict):
            raise ConfigError("--config must be a JSON object")
        resolve({CONFIG_KEY: overrides}, settings.defaults)  # before Spark starts
    except (SettingsError, ConfigError, json.JSONDecodeError) as exc:
        print(f"spark_job: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        check_output(args.output)  # before Spark starts
        spark = local_session("fluoro-cds-claim-review")
        count = run_job(spark, args.input, args.output, db_path=args.db or settings.db_path,
                        config_overrides=overrides, defaults=settings.defaults)
    except OutputExists as exc:
        print(f"spark_job: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"records": count, "output": args.output}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

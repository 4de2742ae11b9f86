"""Spark job entry: review NDJSON FHIR claims with the claim-review rules at scale.

    spark-submit deploy/spark_job.py INPUT OUTPUT_DIR [--db ncci.sqlite] [--config '{"global-billing": true}']

INPUT: NDJSON (a path, a glob or a directory Spark can read) of Claims or Claim-first Bundles.
OUTPUT_DIR: Spark text output, one JSON line per input line (findings, or an error with its FHIR
path). The fluoro-cds package must be installed where the executors run.
"""
from __future__ import annotations

import argparse
import json
import sys

from hooks.config import ConfigError
from service.spark import local_session, run_job


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="spark_job.py")
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--db", help="NCCI SQLite store (default: the embedded starter set)")
    ap.add_argument("--config", help="configuration options as a JSON object")
    args = ap.parse_args(argv)
    try:
        overrides = json.loads(args.config) if args.config else {}
        spark = local_session("fluoro-cds-claim-review")
        count = run_job(spark, args.input, args.output, db_path=args.db, config_overrides=overrides)
    except (ConfigError, json.JSONDecodeError) as exc:
        print(f"spark_job: bad --config: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"records": count, "output": args.output}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

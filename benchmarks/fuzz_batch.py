"""Fuzz run of the payer batch (issue 14): damaged Bulk Data exports through `fluoro-cds batch
--out-dir`, checking what a payer's pipeline relies on.

    python -m benchmarks.fuzz_batch [--rounds 300] [--claims 30] [--seed 1] [--every 10]

Each round copies a small `fluoro-cds sample-data` export and damages one to four places in it
(tests/export_damage.py): a resource mutated as in tests/fuzz_support.py (wrong JSON types, huge
values, deep nesting, deletions), a reference pointed at another resource of the export (of any
type, or itself), a resource repeated with other content under its id, a line broken (cut short,
not UTF-8, not JSON, blank, a JSON array or number, a byte-order mark), a file compressed and cut
short or corrupted, and now and then the manifest. Then the batch runs in this process
(`service.cli.main`, one worker; every third round `--format ndjson`, the others Parquet) and every
`--every`-th round again with two workers. A round is a
problem when:

- the run raised (a traceback) or exited with anything but 0, or 2 with a message for a
  manifest it cannot use;
- summary.json's claims in != reviewed + errors, or fewer claims in than readable claim lines;
- an error record lacks file, line, path or reason, or its path names a CDS Hooks context;
- findings.parquet cannot be read, or a row names a claim that is not in the export;
- the two-worker run's findings (minus the run id), errors or corrected claims differ.

Prints a JSON summary (rounds, exit codes, claims and errors seen, problems and up to 5 failing
examples with the damage that made them; a failing round's export is kept). tests/test_fuzz_batch.py
runs a few rounds; results: benchmarks/RESULTS.md "Fuzz runs".
"""
from __future__ import annotations

import argparse
import json
import time

from tests.export_damage import fuzz_exports


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--claims", type=int, default=30, help="claims of the sample export each round damages")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--every", type=int, default=10, help="every N-th round also with 2 workers (0: never)")
    args = p.parse_args()
    started = time.perf_counter()
    result = fuzz_exports(args.seed, args.rounds, args.claims, args.every)
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["command"] = (f"python -m benchmarks.fuzz_batch --rounds {args.rounds} --claims {args.claims} "
                         f"--seed {args.seed} --every {args.every}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

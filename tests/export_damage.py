"""Damaged Bulk Data exports for the batch's fuzz test (tests/test_fuzz_batch.py) and
benchmarks/fuzz_batch.py: :func:`damage` breaks one to four places of a `fluoro-cds sample-data`
export (resources mutated as in tests/fuzz_support.py, references pointed elsewhere, resources
repeated with other content, lines broken, files compressed and cut short or corrupted, the
manifest mutated); :func:`check_round` says what is wrong with the batch's outputs on it; :func:`fuzz_exports` runs
rounds of both."""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import random
import shutil
import tempfile
import traceback
import zlib
from collections import Counter
from pathlib import Path

import orjson

from tests.fuzz_support import mutate

LINE_DAMAGE = ("cut", "not-utf8", "not-json", "blank", "array", "number", "bom")


def _json(value) -> bytes:
    """JSON text of a damaged value (the standard library's: orjson refuses integers over 64 bits)."""
    return json.dumps(value).encode()


def _lines(path: Path) -> list[bytes]:
    """The lines of a plain file, or of a gzip one as far as it can be read."""
    if path.name.endswith(".gz"):
        out = []
        try:
            with gzip.open(path) as fh:
                out.extend(fh)
        except (EOFError, OSError, zlib.error):
            pass
        return [line.rstrip(b"\n") for line in out]
    return path.read_bytes().splitlines()


def _references(value, found: list[tuple[list, object]]) -> None:
    """Every (container, key) holding a {"reference": str} value, in order."""
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "reference" and isinstance(v, str):
                found.append((value, k))
            else:
                _references(v, found)
    elif isinstance(value, list):
        for v in value:
            _references(v, found)


def damage(export: Path, rng: random.Random, keys: list[str]) -> list[str]:
    """Damage one to four places of the export in place; returns what was done (for examples)."""
    done = []
    files = sorted(f for f in export.glob("*.ndjson") if f.stat().st_size)
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(("mutate", "mutate", "reference", "repeat", "line", "gzip", "manifest")
                          if len(done) == 0 else ("mutate", "reference", "repeat", "line", "gzip"))
        if kind == "gzip":  # the file compressed (the manifest naming it so), cut short or corrupt
            target = rng.choice(files)
            data = gzip.compress(target.read_bytes(), mtime=0)
            cut = rng.randrange(10, len(data))
            how = rng.choice(("cut", "corrupt", "intact"))
            data = {"cut": data[:cut], "corrupt": data[:cut] + bytes(b ^ 0x5A for b in data[cut:cut + 16])
                    + data[cut + 16:], "intact": data}[how]
            target.unlink()
            target.with_name(target.name + ".gz").write_bytes(data)
            manifest = export / "manifest.json"
            manifest.write_bytes(manifest.read_bytes().replace(f"/{target.name}\"".encode(),
                                                               f"/{target.name}.gz\"".encode()))
            files = sorted(f for f in export.glob("*.ndjson") if f.stat().st_size)
            done.append(f"{target.name}: gzip {how}")
            continue
        if kind == "manifest":
            manifest = export / "manifest.json"
            body = orjson.loads(manifest.read_bytes())
            manifest.write_bytes(_json(mutate(body, rng, rng.randint(1, 2))))
            done.append("manifest: mutated")
            continue
        # claims and EOBs half the time: they are what a round reviews
        reviewed = [f for f in files if f.name.startswith(("Claim", "ExplanationOfBenefit"))]
        target = rng.choice(reviewed if reviewed and rng.random() < 0.5 else files)
        lines = _lines(target)
        i = rng.randrange(len(lines))
        if kind == "line":
            how = rng.choice(LINE_DAMAGE)
            lines[i] = {"cut": lines[i][: rng.randrange(1, max(2, len(lines[i])))],
                        "not-utf8": lines[i][:20] + b"\xff\xfe\x80" + lines[i][20:],
                        "not-json": b"{resourceType: Claim}",
                        "blank": b"   ",
                        "array": b"[" + lines[i] + b"]",
                        "number": b"42",
                        "bom": b"\xef\xbb\xbf" + lines[i]}[how]
            done.append(f"{target.name}:{i + 1}: line {how}")
        else:
            try:
                res = json.loads(lines[i])
            except ValueError:  # a line an earlier damage broke
                continue
            if not isinstance(res, dict):
                continue
            if kind == "mutate":
                res = mutate(res, rng, rng.randint(1, 3))
                done.append(f"{target.name}:{i + 1}: mutated")
            elif kind == "reference":
                refs: list = []
                _references(res, refs)
                if not refs:
                    continue
                holder, key = rng.choice(refs)
                holder[key] = rng.choice(keys + [f"{res.get('resourceType')}/{res.get('id')}",
                                                 "urn:uuid:" + "0" * 32, "https://elsewhere.example/fhir/Patient/p1"])
                done.append(f"{target.name}:{i + 1}: reference -> {holder[key][:60]}")
            else:  # repeat: the same id again, other content, at the end of the file
                lines.append(_json(mutate(res, rng, 1)))
                done.append(f"{target.name}:{i + 1}: repeated with other content")
            if kind != "repeat":
                lines[i] = _json(res)
        target.write_bytes(b"\n".join(lines) + b"\n")
    return done


def _run_batch(export: Path, out: Path, workers: int, db: str, fmt: str) -> tuple[int, str]:
    """(exit code, stderr) of `fluoro-cds batch EXPORT --out-dir OUT --format FMT` in this process."""
    from service.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["batch", str(export), "--out-dir", str(out), "--workers", str(workers), "--quiet",
                     "--db", db, "--format", fmt])
    return code, err.getvalue()


def _claim_lines(export: Path) -> int:
    """Non-blank lines of the export's Claim and ExplanationOfBenefit files (blank ones are skipped)."""
    return sum(sum(1 for line in _lines(f) if line.strip()) for f in export.glob("*.ndjson*")
               if f.name.startswith(("Claim", "ExplanationOfBenefit")))


def _outputs(out: Path) -> tuple[list[dict], bytes, bytes]:
    """(findings rows without the run id, errors.ndjson, claims-corrected.ndjson) of a run, whichever
    format its findings table has."""
    import pyarrow.parquet as pq

    if (out / "findings.ndjson").exists():
        rows = [orjson.loads(line) for line in (out / "findings.ndjson").read_bytes().splitlines()]
        for row in rows:
            del row["run_id"]
    else:
        rows = pq.read_table(out / "findings.parquet").drop_columns(["run_id"]).to_pylist()
    return rows, (out / "errors.ndjson").read_bytes(), (out / "claims-corrected.ndjson").read_bytes()


def check_round(export: Path, out: Path, code: int, err: str, manifest_damaged: bool) -> list[str]:
    """What is wrong with one round's run (empty: nothing)."""
    if code == 2 and manifest_damaged and "manifest" in err:
        return []
    if code != 0:
        return [f"exit {code}: {err.strip()[-300:]}"]
    wrong = []
    summary = json.loads((out / "summary.json").read_text())
    if summary["claims_in"] != summary["reviewed"] + summary["errors"]:
        wrong.append(f"claims in {summary['claims_in']} != reviewed {summary['reviewed']} + errors "
                     f"{summary['errors']}")
    lines = _claim_lines(export)
    if summary["claims_in"] + summary["duplicates"]["claims_identical"] < lines and not manifest_damaged:
        wrong.append(f"{lines} claim lines, {summary['claims_in']} claims in")
    for n, line in enumerate((out / "errors.ndjson").read_bytes().splitlines(), 1):
        rec = orjson.loads(line)
        missing = [k for k in ("file", "line", "path", "reason") if k not in rec]
        if missing:
            wrong.append(f"errors.ndjson:{n} lacks {missing}")
        if str(rec.get("path") or "").startswith("context."):
            wrong.append(f"errors.ndjson:{n} names a CDS Hooks path: {rec['path']}")
    try:
        rows, _errors, _fixed = _outputs(out)
    except Exception as exc:  # noqa: BLE001 - the problem reported
        return wrong + [f"outputs unreadable: {exc!r}"]
    ids = {k.split("/", 1)[1] for k in keys_of(export)}
    strangers = {r["resource_id"] for r in rows if r["resource_id"] not in ids}
    if strangers:
        wrong.append(f"findings for claims not in the export: {sorted(strangers)[:3]}")
    return wrong


def keys_of(export: Path) -> list[str]:
    """"Type/id" of every resource line of the export that parses (what a damaged reference may
    point at; damaged lines skipped)."""
    out = []
    for f in sorted(export.glob("*.ndjson*")):
        for line in _lines(f):
            try:
                res = orjson.loads(line)
                out.append(f"{res['resourceType']}/{res['id']}")
            except Exception:  # noqa: BLE001 - damaged on purpose
                pass
    return out


def fuzz_exports(seed: int, rounds: int, claims: int = 30, every: int = 10) -> dict:
    """`rounds` damaged copies of a `claims`-claim sample export through the batch (one worker;
    every `every`-th round also two, whose outputs must be the same; every third round with
    ``--format ndjson``, the others Parquet); the summary of
    benchmarks/fuzz_batch.py. A failing round's export is kept (the summary's `kept`)."""
    import logging

    from service.sample_data import write_export

    was = logging.root.manager.disable
    logging.disable(logging.CRITICAL)  # expected bad records are logged; restored at the end
    tmp = Path(tempfile.mkdtemp(prefix="fuzz-batch-"))
    base = tmp / "base"
    write_export(str(base), claims, seed)
    keys = keys_of(base)
    db = str(tmp / "absent" / "ncci.sqlite")  # the embedded starter set
    rng = random.Random(seed)
    codes: Counter[int] = Counter()
    problems: list[dict] = []
    seen = Counter()
    try:
        for n in range(rounds):
            export, out = tmp / f"r{n}", tmp / f"o{n}"
            shutil.copytree(base, export)
            done = damage(export, rng, keys)
            manifest_damaged = any(d.startswith("manifest") for d in done)
            try:
                fmt = "ndjson" if n % 3 == 1 else "parquet"
                code, err = _run_batch(export, out, 1, db, fmt)
                wrong = check_round(export, out, code, err, manifest_damaged)
                if not wrong and code == 0 and every and n % every == 0:
                    code2, err2 = _run_batch(export, tmp / f"o{n}-2", 2, db, fmt)
                    if code2 != 0:
                        wrong.append(f"2 workers: exit {code2}: {err2.strip()[-300:]}")
                    elif _outputs(out) != _outputs(tmp / f"o{n}-2"):
                        wrong.append("2 workers: outputs differ from 1 worker's")
            except Exception:  # noqa: BLE001 - the run raised: the problem reported
                code, wrong = -1, [traceback.format_exc()[-1500:]]
            codes[code] += 1
            if code == 0:
                summary = json.loads((out / "summary.json").read_text())
                seen["claims_in"] += summary["claims_in"]
                seen["errors"] += summary["errors"]
            if wrong:
                problems.append({"round": n, "damage": done, "wrong": wrong})
            else:
                shutil.rmtree(export)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(tmp / f"o{n}-2", ignore_errors=True)
    finally:
        logging.disable(was)
        if not problems:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"rounds": rounds, "exit_codes": dict(codes), "claims_in": seen["claims_in"], "errors": seen["errors"],
            "problems": len(problems), "examples": problems[:5], "kept": str(tmp) if problems else None}

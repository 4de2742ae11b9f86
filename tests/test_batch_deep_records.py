"""Records nested deeper than the batch reads (service.bulk_input.parse_record: more than
service.jsonio.MAX_DEPTH levels of arrays and objects) are error records at path "$" and the run
goes on; before, a claim 255 to 1024 levels deep parsed but crashed the run where its digest was
written (orjson writes at most 254 levels)."""
from __future__ import annotations

import json
import subprocess
import sys

import orjson
import pytest

from service.bulk_input import BadRecord, parse_record
from service.jsonio import MAX_DEPTH
from tests.conftest import ROOT
from tests.scenario_fixtures import scenario

REASON = f"nests arrays and objects more than {MAX_DEPTH} deep"


def _nested(depth: int) -> str:
    """A JSON array `depth` levels deep."""
    return "[" * depth + "]" * depth


def _deep_claim(claim_id: str, depth: int) -> bytes:
    """A Claim whose extension nests `depth` - 1 levels below the resource (so `depth` in all)."""
    return ('{"resourceType": "Claim", "id": "%s", "extension": %s}' % (claim_id, _nested(depth - 1))).encode()


def _run(args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLUORO_CDS_DB": str(tmp_path / "absent.sqlite")}
    return subprocess.run([sys.executable, "-m", "service.cli", "batch", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def test_parse_record_refuses_what_nests_too_deep_and_reads_the_rest():
    assert parse_record(_deep_claim("ok", MAX_DEPTH)) == {"resourceType": "Claim", "id": "ok",
                                                           "extension": json.loads(_nested(MAX_DEPTH - 1))}
    for depth in (MAX_DEPTH + 1, 300, 2000):
        with pytest.raises(BadRecord, match=REASON):
            parse_record(_deep_claim("deep", depth))
    with pytest.raises(BadRecord, match="not valid JSON"):
        parse_record(b'{"resourceType": "Claim", "id"')
    # brackets inside strings are not nesting
    assert parse_record(b'{"a": "' + b"[" * 500 + b'"}') == {"a": "[" * 500}


@pytest.mark.parametrize("workers", ["1", "2"])
def test_deep_claims_are_error_records_and_the_run_goes_on(tmp_path, workers):
    good = orjson.dumps(scenario(9).context["claim"])
    path = tmp_path / "claims.ndjson"
    path.write_bytes(b"\n".join([_deep_claim("d65", MAX_DEPTH + 1), good, _deep_claim("d300", 300),
                                 _deep_claim("d2000", 2000)]) + b"\n")
    proc = _run([str(path), "--out-dir", str(tmp_path / "out"), "--workers", workers], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [json.loads(ln) for ln in (tmp_path / "out" / "errors.ndjson").read_text().splitlines()]
    assert [(e["line"], e["path"]) for e in errors] == [(1, "$"), (3, "$"), (4, "$")]
    assert [e["reason"] for e in errors] == [REASON] * 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["claims_in"], summary["reviewed"], summary["errors"]) == (4, 1, 3)
    assert summary["findings"] == {"ptp-bundled": 1}

    legacy = _run([str(path), "--workers", workers], tmp_path)
    assert legacy.returncode == 0, legacy.stderr[-2000:]
    records = [json.loads(ln) for ln in legacy.stdout.splitlines()]
    assert [(r["line"], r.get("error")) for r in records] == [(1, REASON), (2, None), (3, REASON), (4, REASON)]


def test_a_deep_companion_is_an_error_record_of_its_file(tmp_path):
    from service.sample_data import write_export

    root = tmp_path / "export"
    write_export(str(root), claims=20, seed=3)
    with open(root / "Observation.ndjson", "ab") as fh:
        fh.write(b'{"resourceType": "Observation", "id": "deep", "extension": ' + _nested(300).encode() + b"}\n")
    lines = (root / "Observation.ndjson").read_bytes().count(b"\n")
    proc = _run([str(root), "--out-dir", str(tmp_path / "out"), "--workers", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = [json.loads(ln) for ln in (tmp_path / "out" / "errors.ndjson").read_text().splitlines()]
    assert [(e["file"].rsplit("/", 1)[-1], e["line"], e["path"], e["reason"]) for e in errors] == \
        [("Observation.ndjson", lines, "$", REASON)]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["claims_in"] == summary["reviewed"] == 20 and summary["errors"] == 0


def test_a_line_longer_than_the_record_limit_is_an_error_record_read_past(tmp_path):
    """A line over MAX_RECORD_BYTES (64 MiB) is never held whole: an error record at "$", the run
    goes on with the next line (the CLI, 2 workers)."""
    from service.bulk_input import MAX_RECORD_BYTES

    good = orjson.dumps(scenario(9).context["claim"])
    path = tmp_path / "claims.ndjson"
    with open(path, "wb") as fh:
        fh.write(b'{"resourceType": "Claim", "id": "huge", "text": "')
        block = b"x" * (1 << 20)
        for _ in range(MAX_RECORD_BYTES // len(block) + 1):
            fh.write(block)
        fh.write(b'"}\n' + good + b"\n")
    proc = _run([str(path), "--out-dir", str(tmp_path / "out"), "--workers", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [error] = [json.loads(ln) for ln in (tmp_path / "out" / "errors.ndjson").read_text().splitlines()]
    assert (error["line"], error["path"]) == (1, "$") and "at most 64 MiB" in error["reason"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["claims_in"], summary["reviewed"], summary["errors"]) == (2, 1, 1)
    assert summary["findings"] == {"ptp-bundled": 1}


def test_the_record_limit_applies_to_gzip_claims_and_companions(tmp_path, monkeypatch):
    """With the limit made small: a line of exactly the limit is read, one byte more is an error
    record, in a gzip claim file and in a companion file alike; the lines after them are read."""
    import gzip

    from service import bulk_input
    from service.batch import run_dir
    from hooks.config import resolve
    from service.sample_data import write_export

    root = tmp_path / "export"
    write_export(str(root), claims=10, seed=5)
    claims = (root / "Claim.ndjson").read_bytes().splitlines()
    limit = max(len(ln) for f in root.glob("*.ndjson") for ln in f.read_bytes().splitlines()) + 10  # above every line
    monkeypatch.setattr(bulk_input, "MAX_RECORD_BYTES", limit)
    pad = claims[0][:-1] + b', "text": {"status": "generated", "div": "'
    exact = pad + b"x" * (limit - len(pad) - 3) + b'"}}'
    assert len(exact) == limit
    over = pad.replace(b'"id": "', b'"id": "o', 1) + b"x" * (limit - len(pad) - 2) + b'"}}'
    (root / "Claim.ndjson").unlink()
    (root / "manifest.json").unlink()  # the directory's files, the claims gzip
    with gzip.open(root / "Claim.ndjson.gz", "wb") as fh:
        fh.write(b"\n".join([over, *claims[1:]]) + b"\n")
    observations = (root / "Observation.ndjson").read_bytes().splitlines()
    (root / "Observation.ndjson").write_bytes(b"\n".join([b"[" + b" " * limit + b"]", *observations]) + b"\n")
    summary = run_dir([str(root)], str(tmp_path / "out"), db_path=str(tmp_path / "absent.sqlite"), config=resolve(None))
    errors = [json.loads(ln) for ln in (tmp_path / "out" / "errors.ndjson").read_text().splitlines()]
    assert sorted((e["file"].rsplit("/", 1)[-1], e["line"], e["path"]) for e in errors) == \
        [("Claim.ndjson.gz", 1, "$"), ("Observation.ndjson", 1, "$")]
    assert all("MiB" in e["reason"] for e in errors)
    assert (summary["claims_in"], summary["reviewed"], summary["errors"]) == (10, 9, 1)  # Claims and EOBs
    # a line of exactly the limit is a record like any other
    assert list(bulk_input.bounded_lines(__import__("io").BytesIO(exact + b"\n" + over + b"\nnext\n"))) == \
        [exact + b"\n", bulk_input.OVERSIZED, b"next\n"]

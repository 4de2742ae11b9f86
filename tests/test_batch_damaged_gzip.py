"""A gzip input cut short or damaged (an interrupted download, a bad copy) is one error record at
the line where reading stopped, the lines before it are reviewed and the run goes on
(service.bulk_input.bounded_lines, DAMAGED). Before, the batch stopped with a traceback
(EOFError from the gzip module) and wrote no outputs. Found by benchmarks/fuzz_batch.py."""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import zlib

import pytest

from service.bulk_input import DAMAGED, BadRecord, bounded_lines, parse_record
from tests.conftest import ROOT

LINES = [b'{"resourceType": "Observation", "id": "o%d", "status": "final"}\n' % i for i in range(400)]


def _gzip(lines: list[bytes]) -> bytes:
    return gzip.compress(b"".join(lines), mtime=0)


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _corrupt(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 40]) + data[middle + 40:]


def _bad_checksum(data: bytes) -> bytes:
    return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]  # the CRC-32 of the trailer


@pytest.mark.parametrize("damage", [_cut, _corrupt, _bad_checksum])
def test_a_damaged_gzip_stream_ends_with_damaged(damage):
    """What was read stands, in order; the last line given is DAMAGED, which parse_record refuses
    with a reason that says what happened (and no value)."""
    got = list(bounded_lines(gzip.GzipFile(fileobj=io.BytesIO(damage(_gzip(LINES))))))
    assert got[-1] == DAMAGED and DAMAGED not in got[:-1]
    assert got[:-1] == LINES[:len(got) - 1]
    if damage is _bad_checksum:
        assert len(got) - 1 == len(LINES)  # every line read; the checksum fails at the end
    with pytest.raises(BadRecord, match="gzip file is cut short or damaged"):
        parse_record(DAMAGED)


def test_an_intact_gzip_stream_gives_every_line():
    assert list(bounded_lines(gzip.GzipFile(fileobj=io.BytesIO(_gzip(LINES))))) == LINES
    assert zlib.error is not EOFError  # both are caught (bounded_lines), neither stands for the other


def _batch(args, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FLUORO_CDS_DB": str(tmp_path / "absent.sqlite")}
    return subprocess.run([sys.executable, "-m", "service.cli", "batch", *args], capture_output=True, text=True,
                          env=env, timeout=120, cwd=ROOT)


def _export(tmp_path, name: str):
    from service.sample_data import write_export

    root = tmp_path / name
    write_export(str(root), claims=40, seed=3, compress=True)
    return root


def _outputs(out) -> tuple[dict, list[dict], list[tuple]]:
    """(summary, error records, the findings (resource id, item, code, across claims), sorted)."""
    import pyarrow.parquet as pq

    summary = json.loads((out / "summary.json").read_text())
    errors = [json.loads(ln) for ln in (out / "errors.ndjson").read_text().splitlines()]
    rows = pq.read_table(out / "findings.parquet").to_pylist()
    return summary, errors, sorted((r["resource_id"], r["item_sequence"] or 0, r["finding"], r["across_claims"])
                                   for r in rows)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_cut_gzip_claim_file_is_one_error_record_and_the_claims_before_it_are_reviewed(tmp_path, workers):
    """The run on a cut claim file gives the findings of the same export whose claim file holds
    just the lines read before the cut, plus the one error record."""
    damaged = _export(tmp_path, "damaged")
    claims = damaged / "Claim.ndjson.gz"
    whole = claims.read_bytes()
    claims.write_bytes(_cut(whole))
    proc = _batch([str(damaged), "--out-dir", str(tmp_path / "o-damaged"), "--workers", workers], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    summary, errors, rows = _outputs(tmp_path / "o-damaged")
    [error] = errors
    read_before = error["line"] - 1  # the sample writes no blank lines
    assert error["file"].endswith("Claim.ndjson.gz") and error["path"] == "$"
    assert "cut short or damaged" in error["reason"] and 0 < read_before < 40
    assert summary["claims_in"] == summary["reviewed"] + summary["errors"] and summary["errors"] == 1

    shorter = _export(tmp_path, "shorter")
    (shorter / "Claim.ndjson.gz").write_bytes(_gzip(gzip.decompress(whole).splitlines(keepends=True)[:read_before]))
    proc = _batch([str(shorter), "--out-dir", str(tmp_path / "o-shorter"), "--workers", workers], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected, no_errors, expected_rows = _outputs(tmp_path / "o-shorter")
    assert no_errors == [] and rows == expected_rows and rows
    assert summary["reviewed"] == expected["reviewed"] and summary["findings"] == expected["findings"]


def test_a_damaged_gzip_companion_file_is_an_error_record_and_the_claims_are_reviewed(tmp_path):
    """A companion file whose stream is corrupt: its lines before the damage are joined, the claims
    needing the rest are reviewed without it (or name the dangling reference), none is lost."""
    damaged = _export(tmp_path, "damaged")
    observations = damaged / "Observation.ndjson.gz"
    observations.write_bytes(_corrupt(observations.read_bytes()))
    proc = _batch([str(damaged), "--out-dir", str(tmp_path / "out"), "--workers", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary, errors, _rows = _outputs(tmp_path / "out")
    records = [e for e in errors if e["file"].endswith("Observation.ndjson.gz")]
    # corrupt deflate data may decode into garbage lines before the stream fails: those are lines
    # that are not JSON; the last record says where reading stopped
    assert "cut short or damaged" in records[-1]["reason"]
    assert all(e["reason"].startswith("not valid JSON") for e in records[:-1])
    assert [e["line"] for e in records] == sorted({e["line"] for e in records})
    assert summary["claims_in"] == summary["reviewed"] + summary["errors"]
    assert summary["claims_in"] == 40

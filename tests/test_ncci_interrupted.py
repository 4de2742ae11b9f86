"""An import killed with SIGKILL (no cleanup runs) leaves its half-built release file; the next
import removes it, and never the file of an import still running (issue 12)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from nccidata.store import (STALE_BUILD_SECONDS, ReleaseBuilder, clean_interrupted_imports,
                            read_catalog, releases_dir)
from tests.ncci_support import run_ncci, write_cms_ptp_zip

ROOT = Path(__file__).resolve().parent.parent
ROW = ("33289", "76000", "", "20190101", "*", "0", "CPT Manual or CMS manual coding instruction")


def _big_zip(path: Path, rows: int) -> Path:
    table = [(f"{10000 + i % 89999:05d}", f"{10000 + (i * 7) % 89999:05d}", "", "20190101", "*", "1",
              "Standards of medical/surgical practice") for i in range(rows)]
    return write_cms_ptp_zip(path, table)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_killed_import_is_cleaned_by_the_next(tmp_path):
    db = tmp_path / "store" / "ncci.sqlite"
    big = _big_zip(tmp_path / "ccipra-v302r0-f1.zip", 500_000)
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "ncci", "import", str(big),
                             "--db", str(db)], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    building: list[Path] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            building = [p for p in releases_dir(db).glob(".building-*")] if releases_dir(db).is_dir() else []
            if building:
                break
            time.sleep(0.01)
        assert building, f"the import ended before it could be killed: {proc.poll()} {proc.stderr.read()[-500:]!r}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    left = list(releases_dir(db).iterdir())
    assert any(p.name.startswith(".building-") for p in left)
    assert read_catalog(db) == []

    for p in left:  # as it would be a minute later
        _age(p, STALE_BUILD_SECONDS + 5)
    small = write_cms_ptp_zip(tmp_path / "ccipra-v303r0-f1.zip", [ROW])
    code, out, err = run_ncci("import", str(small), "--db", str(db))
    assert code == 0, err
    names = {p.name for p in releases_dir(db).iterdir()}
    assert not any(n.startswith(".building-") for n in names)
    assert {r.file for r in read_catalog(db)} <= names and len(read_catalog(db)) == 1


def test_a_running_import_and_registered_releases_are_kept(tmp_path):
    db = tmp_path / "store" / "ncci.sqlite"
    small = write_cms_ptp_zip(tmp_path / "ccipra-v303r0-f1.zip", [ROW])
    assert run_ncci("import", str(small), "--db", str(db))[0] == 0
    registered = {p.name for p in releases_dir(db).iterdir()}
    builder = ReleaseBuilder(db, "ptp", "practitioner", "2099Q1")  # holds its lock
    try:
        orphan = releases_dir(db) / "ptp-all-x-20240101T000000-deadbeef.sqlite"  # finished, never registered
        orphan.write_bytes(b"")
        for p in releases_dir(db).iterdir():
            _age(p, 7200)
        removed = clean_interrupted_imports(db)
        assert removed == [orphan.name]
        assert builder.tmp.exists()
        assert registered <= {p.name for p in releases_dir(db).iterdir()}
    finally:
        builder.discard()

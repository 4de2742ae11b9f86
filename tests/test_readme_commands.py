"""The README's reference-data and payer commands run as written: each ``sh`` block of those
sections is run with bash (``fluoro-cds`` on PATH, as after activating the venv) in a folder
holding CMS-layout zips named as the README names them (small synthetic tables, not CMS data)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.ncci_support import write_cms_ptp_zip

README = (ROOT / "README.md").read_text(encoding="utf-8")
Q3 = [("33897", "76000", "", "20020101", "*", "0", "CPT Manual or CMS manual coding instruction"),
      ("29881", "76000", "", "20020101", "*", "1", "Standards of medical/surgical practice"),
      ("33289", "76000", "", "20190101", "*", "0", "CPT Manual or CMS manual coding instruction"),
      ("64483", "76000", "", "20110101", "*", "1", "HCPCS/CPT procedure code definition")]
# the next quarter: 29881/76000 deleted, 20610/76000 added
Q4 = [Q3[0], ("29881", "76000", "", "20020101", "20241001", "1", "Standards of medical/surgical practice"),
      Q3[2], Q3[3], ("20610", "76000", "", "20241001", "*", "1", "CPT Separate procedure definition")]


def sh_blocks(section_start: str, section_end: str) -> list[str]:
    """The ```sh blocks between two markers of the README."""
    part = README.split(section_start, 1)[1].split(section_end, 1)[0]
    return re.findall(r"```sh\n(.*?)```", part, flags=re.S)


@pytest.fixture
def workdir(tmp_path):
    """A folder with the CMS zips the README names (four parts per quarter, as CMS ships them)
    and the repository's examples/ beside them."""
    for version, rows in (("v302r0", Q3), ("v303r0", Q4)):
        for i in range(4):
            write_cms_ptp_zip(tmp_path / f"ccipra-{version}-f{i + 1}.zip", rows[i::4])
    for i in range(4):
        write_cms_ptp_zip(tmp_path / f"ccioph-v302r0-f{i + 1}.zip", Q3[i::4])
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


def _bash(script: str, cwd: Path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUORO_CDS_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
               HOME=str(cwd), XDG_DATA_HOME=str(cwd / "data"), **env_extra)
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_reference_data_commands_run_as_written(workdir):
    starter, imported = sh_blocks("## Reference data", "## Command line")
    proc = _bash(starter, workdir)
    assert proc.returncode == 0, proc.stderr
    assert "no release imported" in proc.stdout and "starter-2024Q3  33289  76000  0" in proc.stdout
    db = workdir / "store" / "ncci.sqlite"
    lines = [line for line in imported.splitlines() if line.strip()]
    outputs = []
    for line in lines:  # one by one, to look at each output
        proc = _bash(line, workdir, FLUORO_CDS_DB=str(db))
        assert proc.returncode == 0, (line, proc.stderr)
        outputs.append(proc.stdout)
    pair = outputs[1]
    assert re.search(r"practitioner\s+2024Q3\s+33897\s+76000\s+0", pair), pair
    diff = json.loads(outputs[3])
    practitioner = diff["settings"]["practitioner"]
    assert [r["column_1"] for r in practitioner["added"]] == ["20610"]
    assert [r["column_1"] for r in practitioner["deleted"]] == ["29881"]
    retired = json.loads(outputs[4])["retired"]
    assert {r["label"] for r in retired} == {"2024Q3"}


def test_payer_quick_start_runs_as_written(workdir):
    block, export = sh_blocks("**Payer data team.**", "**Operator.**")
    proc = _bash(block, workdir)
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "ncci.sqlite").is_file()  # export FLUORO_CDS_DB=$PWD/ncci.sqlite
    assert re.search(r"2024Q3\s+ptp\s+practitioner", proc.stdout), proc.stdout
    assert re.search(r"2024Q3\s+ptp\s+outpatient-hospital", proc.stdout), proc.stdout
    import pyarrow.parquet as pq

    results = workdir / "results"
    summary = json.loads((results / "summary.json").read_text())
    assert summary["claims_in"] == 8 and summary["errors"] == 1 and summary["reviewed"] == 7
    rows = pq.read_table(results / "findings.parquet").to_pylist()
    ptp = [r for r in rows if r["edit_kind"] == "ncci-ptp"]
    assert ptp and all(r["edit_release"] == "2024Q3" for r in ptp)  # the imported quarter, not the starter set
    for name in ("claims-corrected.ndjson", "errors.ndjson", "report.html"):
        assert (results / name).is_file(), name
    proc = _bash(export, workdir, FLUORO_CDS_DB=str(workdir / "ncci.sqlite"))
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "export" / "manifest.json").is_file()
    summary = json.loads((workdir / "export-results" / "summary.json").read_text())
    assert summary["claims_in"] == 1000 and summary["errors"] == 0
    rows = pq.read_table(workdir / "export-results" / "findings.parquet").to_pylist()
    # a PTP finding names its partner line only when the pair is split across two claims: the
    # partner's claim gets a row of its own (33289/76000 is in the README's table)
    partners = [r for r in rows if r["finding"] in ("modifier-misuse", "ptp-bundled") and r["code"] == "33289"]
    assert partners and all(r["column1"] == "33289" for r in partners)

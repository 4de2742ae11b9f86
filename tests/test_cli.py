"""The `fluoro-cds` command line as a new user meets it: --version, defaults in every --help,
compact tables (JSON with --json, each row once), bad codes and dates exit 2, a closed pipe ends
quietly, pretty-printed JSON given to batch is refused with an NDJSON hint, `ncci retire`."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from importlib.metadata import version

import orjson
import pytest

from nccidata.store import read_catalog, releases_dir
from service.cli import EXIT_BROKEN_PIPE, build_parser, main
from tests.conftest import ROOT
from tests.ncci_support import run_ncci, write_cms_ptp_zip
from tests.scenario_fixtures import scenario

ROWS = [  # (col1, col2, prior-1996 flag, effective, deletion, modifier, rationale)
    ("33289", "76000", "", "20190101", "*", "0", "CPT Manual or CMS manual coding instruction"),
    ("50080", "76000", "*", "19960101", "20160101", "9", "CPT Manual or CMS manual coding instruction"),
    ("29881", "76000", "", "20020101", "*", "1", "Standards of medical/surgical practice"),
]


def _cli(*args: str, env_extra: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True,
                          env=env, timeout=120, cwd=ROOT, **kwargs)


@pytest.fixture
def store(tmp_path):
    """A store with the practitioner PTP rows above imported twice: as 2024Q2 and as 2024Q3."""
    db = str(tmp_path / "store" / "ncci.sqlite")
    z = write_cms_ptp_zip(tmp_path / "ccipra-v302r0-f1.zip", ROWS)
    for label in ("2024Q2", "2024Q3"):
        code, _, err = run_ncci("import", str(z), "--release", label, "--db", db)
        assert code == 0, err
    return db


def test_version_is_the_installed_distribution():
    proc = _cli("--version", text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"fluoro-cds {version('fluoro-cds')}"


def _parsers(parser: argparse.ArgumentParser, path=("fluoro-cds",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def test_every_help_names_every_option_and_its_default():
    seen = []
    for path, parser in _parsers(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            assert action.help, f"{' '.join(path)} {action.option_strings[0]} has no help"
            if action.default not in (None, False, argparse.SUPPRESS):
                # the formatter appends "(default: X)" unless the help already states the default
                assert f"(default: {action.default})" in " ".join(text.split()) \
                    or "default" in action.help, (path, action.option_strings)
            seen.append((path, action.option_strings[0]))
    assert (("fluoro-cds", "serve"), "--port") in seen and (("fluoro-cds", "batch"), "--workers") in seen
    assert (("fluoro-cds", "ncci", "retire"), "--kind") in seen


def test_serve_help_shows_host_and_port_defaults():
    text = " ".join(_cli("serve", "--help", text=True).stdout.split())
    assert "(default: 127.0.0.1)" in text and "(default: 8080)" in text


def test_pair_prints_a_table_each_row_once(store):
    code, out, err = run_ncci("pair", "50080", "76000", "--date", "2024-08-01", "--db", store)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "PTP edits between 50080 and 76000 on 2024-08-01"
    assert lines[1].split()[:3] == ["setting", "release", "col"]
    practitioner = [line for line in lines[2:] if line.startswith("practitioner")]
    assert len(practitioner) == 1, out  # the row, once (it used to come twice)
    assert practitioner[0].split()[1:8] == ["2024Q3", "50080", "76000", "9", "1996-01-01",
                                            "2016-01-01", "no"]
    # the outpatient-hospital setting has no imported release: the starter set answers, no edit
    [hospital] = [line for line in lines[2:] if line.startswith("outpatient-hospital")]
    assert "no edit" in hospital


def test_pair_json_lists_each_row_once_with_its_in_force_flag(store):
    code, out, err = run_ncci("pair", "33289", "76000", "--date", "2024-08-01", "--setting",
                              "practitioner", "--db", store, "--json")
    assert code == 0, err
    [res] = out["results"]
    assert set(res) == {"setting", "program", "release", "rows"} and res["program"] == "medicare"
    assert [(r["column_1"], r["modifier_indicator"], r["in_force"]) for r in res["rows"]] == [
        ("33289", "0", True)]
    assert res["release"]["label"] == "2024Q3"


def test_pair_in_both_orders_and_lower_case(store):
    code, out, err = run_ncci("pair", "76000", "33289", "--date", "2024-08-01", "--setting",
                              "practitioner", "--db", store, "--json")
    assert code == 0, err
    assert [r["column_1"] for r in out["results"][0]["rows"]] == ["33289"]
    code, out, _ = run_ncci("pair", "g0260", "76000", "--db", store, "--json")
    assert code == 0 and out["column_1"] == "G0260"


def test_releases_table_and_json(store):
    code, out, err = run_ncci("releases", "--db", store)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"store: {store}"
    assert lines[1].split() == ["id", "label", "kind", "setting", "program", "period", "rows", "files",
                                "imported", "in", "service"]
    rows = [line.split() for line in lines[2:4]]
    assert [r[1] for r in rows] == ["2024Q2", "2024Q3"] and all(r[6] == "3" for r in rows)
    assert all(r[4] == "medicare" for r in rows)
    # today is after both quarters: the newest period answers, and the others fall back
    assert any("answered by the starter data set" in line for line in lines[4:])
    code, data, _ = run_ncci("releases", "--db", store, "--json")
    assert code == 0
    assert [r["label"] for r in data["releases"]] == ["2024Q2", "2024Q3"]
    assert [r["in_service"] for r in data["releases"]] == [False, True]
    assert "in_service" not in data  # each release once, flagged
    assert ("mue", "practitioner") in {(f["kind"], f["setting"]) for f in data["fallback"]}


def test_releases_without_a_store_says_the_starter_set_answers(tmp_path):
    code, out, err = run_ncci("releases", "--db", str(tmp_path / "none.sqlite"))
    assert code == 0, err
    assert "no release imported" in out and "every kind: answered by the starter data set" in out


@pytest.mark.parametrize("args, message, bad", [
    (["pair", "3389", "76000"], "not a CPT/HCPCS code", "3389"),
    (["pair", "33289", "7600O0"], "not a CPT/HCPCS code", "7600O0"),
    (["pair", "33289", "76000", "--date", "2024-13-45"], "not a date (expected YYYY-MM-DD)", "2024-13-45"),
    (["pair", "33289", "76000", "--date", "08/01/2024"], "not a date (expected YYYY-MM-DD)", "08/01/2024"),
    (["diff", "2024Q2", "2024Q3", "--code", "76"], "not a CPT/HCPCS code", "'76'"),
    (["diff", "2024Q2", "2024Q3", "--limit", "0"], "not a positive whole number", "'0'"),
])
def test_malformed_codes_and_dates_exit_2(args, message, bad, tmp_path):
    """The message names the argument and the expected form, never the value given (issue 12)."""
    code, out, err = run_ncci(*args, "--db", str(tmp_path / "none.sqlite"))
    assert code == 2 and message in err and out == ""
    assert bad not in err


def test_retire_removes_the_release_and_its_files(store):
    before = read_catalog(store)
    q2 = [r for r in before if r.label == "2024Q2"]
    files = [releases_dir(store) / r.file for r in q2]
    assert files and all(f.is_file() for f in files)
    assert any(p.name.startswith(q2[0].file) and p != files[0] for p in releases_dir(store).iterdir()), \
        "expected a pair index beside the release file"
    code, out, err = run_ncci("retire", "2024q2", "--db", store)
    assert code == 0, err
    assert [r["label"] for r in out["retired"]] == ["2024Q2"]
    assert [r.label for r in read_catalog(store)] == ["2024Q3"]
    assert not [p for p in releases_dir(store).iterdir() if p.name.startswith(q2[0].file)]
    # what is left still answers
    code, data, _ = run_ncci("pair", "33289", "76000", "--date", "2024-05-01", "--setting",
                             "practitioner", "--db", store, "--json")
    assert code == 0 and data["results"][0]["release"]["label"] == "2024Q3"
    code, _, err = run_ncci("retire", "2024Q2", "--db", store)
    assert code == 2 and "no release labelled '2024Q2'" in err and "2024Q3" in err


def test_retire_by_kind_keeps_the_other_kinds(store, tmp_path):
    mue = tmp_path / "mue_practitioner_2024q3.tsv"
    mue.write_text("hcpcs_code\tmue_units\tmue_mai\tmue_rationale\n76000\t3\t3\tClinical: Data\n")
    code, _, err = run_ncci("import", str(mue), "--db", store)
    assert code == 0, err
    code, out, err = run_ncci("retire", "2024Q3", "--kind", "mue", "--db", store)
    assert code == 0, err
    assert [r["kind"] for r in out["retired"]] == ["mue"]
    assert sorted((r.kind, r.label) for r in read_catalog(store)) == [("ptp", "2024Q2"), ("ptp", "2024Q3")]


@pytest.mark.parametrize("args", [["ncci", "releases", "--json"], ["--help"], ["--version"]])
def test_a_closed_pipe_ends_quietly(args, tmp_path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run([sys.executable, "-m", "service.cli", *args], stdout=write,
                              stderr=subprocess.PIPE, env=env, timeout=60, cwd=ROOT)
    finally:
        os.close(write)
    assert b"Traceback" not in proc.stderr and b"BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_batch_into_a_closed_pipe_ends_quietly(tmp_path):
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(orjson.dumps(scenario(9).context["claim"]) + b"\n" for _ in range(3000)))
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run([sys.executable, "-m", "service.cli", "batch", str(src), "--workers", "2"],
                              stdout=write, stderr=subprocess.PIPE, timeout=120, cwd=ROOT,
                              env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                   "HOME": str(tmp_path),
                                   "FLUORO_CDS_DB": str(tmp_path / "absent.sqlite")})
    finally:
        os.close(write)
    assert b"Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == EXIT_BROKEN_PIPE


def test_batch_refuses_pretty_printed_json_with_an_ndjson_hint(tmp_path):
    pretty = tmp_path / "claims.json"
    pretty.write_text(json.dumps(scenario(9).context["claim"], indent=2))
    out = tmp_path / "out.ndjson"
    proc = _cli("batch", str(pretty), "--out", str(out), text=True,
                env_extra={"FLUORO_CDS_DB": str(tmp_path / "absent.sqlite")})
    assert proc.returncode == 2
    assert "must be NDJSON" in proc.stderr and "jq -c" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stdout == ""
    assert not out.exists() and not list(tmp_path.glob(".fluoro-batch-*"))
    # the same from stdin
    proc = _cli("batch", "-", input=pretty.read_text(), text=True,
                env_extra={"FLUORO_CDS_DB": str(tmp_path / "absent.sqlite")})
    assert proc.returncode == 2 and "must be NDJSON" in proc.stderr


def test_batch_keeps_one_bad_first_line_as_its_own_error(tmp_path):
    """A truncated first record followed by good ones is NDJSON with one bad line, not refused."""
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b'{"resourceType": "Cla\n' + orjson.dumps(scenario(9).context["claim"]) + b"\n")
    proc = _cli("batch", str(src), text=True, env_extra={"FLUORO_CDS_DB": str(tmp_path / "absent.sqlite")})
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert "not valid JSON" in rows[0]["error"] and rows[1]["findings"][0]["code"] == "ptp-bundled"


def test_main_returns_the_command_code_in_process(tmp_path, capsys):
    assert main(["ncci", "releases", "--db", str(tmp_path / "none.sqlite")]) == 0
    assert "no release imported" in capsys.readouterr().out

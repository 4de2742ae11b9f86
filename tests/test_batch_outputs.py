"""`fluoro-cds batch --out-dir`: the typed findings table, corrected claims, errors, summary and
report, exit codes, and the old single-file --out beside them (docs/service.md, "Payer batch")."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hooks.config import resolve
from hooks.extract import case_from_claim
from hooks.rules import evaluate
from nccidata import open_reference
from service.findings_table import CARC, NAMES, SCHEMA
from tests.conftest import ROOT
from tests.ncci_support import real_ncci_db  # noqa: F401
from tests.scenario_fixtures import scenario

CLAIM_SCENARIOS = (1, 3, 4, 5, 7, 9, 11)
NODE_DIR = ROOT / "tests" / "node"
CHROMIUM = Path("/usr/bin/chromium")


def _run(args, tmp_path, db=None, timeout=180):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "FLUORO_CDS_DB": str(db or tmp_path / "absent.sqlite")}
    return subprocess.run([sys.executable, "-m", "service.cli", "batch", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def _inputs(tmp_path: Path) -> tuple[list[str], int]:
    """Two inputs: the scenario Bundles with three bad records among them (not JSON, a Patient, a
    Claim with a bad date), and the examples' claims. Returns the paths and the records in."""
    bundles = [orjson.dumps(scenario(n).context["claim"]) for n in CLAIM_SCENARIOS]
    bad_date = scenario(9).context["claim"]
    bad_date = json.loads(json.dumps(bad_date))
    bad_date["entry"][0]["resource"]["id"] = "bad-date"
    bad_date["entry"][0]["resource"]["item"][0]["servicedDate"] = "2024-13-45"
    lines = bundles[:2] + [b"{broken", b"", orjson.dumps({"resourceType": "Patient", "id": "p"})] + bundles[2:] \
        + [orjson.dumps(bad_date)]
    first = tmp_path / "bundles.ndjson"
    first.write_bytes(b"\n".join(lines) + b"\n")
    examples = ROOT / "examples" / "claims.ndjson"
    records = len(CLAIM_SCENARIOS) + 3 + sum(1 for ln in examples.read_bytes().splitlines() if ln.strip())
    return [str(first), str(examples)], records


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One --out-dir run (Parquet, 2 workers) and the legacy --out run of each input."""
    tmp = tmp_path_factory.mktemp("batch_outputs")
    inputs, records = _inputs(tmp)
    proc = _run([*inputs, "--out-dir", str(tmp / "out"), "--workers", "2", "--quiet"], tmp)
    assert proc.returncode == 0, proc.stderr
    legacy = []
    for i, path in enumerate(inputs):
        out = tmp / f"legacy-{i}.ndjson"
        done = _run([path, "--out", str(out), "--quiet"], tmp)
        assert done.returncode == 0, done.stderr
        legacy.append([json.loads(ln) for ln in out.read_text().splitlines()])
    return {"dir": tmp / "out", "inputs": inputs, "records": records, "legacy": legacy, "tmp": tmp}


def _table(directory: Path) -> list[dict]:
    return pq.read_table(directory / "findings.parquet").to_pylist()


def test_the_table_has_the_declared_types(outputs):
    table = pq.read_table(outputs["dir"] / "findings.parquet")
    assert table.schema.equals(SCHEMA), table.schema
    types = {f.name: f.type for f in table.schema}
    assert pa.types.is_list(types["modifiers"]) and types["modifiers"].value_type == pa.string()
    assert types["service_date"] == types["edit_effective"] == pa.date32()
    assert types["units"] == types["item_sequence"] == pa.int32() and types["source_line"] == pa.int64()
    assert types["billed"] == types["allowed"] == types["paid"] == types["payment_effect"] == pa.float64()
    rows = table.to_pylist()
    assert rows and len({r["run_id"] for r in rows}) == 1 and len({r["config_hash"] for r in rows}) == 1
    assert {r["data_release"] for r in rows} == {"starter-2024Q3"}


def test_one_row_per_finding_and_line_as_the_single_file_output_says(outputs):
    rows = _table(outputs["dir"])
    expected = Counter()
    for path, legacy in zip(outputs["inputs"], outputs["legacy"]):
        for rec in legacy:
            for f in rec.get("findings", []):
                for key in f["lines"] or [None]:
                    expected[(path, rec["line"], f["code"], key)] += 1
    got = Counter((r["source_file"], r["source_line"], r["finding"], r["line_key"]) for r in rows)
    assert got == expected and max(got.values()) == 1
    multi = [r for r in rows if r["line_index"] > 0]  # a finding on several lines: one row each
    for r in multi:
        assert any(o["line_index"] == 0 and o["finding_index"] == r["finding_index"]
                   and o["source_line"] == r["source_line"] and o["source_file"] == r["source_file"] for o in rows)


def test_rows_carry_the_line_the_edit_and_the_carc(outputs):
    rows = _table(outputs["dir"])
    ptp = [r for r in rows if r["finding"] == "ptp-bundled"]
    assert ptp
    for r in ptp:
        assert r["code"] == "76000" and r["column2"] == "76000" and r["column1"] == r["primary_code"]
        assert r["edit_kind"] == "ncci-ptp" and r["modifier_indicator"] in ("0", "1") and r["rationale"]
        assert r["action"] == "remove-line" and r["carc"] == "236" and r["edit_program"] == "medicare"
        assert r["service_date"] is not None and r["item_sequence"] >= 1 and r["patient"]
        assert r["payment_effect"] < 0 and r["payment_basis"] == "mpfs"
    for r in rows:
        assert r["carc"] == CARC[r["finding"]]
        assert r["resource_type"] in ("Claim", "ExplanationOfBenefit") and r["resource_id"]


def test_a_removal_costs_the_lines_mpfs_payment(outputs):
    reference = open_reference(str(outputs["tmp"] / "absent.sqlite"))
    fee = reference.fee("76000", "")
    for r in _table(outputs["dir"]):
        if r["action"] == "remove-line" and not r["modifiers"] and r["line_index"] == 0 and r["setting"] == "practitioner":
            facility = reference.place_of_service(r["place_of_service"]).facility
            assert r["payment_effect"] == pytest.approx(-fee.dollars(facility) * r["units"]), r


def test_counts_add_up(outputs):
    summary = json.loads((outputs["dir"] / "summary.json").read_text())
    rows = _table(outputs["dir"])
    errors = [json.loads(ln) for ln in (outputs["dir"] / "errors.ndjson").read_text().splitlines()]
    assert summary["claims_in"] == summary["reviewed"] + summary["errors"] == outputs["records"]
    assert summary["errors"] == len(errors) == sum(1 for leg in outputs["legacy"] for r in leg if "error" in r)
    legacy_counts = Counter(f["code"] for leg in outputs["legacy"] for r in leg for f in r.get("findings", []))
    assert summary["findings"] == dict(legacy_counts)
    assert sum(summary["findings"].values()) == sum(1 for r in rows if r["line_index"] == 0)
    effect = Counter()
    for r in rows:
        if r["payment_effect"] is not None:
            effect[r["finding"]] += r["payment_effect"]
    assert summary["money"]["payment_effect"] == {k: round(v, 2) for k, v in sorted(effect.items())}
    fixed = (outputs["dir"] / "claims-corrected.ndjson").read_text().splitlines()
    assert summary["claims_corrected"] == len(fixed) > 0
    assert summary["claims_with_findings"] == len({(r["source_file"], r["source_line"]) for r in rows})


def test_errors_name_file_line_and_the_resources_path(outputs):
    errors = [json.loads(ln) for ln in (outputs["dir"] / "errors.ndjson").read_text().splitlines()]
    first = outputs["inputs"][0]
    by_line = {(e["file"], e["line"]): e for e in errors}
    assert by_line[(first, 3)]["path"] == "$" and "not valid JSON" in by_line[(first, 3)]["reason"]
    assert by_line[(first, 5)]["path"] == "$.resourceType"  # the record's, not a CDS Hooks context
    bad = by_line[(first, len(CLAIM_SCENARIOS) + 4)]  # after 3 bad records and a blank line
    assert bad["path"] == "Claim.item[0].servicedDate" and bad["resource"] == "Claim/bad-date"
    assert all("context" not in e["path"] and e["reason"] for e in errors)
    assert any(e["file"].endswith("examples/claims.ndjson") for e in errors)


def test_corrected_claims_review_clean(outputs):
    """Each corrected Claim, reviewed again, has none of the findings its fixes answered."""
    reference = open_reference(str(outputs["tmp"] / "absent.sqlite"))
    rows = _table(outputs["dir"])
    fixed_ids = set()
    for line in (outputs["dir"] / "claims-corrected.ndjson").read_text().splitlines():
        claim = json.loads(line)
        assert claim["resourceType"] == "Claim"
        fixed_ids.add(claim["id"])
        before = {r["finding"] for r in rows if r["resource_id"] == claim["id"] and r["action"] not in (None, "document")}
        assert before, claim["id"]
        after = {f.code for f in evaluate(case_from_claim(claim, [], reference), reference, resolve(None))}
        assert not before & after, (claim["id"], before, after)
    assert "pacemaker-claim" in fixed_ids or fixed_ids


def test_ndjson_format_holds_the_same_rows(outputs, tmp_path):
    proc = _run([*outputs["inputs"], "--out-dir", str(tmp_path / "nd"), "--format", "ndjson", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    nd = [json.loads(ln) for ln in (tmp_path / "nd" / "findings.ndjson").read_text().splitlines()]
    assert nd and set(nd[0]) == set(NAMES)
    pq_rows = _table(outputs["dir"])

    def key(r):
        return (r["source_file"], r["source_line"], r["finding_index"], r["line_index"])

    ignore = {"run_id"}
    for a, b in zip(sorted(nd, key=key), sorted(pq_rows, key=key)):
        b = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in b.items()}
        assert {k: v for k, v in a.items() if k not in ignore} == {k: v for k, v in b.items() if k not in ignore}
    assert len(nd) == len(pq_rows)


def test_exit_codes(tmp_path):
    good = orjson.dumps(scenario(9).context["claim"])
    src = tmp_path / "c.ndjson"
    src.write_bytes(b"\n".join([good, good, b"{bad"]) + b"\n")
    ok = _run([str(src), "--out-dir", str(tmp_path / "a")], tmp_path)
    assert ok.returncode == 0, ok.stderr  # a bad record is reported, not fatal
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["errors"] == 1
    over = _run([str(src), "--out-dir", str(tmp_path / "b"), "--max-error-rate", "0.2"], tmp_path)
    assert over.returncode == 1 and "max-error-rate" in over.stderr
    assert (tmp_path / "b" / "errors.ndjson").read_text().count("\n") == 1  # the outputs are written
    under = _run([str(src), "--out-dir", str(tmp_path / "c"), "--max-error-rate", "0.5"], tmp_path)
    assert under.returncode == 0, under.stderr
    for bad in ([str(src), "--out", str(tmp_path / "x"), "--out-dir", str(tmp_path / "d")],
                [str(src), "--out-dir", str(tmp_path / "d"), "--format", "csv"],
                [str(src), "--out-dir", str(tmp_path / "d"), "--max-error-rate", "2"],
                [str(src), "--out-dir", str(tmp_path / "d"), "--max-error-rate", "lots"],
                [str(tmp_path / "missing.ndjson"), "--out-dir", str(tmp_path / "d")],
                [str(src), str(src)],
                [str(src), "--format", "ndjson"]):
        proc = _run(bad, tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip() and "Traceback" not in proc.stderr, (bad, proc.stderr)
    assert not (tmp_path / "d").exists()
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps(scenario(9).context["claim"], indent=2))
    proc = _run([str(src), str(pretty), "--out-dir", str(tmp_path / "e")], tmp_path)
    assert proc.returncode == 2 and "jq -c" in proc.stderr and not (tmp_path / "e" / "summary.json").exists()


def test_require_cms_data_refuses_the_starter_set(tmp_path):
    src = tmp_path / "c.ndjson"
    src.write_bytes(orjson.dumps(scenario(9).context["claim"]) + b"\n")
    proc = _run([str(src), "--out-dir", str(tmp_path / "o"), "--require-cms-data"], tmp_path)
    assert proc.returncode == 2 and "starter set" in proc.stderr and "ncci import" in proc.stderr
    assert not (tmp_path / "o").exists()
    from nccidata.importer import import_paths

    table = tmp_path / "ptp_practitioner_2024q3.tsv"
    table.write_text("column_1\tcolumn_2\teffective_date\tdeletion_date\tmodifier_indicator\tptp_edit_rationale\n"
                     "29881\t76000\t20020101\t*\t1\tStandards of medical/surgical practice\n", encoding="utf-8")
    db = tmp_path / "store" / "ncci.sqlite"
    import_paths(str(db), [table])
    partial = _run([str(src), "--out-dir", str(tmp_path / "o"), "--require-cms-data"], tmp_path, db=db)
    assert partial.returncode == 2 and "mue practitioner" in partial.stderr, partial.stderr


def test_real_cms_tables(real_ncci_db, tmp_path):  # noqa: F811
    src = tmp_path / "c.ndjson"
    src.write_bytes(b"".join(orjson.dumps(scenario(n).context["claim"]) + b"\n" for n in CLAIM_SCENARIOS))
    proc = _run([str(src), "--out-dir", str(tmp_path / "o"), "--require-cms-data", "--quiet"], tmp_path,
                db=real_ncci_db)
    assert proc.returncode == 0, proc.stderr
    rows = _table(tmp_path / "o")
    [release] = {r["data_release"] for r in rows}  # the PTP/MUE quarter and the MPFS year
    assert "2024Q3" in release.split("+") and "starter" not in release
    ptp = [r for r in rows if r["edit_kind"] == "ncci-ptp"]
    assert ptp and all(r["edit_release"] == "2024Q3" for r in ptp)
    reference = open_reference(str(real_ncci_db))
    for r in ptp:  # the row's edit is the CMS table's row
        edits = reference.ptp_edits([r["column1"], r["column2"]], r["service_date"], r["setting"])
        [edit] = [e for e in edits if (e.column1, e.column2) == (r["column1"], r["column2"])]
        assert (edit.modifier_indicator, edit.effective, edit.deletion, edit.rationale) == \
            (r["modifier_indicator"], r["edit_effective"], r["edit_deletion"], r["rationale"]), r


def test_old_single_file_out_still_works(tmp_path):
    src = tmp_path / "c.ndjson"
    src.write_bytes(b"".join(orjson.dumps(scenario(n).context["claim"]) + b"\n" for n in (4, 9)))
    out = tmp_path / "out.ndjson"
    proc = _run([str(src), "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == [1, 2] and rows[1]["findings"][0]["code"] == "ptp-bundled"
    assert json.loads(proc.stderr.strip().splitlines()[-1])["records"] == 2


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return "needs Debian's chromium (tools/test-deps.sh installs it)"
    if not (NODE_DIR / "node_modules" / "playwright-core").is_dir():
        return "needs playwright-core in tests/node (tools/test-deps.sh runs npm ci there)"
    if shutil.which("node") is None:
        return "needs node (tools/test-deps.sh installs it)"
    return None


def test_report_renders_in_chromium_without_network(outputs, tmp_path):
    """report.html in a real browser: every chart drawn, and the page asks for nothing (every
    request but the page's own would be recorded; CSP violations would be console errors).
    FLUORO_CDS_UPDATE_SCREENSHOTS=1 copies the screenshot to docs/batch-report.png."""
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    page = (outputs["dir"] / "report.html").resolve()
    html = page.read_text()
    assert "<script" not in html and "http://" not in html.replace('http://www.w3.org/2000/svg', '')
    png = tmp_path / "report.png"
    proc = subprocess.run(["node", str(NODE_DIR / "report_page.mjs"),
                           json.dumps({"page": page.as_uri(), "screenshot": str(png), "timeoutMs": 60000})],
                          capture_output=True, text=True, timeout=120, cwd=NODE_DIR)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["requests"] == [] and seen["consoleErrors"] == [], seen
    assert seen["headings"][:5] == ["Findings by code", "Findings by primary procedure", "Findings by setting",
                                    "Findings by rendering provider", "Estimated payment effect by finding code"]
    summary = json.loads((outputs["dir"] / "summary.json").read_text())
    assert seen["charts"] == 5 and seen["bars"] >= len(summary["findings"]) + len(summary["by_setting"])
    assert png.stat().st_size > 10_000
    if os.environ.get("FLUORO_CDS_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(png, ROOT / "docs" / "batch-report.png")


def test_docs_list_every_column_and_carc():
    docs = (ROOT / "docs" / "service.md").read_text()
    section = docs[docs.index("## Payer batch"):docs.index("## Metrics and logs")]
    for name in NAMES:
        assert f"| `{name}` |" in section, name
    for finding, carc in CARC.items():
        row = next(ln for ln in section.splitlines() if ln.startswith("| `") and f"`{finding}`" in ln.split("|")[1])
        assert row.split("|")[2].strip() == (carc or "none"), (finding, row)


def test_explanation_of_benefit_rows_carry_its_adjudication(tmp_path):
    """An EOB's allowed and paid amounts land in the row; the payment effect of removing 76000
    is minus the allowed amount (as the card's payment text), and no corrected Claim is made."""
    from tests.test_batch_eob import as_eob

    src = tmp_path / "eob.ndjson"
    src.write_bytes(orjson.dumps(as_eob(scenario(9).context["claim"], allowed=30.0, paid=24.0)) + b"\n")
    proc = _run([str(src), "--out-dir", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    [row] = [r for r in _table(tmp_path / "o") if r["finding"] == "ptp-bundled"]
    assert row["resource_type"] == "ExplanationOfBenefit" and row["line_key"].startswith("ExplanationOfBenefit.item[")
    assert (row["billed"], row["allowed"], row["paid"]) == (100.0 * row["units"], 30.0 * row["units"], 24.0 * row["units"])
    assert row["payment_effect"] == -row["allowed"] and row["payment_basis"] == "allowed"
    assert (tmp_path / "o" / "claims-corrected.ndjson").read_text() == ""

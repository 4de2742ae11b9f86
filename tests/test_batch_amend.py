"""The amendment of the claims the edits across claims edit (service/batch.py ``_amend``): done in
the worker pool, the first review's outputs taken back from what the rewrite of the table removes;
the same outputs whatever the number of workers, and a summary that adds up from the outputs."""
from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from hooks.config import resolve
from service.batch import run_dir
from service.sample_data import write_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A 400-claim sample export (pairs split across claims among them) and the starter set."""
    root = tmp_path_factory.mktemp("amend")
    write_export(str(root / "export"), claims=400, seed=11)
    return root


def _outputs(out) -> tuple[list[str], list[str], dict]:
    rows = sorted(json.dumps(r, sort_keys=True, default=str) for r in pq.read_table(out / "findings.parquet").to_pylist())
    fixed = sorted((out / "claims-corrected.ndjson").read_text().splitlines())
    summary = json.loads((out / "summary.json").read_text())
    for key in ("seconds", "claims_per_second"):
        summary.pop(key)
    return rows, fixed, summary


@pytest.fixture(scope="module")
def runs(export):
    """The export run with 1 and with 2 workers, in small chunks (several tasks per worker)."""
    out = {}
    for workers in (1, 2):
        target = export / f"out-{workers}"
        run_dir([str(export / "export")], str(target), db_path=str(export / "absent.sqlite"), config=resolve(None),
                workers=workers, chunk_size=40, run_id="r")
        out[workers] = target
    return out


def test_one_and_two_workers_give_the_same_outputs(runs):
    one, two = _outputs(runs[1]), _outputs(runs[2])
    rows = [json.loads(r) for r in one[0]]
    across = {r["resource_id"] for r in rows if r["across_claims"]}
    assert len(across) >= 20  # the export's pairs split across claims were found (and their claims amended)
    assert one == two
    # a row across claims says its claim's use, as the claim's own rows do (the grouped case keeps it)
    assert {r["claim_use"] for r in rows if r["across_claims"]} == {r["claim_use"] for r in rows} == {"claim"}


def test_the_summary_adds_up_from_the_amended_outputs(runs):
    """The tally takes back the first review of each amended claim from what the rewrite removed:
    every count of summary.json is what the final outputs hold."""
    out = runs[2]
    rows = pq.read_table(out / "findings.parquet").to_pylist()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["findings"] == dict(sorted(Counter(r["finding"] for r in rows if r["line_index"] == 0).items()))
    effect = Counter()
    for r in rows:
        if r["payment_effect"] is not None:
            effect[r["finding"]] += r["payment_effect"]
    assert {k: round(effect[k], 2) for k in summary["findings"]} == \
        {k: summary["money"]["payment_effect"].get(k, 0) for k in summary["findings"]}
    assert summary["claims_with_findings"] == len({(r["source_file"], r["source_line"]) for r in rows})
    assert summary["claims_corrected"] == len((out / "claims-corrected.ndjson").read_text().splitlines())
    assert summary["claims_in"] == summary["reviewed"] + summary["errors"] == 400
    assert Counter(summary["by_setting"]) == Counter(r["setting"] or "(unknown)" for r in rows if r["line_index"] == 0)

def test_an_amended_claim_keeps_no_finding_of_a_line_removed_across_claims(runs):
    """A 76000 line removed by a finding across claims has no finding of its claim's own review
    left in the table (its modifier 26, documentation, units: withdrawn by the amendment)."""
    rows = pq.read_table(runs[2] / "findings.parquet").to_pylist()
    removed = {(r["source_file"], r["source_line"], r["line_key"]) for r in rows
               if r["across_claims"] and r["code"] == "76000" and r["action"] == "remove-line"}
    assert removed
    own = [r for r in rows if not r["across_claims"] and (r["source_file"], r["source_line"], r["line_key"]) in removed]
    assert own == []


def test_the_single_file_output_amends_the_claims_edited_across_claims(tmp_path, monkeypatch):
    """Scenario 9's 33289 and 76000 on two claims: across claims the 76000 is bundled (removed), so
    the 76000 claim's record no longer carries its own review's modifier-26 finding (withdrawn, as
    in --out-dir's table); the finding across claims follows the claims' records."""
    import io

    import orjson

    from service.batch import run
    from tests.scenario_fixtures import split_pair

    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in split_pair()))
    db = str(tmp_path / "absent.sqlite")
    (tmp_path / "second.ndjson").write_bytes(orjson.dumps(split_pair()[1]) + b"\n")
    alone = run(str(tmp_path / "second.ndjson"), io.BytesIO(), db_path=db, config=resolve(None))
    assert alone["findings"].get("modifier-26") == 1  # reviewed alone, it needs modifier 26
    out = io.BytesIO()
    summary = run([str(src)], out, db_path=db, config=resolve(None), workers=2)
    first, second, across = [json.loads(x) for x in out.getvalue().splitlines()]
    assert (first["line"], first["claim"], second["line"], second["claim"]) == (1, "first", 2, "second")
    assert second["findings"] == [] and first["findings"] == []
    assert across["claims"] == ["Claim/second", "Claim/first"] and across["findings"][0]["code"] == "ptp-bundled"
    assert summary["findings"] == {"ptp-bundled": 1} and summary["amended"] == 1
    # the rewrite reads the staged records a block at a time (service.amendment.AmendedRecords):
    # one record a block gives the same output
    from service.amendment import AmendedRecords

    monkeypatch.setattr(AmendedRecords, "BLOCK", 1)
    again = io.BytesIO()
    assert run([str(src)], again, db_path=db, config=resolve(None), workers=2)["findings"] == summary["findings"]
    assert again.getvalue() == out.getvalue()


def test_the_single_file_output_holds_the_findings_of_the_table(export, runs, tmp_path):
    """On the sample export, each claim's record in the single-file output has the findings of its
    own rows in --out-dir's table (amended the same way), and its records across claims are the
    table's findings across claims."""
    import io

    from service.batch import run

    out = io.BytesIO()
    summary = run([str(export / "export")], out, db_path=str(export / "absent.sqlite"), config=resolve(None),
                  workers=2, chunk_size=40)
    records = [json.loads(x) for x in out.getvalue().splitlines()]
    own = Counter((r["claim"], f["code"], tuple(f["lines"])) for r in records if "line" in r for f in r["findings"])
    across = Counter((f["code"], tuple(f["lines"])) for r in records if "claims" in r for f in r["findings"])
    rows = pq.read_table(runs[2] / "findings.parquet").to_pylist()
    lines: dict[tuple, list] = {}
    for r in rows:
        lines.setdefault((r["source_file"], r["source_line"], r["finding_index"], r["across_claims"],
                          r["finding"], tuple(r["other_claims"]) if r["across_claims"] else ()), []).append(r)
    table_own = Counter((rs[0]["resource_id"], code, tuple(r["line_key"] for r in sorted(rs, key=lambda r: r["line_index"])))
                        for (_f, _l, _i, is_across, code, _o), rs in lines.items() if not is_across)
    assert own == table_own
    assert sum(across.values()) == summary["cross_claim_findings"] == \
        sum(1 for r in rows if r["across_claims"] and r["line_index"] == 0)
    assert summary["amended"] > 0
    table_summary = json.loads((runs[2] / "summary.json").read_text())
    assert summary["findings"] == table_summary["findings"]

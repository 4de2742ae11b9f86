"""`fluoro-cds batch`: the claim-review rules over NDJSON claims, offline, in input order."""
from __future__ import annotations

import json
import subprocess
import sys

import orjson

from tests.conftest import ROOT
from tests.scenario_fixtures import scenario

CLAIM_SCENARIOS = (1, 3, 4, 5, 7, 9, 11)


def _ndjson(tmp_path, records) -> str:
    path = tmp_path / "claims.ndjson"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return str(path)


def _run(args, tmp_path, env_extra=None):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "FLUORO_CDS_DB": str(tmp_path / "absent.sqlite"), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "service.cli", "batch", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)


def test_batch_reviews_bundles_in_order_with_the_service_findings(tmp_path):
    records = [scenario(n).context["claim"] for n in CLAIM_SCENARIOS]
    records.insert(2, {"resourceType": "Patient", "id": "not-a-claim"})
    src = _ndjson(tmp_path, records)
    out = tmp_path / "out.ndjson"
    proc = _run([src, "--out", str(out), "--workers", "2"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(records) + 1))
    bad = rows[2]
    assert bad["claim"] is None and "Claim" in bad["error"] and bad["path"]
    by_scenario = dict(zip(CLAIM_SCENARIOS, rows[:2] + rows[3:]))
    for n, row in by_scenario.items():
        codes = {f["code"] for f in row["findings"]}
        expected = scenario(n).expected
        assert expected.topics <= codes, (n, codes)
        if expected.any_topic:
            assert codes & expected.any_topic, (n, codes)
        assert not codes & expected.forbidden_topics, (n, codes)
    assert {f["code"] for f in by_scenario[9]["findings"]} == {"ptp-bundled"}
    assert by_scenario[5]["findings"] == []
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    assert summary["records"] == len(records) and summary["errors"] == 1


def test_batch_configuration_switches_modifier_26_off(tmp_path):
    src = _ndjson(tmp_path, [scenario(4).context["claim"]])
    plain = _run([src], tmp_path)
    configured = _run([src, "--config", '{"global-billing": true}'], tmp_path)
    assert plain.returncode == configured.returncode == 0
    assert "modifier-26" in {f["code"] for f in json.loads(plain.stdout)["findings"]}
    assert "modifier-26" not in {f["code"] for f in json.loads(configured.stdout)["findings"]}


def test_batch_bad_usage_exits_2_and_keeps_no_partial_output(tmp_path):
    missing = _run([str(tmp_path / "nope.ndjson")], tmp_path)
    assert missing.returncode == 2 and "no such input file" in missing.stderr
    src = _ndjson(tmp_path, [scenario(4).context["claim"]])
    bad_config = _run([src, "--config", '{"global-billing": "yes"}'], tmp_path)
    assert bad_config.returncode == 2 and "global-billing" in bad_config.stderr


def test_batch_reports_lines_that_are_not_json(tmp_path):
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"{not json\n\n" + orjson.dumps(scenario(9).context["claim"]) + b"\n")
    proc = _run([str(path)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows[0]["line"] == 1 and "not valid JSON" in rows[0]["error"]
    assert rows[1]["line"] == 3 and rows[1]["findings"][0]["code"] == "ptp-bundled"


def test_batch_writes_its_counts_for_the_textfile_collector(tmp_path):
    """--metrics-file: the run's counts in the Prometheus text format (parsed back here with
    prometheus-client's parser), the same numbers as the summary; a bad name is exit 2 and
    leaves the previous file."""
    from prometheus_client.parser import text_string_to_metric_families

    records = [scenario(n).context["claim"] for n in (4, 9)] + [{"resourceType": "Patient"}]
    src = _ndjson(tmp_path, records)
    prom = tmp_path / "fluoro_cds_batch.prom"
    proc = _run([src, "--metrics-file", str(prom)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stderr.strip().splitlines()[-1])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(prom.read_text()) for s in family.samples}
    assert samples[("fluoro_cds_batch_records", ())] == summary["records"] == 3
    assert samples[("fluoro_cds_batch_errors", ())] == summary["errors"] == 1
    assert {k[1][0][1]: v for k, v in samples.items() if k[0] == "fluoro_cds_batch_findings"} == \
        summary["findings"] and summary["findings"]
    assert samples[("fluoro_cds_batch_last_success_timestamp_seconds", ())] > 1.7e9
    assert not list(tmp_path.glob("*.prom.*"))  # written aside and renamed: no leftovers
    before = prom.read_text()
    for bad in (str(tmp_path / "counts.txt"), str(tmp_path / "no-such-dir" / "x.prom")):
        refused = _run([src, "--metrics-file", bad], tmp_path)
        assert refused.returncode == 2 and ".prom" in refused.stderr and refused.stdout == ""
    assert prom.read_text() == before

"""The Spark job gives the same findings as `fluoro-cds batch`, on a real local Spark (pyspark)."""
from __future__ import annotations

import io
import json
import os

import orjson
import pytest

from hooks.config import ConfigError, resolve
from service.batch import run
from tests.scenario_fixtures import scenario, split_pair

pyspark = pytest.importorskip("pyspark", reason="pyspark (test extra) is not installed")


@pytest.fixture(scope="module")
def spark():
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from service.spark import local_session

    session = local_session("fluoro-cds-test")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_job_matches_the_batch_runner(spark, tmp_path):
    from service.spark import run_job

    records = [scenario(n).context["claim"] for n in (1, 3, 4, 5, 9, 11)]
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + b"{broken\n")
    count = run_job(spark, str(src), str(tmp_path / "out"))
    assert count == len(records) + 1
    rows = []
    for part in sorted((tmp_path / "out").glob("part-*")):
        rows += [json.loads(line) for line in part.read_text().splitlines()]
    rows.sort(key=lambda r: r["line"])
    expected = io.BytesIO()
    run(str(src), expected, db_path=str(tmp_path / "absent.sqlite"), config=resolve(None))
    batch_rows = [json.loads(line) for line in expected.getvalue().splitlines()]
    assert rows == batch_rows
    assert rows[-1]["error"].startswith("not valid JSON")
    assert {f["code"] for f in rows[4]["findings"]} == {"ptp-bundled"}


def test_spark_job_rejects_bad_configuration_before_running(spark, tmp_path):
    from service.spark import run_job

    with pytest.raises(ConfigError):
        run_job(spark, str(tmp_path / "none.ndjson"), str(tmp_path / "out"),
                config_overrides={"distinct-modifier": "ZZ"})


def test_spark_job_reads_the_imported_store(spark, tmp_path):
    """The store's catalog, release files and pair indexes reach the executors: findings cite
    the imported release (not the starter set) and match the batch runner on the same store."""
    from nccidata.importer import import_paths
    from service.spark import run_job

    table = tmp_path / "ptp_practitioner_2024q3.tsv"
    table.write_text("column_1\tcolumn_2\teffective_date\tdeletion_date\tmodifier_indicator\t"
                     "ptp_edit_rationale\n29881\t76000\t20020101\t*\t1\tStandards of medical/surgical "
                     "practice\n", encoding="utf-8")
    db = str(tmp_path / "store" / "ncci.sqlite")
    import_paths(db, [table])
    src = tmp_path / "claims.ndjson"
    src.write_bytes(orjson.dumps(scenario(1).context["claim"]) + b"\n")
    assert run_job(spark, str(src), str(tmp_path / "out"), db_path=db) == 1
    [row] = [json.loads(line) for part in sorted((tmp_path / "out").glob("part-*"))
             for line in part.read_text().splitlines()]
    expected = io.BytesIO()
    run(str(src), expected, db_path=db, config=resolve(None))
    assert row == json.loads(expected.getvalue())
    assert row["findings"], row
    cited = json.dumps(row["findings"])  # the PTP edit's citation names the imported file and row
    assert "ptp_practitioner_2024q3.tsv" in cited and "2024Q3" in cited


def _spark_job_main():
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("spark_job", ROOT / "deploy" / "spark_job.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_spark_job_honours_fluoro_cds_db_and_defaults_as_batch_does(spark, tmp_path, monkeypatch,
                                                                     capsys):
    """Without --db / --config, deploy/spark_job.py reads FLUORO_CDS_DB and FLUORO_CDS_DEFAULTS,
    and its output equals `fluoro-cds batch`'s under the same environment, line for line."""
    from nccidata.importer import import_paths
    from service.cli import main as cli_main

    table = tmp_path / "ptp_practitioner_2024q3.tsv"
    table.write_text("column_1\tcolumn_2\teffective_date\tdeletion_date\tmodifier_indicator\t"
                     "ptp_edit_rationale\n29881\t76000\t20020101\t*\t1\tStandards of medical/surgical "
                     "practice\n", encoding="utf-8")
    db = str(tmp_path / "store" / "ncci.sqlite")
    import_paths(db, [table])
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(orjson.dumps(scenario(n).context["claim"]) + b"\n" for n in (1, 4)))
    monkeypatch.setenv("FLUORO_CDS_DB", db)
    monkeypatch.setenv("FLUORO_CDS_DEFAULTS", '{"global-billing": true}')
    assert _spark_job_main()([str(src), str(tmp_path / "out")]) == 0
    rows = sorted((json.loads(line) for part in (tmp_path / "out").glob("part-*")
                   for line in part.read_text().splitlines()), key=lambda r: r["line"])
    assert cli_main(["batch", str(src), "--out", str(tmp_path / "batch.ndjson"), "--quiet"]) == 0
    batch_rows = [json.loads(line) for line in (tmp_path / "batch.ndjson").read_text().splitlines()]
    assert rows == batch_rows
    assert "2024Q3" in json.dumps(rows[0]["findings"])  # the store of FLUORO_CDS_DB, not the starter set
    assert "modifier-26" not in {f["code"] for f in rows[1]["findings"]}  # global-billing default
    capsys.readouterr()


def test_spark_job_refuses_an_existing_output_folder_in_one_line(tmp_path, capsys):
    src = tmp_path / "claims.ndjson"
    src.write_bytes(orjson.dumps(scenario(9).context["claim"]) + b"\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    assert _spark_job_main()([str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "exists already" in err and "Traceback" not in err
    assert (out / "keep.txt").read_text() == "earlier results"
    (out / "errors.ndjson").mkdir()  # --out-dir: an output of an earlier run is there
    assert _spark_job_main()([str(src), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "errors.ndjson exists already" in err and "Traceback" not in err
    assert _spark_job_main()([str(src), str(src), str(out)]) == 2  # three paths, no --out-dir
    assert "--out-dir" in capsys.readouterr().err
    from service.spark import OutputExists, run_job

    with pytest.raises(OutputExists):
        run_job(None, str(src), f"file://{out}")


def _spark_rows(directory, name):
    return [json.loads(line) for part in sorted((directory / name).glob("part-*"))
            for line in part.read_text().splitlines()]


def _split_pair() -> list[bytes]:
    """Scenario 9's 33289 and 76000 billed on two claims (same patient, provider and date)."""
    return [orjson.dumps(b) for b in split_pair(("split-first", "split-second"))]


def test_spark_table_job_writes_the_local_engines_outputs(spark, tmp_path):
    """Same input, same run id: the Spark job's findings.parquet (a typed DataFrame), errors,
    corrected claims and counts equal `fluoro-cds batch --out-dir`'s, rows compared after sorting."""
    import pyarrow.parquet as pq

    from service.batch import run_dir
    from service.findings_table import NAMES, SCHEMA
    from service.spark import run_table_job

    records = [orjson.dumps(scenario(n).context["claim"]) for n in (1, 3, 4, 5, 9, 11)]
    first = tmp_path / "a.ndjson"
    deep = b'{"resourceType": "Claim", "id": "deep", "extension": ' + b"[" * 300 + b"]" * 300 + b"}"  # > MAX_DEPTH
    first.write_bytes(b"\n".join(records[:3] + [b"{broken", b"", orjson.dumps({"resourceType": "Patient"}), deep])
                      + b"\n")
    second = tmp_path / "b.ndjson"
    second.write_bytes(b"\n".join(records[3:] + _split_pair()) + b"\n")
    inputs = [str(first), str(second)]
    db = str(tmp_path / "absent.sqlite")
    local = run_dir(inputs, str(tmp_path / "local"), db_path=db, config=resolve(None), run_id="run-1")
    result = run_table_job(spark, inputs, str(tmp_path / "spark"), db_path=None, run_id="run-1")

    def key(r):
        return json.dumps(r, sort_keys=True, default=str)

    spark_table = pq.read_table(tmp_path / "spark" / "findings.parquet")
    assert spark_table.schema.names == list(NAMES)
    assert [f.type for f in spark_table.schema] == [f.type for f in SCHEMA]
    spark_rows = sorted(spark_table.to_pylist(), key=key)
    local_rows = sorted(pq.read_table(tmp_path / "local" / "findings.parquet").to_pylist(), key=key)
    assert spark_rows == local_rows and len(local_rows) >= 5
    # split-second's 76000 is bundled into a 33289 of the same patient, provider and date on another
    # claim: split-first's, or scenario 9's own claim (whose own 76000 its own review removes)
    [removed] = [r for r in local_rows if r["resource_id"] == "split-second" and r["finding"] == "ptp-bundled"]
    split = [r for r in local_rows if r["across_claims"] and r["finding"] == "ptp-bundled"
             and r["other_claims"] == ["Claim/split-second"]] + [removed]
    assert len(split) == 2 and removed["other_claims"] == [f"Claim/{split[0]['resource_id']}"]
    assert split[0]["code"] == "33289" and split[0]["line_index"] == 1  # one finding naming both claims
    assert removed["resource_id"] == "split-second" and removed["action"] == "remove-line"
    assert all(r["across_claims"] and r["other_claims"] for r in split)
    # its own findings on the removed 76000 (modifier 26) are withdrawn, in both engines
    assert not [r for r in local_rows if r["resource_id"] == "split-second" and not r["across_claims"]]
    local_errors = [json.loads(ln) for ln in (tmp_path / "local" / "errors.ndjson").read_text().splitlines()]
    assert sorted(_spark_rows(tmp_path / "spark", "errors.ndjson"), key=lambda e: (e["file"], e["line"])) == \
        local_errors and len(local_errors) == 3
    assert "nests arrays and objects more than" in local_errors[-1]["reason"] and local_errors[-1]["path"] == "$"
    local_fixed = [json.loads(ln) for ln in (tmp_path / "local" / "claims-corrected.ndjson").read_text().splitlines()]
    assert sorted(_spark_rows(tmp_path / "spark", "claims-corrected.ndjson"), key=lambda c: c["id"]) == \
        sorted(local_fixed, key=lambda c: c["id"]) and local_fixed
    assert "split-second" in {c["id"] for c in local_fixed}  # its 76000 removed across claims
    summary = json.loads((tmp_path / "spark" / "summary.json").read_text())
    assert summary == result
    for k in ("claims_in", "reviewed", "errors", "findings", "money", "by_primary_procedure", "by_setting",
              "by_rendering_provider", "claims_corrected", "data_release", "config_hash", "run_id"):
        assert summary[k] == local[k], k
    assert summary["claims_in"] == summary["reviewed"] + summary["errors"] == 11
    assert "<svg" in (tmp_path / "spark" / "report.html").read_text()
    from service.spark import OutputExists

    with pytest.raises(OutputExists):  # its outputs are there already: refused before any task
        run_table_job(spark, inputs, str(tmp_path / "spark"))


def test_spark_table_job_joins_an_export_like_the_local_engine(spark, tmp_path):
    """A Bulk Data export (manifest, per-type files) with bad records, a dangling reference, repeated
    resources and pairs split across claims: the Spark job indexes the companions on the driver,
    joins each claim with them on the executors, and writes the local engine's rows, errors,
    corrected claims and counts."""
    import copy

    import pyarrow.parquet as pq

    from service.batch import run_dir
    from service.sample_data import write_export
    from service.spark import run_table_job

    root = tmp_path / "export"
    write_export(str(root), claims=80, seed=13)
    claims = [json.loads(x) for x in (root / "Claim.ndjson").read_text().splitlines()]
    dangling = copy.deepcopy(claims[0])
    dangling.update(id="dangling")
    dangling["item"][0]["encounter"] = [{"reference": "Encounter/nowhere"}]
    other = copy.deepcopy(claims[1])
    other["item"][0]["quantity"] = {"value": 3}
    with open(root / "Claim.ndjson", "ab") as fh:
        for rec in (dangling, claims[2], other):  # dangling; an identical repeat; a conflicting repeat
            fh.write(orjson.dumps(rec) + b"\n")
        fh.write(b'{"resourceType": "Cla\n')  # cut inside a string: the same reason from either reader
    encounter = (root / "Encounter.ndjson").read_text().splitlines()[0]
    with open(root / "Encounter.ndjson", "a") as fh:
        fh.write(encounter + "\n" + '{"resourceType": "Encounter", "id"\n')
    db = str(tmp_path / "absent.sqlite")
    local = run_dir([str(root)], str(tmp_path / "local"), db_path=db, config=resolve(None), run_id="run-2")
    result = run_table_job(spark, [str(root)], str(tmp_path / "spark"), db_path=None, run_id="run-2")

    def key(r):
        return json.dumps(r, sort_keys=True, default=str)

    local_rows = sorted(pq.read_table(tmp_path / "local" / "findings.parquet").to_pylist(), key=key)
    spark_rows = sorted(pq.read_table(tmp_path / "spark" / "findings.parquet").to_pylist(), key=key)
    assert spark_rows == local_rows
    assert any(r["across_claims"] for r in local_rows)  # pairs split across claims, joined by reference
    # every claim with a row counts, its findings its own or across claims
    assert local["claims_with_findings"] == len({(r["source_file"], r["source_line"]) for r in local_rows})
    assert {r["resource_type"] for r in local_rows} == {"Claim", "ExplanationOfBenefit"}
    assert any(r["finding"] == "modifier-26" for r in local_rows)  # the setting comes from the joined Encounter
    local_errors = [json.loads(ln) for ln in (tmp_path / "local" / "errors.ndjson").read_text().splitlines()]
    spark_errors = _spark_rows(tmp_path / "spark", "errors.ndjson")
    assert sorted(spark_errors, key=key) == sorted(local_errors, key=key)
    assert {e["path"] for e in local_errors} == {"Claim.item[0].encounter[0]", "Claim.id", "$"}
    local_fixed = [json.loads(ln) for ln in (tmp_path / "local" / "claims-corrected.ndjson").read_text().splitlines()]
    assert sorted(_spark_rows(tmp_path / "spark", "claims-corrected.ndjson"), key=lambda c: c["id"]) == \
        sorted(local_fixed, key=lambda c: c["id"]) and local_fixed
    for k in ("claims_in", "reviewed", "errors", "duplicates", "findings", "money", "by_primary_procedure",
              "by_setting", "by_rendering_provider", "claims_corrected", "claims_with_findings"):
        assert result[k] == local[k], k
    assert local["duplicates"] == {"claims_identical": 1, "claims_conflicting": 1, "companions_identical": 1,
                                   "companions_conflicting": 0}
    assert local["claims_in"] == 80 + 3 and local["errors"] == 3
    assert any(e["reason"].startswith("not valid JSON: unexpected end of data") for e in local_errors)


def test_spark_table_job_still_reads_a_folder_of_part_files(spark, tmp_path):
    """A folder of claim part files (Spark's own output, no *.ndjson name, no companions) is read
    by Spark as before, not taken for an empty export."""
    from service.spark import run_table_job

    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "part-00000").write_bytes(orjson.dumps(scenario(9).context["claim"]) + b"\n")
    (folder / "part-00001").write_bytes(orjson.dumps(scenario(1).context["claim"]) + b"\n")
    result = run_table_job(spark, [str(folder)], str(tmp_path / "out"), db_path=None)
    assert result["claims_in"] == result["reviewed"] == 2
    assert {"ptp-bundled", "fluoroscopy-integral"} <= set(result["findings"])


def _viewfs(spark, directory) -> str:
    """A viewfs:// url of a local directory: Hadoop's own non-local file system (a mount table over
    file:), read through the same FileSystem API as hdfs: or s3a:."""
    import uuid

    name = f"t{uuid.uuid4().hex[:10]}"
    spark.sparkContext._jsc.hadoopConfiguration().set(f"fs.viewfs.mounttable.{name}.link./data", f"file://{directory}")
    return f"viewfs://{name}/data"


def test_spark_table_job_joins_an_export_on_a_hadoop_file_system(spark, tmp_path):
    """An export on a Hadoop file system (here viewfs:, as hdfs: or s3a: would be): its files listed
    and its companions copied to the driver through Hadoop's FileSystem API and joined, so the rows,
    errors and counts are the local engine's on the same export, every file named by its url."""
    import pyarrow.parquet as pq

    from service.batch import run_dir
    from service.sample_data import write_export
    from service.spark import run_table_job

    root = tmp_path / "export"
    write_export(str(root), claims=60, seed=21)
    with open(root / "Encounter.ndjson", "a") as fh:
        fh.write('{"resourceType": "Encounter", "id"\n')  # a bad companion record
    url = _viewfs(spark, tmp_path) + "/export"
    local = run_dir([str(root)], str(tmp_path / "local"), db_path=str(tmp_path / "absent.sqlite"),
                    config=resolve(None), run_id="run-3")
    result = run_table_job(spark, [url], str(tmp_path / "spark"), db_path=None, run_id="run-3")

    def as_local(r):
        return {k: v.replace(url, str(root)) if isinstance(v, str) else v for k, v in r.items()}

    def key(r):
        return json.dumps(r, sort_keys=True, default=str)

    spark_rows = pq.read_table(tmp_path / "spark" / "findings.parquet").to_pylist()
    assert {r["source_file"] for r in spark_rows} <= {f"{url}/Claim.ndjson", f"{url}/ExplanationOfBenefit.ndjson"}
    local_rows = sorted(pq.read_table(tmp_path / "local" / "findings.parquet").to_pylist(), key=key)
    assert sorted(map(as_local, spark_rows), key=key) == local_rows
    assert any(r["finding"] == "modifier-26" for r in local_rows)  # the setting comes from the joined Encounter
    assert any(r["across_claims"] for r in local_rows)
    spark_errors = _spark_rows(tmp_path / "spark", "errors.ndjson")
    assert [e["file"] for e in spark_errors] == [f"{url}/Encounter.ndjson"]  # the url, not the driver's copy
    local_errors = [json.loads(ln) for ln in (tmp_path / "local" / "errors.ndjson").read_text().splitlines()]
    assert [as_local(e) for e in spark_errors] == local_errors
    for k in ("claims_in", "reviewed", "errors", "duplicates", "findings", "money", "claims_corrected",
              "claims_with_findings"):
        assert result[k] == local[k], k


def test_remote_inputs_are_listed_like_local_ones(spark, tmp_path):
    """Through Hadoop's FileSystem API: a directory, its manifest and a glob name the same files,
    of the same kinds, as the local listing; a path that names nothing is a usage error."""
    from service.bulk_input import UsageError, input_files
    from service.sample_data import write_export
    from service.spark_inputs import HadoopFiles, remote_input_files

    root = tmp_path / "export"
    write_export(str(root), claims=5, seed=3)
    (root / "notes.txt").write_text("not part of the export\n")
    url = _viewfs(spark, tmp_path) + "/export"
    sc = spark.sparkContext
    hadoop = HadoopFiles(sc)
    expected = sorted((os.path.basename(f.path), f.kind, f.claims) for f in input_files([str(root)]))

    def listed(pattern):
        return sorted((f.path.rsplit("/", 1)[-1], f.kind, f.claims)
                      for f in remote_input_files(sc, hadoop, pattern, str(tmp_path)))

    assert listed(url) == listed(url + "/manifest.json") == expected
    assert {"Claim", "Encounter", "Procedure", "Observation", "Location"} <= {kind for _n, kind, _c in expected}
    by_glob = sorted((os.path.basename(f.path), f.kind, f.claims)
                     for f in input_files(sorted(str(p) for p in root.glob("*.ndjson"))))
    assert listed(url + "/*.ndjson") == by_glob  # every NDJSON file, as the same paths given locally
    assert [f.path for f in remote_input_files(sc, hadoop, url, str(tmp_path))][0].startswith("viewfs://")
    with pytest.raises(UsageError, match="no such input"):
        remote_input_files(sc, hadoop, url + "/absent.ndjson", str(tmp_path))


def test_spark_jobs_refuse_a_cut_gzip_claim_file_in_one_line(spark, tmp_path):
    """Spark's text reader cannot give the lines before the damage of a gzip file cut short (the
    local engine reviews them and reports the rest as an error record: tests/test_batch_damaged_gzip.py):
    both jobs refuse such an input with a UsageError that says so (the CLI's exit 2), leave no
    output behind (a second run is not refused), and read the intact file."""
    import gzip

    from service.bulk_input import UsageError
    from service.sample_data import write_export
    from service.spark import run_job, run_table_job

    root = tmp_path / "export"
    write_export(str(root), claims=30, seed=3, compress=True)
    claims = root / "Claim.ndjson.gz"
    whole = claims.read_bytes()
    claims.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(UsageError, match="cut short or damaged.*gzip -t"):
        run_table_job(spark, [str(root)], str(tmp_path / "out"), db_path=None, run_id="r")
    assert not any((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else True
    with pytest.raises(UsageError, match="java.io.EOFException"):
        run_job(spark, str(claims), str(tmp_path / "lines"))
    assert not (tmp_path / "lines").exists()  # nothing left to refuse a second run
    claims.write_bytes(whole)
    result = run_table_job(spark, [str(root)], str(tmp_path / "out"), db_path=None, run_id="r")  # the refused run's
    assert result["claims_in"] == 30 and result["errors"] == 0
    eobs = gzip.decompress((root / "ExplanationOfBenefit.ndjson.gz").read_bytes()).splitlines()
    assert eobs and len(gzip.decompress(whole).splitlines()) + len(eobs) == 30  # every Claim and EOB read


def test_damaged_exports_give_the_same_outputs_in_both_engines(spark, tmp_path):
    """Damaged copies of a sample export (tests/export_damage.py: mutated resources, references
    pointed elsewhere, repeats with other content, broken lines; not the gzip damage Spark refuses,
    nor the manifest's): the Spark job writes the local engine's rows, errors, corrected claims and
    counts. A few rounds here (benchmarks/fuzz_batch.py runs the local engine long)."""
    import random
    import shutil

    import pyarrow.parquet as pq

    from service.batch import run_dir
    from service.sample_data import write_export
    from service.spark import run_table_job
    from tests.export_damage import damage, keys_of

    base = tmp_path / "base"
    write_export(str(base), claims=30, seed=7)
    keys = keys_of(base)
    rng = random.Random(1)  # its first rounds cut claim and companion lines, among others
    db = str(tmp_path / "absent.sqlite")

    def rows(directory):
        return sorted(json.dumps(r, sort_keys=True, default=str)
                      for r in pq.read_table(directory / "findings.parquet").drop_columns(["run_id"]).to_pylist())

    def lines(directory, name):
        found = _spark_rows(directory, name) if (directory / name).is_dir() else \
            [json.loads(x) for x in (directory / name).read_text().splitlines()]
        return sorted(json.dumps(r, sort_keys=True) for r in found)

    for n in range(3):
        export = tmp_path / f"r{n}"
        done: list[str] = []
        while not done or any("gzip" in d or "manifest" in d for d in done):
            shutil.rmtree(export, ignore_errors=True)
            shutil.copytree(base, export)
            done = damage(export, rng, keys)
        local = run_dir([str(export)], str(tmp_path / f"local{n}"), db_path=db, config=resolve(None), run_id="r")
        result = run_table_job(spark, [str(export)], str(tmp_path / f"spark{n}"), db_path=None, run_id="r")
        assert rows(tmp_path / f"spark{n}") == rows(tmp_path / f"local{n}"), done
        for name in ("errors.ndjson", "claims-corrected.ndjson"):
            assert lines(tmp_path / f"spark{n}", name) == lines(tmp_path / f"local{n}", name), (done, name)
        for k in ("claims_in", "reviewed", "errors", "duplicates", "findings", "money", "claims_corrected",
                  "claims_with_findings"):
            assert result[k] == local[k], (done, k)

"""The batch's inputs: FHIR Bulk Data exports (manifest or per-type files, plain or gzip) joined by
reference through an on-disk index, bad records reported with file, line and FHIR path, and the
NCCI edits across claims (service/bulk_input.py, service/claim_groups.py, hooks/rules/cross_claim.py)."""
from __future__ import annotations

import copy
import gzip
import io
import json
import os
import tracemalloc

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.config import resolve
from service.batch import run
from service.bulk_input import BatchInput, InputError, InputRecord, Joiner, RawRecord, review_input
from service.sample_data import write_export
from tests.ncci_support import real_ncci_db, real_reference  # noqa: F401
from tests.scenario_fixtures import scenario, split_pair

CLAIMS = ("Claim", "ExplanationOfBenefit")


def _append(path, *records) -> int:
    """Append NDJSON lines (dicts or raw bytes) to `path`; returns the first new line number."""
    with open(path, "rb") as fh:
        first = sum(1 for _ in fh) + 1
    with open(path, "ab") as fh:
        for r in records:
            fh.write((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n")
    return first


def _lines(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    out = []
    with opener(path, "rb") as fh:
        for line in fh:
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue  # the broken lines the tests append
    return out


def _run(paths, db, **kw) -> tuple[list[dict], dict]:
    out = io.BytesIO()
    summary = run(paths, out, db_path=str(db), config=resolve(None), **kw)
    return [json.loads(x) for x in out.getvalue().splitlines()], summary


def _split_pairs(export) -> dict[frozenset, str]:
    """The pairs the generator split across two claims, found from the raw claims: same patient,
    provider and date, one billing only 76000, the other only 33289 or 36556 -> "Type/id"s and the
    partner code. Medicare claims only (the store holds Medicare's releases)."""
    medicaid = {c["id"] for c in _lines(os.path.join(export, "Coverage.ndjson")) if c["type"]["coding"][0]["code"] == "2"}
    by_visit: dict[tuple, list[tuple[str, str]]] = {}
    for rtype in CLAIMS:
        for c in _lines(os.path.join(export, f"{rtype}.ndjson")):
            if c["insurance"][0]["coverage"]["reference"].rsplit("/", 1)[-1].replace("urn:uuid:", "") in medicaid:
                continue  # no Medicaid NCCI release imported: Medicare's edits are never applied to it
            codes = [i["productOrService"]["coding"][0]["code"] for i in c["item"]]
            if len(codes) == 1 and codes[0] in ("76000", "33289", "36556"):
                key = (c["patient"]["reference"].rsplit("/", 1)[-1].replace("urn:uuid:", ""),
                       c["provider"]["reference"], c["item"][0]["servicedDate"])
                by_visit.setdefault(key, []).append((f"{rtype}/{c['id']}", codes[0]))
    pairs = {}
    for members in by_visit.values():
        fluoro = [m for m in members if m[1] == "76000"]
        other = [m for m in members if m[1] != "76000"]
        if len(fluoro) == 1 and len(other) == 1:
            pairs[frozenset({fluoro[0][0], other[0][0]})] = other[0][1]
    return pairs


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A sample export of 300 claims, with bad records appended to its files."""
    root = tmp_path_factory.mktemp("export")
    write_export(str(root), claims=300, seed=7)
    claim = _lines(root / "Claim.ndjson")[0]
    bad_date = copy.deepcopy(claim)
    bad_date.update(id="bad-date")
    bad_date["item"][0]["servicedDate"] = "2024-02-30"
    dangling = copy.deepcopy(claim)
    dangling.update(id="dangling")
    dangling["item"][0]["encounter"] = [{"reference": "https://payer.example.org/fhir/Encounter/nowhere"}]
    eob = copy.deepcopy(_lines(root / "ExplanationOfBenefit.ndjson")[0])
    eob.update(id="bad-amount")
    eob["item"][0]["adjudication"][1]["amount"]["value"] = "12.00"
    defects = {
        "Claim.ndjson": _append(root / "Claim.ndjson", bad_date, dangling, b"{broken"),
        "ExplanationOfBenefit.ndjson": _append(root / "ExplanationOfBenefit.ndjson", eob),
        "Encounter.ndjson": _append(root / "Encounter.ndjson", b'{"resourceType": "Encounter", "id"',
                                    {"resourceType": "Patient", "id": "in-the-wrong-file"}),
        "Procedure.ndjson": _append(root / "Procedure.ndjson", {"resourceType": "Procedure", "status": "completed"}),
    }
    return str(root), defects


def test_an_export_is_reviewed_and_every_bad_record_reported(export, real_ncci_db):
    root, defects = export
    rows, summary = _run([root], real_ncci_db)
    claims_in = sum(len(_lines(os.path.join(root, f"{t}.ndjson"))) for t in CLAIMS) + 1  # + the broken line
    per_claim = [r for r in rows if "line" in r]
    assert summary["records"] == claims_in == len([r for r in per_claim if r.get("resourceType") in CLAIMS
                                                   or r["path"] == "$" and r["file"].endswith("Claim.ndjson")])
    errors = {(os.path.basename(r["file"]), r["line"]): r for r in per_claim if "error" in r}
    claim_line, eob_line = defects["Claim.ndjson"], defects["ExplanationOfBenefit.ndjson"]
    enc_line, proc_line = defects["Encounter.ndjson"], defects["Procedure.ndjson"]
    expected = {
        ("Claim.ndjson", claim_line): "Claim.item[0].servicedDate",
        ("Claim.ndjson", claim_line + 1): "Claim.item[0].encounter[0]",
        ("Claim.ndjson", claim_line + 2): "$",
        ("ExplanationOfBenefit.ndjson", eob_line): "ExplanationOfBenefit.item[0].adjudication[1].amount.value",
        ("Encounter.ndjson", enc_line): "$",
        ("Encounter.ndjson", enc_line + 1): "Patient.resourceType",
        ("Procedure.ndjson", proc_line): "Procedure.id",
    }
    assert {k: v["path"] for k, v in errors.items()} == expected
    assert "dangling" in errors[("Claim.ndjson", claim_line + 1)]["error"]
    assert "not valid JSON" in errors[("Encounter.ndjson", enc_line)]["error"]
    assert summary["errors"] == 4 and summary["companion_errors"] == 3
    reviewed = [r for r in per_claim if "findings" in r]
    assert len(reviewed) + summary["errors"] == summary["records"]
    assert {r["resourceType"] for r in reviewed} == set(CLAIMS)
    codes = {f["code"] for r in reviewed for f in r["findings"]}
    assert {"ptp-bundled", "modifier-26", "documentation-missing", "mue-exceeded"} <= codes


def test_pairs_split_across_two_claims_are_found_by_the_edits_across_claims(export, real_ncci_db):
    root, _defects = export
    rows, summary = _run([root], real_ncci_db)
    pairs = _split_pairs(root)
    assert len(pairs) >= 10
    cross = [r for r in rows if "claims" in r]
    assert summary["cross_claim_findings"] == len(cross)
    found = {frozenset(r["claims"]): r for r in cross}
    assert set(found) == set(pairs)
    for claims, partner in pairs.items():
        [finding] = found[claims]["findings"]
        # the real July 2024 practitioner PTP rows: 33289/76000 indicator 0 (the split claim bills
        # 76000-26, and a component modifier never bypasses an edit), 36556/76000 indicator 1
        assert finding["code"] == ("modifier-misuse" if partner == "33289" else "ptp-modifier-allowed"), finding
        [ptp] = [c for c in finding["citations"] if c["kind"] == "ncci-ptp"]
        assert ptp["details"]["modifier_indicator"] == ("0" if partner == "33289" else "1")
        assert {ln["claim"] for ln in found[claims]["lines"]} == set(claims)
        assert len(finding["lines"]) == 2 and all(":" in k for k in finding["lines"])
        assert any(c["kind"] == "ncci-ptp" and c["details"]["column1"] == partner for c in finding["citations"])
    alone = {r["claim"]: r for r in rows if "findings" in r and "line" in r}
    for claims in pairs:  # the per-claim review cannot see the pair
        for name in claims:
            codes = {f["code"] for f in alone[name.split("/", 1)[1]]["findings"]}
            assert not codes & {"ptp-bundled", "ptp-modifier-allowed", "modifier-misuse"}, (name, codes)


def test_a_pair_split_across_claims_in_plain_ndjson(tmp_path, real_ncci_db):
    src = tmp_path / "claims.ndjson.gz"
    with gzip.open(src, "wb") as fh:
        for b in split_pair():
            fh.write(orjson.dumps(b) + b"\n")
    rows, summary = _run([str(src)], real_ncci_db, workers=2)
    assert [r["claim"] for r in rows[:2]] == ["first", "second"]
    assert all(not {"ptp-bundled"} & {f["code"] for f in r["findings"]} for r in rows[:2])
    [cross] = rows[2:]
    assert cross["claims"] == ["Claim/second", "Claim/first"]
    assert cross["findings"][0]["code"] == "ptp-bundled"
    assert cross["findings"][0]["fixes"][0]["line"] == "Claim/second:Claim.item[0]"


def test_gzip_exports_and_manifests_give_the_same_review(tmp_path, real_ncci_db):
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    write_export(str(plain), claims=120, seed=3)
    write_export(str(packed), claims=120, seed=3, compress=True)
    by_dir, _ = _run([str(plain)], real_ncci_db)
    by_manifest, _ = _run([str(packed / "manifest.json")], real_ncci_db)
    strip = [{k: v for k, v in r.items() if k != "file"} for r in by_dir]
    assert strip == [{k: v for k, v in r.items() if k != "file"} for r in by_manifest]
    assert all(r["file"].endswith(".ndjson.gz") for r in by_manifest if "file" in r)
    # per-type files given one by one (no manifest) join the same way
    files = sorted(str(plain / n) for n in os.listdir(plain) if n.endswith(".ndjson"))
    by_files, _ = _run(files, real_ncci_db)
    assert by_files == by_dir


def test_relative_absolute_and_urn_uuid_references_are_joined(tmp_path):
    write_export(str(tmp_path), claims=200, seed=11)
    styles: dict[str, int] = {}
    with BatchInput([str(tmp_path)]) as source:
        for item in source.records():
            assert isinstance(item, InputRecord), item
            ref = item.resource["item"][0]["encounter"][0]["reference"]
            style = "urn:uuid" if ref.startswith("urn:uuid:") else "absolute" if "://" in ref else "relative"
            styles[style] = styles.get(style, 0) + 1
            target = ref.rsplit("/", 1)[-1].replace("urn:uuid:", "")
            kinds = {r["resourceType"] for r in item.companions}
            encounters = [r for r in item.companions if r["resourceType"] == "Encounter"]
            assert [e["id"] for e in encounters] == [target]
            assert {"Location", "Coverage", "Procedure"} <= kinds, (style, kinds)
            if style == "urn:uuid":
                assert item.aliases[ref] is encounters[0]
    assert min(styles.get(s, 0) for s in ("relative", "absolute", "urn:uuid")) > 5, styles


def test_export_findings_equal_the_claim_review_service(tmp_path, real_ncci_db, real_reference):
    from service.app import create_app
    from service.settings import Settings

    write_export(str(tmp_path / "export"), claims=80, seed=5)
    client = create_app(Settings(db_path=str(real_ncci_db), state_db_path=str(tmp_path / "state.sqlite"))).test_client()
    compared = 0
    with BatchInput([str(tmp_path / "export")]) as source:
        joiner = Joiner(source.index_path)
        for raw in source.raw():
            assert isinstance(raw, RawRecord)
            record = joiner.join(raw)
            if record.resource["resourceType"] != "Claim":
                continue
            reviewed = review_input(record, real_reference, resolve(None))
            bundle = {"resourceType": "Bundle", "type": "collection",
                      "entry": [{"resource": record.resource}]
                      + [{"fullUrl": alias, "resource": res} for alias, res in record.aliases.items()]
                      + [{"resource": r} for r in record.companions if r not in record.aliases.values()]}
            resp = client.post("/cds-services/fluoroscopy-claim-review", json={
                "hook": "org.fluoro-cds.claim-review", "hookInstance": f"00000000-0000-4000-8000-{compared:012d}",
                "context": {"patientId": "p", "claim": bundle}})
            assert resp.status_code == 200, resp.get_json()
            cards = [(c["source"]["topic"]["code"], c["summary"]) for c in resp.get_json()["cards"]]
            assert cards == [(f.code, f.summary) for f in reviewed.findings], record.resource["id"]
            compared += 1
    assert compared >= 40


def _reader_peak(path: str) -> tuple[int, int]:
    """(records read, peak traced bytes) of reading and joining every claim of an export."""
    tracemalloc.start()
    try:
        with BatchInput([path]) as source:
            n = sum(1 for item in source.records() if isinstance(item, InputRecord))
        return n, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_reader_memory_does_not_grow_with_the_export(tmp_path):
    small, large = tmp_path / "small", tmp_path / "large"
    write_export(str(small), claims=400, seed=2)
    write_export(str(large), claims=4000, seed=2)
    n_small, peak_small = _reader_peak(str(small))
    n_large, peak_large = _reader_peak(str(large))
    assert (n_small, n_large) == (400, 4000)
    # ten times the claims: the peak stays within 1.5x (the index is on disk, records stream)
    assert peak_large < 1.5 * peak_small, (peak_small, peak_large)


def test_input_errors_have_the_documented_record_shape():
    err = InputError("Claim.ndjson", 3, "Claim.item[0].servicedDate", "Claim.item[0].servicedDate: bad", "Claim", "c1")
    assert err.as_dict() == {"file": "Claim.ndjson", "line": 3, "path": "Claim.item[0].servicedDate",
                             "reason": "Claim.item[0].servicedDate: bad", "resourceType": "Claim", "id": "c1",
                             "claim": True}


def test_out_dir_run_over_an_export(export, real_ncci_db, tmp_path):
    from service.batch import run_dir

    root, defects = export
    out = tmp_path / "out"
    summary = run_dir([root], str(out), db_path=str(real_ncci_db), config=resolve(None), fmt="ndjson", workers=2)
    claims_in = sum(len(_lines(os.path.join(root, f"{t}.ndjson"))) for t in CLAIMS) + 1
    assert (summary["claims_in"], summary["errors"]) == (claims_in, 4)
    errors = [json.loads(x) for x in (out / "errors.ndjson").read_text().splitlines()]
    assert len(errors) == 7  # 4 claims, 3 companion records
    assert {(os.path.basename(e["file"]), e["line"], e["path"]) for e in errors} >= {
        ("Claim.ndjson", defects["Claim.ndjson"] + 1, "Claim.item[0].encounter[0]"),
        ("Procedure.ndjson", defects["Procedure.ndjson"], "Procedure.id")}
    rows = [json.loads(x) for x in (out / "findings.ndjson").read_text().splitlines()]
    for claims, partner in _split_pairs(root).items():
        ids = {c.split("/", 1)[1] for c in claims}
        pair = [r for r in rows if r["resource_id"] in ids and r["column1"] == partner
                and r["finding"] in ("modifier-misuse", "ptp-bundled", "ptp-modifier-allowed")]
        assert {r["resource_id"] for r in pair} == ids, claims
        assert sorted(r["line_index"] for r in pair) == [0, 1]  # one finding, counted once
    counted = {}
    for r in rows:
        if r["line_index"] == 0:
            counted[r["finding"]] = counted.get(r["finding"], 0) + 1
    assert counted == summary["findings"]


@pytest.mark.parametrize("workers,chunk_size", [(1, 500), (2, 7)])
def test_repeated_resources_keep_the_first_skip_identical_and_report_conflicting(tmp_path, real_ncci_db, workers,
                                                                                 chunk_size):
    """A repeated "Type/id": the first is kept; an identical repeat (the same JSON value, even
    re-serialised) is skipped and counted; one with other content is an errors.ndjson record
    naming its file, line and path and the first's place. Claim/x and ExplanationOfBenefit/x are
    two resources (ids are unique within a type). With workers and small chunks the workers say
    each claim's identity and the reader decides in input order (repeats in other chunks than
    their first; a chunk holding one is reviewed again without it)."""
    from service.batch import run_dir

    root = tmp_path / "export"
    write_export(str(root), claims=40, seed=5)
    claims, encounters = _lines(root / "Claim.ndjson"), _lines(root / "Encounter.ndjson")
    eob = _lines(root / "ExplanationOfBenefit.ndjson")[0]
    same_claim = orjson.dumps(claims[0], option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2).replace(b"\n", b"")
    other_claim = copy.deepcopy(claims[1])
    other_claim["item"][0]["quantity"] = {"value": 987654321}
    enc = next(e for e in encounters if e["id"] == claims[2]["item"][0]["encounter"][0]["reference"].rsplit("/", 1)[-1]
               .replace("urn:uuid:", ""))
    other_enc = copy.deepcopy(enc)
    other_enc["period"] = {"start": "1901-02-03", "end": "1901-02-03"}
    twin = copy.deepcopy(claims[3])
    twin["id"] = eob["id"]  # a Claim with an EOB's id: another resource, reviewed
    claim_at = _append(root / "Claim.ndjson", same_claim, other_claim, twin)
    enc_at = _append(root / "Encounter.ndjson", orjson.dumps(encounters[0], option=orjson.OPT_SORT_KEYS), other_enc)
    out = tmp_path / "out"
    summary = run_dir([str(root)], str(out), db_path=str(real_ncci_db), config=resolve(None), fmt="ndjson",
                      workers=workers, chunk_size=chunk_size)
    assert summary["duplicates"] == {"claims_identical": 1, "claims_conflicting": 1, "companions_identical": 1,
                                     "companions_conflicting": 1}
    claims_in = 40 + 3 - 1  # the identical repeat is not a claim in; the conflicting one is one, in error
    assert (summary["claims_in"], summary["errors"]) == (claims_in, 1)
    errors = {(os.path.basename(e["file"]), e["line"]): e for e in
              (json.loads(x) for x in (out / "errors.ndjson").read_text().splitlines())}
    assert set(errors) == {("Claim.ndjson", claim_at + 1), ("Encounter.ndjson", enc_at + 1)}
    claim_err, enc_err = errors[("Claim.ndjson", claim_at + 1)], errors[("Encounter.ndjson", enc_at + 1)]
    assert claim_err["path"] == "Claim.id" and claim_err["resource"] == f"Claim/{claims[1]['id']}"
    assert "Claim.ndjson line 2 with other content" in claim_err["reason"] and "first is kept" in claim_err["reason"]
    assert enc_err["path"] == "Encounter.id" and f"Encounter/{enc['id']}" in enc_err["reason"]
    assert "987654321" not in claim_err["reason"] and "1901-02-03" not in enc_err["reason"]  # never the value
    rows = [json.loads(x) for x in (out / "findings.ndjson").read_text().splitlines()]
    assert {(r["source_line"]) for r in rows if r["resource_id"] == claims[0]["id"]} <= {1}
    # neither repeat has rows of its own (a chunk holding one was reviewed again without it)
    assert not {claim_at, claim_at + 1} & {r["source_line"] for r in rows if r["source_file"].endswith("Claim.ndjson")}
    # the first Encounter is the one joined (the conflicting repeat's period is not)
    with BatchInput([str(root)]) as source:
        joiner = Joiner(source.index_path)
        joined = joiner.join(RawRecord(str(root / "Claim.ndjson"), 3, orjson.dumps(claims[2])))
    [got] = [r for r in joined.companions if r.get("resourceType") == "Encounter" and r["id"] == enc["id"]]
    assert got == enc


def test_the_single_file_output_skips_identical_repeats_and_reports_conflicting(tmp_path, real_ncci_db):
    claim = scenario(1).context["claim"]
    other = copy.deepcopy(claim)
    (other["entry"][0]["resource"] if other["resourceType"] == "Bundle" else other)["created"] = "2024-01-02"
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in (claim, claim, other)))
    rows, summary = _run([str(src)], real_ncci_db)
    assert [r["line"] for r in rows] == [1, 3]
    assert rows[1]["path"].endswith(".id") and "line 1 with other content" in rows[1]["error"]
    assert summary["duplicates"]["claims_identical"] == 1 and summary["duplicates"]["claims_conflicting"] == 1
    assert (summary["records"], summary["errors"]) == (2, 1)


@pytest.mark.parametrize("fmt", ["parquet", "ndjson"])
def test_out_dir_withdraws_the_findings_of_a_line_removed_across_claims(tmp_path, real_ncci_db, fmt):
    """33289 on claim "first", 76000 on claim "second" (a hospital patient's, billed global: its own
    review asks for modifier 26). Across claims 76000 is bundled: the table has the finding across
    claims (across_claims true, other_claims the other claim) and no modifier-26 row any more;
    the corrected "second" has the 76000 removed; the summary counts what the table holds."""
    import pyarrow.parquet as pq

    from service.batch import run_dir

    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in split_pair()))
    alone = tmp_path / "alone.ndjson"
    alone.write_bytes(src.read_bytes().splitlines(keepends=True)[1])
    config = resolve(None)
    by_itself = run_dir([str(alone)], str(tmp_path / "alone"), db_path=str(real_ncci_db), config=config, fmt=fmt)
    assert "modifier-26" in by_itself["findings"]  # what the claim's own review finds
    out = tmp_path / "out"
    summary = run_dir([str(src)], str(out), db_path=str(real_ncci_db), config=config, fmt=fmt)
    if fmt == "parquet":
        rows = pq.read_table(out / "findings.parquet").to_pylist()
    else:
        rows = [json.loads(x) for x in (out / "findings.ndjson").read_text().splitlines()]
    assert sorted((r["resource_id"], r["finding"], r["across_claims"], r["other_claims"]) for r in rows) == [
        ("first", "ptp-bundled", True, ["Claim/second"]), ("second", "ptp-bundled", True, ["Claim/first"])]
    assert summary["findings"] == {"ptp-bundled": 1}
    assert set(summary["money"]["payment_effect"]) == {"ptp-bundled"}
    assert summary["money"]["payment_effect_total"] == round(sum(r["payment_effect"] or 0 for r in rows), 2) < 0
    corrected = {c["id"]: c for c in map(json.loads, (out / "claims-corrected.ndjson").read_text().splitlines())}
    assert set(corrected) == {"second"} and not corrected["second"].get("item")
    assert summary["claims_corrected"] == 1 and (summary["claims_in"], summary["reviewed"]) == (2, 2)
    # both claims have a finding, though neither keeps one of its own (the first had none, the
    # second's modifier-26 went with its 76000)
    assert summary["claims_with_findings"] == len({(r["source_file"], r["source_line"]) for r in rows}) == 2


def test_linked_resources_come_in_reading_order_across_files(tmp_path):
    """ExportIndex.linked answers in the order the resources were read (file, then line): the
    links' insertion order (a speed shortcut over sorting by file and line)."""
    from service.bulk_input import ExportIndex, InputFile

    def proc(pid):
        return {"resourceType": "Procedure", "id": pid, "status": "completed", "encounter": {"reference": "Encounter/e1"}}

    first, second = tmp_path / "Procedure.000.ndjson", tmp_path / "Procedure.001.ndjson"
    first.write_bytes(b"".join(orjson.dumps(proc(p)) + b"\n" for p in ("z", "a", "m")))
    second.write_bytes(b"".join(orjson.dumps(proc(p)) + b"\n" for p in ("b", "y")))
    path = str(tmp_path / "index.sqlite")
    index = ExportIndex(path, create=True)
    # the second file read first: reading order, not file names nor ids
    assert list(index.load([InputFile(str(second), "Procedure", False), InputFile(str(first), "Procedure", False)])) == []
    index.close()
    names = sorted(os.listdir(tmp_path))
    assert len(names) == 4 and names[:3] == sorted([first.name, second.name, "index.sqlite"])
    assert names[3].startswith(f"index.sqlite.bodies-{os.getpid()}-")  # this process's store
    got = [r["id"] for r in ExportIndex(path).linked("encounter", {"resourceType": "Encounter", "id": "e1"})]
    assert got == ["b", "y", "z", "a", "m"]


def test_the_index_is_not_read_before_its_load_ends(tmp_path):
    """Readers open the index as immutable (no locks, no change checks: it is written once), so
    opening one while it is being written is refused."""
    from service.bulk_input import ExportIndex, InputFile

    src = tmp_path / "Procedure.ndjson"
    src.write_bytes(orjson.dumps({"resourceType": "Procedure", "id": "p", "encounter": {"reference": "Encounter/e"}}) + b"\n")
    path = str(tmp_path / "index.sqlite")
    index = ExportIndex(path, create=True)
    loading = index.load([InputFile(str(src), "Procedure", False)])
    with pytest.raises(RuntimeError, match="before its load ended"):
        ExportIndex(path)
    assert list(loading) == []
    index.close()
    assert ExportIndex(path).encounter("e")[1][0]["id"] == "p"


def _recorded_map(tasks: list):
    """A `map_parts` for ExportIndex.load that runs the tasks here and keeps them in `tasks`."""
    def map_parts(function, items):
        items = list(items)
        tasks.extend(items)
        return map(function, items)
    return map_parts


@pytest.mark.parametrize("ranges", [False, True])
def test_repeats_of_companions_are_told_apart(tmp_path, monkeypatch, ranges):
    """Repeats of resources linked to one encounter, in the same part of the load as their first
    record or in later ones: each is compared with its own first record (identical: skipped;
    conflicting: an error), and the encounter's members are each first record once, in reading
    order. The same when the lines are parsed a range a task (`map_parts`, as the batch's worker
    pool does)."""
    from service import bulk_input
    from service.bulk_input import ExportIndex, InputFile

    monkeypatch.setattr(bulk_input, "_FLUSH_ROWS", 2)  # a write every two lines: repeats in later batches
    monkeypatch.setattr(bulk_input, "_RANGE_BYTES", 150)  # ranges of about two lines: repeats in later tasks

    def obs(oid, enc="Encounter/e1", **more):
        return {"resourceType": "Observation", "id": oid, "encounter": {"reference": enc}, **more}

    path = tmp_path / "Observation.ndjson"
    records = [obs("o1"), obs("o2"), obs("o3"), obs("x", "Encounter/e2"), obs("o2"), obs("o1", status="final"),
               obs("o3"), obs("o4"), obs("o4", status="final")]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    index = ExportIndex(str(tmp_path / "index.sqlite"), create=True)
    tasks: list = []
    errors = list(index.load([InputFile(str(path), "Observation", False)], _recorded_map(tasks) if ranges else None))
    assert (len(tasks) > 3) if ranges else not tasks  # the repeats in later tasks than their first
    assert [(e.line, e.path, e.resource_id) for e in errors] == [(6, "Observation.id", "o1"), (9, "Observation.id", "o4")]
    assert dict(index.duplicates) == {"companions_identical": 2, "companions_conflicting": 2}
    index.close()
    linked = ExportIndex(str(tmp_path / "index.sqlite")).linked("encounter", {"resourceType": "Encounter", "id": "e1"})
    assert [(r["id"], "status" in r) for r in linked] == [("o1", False), ("o2", False), ("o3", False), ("o4", False)]


def test_line_ranges_cover_every_line_once_with_its_number(tmp_path):
    """The load's tasks (service.bulk_input.line_ranges / range_lines) give, range after range,
    exactly numbered_lines' (number, line) pairs: blank lines counted and skipped, a line longer
    than a range, no newline at the end, an oversized line (read past, never held)."""
    from service import bulk_input
    from service.bulk_input import OVERSIZED, line_ranges, numbered_lines, range_lines

    path = tmp_path / "Observation.ndjson"
    lines = [b'{"a":1}', b"", b"  ", b'{"b":"' + b"x" * 300 + b'"}', b'{"c":3}'] * 5 + [b"[1]", b'{"end":true}']
    path.write_bytes(b"\n".join(lines))  # no newline after the last line
    whole = list(numbered_lines(str(path)))
    assert len(whole) == 17 and whole[-1] == (27, b'{"end":true}')
    for size in (1, 16, 64, 400, 1 << 20):
        ranges = list(line_ranges(str(path), size))
        assert ranges[0][0] == 0 and sum(r[1] for r in ranges) == path.stat().st_size
        assert all(a[0] + a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert [x for r in ranges for x in range_lines(str(path), *r)] == whole, size
    big = tmp_path / "Big.ndjson"
    big.write_bytes(b'{"a":1}\n' + b"x" * 5000 + b'\n{"b":2}\n')
    monkey = pytest.MonkeyPatch()
    monkey.setattr(bulk_input, "MAX_RECORD_BYTES", 1000)
    try:
        got = [x for r in line_ranges(str(big), 64) for x in range_lines(str(big), *r)]
    finally:
        monkey.undo()
    assert got == [(1, b'{"a":1}\n'), (2, OVERSIZED), (3, b'{"b":2}\n')]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300).map(lambda b: bytes(b"{}\n\r x"[c % 6] for c in b)), st.integers(1, 40))
def test_line_ranges_of_any_bytes_give_numbered_lines(tmp_path, data, size):
    """Whatever the bytes (newlines, CRLF, blank and whitespace lines, none at the end, an empty
    file), the ranges of the load's tasks give numbered_lines' pairs, once each, in order."""
    from service.bulk_input import line_ranges, numbered_lines, range_lines

    path = tmp_path / "Any.ndjson"
    path.write_bytes(data)
    ranges = list(line_ranges(str(path), size))
    assert sum(r[1] for r in ranges) == len(data)
    assert [x for r in ranges for x in range_lines(str(path), *r)] == list(numbered_lines(str(path)))


def test_the_index_parsed_a_range_a_task_is_the_index_parsed_here(tmp_path, monkeypatch):
    """ExportIndex.load with `map_parts` (the batch's workers parse the plain companion files a
    range of lines a task, each into a shard of its own that this process merges) writes the same
    index, rows in the same order, as the load that parses every line itself; gzip files are parsed
    here either way (their rows straight into the index, between the workers' parts)."""
    import sqlite3

    from service import batch, bulk_input
    from service.bulk_input import ExportIndex, input_files

    root = tmp_path / "export"
    write_export(str(root), claims=60, seed=3)
    with open(root / "Observation.ndjson", "rb") as fh, gzip.open(root / "Observation.ndjson.gz", "wb") as gz:
        gz.write(fh.read())
    os.remove(root / "Observation.ndjson")
    os.remove(root / "manifest.json")  # the folder's per-type files are read
    _append(root / "Procedure.ndjson", b"{broken", {"resourceType": "Procedure"})
    companions = [f for f in input_files([str(root)]) if not f.claims]
    monkeypatch.setattr(bulk_input, "_RANGE_BYTES", 2048)  # many tasks

    def dump(path: str) -> list:
        """The index's rows, each resource with its body read back (where a body is stored differs)."""
        db, reader = sqlite3.connect(path), ExportIndex(path)
        resources = [(*row[:-3], reader._body(*row[-3:])) for row in db.execute(
            "SELECT id, key, rid, rtype, file, line, encounter, store, offset, size FROM resources ORDER BY id")]
        return [resources, *(db.execute(f"SELECT rowid, * FROM {t} ORDER BY rowid").fetchall()
                             for t in ("based_on", "files"))]

    indexes, errors, tasks = [], [], []
    with batch._pool(2, batch._init_worker, (None, {})) as pool_map:  # workers: shards of their own, merged
        for name, map_parts in (("here", None), ("tasks", _recorded_map(tasks)), ("pool", pool_map)):
            index = ExportIndex(str(tmp_path / f"{name}.sqlite"), create=True)
            errors.append([e.as_dict() for e in index.load(companions, map_parts)])
            index.close()
            indexes.append(dump(str(tmp_path / f"{name}.sqlite")))
    assert len(tasks) > 20 and not any(t[2].path.endswith(".gz") for t in tasks)
    assert len(errors[0]) == 2 and errors[0] == errors[1] == errors[2]
    assert len(indexes[0][0]) > 300 and indexes[0] == indexes[1] == indexes[2]
    # the workers' rows files are merged and removed; each bodies file stays, named in `stores`: this
    # process's (the gzip file) and those of the workers that took tasks
    left = {p.name for p in tmp_path.iterdir() if p.name.startswith("pool.sqlite")}
    assert not [n for n in left if bulk_input.ROWS_SUFFIX in n]
    named = {n for (n,) in sqlite3.connect(str(tmp_path / "pool.sqlite")).execute("SELECT name FROM stores")}
    assert named == {n for n in left if bulk_input.BODIES_SUFFIX in n} and len(named) >= 2


def test_claims_from_stdin_are_amended_like_a_file(tmp_path, real_ncci_db):
    """Claims read from stdin (read once) give the rows of the same claims read from a file, the
    edits across claims and the amendment of the claims they edit included."""
    import subprocess
    import sys

    records = [orjson.dumps(b) for b in split_pair()]
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"\n".join(records) + b"\n")
    rows = {}
    for name, args, stdin in (("file", [str(src)], None), ("stdin", ["-"], src.read_bytes())):
        proc = subprocess.run([sys.executable, "-m", "service.cli", "batch", *args, "--out-dir", str(tmp_path / name),
                               "--format", "ndjson", "--db", str(real_ncci_db), "--quiet"], input=stdin,
                              capture_output=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        rows[name] = sorted((r["resource_id"], r["finding"], r["across_claims"]) for r in map(
            json.loads, (tmp_path / name / "findings.ndjson").read_text().splitlines()))
    assert rows["stdin"] == rows["file"] == [("first", "ptp-bundled", True), ("second", "ptp-bundled", True)]


def test_out_dir_applies_the_mue_over_the_units_of_two_claims(tmp_path, real_ncci_db, real_reference):
    """Scenario 11's 76000 billed on two claims of one beneficiary, provider and date, each within
    the July 2024 MUE and over it together: one mue-exceeded finding across claims in the table,
    a row for each claim naming the other, counted once in the summary."""
    import datetime

    import pyarrow.parquet as pq

    from service.batch import run_dir

    limit = real_reference.mue("76000", datetime.date(2024, 8, 5), "practitioner")
    assert limit is not None and limit.mai in (2, 3)  # per date of service
    each = limit.units // 2 + 1
    bundle = scenario(11).context["claim"]
    records = []
    for cid in ("a", "b"):
        b = copy.deepcopy(bundle)
        claim = b["entry"][0]["resource"]
        claim["id"] = cid
        claim["item"] = [dict(i, quantity={"value": each}) for i in claim["item"]
                         if i["productOrService"]["coding"][0]["code"] == "76000"]
        records.append(orjson.dumps(b) + b"\n")
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(records))
    out = tmp_path / "out"
    summary = run_dir([str(src)], str(out), db_path=str(real_ncci_db), config=resolve(None))
    rows = pq.read_table(out / "findings.parquet").to_pylist()
    mue = [r for r in rows if r["finding"] == "mue-exceeded"]
    assert sorted((r["resource_id"], r["across_claims"], r["other_claims"]) for r in mue) == [
        ("a", True, ["Claim/b"]), ("b", True, ["Claim/a"])]
    assert {r["units"] for r in mue} == {each}
    assert summary["findings"]["mue-exceeded"] == 1
    assert summary["claims_with_findings"] == 2 and summary["reviewed"] == 2


def test_a_finding_over_many_claims_lists_20_others_and_counts_all(tmp_path, real_ncci_db, real_reference):
    """One beneficiary's 30 same-day 76000 claims of one provider, each within the MUE and over it
    together: one mue-exceeded finding across all 30, a row on each claim; each row lists the first
    20 other claims (OTHER_CLAIMS_LISTED: not n x n names) and counts all 29."""
    import datetime

    import pyarrow.parquet as pq

    from service.batch import run_dir
    from service.findings_table import OTHER_CLAIMS_LISTED

    limit = real_reference.mue("76000", datetime.date(2024, 8, 5), "practitioner")
    assert limit is not None and limit.mai in (2, 3) and limit.units < 30
    bundle = scenario(11).context["claim"]
    records, names = [], [f"c{n:02d}" for n in range(30)]
    for cid in names:
        b = copy.deepcopy(bundle)
        claim = b["entry"][0]["resource"]
        claim["id"] = cid
        claim["item"] = [dict(i, quantity={"value": 1}) for i in claim["item"]
                         if i["productOrService"]["coding"][0]["code"] == "76000"]
        records.append(orjson.dumps(b) + b"\n")
    src = tmp_path / "claims.ndjson"
    src.write_bytes(b"".join(records))
    out = tmp_path / "out"
    summary = run_dir([str(src)], str(out), db_path=str(real_ncci_db), config=resolve(None), workers=2)
    mue = [r for r in pq.read_table(out / "findings.parquet").to_pylist() if r["finding"] == "mue-exceeded"]
    assert sorted(r["resource_id"] for r in mue) == names and summary["findings"]["mue-exceeded"] == 1
    assert OTHER_CLAIMS_LISTED == 20
    for r in mue:
        others = [f"Claim/{c}" for c in names if c != r["resource_id"]]
        assert r["across_claims"] and r["other_claims_count"] == 29
        assert r["other_claims"] == others[:20]
    # a claim's own finding: no other claims
    assert all(r["other_claims_count"] == 0 and r["other_claims"] == []
               for r in pq.read_table(out / "findings.parquet").to_pylist() if not r["across_claims"])


def _join_export(root) -> None:
    """A small export whose joins exercise the rules the index's shortcuts must keep: reading order
    (file, then line; not ids: o9 before o1, p1 before p0) across two Procedure files, a urn:uuid link
    (`Procedure.encounter` urn:uuid:e1), a type mismatch (`encounter` naming Patient/e1: not linked
    to Encounter/e1), repeated companions (p1 twice, identical: joined once, at its first place; o2
    twice, conflicting: the first kept, the repeat's link to e1 left out), a resource reached twice
    (r1: linked to e2 and named by p1.report), basedOn the order of a 76000 Procedure, second hops,
    and resources the index stores in the row of an encounter the claim does not name (c6)."""
    def ref(r):
        return {"reference": r}

    def proc(pid, enc, code="20610", **more):
        return {"resourceType": "Procedure", "id": pid, "status": "completed", "encounter": ref(enc),
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]}, **more}

    files = {
        "Coverage.ndjson": [{"resourceType": "Coverage", "id": "cov1", "payor": [ref("Organization/org1")]}],
        "DiagnosticReport.ndjson": [
            {"resourceType": "DiagnosticReport", "id": "r1", "encounter": ref("Encounter/e2"),
             "imagingStudy": [ref("ImagingStudy/i1")]},
            {"resourceType": "DiagnosticReport", "id": "r2", "basedOn": [ref("ServiceRequest/sr1")]}],
        "Encounter.ndjson": [
            {"resourceType": "Encounter", "id": "e1", "location": [{"location": ref("Location/l1")}]},
            {"resourceType": "Encounter", "id": "e2"},
            {"resourceType": "Encounter", "id": "e3", "location": [{"location": ref("Location/missing")}]}],
        "ImagingStudy.ndjson": [{"resourceType": "ImagingStudy", "id": "i1", "encounter": ref("Encounter/e1")}],
        "Location.ndjson": [{"resourceType": "Location", "id": "l1"}],
        "Observation.ndjson": [
            {"resourceType": "Observation", "id": "o9", "encounter": ref("Encounter/e1")},
            {"resourceType": "Observation", "id": "o2", "encounter": ref("https://x.example/fhir/Encounter/e2")},
            {"resourceType": "Observation", "id": "o1", "encounter": ref("Encounter/e1")},
            # o2 again with other content, linked to e1: an error, the first kept (and its links only)
            {"resourceType": "Observation", "id": "o2", "status": "final", "encounter": ref("Encounter/e1")}],
        "Organization.ndjson": [{"resourceType": "Organization", "id": "org1"}],
        "Procedure.000.ndjson": [
            proc("p1", "Encounter/e1", "76000", report=[ref("DiagnosticReport/r1")], basedOn=[ref("ServiceRequest/sr1")]),
            proc("p3", "Patient/e1"), proc("p4", "Encounter/e2")],
        "Procedure.001.ndjson": [proc("p0", "urn:uuid:e1")],
    }
    files["Procedure.001.ndjson"].append(files["Procedure.000.ndjson"][0])  # p1 again, identical

    def claim(cid, items, **more):
        return {"resourceType": "Claim", "id": cid, "item": [
            {"sequence": i + 1, "encounter": [ref(e)]} for i, e in enumerate(items)], **more}

    files["Claim.ndjson"] = [
        claim("c1", ["Encounter/e1", "urn:uuid:e2"], procedure=[{"sequence": 1, "procedureReference": ref("Procedure/p4")}],
              insurance=[{"sequence": 1, "focal": True, "coverage": ref("Coverage/cov1")}]),
        claim("c2", ["Encounter/e3"]),
        claim("c3", ["Encounter/nowhere"]),
        claim("c4", ["Encounter/e2"], supportingInfo=[{"sequence": 1, "valueReference": ref("Device/d1")}]),
        {"resourceType": "Bundle", "type": "collection", "entry": [
            {"resource": claim("c5", ["Encounter/e1"])}, {"resource": {"resourceType": "Encounter", "id": "e1"}}]},
        # resources stored in the row of an encounter the claim does not name: by "Type/id", by urn:uuid
        claim("c6", [], procedure=[{"sequence": 1, "procedureReference": ref("Procedure/p4")}],
              supportingInfo=[{"sequence": 1, "valueReference": ref("urn:uuid:o2")}]),
    ]
    for name, records in files.items():
        (root / name).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))


def test_the_join_keeps_its_companions_order_aliases_and_dangling_errors(tmp_path):
    """The join's answer, companion by companion (what the index must give however it stores the
    links): the claim's references in their order, then each encounter's linked resources in reading
    order, then those basedOn a 76000's order, then the second hops; each resource once."""
    _join_export(tmp_path)
    with BatchInput([str(tmp_path)]) as source:
        got = {}
        for item in source.records():
            if isinstance(item, InputError):
                got[item.resource_id] = (item.path, "dangling" in item.reason)
            else:
                got[item.resource["id"]] = ([fr_key(r) for r in item.companions],
                                            {k: fr_key(v) for k, v in item.aliases.items()})
                assert all("status" not in r for r in item.companions if r["id"] == "o2")  # the first o2
        assert dict(source.duplicates) == {"companions_identical": 1, "companions_conflicting": 1}
    assert got == {
        "c1": (["Encounter/e1", "Encounter/e2", "Procedure/p4", "Coverage/cov1",
                "ImagingStudy/i1", "Observation/o9", "Observation/o1", "Procedure/p1", "Procedure/p0",  # e1's
                "DiagnosticReport/r1", "Observation/o2",  # e2's (p4 already joined)
                "DiagnosticReport/r2",  # basedOn the 76000's order
                "Location/l1", "Organization/org1"],  # second hops
               {"urn:uuid:e2": "Encounter/e2"}),
        "c2": ("Encounter/e3.location[0].location", True),
        "c3": ("Claim.item[0].encounter[0]", True),
        "c4": (["Encounter/e2", "DiagnosticReport/r1", "Observation/o2", "Procedure/p4", "ImagingStudy/i1"], {}),
        "o2": ("Observation.id", False),
        "c5": (["Encounter/e1", "ImagingStudy/i1", "Observation/o9", "Observation/o1", "Procedure/p1", "Procedure/p0",
                "DiagnosticReport/r2", "DiagnosticReport/r1"], {}),
        "c6": (["Procedure/p4", "Observation/o2"], {"urn:uuid:o2": "Observation/o2"}),  # from e2's row
    }


def fr_key(resource: dict) -> str:
    return f"{resource['resourceType']}/{resource['id']}"


def test_the_joins_fast_reference_reading_gives_the_checked_ones():
    """The join reads references without formatting paths when all are valid or absent
    (_claim_refs_fast, _hop_refs_fast): the same references, in the same order and with the same
    paths, as the checked reading (_claim_refs, _hop_refs); any other shape takes the checked one
    (None), which raises where it raises."""
    from hooks.context import InvalidResource
    from service.bulk_input import _claim_refs, _claim_refs_fast, _hop_refs, _hop_refs_fast, _path

    def ref(r):
        return {"reference": r}

    refs = [ref("Encounter/e1"), ref("https://x.example/fhir/Encounter/e2/_history/3"), ref("urn:uuid:e3"),
            {"identifier": {"value": "x"}}, None, ref(""), ref("  "), ref(7), "Encounter/e1", [ref("Encounter/e1")]]
    claims = [{"resourceType": "Claim", "id": "c"}]
    for r in refs:
        claims += [
            {"resourceType": "Claim", "id": "c", "facility": r},
            {"resourceType": "ExplanationOfBenefit", "id": "c", "item": [
                {"sequence": 1, "encounter": [ref("Encounter/e0"), r], "locationReference": r}, {"sequence": 2}]},
            {"resourceType": "Claim", "id": "c", "item": [{"encounter": r}]},
            {"resourceType": "Claim", "id": "c", "procedure": [{"procedureReference": r}],
             "supportingInfo": [{"sequence": 1}, {"valueReference": r}], "insurance": [{"coverage": r}]},
        ]
    claims += [{"resourceType": "Claim", "id": "c", "item": {"sequence": 1}},
               {"resourceType": "Claim", "id": "c", "item": [None]},
               {"resourceType": "Claim", "id": "c", "insurance": [7]}]
    companions = [{"resourceType": "Encounter", "id": "e", "location": [{"location": r}, {"location": ref("Location/l")}]}
                  for r in refs]
    companions += [{"resourceType": "Procedure", "id": "p", "location": r, "report": [r, ref("DiagnosticReport/d")]}
                   for r in refs]
    companions += [{"resourceType": t, "id": "x", key: [ref("Organization/o"), r]} for r in refs
                   for t, key in (("DiagnosticReport", "imagingStudy"), ("Coverage", "payor"))]
    companions += [{"resourceType": "Encounter", "location": ref("Location/l")}, {"resourceType": "Encounter", "location": [7]},
                   {"resourceType": "Procedure", "report": ref("DiagnosticReport/d")}, {"resourceType": "Location", "id": "l"}]
    fast_ones = 0
    for value, fast, slow in [(c, _claim_refs_fast, _claim_refs) for c in claims] + [
            (r, _hop_refs_fast, lambda r: _hop_refs(r, f"{r['resourceType']}/{r['id']}" if "id" in r else r["resourceType"]))
            for r in companions]:
        got = fast(value)
        try:
            want = slow(value)
        except InvalidResource:
            assert got is None, value
            continue
        if got is not None:
            fast_ones += 1
            assert [(_path(w), r) for w, r in got] == want, value
    # the valid and absent references (the first five) take the fast way where they are valid
    # (`item.encounter` must be an array)
    assert all(_claim_refs_fast(c) is not None for n, c in enumerate(claims[1:1 + 4 * 5]) if n % 4 != 2)
    assert all(_hop_refs_fast(r) is not None for r in companions[:5] + companions[10:15])
    assert fast_ones >= 3 * 5 + 2 * 5


def test_a_claim_whose_companions_exceed_the_record_limit_is_an_error_record(tmp_path, monkeypatch):
    """Memory stays bounded whatever the export: the join reads at most MAX_JOINED_BYTES of a
    claim's companions (what a Bundle line may hold, 64 MiB), and a claim whose
    encounter links more is an error record, checked before the bodies are read; the other
    claims are joined as before."""
    from service import bulk_input
    from service.batch import run_dir

    root = tmp_path / "export"
    write_export(str(root), claims=30, seed=4)
    claims = _lines(root / "Claim.ndjson")
    target = next(c for c in claims if c["item"][0].get("encounter"))
    encounter = target["item"][0]["encounter"][0]["reference"].rsplit("/", 1)[-1]
    pad = "x" * 1000
    _append(root / "Observation.ndjson", *[
        {"resourceType": "Observation", "id": f"bulk{i}", "status": "final", "code": {"text": pad},
         "encounter": {"reference": f"Encounter/{encounter}"}} for i in range(60)])
    (root / "manifest.json").unlink()  # the directory's files (the manifest's counts no longer hold)
    db = str(tmp_path / "absent.sqlite")
    whole = run_dir([str(root)], str(tmp_path / "whole"), db_path=db, config=resolve(None))
    assert whole["errors"] == 0
    monkeypatch.setattr(bulk_input, "MAX_JOINED_BYTES", 40_000)  # 60 KB linked to that encounter
    bounded = run_dir([str(root)], str(tmp_path / "bounded"), db_path=db, config=resolve(None))
    errors = _lines(tmp_path / "bounded" / "errors.ndjson")
    assert errors and all(e["path"] in ("Claim", "ExplanationOfBenefit") for e in errors)
    assert all("companions in the export" in e["reason"] and "not joined" in e["reason"] for e in errors)
    assert target["id"] in {e["resource"].split("/", 1)[1] for e in errors}
    assert bounded["claims_in"] == whole["claims_in"] == bounded["reviewed"] + bounded["errors"]
    assert bounded["reviewed"] >= whole["reviewed"] - 3  # only the claims of that encounter


def test_the_index_keeps_only_small_resources_for_the_next_claims(tmp_path):
    """ExportIndex.get keeps what it reads for the next claims (shared Locations, Coverages) only
    up to CACHED_BYTES each and CACHED in all, so that the cache's memory is bounded whatever the
    export holds; a big resource is read again each time (its bytes count again)."""
    from service.bulk_input import ExportIndex, InputFile

    path = tmp_path / "Location.ndjson"
    small = {"resourceType": "Location", "id": "small", "name": "Suite 1"}
    big = {"resourceType": "Location", "id": "big", "name": "x" * (ExportIndex.CACHED_BYTES + 1)}
    path.write_bytes(orjson.dumps(small) + b"\n" + orjson.dumps(big) + b"\n")
    loading = ExportIndex(str(tmp_path / "index.sqlite"), create=True)
    assert not list(loading.load([InputFile(str(path), "Location", False)]))
    loading.close()
    index = ExportIndex(str(tmp_path / "index.sqlite"))
    reads = []
    for key in ("Location/small", "Location/big", "Location/small", "Location/big", "Location/none", "Location/none"):
        before = index.read_bytes
        assert (index.get(key) or {}).get("id") == (key.split("/")[1] if key != "Location/none" else None)
        reads.append(index.read_bytes > before)
    assert reads == [True, True, False, True, False, False]  # small and absent kept, big read again
    for i in range(ExportIndex.CACHED + 5):
        index.get(f"Location/absent-{i}")
    assert len(index._cache) == ExportIndex.CACHED

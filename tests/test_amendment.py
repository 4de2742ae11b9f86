"""service/amendment.py: the amended outputs of the edits across claims staged on disk as the
workers' parts come back (the main process holds none of them), and the findings table written
from its staged copy without the first review of the amended claims, counted as it streams."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from service.amendment import Amended, AmendedPart, StagedTable, retraction, source_key, write_table
from service.batch_report import Tally
from service.findings_table import ndjson_rows, record_batch, NAMES


def _row(file: str, line: int, finding: str, index: int = 0, across: bool = False, effect: float | None = None):
    values = dict.fromkeys(NAMES)
    values.update(source_file=file, source_line=line, finding=finding, line_index=index, across_claims=across,
                  payment_effect=effect, resource_id=f"c{line}")
    return tuple(values[n] for n in NAMES)


def _part(fmt: str, where: tuple[str, int], rows: list[tuple], fixed: dict | None) -> AmendedPart:
    part = AmendedPart()
    change = Tally()
    change.add_claim(rows, fixed is not None)
    part.add(where, f"Claim/c{where[1]}", (rows, fixed, change))
    return part.packed(fmt)


# staged table: claim 2's rows straddle the two chunks; claim 3 has a row across claims, which stays
FIRST = [_row("a", 1, "x", effect=-1.5), _row("a", 2, "x", effect=-2.0), _row("a", 2, "x", 1)]
SECOND = [_row("a", 2, "y", effect=-0.25), _row("a", 3, "z"), _row("a", 3, "w", across=True), _row("a", 4, "x")]
AMENDED = {("a", 2): [_row("a", 2, "y", effect=-0.25)], ("a", 3): []}  # claim 3: nothing of its own left


@pytest.mark.parametrize("fmt", ["parquet", "ndjson"])
def test_the_table_is_written_without_the_first_review_of_the_amended_claims(tmp_path, fmt):
    out = tmp_path / f"findings.{fmt}"
    table = StagedTable(str(out), fmt, str(tmp_path))
    encode = record_batch if fmt == "parquet" else ndjson_rows
    for chunk in (FIRST, SECOND):
        table.write(encode(chunk))
    table.close()
    if fmt == "parquet":  # staged as an Arrow stream in the work directory; the output written at the end
        assert table.staged.endswith(".arrows") and not out.exists()
    with Amended(str(tmp_path), fmt) as amended:
        for where, rows in AMENDED.items():
            amended.add(_part(fmt, where, rows, {"resourceType": "Claim", "id": f"c{where[1]}"}))
        amended.name([(("a", 2), True), (("a", 3), True), (("a", 5), False)])
        amended.finished()
        taken_back = Tally()
        with_rows = write_table(table, amended, taken_back)
        assert amended.named_without_own() == 2  # claim 3 (amended: none of its own left) and claim 5
    if fmt == "parquet":
        got = [tuple(r.values()) for r in pq.read_table(out).to_pylist()]
        assert pq.ParquetFile(out).metadata.num_row_groups == 1  # the staged chunks as one row group
    else:
        got = [tuple(json.loads(line).values()) for line in out.read_bytes().splitlines()]
    dropped = [r for r in FIRST + SECOND if r[NAMES.index("source_line")] in (2, 3)
               and not r[NAMES.index("across_claims")]]
    kept = [r for r in FIRST + SECOND if r not in dropped]
    assert got == kept + AMENDED[("a", 2)]
    assert with_rows == 2  # claims 2 and 3 had rows taken out (claim 2's in both chunks, counted once)
    # what the stream counted is what the Spark job's retraction of the same rows gives
    expected = retraction(dropped, 2, 0)
    taken_back.reviewed, taken_back.with_findings = -2, taken_back.with_findings - with_rows
    assert [getattr(taken_back, n) for n in Tally.__slots__] == [getattr(expected, n) for n in Tally.__slots__]


def test_amended_outputs_are_not_held_in_memory(tmp_path):
    """Each part goes to disk as it is added: the store keeps no list of rows, Claims or claims,
    and its SQLite page cache is bounded."""
    with Amended(str(tmp_path), "parquet") as amended:
        for n in range(1, 40):
            amended.add(_part("parquet", ("a", n), [_row("a", n, "x")], {"resourceType": "Claim", "id": f"c{n}"}))
        amended.name([(("a", n), False) for n in range(1, 40)])
        held = {k: v for k, v in vars(amended).items() if isinstance(v, (list, dict, set, bytes, tuple)) and v}
        assert held == {}
        assert amended.db.execute("PRAGMA cache_size").fetchone()[0] == -Amended.CACHE_KIB
        amended.finished()
        assert amended.count == 39
        assert sorted(amended.amended_of([source_key("a", 2), source_key("a", 99), source_key("b", 2)])) == \
            [source_key("a", 2)]
        assert amended.claims_of(["Claim/c5", "Claim/c50"]) == {"Claim/c5"}
        assert sum(p.num_rows for p in amended.row_parts()) == 39
        assert len((tmp_path / "amended-fixed.ndjson").read_bytes().splitlines()) == 39


def test_an_out_dir_run_takes_arrow_memory_from_the_system_allocator_then_restores_the_pool(tmp_path, monkeypatch):
    """The main process of an --out-dir run writes the table with Arrow's system pool (mimalloc held
    ~40 MB more of the final write's churn), and gives the previous default pool back after it."""
    import pyarrow as pa

    import service.batch as batch
    from hooks.config import resolve
    from service.sample_data import write_export

    pools = []
    finish = batch.finish_outputs

    def noted(*args, **kwargs):
        pools.append(pa.default_memory_pool().backend_name)
        return finish(*args, **kwargs)

    monkeypatch.setattr(batch, "finish_outputs", noted)
    before = pa.default_memory_pool().backend_name
    write_export(str(tmp_path / "export"), claims=40, seed=3)
    batch.run_dir([str(tmp_path / "export")], str(tmp_path / "out"), db_path=str(tmp_path / "absent.sqlite"),
                  config=resolve(None))
    assert pools == ["system"]
    assert pa.default_memory_pool().backend_name == before
    assert (tmp_path / "out" / "findings.parquet").exists()

"""What changed between two releases of the same table (``fluoro-cds ncci diff``).

PTP: rows are compared as (column 1, column 2, effective, deletion, modifier indicator,
rationale). Per pair of codes:
- ``added``: the pair has no row in release A and has rows in B;
- ``deleted``: the pair has rows in A and none in B, or had an edit in force in A (no deletion
  date) and has none without deletion date in B (CMS deletes edits by setting the date);
- ``changed``: any other difference (modifier indicator, rationale, dates), with both sides.
MUE: per code, added / deleted / changed units, MAI or rationale.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from .store import ReleaseInfo, int_date, read_catalog, releases_dir


class DiffError(ValueError):
    pass


def _find(infos: list[ReleaseInfo], label: str, kind: str, setting: str | None) -> ReleaseInfo | None:
    match = [i for i in infos if i.kind == kind and i.setting == setting and i.label.lower() == label.lower()]
    return match[-1] if match else None


def _attach(conn: sqlite3.Connection, db_path: Path, info: ReleaseInfo, alias: str) -> None:
    path = releases_dir(db_path) / info.file
    conn.execute(f"ATTACH DATABASE ? AS {alias}", (f"file:{quote(str(path))}?mode=ro&immutable=1",))


def _ptp_row(r) -> dict:
    return {"column_1": r[0], "column_2": r[1],
            "effective": int_date(r[2]).isoformat() if r[2] else None,
            "deletion": int_date(r[3]).isoformat() if r[3] else None,
            "modifier_indicator": r[4], "rationale": r[5]}


def diff_ptp(conn: sqlite3.Connection, code: str | None, limit: int) -> dict:
    where = " WHERE column_1 = :code OR column_2 = :code" if code else ""
    select = ("SELECT column_1, column_2, effective, deletion, modifier, r.text FROM {a}.ptp"
              " JOIN {a}.rationale r ON r.id = rationale_id" + where)
    sql = (f"SELECT 'a', * FROM ({select.format(a='a')} EXCEPT {select.format(a='b')})"
           f" UNION ALL SELECT 'b', * FROM ({select.format(a='b')} EXCEPT {select.format(a='a')})"
           " ORDER BY 2, 3")
    pairs: dict[tuple[str, str], dict[str, list]] = {}
    for side, *row in conn.execute(sql, {"code": code.upper() if code else None}):
        pairs.setdefault((row[0], row[1]), {"a": [], "b": []})[side].append(row)
    added, deleted, changed = [], [], []

    def rows_of(alias: str, c1: str, c2: str) -> list:
        return conn.execute(f"SELECT column_1, column_2, effective, deletion, modifier, r.text FROM {alias}.ptp"
                            f" JOIN {alias}.rationale r ON r.id = rationale_id"
                            " WHERE column_1 = ? AND column_2 = ?", (c1, c2)).fetchall()

    for c1, c2 in pairs:
        in_a, in_b = rows_of("a", c1, c2), rows_of("b", c1, c2)
        entry = {"column_1": c1, "column_2": c2, "before": [_ptp_row(r) for r in in_a],
                 "after": [_ptp_row(r) for r in in_b]}
        active_a = any(r[3] is None for r in in_a)
        active_b = any(r[3] is None for r in in_b)
        if not in_a:
            added.append(entry)
        elif not in_b or (active_a and not active_b):
            deleted.append(entry)
        else:
            changed.append(entry)
    return {"counts": {"added": len(added), "deleted": len(deleted), "changed": len(changed)},
            "added": added[:limit], "deleted": deleted[:limit], "changed": changed[:limit],
            "truncated": max(len(added), len(deleted), len(changed)) > limit}


def diff_mue(conn: sqlite3.Connection, code: str | None, limit: int) -> dict:
    where = " WHERE code = ?" if code else ""
    args = (code.upper(),) if code else ()
    a = {r[0]: r[1:] for r in conn.execute(f"SELECT code, units, mai, rationale FROM a.mue{where}", args)}
    b = {r[0]: r[1:] for r in conn.execute(f"SELECT code, units, mai, rationale FROM b.mue{where}", args)}

    def d(c, v):
        return {"code": c, "units": v[0], "mai": v[1], "rationale": v[2]}

    added = [d(c, b[c]) for c in sorted(set(b) - set(a))]
    deleted = [d(c, a[c]) for c in sorted(set(a) - set(b))]
    changed = [{"code": c, "before": d(c, a[c]), "after": d(c, b[c])}
               for c in sorted(set(a) & set(b)) if a[c] != b[c]]
    return {"counts": {"added": len(added), "deleted": len(deleted), "changed": len(changed)},
            "added": added[:limit], "deleted": deleted[:limit], "changed": changed[:limit],
            "truncated": max(len(added), len(deleted), len(changed)) > limit}


def diff_releases(db_path: str | Path, label_a: str, label_b: str, *, kind: str = "ptp",
                  code: str | None = None, setting: str | None = None, limit: int = 1000,
                  program: str = "medicare") -> dict:
    """Differences from release `label_a` to `label_b` of one NCCI `program`, per setting present in both."""
    if kind not in ("ptp", "mue"):
        raise DiffError("diff compares ptp or mue releases")
    db_path = Path(db_path)
    infos = [i for i in read_catalog(db_path) if i.program == program]
    settings = [setting] if setting else sorted({i.setting for i in infos if i.kind == kind and i.setting})
    out: dict = {"kind": kind, "a": label_a, "b": label_b, "code": code, "settings": {}}
    for st in settings:
        ra, rb = _find(infos, label_a, kind, st), _find(infos, label_b, kind, st)
        if ra is None or rb is None:
            continue
        conn = sqlite3.connect(":memory:", uri=True)
        try:
            _attach(conn, db_path, ra, "a")
            _attach(conn, db_path, rb, "b")
            result = (diff_ptp if kind == "ptp" else diff_mue)(conn, code, limit)
        finally:
            conn.close()
        result["release_a"] = ra.as_dict()
        result["release_b"] = rb.as_dict()
        out["settings"][st] = result
    if not out["settings"]:
        have = sorted({f"{i.label} ({i.setting})" for i in infos if i.kind == kind})
        raise DiffError(f"no {kind} releases labelled {label_a!r} and {label_b!r} in the same setting; "
                        f"the store holds: {', '.join(have) or 'none'}")
    return out

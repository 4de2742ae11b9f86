"""``fluoro-cds ncci ...``: import CMS files, list releases, look up a pair, diff two quarters.

Every command prints JSON on stdout. Bad input or usage prints ``error: <file>:<line>: <problem>``
on stderr and exits with code 2; the releases in service are left untouched. A progress bar
(tqdm) is shown on stderr during imports, only when stderr is a terminal.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from .api import SETTINGS, PtpEdit
from .layouts import KINDS

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """A user error: message on stderr, exit code 2."""


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _db(args) -> str:
    from .store import default_db_path

    return args.db or default_db_path()


def _emit(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _release_dict(rel) -> dict:
    return {"label": rel.label, "kind": rel.kind, "setting": rel.setting, "starter": rel.starter,
            "source": rel.source, "citation": rel.citation()}


def edit_dict(edit: PtpEdit, on: date | None = None) -> dict:
    out = {"column_1": edit.column1, "column_2": edit.column2,
           "effective": edit.effective.isoformat() if edit.effective else None,
           "deletion": edit.deletion.isoformat() if edit.deletion else None,
           "modifier_indicator": edit.modifier_indicator, "rationale": edit.rationale,
           "row": edit.row, "source_file": edit.source_file, "release": _release_dict(edit.release)}
    if on is not None:
        out["in_force"] = edit.in_force(on)
    return out


def _import(args) -> int:
    from .importer import import_paths

    bar = None
    progress = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(unit=" rows", unit_scale=True, file=sys.stderr, desc="importing")
        progress = bar.update
    try:
        infos = import_paths(_db(args), args.paths, setting=args.setting, label=args.release,
                             kind=args.kind, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    _emit({"db": _db(args), "imported": [i.as_dict() for i in infos]})
    return 0


def _releases(args) -> int:
    from . import open_reference
    from .store import read_catalog

    db = _db(args)
    ref = open_reference(db)
    _emit({"db": db, "releases": [i.as_dict() for i in read_catalog(db)],
           "in_service": ref.describe()})
    return 0


def _pair(args) -> int:
    from . import open_reference
    from .store import SqliteStore

    ref = open_reference(_db(args))
    on = args.date or date.today()
    c1, c2 = args.column_1.strip().upper(), args.column_2.strip().upper()
    results = []
    for setting in ([args.setting] if args.setting else SETTINGS):
        in_force = ref.ptp_edits([c1, c2], on, setting)
        if isinstance(ref, SqliteStore) and ref.pick("ptp", setting, on) is not None:
            rows = ref.ptp_rows(c1, c2, setting, on) + ref.ptp_rows(c2, c1, setting, on)
            info = ref.pick("ptp", setting, on)
            release = _release_dict(info.release)
        else:
            rows = list(in_force)
            release = None
        if release is None and in_force:
            release = _release_dict(in_force[0].release)
        results.append({"setting": setting, "release": release,
                        "in_force": [edit_dict(e, on) for e in in_force],
                        "rows": [edit_dict(e, on) for e in rows]})
    _emit({"column_1": c1, "column_2": c2, "date": on.isoformat(), "results": results})
    return 0


def _diff(args) -> int:
    from .diff import DiffError, diff_releases

    try:
        result = diff_releases(_db(args), args.release_a, args.release_b, kind=args.kind,
                               code=args.code, setting=args.setting, limit=args.limit)
    except DiffError as exc:
        raise CliError(str(exc)) from exc
    _emit(result)
    return 0


def _run(func):
    def wrapper(args) -> int:
        from .readers import BadInput

        try:
            return func(args)
        except (BadInput, CliError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("error: interrupted; nothing was imported", file=sys.stderr)
            return EXIT_BAD_INPUT

    return wrapper


def add_commands(subparsers) -> argparse.ArgumentParser:
    """Add the ``ncci`` command group to a parent parser's subparsers."""
    from .importer import SETTING_CHOICES

    ncci = subparsers.add_parser("ncci", help="CMS NCCI / MUE / add-on / MPFS reference data",
                                 description="Import CMS reference files and query the store.")
    sub = ncci.add_subparsers(dest="ncci_command", required=True)

    def db_arg(p):
        p.add_argument("--db", help="store path (default: $FLUORO_CDS_DB or the user data dir)")

    imp = sub.add_parser("import", help="import CMS files as new releases (all or nothing)")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="zip, txt, csv, tsv(.gz) or xlsx files")
    imp.add_argument("--setting", choices=SETTING_CHOICES,
                     help="setting of PTP/MUE tables (default: from the file name)")
    imp.add_argument("--release", metavar="LABEL", help="release label, e.g. 2024Q3 (default: from the file name)")
    imp.add_argument("--kind", choices=KINDS, help="table kind (default: detected from the header)")
    db_arg(imp)
    imp.set_defaults(func=_run(_import))

    rel = sub.add_parser("releases", help="list the releases in the store and those in service")
    db_arg(rel)
    rel.set_defaults(func=_run(_releases))

    pair = sub.add_parser("pair", help="PTP edits between two codes on a date of service")
    pair.add_argument("column_1", metavar="COL1")
    pair.add_argument("column_2", metavar="COL2")
    pair.add_argument("--date", type=_date, help="date of service YYYY-MM-DD (default: today)")
    pair.add_argument("--setting", choices=SETTINGS, help="default: both settings")
    db_arg(pair)
    pair.set_defaults(func=_run(_pair))

    diff = sub.add_parser("diff", help="added, deleted and changed edits between two releases")
    diff.add_argument("release_a", metavar="RELEASE_A")
    diff.add_argument("release_b", metavar="RELEASE_B")
    diff.add_argument("--code", help="only rows where this code is column 1 or column 2")
    diff.add_argument("--setting", choices=SETTING_CHOICES)
    diff.add_argument("--kind", choices=("ptp", "mue"), default="ptp")
    diff.add_argument("--limit", type=int, default=1000, help="max rows listed per category (counts are full)")
    db_arg(diff)
    diff.set_defaults(func=_run(_diff))
    return ncci


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m nccidata.cli``): the same commands without ``ncci``."""
    parser = argparse.ArgumentParser(prog="fluoro-cds")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

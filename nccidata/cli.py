"""``fluoro-cds ncci ...``: import CMS files, list releases, look up a pair, diff two quarters,
retire a release.

``releases`` and ``pair`` print a compact table (``--json``: JSON, each row once); ``import``,
``diff`` and ``retire`` print JSON. Bad input or usage prints ``error: <file>:<line>: <problem>``
(or ``error: <problem>``) on stderr and exits with code 2; the releases in service are left
untouched. A progress bar (tqdm) is shown on stderr during imports, only when stderr is a terminal.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import date

from .api import MEDICARE, PROGRAMS, SETTINGS, PtpEdit
from .layouts import KINDS

EXIT_BAD_INPUT = 2


# CPT and HCPCS codes as the CMS tables key them: five characters of [0-9A-Z].
_HCPCS_CODE = re.compile(r"[0-9A-Z]{5}")


class CliError(Exception):
    """A user error: message on stderr, exit code 2."""


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.default in (None, False, argparse.SUPPRESS) or "default" in text
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """The ``fluoro-cds`` parsers: defaults shown in every --help (subcommands inherit the class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("not a date (expected YYYY-MM-DD)") from None


def _code(text: str) -> str:
    """A CPT / HCPCS code argument, upper-cased: five letters or digits (e.g. 76000, G0260)."""
    code = text.strip().upper()
    if not _HCPCS_CODE.fullmatch(code):
        raise argparse.ArgumentTypeError(
            "not a CPT/HCPCS code (expected five letters or digits, e.g. 76000)")
    return code


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("not a positive whole number (expected 1 or more)")
    return value


def _db(args) -> str:
    from .store import default_db_path

    return args.db or default_db_path()


def _emit(value) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def table(headers: list[str], rows: list[list]) -> str:
    """A compact plain-text table: columns padded to their widest cell, two spaces apart."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells) + "\n"


def _release_dict(rel) -> dict:
    return {"label": rel.label, "kind": rel.kind, "setting": rel.setting, "program": rel.program,
            "starter": rel.starter, "source": rel.source, "citation": rel.citation()}


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
                             kind=args.kind, program=args.program, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    _emit({"db": _db(args), "imported": [i.as_dict() for i in infos]})
    return 0


def _releases(args) -> int:
    from . import open_reference
    from .store import read_catalog

    db = _db(args)
    described = open_reference(db).describe()
    serving = {r["id"] for r in described.get("in_service", [])}
    releases = [{**i.as_dict(), "in_service": i.id in serving} for i in read_catalog(db)]
    if described.get("source") == "starter":
        fallback = [{"kind": "every kind", "setting": None,
                     "answered_by": "fluoro-cds starter data set (not a CMS release)"}]
    else:
        fallback = described.get("fallback", [])
    if args.json:
        _emit({"db": db, "date": date.today().isoformat(), "releases": releases,
               "fallback": fallback})
        return 0
    out = [f"store: {db}\n"]
    if releases:
        out.append(table(
            ["id", "label", "kind", "setting", "program", "period", "rows", "files", "imported", "in service"],
            [[r["id"], r["label"], r["kind"], r["setting"] or "-", r["program"] if r["kind"] in ("ptp", "mue") else "-",
              "..".join(r["period"]) if r["period"] else "-", f"{r['rows']:,}", len(r["sources"]),
              r["imported_at"], "yes" if r["in_service"] else ""] for r in releases]))
    else:
        out.append("no release imported (fluoro-cds ncci import FILE...)\n")
    for f in fallback:
        what = f["kind"] + (f" {f['setting']}" if f.get("setting") else "")
        out.append(f"{what}: answered by the {f['answered_by'].removeprefix('fluoro-cds ')}\n")
    sys.stdout.write("".join(out))
    return 0


def _pair(args) -> int:
    from . import open_reference
    from .store import SqliteStore

    ref = open_reference(_db(args))
    on = args.date or date.today()
    c1, c2 = args.column_1, args.column_2
    program = args.program
    if program != MEDICARE:
        if not isinstance(ref, SqliteStore) or program not in ref.programs():
            raise CliError(f"no {program} NCCI release is imported in {_db(args)} "
                           f"(fluoro-cds ncci import FILE... --program {program})")
    results = []
    for setting in ([args.setting] if args.setting else SETTINGS):
        info = ref.pick_program(program, "ptp", setting, on) if isinstance(ref, SqliteStore) else None
        view = ref.for_program(program) if isinstance(ref, SqliteStore) else ref
        if info is not None:  # every row of the pair, in force or not
            rows = view.ptp_rows(c1, c2, setting, on)
            if c1 != c2:
                rows += view.ptp_rows(c2, c1, setting, on)
            release = _release_dict(info.release)
        else:  # the starter set holds edits in force only (Medicare); another program: none imported
            rows = view.ptp_edits([c1, c2], on, setting)
            release = _release_dict(rows[0].release) if rows else None
        results.append({"setting": setting, "program": program, "release": release,
                        "rows": [edit_dict(e, on) for e in rows]})
    if args.json:
        _emit({"column_1": c1, "column_2": c2, "date": on.isoformat(), "results": results})
        return 0
    body = []
    for res in results:
        label = res["release"]["label"] if res["release"] else "starter data set"
        if not res["rows"]:
            body.append([res["setting"], label, "", "", "", "", "", "no edit", ""])
        for r in res["rows"]:
            body.append([res["setting"], r["release"]["label"], r["column_1"], r["column_2"],
                         r["modifier_indicator"], r["effective"] or "-", r["deletion"] or "*",
                         "yes" if r["in_force"] else "no", r["rationale"]])
    sys.stdout.write(f"PTP edits between {c1} and {c2} on {on.isoformat()}\n" + table(
        ["setting", "release", "col 1", "col 2", "modifier", "effective", "deletion", "in force",
         "rationale"], body))
    return 0


def _diff(args) -> int:
    from .diff import DiffError, diff_releases

    try:
        result = diff_releases(_db(args), args.release_a, args.release_b, kind=args.kind,
                               code=args.code, setting=args.setting, limit=args.limit, program=args.program)
    except DiffError as exc:
        raise CliError(str(exc)) from exc
    _emit(result)
    return 0


def _retire(args) -> int:
    from .store import read_catalog, retire

    db = _db(args)
    gone = retire(db, args.label, kind=args.kind, setting=args.setting, program=args.program)
    if not gone:
        labels = sorted({r.label for r in read_catalog(db)})
        known = ", ".join(labels) if labels else "none"
        raise CliError(f"no release labelled {args.label!r} matches in {db} (labels: {known})")
    _emit({"db": db, "retired": [r.as_dict() for r in gone]})
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

    def json_arg(p):
        p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def program_arg(p, default, what):
        p.add_argument("--program", choices=PROGRAMS, default=default, help=what)

    imp = sub.add_parser("import", help="import CMS files as new releases (all or nothing)")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="zip, txt, csv, tsv(.gz) or xlsx files")
    imp.add_argument("--setting", choices=SETTING_CHOICES,
                     help="setting of PTP/MUE tables (default: from the file name)")
    imp.add_argument("--release", metavar="LABEL", help="release label, e.g. 2024Q3 (default: from the file name)")
    imp.add_argument("--kind", choices=KINDS, help="table kind (default: detected from the header)")
    program_arg(imp, None, "NCCI program of PTP/MUE tables (default: from the file name, "
                           "'medicaid' or MCD gives medicaid, else medicare)")
    db_arg(imp)
    imp.set_defaults(func=_run(_import))

    rel = sub.add_parser("releases", help="list the releases in the store and those in service")
    db_arg(rel)
    json_arg(rel)
    rel.set_defaults(func=_run(_releases))

    pair = sub.add_parser("pair", help="PTP edits between two codes on a date of service")
    pair.add_argument("column_1", metavar="COL1", type=_code, help="CPT/HCPCS code, e.g. 33897")
    pair.add_argument("column_2", metavar="COL2", type=_code, help="CPT/HCPCS code, e.g. 76000")
    pair.add_argument("--date", type=_date, help="date of service YYYY-MM-DD (default: today)")
    pair.add_argument("--setting", choices=SETTINGS, help="one setting (default: both settings)")
    program_arg(pair, MEDICARE, "NCCI program")
    db_arg(pair)
    json_arg(pair)
    pair.set_defaults(func=_run(_pair))

    diff = sub.add_parser("diff", help="added, deleted and changed edits between two releases")
    diff.add_argument("release_a", metavar="RELEASE_A")
    diff.add_argument("release_b", metavar="RELEASE_B")
    diff.add_argument("--code", type=_code, help="only rows where this code is column 1 or column 2")
    diff.add_argument("--setting", choices=SETTING_CHOICES,
                      help="one setting (default: every setting both releases have)")
    diff.add_argument("--kind", choices=("ptp", "mue"), default="ptp", help="table kind")
    diff.add_argument("--limit", type=_positive, default=1000,
                      help="max rows listed per category (counts are full)")
    program_arg(diff, MEDICARE, "NCCI program of both releases")
    db_arg(diff)
    diff.set_defaults(func=_run(_diff))

    ret = sub.add_parser("retire", help="remove a release from the catalog and delete its files")
    ret.add_argument("label", metavar="LABEL", help="release label, e.g. 2024Q2")
    ret.add_argument("--kind", choices=KINDS, help="only this table kind (default: every kind)")
    ret.add_argument("--setting", choices=SETTING_CHOICES,
                     help="only this setting (default: every setting)")
    program_arg(ret, None, "only this NCCI program (default: every program)")
    db_arg(ret)
    ret.set_defaults(func=_run(_retire))
    return ncci


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m nccidata.cli``): the same commands without ``ncci``."""
    parser = Parser(prog="fluoro-cds")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

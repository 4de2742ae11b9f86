"""Import CMS files into the store: detect each table, group tables into releases, build the
release files aside, then switch them in with one catalog transaction.

Grouping: tables of the same kind, setting and label form one release (the four ccipra
f1..f4 parts of a quarter are one practitioner PTP release). The setting of PTP and MUE tables
comes from ``--setting``, else the file name (ccipra / practitioner -> practitioner, ccioph /
outpatient_hospital -> outpatient-hospital, dme -> dme for MUEs), else the MUE header. The label
comes from ``--release``, else the file name (2024q3, q3-2024, NCCI version v302r0,
Eff_07-01-2024 -> 2024Q3; a bare year -> 2024); when neither gives one the import is refused.
The NCCI program of PTP and MUE tables comes from ``--program``, else the file name ("medicaid",
the Medicaid prefix MCD), else Medicare. A Medicaid MUE table without an MUE Adjudication Indicator
column gets MAI 1 (Medicaid MUEs are claim line edits: CMS "Medicaid NCCI Edit Files" page); a
Medicare one is refused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from .api import MEDICAID, MEDICARE, PROGRAMS, SETTINGS
from .layouts import (DME, KINDS, SETTING_KINDS, detect_layout, label_from_name, program_from_name,
                      setting_from_name)
from .readers import BadInput, Source, open_sources
from .store import ReleaseBuilder, ReleaseInfo, clean_interrupted_imports, register, remove_release_file

SETTING_CHOICES = SETTINGS + (DME,)


MEDICAID_MUE_MAI = 1  # Medicaid MUEs are claim line edits (CMS "Medicaid NCCI Edit Files")


def plan(paths: Iterable[str | Path], *, setting: str | None = None, label: str | None = None,
         kind: str | None = None, program: str | None = None) -> dict[tuple[str, str | None, str, str], list]:
    """(kind, setting, label, program) -> [(source, layout)] for every table in `paths`; BadInput
    when a file cannot be read, recognised, or placed."""
    if program is not None and program not in PROGRAMS:
        raise ValueError(f"unknown program {program!r}; expected one of {', '.join(PROGRAMS)}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if setting is not None and setting not in SETTING_CHOICES:
        raise ValueError(f"unknown setting {setting!r}; expected one of {', '.join(SETTING_CHOICES)}")
    groups: dict[tuple[str, str | None, str, str], list] = {}
    for path in paths:
        for source in open_sources(path):
            layout = detect_layout(source, kind)
            st = None
            prog = MEDICARE
            if layout.kind in SETTING_KINDS:
                prog = (program or program_from_name(source.member or "") or program_from_name(source.path.name)
                        or MEDICARE)
                if layout.kind == "mue" and "mai" not in layout.columns:
                    if prog != MEDICAID:
                        raise BadInput(source.name, None, "no MUE Adjudication Indicator column (a Medicare "
                                                          "MUE table has one; a Medicaid one may not: "
                                                          "--program medicaid)")
                    layout.default_mai = MEDICAID_MUE_MAI
                st = setting or setting_from_name(source.name) or layout.setting_hint
                if st is None:
                    raise BadInput(source.name, None, "cannot tell the setting from the file name; "
                                                      "pass --setting practitioner|outpatient-hospital")
                if layout.kind == "ptp" and st == DME and prog == MEDICARE:
                    raise BadInput(source.name, None, "Medicare PTP edits exist for practitioner and "
                                                      "outpatient-hospital only")
            lb = label or label_from_name(source.member or "") or label_from_name(source.path.name)
            if not lb:
                raise BadInput(source.name, None, "cannot infer the release label (e.g. 2024Q3) from "
                                                  "the file name; pass --release LABEL")
            groups.setdefault((layout.kind, st, lb, prog), []).append((source, layout))
    if not groups:
        raise ValueError("nothing to import")
    return groups


def import_paths(db_path: str | Path, paths: Iterable[str | Path], *, setting: str | None = None,
                 label: str | None = None, kind: str | None = None, program: str | None = None,
                 progress: Callable[[int], None] | None = None) -> list[ReleaseInfo]:
    """Import `paths` as new releases; all or nothing. Raises BadInput (file and line) on bad
    input, leaving the catalog and the releases in service untouched."""
    groups = plan(paths, setting=setting, label=label, kind=kind, program=program)
    clean_interrupted_imports(db_path)  # what a killed import left (kill -9 runs no cleanup)
    builders: list[ReleaseBuilder] = []
    finished: list[Path] = []
    try:
        for (k, st, lb, prog), items in groups.items():
            builder = ReleaseBuilder(db_path, k, st, lb, prog)
            builders.append(builder)
            for source, layout in items:
                builder.add(source, layout, progress)
        for b in builders:
            finished.append(b.finish())
    except BaseException:
        for b in builders:
            b.discard()
        for path in finished:
            remove_release_file(path)
        raise
    try:
        return register(db_path, builders)
    except BaseException:
        for path in finished:
            remove_release_file(path)
        raise


__all__ = ["import_paths", "plan", "SETTING_CHOICES", "BadInput", "Source"]

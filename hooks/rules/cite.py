"""Citations and payment-effect text built from the reference data rows the rules used."""
from __future__ import annotations

from functools import lru_cache

from nccidata.api import AddOnEdit, FeeSchedule, MueLimit, PtpEdit, Release

from ..findings import Citation

STARTER_NOTE = "starter set, not a CMS release"
INDICATOR_MEANING = {"0": "no modifier allowed", "1": "an NCCI-associated modifier may bypass when distinct",
                     "9": "not applicable"}
# Which NCCI PTP table a claim gets, and why (issue 10 s.8; docs/rules.md "Setting"): the practitioner
# table for professional claims (physicians, non-physician practitioners and ambulatory surgical centers),
# the hospital table for institutional outpatient claims (OPPS, applied in the Outpatient Code Editor).
# Sources: CMS "Medicare NCCI Procedure to Procedure (PTP) Edits" page (Practitioner PTP Edits, Hospital
# PTP Edits); NCCI Policy Manual for Medicare Services, Introduction.
PTP_TABLE_RULE = {
    "practitioner": "practitioner table: professional claim, ASC claims included (CMS Medicare NCCI PTP "
                    "Edits page; NCCI Policy Manual, Introduction)",
    "outpatient-hospital": "hospital table: institutional outpatient claim, OPPS / Outpatient Code Editor (CMS "
                           "Medicare NCCI PTP Edits page; NCCI Policy Manual, Introduction)",
}


def _source(release: Release) -> str:
    """The release's citation; starter rows say "starter set, not a CMS release" in so many words."""
    if release.starter:
        where = f" {release.setting}" if release.setting else ""
        return (f"fluoro-cds {STARTER_NOTE} ({release.kind.upper()} {release.label}{where}, authored from CMS "
                "Medicare NCCI facts)")
    return release.citation()


@lru_cache(maxsize=4096)
def ptp(edit: PtpEdit) -> Citation:
    meaning = INDICATOR_MEANING.get(edit.modifier_indicator, "")
    dates = ""
    if edit.effective:
        dates += f", effective {edit.effective.isoformat()}"
    if edit.deletion:
        dates += f", deleted after {edit.deletion.isoformat()}"
    table = PTP_TABLE_RULE.get(edit.release.setting or "")
    text = (f"{_source(edit.release)}: column 1 {edit.column1} / column 2 {edit.column2}, modifier indicator "
            f"{edit.modifier_indicator} ({meaning}), rationale \"{edit.rationale}\"{dates}"
            + (f"; {table}" if table else ""))
    return Citation(kind="ncci-ptp", text=text, release=edit.release.label, starter=edit.release.starter,
                    details=(("column1", edit.column1), ("column2", edit.column2),
                             ("modifier_indicator", edit.modifier_indicator), ("rationale", edit.rationale),
                             ("setting", edit.release.setting or ""),
                             ("effective", edit.effective.isoformat() if edit.effective else ""),
                             ("deletion", edit.deletion.isoformat() if edit.deletion else "*")))


@lru_cache(maxsize=256)
def mue(limit: MueLimit) -> Citation:
    scope = "per line" if limit.mai == 1 else "per date of service"
    text = (f"{_source(limit.release)}: MUE {limit.code} = {limit.units} units {scope} (MAI {limit.mai}, "
            f"{limit.rationale})")
    return Citation(kind="ncci-mue", text=text, release=limit.release.label, starter=limit.release.starter,
                    details=(("code", limit.code), ("units", str(limit.units)), ("mai", str(limit.mai)),
                             ("rationale", limit.rationale)))


@lru_cache(maxsize=1024)
def aoc(edit: AddOnEdit, primary: str) -> Citation:
    text = (f"{_source(edit.release)}: add-on {edit.add_on} (edit type {edit.edit_type}) lists primary "
            f"{primary}")
    return Citation(kind="ncci-aoc", text=text, release=edit.release.label, starter=edit.release.starter,
                    details=(("add_on", edit.add_on), ("primary", primary), ("edit_type", str(edit.edit_type))))


@lru_cache(maxsize=256)
def aoc_primaries(edit: AddOnEdit) -> Citation:
    """An add-on edit cited for its primaries as a whole (none of them billed)."""
    text = (f"{_source(edit.release)}: add-on {edit.add_on} (edit type {edit.edit_type}) is reported only with one "
            f"of its {len(edit.primaries)} listed primary codes")
    return Citation(kind="ncci-aoc", text=text, release=edit.release.label, starter=edit.release.starter,
                    details=(("add_on", edit.add_on), ("primary", ""), ("edit_type", str(edit.edit_type))))


def mpfs(*fees: FeeSchedule) -> Citation:
    parts = [f"{f.code}{'-' + f.modifier if f.modifier else ''} PC/TC {f.pctc}, {f.rvu_facility_total} RVU"
             for f in fees]
    release = fees[0].release
    cf = fees[0].conversion_factor
    text = f"{_source(release)}: " + "; ".join(parts) + (f"; conversion factor {cf}" if cf else "")
    return Citation(kind="mpfs", text=text, release=release.label, starter=release.starter,
                    details=tuple((f"{f.code}{f.modifier}", str(f.rvu_facility_total)) for f in fees))


def money(fee: FeeSchedule | None, facility: bool, units: int = 1) -> str | None:
    """"1.28 RVU ($42.61)" for `units` units, or None when the fee schedule has no figures."""
    if fee is None:
        return None
    rvu = fee.rvu_facility_total if facility else fee.rvu_nonfacility_total
    dollars = fee.dollars(facility)
    if rvu is None or dollars is None:
        return None
    return f"{rvu * units:.2f} RVU (${dollars * units:,.2f})"


def label(code: str, modifier: str) -> str:
    return f"{code}-{modifier}" if modifier else f"{code} global"

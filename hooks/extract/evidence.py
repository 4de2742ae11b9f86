"""The documentation evidence of the 76000 service (:class:`hooks.model.Evidence`): indication,
fluoroscopy time, dose, body site, findings, images, signed interpretation. Whether a 76000 is
distinct from another service is :mod:`hooks.distinct`."""
from __future__ import annotations

from typing import Sequence

from .. import fhir_read as fr
from ..model import Evidence, Line
from .codes import DCM_SYSTEMS, concepts_keys, status_of
from .companions import Index, Proc, active

FLUORO_TIME = "113730"  # DCM Total Fluoro Time
DOSE_CODES = frozenset({"113722", "113726", "113725"})  # DAP Total, Fluoro DAP Total, Dose (RP) Total
_SIGNED_REPORT = frozenset({"final", "amended", "corrected", "appended"})
_TIME_UNITS = {"s": 1 / 60, "sec": 1 / 60, "second": 1 / 60, "seconds": 1 / 60,
               "min": 1.0, "minute": 1.0, "minutes": 1.0, "h": 60.0, "hr": 60.0, "hour": 60.0,
               "hours": 60.0}


MAX_PLAUSIBLE_MINUTES = 24 * 60.0  # a fluoroscopy time over a day is a data error, not documentation


def _quantity_minutes(q: dict, path: str) -> float | None:
    """Minutes of the valueQuantity `q` of the element at `path` (value; code, else unit)."""
    value = fr.decimal(q.get("value"), path, "valueQuantity.value")
    if value is None:
        return None
    unit = (fr.string(q.get("code"), path, "valueQuantity.code")
            or fr.string(q.get("unit"), path, "valueQuantity.unit") or "")
    factor = _TIME_UNITS.get(unit.strip().lower())
    return None if factor is None else value * factor


def _value_facts(part: dict, path: str, minutes: list[float]) -> bool:
    """Adds the fluoroscopy minutes of an Observation or component to `minutes`; True when it holds
    a dose. Read: code, then (when it has a DCM coding) valueQuantity."""
    codes = []
    for system, code in fr.codings(part.get("code"), path, "code"):
        if system in DCM_SYSTEMS:
            codes.append(code)
    if not codes:
        return False
    q = fr.obj(part.get("valueQuantity"), path, "valueQuantity")
    if q is None:
        return False
    if FLUORO_TIME in codes:
        m = _quantity_minutes(q, path)
        if m is not None:
            minutes.append(m)
    return not DOSE_CODES.isdisjoint(codes) and fr.decimal(q.get("value"), path, "valueQuantity.value") is not None


def _observation_facts(obs: dict, path: str) -> tuple[list[float], bool]:
    """(fluoroscopy minutes found, dose found) in an Observation's code/value and components.

    Every component is checked to be an object before the Observation's own code is read."""
    components = obs.get("component")
    if components is not None:
        components = fr.elements(components, path, "component")
        for i, part in enumerate(components):
            if type(part) is not dict:
                fr.obj(part, path, "component", i, required=True)
    minutes: list[float] = []
    dose = _value_facts(obs, path, minutes)
    if components:
        for i, part in enumerate(components):
            dose = _value_facts(part, f"{path}.component[{i}]", minutes) or dose
    return minutes, dose


def _report_facts(rep: dict, path: str) -> tuple[bool, bool, bool]:
    """(findings, signed interpretation, images referenced) of a DiagnosticReport."""
    conclusion = fr.string(rep.get("conclusion"), path, "conclusion")
    findings = bool(conclusion and conclusion.strip()) or bool(concepts_keys(rep.get("conclusionCode"),
                                                                              path, "conclusionCode"))
    interpreters = fr.references(rep.get("resultsInterpreter"), path, "resultsInterpreter")
    signed = status_of(rep, path) in _SIGNED_REPORT and bool(interpreters)
    studies = fr.references(rep.get("imagingStudy"), path, "imagingStudy")
    media = rep.get("media")
    if media is not None:
        for i, m in enumerate(fr.elements(media, path, "media")):
            if type(m) is not dict:
                fr.obj(m, path, "media", i, required=True)
    return findings, signed, bool(studies or media)


def _is_lab(rep: dict, path: str) -> bool:
    for i, cc in enumerate(fr.elements(rep.get("category"), path, "category")):
        for _s, code in fr.codings(cc, path, "category", i):
            if code.upper() in ("LAB", "laboratory".upper()):
                return True
    return False


def evidence_of(fluoro_lines: Sequence[Line], index: Index, fluoro_procs: Sequence[Proc]) -> Evidence:
    indication = body_site = False
    for line in fluoro_lines:
        indication = indication or bool(line.diagnoses)
        body_site = body_site or bool(line.body_sites)
    report_refs: set[str] = set()
    for proc in fluoro_procs:
        indication = indication or bool(proc.reasons)
        body_site = body_site or bool(proc.sites)
        report_refs.update(proc.reports)
    minutes: list[float] = []
    dose = False
    for p, obs in active(index.of("Observation")):
        m, d = _observation_facts(obs, p)
        minutes += m
        dose = dose or d
    implausible = tuple(m for m in minutes if not 0 < m <= MAX_PLAUSIBLE_MINUTES)
    if implausible:
        minutes = [m for m in minutes if 0 < m <= MAX_PLAUSIBLE_MINUTES]
    findings = signed = images = False
    for p, rep in active(index.of("DiagnosticReport")):
        key = fr.key_of(rep)
        if key not in report_refs and _is_lab(rep, p):
            continue
        f, s, i = _report_facts(rep, p)
        findings, signed, images = findings or f, signed or s, images or i
    images = images or bool(active(index.of("ImagingStudy")))
    return Evidence(indication=indication, fluoro_minutes=max(minutes) if minutes else None,
                    radiation_dose=dose, body_site=body_site, findings=findings, images_retained=images,
                    signed_interpretation=signed, implausible_minutes=implausible)


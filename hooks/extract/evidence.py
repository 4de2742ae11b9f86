"""The documentation evidence of the 76000 service (:class:`hooks.model.Evidence`): indication,
fluoroscopy time, dose, body site, findings, images, signed interpretation. Whether a 76000 is
distinct from another service is :mod:`hooks.distinct`."""
from __future__ import annotations

from typing import Sequence

from .. import fhir_read as fr
from ..model import Evidence, Line
from .codes import CPT_SYSTEMS, DCM_SYSTEMS, concepts_keys, status_of
from .companions import Index, Proc, active

FLUORO_TIME = "113730"  # DCM Total Fluoro Time
LOINC_SYSTEMS = frozenset({"http://loinc.org", "https://loinc.org", "urn:oid:2.16.840.1.113883.6.1"})
# DiagnosticReport.code of a fluoroscopy report: LOINC radiology report codes of modality RF (fluoroscopy),
# from the LOINC Imaging Document Codes value set (C-CDA on FHIR, OID 1.3.6.1.4.1.12009.10.2.5), and any LOINC
# coding whose name starts with the LOINC/RSNA Radiology Playbook modality type RF or RFA ("RF Esophagus Views
# W contrast PO"); or the CPT fluoroscopy codes themselves (76000, the guidance codes 77001-77003).
FLUORO_REPORT_LOINC = frozenset({
    "24631-4",  # RF Unspecified body region Views for central venous catheter placement check
    "24570-4",  # RF Guidance for removal of calculus from Biliary duct common
    "24678-5",  # RF Esophagus Views W contrast PO
    "24679-3",  # RF Esophagus Views W gastrografin PO
})
FLUORO_REPORT_CPT = frozenset({"76000", "77001", "77002", "77003"})
_RF_NAME_PREFIXES = ("rf ", "rfa ")
# ImagingStudy.modality / series.modality (DICOM CID 29 Acquisition Modality): RF Radio Fluoroscopy, XA X-Ray Angiography.
FLUORO_MODALITIES = frozenset({"RF", "XA"})
DOSE_CODES = frozenset({"113722", "113726", "113725"})  # DAP Total, Fluoro DAP Total, Dose (RP) Total
_SIGNED_REPORT = frozenset({"final", "amended", "corrected", "appended"})
# UCUM time units (case-insensitive forms too) and their common spellings, in minutes
_TIME_UNITS = {"ms": 1 / 60000, "s": 1 / 60, "sec": 1 / 60, "second": 1 / 60, "seconds": 1 / 60,
               "min": 1.0, "minute": 1.0, "minutes": 1.0, "h": 60.0, "hr": 60.0, "hour": 60.0,
               "hours": 60.0, "d": 1440.0, "day": 1440.0, "days": 1440.0}


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


def fluoroscopy_report_code(rep: dict, path: str) -> bool:
    """Whether DiagnosticReport.code says it is a fluoroscopy report (FLUORO_REPORT_LOINC, a LOINC
    name of modality RF / RFA, or a CPT fluoroscopy code)."""
    concept = rep.get("code")
    if concept is None:
        return False
    for system, code in fr.codings(concept, path, "code"):
        if system in LOINC_SYSTEMS:
            if code in FLUORO_REPORT_LOINC:
                return True
        elif system in CPT_SYSTEMS and code in FLUORO_REPORT_CPT:
            return True
    for i, c in enumerate(concept.get("coding") or ()):  # validated by fr.codings above
        if c.get("system") in LOINC_SYSTEMS:
            display = fr.string(c.get("display"), f"{path}.code", f"coding[{i}].display")
            if display and display.strip().lower().startswith(_RF_NAME_PREFIXES):
                return True
    return False


def report_links(rep: dict, path: str) -> tuple[str, ...]:
    """DiagnosticReport.basedOn (R4 has no DiagnosticReport.partOf): the orders it reports on."""
    if "basedOn" not in rep:
        return ()
    return tuple(fr.references(rep.get("basedOn"), path, "basedOn"))


def study_facts(study: dict, path: str) -> tuple[tuple[str, ...], bool]:
    """(procedureReference and basedOn references, modality RF or XA) of an ImagingStudy
    (R4 has no ImagingStudy.partOf); the modality read from ImagingStudy.modality and each
    series.modality, in the DICOM DCM system or without one."""
    links = []
    proc = study.get("procedureReference")
    if proc is not None:
        ref = fr.reference(proc, path, "procedureReference")
        if ref:
            links.append(ref)
    if "basedOn" in study:
        links += fr.references(study.get("basedOn"), path, "basedOn")
    fluoro = False
    for i, m in enumerate(fr.elements(study.get("modality"), path, "modality")):
        fluoro = _fluoro_modality(m, f"{path}.modality[{i}]") or fluoro
    for p, series in fr.objects(study.get("series"), path, "series"):
        m = series.get("modality")
        if m is not None:
            fluoro = _fluoro_modality(m, f"{p}.modality") or fluoro
    return tuple(links), fluoro


def _fluoro_modality(coding, path: str) -> bool:
    c = fr.obj(coding, path, required=True)
    system = fr.string(c.get("system"), path, "system")
    code = fr.string(c.get("code"), path, "code")
    return (system is None or system in DCM_SYSTEMS) and bool(code) and code.strip().upper() in FLUORO_MODALITIES


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
    # Documentation about the fluoroscopy (issue 10 s.7): a DiagnosticReport linked to a 76000
    # Procedure (Procedure.report; DiagnosticReport.basedOn its ServiceRequest) or coded as a
    # fluoroscopy report; an ImagingStudy linked to it (procedureReference, basedOn), referenced by such
    # a report, or of modality RF / XA. Any other report or study (a CT on file) is not.
    # References are compared as written and through the companions (a Bundle's urn:uuid fullUrls).
    anchors = {proc.key for proc in fluoro_procs if proc.key}
    for proc in fluoro_procs:
        anchors.update(proc.based_on)
    anchor_objects = {id(proc.resource) for proc in fluoro_procs}
    reported = {id(r) for r in (index.get(ref) for ref in report_refs) if r is not None}

    def about_fluoroscopy(links: tuple[str, ...]) -> bool:
        return any(ref in anchors or id(index.get(ref)) in anchor_objects for ref in links)

    findings = signed = images = False
    unrelated: list[str] = []
    for p, rep in active(index.of("DiagnosticReport")):
        if not (id(rep) in reported or fr.key_of(rep) in report_refs or about_fluoroscopy(report_links(rep, p))
                or fluoroscopy_report_code(rep, p)):
            unrelated.append(p)
            continue
        f, s, i = _report_facts(rep, p)
        findings, signed, images = findings or f, signed or s, images or i
    if not images:
        for p, study in active(index.of("ImagingStudy")):
            links, fluoro = study_facts(study, p)
            if fluoro or about_fluoroscopy(links):
                images = True
                break
            unrelated.append(p)
    # Positional, in field order (indication, fluoro_minutes, radiation_dose, body_site, findings,
    # images_retained, signed_interpretation, separate_procedure, implausible_minutes, unrelated), as
    # hooks.extract.cases builds Case: keywords cost ~450 instructions each in a class call.
    return Evidence(indication, max(minutes) if minutes else None, dose, body_site, findings, images, signed,
                    True, implausible, tuple(unrelated))


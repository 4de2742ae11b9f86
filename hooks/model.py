"""The normalized model the rules read: setting, billed/ordered lines, documentation evidence.

Extraction (:mod:`hooks.extract`) builds it from FHIR R4 resources; the rules (:mod:`hooks.rules`)
are pure functions of it. Frozen dataclasses only: no FHIR objects leak past extraction.

:class:`Line` (built once per claim item and per Procedure), and :class:`Setting`, :class:`Evidence`
and :class:`Case` (built per request), define their own ``__init__``, which sets every field in one
``__dict__`` update: the frozen dataclass's generated ``__init__`` calls ``object.__setattr__`` once
per field (2.2 us a Line, 0.9 us this way; a 10-item claim builds 10 to 20 Lines). The instances stay
immutable (the dataclass's ``__setattr__`` / ``__delattr__`` still refuse), and equality, hashing,
``repr`` and ``dataclasses.replace`` are the dataclass's own; tests/test_perf_equivalence.py checks
that each such ``__init__`` has the fields' names and defaults and stores every field from its own
argument (hooks.findings.Finding and Fix and hooks.rules.engine.Problem do the same).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple
FLUORO = "76000"
# An institutional inpatient claim: NCCI PTP edits and MUEs do not apply (they are for practitioner and
# outpatient hospital claims; CMS NCCI Policy Manual for Medicare Services, Introduction and Chapter I).
INPATIENT_HOSPITAL = "inpatient-hospital"

# The most lines one review reads (a claim's items; an order's drafts with the encounter's
# Procedures; an encounter's Procedures) and the most active coded Procedures of its record. An X12
# claim carries at most 999 service lines (ASC X12 837 Institutional 005010X223A2, loop 2400 repeats
# up to 999; 837 Professional 005010X222A1, up to 50), so no claim that was or can be billed has
# more; 1000 is also the FHIR client's default search bound (FLUORO_CDS_FHIR_MAX_RESOURCES). The
# rules review each 76000 line against each other line and Procedure of its date: past this bound
# a request would cost minutes (4,000 items ~47 s), so a larger record is refused as invalid (a 400
# naming the first line past it; an error record in the batch) rather than reviewed.
MAX_LINES = 1000

# NCCI-associated modifiers that say a service was distinct (59 and the X{EPSU} subset).
DISTINCT_MODIFIERS = frozenset({"59", "XE", "XP", "XS", "XU"})
COMPONENT_MODIFIERS = frozenset({"26", "TC"})  # professional / technical component (MPFS PC/TC)

# Codes of the documentation elements, as listed in the card contract (docs/contract.md#actions).
DOC_ELEMENTS = ("indication", "fluoroscopy-time", "radiation-dose", "body-site", "findings",
                "images-retained", "signed-interpretation", "separate-procedure")


class Site(NamedTuple):
    """A body site as a concept (Claim.item.bodySite / subSite, Procedure.bodySite), compared by
    :mod:`hooks.rules.distinct`: its codings, its normalised text, its laterality."""

    codes: tuple[str, ...]  # "system|code" of each coding (laterality qualifiers left out)
    text: str | None  # the concept's text, else a coding's display: lower case, words only, laterality removed
    laterality: str | None  # "left" | "right" | "bilateral" (from the text, a SNOMED CT qualifier or LT/RT/50)


@dataclass(frozen=True)
class Setting:
    """Where the service was performed, as the rules need it."""

    facility: bool  # facility setting (hospital, ASC, ...) for modifier 26 purposes: the record's, else the POS's
    ncci_setting: str  # "practitioner" (professional claim) or "outpatient-hospital" (facility claim)
    pos: str | None = None  # CMS place-of-service code the lines report, when known
    reasons: tuple[str, ...] = ()  # why: "POS 22 (On campus-outpatient hospital)", "Encounter.class IMP"
    record_pos: str | None = None  # the place of service the record shows (Encounter.class, Location type), when it says
    pos_contradicted: bool = False  # `pos` contradicts the record's setting (record_facility): office POS for a
    # facility patient, or a facility POS for an office visit; the record's setting decides `facility`
    record_facility: bool | None = None  # what the record alone shows: a facility (True), an office (False), or nothing

    def __init__(self, facility: bool, ncci_setting: str, pos: str | None = None, reasons: tuple[str, ...] = (),
                 record_pos: str | None = None, pos_contradicted: bool = False,
                 record_facility: bool | None = None) -> None:
        self.__dict__.update(facility=facility, ncci_setting=ncci_setting, pos=pos, reasons=reasons,
                             record_pos=record_pos, pos_contradicted=pos_contradicted,
                             record_facility=record_facility)


@dataclass(frozen=True)
class Line:
    """One billed (Claim.item) or ordered (ServiceRequest / Procedure) service."""

    key: str  # stable id within the case: "Claim.item[1]" (0-based array index), "ServiceRequest/sr-1"
    code: str  # CPT/HCPCS code
    modifiers: tuple[str, ...] = ()
    units: int = 1
    service_date: date | None = None
    body_sites: tuple[Site, ...] = ()
    diagnoses: tuple[str, ...] = ()  # linked diagnosis / reason codes
    kind: str = "claim-item"  # "claim-item" | "service-request" | "procedure"
    resource: str | None = None  # "ServiceRequest/sr-1", "Procedure/p-1", or None for claim items
    sequence: int | None = None  # Claim.item.sequence
    encounters: tuple[str, ...] = ()  # "Encounter/id" of the service (Claim.item.encounter, Procedure.encounter)
    performers: tuple[str, ...] = ()  # rendering practitioners (item.careTeamSequence -> careTeam.provider, Procedure.performer)
    start: datetime | None = None  # performed period (Procedure.performedPeriod), when known to the minute
    end: datetime | None = None
    sessions: int = 1  # separate fluoroscopy sessions the record documents for this line (76000 Procedures)
    pos: str | None = None  # the line's own place of service (Claim.item.locationCodeableConcept), when given
    # Adjudicated amounts in USD (ExplanationOfBenefit.item.adjudication: allowed = "eligible", paid =
    # "paidtoprovider", else "benefit"; hooks/extract/eob.py), None when the record has none (a Claim):
    # the payment effect of a finding then comes from the MPFS.
    allowed: float | None = None
    paid: float | None = None

    def __init__(self, key: str, code: str, modifiers: tuple[str, ...] = (), units: int = 1,
                 service_date: date | None = None, body_sites: tuple[Site, ...] = (),
                 diagnoses: tuple[str, ...] = (), kind: str = "claim-item", resource: str | None = None,
                 sequence: int | None = None, encounters: tuple[str, ...] = (), performers: tuple[str, ...] = (),
                 start: datetime | None = None, end: datetime | None = None, sessions: int = 1,
                 pos: str | None = None, allowed: float | None = None, paid: float | None = None) -> None:
        self.__dict__.update(key=key, code=code, modifiers=modifiers, units=units,
                             service_date=service_date, body_sites=body_sites, diagnoses=diagnoses,
                             kind=kind, resource=resource, sequence=sequence, encounters=encounters,
                             performers=performers, start=start, end=end, sessions=sessions, pos=pos,
                             allowed=allowed, paid=paid)

    def has_distinct_modifier(self) -> bool:
        return bool(DISTINCT_MODIFIERS.intersection(self.modifiers))

    def distinct_modifiers(self) -> tuple[str, ...]:
        """The line's NCCI-associated distinct-service modifiers (59, XE, XP, XS, XU), in order."""
        return tuple(m for m in self.modifiers if m in DISTINCT_MODIFIERS)


@dataclass(frozen=True)
class Evidence:
    """What the record shows about one 76000 service (docs/contract.md#where-the-facts-live-in-fhir)."""

    indication: bool = False
    fluoro_minutes: float | None = None  # DCM 113730 Total Fluoro Time, converted to minutes
    radiation_dose: bool = False  # DCM 113722 / 113726 / 113725
    body_site: bool = False
    findings: bool = False  # a DiagnosticReport conclusion
    images_retained: bool = False  # ImagingStudy / DiagnosticReport.imagingStudy / media
    signed_interpretation: bool = False  # DiagnosticReport final with resultsInterpreter
    separate_procedure: bool = True  # extraction leaves True; the rules check same-date lines and Case.context_lines
    implausible_minutes: tuple[float, ...] = ()  # fluoroscopy times read but not documentation: <= 0 or over 24 h
    unrelated: tuple[str, ...] = ()  # reports / studies on file that are not about the fluoroscopy (not counted)

    def __init__(self, indication: bool = False, fluoro_minutes: float | None = None, radiation_dose: bool = False,
                 body_site: bool = False, findings: bool = False, images_retained: bool = False,
                 signed_interpretation: bool = False, separate_procedure: bool = True,
                 implausible_minutes: tuple[float, ...] = (), unrelated: tuple[str, ...] = ()) -> None:
        self.__dict__.update(indication=indication, fluoro_minutes=fluoro_minutes, radiation_dose=radiation_dose,
                             body_site=body_site, findings=findings, images_retained=images_retained,
                             signed_interpretation=signed_interpretation, separate_procedure=separate_procedure,
                             implausible_minutes=implausible_minutes, unrelated=unrelated)

    def missing(self) -> tuple[str, ...]:
        """Documentation element codes (DOC_ELEMENTS order) that the record lacks."""
        have = {
            "indication": self.indication,
            "fluoroscopy-time": self.fluoro_minutes is not None,
            "radiation-dose": self.radiation_dose,
            "body-site": self.body_site,
            "findings": self.findings,
            "images-retained": self.images_retained,
            "signed-interpretation": self.signed_interpretation,
            "separate-procedure": self.separate_procedure,
        }
        return tuple(e for e in DOC_ELEMENTS if not have[e])


NO_EVIDENCE = Evidence()  # what a case without documentation read holds (frozen: one shared instance)


@dataclass(frozen=True)
class Case:
    """Everything one service invocation reviews."""

    kind: str  # "claim" | "order" | "encounter"
    setting: Setting
    lines: tuple[Line, ...]
    evidence: Evidence = NO_EVIDENCE  # documentation of the 76000 service(s)
    default_date: date | None = None  # date of service when a line carries none
    claim: dict | None = None  # the raw FHIR Claim JSON, when there is one (for update actions)
    evidence_checked: bool = True  # False when documentation cannot be judged (e.g. order-sign)
    # Procedures in the record (same encounter) that are not billed lines of the case: a 76000 is only
    # a "separate procedure" when none of them on the same date includes fluoroscopy (docs/contract.md#where-the-facts-live-in-fhir).
    context_lines: tuple[Line, ...] = ()
    # The NCCI program (nccidata.api.MEDICARE / MEDICAID) the claim's focal coverage names, and where
    # (hooks/extract/program.py); None: the claim does not say (the `program` option decides).
    program: str | None = None
    program_source: str = ""

    def __init__(self, kind: str, setting: Setting, lines: tuple[Line, ...], evidence: Evidence = NO_EVIDENCE,
                 default_date: date | None = None, claim: dict | None = None, evidence_checked: bool = True,
                 context_lines: tuple[Line, ...] = (), program: str | None = None, program_source: str = "") -> None:
        self.__dict__.update(kind=kind, setting=setting, lines=lines, evidence=evidence, default_date=default_date,
                             claim=claim, evidence_checked=evidence_checked, context_lines=context_lines,
                             program=program, program_source=program_source)

    def line_date(self, line: Line) -> date | None:
        return line.service_date or self.default_date

"""The three case builders: :func:`case_from_claim` (claim-review), :func:`case_from_orders`
(order-sign), :func:`case_from_encounter` (encounter-discharge)."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import date
from typing import Mapping, NamedTuple, Sequence

from nccidata.api import OUTPATIENT_HOSPITAL, PRACTITIONER, ReferenceData

from .. import fhir_read as fr
from ..context import InvalidResource
from ..model import FLUORO, INPATIENT_HOSPITAL, MAX_LINES, Case, Evidence, Line
from ..distinct import separate_sessions
from .codes import (LATERALITY_MODIFIERS, concept_keys, modifier_codes, performs, procedure_code, site_of,
                    sites_of, unique)
from .companions import (Index, Proc, index_companions, procedure_date, procedure_reasons, procedure_session,
                         too_many_lines)
from .evidence import evidence_of
from .program import program_of
from .setting import pos_of, setting_of

CLINICAL_TYPES = ("Encounter", "Procedure", "Observation", "DiagnosticReport", "ImagingStudy")


class _ClaimParts(NamedTuple):
    lines: list[Line]
    pos_codes: list[str]  # 76000 lines' POS first
    location_refs: list[str]
    encounter_refs: list[str]
    institutional: bool
    inpatient_bill: bool  # Claim.subType says inpatient (type of bill 11x, or "inpatient")


def _claim_parts(claim: dict, index: Index, root: str = "Claim") -> _ClaimParts:
    """The lines and setting signals of a Claim (whose resourceType the caller has checked), or of
    an ExplanationOfBenefit (`root`, the name its FHIR paths start with: the elements read are the
    same in both; hooks/extract/eob.py).

    Read in this order: id, type, diagnosis, careTeam, facility, the record's Procedures
    (``index.procedures()``), then each item (sequence, productOrService, modifier, quantity,
    serviced[x], locationCodeableConcept, locationReference, encounter, diagnosisSequence,
    careTeamSequence, bodySite, subSite).

    The Procedures of the same code (and date) document an item: their sites and reasons are
    added to the item's; their encounters and performers stand in for the item's when it names
    none; the performed period is taken when one Procedure matches; and for 76000 the separate
    sessions among them (different encounters or non-overlapping periods) are ``Line.sessions``.
    """
    fr.string(claim.get("id"), root, "id")
    institutional = "institutional" in [c for _s, c in fr.codings(claim.get("type"), root, "type")]
    inpatient_bill = institutional and any(_inpatient_bill(c) for _s, c in fr.codings(claim.get("subType"),
                                                                                     root, "subType"))
    diagnoses: dict[int, list[str]] = {}
    for p, dx in fr.objects(claim.get("diagnosis"), root, "diagnosis"):
        seq = fr.positive_int(dx.get("sequence"), p, "sequence", required=True)
        keys = concept_keys(dx.get("diagnosisCodeableConcept"), p, "diagnosisCodeableConcept")
        ref = fr.reference(dx.get("diagnosisReference"), p, "diagnosisReference")
        if ref:
            keys.append(ref)
        diagnoses[seq] = keys
    care_team = _care_team(claim, root)
    location_refs = []
    facility = fr.reference(claim.get("facility"), root, "facility")
    if facility:
        location_refs.append(facility)
    procs = index.procedures()
    lines: list[Line] = []
    fluoro_pos: list[str] = []
    other_pos: list[str] = []
    encounter_refs: list[str] = []
    seen_seq: set[int] = set()
    sessions_of: dict[date | None, int] = {}  # a date -> the separate sessions its 76000 Procedures document
    for p, item in fr.objects(claim.get("item"), root, "item"):
        if len(seen_seq) == MAX_LINES:
            raise too_many_lines(p, root, "items")
        seq = fr.positive_int(item.get("sequence"), p, "sequence", required=True)
        if seq in seen_seq:
            raise fr.invalid(f"{p}.sequence", f"duplicate item sequence (each {root}.item.sequence is unique)")
        seen_seq.add(seq)
        code = procedure_code(fr.obj(item.get("productOrService"), p, "productOrService", required=True),
                              p, "productOrService")
        modifiers = modifier_codes(item.get("modifier"), p, "modifier")
        units = _units(item.get("quantity"), p, "quantity")
        serviced_date, serviced_period = item.get("servicedDate"), item.get("servicedPeriod")
        if serviced_date is not None and serviced_period is not None:
            raise fr.invalid(f"{p}.serviced[x]", "only one of servicedDate and servicedPeriod may be present")
        day = (fr.fhir_date(serviced_date, p, "servicedDate")
               or fr.period_start(serviced_period, p, "servicedPeriod"))
        pos = pos_of(item.get("locationCodeableConcept"), p, "locationCodeableConcept")
        loc_ref = fr.reference(item.get("locationReference"), p, "locationReference")
        if loc_ref:
            location_refs.append(loc_ref)
        item_encounters = fr.references(item.get("encounter"), p, "encounter")
        encounter_refs += item_encounters
        dx_keys: list[str] = []
        for j, s in enumerate(fr.elements(item.get("diagnosisSequence"), p, "diagnosisSequence")):
            s = fr.positive_int(s, p, "diagnosisSequence", j)
            keys = diagnoses.get(s)
            if keys is None:
                raise fr.invalid(f"{p}.diagnosisSequence[{j}]", f"refers to no {root}.diagnosis sequence")
            dx_keys += keys
        rendering = unroled = None  # the first member with a rendering role; the first without a role
        for j, s in enumerate(fr.elements(item.get("careTeamSequence"), p, "careTeamSequence")):
            s = fr.positive_int(s, p, "careTeamSequence", j)
            member = care_team.get(s)
            if member is None:
                raise fr.invalid(f"{p}.careTeamSequence[{j}]", f"refers to no {root}.careTeam sequence")
            provider, role = member
            if provider and role is True and rendering is None:
                rendering = provider
            elif provider and role is None and unroled is None:
                unroled = provider
        rendered = rendering or unroled
        performers: list[str] = [rendered] if rendered else []
        site = site_of(item.get("bodySite"), p, "bodySite")
        sites = [site] if site is not None else []
        sites += sites_of(item.get("subSite"), p, "subSite")
        if pos:
            (fluoro_pos if code == FLUORO else other_pos).append(pos)
        if not code:
            continue
        matched = [pr for pr in procs if pr.code == code and not (day and pr.day and pr.day != day)]
        start = end = None
        sessions = 1
        if matched:
            for pr in matched:
                sites += pr.sites
                dx_keys += pr.reasons
            if not item_encounters:
                item_encounters = [e for pr in matched for e in pr.encounters]
            if not performers:
                performers = [a for pr in matched for a in pr.performers]
            if len(matched) == 1:
                start, end = matched[0].start, matched[0].end
            elif code == FLUORO:  # once a date: the same Procedures document each 76000 item of it
                sessions = sessions_of.get(day)
                if sessions is None:
                    sessions = sessions_of[day] = separate_sessions(matched)
        laterality = _laterality(modifiers)
        if laterality:
            sites = [st if st.laterality else st._replace(laterality=laterality) for st in sites]
        # Positional, in field order (key, code, modifiers, units, service_date, body_sites, diagnoses,
        # kind, resource, sequence, encounters, performers, start, end, sessions, pos): a call with
        # keywords costs about twice as much.
        lines.append(Line(p, code, modifiers, units, day, unique(sites), unique(dx_keys), "claim-item", None, seq,
                          unique(item_encounters), unique(performers), start, end, sessions, pos))
    return _ClaimParts(lines, fluoro_pos + other_pos, location_refs, encounter_refs, institutional, inpatient_bill)




def _units(quantity, path: str, key: str) -> int:
    """Units of a Quantity (Claim.item.quantity, ServiceRequest.quantityQuantity): absent 1, a
    fraction rounded up; negative or over 10^6 is invalid."""
    qty = fr.obj(quantity, path, key)
    if qty is None:
        return 1
    value = fr.decimal(qty.get("value"), path, f"{key}.value")
    if value is None:
        return 1
    if value < 0 or value > 1e6:
        raise fr.invalid(f"{path}.{key}.value", "units out of range (a number from 0 to 1000000)")
    return int(math.ceil(value))


def _inpatient_bill(code: str) -> bool:
    """A Claim.subType code that says inpatient: a UB-04 type of bill 11x (hospital inpatient,
    "011x" or "11x"), or the word inpatient."""
    code = code.strip().lower()
    return code.lstrip("0")[:2] == "11" and len(code.lstrip("0")) == 3 or code in ("inpatient", "imp")


def _care_team(claim: dict, root: str = "Claim") -> dict[int, tuple[str | None, bool | None]]:
    """Claim.careTeam by sequence: (the provider reference or None, whether its role says it
    rendered the service: codes.performs, None without a role).

    The rendering practitioner of an item (Line.performers, XP evidence) is its first care-team
    member, in careTeamSequence order, whose role is rendering (claimcareteamrole primary, CARIN
    rendering / performing), else its first member without a role; an assisting, supervising,
    referring or other member never is (NCCI Policy Manual Chapter I, section E: XP is a separate
    *rendering* practitioner)."""
    team: dict[int, tuple[str | None, bool | None]] = {}
    members = claim.get("careTeam")
    if members is None:
        return team
    for p, member in fr.objects(members, root, "careTeam"):
        seq = fr.positive_int(member.get("sequence"), p, "sequence", required=True)
        provider = fr.reference(member.get("provider"), p, "provider")
        role = member.get("role")
        team[seq] = (provider, None if role is None else performs(role, p, "role"))
    return team


def _laterality(modifiers: Sequence[str]) -> str | None:
    """The side the line's anatomic modifiers (LT, RT, 50) give its sites."""
    for m in modifiers:
        if m in LATERALITY_MODIFIERS:
            return LATERALITY_MODIFIERS[m]
    return None


def _encounters_for(refs: Sequence[str], index: Index) -> list[tuple[str, dict]]:
    """The Encounters that `refs` name (each once), else every Encounter of the record."""
    chosen = []
    for r in dict.fromkeys(refs):
        enc = index.by_key.get(r) if r else None
        if enc is not None and enc.get("resourceType") == "Encounter":
            chosen.append((r, enc))
    return chosen or list(index.of("Encounter"))


def _encounter_start(encounters: Sequence[tuple[str, dict]]) -> date | None:
    for p, enc in encounters:
        d = fr.period_start(enc.get("period"), p, "period")
        if d:
            return d
    return None


def _fluoro_procs(index: Index) -> list[Proc]:
    return [pr for pr in index.procedures() if pr.code == FLUORO]


def _default_date(lines: Sequence[Line], encounters: Sequence[tuple[str, dict]]) -> date | None:
    """The first line's date of service, else the encounters' start (read only then)."""
    for ln in lines:
        if ln.service_date:
            return ln.service_date
    return _encounter_start(encounters)


def _case_from_claim_parts(kind: str, claim: dict, parts: _ClaimParts, index: Index,
                           reference: ReferenceData, extra_encounters: Sequence[tuple[str, dict]] = (),
                           root: str = "Claim") -> Case:
    encounters = list(extra_encounters) or _encounters_for(parts.encounter_refs, index)
    ncci = OUTPATIENT_HOSPITAL if parts.institutional else PRACTITIONER
    setting = setting_of(parts.pos_codes, parts.location_refs, encounters, index, reference, ncci)
    if parts.institutional and (parts.inpatient_bill or "21" in (setting.record_pos, setting.pos)):
        setting = replace(setting, ncci_setting=INPATIENT_HOSPITAL)  # an inpatient stay: no PTP edits, no MUEs
    lines = parts.lines
    fluoro_lines = [ln for ln in lines if ln.code == FLUORO]
    evidence = evidence_of(fluoro_lines, index, _fluoro_procs(index))
    default_date = _default_date(lines, encounters)
    checked = not index.by_type.keys().isdisjoint(CLINICAL_TYPES)
    program, program_source = program_of(claim, index, root)
    # Positional, in field order (kind, setting, lines, evidence, default_date, claim, evidence_checked,
    # context_lines, program, program_source): a class called with keywords costs ~450 instructions
    # more a keyword (CPython 3.11 packs them into a dict and out again).
    return Case(kind, setting, tuple(lines), evidence, default_date, claim, checked,
                _unbilled_procedures(lines, index), program, program_source)


def _unbilled_procedures(lines: Sequence[Line], index: Index) -> tuple[Line, ...]:
    """Active Procedures of the record whose code (on their date) is not among the billed lines."""
    codes = {ln.code for ln in lines}
    on = {(ln.code, ln.service_date) for ln in lines}
    out = []
    for pr in index.procedures():
        if pr.key is None or pr.code == FLUORO:
            continue
        if pr.code in codes if pr.day is None else (pr.code, pr.day) in on:
            continue  # billed (on its date)
        out.append(pr.line)
    return tuple(out)


def case_from_claim(claim: dict, companions: Sequence[dict], reference: ReferenceData, *,
                    full_validation: bool = False, aliases: Mapping[str, dict] | None = None,
                    index: Index | None = None) -> Case:
    """claim-review: the Claim's items are the lines; companions (Encounter, Procedures,
    Observations, DiagnosticReports, ImagingStudies, Locations) give setting and evidence.
    `aliases`: the Bundle's fullUrl references of companions (bundle_aliases), so that
    "urn:uuid:..." references resolve. `index`: ``index_companions(companions, full_validation,
    aliases)`` when the caller has built it already (claim-review, to plan its reads).

    Documentation is judged (``evidence_checked``) only when at least one clinical companion
    (Encounter, Procedure, Observation, DiagnosticReport or ImagingStudy) is available: a bare
    Claim documents nothing, and asking for documentation it cannot carry would be noise.
    """
    fr.resource_type(claim, "Claim", "Claim")
    if full_validation:
        fr.validate_full(claim)
    if index is None:
        index = index_companions(companions, full_validation, aliases)
    parts = _claim_parts(claim, index)
    return _case_from_claim_parts("claim", claim, parts, index, reference)


def order_key(entry: dict, res: dict) -> str | None:
    """How a draft order is named in actions: "Type/id", else (a draft not yet stored, as EHRs
    send them) its entry's ``fullUrl`` ("urn:uuid:...", or a URL reduced to "Type/id"); None
    when it has neither (it is reviewed, but cannot be acted on)."""
    key = fr.key_of(res)
    if key is not None:
        return key
    url = entry.get("fullUrl")
    if type(url) is str and url.strip():
        url = url.strip()
        return url if url.startswith(("urn:uuid:", "urn:oid:")) else fr.normalize_reference(url)
    return None


def _order_line(res: dict, path: str, code: str | None = None, key: str | None = None) -> Line | None:
    """A ServiceRequest or Procedure as a line (None without a procedure code). Read in this order:
    id, code, occurrence[x] and quantityQuantity (ServiceRequest) or performed[x] (Procedure),
    reasonCode, reasonReference, bodySite.

    `code`: the resource's procedure code when the caller has already read it; `key`: the
    order's name (:func:`order_key`; without one, `path` keeps lines apart)."""
    rtype = res["resourceType"]
    rid = fr.string(res.get("id"), path, "id")
    if code is None:
        code = procedure_code(res.get("code"), path, "code")
    if not code:
        return None
    units = 1
    if rtype == "ServiceRequest":
        day = fr.fhir_datetime_date(res.get("occurrenceDateTime"), path, "occurrenceDateTime")
        day = day or fr.period_start(res.get("occurrencePeriod"), path, "occurrencePeriod")
        units = _units(res.get("quantityQuantity"), path, "quantityQuantity")
        kind = "service-request"
    else:
        day = procedure_date(res, path)
        kind = "procedure"
    reasons = procedure_reasons(res, path)
    sites = sites_of(res.get("bodySite"), path, "bodySite")
    resource = f"{rtype}/{rid}" if rid else key
    key = resource or path
    encounters, performers, start, end = procedure_session(res, path) if kind == "procedure" else ((), (), None, None)
    return Line(key=key, code=code, units=units, service_date=day, body_sites=unique(sites),
                diagnoses=unique(reasons), kind=kind, resource=resource, encounters=encounters,
                performers=performers, start=start, end=end)


def _reviewed(res: dict, path: str) -> bool:
    """Whether the service reviews an order: it carries a procedure code it can read."""
    try:
        return bool(procedure_code(res.get("code"), path, "code"))
    except InvalidResource:
        return False


def case_from_orders(draft_orders: dict, companions: Sequence[dict], reference: ReferenceData, *,
                     full_validation: bool = False) -> Case:
    """order-sign: each draft ServiceRequest / Procedure is a line; the encounter's existing
    (active) Procedures are lines too, so a draft 76000 is checked against what was done that day.

    ``evidence_checked`` is False: documentation is not expected before the order is signed, so
    order-sign never yields documentation-missing or duration-exceeded.
    """
    fr.resource_type(draft_orders, "Bundle", "Bundle")
    index = index_companions(companions, full_validation)
    lines: list[Line] = []
    seen: set[str] = set()
    for p, entry in fr.objects(draft_orders.get("entry"), "Bundle.entry"):
        res = fr.obj(entry.get("resource"), p, "resource", required=True)
        rtype = fr.resource_type(res, f"{p}.resource")
        if rtype not in ("ServiceRequest", "Procedure"):
            continue
        if full_validation:
            fr.validate_full(res)
        try:
            line = _order_line(res, f"{p}.resource", key=order_key(entry, res))
        except InvalidResource:
            if _reviewed(res, f"{p}.resource"):
                raise
            continue  # an order the service does not review never fails the call
        if line is not None and line.key not in seen:
            if len(lines) == MAX_LINES:
                raise too_many_lines(f"{p}.resource", "draftOrders with the encounter's Procedures", "lines")
            seen.add(line.key)
            lines.append(line)
    for pr in index.procedures():
        if pr.key is not None and pr.key not in seen:
            if len(lines) == MAX_LINES:
                raise too_many_lines(pr.path, "draftOrders with the encounter's Procedures", "lines")
            seen.add(pr.key)
            lines.append(pr.line)
    encounters = list(index.of("Encounter"))
    setting = setting_of((), (), encounters, index, reference, PRACTITIONER)
    default_date = _default_date(lines, encounters)
    evidence = Evidence()
    return Case(kind="order", setting=setting, lines=tuple(lines), evidence=evidence,
                default_date=default_date, claim=None, evidence_checked=False)


def case_from_encounter(encounter: dict, companions: Sequence[dict], claim: dict | None,
                        reference: ReferenceData, *, full_validation: bool = False) -> Case:
    """encounter-discharge: with a Claim, its items are the lines (and ``Case.claim`` holds it);
    without one, the encounter's active Procedures are the lines. Companions give the evidence."""
    fr.resource_type(encounter, "Encounter", "Encounter")
    if full_validation:
        fr.validate_full(encounter)
    index = index_companions(list(companions or ()), full_validation)
    enc_key = fr.key_of(encounter) or "Encounter"
    index.by_key.setdefault(enc_key, encounter)
    if not any(r is encounter for _, r in index.of("Encounter")):
        index.by_type.setdefault("Encounter", []).insert(0, ("Encounter", encounter))
    encounters = [("Encounter", encounter)]
    if claim is not None:
        fr.resource_type(claim, "Claim", "Claim")
        if full_validation:
            fr.validate_full(claim)
        parts = _claim_parts(claim, index)
        return _case_from_claim_parts("encounter", claim, parts, index, reference, encounters)
    lines = [pr.line for pr in index.procedures() if pr.key is not None]
    setting = setting_of((), (), encounters, index, reference, PRACTITIONER)
    fluoro_lines = [ln for ln in lines if ln.code == FLUORO]
    evidence = evidence_of(fluoro_lines, index, _fluoro_procs(index))
    default_date = _default_date(lines, encounters)
    return Case(kind="encounter", setting=setting, lines=tuple(lines), evidence=evidence,
                default_date=default_date, claim=None, evidence_checked=True)

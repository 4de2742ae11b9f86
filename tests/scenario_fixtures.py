"""FHIR R4 fixtures for the acceptance scenarios 1-17 of ``docs/scenarios.md``.

Every resource is a plain JSON dict built by a small builder function below; every resource has
an id (prefixed ``sNN-`` so all scenarios can be loaded into one FHIR server side by side) and
is valid R4 (``tests/test_scenario_fixtures.py`` validates each with ``fhir.resources.R4B``).

API: :func:`scenario` (``scenario(n) -> Scenario``) and :data:`NUMBERS`.

- ``Scenario.context`` is the CDS Hooks context of the *prefetch* run. For claim-review its
  ``claim`` is a Bundle (type collection) whose first entry is the Claim, followed by the
  companions the Claim refers to (Encounter, Procedures, Observations, DiagnosticReports,
  ImagingStudies, Locations).
- ``Scenario.context_without_prefetch`` is the context of the *no-prefetch* run: for
  claim-review it carries only the Claim (the service fetches what the Claim references and
  searches the encounter's Observations / DiagnosticReports / ImagingStudies); for the other hooks
  it equals ``context``.
- ``Scenario.prefetch`` maps the prefetch keys of the service (hooks/services/*.py) to the
  resource or searchset Bundle a CDS client would send.
- ``Scenario.resources`` lists every resource (load them into a FHIR server for the
  no-prefetch runs; draft ServiceRequests included, they are harmless there).
- ``Scenario.extension`` is the request's ``extension`` (configuration), or None.
- ``Scenario.expected`` says what the service must answer (see :class:`Expected`).

Scenario 16 is the encounter-discharge service without prefetch, with ``fhir_server`` pointing at
a closed port (expected HTTP 412). Scenario 17 is a claim-review request whose Claim has
``item[1].servicedDate = "2024-13-45"`` (expected HTTP 400 naming ``Claim.item[1].servicedDate``);
``Scenario.raw_body`` holds a body that is not JSON for the other half of scenario 17.
"""
from __future__ import annotations

import copy
import zlib
from dataclasses import dataclass, field
from typing import Any

BASE = "http://fluoro-cds.example.org/fhir"
CPT = "http://www.ama-assn.org/go/cpt"
POS_SYSTEM = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
CLAIM_TYPE = "http://terminology.hl7.org/CodeSystem/claim-type"
PRIORITY = "http://terminology.hl7.org/CodeSystem/processpriority"
INFO_CATEGORY = "http://terminology.hl7.org/CodeSystem/claiminformationcategory"
CARE_TEAM_ROLE = "http://terminology.hl7.org/CodeSystem/claimcareteamrole"

CLAIM_REVIEW = ("fluoroscopy-claim-review", "org.fluoro-cds.claim-review")
ORDER_REVIEW = ("fluoroscopy-order-review", "order-sign")
DISCHARGE_REVIEW = ("fluoroscopy-discharge-review", "encounter-discharge")

NUMBERS = tuple(range(1, 18))
UNREACHABLE_FHIR_SERVER = "http://127.0.0.1:9/fhir"  # discard port: nothing listens there


# --------------------------------------------------------------------------------------------
# Expected answers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expected:
    """What the service must answer for a scenario.

    topics: topics that must all appear; any_topic: at least one of these must appear;
    forbidden_topics: none of these may appear; card_count: exact number of cards (None = any);
    removal_topics: the topic (one of) whose recommended suggestion removes 76000 (or replaces it:
    then ``replace_with`` names the new code); add_modifier: the recommended suggestion of the
    ``modifier_topic`` card adds this modifier to the 76000 item; missing: exact list of
    documentation elements of the documentation-missing card; no_bypass_suggestion: no suggestion
    may add 59/XS/XU/XE/XP; http_status / error_path: for the protocol-level scenarios;
    needs_real_ncci: the answer depends on the real CMS July 2024 tables.
    """

    topics: frozenset[str] = frozenset()
    any_topic: frozenset[str] = frozenset()
    forbidden_topics: frozenset[str] = frozenset()
    card_count: int | None = None
    removal_topics: frozenset[str] = frozenset()
    replace_with: str | None = None
    add_modifier: str | None = None
    modifier_topic: str | None = None
    missing: tuple[str, ...] | None = None
    no_bypass_suggestion: bool = False
    http_status: int = 200
    error_path: str | None = None
    needs_real_ncci: bool = False


@dataclass
class Scenario:
    number: int
    title: str
    service_id: str
    hook: str
    context: dict[str, Any]
    prefetch: dict[str, Any]
    resources: list[dict]
    expected: Expected
    context_without_prefetch: dict[str, Any] = field(default_factory=dict)
    extension: dict | None = None
    fhir_server: str | None = None  # set for scenario 16 (unreachable)
    raw_body: bytes | None = None  # scenario 17: a body that is not JSON
    companions: list[dict] = field(default_factory=list)  # resources besides the Claim / drafts
    claim: dict | None = None
    draft_orders: dict | None = None
    encounter: dict | None = None

    def request(self, with_prefetch: bool = True, fhir_server: str | None = None) -> dict:
        """A CDS Hooks request body for this scenario."""
        body: dict[str, Any] = {
            "hook": self.hook,
            "hookInstance": f"00000000-0000-4000-8000-{self.number:012d}",
            "context": copy.deepcopy(self.context if with_prefetch else self.context_without_prefetch),
        }
        if with_prefetch and self.prefetch:
            body["prefetch"] = copy.deepcopy(self.prefetch)
        server = fhir_server or self.fhir_server
        if server:
            body["fhirServer"] = server
        if self.extension:
            body["extension"] = copy.deepcopy(self.extension)
        return body


# --------------------------------------------------------------------------------------------
# Builders (plain dicts, R4)
# --------------------------------------------------------------------------------------------
def ref(resource: dict) -> dict:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def coding(system: str, code: str, display: str | None = None) -> dict:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return c


def concept(system: str, code: str, display: str | None = None) -> dict:
    return {"coding": [coding(system, code, display)]}


def patient(pid: str) -> dict:
    return {"resourceType": "Patient", "id": pid, "active": True,
            "name": [{"family": "Scenario", "given": [pid]}], "gender": "unknown",
            "birthDate": "1960-01-01"}


def practitioner(pid: str) -> dict:
    return {"resourceType": "Practitioner", "id": pid, "active": True,
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
            "name": [{"family": "Radiologist", "given": ["Rita"]}]}


def organization(oid: str, name: str) -> dict:
    return {"resourceType": "Organization", "id": oid, "active": True, "name": name}


def coverage(cid: str, pat: dict, payer: dict) -> dict:
    return {"resourceType": "Coverage", "id": cid, "status": "active", "beneficiary": ref(pat),
            "payor": [ref(payer)]}


LOCATION_KINDS = {
    # kind: (name, type concept)
    "hospital": ("General Hospital", concept(ROLE_CODE, "HOSP", "Hospital")),
    "emergency": ("General Hospital Emergency Room", concept(ROLE_CODE, "ER", "Emergency room")),
    "asc": ("Riverside Ambulatory Surgical Center",
            {"coding": [coding(POS_SYSTEM, "24", "Ambulatory Surgical Center")],
             "text": "Ambulatory surgical center"}),
    "office": ("Riverside Orthopedics Office",
               {"coding": [coding(POS_SYSTEM, "11", "Office")], "text": "Physician office"}),
}


def location(lid: str, kind: str) -> dict:
    name, type_ = LOCATION_KINDS[kind]
    return {"resourceType": "Location", "id": lid, "status": "active", "name": name,
            "type": [copy.deepcopy(type_)]}


def encounter(eid: str, pat: dict, cls: str, loc: dict | None, day: str) -> dict:
    enc = {"resourceType": "Encounter", "id": eid, "status": "finished",
           "class": coding(ACT_CODE, cls), "subject": ref(pat),
           "period": {"start": f"{day}T08:00:00Z", "end": f"{day}T17:00:00Z"}}
    if loc is not None:
        enc["location"] = [{"location": ref(loc), "status": "completed"}]
    return enc


def procedure(pid: str, pat: dict, enc: dict, code: str, day: str, *, body_site: tuple | None,
              reason: tuple | None, reports: list[dict] = (), status: str = "completed",
              loc: dict | None = None, performer: dict | None = None) -> dict:
    proc = {"resourceType": "Procedure", "id": pid, "status": status,
            "code": concept(CPT, code), "subject": ref(pat), "encounter": ref(enc),
            "performedDateTime": f"{day}T10:00:00Z"}
    if performer is not None:
        proc["performer"] = [{"actor": ref(performer)}]
    if loc is not None:
        proc["location"] = ref(loc)
    if reason:
        proc["reasonCode"] = [concept(ICD10CM, reason[0], reason[1])]
    if body_site:
        proc["bodySite"] = [concept(SNOMED, body_site[0], body_site[1])]
    if reports:
        proc["report"] = [ref(r) for r in reports]
    return proc


def fluoro_time(oid: str, pat: dict, enc: dict, proc: dict, day: str, value: float, unit: str) -> dict:
    ucum = {"s": "s", "min": "min"}[unit]
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "code": concept(DCM, "113730", "Total Fluoro Time"), "subject": ref(pat),
            "encounter": ref(enc), "partOf": [ref(proc)], "effectiveDateTime": f"{day}T10:30:00Z",
            "valueQuantity": {"value": value, "unit": ucum, "system": UCUM, "code": ucum}}


def fluoro_dose(oid: str, pat: dict, enc: dict, proc: dict, day: str, *, component: bool) -> dict:
    obs = {"resourceType": "Observation", "id": oid, "status": "final", "subject": ref(pat),
           "encounter": ref(enc), "partOf": [ref(proc)], "effectiveDateTime": f"{day}T10:30:00Z"}
    dap = {"value": 0.00042, "unit": "Gy.m2", "system": UCUM, "code": "Gy.m2"}
    if component:
        # HL7 Radiation Dose Summary style: a summary Observation with dose components.
        obs["code"] = concept(DCM, "113701", "X-Ray Radiation Dose Report")
        obs["component"] = [
            {"code": concept(DCM, "113726", "Fluoro Dose Area Product Total"), "valueQuantity": dap},
            {"code": concept(DCM, "113725", "Dose (RP) Total"),
             "valueQuantity": {"value": 0.012, "unit": "Gy", "system": UCUM, "code": "Gy"}},
        ]
    else:
        obs["code"] = concept(DCM, "113722", "Dose Area Product Total")
        obs["valueQuantity"] = dap
    return obs


def imaging_study(iid: str, pat: dict, enc: dict, proc: dict, day: str) -> dict:
    return {"resourceType": "ImagingStudy", "id": iid, "status": "available",
            "subject": ref(pat), "encounter": ref(enc), "started": f"{day}T10:00:00Z",
            "procedureReference": ref(proc), "modality": [coding(DCM, "RF", "Radio Fluoroscopy")],
            "numberOfSeries": 1, "numberOfInstances": 4,
            "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:2.25.{zlib.crc32(iid.encode())}"}]}


def diagnostic_report(rid: str, pat: dict, enc: dict, day: str, *, final: bool, interpreter: dict | None,
                      conclusion: str | None, study: dict | None) -> dict:
    rep = {"resourceType": "DiagnosticReport", "id": rid,
           "status": "final" if final else "preliminary",
           "category": [concept("http://terminology.hl7.org/CodeSystem/v2-0074", "RAD", "Radiology")],
           "code": concept(LOINC, "18748-4", "Diagnostic imaging study"),
           "subject": ref(pat), "encounter": ref(enc), "effectiveDateTime": f"{day}T10:45:00Z",
           "issued": f"{day}T12:00:00Z"}
    if interpreter is not None:
        rep["resultsInterpreter"] = [ref(interpreter)]
    if conclusion:
        rep["conclusion"] = conclusion
    if study is not None:
        rep["imagingStudy"] = [ref(study)]
    return rep


def claim_resource(cid: str, pat: dict, prov: dict, cov: dict, *, items: list[dict], diagnoses: list[tuple],
                   created: str, claim_type: str = "professional", facility: dict | None = None,
                   procedures: list[dict] = (), supporting: list[dict] = ()) -> dict:
    claim = {
        "resourceType": "Claim", "id": cid, "status": "active",
        "type": concept(CLAIM_TYPE, claim_type), "use": "claim", "patient": ref(pat),
        "created": created, "provider": ref(prov), "priority": concept(PRIORITY, "normal"),
        "careTeam": [{"sequence": 1, "provider": ref(prov),
                      "role": concept(CARE_TEAM_ROLE, "primary")}],
        "diagnosis": [{"sequence": i + 1, "diagnosisCodeableConcept": concept(ICD10CM, c, d)}
                      for i, (c, d) in enumerate(diagnoses)],
        "insurance": [{"sequence": 1, "focal": True, "coverage": ref(cov)}],
        "item": items,
    }
    if facility is not None:
        claim["facility"] = ref(facility)
    if procedures:
        claim["procedure"] = [{"sequence": i + 1, "procedureReference": ref(p)}
                              for i, p in enumerate(procedures)]
    if supporting:
        claim["supportingInfo"] = [{"sequence": i + 1, "category": concept(INFO_CATEGORY, "info"),
                                    "valueReference": ref(r)} for i, r in enumerate(supporting)]
    return claim


def claim_item(seq: int, code: str, *, day: str, pos: str, enc: dict | None, modifiers: tuple = (),
               qty: int = 1, diagnosis_sequence: tuple = (1,)) -> dict:
    item = {"sequence": seq, "careTeamSequence": [1], "diagnosisSequence": list(diagnosis_sequence),
            "productOrService": concept(CPT, code), "servicedDate": day,
            "locationCodeableConcept": concept(POS_SYSTEM, pos), "quantity": {"value": qty}}
    if modifiers:
        item["modifier"] = [concept(CPT, m) for m in modifiers]
    if enc is not None:
        item["encounter"] = [ref(enc)]
    return item


def service_request(sid: str, pat: dict, enc: dict, code: str, *, requester: dict, reason: tuple | None,
                    body_site: tuple | None, day: str) -> dict:
    sr = {"resourceType": "ServiceRequest", "id": sid, "status": "draft", "intent": "order",
          "code": concept(CPT, code), "subject": ref(pat), "encounter": ref(enc),
          "requester": ref(requester), "authoredOn": f"{day}T09:00:00Z",
          "occurrenceDateTime": f"{day}T10:00:00Z"}
    if reason:
        sr["reasonCode"] = [concept(ICD10CM, reason[0], reason[1])]
    if body_site:
        sr["bodySite"] = [concept(SNOMED, body_site[0], body_site[1])]
    return sr


def bundle(resources: list[dict], btype: str = "collection") -> dict:
    b = {"resourceType": "Bundle", "type": btype,
         "entry": [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r}
                   for r in resources]}
    if btype == "searchset":
        b["total"] = len(resources)
        for e in b["entry"]:
            e["search"] = {"mode": "match"}
    return b


# --------------------------------------------------------------------------------------------
# Scenario specifications
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Docs:
    """Which fluoroscopy documentation exists (docs/contract.md#where-the-facts-live-in-fhir); defaults = docs complete."""

    indication: bool = True
    time: tuple[float, str] | None = (4.5, "min")
    dose: bool = True
    dose_component: bool = False
    body_site: bool = True
    report: bool = True
    signed: bool = True
    conclusion: bool = True
    imaging: bool = True


@dataclass(frozen=True)
class Spec:
    title: str
    lines: tuple[tuple, ...]  # (code, modifiers tuple, quantity)
    pos: str
    location_kind: str | None
    encounter_class: str
    diagnosis: tuple[str, str]
    body_site: tuple[str, str]
    docs: Docs = Docs()
    day: str = "2024-08-05"
    claim_type: str = "professional"
    expected: Expected = Expected()
    extension: dict | None = None


KNEE = ("72696002", "Knee region structure")
LUMBAR = ("122496007", "Lumbar spine structure")
FEMUR = ("71341001", "Bone structure of femur")
LOWER_LEG = ("30021000", "Lower leg structure")
PULM_ARTERY = ("81040000", "Pulmonary artery structure")
KIDNEY = ("64033007", "Kidney structure")

REMOVAL = frozenset({"ptp-bundled", "ptp-modifier-allowed", "fluoroscopy-integral",
                     "use-guidance-code", "modifier-misuse"})
BUNDLING = frozenset({"ptp-bundled", "ptp-modifier-allowed", "fluoroscopy-integral",
                      "use-guidance-code", "modifier-misuse"})

CLAIM_SPECS: dict[int, Spec] = {
    1: Spec("29881 knee arthroscopy + 76000, POS 24 (ASC), docs complete",
            (("29881", (), 1), ("76000", (), 1)), "24", "asc", "AMB",
            ("M23.221", "Derangement of posterior horn of medial meniscus due to old tear, right knee"),
            KNEE,
            expected=Expected(any_topic=frozenset({"fluoroscopy-integral", "ptp-modifier-allowed"}),
                              card_count=1,
                              removal_topics=frozenset({"fluoroscopy-integral", "ptp-modifier-allowed"}),
                              forbidden_topics=frozenset({"modifier-26", "documentation-missing"}))),
    2: Spec("62323 lumbar epidural (with imaging guidance) + 76000, POS 22",
            (("62323", (), 1), ("76000", (), 1)), "22", "hospital", "AMB",
            ("M54.16", "Radiculopathy, lumbar region"), LUMBAR,
            expected=Expected(any_topic=REMOVAL, removal_topics=REMOVAL,
                              forbidden_topics=frozenset({"modifier-26"}))),
    3: Spec("20610 arthrocentesis, major joint + 76000, POS 11 (office)",
            (("20610", (), 1), ("76000", (), 1)), "11", "office", "AMB",
            ("M17.11", "Unilateral primary osteoarthritis, right knee"), KNEE,
            expected=Expected(topics=frozenset({"use-guidance-code"}),
                              removal_topics=frozenset({"use-guidance-code"}), replace_with="77002")),
    4: Spec("20650 skeletal traction wire + 76000 without modifier, POS 22, docs complete",
            (("20650", (), 1), ("76000", (), 1)), "22", "hospital", "AMB",
            ("S72.321A", "Displaced transverse fracture of shaft of right femur, initial encounter"),
            FEMUR,
            expected=Expected(topics=frozenset({"modifier-26"}), card_count=1, add_modifier="26",
                              modifier_topic="modifier-26",
                              forbidden_topics=BUNDLING | {"documentation-missing"})),
    5: Spec("as 4 but 76000-26", (("20650", (), 1), ("76000", ("26",), 1)), "22", "hospital", "AMB",
            ("S72.321A", "Displaced transverse fracture of shaft of right femur, initial encounter"),
            FEMUR, expected=Expected(card_count=0)),
    6: Spec("as 4 but POS 24 and configuration global-billing true",
            (("20650", (), 1), ("76000", (), 1)), "24", "asc", "AMB",
            ("S72.321A", "Displaced transverse fracture of shaft of right femur, initial encounter"),
            FEMUR, extension={"org.fluoro-cds.configuration": {"global-billing": True}},
            expected=Expected(forbidden_topics=frozenset({"modifier-26"}), card_count=0)),
    7: Spec("76000 alone, POS 11, no fluoroscopy time and no dose Observation",
            (("76000", (), 1),), "11", "office", "AMB",
            ("S82.201A", "Unspecified fracture of shaft of right tibia, initial encounter"), LOWER_LEG,
            docs=Docs(time=None, dose=False),
            expected=Expected(topics=frozenset({"documentation-missing"}),
                              missing=("fluoroscopy-time", "radiation-dose"))),
    8: Spec("76000 alone, POS 11, docs complete but fluoroscopy time 75 minutes (4500 s)",
            (("76000", (), 1),), "11", "office", "AMB",
            ("S82.201A", "Unspecified fracture of shaft of right tibia, initial encounter"), LOWER_LEG,
            docs=Docs(time=(4500, "s"), dose_component=True),
            expected=Expected(topics=frozenset({"duration-exceeded"}),
                              forbidden_topics=frozenset({"documentation-missing", "mue-exceeded"}))),
    9: Spec("33289 + 76000, POS 21", (("33289", (), 1), ("76000", (), 1)), "21", "hospital", "IMP",
            ("I50.22", "Chronic systolic (congestive) heart failure"), PULM_ARTERY,
            expected=Expected(topics=frozenset({"ptp-bundled"}),
                              removal_topics=frozenset({"ptp-bundled"}), no_bypass_suggestion=True,
                              forbidden_topics=frozenset({"ptp-modifier-allowed", "modifier-26"}))),
    10: Spec("33289 + 76000-XS, POS 21", (("33289", (), 1), ("76000", ("XS",), 1)), "21", "hospital",
             "IMP", ("I50.22", "Chronic systolic (congestive) heart failure"), PULM_ARTERY,
             expected=Expected(topics=frozenset({"modifier-misuse"}),
                               removal_topics=frozenset({"modifier-misuse"}), no_bypass_suggestion=True,
                               forbidden_topics=frozenset({"ptp-modifier-allowed"}))),
    11: Spec("20650 + 76000 with quantity 4 on one date, POS 11",
             (("20650", (), 1), ("76000", (), 4)), "11", "office", "AMB",
             ("S72.321A", "Displaced transverse fracture of shaft of right femur, initial encounter"),
             FEMUR, expected=Expected(topics=frozenset({"mue-exceeded"}),
                                      forbidden_topics=BUNDLING)),
    14: Spec("50080 + 76000 on 2024-08-01 (edit deleted 2016-01-01, indicator 9 in the real table)",
             (("50080", (), 1), ("76000", (), 1)), "11", "office", "AMB",
             ("N20.0", "Calculus of kidney"), KIDNEY, day="2024-08-01",
             expected=Expected(forbidden_topics=frozenset({"ptp-bundled", "ptp-modifier-allowed",
                                                           "modifier-misuse"}),
                               card_count=0, needs_real_ncci=True)),
    15: Spec("77002 + 76000 same date, POS 22", (("77002", (), 1), ("76000", (), 1)), "22", "hospital",
             "AMB", ("M17.11", "Unilateral primary osteoarthritis, right knee"), KNEE,
             expected=Expected(any_topic=REMOVAL, removal_topics=REMOVAL,
                               forbidden_topics=frozenset({"modifier-26"}))),
}


@dataclass
class _Built:
    patient: dict
    practitioner: dict
    payer: dict
    coverage: dict
    location: dict | None
    encounter: dict
    procedures: list[dict]
    observations: list[dict]
    reports: list[dict]
    studies: list[dict]

    def clinical(self) -> list[dict]:
        out = [self.encounter] + ([self.location] if self.location else [])
        return out + self.procedures + self.observations + self.reports + self.studies

    def base(self) -> list[dict]:
        return [self.patient, self.practitioner, self.payer, self.coverage]


def _build_clinical(n: int, spec: Spec, procedure_codes: list[str], *, fluoro_status: str = "completed") -> _Built:
    p = f"s{n:02d}"
    day = spec.day
    pat = patient(f"{p}-patient")
    prac = practitioner(f"{p}-practitioner")
    payer = organization(f"{p}-payer", "Example Health Plan")
    cov = coverage(f"{p}-coverage", pat, payer)
    loc = location(f"{p}-location", spec.location_kind) if spec.location_kind else None
    enc = encounter(f"{p}-encounter", pat, spec.encounter_class, loc, day)
    docs = spec.docs
    reason = spec.diagnosis if docs.indication else None
    site = spec.body_site if docs.body_site else None
    procs: list[dict] = []
    fluoro_proc = None
    for i, code in enumerate(procedure_codes):
        pid = f"{p}-procedure-fluoro" if code == "76000" else f"{p}-procedure-{i + 1}"
        proc = procedure(pid, pat, enc, code, day, body_site=site, reason=reason, loc=loc, performer=prac,
                         status=fluoro_status if code == "76000" else "completed")
        procs.append(proc)
        if code == "76000":
            fluoro_proc = proc
    obs: list[dict] = []
    reps: list[dict] = []
    studies: list[dict] = []
    if fluoro_proc is not None:
        if docs.time is not None:
            obs.append(fluoro_time(f"{p}-obs-fluoro-time", pat, enc, fluoro_proc, day, *docs.time))
        if docs.dose:
            obs.append(fluoro_dose(f"{p}-obs-dose", pat, enc, fluoro_proc, day, component=docs.dose_component))
        study = imaging_study(f"{p}-imaging-study", pat, enc, fluoro_proc, day) if docs.imaging else None
        if study is not None:
            studies.append(study)
        if docs.report:
            rep = diagnostic_report(f"{p}-report", pat, enc, day, final=docs.signed,
                                    interpreter=prac if docs.signed else None,
                                    conclusion="Fluoroscopy performed; see findings." if docs.conclusion else None,
                                    study=study)
            reps.append(rep)
            fluoro_proc["report"] = [ref(rep)]
    return _Built(pat, prac, payer, cov, loc, enc, procs, obs, reps, studies)


def _claim_for(n: int, spec: Spec, built: _Built, *, bad_date_item: int | None = None) -> dict:
    items = []
    for i, (code, mods, qty) in enumerate(spec.lines):
        item = claim_item(i + 1, code, day=spec.day, pos=spec.pos, enc=built.encounter, modifiers=mods,
                          qty=qty)
        if bad_date_item == i:
            item["servicedDate"] = "2024-13-45"
        items.append(item)
    return claim_resource(
        f"s{n:02d}-claim", built.patient, built.practitioner, built.coverage, items=items,
        diagnoses=[spec.diagnosis], created="2024-08-20", claim_type=spec.claim_type,
        facility=built.location, procedures=built.procedures,
        supporting=built.observations + built.reports)


def _claim_scenario(n: int, spec: Spec) -> Scenario:
    codes = [code for code, _, _ in spec.lines]
    built = _build_clinical(n, spec, codes)
    claim = _claim_for(n, spec, built)
    companions = built.clinical()
    service_id, hook = CLAIM_REVIEW
    return Scenario(
        number=n, title=spec.title, service_id=service_id, hook=hook,
        context={"patientId": built.patient["id"], "claim": bundle([claim] + companions)},
        context_without_prefetch={"patientId": built.patient["id"], "claim": claim},
        prefetch={},  # claim-review declares no prefetch template
        resources=built.base() + companions + [claim],
        expected=spec.expected, extension=spec.extension, companions=companions, claim=claim,
        encounter=built.encounter)


def _order_scenario_12() -> Scenario:
    n = 12
    spec = Spec("order-sign: draft ServiceRequests 64483 (transforaminal epidural) and 76000",
                (), "22", "hospital", "AMB", ("M54.17", "Radiculopathy, lumbosacral region"), LUMBAR,
                day="2024-08-12")
    built = _build_clinical(n, spec, [])
    drafts = [service_request(f"s12-sr-{code}", built.patient, built.encounter, code,
                              requester=built.practitioner, reason=spec.diagnosis, body_site=LUMBAR,
                              day=spec.day) for code in ("64483", "76000")]
    draft_bundle = bundle(drafts)
    service_id, hook = ORDER_REVIEW
    context = {"userId": f"Practitioner/{built.practitioner['id']}", "patientId": built.patient["id"],
               "encounterId": built.encounter["id"], "draftOrders": draft_bundle}
    companions = built.clinical()
    return Scenario(
        number=n, title=spec.title, service_id=service_id, hook=hook, context=context,
        context_without_prefetch=copy.deepcopy(context),
        prefetch={"encounter": built.encounter, "encounterLocations": _encounter_locations(built),
                  "procedures": bundle([], "searchset")},
        resources=built.base() + companions + drafts,
        expected=Expected(any_topic=frozenset({"fluoroscopy-integral", "ptp-modifier-allowed"}),
                          removal_topics=frozenset({"fluoroscopy-integral", "ptp-modifier-allowed"}),
                          forbidden_topics=frozenset({"documentation-missing", "modifier-26"})),
        companions=companions, draft_orders=draft_bundle, encounter=built.encounter)


def _encounter_locations(built: _Built) -> dict:
    """Prefetch ``Encounter?_id={{context.encounterId}}&_include=Encounter:location``."""
    return bundle([built.encounter] + ([built.location] if built.location else []), "searchset")


def _discharge_prefetch(built: _Built, claims: list[dict]) -> dict:
    return {"encounter": built.encounter,
            "encounterLocations": _encounter_locations(built),
            "procedures": bundle(built.procedures, "searchset"),
            "observations": bundle(built.observations, "searchset"),
            "reports": bundle(built.reports, "searchset"),
            "imagingStudies": bundle(built.studies, "searchset"),
            "claims": bundle(claims, "searchset")}


def _discharge_scenario_13() -> Scenario:
    n = 13
    spec = Spec("encounter-discharge: inpatient (IMP) at a hospital; Procedures 76000 + 20650, docs "
                "complete; Claim without 26", (("20650", (), 1), ("76000", (), 1)), "21", "hospital", "IMP",
                ("S72.321A", "Displaced transverse fracture of shaft of right femur, initial encounter"),
                FEMUR, day="2024-08-13")
    built = _build_clinical(n, spec, ["20650", "76000"])
    claim = _claim_for(n, spec, built)
    service_id, hook = DISCHARGE_REVIEW
    context = {"userId": f"Practitioner/{built.practitioner['id']}", "patientId": built.patient["id"],
               "encounterId": built.encounter["id"]}
    companions = built.clinical()
    return Scenario(
        number=n, title=spec.title, service_id=service_id, hook=hook, context=context,
        context_without_prefetch=copy.deepcopy(context), prefetch=_discharge_prefetch(built, [claim]),
        resources=built.base() + companions + [claim],
        expected=Expected(topics=frozenset({"modifier-26"}), add_modifier="26", modifier_topic="modifier-26",
                          forbidden_topics=BUNDLING | {"documentation-missing"}),
        companions=companions, claim=claim, encounter=built.encounter)


def _unreachable_scenario_16() -> Scenario:
    n = 16
    spec = Spec("encounter-discharge without prefetch, fhirServer unreachable", (), "21", "hospital", "IMP",
                ("S72.321A", "Displaced transverse fracture of shaft of right femur, initial encounter"),
                FEMUR, day="2024-08-16")
    built = _build_clinical(n, spec, ["20650", "76000"])
    service_id, hook = DISCHARGE_REVIEW
    context = {"userId": f"Practitioner/{built.practitioner['id']}", "patientId": built.patient["id"],
               "encounterId": built.encounter["id"]}
    return Scenario(
        number=n, title=spec.title, service_id=service_id, hook=hook, context=context,
        context_without_prefetch=copy.deepcopy(context), prefetch={},
        resources=built.base() + built.clinical(), expected=Expected(http_status=412),
        fhir_server=UNREACHABLE_FHIR_SERVER, companions=built.clinical(), encounter=built.encounter)


def _invalid_scenario_17() -> Scenario:
    n = 17
    spec = Spec("claim-review: Claim with item[1].servicedDate 2024-13-45 (and a body that is not JSON)",
                (("20650", (), 1), ("76000", (), 1)), "22", "hospital", "AMB",
                ("S72.321A", "Displaced transverse fracture of shaft of right femur, initial encounter"),
                FEMUR, day="2024-08-17")
    built = _build_clinical(n, spec, ["20650", "76000"])
    claim = _claim_for(n, spec, built, bad_date_item=1)
    service_id, hook = CLAIM_REVIEW
    companions = built.clinical()
    return Scenario(
        number=n, title=spec.title, service_id=service_id, hook=hook,
        context={"patientId": built.patient["id"], "claim": bundle([claim] + companions)},
        context_without_prefetch={"patientId": built.patient["id"], "claim": claim},
        prefetch={}, resources=built.base() + companions,
        expected=Expected(http_status=400, error_path="Claim.item[1].servicedDate"),
        raw_body=b'{"hook": "org.fluoro-cds.claim-review", "context": {', companions=companions,
        claim=claim, encounter=built.encounter)


def scenario(n: int) -> Scenario:
    """The fixtures of acceptance scenario `n` (1-17), freshly built (safe to mutate)."""
    if n in CLAIM_SPECS:
        return _claim_scenario(n, CLAIM_SPECS[n])
    builders = {12: _order_scenario_12, 13: _discharge_scenario_13, 16: _unreachable_scenario_16,
                17: _invalid_scenario_17}
    if n not in builders:
        raise KeyError(f"no scenario {n}; scenarios are {NUMBERS[0]}-{NUMBERS[-1]}")
    return builders[n]()


def all_scenarios() -> list[Scenario]:
    return [scenario(n) for n in NUMBERS]


def valid_resources(s: Scenario) -> list[dict]:
    """Every resource of `s` that must be valid R4 (scenario 17's Claim is deliberately invalid)."""
    out = list(s.resources)
    if s.claim is not None and s.number != 17 and s.claim not in out:
        out.append(s.claim)
    if s.draft_orders is not None:
        out.append(s.draft_orders)
    return out


def split_pair(names: tuple[str, str] = ("first", "second")) -> list[dict]:
    """Scenario 9's 33289 and 76000 billed on two claims (same patient, provider and date): two
    Claim-first Bundles with the scenario's companions, the 33289 claim (named ``names[0]``) first."""
    bundle = scenario(9).context["claim"]
    claim, companions = bundle["entry"][0]["resource"], [e["resource"] for e in bundle["entry"][1:]]
    out = []
    for name, fluoro in zip(names, (False, True)):
        c = copy.deepcopy(claim)
        c["id"] = name
        c["item"] = [i for i in c["item"] if (i["productOrService"]["coding"][0]["code"] == "76000") is fluoro]
        out.append({"resourceType": "Bundle", "type": "collection",
                    "entry": [{"resource": r} for r in [c] + companions]})
    return out

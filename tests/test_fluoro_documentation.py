"""Issue 10 s.7, documentation that is about the fluoroscopy: which DiagnosticReports count as the
76000's findings and signed interpretation, which ImagingStudies as its retained images, and the
HL7 Radiation Dose Summary shape of the time and dose (docs/rules.md, "Evidence")."""
from __future__ import annotations

import copy

import orjson

import pytest

from hooks.context import InvalidResource
from hooks.extract import case_from_claim, case_from_encounter, split_claim_bundle
from hooks.extract.checks import check_companion
from hooks.services.gather import follow_references
from nccidata.starter import starter
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.scenario_fixtures import scenario

REF = starter()
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
CPT = "http://www.ama-assn.org/go/cpt"
REPORT_ELEMENTS = {"findings", "signed-interpretation"}


def _docs(companions, claim=None):
    """(missing documentation elements, Evidence) of scenario 1's Claim with these companions."""
    s = scenario(1)
    case = case_from_claim(claim or s.claim, companions, REF)
    return set(case.evidence.missing()), case.evidence


def _base():
    """Scenario 1's companions without its reports and studies, its 76000 Procedure unlinked."""
    comps = [copy.deepcopy(r) for r in scenario(1).companions
             if r["resourceType"] not in ("DiagnosticReport", "ImagingStudy")]
    for r in comps:
        if r["resourceType"] == "Procedure":
            r.pop("report", None)
    return comps


def _fluoro_proc(comps):
    return next(r for r in comps if r["resourceType"] == "Procedure" and r["code"]["coding"][0]["code"] == "76000")


def _report(rid, code=(LOINC, "24627-2", "CT Chest"), **extra):
    rep = {"resourceType": "DiagnosticReport", "id": rid, "status": "final",
           "code": {"coding": [{"system": code[0], "code": code[1], "display": code[2]}]},
           "subject": {"reference": "Patient/s01-patient"}, "resultsInterpreter": [{"reference": "Practitioner/x"}],
           "conclusion": "No acute findings."}
    rep.update(extra)
    return rep


def _study(sid, modality="CT", **extra):
    st = {"resourceType": "ImagingStudy", "id": sid, "status": "available",
          "subject": {"reference": "Patient/s01-patient"},
          "modality": [{"system": DCM, "code": modality}]}
    st.update(extra)
    return st


def test_a_ct_report_and_study_on_file_are_not_fluoroscopy_documentation():
    comps = _base() + [_report("ct-report", imagingStudy=[{"reference": "ImagingStudy/ct-study"}]),
                       _study("ct-study")]
    missing, ev = _docs(comps)
    assert REPORT_ELEMENTS | {"images-retained"} <= missing
    assert ev.unrelated == ("DiagnosticReport/ct-report", "ImagingStudy/ct-study")
    from hooks.config import resolve
    from hooks.rules import evaluate
    claim = copy.deepcopy(scenario(1).claim)  # 76000 alone: billable, so its documentation is reviewed
    claim["item"] = [i for i in claim["item"] if i["productOrService"]["coding"][0]["code"] == "76000"]
    (card,) = [f for f in evaluate(case_from_claim(claim, comps, REF), REF, resolve(None))
               if f.code == "documentation-missing"]
    assert "not about the fluoroscopy" in card.reason and "DiagnosticReport/ct-report" in card.reason
    assert any("CID 29" in c.text for c in card.citations)
    # the scenario's own documentation (linked from the 76000 Procedure, study of modality RF) counts
    assert not (REPORT_ELEMENTS | {"images-retained"}) & _docs(scenario(1).companions)[0]


def test_a_report_linked_to_the_fluoroscopy_counts():
    comps = _base() + [_report("ct-coded-but-linked")]
    _fluoro_proc(comps)["report"] = [{"reference": "DiagnosticReport/ct-coded-but-linked"}]
    assert not REPORT_ELEMENTS & _docs(comps)[0]
    comps = _base() + [_report("by-order", basedOn=[{"reference": "ServiceRequest/sr-76000"}])]
    _fluoro_proc(comps)["basedOn"] = [{"reference": "ServiceRequest/sr-76000"}]
    assert not REPORT_ELEMENTS & _docs(comps)[0]
    other = _base() + [_report("other-order", basedOn=[{"reference": "ServiceRequest/sr-ct"}])]
    _fluoro_proc(other)["basedOn"] = [{"reference": "ServiceRequest/sr-76000"}]
    assert REPORT_ELEMENTS <= _docs(other)[0]


@pytest.mark.parametrize("code", [(LOINC, "24678-5", "RF Esophagus Views W contrast PO"),
                                  (LOINC, "99999-9", "RF Knee Views"),  # a LOINC name of modality RF
                                  (CPT, "76000", "Fluoroscopy")])
def test_a_report_coded_as_fluoroscopy_counts_unlinked(code):
    assert not REPORT_ELEMENTS & _docs(_base() + [_report("rf", code=code)])[0]


def test_images_count_when_linked_or_of_modality_rf_or_xa():
    assert "images-retained" in _docs(_base() + [_study("ct")])[0]
    for study in (_study("xa", "XA"), _study("rf", "RF"),
                  _study("series-rf", "OT", series=[{"uid": "1.2.3", "modality": {"system": DCM, "code": "RF"}}]),
                  _study("by-proc", procedureReference={"reference": "Procedure/s01-procedure-fluoro"})):
        assert "images-retained" not in _docs(_base() + [study])[0], study["id"]
    comps = _base() + [_study("by-order", basedOn=[{"reference": "ServiceRequest/sr-76000"}])]
    _fluoro_proc(comps)["basedOn"] = [{"reference": "ServiceRequest/sr-76000"}]
    assert "images-retained" not in _docs(comps)[0]


def test_a_bundle_reference_through_a_fullurl_links_a_report_without_an_id():
    s = scenario(1)
    bundle = copy.deepcopy(s.context["claim"])
    for e in bundle["entry"]:
        res = e["resource"]
        if res["resourceType"] == "DiagnosticReport":
            res.pop("id")
            res["code"] = {"coding": [{"system": LOINC, "code": "24627-2", "display": "CT Chest"}]}
            e["fullUrl"] = "urn:uuid:8f1d1c2e-0000-4000-8000-000000000001"
        if res["resourceType"] == "Procedure" and res.get("report"):
            res["report"] = [{"reference": "urn:uuid:8f1d1c2e-0000-4000-8000-000000000001"}]
    from hooks.extract import bundle_aliases
    claim, comps = split_claim_bundle(bundle)
    case = case_from_claim(claim, comps, REF, aliases=bundle_aliases(bundle))
    assert not REPORT_ELEMENTS & set(case.evidence.missing())


def _rdsr(oid="545"):
    """An Observation in the shape of the HL7 Radiation Dose Summary IG (profile radiation-dose-summary,
    example Observation 545): LOINC 73569-6, partOf / focus the ImagingStudy, DCM components."""
    q = lambda v, u: {"value": v, "unit": u, "system": "http://unitsofmeasure.org", "code": u}  # noqa: E731
    return {"resourceType": "Observation", "id": oid, "status": "final",
            "meta": {"profile": ["http://hl7.org/fhir/uv/radiation-dose-summary/StructureDefinition/radiation-dose-summary"]},
            "partOf": [{"reference": "ImagingStudy/344"}],
            "code": {"coding": [{"system": LOINC, "code": "73569-6",
                                 "display": "Radiation exposure and protection information [Description] Document Diagnostic imaging"}]},
            "subject": {"reference": "Patient/s01-patient"}, "focus": [{"reference": "ImagingStudy/344"}],
            "effectiveDateTime": "2024-08-05T12:00:30Z",
            "component": [
                {"code": {"coding": [{"system": DCM, "code": "121058", "display": "Procedure reported"}]},
                 "valueCodeableConcept": {"coding": [{"system": DCM, "code": "113704", "display": "Projection X-Ray"}]}},
                {"code": {"coding": [{"system": DCM, "code": "113725", "display": "Dose (RP) Total"}]},
                 "valueQuantity": q(212, "mGy")},
                {"code": {"coding": [{"system": DCM, "code": "113722", "display": "Dose Area Product Total"}]},
                 "valueQuantity": q(13639, "mGy.cm2")},
                {"code": {"coding": [{"system": DCM, "code": "113730", "display": "Total Fluoro Time"}]},
                 "valueQuantity": q(450, "s")}]}


def test_the_radiation_dose_summary_shape_gives_time_dose_and_images():
    comps = [r for r in _base() if r["resourceType"] != "Observation"]
    missing, ev = _docs(comps + [_rdsr(), _study("344", "XA")])
    assert ev.fluoro_minutes == 7.5 and ev.radiation_dose
    assert not {"fluoroscopy-time", "radiation-dose", "images-retained"} & missing
    check_companion(_rdsr(), "Observation/545")  # fetched in that shape: it passes the fetch checks


@pytest.mark.parametrize("value, unit, minutes", [(270000, "ms", 4.5), (0.5, "h", 30), (0.002, "d", 2.88)])
def test_fluoroscopy_time_in_any_ucum_time_unit(value, unit, minutes):
    obs = _rdsr()
    obs["component"][3]["valueQuantity"] = {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                                            "code": unit}
    _, ev = _docs([r for r in _base() if r["resourceType"] != "Observation"] + [obs])
    assert ev.fluoro_minutes == pytest.approx(minutes)


def test_invalid_link_elements_name_their_path():
    bad = _study("s", "RF")
    bad["modality"] = [{"system": DCM, "code": 7}]
    with pytest.raises(InvalidResource) as err:
        check_companion(bad, "ImagingStudy/s")
    assert err.value.path.startswith("ImagingStudy/s.modality[0]")
    rep = _report("r", basedOn={"reference": "ServiceRequest/x"})  # basedOn is an array
    with pytest.raises(InvalidResource):
        check_companion(rep, "DiagnosticReport/r")


def test_discharge_links_through_the_encounter_procedure():
    """encounter-discharge without a Claim: the encounter's 76000 Procedure links its report."""
    s = scenario(13)
    comps = [copy.deepcopy(r) for r in s.companions if r is not s.encounter]
    for r in comps:
        if r["resourceType"] == "DiagnosticReport":
            r["code"] = {"coding": [{"system": LOINC, "code": "24627-2", "display": "CT Chest"}]}
    assert [r for r in comps if r["resourceType"] == "Procedure" and r.get("report")]
    case = case_from_encounter(s.encounter, comps, None, REF)
    assert not REPORT_ELEMENTS & set(case.evidence.missing())
    for r in comps:
        r.pop("report", None)  # the same CT-coded report, no longer linked
    case = case_from_encounter(s.encounter, comps, None, REF)
    assert REPORT_ELEMENTS <= set(case.evidence.missing())


def test_the_fetch_plan_reads_the_reports_the_fluoroscopy_procedure_links():
    """Procedure.report targets are second-hop reads (one concurrent round trip after the first)."""
    proc = _fluoro_proc(_base())
    proc["report"] = [{"reference": "DiagnosticReport/no-encounter"}]
    assert "DiagnosticReport/no-encounter" in follow_references([proc])


# --- fetched without prefetch, over HTTP against a real FHIR server (sekmet-fhir) ------------------
def _linked_by_order_only():
    """Scenario 13 (discharge) under new ids: the 76000 Procedure is basedOn a ServiceRequest, and
    its report and study name only that order (no encounter, no Procedure.report; the report coded
    as a CT, the study of modality CT): only the order links them to the fluoroscopy."""
    s = scenario(13)
    resources = orjson.loads(orjson.dumps(s.resources).replace(b"s13-", b"s13l-"))
    sr = {"resourceType": "ServiceRequest", "id": "s13l-sr-76000", "status": "completed", "intent": "order",
          "code": {"coding": [{"system": CPT, "code": "76000"}]}, "subject": {"reference": "Patient/s13l-patient"}}
    for r in resources:
        if r["resourceType"] == "Procedure" and r["code"]["coding"][0]["code"] == "76000":
            r.pop("report", None)
            r["basedOn"] = [{"reference": "ServiceRequest/s13l-sr-76000"}]
        if r["resourceType"] in ("DiagnosticReport", "ImagingStudy"):
            r.pop("encounter", None)
            r["basedOn"] = [{"reference": "ServiceRequest/s13l-sr-76000"}]
        if r["resourceType"] == "DiagnosticReport":
            r["code"] = {"coding": [{"system": LOINC, "code": "24627-2", "display": "CT Chest"}]}
        if r["resourceType"] == "ImagingStudy":
            r.pop("procedureReference", None)
            r["modality"] = [{"system": DCM, "code": "CT"}]
    assert "s13-" not in orjson.dumps(resources).decode()
    return s, [sr] + resources


def test_discharge_without_prefetch_fetches_the_documentation_of_the_fluoroscopy_order(fhir_server):  # noqa: F811
    from service.app import create_app
    from service.settings import Settings
    from tests.cards_support import strip_volatile
    from tests.slow_fhir_proxy import SlowFhirProxy

    s, resources = _linked_by_order_only()
    fhir_server.load(resources)
    body = orjson.loads(orjson.dumps(s.request(with_prefetch=False)).replace(b"s13-", b"s13l-"))
    body["fhirAuthorization"] = {"access_token": fhir_server.token, "token_type": "Bearer", "expires_in": 300,
                                 "scope": "user/*.read", "subject": "fluoro-cds-tests"}
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        client = create_app(Settings(db_path=f"{tmp}/ncci.sqlite", state_db_path=f"{tmp}/state.sqlite")).test_client()
        with SlowFhirProxy(fhir_server.base_url, delay=0.05, token=fhir_server.token) as proxy:
            body["fhirServer"] = proxy.base_url
            resp = client.post(f"/cds-services/{s.service_id}", data=orjson.dumps(body),
                               content_type="application/json")
            requests_made, sequential = proxy.round_trips()
    assert resp.status_code == 200, resp.get_data(as_text=True)
    topics = [c["source"]["topic"]["code"] for c in strip_volatile(resp.get_json()["cards"])]
    assert topics == ["modifier-26"], topics  # no documentation-missing: the order's report and study count
    assert sequential <= 3, (requests_made, sequential)  # the link searches ride with the second-hop reads


def test_link_searches_are_planned_only_for_the_fluoroscopy_procedures_order():
    from hooks.services.gather import link_searches
    proc = _fluoro_proc(_base())
    assert link_searches([proc]) == []  # no basedOn: nothing more to fetch (the common case)
    proc["basedOn"] = [{"reference": "http://ehr.example/fhir/ServiceRequest/sr-1"}, {"reference": "CarePlan/c1"}]
    other = dict(proc, code={"coding": [{"system": CPT, "code": "29881"}]})
    assert link_searches([other]) == []
    assert link_searches([proc, proc], "p1") == [
        ("DiagnosticReport", {"based-on": "ServiceRequest/sr-1", "patient": "Patient/p1"}),
        ("ImagingStudy", {"basedon": "ServiceRequest/sr-1", "patient": "Patient/p1"})]

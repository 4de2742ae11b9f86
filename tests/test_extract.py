"""FHIR R4 -> Case extraction: what is read, how it is validated, what is fetched."""
from __future__ import annotations

import copy

import pytest

from hooks.context import InvalidResource
from hooks.extract import case_from_claim, case_from_encounter, case_from_orders, split_claim_bundle
from hooks.services.gather import claim_references, encounter_searches, follow_references
from nccidata.starter import starter
from tests.scenario_fixtures import DCM, UCUM, scenario

REF = starter()


def _claim_case(n, mutate=None, companions_mutate=None):
    s = scenario(n)
    claim, companions = split_claim_bundle(s.context["claim"])
    if mutate:
        mutate(claim)
    if companions_mutate:
        companions_mutate(companions)
    return case_from_claim(claim, companions, REF)


def _invalid(n, mutate, **kw):
    with pytest.raises(InvalidResource) as err:
        _claim_case(n, mutate, **kw)
    return err.value


@pytest.mark.parametrize("mutate, path", [
    (lambda c: c["item"][1].__setitem__("servicedDate", "2024-13-45"), "Claim.item[1].servicedDate"),
    (lambda c: c["item"][1].__setitem__("servicedDate", "2024-02-30"), "Claim.item[1].servicedDate"),
    (lambda c: c["item"][0].pop("sequence"), "Claim.item[0].sequence"),
    (lambda c: c["item"][0].__setitem__("sequence", "1"), "Claim.item[0].sequence"),
    (lambda c: c["item"][1].__setitem__("quantity", {"value": "4"}), "Claim.item[1].quantity.value"),
    (lambda c: c["item"][1].__setitem__("modifier", {"coding": []}), "Claim.item[1].modifier"),
    (lambda c: c["item"][1].__setitem__("diagnosisSequence", [7]), "Claim.item[1].diagnosisSequence[0]"),
    (lambda c: c["item"][0]["productOrService"]["coding"][0].__setitem__("code", 20650),
     "Claim.item[0].productOrService.coding[0].code"),
    (lambda c: c["item"][0].update(servicedPeriod={"start": "yesterday"}) or c["item"][0].pop("servicedDate"),
     "Claim.item[0].servicedPeriod.start"),
    (lambda c: c["item"][0].__setitem__("servicedPeriod", {"start": "2024-08-05"}), "Claim.item[0].serviced[x]"),
    (lambda c: c.__setitem__("item", {"sequence": 1}), "Claim.item"),
    (lambda c: c["item"].append(copy.deepcopy(c["item"][0])), "Claim.item[2].sequence"),
])
def test_invalid_claim_elements_raise_with_the_fhir_path(mutate, path):
    err = _invalid(4, mutate)
    assert err.path == path
    assert path in str(err)


def test_scenario_17_invalid_date_path():
    s = scenario(17)
    with pytest.raises(InvalidResource) as err:
        case_from_claim(s.context_without_prefetch["claim"], s.companions, REF)
    assert err.value.path == s.expected.error_path


def test_invalid_companion_names_resource_and_element():
    def bad(companions):
        obs = [r for r in companions if r["resourceType"] == "Observation"][0]
        obs["valueQuantity"]["value"] = "lots"
    err = _invalid(4, None, companions_mutate=bad)
    assert err.path.startswith("Observation/s04-obs-") and err.path.endswith("valueQuantity.value")


def test_full_validation_catches_what_the_rules_do_not_read():
    s = scenario(4)
    claim, companions = split_claim_bundle(s.context["claim"])
    claim["created"] = "last tuesday"
    case_from_claim(claim, companions, REF)  # created is not read by the rules
    with pytest.raises(InvalidResource) as err:
        case_from_claim(claim, companions, REF, full_validation=True)
    assert err.value.path == "Claim.created"


def test_bundle_must_start_with_the_claim():
    s = scenario(4)
    b = s.context["claim"]
    b["entry"].reverse()
    with pytest.raises(InvalidResource) as err:
        split_claim_bundle(b)
    assert err.value.path == "Bundle.entry[0].resource.resourceType"


@pytest.mark.parametrize("mutate, path", [
    (lambda b: b.update(entry=[]), "Bundle.entry"),
    (lambda b: b.update(entry={"resource": {}}), "Bundle.entry"),
    (lambda b: b["entry"].__setitem__(1, "x"), "Bundle.entry[1]"),
    (lambda b: b["entry"][2].pop("resource"), "Bundle.entry[2].resource"),
    (lambda b: b["entry"][1].__setitem__("resource", []), "Bundle.entry[1].resource"),
    (lambda b: b["entry"][1]["resource"].pop("resourceType"), "Bundle.entry[1].resource.resourceType"),
    (lambda b: b["entry"][1]["resource"].__setitem__("resourceType", " "),
     "Bundle.entry[1].resource.resourceType"),
    (lambda b: b["entry"][0]["resource"].__setitem__("resourceType", 7), "Bundle.entry[0].resource.resourceType"),
])
def test_bundle_entries_are_checked_with_their_paths(mutate, path):
    b = scenario(4).context["claim"]
    claim, companions = split_claim_bundle(b)
    assert claim["resourceType"] == "Claim" and len(companions) == len(b["entry"]) - 1
    mutate(b)
    with pytest.raises(InvalidResource) as err:
        split_claim_bundle(b)
    assert err.value.path == path


def test_lines_codes_modifiers_units_dates():
    case = _claim_case(10)
    (c1, fl) = case.lines
    assert (c1.code, fl.code, fl.modifiers, fl.units, fl.sequence) == ("33289", "76000", ("XS",), 1, 2)
    assert fl.key == "Claim.item[1]" and fl.service_date.isoformat() == "2024-08-05"
    assert fl.diagnoses and fl.body_sites  # from diagnosisSequence and the 76000 Procedure


def test_hcpcs_https_and_systemless_codes_are_accepted():
    def mutate(c):
        c["item"][0]["productOrService"]["coding"][0]["system"] = \
            "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
        c["item"][1]["productOrService"] = {"coding": [{"code": "76000"}]}
        c["item"][1]["quantity"] = {"value": 2.5}
    case = _claim_case(4, mutate)
    assert [ln.code for ln in case.lines] == ["20650", "76000"]
    assert case.lines[1].units == 3


@pytest.mark.parametrize("value, unit, minutes", [(4500, "s", 75.0), (75, "min", 75.0), (1.5, "h", 90.0),
                                                 (30, "sec", 0.5)])
def test_fluoroscopy_time_units(value, unit, minutes):
    def mutate(companions):
        obs = [r for r in companions if r["id"].endswith("fluoro-time")][0]
        obs["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM}
        if unit in ("s", "min", "h"):
            obs["valueQuantity"]["code"] = unit
    assert _claim_case(4, companions_mutate=mutate).evidence.fluoro_minutes == pytest.approx(minutes)


def test_fluoroscopy_time_as_a_component():
    def mutate(companions):
        obs = [r for r in companions if r["id"].endswith("fluoro-time")][0]
        obs["code"] = {"coding": [{"system": DCM, "code": "113701"}]}
        obs["component"] = [{"code": {"coding": [{"system": DCM, "code": "113730"}]},
                             "valueQuantity": obs.pop("valueQuantity")}]
    assert _claim_case(4, companions_mutate=mutate).evidence.fluoro_minutes == pytest.approx(4.5)


def test_dose_as_component_counts():
    assert scenario(8).companions and _claim_case(8).evidence.radiation_dose


def test_evidence_elements_each_come_from_their_resource():
    full = _claim_case(4).evidence
    assert full.missing() == ()

    def drop(rtype):
        return lambda comps: comps.__setitem__(slice(None), [r for r in comps if r["resourceType"] != rtype])
    no_reports = _claim_case(4, companions_mutate=drop("DiagnosticReport")).evidence
    assert set(no_reports.missing()) == {"findings", "signed-interpretation"}
    no_study = _claim_case(4, companions_mutate=drop("ImagingStudy")).evidence
    assert no_study.missing() == ()  # DiagnosticReport.imagingStudy still shows retained images

    def unsigned(comps):
        rep = [r for r in comps if r["resourceType"] == "DiagnosticReport"][0]
        rep["status"] = "preliminary"
    assert _claim_case(4, companions_mutate=unsigned).evidence.missing() == ("signed-interpretation",)

    def no_site(comps):
        for r in comps:
            r.pop("bodySite", None)
    assert _claim_case(4, companions_mutate=no_site).evidence.missing() == ("body-site",)

    def no_reason(c):
        for item in c["item"]:
            item.pop("diagnosisSequence")

    def no_proc_reason(comps):
        for r in comps:
            r.pop("reasonCode", None)
    assert _claim_case(4, no_reason, no_proc_reason).evidence.missing() == ("indication",)


def test_a_bare_claim_is_not_judged_for_documentation():
    s = scenario(7)
    case = case_from_claim(s.context_without_prefetch["claim"], [], REF)
    assert case.evidence_checked is False


@pytest.mark.parametrize("cls, facility", [("AMB", False), ("IMP", True), ("EMER", True), ("OBSENC", True),
                                           ("SS", True)])
def test_setting_from_encounter_class_when_no_pos(cls, facility):
    def no_pos(c):
        c.pop("facility")
        for item in c["item"]:
            item.pop("locationCodeableConcept")

    def set_class(comps):
        comps[:] = [r for r in comps if r["resourceType"] != "Location"]
        enc = [r for r in comps if r["resourceType"] == "Encounter"][0]
        enc["class"]["code"] = cls
        enc.pop("location")
    case = _claim_case(11, no_pos, set_class)
    assert case.setting.facility is facility and case.setting.pos is None


def test_setting_from_location_type_and_pos_precedence():
    def no_pos(c):
        for item in c["item"]:
            item.pop("locationCodeableConcept")
    assert _claim_case(4, no_pos).setting.facility  # Location type HOSP
    assert _claim_case(1, no_pos).setting.facility  # Location typed with POS 24
    case = _claim_case(4)
    assert case.setting.pos == "22" and case.setting.reasons[0].startswith("POS 22")

    def office(c):
        for item in c["item"]:
            item["locationCodeableConcept"]["coding"][0]["code"] = "11"
    # the record's setting, not the line's POS, decides: an office POS for a hospital patient is contradicted
    setting = _claim_case(4, office).setting
    assert setting.facility and setting.pos_contradicted and setting.pos == "11"
    assert any("HOSP" in r for r in setting.reasons)

    def inpatient(comps):
        for r in comps:
            if r["resourceType"] == "Encounter":
                r["class"]["code"] = "IMP"
    setting = _claim_case(4, office, inpatient).setting
    assert setting.record_pos == "21" and setting.pos_contradicted
    assert not _claim_case(7).setting.facility and not _claim_case(7).setting.pos_contradicted  # office visit


def test_institutional_claim_uses_the_outpatient_hospital_table():
    def inst(c):
        c["type"]["coding"][0]["code"] = "institutional"
    assert _claim_case(4, inst).setting.ncci_setting == "outpatient-hospital"
    assert _claim_case(4).setting.ncci_setting == "practitioner"


def test_claim_references_and_searches():
    s = scenario(1)
    refs = claim_references(s.claim)
    assert "Encounter/s01-encounter" in refs and "Location/s01-location" in refs
    assert "Procedure/s01-procedure-fluoro" in refs and "Observation/s01-obs-fluoro-time" in refs
    assert "DiagnosticReport/s01-report" in refs
    assert not [r for r in refs if r.startswith(("Coverage", "Practitioner", "Patient"))]
    claim = copy.deepcopy(s.claim)
    claim["facility"] = {"reference": "http://other.example/fhir/Location/abc/_history/3"}
    assert "Location/abc" in claim_references(claim)
    held = {"Encounter/s01-encounter", "Location/abc"}  # in hand: not to be fetched, still validated
    assert not held & set(claim_references(claim, held)) and "DiagnosticReport/s01-report" in claim_references(claim, held)
    claim["item"][0]["encounter"] = [{"reference": 7}]
    with pytest.raises(InvalidResource, match=r"Claim\.item\[0\]\.encounter\[0\]\.reference"):
        claim_references(claim, {"Encounter/s01-encounter"})
    assert encounter_searches("e1") == [(t, {"encounter": "Encounter/e1"}) for t in
                                        ("Procedure", "Observation", "DiagnosticReport", "ImagingStudy")]
    fetched = [r for r in s.companions if r["resourceType"] in ("Encounter", "DiagnosticReport")]
    assert set(follow_references(fetched)) == {"Location/s01-location", "ImagingStudy/s01-imaging-study"}


def test_orders_case():
    s = scenario(12)
    case = case_from_orders(s.context["draftOrders"], s.companions, REF)
    assert case.kind == "order" and case.evidence_checked is False
    assert [ln.key for ln in case.lines] == ["ServiceRequest/s12-sr-64483", "ServiceRequest/s12-sr-76000"]
    assert all(ln.kind == "service-request" and ln.resource == ln.key for ln in case.lines)


def test_orders_include_the_encounters_procedures():
    s = scenario(1)
    drafts = scenario(12).context["draftOrders"]
    drafts["entry"] = [e for e in drafts["entry"] if e["resource"]["id"].endswith("76000")]
    companions = [r for r in s.companions if r["resourceType"] in ("Encounter", "Location")]
    companions += [r for r in s.companions if r["resourceType"] == "Procedure" and r["id"].endswith("-1")]
    case = case_from_orders(drafts, companions, REF)
    assert sorted(ln.code for ln in case.lines) == ["29881", "76000"]


def test_encounter_case_without_claim_uses_procedures():
    s = scenario(13)
    case = case_from_encounter(s.encounter, s.companions, None, REF)
    assert sorted(ln.code for ln in case.lines) == ["20650", "76000"]
    assert all(ln.kind == "procedure" for ln in case.lines)
    assert case.setting.facility and case.claim is None and case.evidence.missing() == ()
    with_claim = case_from_encounter(s.encounter, s.companions, s.claim, REF)
    assert with_claim.claim is s.claim and with_claim.lines[1].key == "Claim.item[1]"


def test_not_done_procedures_are_ignored():
    s = scenario(13)
    comps = copy.deepcopy(s.companions)
    for r in comps:
        if r["resourceType"] == "Procedure" and r["id"].endswith("fluoro"):
            r["status"] = "not-done"
    case = case_from_encounter(s.encounter, comps, None, REF)
    assert [ln.code for ln in case.lines] == ["20650"]


def _fetch_plan(s):
    """Run the no-prefetch fetch plan against the scenario's resources (as a FHIR server would hold them)."""
    store = {f"{r['resourceType']}/{r['id']}": r for r in s.resources}
    fetched = {r: store[r] for r in claim_references(s.claim) if r in store}
    for enc in [k for k in list(fetched) if k.startswith("Encounter/")]:
        for rtype, params in encounter_searches(enc.split("/", 1)[1]):
            for key, r in store.items():
                if r["resourceType"] == rtype and r.get("encounter", {}).get("reference") == params["encounter"]:
                    fetched[key] = r
    for key in follow_references(list(fetched.values())):
        if key in store:
            fetched[key] = store[key]
    return fetched


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 8, 9, 10, 11, 14, 15])
def test_no_prefetch_fetch_plan_recovers_every_companion(n):
    s = scenario(n)
    fetched = _fetch_plan(s)
    assert set(fetched) == {f"{r['resourceType']}/{r['id']}" for r in s.companions}
    assert case_from_claim(s.claim, list(fetched.values()), REF) == case_from_claim(*split_claim_bundle(
        s.context["claim"]), REF)


def test_fixture_prefetch_keys_match_the_service_templates():
    from hooks.services import BY_ID
    from tests.scenario_fixtures import NUMBERS
    for n in NUMBERS:
        s = scenario(n)
        assert set(s.prefetch) <= set(BY_ID[s.service_id].prefetch), n
        assert BY_ID[s.service_id].hook == s.hook


@pytest.mark.parametrize("mutate", [
    lambda c: c["item"][1].__setitem__("servicedDate", "2024-13-45"),
    lambda c: c["item"][1].__setitem__("servicedDate", "2024-02-30"),
    lambda c: c["item"][0].pop("sequence"),
    lambda c: c["item"][1].__setitem__("modifier", {"coding": []}),
    lambda c: c["item"][0]["productOrService"]["coding"][0].__setitem__("code", 20650),
    lambda c: c["item"][0].update(servicedPeriod={"start": "yesterday"}) or c["item"][0].pop("servicedDate"),
])
def test_element_validation_reports_the_same_path_as_r4b(mutate):
    from hooks.fhir_read import validate_full
    claim = copy.deepcopy(scenario(4).claim)
    mutate(claim)
    with pytest.raises(InvalidResource) as ours:
        case_from_claim(claim, [], REF)
    with pytest.raises(InvalidResource) as r4b:
        validate_full(claim)
    assert ours.value.path == r4b.value.path


# --- distinct-service evidence: encounters, practitioners, periods, sites (issue 9 section 2) -------
def test_rendering_practitioner_from_care_team_sequence():
    def other_radiologist(c):
        c["careTeam"].append({"sequence": 2, "provider": {"reference": "Practitioner/radiologist"}})
        c["item"][1]["careTeamSequence"] = [2]
    case = _claim_case(1, other_radiologist)
    surgery, fluoro = case.lines
    assert surgery.performers == ("Practitioner/s01-practitioner",)
    assert fluoro.performers == ("Practitioner/radiologist",)
    from hooks.config import resolve
    from hooks.rules import evaluate
    # another practitioner's 29881 is not a PTP pair, and the fluoroscopy is not part of it
    assert not {f.code for f in evaluate(case, REF, resolve(None))} & {
        "fluoroscopy-integral", "ptp-modifier-allowed", "ptp-bundled"}
    err = _invalid(1, lambda c: c["item"][1].__setitem__("careTeamSequence", [9]))
    assert err.path == "Claim.item[1].careTeamSequence[0]"


def test_procedure_encounter_performer_and_period_reach_the_line():
    def periods(comps):
        for r in comps:
            if r["resourceType"] == "Procedure":
                r.pop("performedDateTime")
                fluoro = r["code"]["coding"][0]["code"] == "76000"
                r["performedPeriod"] = ({"start": "2024-08-05T14:00:00Z", "end": "2024-08-05T14:10:00Z"} if fluoro
                                        else {"start": "2024-08-05T08:00:00Z", "end": "2024-08-05T09:00:00Z"})
                r["performer"] = [{"actor": {"reference": "Practitioner/s01-practitioner"}}]
    def no_item_encounter(c):
        for item in c["item"]:
            item.pop("encounter", None)
            item.pop("careTeamSequence", None)
    case = _claim_case(1, no_item_encounter, periods)
    surgery, fluoro = case.lines
    assert fluoro.encounters == ("Encounter/s01-encounter",) and fluoro.performers == ("Practitioner/s01-practitioner",)
    assert (fluoro.start.hour, fluoro.end.minute) == (14, 10) and surgery.end.hour == 9
    from hooks.distinct import encounter_relation
    assert encounter_relation(fluoro, surgery) is False  # non-overlapping periods: separate sessions


def test_sites_are_concepts_with_text_and_laterality():
    def text_site_lt(c):
        c["item"][1]["bodySite"] = {"text": "Knee, left"}
        c["item"][1]["modifier"] = [{"coding": [{"code": "LT"}]}]  # the 76000 Procedure's knee is the left one
        c["item"][0]["modifier"] = [{"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "RT"}]}]
    case = _claim_case(1, text_site_lt)
    surgery, fluoro = case.lines
    assert fluoro.body_sites[0].text == "knee" and fluoro.body_sites[0].laterality == "left"
    assert {s.laterality for s in surgery.body_sites} == {"right"}  # RT gives the line's sites their side
    from hooks.distinct import sites_relation
    assert sites_relation(fluoro.body_sites, surgery.body_sites) is False
    err = _invalid(1, lambda c: c["item"][1].__setitem__("bodySite", {"coding": [{"code": "1", "display": 5}]}))
    assert err.path == "Claim.item[1].bodySite.coding[0].display"


def test_institutional_inpatient_claims_get_no_ptp_edits():
    """Issue 10 s.8: NCCI PTP edits and MUEs are for practitioner and outpatient hospital claims."""
    from hooks.config import resolve
    from hooks.model import INPATIENT_HOSPITAL
    from hooks.rules import evaluate

    def inst(c):
        c["type"]["coding"][0]["code"] = "institutional"
    case = _claim_case(9, inst)  # 33289 + 76000 during an inpatient stay (Encounter.class IMP)
    assert case.setting.ncci_setting == INPATIENT_HOSPITAL
    assert "ptp-bundled" not in {f.code for f in evaluate(case, REF, resolve(None))}
    assert "ptp-bundled" in {f.code for f in evaluate(_claim_case(9), REF, resolve(None))}  # professional claim

    def inst_bill(c):
        inst(c)
        c["subType"] = {"coding": [{"system": "https://www.nubc.org/CodeSystem/TypeOfBill", "code": "0111"}]}
    assert _claim_case(4, inst_bill).setting.ncci_setting == INPATIENT_HOSPITAL
    assert _claim_case(4, inst).setting.ncci_setting == "outpatient-hospital"  # outpatient visit, no inpatient bill


@pytest.mark.parametrize("value, unit", [(0, "min"), (-5, "min"), (25, "h"), (100000, "s")])
def test_implausible_fluoroscopy_time_is_not_documentation_and_says_so(value, unit):
    """Issue 10 s.7: zero, negative or over-24-hour times are not documentation."""
    from hooks.config import resolve
    from hooks.rules import evaluate

    def mutate(companions):
        obs = [r for r in companions if r["id"].endswith("fluoro-time")][0]
        obs["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    case = _claim_case(8, companions_mutate=mutate)  # 76000 alone, office, documentation complete but the time
    assert case.evidence.fluoro_minutes is None and case.evidence.implausible_minutes
    (f,) = [f for f in evaluate(case, REF, resolve(None)) if f.code == "documentation-missing"]
    assert "fluoroscopy-time" in f.missing and "not plausible" in f.reason

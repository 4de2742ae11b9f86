"""The hot-path shortcuts of extraction decide exactly as the element-by-element checks do.

- fr.codings (a loop over a well-formed concept) against fr._checked_codings (the general path);
- fr.references against fr.reference over fr.items;
- the inline resourceType / id / status checks of extract.companions (index_companions, active),
  and the memoized date parsers, name the same FHIR path and message as the accessors.
"""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hooks import fhir_read as fr
from hooks.context import InvalidResource
from hooks.extract import case_from_claim, split_claim_bundle
from nccidata.starter import starter
from tests.scenario_fixtures import scenario

REF = starter()


def _outcome(fn):
    try:
        return "ok", fn()
    except InvalidResource as err:
        return "invalid", str(err), err.path


# --- JSON values shaped like (and unlike) CodeableConcepts and References ------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.floats(allow_nan=True),
                     st.sampled_from(["", " ", "  x ", "76000", " 59", "x\n", "\t", "LAB", "http://loinc.org",
                                      "Encounter/e1", "https://h/fhir/Encounter/e1/_history/2", "#c"]))
_texts = st.one_of(st.none(), st.sampled_from(["", " ", "knee", "A b"]), _scalars)
_codings = st.one_of(
    st.fixed_dictionaries({}, optional={"system": _texts, "code": _texts, "display": _texts}),
    _scalars, st.lists(_scalars, max_size=1))
_concepts = st.one_of(
    st.fixed_dictionaries({}, optional={"coding": st.one_of(st.lists(_codings, max_size=4), _scalars,
                                                             st.dictionaries(st.just("a"), _scalars, max_size=1)),
                                        "text": _texts}),
    _scalars)
_references = st.one_of(st.fixed_dictionaries({}, optional={"reference": _texts, "display": _texts}), _scalars)


@settings(max_examples=3000, deadline=None)
@given(concept=_concepts, index=st.one_of(st.none(), st.integers(0, 3)))
def test_codings_fast_loop_equals_the_element_by_element_checks(concept, index):
    fast = _outcome(lambda: fr.codings(concept, "Procedure/p1", "bodySite", index))
    general = _outcome(lambda: fr._checked_codings(concept, "Procedure/p1", "bodySite", index))
    assert fast == general


@pytest.mark.parametrize("concept", [
    {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "29881"}]},
    {"coding": [{"code": " 76000 "}, {"system": "s"}, {"system": None, "code": ""}], "text": "t"},
    {"coding": []},
])
def test_codings_well_formed_concepts_take_the_fast_loop(concept, monkeypatch):
    expected = fr._checked_codings(concept, "P", "code")
    monkeypatch.setattr(fr, "_checked_codings", lambda *a: pytest.fail("general path taken"))
    assert fr.codings(concept, "P", "code") == expected


@pytest.mark.parametrize("concept, path", [
    ({"coding": [{"code": "  "}]}, "Claim.item[0].productOrService.coding[0].code"),
    ({"coding": [{"system": 5, "code": "x"}]}, "Claim.item[0].productOrService.coding[0].system"),
    ({"coding": [{"code": "x"}, 3]}, "Claim.item[0].productOrService.coding[1]"),
    ({"coding": "x"}, "Claim.item[0].productOrService.coding"),
    ({"coding": [], "text": 1}, "Claim.item[0].productOrService.text"),
    ("x", "Claim.item[0].productOrService"),
])
def test_codings_invalid_concepts_name_their_path(concept, path):
    with pytest.raises(InvalidResource) as err:
        fr.codings(concept, "Claim.item[0]", "productOrService")
    assert err.value.path == path


@settings(max_examples=2000, deadline=None)
@given(node=st.one_of(st.lists(_references, max_size=4), _scalars))
def test_references_equal_reference_over_items(node):
    def general():
        return [r for p, x in fr.items(node, "DiagnosticReport/r1", "imagingStudy") if (r := fr.reference(x, p))]
    assert _outcome(lambda: fr.references(node, "DiagnosticReport/r1", "imagingStudy")) == _outcome(general)


# --- whole-request paths through the inline checks --------------------------------------------
def _claim_and_companions():
    s = scenario(1)
    return split_claim_bundle(copy.deepcopy(s.context["claim"]))


def _companion(companions, rtype):
    return next(i for i, r in enumerate(companions) if r["resourceType"] == rtype)


@pytest.mark.parametrize("rtype, key, value, path", [
    ("Procedure", "resourceType", " ", "companions[{i}].resourceType"),
    ("Procedure", "resourceType", 7, "companions[{i}].resourceType"),
    ("Procedure", "id", " ", "Procedure.id"),
    ("Observation", "id", 12, "Observation.id"),
    ("Procedure", "status", " ", "Procedure/s01-procedure-1.status"),
    ("Observation", "status", 3, "Observation/s01-obs-fluoro-time.status"),
    ("Procedure", "performedDateTime", "2024-02-30T10:00:00Z", "Procedure/s01-procedure-1.performedDateTime"),
    ("Procedure", "reasonCode", [{"coding": [{"code": " "}]}], "Procedure/s01-procedure-1.reasonCode[0].coding[0].code"),
    ("Procedure", "report", [{"reference": "x"}, {"reference": 4}], "Procedure/s01-procedure-1.report[1].reference"),
    ("Observation", "component", [{}, 5], "Observation/s01-obs-fluoro-time.component[1]"),
    ("Observation", "valueQuantity", {"value": "4"}, "Observation/s01-obs-fluoro-time.valueQuantity.value"),
    ("DiagnosticReport", "media", [3], "DiagnosticReport/s01-report.media[0]"),
])
def test_invalid_companion_elements_name_their_path(rtype, key, value, path):
    claim, companions = _claim_and_companions()
    i = _companion(companions, rtype)
    companions[i][key] = value
    with pytest.raises(InvalidResource) as err:
        case_from_claim(claim, companions, REF)
    assert err.value.path == path.format(i=i)
    assert str(err.value).startswith(err.value.path + ": ")


def test_procedure_with_empty_id_and_without_id():
    claim, companions = _claim_and_companions()
    i = _companion(companions, "Procedure")
    companions[i]["id"] = ""
    case = case_from_claim(claim, companions, REF)
    assert case.lines  # "" is a valid (if useless) id: the Procedure is read as Procedure/
    del companions[i]["id"]
    assert case_from_claim(claim, companions, REF).lines == case.lines


@pytest.mark.parametrize("text, message", [
    ("2024-13-45", "is not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
    ("2024-02-30", "is not a calendar date (the day does not exist in that month)"),
    ("2" * 5000, "is not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"),
])
def test_invalid_dates_raise_every_time(text, message):
    for _ in range(3):  # the memo keeps valid days only
        with pytest.raises(InvalidResource) as err:
            fr.fhir_date(text, "Claim.item[1]", "servicedDate")
        assert str(err.value) == f"Claim.item[1].servicedDate: {message}"  # never the value
    with pytest.raises(InvalidResource) as err:
        fr.fhir_datetime_date(text + "T10:00:00Z", "Procedure/p", "performedDateTime")
    assert err.value.path == "Procedure/p.performedDateTime"
    assert fr.fhir_date("2024-02", "P", "d") is None and fr.fhir_datetime_date("2024", "P", "d") is None

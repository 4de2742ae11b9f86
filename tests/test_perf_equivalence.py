"""The hot-path shortcuts of the performance work give exactly what the plain code gave."""
from __future__ import annotations

import random
import uuid

import pytest

from hooks import fhir_read as fr
from hooks.cards import _uuid7_text, new_uuid
from hooks.context import InvalidResource


def test_uuid7_text_is_the_uuid_module_text_of_the_rfc_9562_fields():
    """_uuid7_text formats the fields itself: the same text as the uuid module gives for the
    128-bit value built field by field (RFC 9562 5.7), for extreme and random fields."""
    rng = random.Random(20241123)
    cases = [(0, 0), ((1 << 48) - 1, (1 << 74) - 1)] + [(rng.getrandbits(48), rng.getrandbits(74))
                                                        for _ in range(5000)]
    for ms, rand in cases:
        value = (ms << 80) | (7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
        text = _uuid7_text(ms, rand)
        assert text == str(uuid.UUID(int=value))
        assert uuid.UUID(text).version == 7 and uuid.UUID(text).variant == uuid.RFC_4122
    u = uuid.UUID(new_uuid())
    assert u.version == 7 and u.variant == uuid.RFC_4122


@pytest.mark.parametrize("call, path", [
    (lambda: fr.string({"a": 1}.get("a"), "Claim.item[0]", "a"), "Claim.item[0].a"),
    (lambda: fr.string("  ", "Claim", "id"), "Claim.id"),
    (lambda: fr.string(None, "Claim", "status", required=True), "Claim.status"),
    (lambda: fr.obj([], "Claim.item[1]", "quantity"), "Claim.item[1].quantity"),
    (lambda: fr.obj(None, "Claim.item[1]", "productOrService", required=True),
     "Claim.item[1].productOrService"),
    (lambda: fr.positive_int(0, "Claim.item[0]", "sequence"), "Claim.item[0].sequence"),
    (lambda: fr.positive_int(True, "Claim.item[0]", "sequence"), "Claim.item[0].sequence"),
    (lambda: fr.decimal("1", "Claim.item[0].quantity", "value"), "Claim.item[0].quantity.value"),
    (lambda: fr.fhir_date("2024-13-45", "Claim.item[1]", "servicedDate"), "Claim.item[1].servicedDate"),
    (lambda: fr.fhir_date("2024-02-30", "Claim.item[1]", "servicedDate"), "Claim.item[1].servicedDate"),
    (lambda: fr.fhir_datetime_date("x", "Procedure/p", "performedDateTime"),
     "Procedure/p.performedDateTime"),
    (lambda: fr.period_start({"start": "2024-1"}, "Claim.item[0]", "servicedPeriod"),
     "Claim.item[0].servicedPeriod.start"),
    (lambda: fr.reference({"reference": 5}, "Claim.item[0]", "locationReference"),
     "Claim.item[0].locationReference.reference"),
    (lambda: fr.reference("Location/1", "Claim", "facility"), "Claim.facility"),
    (lambda: fr.codings({"coding": [{"code": 3}]}, "Claim.item[0]", "productOrService"),
     "Claim.item[0].productOrService.coding[0].code"),
    (lambda: fr.codings({"coding": {}}, "Claim", "type"), "Claim.type.coding"),
    (lambda: fr.codings({"coding": [{"code": " "}]}, "Claim", "type"), "Claim.type.coding[0].code"),
    (lambda: fr.codings({"text": 1}, "Claim", "type"), "Claim.type.text"),
    (lambda: list(fr.items({}, "Claim", "item")), "Claim.item"),
    (lambda: list(fr.objects([{}, 3], "Claim", "item")), "Claim.item[1]"),
    (lambda: fr.resource_type({"resourceType": "Bundle"}, "context.claim", "Claim"),
     "context.claim.resourceType"),
    (lambda: fr.resource_type({"resourceType": " "}, "companions[0]"), "companions[0].resourceType"),
])
def test_accessors_name_the_fhir_path_of_an_invalid_element(call, path):
    with pytest.raises(InvalidResource) as err:
        call()
    assert err.value.path == path
    assert str(err.value).startswith(f"{path}: ")


def test_accessors_read_valid_elements():
    assert fr.string("x", "P", "k") == "x" and fr.string("", "P", "k") == ""
    assert fr.positive_int(3, "P", "k") == 3 and fr.positive_int(None, "P", "k") is None
    assert fr.reference({"reference": "https://h/fhir/Encounter/e1/_history/2"}, "P", "k") == "Encounter/e1"
    assert fr.reference({"reference": ""}, "P", "k") is None
    assert fr.resource_type({"resourceType": "Claim"}, "P", ("Claim", "Bundle")) == "Claim"
    assert fr.items(None, "P", "k") == ()
    assert fr.items([1, 2], "Claim", "item") == [("Claim.item[0]", 1), ("Claim.item[1]", 2)]


# --- hand-written __init__ of the frozen dataclasses built per request ---------------------------
def _fast_init_classes():
    from hooks.findings import Finding, Fix
    from hooks.model import Case, Evidence, Line, Setting
    from hooks.rules.engine import Problem
    from service.state import AuditRecord
    return [Line, Setting, Evidence, Case, Finding, Fix, Problem, AuditRecord]


@pytest.mark.parametrize("cls", _fast_init_classes(), ids=lambda c: c.__name__)
def test_fast_init_matches_the_dataclass_fields(cls):
    """Same parameters, in field order, with the fields' defaults; still frozen; replace() works."""
    import dataclasses
    import inspect

    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = dataclasses.fields(cls)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields):
        assert f.default_factory is dataclasses.MISSING
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == expected, f.name
    required = {p.name: f"v-{p.name}" for p in params if p.default is inspect.Parameter.empty}
    obj = cls(**required)
    assert {f.name: getattr(obj, f.name) for f in fields} == {
        f.name: required.get(f.name, f.default) for f in fields}
    # Every field stored on the instance from its own argument: a field dropped from the one
    # __dict__ update would otherwise read the class-level default and pass unnoticed.
    given = {f.name: f"given-{f.name}" for f in fields}
    assert vars(cls(**given)) == given
    assert vars(cls(*given.values())) == given  # positional, in field order
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, fields[0].name, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(obj, fields[0].name)
    copy = dataclasses.replace(obj, **{fields[-1].name: "changed"})
    assert getattr(copy, fields[-1].name) == "changed" and copy != obj
    assert cls(**required) == obj and hash(cls(**required)) == hash(obj)


def test_normalize_reference_hot_path_equals_the_regular_expression():
    def by_regex(value: str) -> str:
        m = fr._REF_RE.search(value)
        return f"{m.group(1)}/{m.group(2)}" if m else value

    rng = random.Random(20261124)
    cases = ["Encounter/1", "Encounter/1\n", "encounter/1", "/x", "x/", "E/1", "Ab/" + "1" * 64,
             "Ab/" + "1" * 65, "Ab/1/_history/2", "http://x/fhir/Encounter/1", "Encounter/ 1", "Ab/1\n\n",
             "Encounter/1/", "Location/s01-location", "#contained", ""]
    cases += ["".join(rng.choice("aZ09/-._\n h") for _ in range(rng.randint(0, 9))) for _ in range(50000)]
    for value in cases:
        assert fr.normalize_reference(value) == by_regex(value), repr(value)


def test_reference_hot_path_equals_normalize_reference():
    """reference() and references() return a "Type/id" text as it is without calling
    normalize_reference: the same result as the regular expression for any non-blank text."""
    rng = random.Random(20261201)
    cases = ["Encounter/1", "Encounter/1\n", "a/b/c", "/x", "x/", "Ab/1/_history/2", "http://x/fhir/Encounter/1",
             "Encounter/ 1", " Encounter/1", "Encounter/1 ", "#contained", "urn:uuid:1/2"]
    cases += ["".join(rng.choice("aZ09/-._\n h") for _ in range(rng.randint(1, 9))) for _ in range(20000)]
    for value in cases:
        if not value.strip():
            continue
        expected = fr._REF_RE.search(value)
        expected = f"{expected.group(1)}/{expected.group(2)}" if expected else value
        assert fr.reference({"reference": value}, "P", "k") == expected, repr(value)
        assert fr.references([{"reference": value}, {"reference": value}], "P", "k") == [expected] * 2, repr(value)


@pytest.mark.parametrize("node, expected", [
    (None, None), ({}, None), ({"text": None}, None), ({"text": ""}, ""), ({"text": "Knee"}, "Knee"),
    ({"text": " x "}, " x "), ({"coding": [], "text": "Knee"}, "Knee"),
])
def test_concept_text_reads_valid_texts(node, expected):
    assert fr.concept_text(node, "Procedure/p", "bodySite", 0) == expected


@pytest.mark.parametrize("node, path", [
    ({"text": " "}, "Procedure/p.bodySite[0].text"), ({"text": 5}, "Procedure/p.bodySite[0].text"),
    ([], "Procedure/p.bodySite[0]"), ("knee", "Procedure/p.bodySite[0]"),
])
def test_concept_text_names_the_path_of_an_invalid_text(node, path):
    with pytest.raises(InvalidResource) as err:
        fr.concept_text(node, "Procedure/p", "bodySite", 0)
    assert err.value.path == path


def test_site_of_reads_the_first_non_blank_display_and_checks_the_others_it_passes():
    from hooks.extract.codes import site_of

    site = site_of({"coding": [{"system": "s", "code": "1", "display": ""},
                               {"system": "s", "code": "2", "display": "Left knee"},
                               {"system": "s", "code": "3", "display": 7}]}, "Procedure/p", "bodySite", 0)
    assert (site.codes, site.text, site.laterality) == (("s|1", "s|2", "s|3"), "knee", "left")
    for display in (" ", 7, ["x"]):
        with pytest.raises(InvalidResource) as err:
            site_of({"coding": [{"system": "s", "code": "1", "display": display}]}, "Procedure/p", "bodySite", 0)
        assert err.value.path == "Procedure/p.bodySite[0].coding[0].display"


def test_equal_citations_hash_alike():
    """Citation.__hash__ is the text's: equal citations (every field equal) hash alike, and a
    citation still works as a key of the cards' caches."""
    from hooks.findings import Citation

    a = Citation(kind="policy", text="row 1", release="r", details=(("k", "v"),))
    b = Citation(kind="policy", text="row 1", release="r", details=(("k", "v"),))
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != Citation(kind="policy", text="row 1", release="other") and len({a, b}) == 1

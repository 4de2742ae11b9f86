"""Pure Claim edits: re-sequencing, references kept consistent, R4B-valid results."""
from __future__ import annotations

import pytest

from hooks import claim_edit
from tests.cards_support import claim_item, make_claim, validate_claim


def _claim():
    return make_claim(claim_item(1, "29881", dx=[1], price=500.0),
                      claim_item(2, "76000", dx=[1, 2], price=42.61),
                      claim_item(3, "20610", dx=[2], price=60.0), total=True)


def test_remove_item_resequences_and_keeps_references():
    original = _claim()
    out = claim_edit.remove_item(original, 2)
    assert [i["sequence"] for i in out["item"]] == [1, 2]
    assert [claim_edit.item_code(i) for i in out["item"]] == ["29881", "20610"]
    # diagnosis / careTeam untouched, so item references still resolve
    dx = {d["sequence"] for d in out["diagnosis"]}
    team = {c["sequence"] for c in out["careTeam"]}
    for item in out["item"]:
        assert set(item["diagnosisSequence"]) <= dx
        assert set(item["careTeamSequence"]) <= team
    assert out["item"][1]["diagnosisSequence"] == [2]
    assert out["total"]["value"] == 560
    assert original["item"][1]["productOrService"]["coding"][0]["code"] == "76000"  # not mutated
    validate_claim(out)


def test_remove_item_remaps_item_sequence_references_and_details():
    claim = _claim()
    claim["item"][2]["detail"] = [
        {"sequence": 4, "productOrService": {"coding": [{"code": "A4550"}]}},
        {"sequence": 9, "productOrService": {"coding": [{"code": "A4649"}]}}]
    claim["contained"] = [{
        "resourceType": "ClaimResponse", "id": "prior", "status": "active",
        "type": {"coding": [{"code": "professional"}]}, "use": "claim",
        "patient": {"reference": "Patient/pat-1"}, "created": "2024-08-15",
        "insurer": {"reference": "Organization/payer"}, "outcome": "complete",
        "item": [{"itemSequence": 1, "adjudication": [{"category": {"text": "eligible"}}]},
                 {"itemSequence": 2, "adjudication": [{"category": {"text": "eligible"}}]},
                 {"itemSequence": 3, "adjudication": [{"category": {"text": "eligible"}}]}],
        "addItem": [{"itemSequence": [2, 3], "productOrService": {"coding": [{"code": "77002"}]},
                     "adjudication": [{"category": {"text": "eligible"}}]}]}]
    out = claim_edit.remove_item(claim, 2)
    response = out["contained"][0]
    assert [i["itemSequence"] for i in response["item"]] == [1, 2]
    assert response["addItem"][0]["itemSequence"] == [2]
    assert [d["sequence"] for d in out["item"][1]["detail"]] == [1, 2]
    validate_claim(out)


def test_remove_last_remaining_item_drops_the_item_list():
    claim = make_claim(claim_item(1, "76000"))
    out = claim_edit.remove_item(claim, 1)
    assert "item" not in out
    validate_claim(out)


def test_replace_code_sets_a_single_cpt_coding():
    out = claim_edit.replace_code(_claim(), 2, "77002", "Fluoroscopic guidance for needle placement")
    coding = out["item"][1]["productOrService"]["coding"]
    assert coding == [{"system": "http://www.ama-assn.org/go/cpt", "code": "77002",
                       "display": "Fluoroscopic guidance for needle placement"}]
    validate_claim(out)


def test_add_modifier_is_idempotent_and_uses_cpt_system():
    out = claim_edit.add_modifier(_claim(), 2, "26")
    assert out["item"][1]["modifier"] == [
        {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "26"}]}]
    assert claim_edit.add_modifier(out, 2, "26") == out
    validate_claim(out)


def test_add_modifier_to_an_item_whose_modifier_is_null():
    """A null modifier is read as absent, so the edit starts the list (the fuzz run found a 500
    here: setdefault kept the null)."""
    claim = _claim()
    claim["item"][1]["modifier"] = None
    out = claim_edit.add_modifier(claim, 2, "26")
    assert out["item"][1]["modifier"] == [
        {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "26"}]}]
    assert claim["item"][1]["modifier"] is None  # the request's Claim is left as it was
    validate_claim(out)


def test_remove_modifier_drops_empty_concepts():
    claim = make_claim(claim_item(1, "33289"), claim_item(2, "76000", modifiers=("XS", "26")))
    out = claim_edit.remove_modifier(claim, 2, "XS")
    assert claim_edit.item_modifiers(out["item"][1]) == ["26"]
    out2 = claim_edit.remove_modifier(out, 2, "26")
    assert "modifier" not in out2["item"][1]
    validate_claim(out2)


def test_set_units_keeps_net_and_total():
    claim = make_claim(claim_item(1, "20650", price=100.0), claim_item(2, "76000", units=4, price=40.0),
                       total=True)
    out = claim_edit.set_units(claim, 2, 3)
    assert out["item"][1]["quantity"]["value"] == 3
    assert out["item"][1]["net"]["value"] == 120
    assert out["total"]["value"] == 220
    validate_claim(out)


def test_unknown_sequence_is_an_error():
    with pytest.raises(claim_edit.ClaimEditError):
        claim_edit.remove_item(_claim(), 7)


# --- the copies share what an edit leaves unchanged: same JSON as a full deep copy ----------------
def _full_copy_reference(edit, claim, *args):
    """What every edit returned when it worked on a whole deep copy (orjson round trip)."""
    import orjson
    return orjson.loads(orjson.dumps(edit(claim_edit.clone(claim), *args)))


def _edit_cases():
    from tests.scenario_fixtures import NUMBERS, scenario
    claims = [s.claim for s in map(scenario, NUMBERS) if getattr(s, "claim", None)]
    with_details = _claim()
    with_details["item"][2]["detail"] = [
        {"sequence": 4, "productOrService": {"coding": [{"code": "A4550"}]},
         "subDetail": [{"sequence": 7, "productOrService": {"coding": [{"code": "A4551"}]}}]},
        {"sequence": 9, "productOrService": {"coding": [{"code": "A4649"}]}}]
    claims += [_claim(), with_details, make_claim(claim_item(1, "76000", price=42.61), total=True)]
    for c in claims:
        seqs = [i["sequence"] for i in c["item"]]
        for seq in seqs:
            yield claim_edit.remove_item, c, seq
            yield claim_edit.replace_code, c, seq, "77002", "display"
            yield claim_edit.add_modifier, c, seq, "XS"
            yield claim_edit.add_modifier, c, seq, "26"
            yield claim_edit.remove_modifier, c, seq, "26"
            yield claim_edit.set_units, c, seq, 2


def test_edits_equal_a_full_copy_and_never_mutate_the_input():
    import orjson
    cases = list(_edit_cases())
    assert len(cases) > 60
    for edit, claim, *args in cases:
        before = orjson.dumps(claim)
        out = edit(claim, *args)
        assert orjson.dumps(claim) == before, edit.__name__  # input untouched
        assert orjson.dumps(out) == orjson.dumps(_full_copy_reference(edit, claim, *args)), edit.__name__
        # what an edit changes is the result's own: the Claim, its item list, the edited item (for
        # remove_item: every item) down to its leaves are new objects, never the input's
        assert out is not claim and out.get("item") is not claim["item"]
        input_ids = _container_ids(claim)
        edited = out.get("item", []) if edit is claim_edit.remove_item else [
            i for i in out["item"] if i["sequence"] == args[0]]
        for item in edited:
            assert id(item) not in input_ids, edit.__name__
            if edit is not claim_edit.remove_item or item.get("detail"):
                assert not _container_ids(item) & input_ids, edit.__name__


def _container_ids(node) -> set[int]:
    """ids of every dict and list in a JSON value."""
    out = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            out.add(id(n))
            stack.extend(n.values())
        elif isinstance(n, list):
            out.add(id(n))
            stack.extend(n)
    return out

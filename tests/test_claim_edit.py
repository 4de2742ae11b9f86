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

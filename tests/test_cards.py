"""Card rendering and actions on hand-made Findings and Cases (no rules, no HTTP)."""
from __future__ import annotations

import itertools
from datetime import date

from hooks import cards
from hooks.config import resolve
from hooks.findings import KINDS, Citation, Fix, select
from hooks.model import Case, Line, Setting
from tests.cards_support import (claim_case, claim_item, finding, line_key,
                                 make_claim, remove_fix, validate_claim)

LABEL = "fluoro-cds claim review"


def _config(**over):
    return resolve({"fluoro-cds.configuration": over})


def _case():
    return claim_case(make_claim(claim_item(1, "29881"), claim_item(2, "76000")))


def _render(findings, case=None, **config):
    return cards.render(findings, case or _case(), _config(**config), service_label=LABEL)


def _apply_recommended(card):
    [rec] = [s for s in card["suggestions"] if s["isRecommended"]]
    return rec["actions"]


def test_remove_line_card_shape_and_update_action():
    [card] = _render([finding("ptp-modifier-allowed", fixes=[
        remove_fix(), Fix(action="add-modifier", line=line_key(2), modifier="XS", recommended=False)])])
    assert card["source"]["topic"] == {"system": cards.TOPIC_SYSTEM, "code": "ptp-modifier-allowed",
                                       "display": KINDS["ptp-modifier-allowed"].display}
    assert card["source"]["label"] == LABEL
    assert card["indicator"] == "warning"
    assert card["selectionBehavior"] == "at-most-one"
    assert len(card["summary"]) <= 140
    assert [(r["code"], r["display"]) for r in card["overrideReasons"]] == list(
        KINDS["ptp-modifier-allowed"].override_reasons)
    assert all(r["system"] == cards.OVERRIDE_SYSTEM for r in card["overrideReasons"])
    [rec, bypass] = card["suggestions"]
    assert rec["isRecommended"] is True and bypass["isRecommended"] is False
    assert rec["uuid"] != bypass["uuid"] != card["uuid"]
    [action] = rec["actions"]
    assert action["type"] == "update"
    claim = action["resource"]
    validate_claim(claim)
    assert [i["productOrService"]["coding"][0]["code"] for i in claim["item"]] == ["29881"]
    # the bypass suggestion appends the fix's modifier
    [upd] = bypass["actions"]
    mods = [c["code"] for m in upd["resource"]["item"][1]["modifier"] for c in m["coding"]]
    assert mods == ["XS"]
    validate_claim(upd["resource"])


def test_detail_cites_row_and_says_starter():
    [card] = _render([finding("ptp-bundled", fixes=[remove_fix()],
                              payment="76000 would not be paid separately")])
    d = card["detail"]
    for text in ("29881 / 76000", "modifier indicator 1",
                 "Standards of medical/surgical practice", "starter data set, not a CMS release",
                 "**Payment effect:** 76000 would not be paid separately"):
        assert text in d
    assert "overrideReasons" not in card  # only ptp-modifier-allowed offers overrides


def test_cms_release_citation_does_not_say_starter():
    cms = Citation(kind="ncci-ptp", text="CMS NCCI PTP practitioner 2024Q3: 33289 / 76000",
                   release="2024Q3", starter=False, details=(("modifier_indicator", "0"),))
    [card] = _render([finding("ptp-bundled", fixes=[remove_fix()], citations=[cms])])
    assert "starter" not in card["detail"]
    assert "modifier indicator: 0" in card["detail"]


def test_replace_code_and_add_modifier_and_units():
    claim = make_claim(claim_item(1, "20610"), claim_item(2, "76000", units=4))
    case = claim_case(claim)
    fs = [finding("use-guidance-code", fixes=[Fix(action="replace-code", line=line_key(2),
                                                     code="77002", label="Bill 77002 instead")]),
          finding("modifier-26", fixes=[Fix(action="add-modifier", line=line_key(2),
                                                modifier="26", label="Append 26")]),
          finding("mue-exceeded", fixes=[Fix(action="reduce-units", line=line_key(2), units=3,
                                                 label="Bill 3 units")])]
    out = {c["source"]["topic"]["code"]: c for c in _render(fs, case)}
    guide = _apply_recommended(out["use-guidance-code"])[0]["resource"]
    assert guide["item"][1]["productOrService"]["coding"][0]["code"] == "77002"
    assert guide["item"][1]["productOrService"]["coding"][0]["system"] == "http://www.ama-assn.org/go/cpt"
    m26 = _apply_recommended(out["modifier-26"])[0]["resource"]
    assert m26["item"][1]["modifier"] == [{"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                                       "code": "26"}]}]
    units = _apply_recommended(out["mue-exceeded"])[0]["resource"]
    assert units["item"][1]["quantity"]["value"] == 3
    for c in (guide, m26, units):
        validate_claim(c)
    assert claim["item"][1]["quantity"]["value"] == 4  # the case's Claim is never mutated


def test_documentation_missing_extension_and_link():
    f = finding("documentation-missing", severity="info", missing=["fluoroscopy-time", "radiation-dose"],
                fixes=[Fix(action="document", line=line_key(2),
                           elements=("fluoroscopy-time", "radiation-dose"),
                           label="Document fluoroscopy time and dose")], citations=[])
    [card] = _render([f], **{"documentation-url": "https://ehr.example.org/fluoro-doc"})
    assert card["extension"] == {"org.fluoro-cds.missing-documentation": ["fluoroscopy-time",
                                                                          "radiation-dose"],
                                 "fluoro-cds.missing-documentation": ["fluoroscopy-time",
                                                                      "radiation-dose"]}
    assert card["links"] == [{"label": "Complete the fluoroscopy documentation",
                              "url": "https://ehr.example.org/fluoro-doc", "type": "absolute",
                              "autoLaunchable": False}]
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert card["indicator"] == "info"
    assert "fluoroscopy time" in card["detail"] and "Document fluoroscopy time" in card["detail"]
    [nolink] = _render([f])
    assert "links" not in nolink


def test_documentation_missing_links_the_smart_app_with_a_small_app_context():
    """CDS Hooks 2.0 Link type smart: appContext (a string) names the claim line and what is missing."""
    from hooks.app_context import SMART_LAUNCH_KEY, parse_app_context
    f = finding("documentation-missing", missing=["indication", "radiation-dose"],
                lines=[line_key(2)], citations=[])
    config = _config()
    config[SMART_LAUNCH_KEY] = "https://cds.example.org/smart/launch"
    case = _case()
    [card] = cards.render([f], case, config, service_label=LABEL)
    [link] = card["links"]
    assert link["type"] == "smart" and link["url"] == "https://cds.example.org/smart/launch"
    assert link["autoLaunchable"] is False and isinstance(link["appContext"], str)
    assert len(link["appContext"]) < 200
    ctx = parse_app_context(link["appContext"])
    [line] = [ln for ln in case.lines if ln.key == line_key(2)]
    assert ctx.line == line.sequence and ctx.missing == ("indication", "radiation-dose")
    assert ctx.claim == (f"Claim/{case.claim['id']}" if case.claim.get("id") else None)
    # other card kinds get no link; an unreadable appContext reads as empty
    [other] = cards.render([finding("mue-exceeded", fixes=[remove_fix()])], case, config,
                           service_label=LABEL)
    assert "links" not in other
    assert parse_app_context('{"procedure": "Patient/x", "missing": ["x"]}') == type(ctx)()
    assert parse_app_context("not json").missing == ()


def test_select_orders_dedups_disables_and_cuts_once():
    """findings.select: the kinds' priority, then contract order, then lines; one per (code, lines)."""
    fs = [finding("mue-exceeded", fixes=[remove_fix()]),
          finding("modifier-misuse", fixes=[remove_fix()], lines=("Claim.item[sequence=3]",)),
          finding("ptp-bundled", fixes=[remove_fix()]),
          finding("ptp-bundled", fixes=[remove_fix()]),  # duplicate problem
          finding("modifier-26", fixes=[]),
          finding("duration-exceeded", fixes=[])]
    codes = [f.code for f in select(fs, _config())]
    # priorities: bundled = misuse 10 (bundled first in the contract), MUE 40, 26 50, duration 60
    assert codes == ["ptp-bundled", "modifier-misuse", "mue-exceeded", "modifier-26", "duration-exceeded"]
    assert [f.code for f in select(list(reversed(fs)), _config())] == codes
    assert [f.code for f in select(fs, _config(**{"max-cards": 1}))] == codes[:1]
    assert "ptp-bundled" not in [f.code for f in select(fs, _config(**{"ptp-bundled": False}))]
    # the cards keep that order: rendering neither sorts nor cuts again
    chosen = select(fs, _config(**{"max-cards": 2}))
    assert [c["source"]["topic"]["code"] for c in _render(chosen)] == codes[:2]


def test_same_request_same_cards_apart_from_uuids():
    fs = [finding("ptp-bundled", fixes=[remove_fix()]), finding("modifier-26")]
    counter = itertools.count()
    a = cards.render(fs, _case(), _config(), service_label=LABEL, new_id=lambda: "x")
    b = cards.render(fs, _case(), _config(), service_label=LABEL,
                     new_id=lambda: f"id-{next(counter)}")

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k != "uuid"}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v
    assert strip(a) == strip(b)
    all_uuids = [c["uuid"] for c in b] + [s["uuid"] for c in b for s in c.get("suggestions", [])]
    assert len(all_uuids) == len(set(all_uuids))


def test_long_summary_is_cut_and_critical_is_never_used():
    [card] = _render([finding("ptp-bundled", summary="Remove 76000 " * 30, severity="critical")])
    assert len(card["summary"]) <= 140
    assert card["indicator"] == "warning"


def _order_case():
    lines = (Line(key="ServiceRequest/sr-64483", code="64483", kind="service-request",
                  resource="ServiceRequest/sr-64483"),
             Line(key="ServiceRequest/sr-76000", code="76000", kind="service-request",
                  resource="ServiceRequest/sr-76000"))
    return Case(kind="order", setting=Setting(facility=False, ncci_setting="practitioner"),
                lines=lines, default_date=date(2024, 8, 14), evidence_checked=False)


def test_order_remove_is_delete_of_the_draft():
    f = finding("ptp-modifier-allowed", lines=["ServiceRequest/sr-76000"],
                fixes=[remove_fix(line="ServiceRequest/sr-76000"),
                       Fix(action="add-modifier", line="ServiceRequest/sr-76000", modifier="XS",
                           recommended=False)])
    [card] = cards.render([f], _order_case(), _config(), service_label=LABEL)
    # the modifier fix has no order action, so only the removal remains
    [rec] = card["suggestions"]
    assert rec["isRecommended"]
    assert rec["actions"] == [{"type": "delete", "description": "Remove 76000",
                               "resourceId": "ServiceRequest/sr-76000"}]


def test_order_replace_is_delete_plus_create_of_a_copy():
    draft = {"resourceType": "ServiceRequest", "id": "sr-76000", "status": "draft",
             "intent": "order", "subject": {"reference": "Patient/pat-1"},
             "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "76000"}]},
             "reasonCode": [{"text": "knee effusion"}]}
    f = finding("use-guidance-code", lines=["ServiceRequest/sr-76000"],
                fixes=[Fix(action="replace-code", line="ServiceRequest/sr-76000", code="77002",
                           label="Order 77002 instead")])
    [card] = cards.render([f], _order_case(), _config(), service_label=LABEL,
                          drafts={"ServiceRequest/sr-76000": draft}, new_id=lambda: "new-1")
    [delete, create] = card["suggestions"][0]["actions"]
    assert delete == {"type": "delete", "description": "Remove the 76000 draft order",
                      "resourceId": "ServiceRequest/sr-76000"}
    new = create["resource"]
    assert create["type"] == "create" and new["id"] == "new-1"
    assert new["code"]["coding"][0]["code"] == "77002"
    assert new["reasonCode"] == draft["reasonCode"] and new["subject"] == draft["subject"]
    assert draft["code"]["coding"][0]["code"] == "76000"  # not mutated
    from fhir.resources.R4B.servicerequest import ServiceRequest
    ServiceRequest.model_validate(new)


def test_encounter_without_claim_explains_without_actions():
    lines = (Line(key="Procedure/p-76000", code="76000", kind="procedure",
                  resource="Procedure/p-76000"),)
    case = Case(kind="encounter", setting=Setting(facility=True, ncci_setting="practitioner"),
                lines=lines, default_date=date(2024, 8, 14))
    f = finding("modifier-26", lines=["Procedure/p-76000"],
                fixes=[Fix(action="add-modifier", line="Procedure/p-76000", modifier="26",
                           label="Bill 76000 with modifier 26 (professional component)")])
    [card] = cards.render([f], case, _config(), service_label=LABEL)
    assert "suggestions" not in card and "selectionBehavior" not in card
    assert "Bill 76000 with modifier 26" in card["detail"]


def test_encounter_with_claim_updates_the_matching_claim_item():
    claim = make_claim(claim_item(1, "20650"), claim_item(2, "76000"))
    lines = (Line(key="Procedure/p-20650", code="20650", kind="procedure", resource="Procedure/p-20650"),
             Line(key="Procedure/p-76000", code="76000", kind="procedure",
                  resource="Procedure/p-76000", service_date=date(2024, 8, 14)))
    case = Case(kind="encounter", setting=Setting(facility=True, ncci_setting="practitioner"),
                lines=lines, default_date=date(2024, 8, 14), claim=claim)
    f = finding("modifier-26", lines=["Procedure/p-76000"],
                fixes=[Fix(action="add-modifier", line="Procedure/p-76000", modifier="26",
                           label="Append 26")])
    [card] = cards.render([f], case, _config(), service_label=LABEL)
    [action] = _apply_recommended(card)
    assert action["type"] == "update"
    assert action["resource"]["item"][1]["modifier"][0]["coding"][0]["code"] == "26"
    assert "modifier" not in action["resource"]["item"][0]
    validate_claim(action["resource"])


def test_new_uuid_is_a_unique_time_ordered_version_7_uuid():
    """Card ids are RFC 9562 version 7: unique, and the first 48 bits the time of making in
    milliseconds (the audit's card index stays append-mostly: hooks/cards.new_uuid)."""
    import time
    import uuid as uuidlib
    before = time.time_ns() // 1_000_000
    ids = [cards.new_uuid() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    for value in ids:
        parsed = uuidlib.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuidlib.RFC_4122 and str(parsed) == value
        assert before <= parsed.int >> 80 <= after
    stamps = [uuidlib.UUID(v).int >> 80 for v in ids]
    assert stamps == sorted(stamps)


def test_new_uuid_is_reseeded_in_a_forked_child():
    """A gunicorn worker (a forked child) must not draw the same uuids as its parent or siblings."""
    import os
    cards.new_uuid()  # the parent's generator is seeded
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next uuid and leave at once
        os.write(write_end, cards.new_uuid().encode())
        os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child) == 36 and child != cards.new_uuid()


def test_claim_without_id_gets_the_card_but_no_update_action():
    """An update is a PUT of Claim/[id]: without an id there is nothing a client could update, so
    the card explains the fix and offers no action (a malformed action is worse than none)."""
    claim = make_claim(claim_item(1, "29881"), claim_item(2, "76000"))
    claim.pop("id", None)
    [card] = _render([finding("ptp-modifier-allowed", fixes=[
        remove_fix(), Fix(action="add-modifier", line=line_key(2), recommended=False)])],
        case=claim_case(claim))
    assert card["source"]["topic"]["code"] == "ptp-modifier-allowed"
    assert "76000" in card["summary"] + card["detail"]
    assert not card.get("suggestions")
    assert "selectionBehavior" not in card
    claim["id"] = "   "
    [card] = _render([finding("ptp-modifier-allowed", fixes=[remove_fix()])], case=claim_case(claim))
    assert not card.get("suggestions")


def test_a_suggestion_with_several_edits_is_one_update_of_a_valid_claim():
    """place-of-service: set POS 21 and bill -26 in the same suggestion (Fix.then), one R4B-valid update."""
    claim = make_claim(claim_item(1, "20650"), claim_item(2, "76000", modifiers=("TC",)))
    case = claim_case(claim)
    fix = Fix(action="set-place-of-service", line=line_key(2), pos="21", label="Set POS 21 and bill 76000-26",
              then=(Fix(action="remove-modifier", line=line_key(2), modifier="TC"),
                    Fix(action="add-modifier", line=line_key(2), modifier="26")))
    [card] = _render([finding("place-of-service", fixes=[fix])], case)
    [action] = _apply_recommended(card)
    item = action["resource"]["item"][1]
    assert item["locationCodeableConcept"]["coding"] == [{
        "system": "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set",
        "code": "21"}]
    assert [c["code"] for m in item["modifier"] for c in m["coding"]] == ["26"]
    validate_claim(action["resource"])
    assert claim["item"][1]["modifier"][0]["coding"][0]["code"] == "TC"  # the case's Claim is untouched


def test_with_guidance_sibling_is_one_suggestion_on_claims_and_orders():
    """62322 + 76000 -> 62323 (siblings.tsv): the claim update replaces one line and removes the other;
    order-sign deletes both drafts and creates the sibling's."""
    claim = make_claim(claim_item(1, "62322"), claim_item(2, "76000"))
    fix = Fix(action="replace-code", line=line_key(1), code="62323", label="Bill 62323 instead of 62322 + 76000",
              then=(Fix(action="remove-line", line=line_key(2), label="Remove 76000"),))
    [card] = _render([finding("use-guidance-code", fixes=[fix])], claim_case(claim))
    [action] = _apply_recommended(card)
    assert [i["productOrService"]["coding"][0]["code"] for i in action["resource"]["item"]] == ["62323"]
    validate_claim(action["resource"])
    drafts = {f"ServiceRequest/sr-{c}": {"resourceType": "ServiceRequest", "id": f"sr-{c}", "status": "draft",
                                         "intent": "order", "subject": {"reference": "Patient/pat-1"},
                                         "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": c}]}}
              for c in ("62322", "76000")}
    lines = tuple(Line(key=k, code=k[-5:], kind="service-request", resource=k) for k in drafts)
    case = Case(kind="order", setting=Setting(facility=False, ncci_setting="practitioner"), lines=lines,
                default_date=date(2024, 8, 14), evidence_checked=False)
    fix = Fix(action="replace-code", line="ServiceRequest/sr-62322", code="62323", label="Order 62323",
              then=(Fix(action="remove-line", line="ServiceRequest/sr-76000", label="Remove 76000"),))
    [card] = cards.render([finding("use-guidance-code", lines=["ServiceRequest/sr-76000"], fixes=[fix])], case,
                          _config(), service_label=LABEL, drafts=drafts, new_id=lambda: "new-1")
    actions = card["suggestions"][0]["actions"]
    assert [(a["type"], a.get("resourceId")) for a in actions] == [
        ("delete", "ServiceRequest/sr-62322"), ("create", None), ("delete", "ServiceRequest/sr-76000")]
    assert actions[1]["resource"]["code"]["coding"][0]["code"] == "62323"

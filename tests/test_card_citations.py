"""hooks.cards.card_citations reads back the Source block render_card writes (the feedback report
keys cards by these lines), on hand-made findings; tests/test_report.py checks it over HTTP."""
from __future__ import annotations

from hooks import cards
from hooks.findings import Citation
from tests.cards_support import claim_case, claim_item, finding, make_claim, remove_fix
from hooks.config import resolve


def _render(findings):
    case = claim_case(make_claim(claim_item(1, "29881"), claim_item(2, "76000")))
    return cards.render(findings, case, resolve(None), service_label="t")


def test_each_citation_is_one_line_with_its_row_fields():
    ptp = Citation(kind="ncci-ptp", text="CMS NCCI PTP practitioner 2024Q3: 33289 / 76000",
                   release="2024Q3", details=(("modifier_indicator", "0"),))
    policy = Citation(kind="policy", text="NCCI Policy Manual ch. XIII sec. E.1: fluoroscopy integral",
                      starter=True)
    [card] = _render([finding("ptp-bundled", fixes=[remove_fix()], citations=[ptp, policy])])
    assert cards.card_citations(card) == (
        "CMS NCCI PTP practitioner 2024Q3: 33289 / 76000; modifier indicator: 0",
        "NCCI Policy Manual ch. XIII sec. E.1: fluoroscopy integral")


def test_a_card_without_a_source_block_cites_nothing():
    [card] = _render([finding("modifier-26", citations=[])])
    assert cards.card_citations(card) == ()
    assert cards.card_citations({"detail": None}) == () and cards.card_citations({}) == ()


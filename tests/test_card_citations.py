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



def test_render_hands_the_audit_what_card_citations_reads_back():
    """RenderedCards.audit, which the service's audit takes instead of parsing each card's
    markdown (service/cds_hooks.audit_ids), is each card's uuid, topic code and card_citations,
    for every finding kind, with the NCCI program's citation, a starter notice, a citation text
    with a line break, and none."""
    from hooks.findings import KINDS, PROGRAM_CITATION, PROGRAM_CITATION_PREFIX
    from service.cds_hooks import audit_ids

    program = Citation(kind=PROGRAM_CITATION, text=f"{PROGRAM_CITATION_PREFIX} Medicare NCCI, PTP 2024Q3")
    policy = Citation(kind="policy", text="NCCI Policy Manual ch. IX\n- sec. B", starter=True)
    ptp = Citation(kind="ncci-ptp", text="CMS NCCI PTP 2024Q3: 29881 / 76000", release="2024Q3",
                   details=(("modifier_indicator", "1"),))
    kinds = sorted(KINDS)
    findings = [finding(code, citations=[(), [ptp, program], [policy, ptp], [program]][i % 4])
                for i, code in enumerate(kinds)]
    rendered = _render(findings)
    assert isinstance(rendered, list) and len(rendered.audit) == len(rendered) == len(kinds)
    for card, (same, uuid, topic, citations) in zip(rendered, rendered.audit):
        assert same is card
        assert (uuid, topic) == (card["uuid"], card["source"]["topic"]["code"])
        assert citations == cards.card_citations(card)
    assert any(a[3] for a in rendered.audit) and any(not a[3] for a in rendered.audit)
    plain = list(rendered) + [{"uuid": "u-1", "source": {"topic": {"code": "x"}}}]
    rendered.append(plain[-1])  # a card added later (the could-not-be-checked card): read from its JSON
    assert audit_ids(rendered) == audit_ids(plain)
    assert audit_ids(rendered)[1] == (*kinds, "x")

"""Render findings as CDS Hooks 2.0 cards (docs/contract.md#card-topics; docs/cards.md).

One card per finding, in the order :func:`hooks.rules.evaluate` gives them (ordered, deduplicated
and cut to ``max-cards`` once, by :func:`hooks.findings.select`). A card's topic display, override
reasons, missing-documentation list and documentation link come from the finding's declaration
(:data:`hooks.findings.KINDS`), like the wording the rules put in the finding. Every card cites its
source in ``detail`` and says so when the source is the starter data set, not a CMS release.
"""
from __future__ import annotations

import os
import random
import time
from functools import lru_cache
from typing import Callable

from .actions import actions_for
from .app_context import SMART_LAUNCH_KEY, documentation_app_context
from .config import EXTENSION_PREFIX
from .findings import KINDS, PROGRAM_CITATION_PREFIX, Citation, Finding, Fix, clip_summary
from .model import Case

_getrandbits: Callable[[int], int] | None = None  # of this process's generator (None: not seeded yet)


def new_uuid() -> str:
    """A time-ordered UUID (version 7, RFC 9562 section 5.7) for a card or suggestion: the Unix
    time in milliseconds in its first 48 bits, then 74 random bits.

    Time-ordered because the service stores and indexes every card's id (the audit's
    ``card_shown.card_uuid``, service/state.py): random (version 4) ids each land on a random page
    of that index, so the audit writer rewrote a page per card and the SQLite write-ahead log grew
    by about one page per card (in process, 60,000 audit records of two cards: 48 us of CPU per
    record, 19 us of it system time, against 30 us and 3 us with these ids, the same as without
    the index). The time the id shows is the time the card was made, which the client knows.

    The random bits come from a per-process Mersenne Twister seeded from os.urandom (reseeded in
    a forked child, see ``_reseed``), not from os.urandom on every call: uuid4() releases the GIL
    in getrandom(), and under gunicorn's threaded workers each release is a GIL hand-off that
    showed up as the top wait in py-spy profiles. Card ids need uniqueness, not unpredictability.
    """
    global _getrandbits
    if _getrandbits is None:
        _getrandbits = random.Random(os.urandom(32)).getrandbits
    return _uuid7_text(time.time_ns() // 1_000_000, _getrandbits(74))


def _reseed() -> None:
    """Forget the generator (in a forked child, so that it draws its own seed)."""
    global _getrandbits
    _getrandbits = None


os.register_at_fork(after_in_child=_reseed)


def _uuid7_text(unix_ms: int, rand: int) -> str:
    """The text of the version 7 UUID of `unix_ms` and 74 random bits (RFC 9562 5.7: unix_ts_ms
    in bits 127-80, version 7 in 79-76, rand_a (12 bits) in 75-64, variant 10 in 63-62, rand_b
    (62 bits) in 61-0)."""
    h = "%032x" % (((unix_ms & _MS48) << 80) | _V7 | ((rand >> 62 & 0xFFF) << 64) | _VARIANT
                   | (rand & _RAND_B))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_MS48 = (1 << 48) - 1
_V7 = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_B = (1 << 62) - 1


TOPIC_SYSTEM = "https://fluoro-cds.org/CodeSystem/finding"
OVERRIDE_SYSTEM = "https://fluoro-cds.org/CodeSystem/override-reason"
MISSING_DOC_EXTENSION = EXTENSION_PREFIX + "missing-documentation"
LEGACY_MISSING_DOC_EXTENSION = "fluoro-cds.missing-documentation"  # older name, still sent
SOURCE_HEADING = "**Source**\n\n"  # starts the citations block of a card's detail
_PROGRAM_BULLET = "- " + PROGRAM_CITATION_PREFIX  # hooks.findings: the program citation's bullet
STARTER_NOTICE = "starter data set, not a CMS release"

_DETAIL_LABELS = {
    "column1": "column 1", "column_1": "column 1", "column2": "column 2", "column_2": "column 2",
    "modifier_indicator": "modifier indicator", "modifier-indicator": "modifier indicator",
    "mue_units": "MUE units", "mai": "MAI",
}


@lru_cache(maxsize=4096)
def _citation_md(c: Citation) -> str:
    """One bullet: the citation's line, plus the row fields its text does not already show.

    Cached: a Citation is an immutable value and the same rows are cited again and again."""
    text = c.text.strip()
    line = f"- {text}"
    if c.release and c.release not in text:
        line += f" (release {c.release})"
    extra = []
    for key, value in c.details:
        if value in (None, ""):
            continue
        label, value = _DETAIL_LABELS.get(key, key.replace("_", " ")), str(value)
        shown = (f"{label} {value}" in line or f"{label}: {value}" in line
                 or (len(value) >= 4 and value in line))
        if not shown:
            extra.append(f"{label}: {value}")
    if extra:
        line += "; " + "; ".join(extra)
    return line


@lru_cache(maxsize=4096)
def _source(citations: tuple[Citation, ...]) -> tuple[str, tuple[str, ...]]:
    """The **Source** block of a card (one bullet per citation, and the starter-set notice) and
    the citations the audit keeps of it: its bullets as :func:`card_citations` reads them back.

    Cached like the bullets: a finding's citations are a tuple of immutable values."""
    bullets = "\n".join([_citation_md(c) for c in citations])
    source = SOURCE_HEADING + bullets
    if any(c.starter for c in citations):
        source += (f"\n\n*Cited from the fluoro-cds {STARTER_NOTICE}: import the CMS NCCI "
                   "tables for authoritative edits.*")
    return source, _bullet_citations(bullets.split("\n\n", 1)[0])  # where card_citations stops


def _finding_source(f: Finding) -> tuple[str, tuple[str, ...]] | None:
    """:func:`_source` of the finding's citations, None when it cites nothing."""
    citations = f.citations
    if not citations:
        return None
    return _source(citations if type(citations) is tuple else tuple(citations))


def detail_markdown(f: Finding, *, actionable: bool, fixes: tuple[Fix, ...],
                    source: tuple[str, tuple[str, ...]] | None = None) -> str:
    """Reason, missing elements, citations, payment effect, and (without actions) what to do
    (`source`: the finding's :func:`_finding_source`, when the caller has it already)."""
    blocks = [f.reason.strip()]
    if f.missing:
        kind = KINDS[f.code]
        items = "\n".join(f"- {kind.wording.get('missing.' + m, m)}" for m in f.missing)
        blocks.append(f"{kind.say('missing-heading')}\n\n{items}")
    if source is None:
        source = _finding_source(f)
    if source is not None:
        blocks.append(source[0])
    if f.payment:
        blocks.append(f"**Payment effect:** {f.payment}")
    if not actionable and fixes:
        todo = "\n".join(f"- {fx.label}" for fx in fixes if fx.label)
        if todo:
            blocks.append(f"**What to do**\n\n{todo}")
    return "\n\n".join([b for b in blocks if b])


def _suggestions(f: Finding, case: Case, drafts: dict | None,
                 new_id: Callable[[], str]) -> list[dict]:
    out: list[dict] = []
    seen: set[tuple] = set()
    recommended_given = False
    for fix in f.fixes:
        actions = actions_for(fix, case, drafts=drafts, new_id=new_id)
        if not actions:
            continue
        signature = tuple([(a["type"], a.get("resourceId"), a.get("description")) for a in actions])
        if signature in seen:
            continue
        seen.add(signature)
        recommended = bool(fix.recommended) and not recommended_given
        recommended_given |= recommended
        out.append({"label": fix.label or actions[0]["description"], "uuid": new_id(),
                    "isRecommended": recommended, "actions": actions})
    return out


def render_card(f: Finding, case: Case, config: dict, *, service_label: str,
                drafts: dict | None = None,
                new_id: Callable[[], str] = new_uuid) -> dict:
    """One finding as one card."""
    return _render_card(f, case, config, service_label, drafts, new_id)[0]


def _render_card(f: Finding, case: Case, config: dict, service_label: str, drafts: dict | None,
                 new_id: Callable[[], str]) -> tuple[dict, tuple[str, ...]]:
    """The card of :func:`render_card` and the citations the audit keeps of it."""
    indicator = f.severity if f.severity in ("info", "warning") else "warning"
    suggestions = _suggestions(f, case, drafts, new_id)
    source = _finding_source(f)
    card: dict = {
        "uuid": new_id(),
        "summary": clip_summary(f.summary),
        "indicator": indicator,
        "detail": detail_markdown(f, actionable=bool(suggestions), fixes=f.fixes, source=source),
        "source": {"label": service_label,
                   "topic": {"system": TOPIC_SYSTEM, "code": f.code,
                             "display": KINDS[f.code].display}},
    }
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    if f.override_reasons:
        card["overrideReasons"] = [{"system": OVERRIDE_SYSTEM, "code": c, "display": d}
                                   for c, d in f.override_reasons]
    if f.missing:
        card["extension"] = {MISSING_DOC_EXTENSION: list(f.missing),
                             LEGACY_MISSING_DOC_EXTENSION: list(f.missing)}
        link = KINDS[f.code].wording.get("link")
        links = []
        launch = config.get(SMART_LAUNCH_KEY)
        smart = KINDS[f.code].wording.get("smart-link")
        if launch and smart:
            # the SMART documentation app (service/smart/): CDS Hooks 2.0 Link type "smart",
            # appContext naming the 76000 Procedure or claim line and the missing elements
            links.append({"label": smart, "url": launch, "type": "smart", "autoLaunchable": False,
                          "appContext": documentation_app_context(f, case)})
        url = config.get("documentation-url") or ""
        if url and link:
            # CDS Hooks 2.0 Link.autoLaunchable: the documentation app is opened by the user
            links.append({"label": link, "url": url, "type": "absolute", "autoLaunchable": False})
        if links:
            card["links"] = links
    return card, (source[1] if source is not None else ())


class RenderedCards(list):
    """The cards :func:`render` made (a plain JSON array to every serializer) and, in ``audit``,
    what the audit keeps of each as it was rendered: ``(card, uuid, topic code, citations)``,
    the citations as :func:`card_citations` reads them back from the card. The service's audit
    takes them from here instead of parsing each card's markdown again
    (service/cds_hooks.audit_ids); a card added to the list later has no entry."""

    __slots__ = ("audit",)

    def __init__(self, cards: list[dict], audit: tuple[tuple[dict, str, str, tuple[str, ...]], ...]):
        super().__init__(cards)
        self.audit = audit


def render(findings: list[Finding], case: Case, config: dict, *, service_label: str,
           drafts: dict[str, dict] | None = None,
           new_id: Callable[[], str] = new_uuid) -> RenderedCards:
    """Cards for `findings` (as :func:`hooks.rules.evaluate` selected and ordered them), one each.

    `drafts` maps "Type/id" to the draft order resources of an order-sign request (used to build
    the ``create`` action of a replacement order).
    """
    cards, audit = [], []
    for f in findings:
        card, citations = _render_card(f, case, config, service_label, drafts, new_id)
        cards.append(card)
        audit.append((card, card["uuid"], f.code, citations))
    return RenderedCards(cards, tuple(audit))


def card_citations(card: dict) -> tuple[str, ...]:
    """The citations a rendered card's **Source** block lists (one line each, as `_citation_md`
    wrote them without the bullet): the NCCI rows and policy entries behind the card, which the
    audit keeps per card for the feedback report (not the NCCI program line every card carries).
    () when the card has no Source block."""
    detail = card.get("detail")
    if not isinstance(detail, str):
        return ()
    start = detail.find(SOURCE_HEADING)
    if start < 0:
        return ()
    block = detail[start + len(SOURCE_HEADING):]
    end = block.find("\n\n")
    if end >= 0:
        block = block[:end]
    return _bullet_citations(block)


def _bullet_citations(block: str) -> tuple[str, ...]:
    """The lines of a Source block's bullets without the bullet, the NCCI program's left out."""
    return tuple([line[2:] for line in block.split("\n")
                  if line.startswith("- ") and not line.startswith(_PROGRAM_BULLET)])

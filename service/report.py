"""The feedback report: what clinicians and coders did with the cards, per finding and per source.

For each finding code (``source.topic.code``) and, within it, each NCCI row or policy entry the
cards cited (hooks.cards.card_citations, kept per card in the ``card_shown`` table): cards shown,
feedback items accepted and overridden, and the override reasons with their counts. Feedback is
joined to the cards shown by card uuid; feedback for a card the store never showed (older than the
retention, or sent by another deployment) is counted as unmatched. Built with a few aggregate
queries, so it reads the same from SQLite and PostgreSQL. Served by `fluoro-cds report feedback`
(JSON or HTML) and by ``GET /admin/report`` when an admin token is configured.
"""
from __future__ import annotations

import html
from collections import defaultdict
from datetime import date, datetime, timezone
from typing import Any, Sequence

from .state import StateStore, utc_now

OUTCOMES = ("accepted", "overridden")


def parse_since(value: str | None) -> str:
    """A --since / ?since= value (YYYY-MM-DD or an ISO 8601 UTC time) as the text the tables
    compare with; '' for none. ValueError when it is neither."""
    if not value:
        return ""
    value = value.strip()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:  # the tables hold UTC
        parsed = parsed.astimezone(timezone.utc)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S")


def _reasons(counts: dict[tuple[str | None, str | None], int]) -> list[dict]:
    return [{"system": s, "code": c, "count": n}
            for (s, c), n in sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))]


def _tally() -> dict:
    return {"cards_shown": 0, "accepted": 0, "overridden": 0, "reasons": defaultdict(int)}


def _finish(t: dict) -> dict:
    answered = t["accepted"] + t["overridden"]
    return {"cards_shown": t["cards_shown"], "accepted": t["accepted"],
            "overridden": t["overridden"],
            "override_rate": round(t["overridden"] / answered, 4) if answered else None,
            "override_reasons": _reasons(t["reasons"])}


def feedback_report(store: StateStore, since: str = "") -> dict[str, Any]:
    """The report as a JSON-ready dict (findings by cards shown, most first)."""
    store.flush()
    by_code: dict[str, dict] = defaultdict(_tally)
    by_cite: dict[tuple[str, str], dict] = defaultdict(_tally)
    _, rows = store.query("SELECT topic, count(DISTINCT card_uuid) FROM card_shown WHERE at >= ? "
                          "GROUP BY topic", (since,))
    for topic, n in rows:
        by_code[topic]["cards_shown"] = int(n)
    _, rows = store.query("SELECT topic, citation, count(DISTINCT card_uuid) FROM card_shown "
                          "WHERE at >= ? GROUP BY topic, citation", (since,))
    for topic, citation, n in rows:
        by_cite[(topic, citation)]["cards_shown"] = int(n)
    # feedback received since, for any card the store showed (the card may predate `since`)
    joined = ("FROM feedback f JOIN card_shown c ON c.card_uuid = f.card_uuid "
              "WHERE f.received_at >= ?")
    _, rows = store.query("SELECT c.topic, f.outcome, f.override_reason_system, "
                          "f.override_reason_code, count(DISTINCT f.id) " + joined +
                          " GROUP BY c.topic, f.outcome, f.override_reason_system, "
                          "f.override_reason_code", (since,))
    for topic, outcome, system, code, n in rows:
        _count(by_code[topic], outcome, system, code, int(n))
    _, rows = store.query("SELECT c.topic, c.citation, f.outcome, f.override_reason_system, "
                          "f.override_reason_code, count(DISTINCT f.id) " + joined +
                          " GROUP BY c.topic, c.citation, f.outcome, f.override_reason_system, "
                          "f.override_reason_code", (since,))
    for topic, citation, outcome, system, code, n in rows:
        _count(by_cite[(topic, citation)], outcome, system, code, int(n))
    _, rows = store.query("SELECT count(*), sum(CASE WHEN EXISTS (SELECT 1 FROM card_shown c "
                          "WHERE c.card_uuid = f.card_uuid) THEN 0 ELSE 1 END) "
                          "FROM feedback f WHERE f.received_at >= ?", (since,))
    feedback_total, unmatched = int(rows[0][0] or 0), int(rows[0][1] or 0)

    findings = []
    for code, tally in by_code.items():
        entry = {"code": code, **_finish(tally)}
        entry["citations"] = sorted(
            ({"citation": cite or None, **_finish(t)} for (c, cite), t in by_cite.items() if c == code),
            key=lambda e: (-e["cards_shown"], -(e["accepted"] + e["overridden"]), e["citation"] or ""))
        findings.append(entry)
    findings.sort(key=lambda e: (-e["cards_shown"], -(e["accepted"] + e["overridden"]), e["code"]))
    return {
        "generated_at": utc_now(),
        "since": since or None,
        "totals": {"cards_shown": sum(f["cards_shown"] for f in findings),
                   "feedback": feedback_total,
                   "accepted": sum(f["accepted"] for f in findings),
                   "overridden": sum(f["overridden"] for f in findings),
                   "unmatched_feedback": unmatched},
        "findings": findings,
    }


def _count(t: dict, outcome: str, system: str | None, code: str | None, n: int) -> None:
    if outcome in OUTCOMES:
        t[outcome] += n
    if outcome == "overridden":
        t["reasons"][(system, code)] += n


# -- HTML ------------------------------------------------------------------------------------
_COLORS = {"accepted": "#2e7d32", "overridden": "#c62828", "none": "#b0bec5"}
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1f2933;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 6px;border-bottom:1px solid #d9e2ec;padding-bottom:4px}
.muted{color:#627d98;font-size:13px} table{border-collapse:collapse;width:100%;margin:8px 0 16px;font-size:13px}
th,td{border-bottom:1px solid #e4e7eb;padding:5px 8px;text-align:left;vertical-align:top} th{background:#f0f4f8}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.kpis{display:flex;gap:16px;margin:14px 0} .kpi{background:#f0f4f8;border-radius:6px;padding:10px 14px}
.kpi b{display:block;font-size:22px} .legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
code{font-size:12px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def bar_chart(rows: Sequence[tuple[str, Sequence[float], str]], series: Sequence[tuple[str, str]], *,
              aria: str, empty: str, width: int = 760, label_w: int = 190) -> str:
    """Horizontal stacked bars as inline SVG: per row (label, one value per series, the text
    written after the bar); `series` gives each segment's (name, colour). Values are drawn to one
    scale (the longest bar fills the width); the one chart helper of the HTML reports."""
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    bar_h, gap = 18, 8
    top = max(max(sum(max(v, 0) for v in values) for _, values, _ in rows), 1)
    scale = (width - label_w - 90) / top
    height = len(rows) * (bar_h + gap) + gap
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="{_e(aria)}">']
    for i, (label, values, text) in enumerate(rows):
        y = gap + i * (bar_h + gap)
        parts.append(f'<text x="0" y="{y + 13}" font-size="12">{_e(label)}</text>')
        x = label_w
        for value, (what, color) in zip(values, series):
            w = max(value, 0) * scale
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                             f'fill="{color}"><title>{_e(label)}: {_e(_num(value))} {_e(what)}</title></rect>')
                x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 13}" font-size="12">{_e(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:,.2f}"


def _bar_chart(rows: list[tuple[str, int, int, int]], width: int = 760) -> str:
    """Cards shown per finding, stacked accepted / overridden / no feedback."""
    return bar_chart([(label, (a, o, max(s - a - o, 0)), str(s)) for label, s, a, o in rows],
                     (("accepted", _COLORS["accepted"]), ("overridden", _COLORS["overridden"]),
                      ("no feedback", _COLORS["none"])),
                     aria="cards shown and their outcomes per finding",
                     empty="No cards recorded in this period.", width=width)


def _reason_text(reasons: list[dict]) -> str:
    if not reasons:
        return '<span class="muted">-</span>'
    return "<br>".join(f"<code>{_e(r['code'] or '(no code)')}</code> {r['count']}" for r in reasons)


def page_head(title: str) -> str:
    """The start of a self-contained report page up to its <h1>: a Content-Security-Policy that
    allows nothing from the network (no script, no fetch; inline CSS and data: images only)."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            'style-src \'unsafe-inline\'; img-src data:">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><h1>{_e(title)}</h1>")


def render_html(report: dict[str, Any]) -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no script, no network)."""
    t = report["totals"]
    findings = report["findings"]
    chart = _bar_chart([(f["code"], f["cards_shown"], f["accepted"], f["overridden"])
                        for f in findings])
    out = [page_head("fluoro-cds feedback report"),
           f'<p class="muted">Cards shown and feedback received since '
           f'{_e(report["since"] or "the start of the records")}; generated '
           f'{_e(report["generated_at"])}.</p>',
           '<div class="kpis">']
    for label, value in (("cards shown", t["cards_shown"]), ("feedback items", t["feedback"]),
                         ("accepted", t["accepted"]), ("overridden", t["overridden"]),
                         ("unmatched feedback", t["unmatched_feedback"])):
        out.append(f'<div class="kpi"><b>{value}</b>{_e(label)}</div>')
    out.append("</div><h2>Cards per finding</h2>")
    out.append('<p class="legend">' + "".join(
        f'<span><i style="background:{c}"></i>{_e(n)}</span>'
        for n, c in (("accepted", _COLORS["accepted"]), ("overridden", _COLORS["overridden"]),
                     ("no feedback", _COLORS["none"]))) + "</p>")
    out.append(chart)
    out.append("<h2>Findings</h2><table><tr><th>finding</th><th>cards shown</th><th>accepted</th>"
               "<th>overridden</th><th>override rate</th><th>override reasons</th></tr>")
    for f in findings:
        rate = "-" if f["override_rate"] is None else f"{f['override_rate'] * 100:.0f}%"
        out.append(f'<tr><td><code>{_e(f["code"])}</code></td><td class="n">{f["cards_shown"]}</td>'
                   f'<td class="n">{f["accepted"]}</td><td class="n">{f["overridden"]}</td>'
                   f'<td class="n">{rate}</td><td>{_reason_text(f["override_reasons"])}</td></tr>')
    out.append("</table>")
    for f in findings:
        out.append(f'<h2>Sources of <code>{_e(f["code"])}</code> cards</h2><table><tr>'
                   "<th>NCCI row or policy entry cited</th><th>cards shown</th><th>accepted</th>"
                   "<th>overridden</th><th>override reasons</th></tr>")
        for c in f["citations"]:
            out.append(f'<tr><td>{_e(c["citation"] or "(no citation)")}</td>'
                       f'<td class="n">{c["cards_shown"]}</td><td class="n">{c["accepted"]}</td>'
                       f'<td class="n">{c["overridden"]}</td>'
                       f'<td>{_reason_text(c["override_reasons"])}</td></tr>')
        out.append("</table>")
    out.append('<p class="muted">Counts come from the service\'s state database (table '
               "card_shown joined to feedback by card uuid). A card can receive several feedback "
               "items.</p></body></html>")
    return "\n".join(out)


# -- command line ----------------------------------------------------------------------------
def _command(args) -> int:
    """`fluoro-cds report feedback`: the report on stdout (or --out); errors: stderr, exit 2."""
    import sys

    from .jsonio import dumps
    from .settings import Settings, SettingsError
    from .state import StateError

    try:
        since = parse_since(args.since)
    except ValueError:
        print("fluoro-cds report feedback: --since must be a date (YYYY-MM-DD) or an ISO 8601 "
              "time", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        report = feedback_report(StateStore(settings.state_db_path), since)
    except SettingsError as exc:
        print(f"fluoro-cds: configuration error: {exc}", file=sys.stderr)
        return 2
    except StateError as exc:
        print(f"fluoro-cds: state database error: {exc}", file=sys.stderr)
        return 2
    text = render_html(report) if args.format == "html" else dumps(report).decode() + "\n"
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"fluoro-cds report feedback: cannot write --out ({exc.strerror})", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0


def add_command(sub) -> None:
    p = sub.add_parser("report", help="reports from the state database")
    report_sub = p.add_subparsers(dest="report_command", required=True)
    fb = report_sub.add_parser("feedback", help="cards shown, accepted and overridden, per finding "
                                                "and per NCCI row or policy entry")
    fb.add_argument("--since", help="only cards and feedback from this date (YYYY-MM-DD) or time on")
    fb.add_argument("--format", choices=("json", "html"), default="json",
                    help="json (for tooling) or html (a self-contained page with charts); default json")
    fb.add_argument("--out", help="write to this file instead of stdout")
    fb.set_defaults(func=_command)

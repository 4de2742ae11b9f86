"""What a batch run adds up to: :class:`Tally` (counts and money, merged across workers and Spark
partitions), summary.json and report.html.

A tally is built from the findings table's rows (service/findings_table.py), so the local engine
and the Spark job count the same way. Findings are counted once each (their row with
``line_index`` 0); money sums every row (the payment effect sits on the row of the line the fix
edits). claims in = reviewed + errors, always: every record read is one or the other.
report.html is one self-contained page (inline CSS and SVG, no script, nothing from the network),
drawn with the feedback report's chart helper (service/report.py ``bar_chart``).
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from . import findings_table as T
from .report import _e, bar_chart, page_head

TOP = 15  # bars per breakdown chart (the rest summed as "other")


class Tally:
    """Counts of one part of a run (a chunk, a worker, a partition); :meth:`merge` adds another."""

    __slots__ = ("reviewed", "errors", "with_findings", "corrected", "findings", "by_primary",
                 "by_setting", "by_provider", "effect", "billed")

    def __init__(self) -> None:
        self.reviewed = self.errors = self.with_findings = self.corrected = 0
        self.findings: Counter[str] = Counter()
        self.by_primary: Counter[str] = Counter()
        self.by_setting: Counter[str] = Counter()
        self.by_provider: Counter[str] = Counter()
        self.effect: Counter[str] = Counter()  # USD by finding code
        self.billed: Counter[str] = Counter()

    @property
    def claims_in(self) -> int:
        return self.reviewed + self.errors

    def add_claim(self, rows: Sequence[tuple], corrected: bool) -> None:
        """One reviewed claim, with its table rows."""
        self.reviewed += 1
        self.corrected += corrected
        if not rows:
            return
        self.with_findings += 1
        self.add_rows(rows)

    def retract(self, rows: Sequence[tuple], corrected: bool) -> None:
        """Take back one reviewed claim counted with :meth:`add_claim` (its outputs replaced: a claim
        amended by the edits across claims)."""
        self.reviewed -= 1
        self.corrected -= corrected
        if rows:
            self.with_findings -= 1
            self.add_rows(rows, -1)

    def add_rows(self, rows: Sequence[tuple], sign: int = 1) -> None:
        """Table rows counted by finding, breakdown and money (a claim's, or a finding's across
        claims); `sign` -1 takes them back."""
        for row in rows:
            code = row[T.FINDING]
            if row[T.LINE_INDEX] == 0:
                self.findings[code] += sign
                self.by_primary[row[T.PRIMARY] or "(none)"] += sign
                self.by_setting[row[T.SETTING] or "(unknown)"] += sign
                self.by_provider[row[T.RENDERING] or "(not named)"] += sign
            if row[T.EFFECT] is not None:
                self.effect[code] += sign * row[T.EFFECT]
            if row[T.BILLED] is not None:
                self.billed[code] += sign * row[T.BILLED]

    def merge(self, other: "Tally") -> "Tally":
        for name in ("reviewed", "errors", "with_findings", "corrected"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in ("findings", "by_primary", "by_setting", "by_provider", "effect", "billed"):
            counter = getattr(self, name)
            counter.update(getattr(other, name))
            for key in [k for k, v in counter.items() if v == 0 and name not in ("effect", "billed")]:
                del counter[key]  # a count taken back to nothing (Tally.retract) is no entry
        for counter in (self.effect, self.billed):  # nor the money of a finding code no longer counted
            for key in [k for k, v in counter.items() if k not in self.findings and abs(v) < 0.005]:
                del counter[key]
        return self

    def __reduce__(self):  # compact pickling between processes
        return (_rebuild, (tuple(getattr(self, n) for n in self.__slots__),))


def _rebuild(values: tuple) -> Tally:
    t = Tally()
    for name, value in zip(Tally.__slots__, values):
        setattr(t, name, value)
    return t


def merged(tallies: Iterable[Tally]) -> Tally:
    out = Tally()
    for t in tallies:
        out.merge(t)
    return out


def _money(counter: Counter) -> dict[str, float]:
    return {k: round(v, 2) for k, v in sorted(counter.items())}


def summary(tally: Tally, *, run: dict, seconds: float | None, outputs: dict[str, str],
            duplicates: dict[str, int] | None = None) -> dict:
    """summary.json: the run, the counts (claims in = reviewed + errors), the repeated "Type/id"s
    (service.bulk_input.DUPLICATE_COUNTS), findings and money by finding code, and the breakdowns
    the report draws."""
    from .bulk_input import DUPLICATE_COUNTS

    return {
        **run,
        "claims_in": tally.claims_in, "reviewed": tally.reviewed, "errors": tally.errors,
        "duplicates": {k: int((duplicates or {}).get(k, 0)) for k in DUPLICATE_COUNTS},
        "claims_with_findings": tally.with_findings, "claims_corrected": tally.corrected,
        "findings": dict(sorted(tally.findings.items())),
        "money": {"payment_effect": _money(tally.effect), "billed": _money(tally.billed),
                  "payment_effect_total": round(sum(tally.effect.values()), 2)},
        "by_primary_procedure": dict(tally.by_primary.most_common()),
        "by_setting": dict(tally.by_setting.most_common()),
        "by_rendering_provider": dict(tally.by_provider.most_common()),
        "seconds": round(seconds, 3) if seconds is not None else None,
        "claims_per_second": round(tally.claims_in / seconds, 1) if seconds else None,
        "outputs": outputs,
    }


_BLUE, _ORANGE, _RED = "#1565c0", "#ef6c00", "#c62828"
_LABEL_W, _LABEL_MAX = 250, 38  # label column (px) and the characters a label keeps


def _count_rows(counts: dict[str, int]) -> list[tuple[str, Sequence[float], str]]:
    items = list(counts.items())
    head, rest = items[:TOP], items[TOP:]
    rows = [(_short(label), (n,), str(n)) for label, n in head]
    if rest:
        other = sum(n for _, n in rest)
        rows.append((f"other ({len(rest)})", (other,), str(other)))
    return rows


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_MAX else label[:_LABEL_MAX - 1] + "\u2026"


def _usd(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def render_html(s: dict) -> str:
    """report.html from a summary (:func:`summary`)."""
    effect = s["money"]["payment_effect"]
    by_code = sorted(s["findings"].items(), key=lambda kv: (-kv[1], kv[0]))
    out = [page_head("fluoro-cds batch report"),
           f'<p class="muted">Run {_e(s.get("run_id"))}, configuration {_e(s.get("config_hash"))}, data '
           f'{_e(s.get("data_release"))}.</p><div class="kpis">']
    for label, value in (("claims in", s["claims_in"]), ("reviewed", s["reviewed"]), ("errors", s["errors"]),
                         ("claims with findings", s["claims_with_findings"]),
                         ("corrected claims", s["claims_corrected"]),
                         ("estimated payment effect", _usd(s["money"]["payment_effect_total"]))):
        out.append(f'<div class="kpi"><b>{_e(value)}</b>{_e(label)}</div>')
    out.append("</div>")
    charts = (
        ("Findings by code", [(c, (n,), str(n)) for c, n in by_code], "findings per finding code"),
        ("Findings by primary procedure", _count_rows(s["by_primary_procedure"]), "findings per primary procedure"),
        ("Findings by setting", _count_rows(s["by_setting"]), "findings per NCCI setting"),
        ("Findings by rendering provider", _count_rows(s["by_rendering_provider"]),
         "findings per rendering provider"),
    )
    for title, rows, aria in charts:
        out.append(f"<h2>{_e(title)}</h2>")
        out.append(bar_chart(rows, (("findings", _BLUE),), aria=aria, empty="No findings.", label_w=_LABEL_W))
    money_rows = [(c, (abs(v),), _usd(v)) for c, v in sorted(effect.items(), key=lambda kv: kv[1]) if v]
    out.append("<h2>Estimated payment effect by finding code</h2>")
    out.append('<p class="legend"><span><i style="background:' + _RED + '"></i>less paid</span>'
               '<span><i style="background:' + _ORANGE + '"></i>more paid</span></p>')
    out.append(bar_chart([(c, (w,) if t.startswith("-") else (0, w), t) for c, (w,), t in money_rows],
                         (("less paid (USD)", _RED), ("more paid (USD)", _ORANGE)),
                         aria="estimated payment effect per finding code", empty="No payment effect.",
                         label_w=_LABEL_W))
    out.append("<h2>Findings and money</h2><table><tr><th>finding</th><th>findings</th><th>billed on the lines"
               "</th><th>estimated payment effect</th></tr>")
    for code, n in by_code:
        out.append(f'<tr><td><code>{_e(code)}</code></td><td class="n">{n}</td>'
                   f'<td class="n">{_usd(s["money"]["billed"].get(code, 0.0))}</td>'
                   f'<td class="n">{_usd(effect.get(code, 0.0))}</td></tr>')
    out.append("</table><p class=\"muted\">Payment effects are estimates: the recommended fix priced with the "
               "MPFS, or the adjudicated paid / allowed amount where the input carries one (docs/service.md, "
               "\"The findings table\"). Details per line: findings.parquet.</p></body></html>")
    return "\n".join(out)

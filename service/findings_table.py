"""The batch's findings table: one row per finding and line, with typed columns declared once.

:data:`COLUMNS` declares every column (name, Arrow type, meaning); :data:`SCHEMA` (pyarrow) and
:func:`spark_schema` (the Spark job's DataFrame) are both built from it, and docs/service.md
("The findings table") lists the same columns. :func:`finding_rows` turns one reviewed claim
(its :class:`~hooks.model.Case` and findings) into row tuples in column order; the writers
(:class:`ParquetRows`, :func:`ndjson_rows`) and the Spark job serialise those same tuples.

Money is float64 US dollars rounded to cents (Parquet DOUBLE): billed from ``Claim.item.net`` (else
``unitPrice`` x units), allowed and paid from the line's adjudication (``Line.allowed`` /
``Line.paid``, ExplanationOfBenefit items; null for a Claim). The payment effect of a finding is
that of its recommended fix, on the row of the line the fix edits (0 on the finding's other
lines): the corrected case (:func:`hooks.rules.corrected.corrected_case`, the engine's own fix
application) priced with the MPFS (total RVU x conversion factor, the same figures the cards'
payment text uses) against the case as billed, for the lines the fix touches; when the line has
an adjudicated amount (allowed, as the cards' payment text uses it, else paid) that amount is
scaled by the same MPFS ratio (a removal: minus the whole amount). ``payment_basis`` says which (``paid``, ``allowed``, ``mpfs``); null when
nothing prices the line or the fix only asks for documentation.
"""
from __future__ import annotations

import hashlib
from datetime import date
from typing import Iterable, Sequence

import orjson
import pyarrow as pa

from hooks import findings as F
from hooks.context import InvalidResource
from hooks.extract.eob import item_amounts, use_of
from hooks.findings import Finding, Fix
from hooks.model import FLUORO, Case, Line
from hooks.rules.corrected import corrected_case, touched
from hooks.rules.engine import fee_modifier
from nccidata.api import ReferenceData

_S, _I32, _I64, _F64, _D, _B = pa.string(), pa.int32(), pa.int64(), pa.float64(), pa.date32(), pa.bool_()
# A list of codes, named as Parquet's LIST convention and Spark's ArrayType(containsNull=False) write it.
_CODES = pa.list_(pa.field("element", _S, nullable=False))

# other_claims lists at most this many: a finding over n claims (the MUE's, on one beneficiary's
# n same-day claims of one provider) has rows on each, and listing every other claim on each would
# be n x n names (20,000 claims of one scenario: 16.5 million, 1.6 GB in memory).
OTHER_CLAIMS_LISTED = 20

# (name, type, meaning): the one declaration of the table (docs/service.md lists the same).
COLUMNS: tuple[tuple[str, pa.DataType, str], ...] = (
    ("run_id", _S, "the run's id (one per `fluoro-cds batch` or Spark job run)"),
    ("config_hash", _S, "sha256 (first 16 hex digits) of the run's resolved configuration options"),
    ("data_release", _S, "the NCCI / MPFS releases in service for the run (e.g. `2024Q3`, `starter-2024Q3`)"),
    ("source_file", _S, "the input file the claim was read from"),
    ("source_line", _I64, "its 1-based line number in that file"),
    ("resource_type", _S, "the reviewed resource's type (`Claim`, `ExplanationOfBenefit`)"),
    ("resource_id", _S, "its id"),
    ("identifier", _S, "its first business identifier (`identifier[0].value`)"),
    ("claim_use", _S, "`use` of the Claim or ExplanationOfBenefit (`claim`, `preauthorization`, `predetermination`)"),
    ("patient", _S, "the patient reference (`Claim.patient.reference`)"),
    ("rendering_provider", _S, "the line's rendering provider (care team member of the item, else the Procedure's performer)"),
    ("billing_provider", _S, "the billing provider (`Claim.provider.reference`, else its identifier value)"),
    ("item_sequence", _I32, "`Claim.item.sequence` of the line (null for a finding on no line)"),
    ("line_key", _S, "the line's FHIR path in the resource (`Claim.item[0]`)"),
    ("service_date", _D, "the line's date of service (else the claim's)"),
    ("code", _S, "the line's CPT/HCPCS code"),
    ("modifiers", _CODES, "the line's modifiers, in order"),
    ("units", _I32, "the line's units"),
    ("place_of_service", _S, "the line's CMS place-of-service code (else the claim's)"),
    ("setting", _S, "the NCCI setting: `practitioner`, `outpatient-hospital` or `inpatient-hospital`"),
    ("primary_code", _S, "the primary procedure: the PTP edit's column 1, else the claim's first other billed code"),
    ("finding", _S, "the finding code (docs/contract.md#card-topics)"),
    ("finding_index", _I32, "the finding's position among the claim's findings (0 first)"),
    ("line_index", _I32, "the line's position among the finding's lines (0 first: count findings where 0)"),
    ("across_claims", _B, "the finding comes from the edits across claims (docs/batch.md#edits-across-claims): "
                          "its lines are on several claims"),
    ("other_claims", _CODES, "the other claims such a finding names (`Claim/c2`, `ExplanationOfBenefit/e1`), "
                             f"the first {OTHER_CLAIMS_LISTED} of them; empty for a claim's own finding"),
    ("other_claims_count", _I32, "how many other claims the finding names (more than `other_claims` lists when "
                                 f"over {OTHER_CLAIMS_LISTED}); 0 for a claim's own finding"),
    ("severity", _S, "`warning` or `info`"),
    ("summary", _S, "the card summary"),
    ("edit_program", _S, "the NCCI program whose edits were applied (`medicare`, `medicaid`)"),
    ("edit_kind", _S, "`ncci-ptp` or `ncci-mue` when the finding rests on an NCCI edit row"),
    ("edit_release", _S, "that edit's release label"),
    ("column1", _S, "PTP edit: column 1 code"),
    ("column2", _S, "PTP edit: column 2 code"),
    ("modifier_indicator", _S, "PTP edit: modifier indicator (0, 1, 9); MUE: the MUE adjudication indicator (1, 2, 3)"),
    ("mue_units", _I32, "MUE edit: the MUE value (units)"),
    ("edit_effective", _D, "PTP edit: effective date"),
    ("edit_deletion", _D, "PTP edit: deletion date (null: none, CMS `*`)"),
    ("rationale", _S, "the edit's rationale (PTP edit rationale, MUE rationale)"),
    ("action", _S, "the recommended fix's action (`remove-line`, `reduce-units`, `replace-code`, `add-modifier`, ...)"),
    ("carc", _S, "suggested X12 claim adjustment reason code (CARC), where one applies (table below)"),
    ("billed", _F64, "billed amount of the line, USD"),
    ("allowed", _F64, "allowed amount (ExplanationOfBenefit adjudication), USD"),
    ("paid", _F64, "paid amount (ExplanationOfBenefit adjudication), USD"),
    ("payment_effect", _F64, "estimated payment effect of the recommended fix, USD (negative: less paid)"),
    ("payment_basis", _S, "what the payment effect is computed from: `paid`, `allowed` or `mpfs`"),
)
SCHEMA = pa.schema([pa.field(name, type_) for name, type_, _ in COLUMNS])
NAMES = tuple(name for name, _, _ in COLUMNS)
_INDEX = {name: i for i, name in enumerate(NAMES)}
FINDING, FINDING_INDEX, LINE_INDEX = _INDEX["finding"], _INDEX["finding_index"], _INDEX["line_index"]
SOURCE_FILE, SOURCE_LINE, ACROSS = _INDEX["source_file"], _INDEX["source_line"], _INDEX["across_claims"]
PRIMARY, SETTING, RENDERING = _INDEX["primary_code"], _INDEX["setting"], _INDEX["rendering_provider"]
BILLED, EFFECT, RESOURCE_ID = _INDEX["billed"], _INDEX["payment_effect"], _INDEX["resource_id"]

# Suggested X12 claim adjustment reason codes (the X12 CARC list, x12.org/codes; wording as CMS's
# data documentation and the Medicare contractors quote it). None: no adjustment reason applies
# (advice, documentation requests, a recoding suggestion).
CARC: dict[str, str | None] = {
    # 236 "This procedure or procedure/modifier combination is not compatible with another procedure
    # or procedure/modifier combination provided on the same day according to the National Correct
    # Coding Initiative...": the NCCI PTP denial (Noridian JE/JF "Not Separately Payable/NCCI", CO-236;
    # First Coast "Tips to prevent CARC CO 236").
    F.PTP_BUNDLED: "236",
    F.PTP_MODIFIER_ALLOWED: "236",
    # 97 "The benefit for this service is included in the payment/allowance for another
    # service/procedure that has already been adjudicated": fluoroscopy integral to the procedure.
    F.FLUOROSCOPY_INTEGRAL: "97",
    # 151 "Payment adjusted because the payer deems the information submitted does not support this
    # many/frequency of services": the MUE denial, with remark N362 (CGS Medicare, "Medically
    # Unlikely Edits (MUEs)", 2013: "identified by ANSI Reason Code 151 with Remark Code N362").
    F.MUE_EXCEEDED: "151",
    F.SESSION_UNITS: "151",
    # 4 "The procedure code is inconsistent with the modifier used or a required modifier is missing".
    F.MODIFIER_26: "4",
    F.MODIFIER_MISUSE: "4",
    # 5 "The procedure code/bill type is inconsistent with the place of service".
    F.PLACE_OF_SERVICE: "5",
    # 181 "Procedure code was invalid on the date of service".
    F.CODE_DELETED: "181",
    F.USE_GUIDANCE_CODE: None,
    F.DOCUMENTATION_MISSING: None,
    F.DURATION_EXCEEDED: None,
    F.NCCI_NOT_APPLIED: None,
}


def config_hash(config: dict) -> str:
    """The first 16 hex digits of the sha256 of the resolved options as sorted JSON."""
    return hashlib.sha256(orjson.dumps(config, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def data_release(described: dict) -> str:
    """The releases in service, from ``ReferenceData.describe()``: labels joined by "+"; the
    starter set's label when the store holds none."""
    if described.get("source") == "starter":
        return str(described.get("label"))
    labels = sorted({str(r.get("label")) for r in described.get("in_service") or []})
    if described.get("fallback"):
        labels.append("starter")
    return "+".join(labels) or "starter"


def _text(node, *keys: str) -> str | None:
    """The string at `keys` below `node` (dicts), else None (never raises: extraction has checked
    what it read; these are the extra elements only the table shows)."""
    for key in keys:
        if type(node) is not dict:
            return None
        node = node.get(key)
    return node if type(node) is str else None


def _number(node) -> float | None:
    value = node.get("value") if type(node) is dict else None
    return float(value) if type(value) in (int, float) else None


def _billed(item: dict | None, key: str, units: int) -> float | None:
    """Billed amount of a Claim or ExplanationOfBenefit item: its submitted adjudication, else
    ``net`` (hooks.extract.eob.item_amounts), else ``unitPrice`` x units."""
    if item is None:
        return None
    try:
        billed = item_amounts(item, key).billed
    except InvalidResource:  # an element the review did not need is malformed: no amount
        return None
    if billed is None:
        price = _number(item.get("unitPrice"))
        billed = price * units if price is not None else None
    return round(billed, 2) if billed is not None else None


def _use(resource: dict) -> str | None:
    try:
        return use_of(resource) if resource else None
    except InvalidResource:
        return None


class _Claim:
    """What every row of one claim shares."""

    __slots__ = ("head", "billing", "items", "primary", "facility", "pos")

    def __init__(self, case: Case, source: tuple[str, int], run: tuple[str, str, str]) -> None:
        claim = case.claim or {}
        ident = claim.get("identifier")
        identifier = _text(ident[0], "value") if type(ident) is list and ident else None
        self.billing = _text(claim, "provider", "reference") or _text(claim, "provider", "identifier", "value")
        self.head = (*run, source[0], source[1], claim.get("resourceType"), _text(claim, "id"), identifier,
                     _use(claim), _text(claim, "patient", "reference"))
        items = claim.get("item")
        self.items = {i.get("sequence"): i for i in items if type(i) is dict} if type(items) is list else {}
        self.primary = next((ln.code for ln in case.lines if ln.code != FLUORO), None)
        self.facility = case.setting.facility
        self.pos = case.setting.pos


def _edit_fields(finding: Finding) -> tuple:
    """(program, kind, release, column1, column2, indicator, mue units, effective, deletion, rationale)."""
    program = None
    edit = None
    for c in finding.citations:
        if c.kind == F.PROGRAM_CITATION:
            program = dict(c.details).get("program")
        elif edit is None and c.kind in ("ncci-ptp", "ncci-mue"):
            edit = c
    if edit is None:
        return (program, None, None, None, None, None, None, None, None, None)
    d = dict(edit.details)
    if edit.kind == "ncci-ptp":
        deletion = d.get("deletion")
        return (program, edit.kind, edit.release, d.get("column1"), d.get("column2"), d.get("modifier_indicator"),
                None, _date(d.get("effective")), _date(deletion) if deletion != "*" else None, d.get("rationale"))
    return (program, edit.kind, edit.release, None, None, d.get("mai"), int(d["units"]) if d.get("units") else None,
            None, None, d.get("rationale"))


def _date(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _recommended(finding: Finding) -> Fix | None:
    return next((f for f in finding.fixes if f.recommended), finding.fixes[0] if finding.fixes else None)


def _mpfs(line: Line | None, facility: bool, reference: ReferenceData) -> float:
    """The MPFS payment of a line (0 for a removed line); raises LookupError when unpriced."""
    if line is None or line.units <= 0:
        return 0.0
    fee = reference.fee(line.code, fee_modifier(line))
    dollars = fee.dollars(facility) if fee is not None else None
    if dollars is None:
        raise LookupError(line.code)
    return dollars * line.units


def _facility(line: Line, shared: _Claim, reference: ReferenceData) -> bool:
    if line.pos is None or line.pos == shared.pos:
        return shared.facility
    place = reference.place_of_service(line.pos)
    return place.facility if place is not None else shared.facility


def payment_effect(case: Case, fix: Fix | None, reference: ReferenceData, shared: _Claim,
                   base: tuple[str, float] | None) -> tuple[float | None, str | None]:
    """(effect in USD, basis) of applying `fix` to `case` (module docstring); (None, None) when the
    fix does not edit the claim or nothing prices it."""
    if fix is None or fix.action == F.DOCUMENT:
        return None, None
    keys = touched(fix)
    after_case = corrected_case(case, fix)
    before_lines = {ln.key: ln for ln in case.lines if ln.key in keys}
    after_lines = {ln.key: ln for ln in after_case.lines if ln.key in keys}
    try:
        before = sum(_mpfs(ln, _facility(ln, shared, reference), reference) for ln in before_lines.values())
        after = sum(_mpfs(after_lines.get(k), _facility(after_lines[k], shared, reference) if k in after_lines
                          else False, reference) for k in before_lines)
    except LookupError:
        if base is not None and not after_lines:  # a removal: the whole adjudicated amount
            return round(-base[1], 2), base[0]
        return None, None
    if base is not None:
        if not after_lines:
            return round(-base[1], 2), base[0]
        if before > 0:
            return round(base[1] * (after / before - 1), 2), base[0]
    return round(after - before, 2), "mpfs"


def finding_rows(case: Case, findings: Sequence[Finding], reference: ReferenceData, source: tuple[str, int],
                 run: tuple[str, str, str], others: Sequence[str] = (), others_count: int | None = None
                 ) -> list[tuple]:
    """The table rows (tuples in :data:`NAMES` order) of one reviewed claim: one per finding and
    line; a finding on no line gets one row with the line columns null. `source`: (file, line
    number); `run`: (run id, config hash, data release); `others`: the other claims of a finding
    across claims (its part on this claim: ``across_claims`` true), the first
    :data:`OTHER_CLAIMS_LISTED` kept; `others_count`: how many there are (default: len(others))."""
    if not findings:
        return []
    count = len(others) if others_count is None else others_count
    across, other_claims = count > 0, list(others[:OTHER_CLAIMS_LISTED])
    shared = _Claim(case, source, run)
    lines = {ln.key: ln for ln in case.lines}
    setting = case.setting.ncci_setting
    rows = []
    for index, finding in enumerate(findings):
        fix = _recommended(finding)
        edit = _edit_fields(finding)
        primary = edit[3] or shared.primary
        carc = CARC.get(finding.code)
        action = fix.action if fix is not None else None
        fixed_line = touched(fix)[0] if fix is not None and fix.line is not None else None
        for j, key in enumerate(finding.lines or (None,)):
            line = lines.get(key) if key is not None else None
            if line is None:
                rows.append((*shared.head, None, shared.billing, None, key, case.default_date, None, [], None, shared.pos, setting,
                             primary, finding.code, index, j, across, other_claims, count, finding.severity, finding.summary,
                             *edit, action, carc, None, None, None, None, None))
                continue
            item = shared.items.get(line.sequence)
            allowed, paid = line.allowed, line.paid
            effect = basis = None
            if key == fixed_line or (fixed_line is None and j == 0):
                # allowed first, as the cards' payment text (hooks.rules.engine.line_money), else paid
                amount = ("allowed", allowed) if allowed is not None else ("paid", paid) if paid is not None else None
                effect, basis = payment_effect(case, fix, reference, shared, amount)
            elif fix is not None and fix.action != F.DOCUMENT:
                effect = 0.0
            rows.append((*shared.head, line.performers[0] if line.performers else None, shared.billing, line.sequence, key,
                         case.line_date(line), line.code, list(line.modifiers), line.units, line.pos or shared.pos,
                         setting, primary, finding.code, index, j, across, other_claims, count, finding.severity,
                         finding.summary, *edit, action, carc, _billed(item, key, line.units), allowed, paid, effect, basis))
    return rows


# --- writers ---------------------------------------------------------------------------------------
def record_batch(rows: Sequence[tuple]) -> pa.RecordBatch:
    """Rows as one Arrow record batch of :data:`SCHEMA` (typed: a value of the wrong type raises)."""
    columns = list(zip(*rows)) if rows else [()] * len(NAMES)
    return pa.RecordBatch.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, SCHEMA)],
                                      schema=SCHEMA)


def ndjson_rows(rows: Iterable[tuple]) -> bytes:
    """Rows as NDJSON objects (column names as keys, dates as YYYY-MM-DD, money as numbers)."""
    return b"".join(orjson.dumps(dict(zip(NAMES, row))) + b"\n" for row in rows)


class ParquetRows:
    """findings.parquet, written batch by batch (the schema's file even with no rows)."""

    def __init__(self, path: str) -> None:
        import pyarrow.parquet as pq

        self._writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows:
            self._writer.write_batch(batch)

    def close(self) -> None:
        self._writer.close()


def spark_schema():
    """The Spark StructType of :data:`SCHEMA` (for the Spark job's typed DataFrame)."""
    from pyspark.sql import types as T

    simple = {_S: T.StringType(), _I32: T.IntegerType(), _I64: T.LongType(), _F64: T.DoubleType(),
              _D: T.DateType(), _B: T.BooleanType(), _CODES: T.ArrayType(T.StringType(), containsNull=False)}
    return T.StructType([T.StructField(f.name, simple[f.type], nullable=True) for f in SCHEMA])

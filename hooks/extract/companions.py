"""The companion resources of a case, indexed by "Type/id" and by type, and the record's active
Procedures parsed once (code, date, sites, reasons, reports)."""
from __future__ import annotations

from datetime import date, datetime
from typing import Iterable, Mapping, NamedTuple, Sequence

from .. import fhir_read as fr
from ..context import InvalidResource
from ..model import MAX_LINES, Line, Site
from .codes import concepts_keys, performs, procedure_code, sites_of, status_of, unique

INACTIVE = frozenset({"entered-in-error", "cancelled", "not-done", "revoked"})


class Proc(NamedTuple):
    """An active, coded Procedure of the record, parsed once (a NamedTuple: built per request)."""

    path: str
    resource: dict
    code: str
    day: date | None
    sites: tuple[Site, ...]
    reasons: tuple[str, ...]
    reports: tuple[str, ...]
    key: str | None  # "Procedure/id" (None without id)
    encounters: tuple[str, ...]  # Procedure.encounter
    performers: tuple[str, ...]  # Procedure.performer.actor
    start: datetime | None  # performedPeriod, when given to the minute with a time zone
    end: datetime | None
    based_on: tuple[str, ...] = ()  # Procedure.basedOn (its ServiceRequest): what reports and studies link to

    @property
    def line(self) -> Line | None:
        """The Procedure as a line of its own (None without id), as _order_line reads it; built
        on use (claim-review needs few of them)."""
        if self.key is None:
            return None
        return Line(key=self.key, code=self.code, service_date=self.day, body_sites=self.sites,
                    diagnoses=self.reasons, kind="procedure", resource=self.key, encounters=self.encounters,
                    performers=self.performers, start=self.start, end=self.end)


class Index:
    """The companions by "Type/id" and by type ((path, resource) pairs in order); a resource's path
    is "Type/id", or "Type[i]" (i: its position among the companions) without id."""

    __slots__ = ("by_key", "by_type", "repeated", "_procs")

    def __init__(self) -> None:
        self.by_key: dict[str, dict] = {}
        self.by_type: dict[str, list[tuple[str, dict]]] = {}
        self.repeated = False  # a "Type/id" held by more than one companion (by_key keeps the first)
        self._procs: list[Proc] | None = None

    def of(self, rtype: str) -> list[tuple[str, dict]]:
        return self.by_type.get(rtype, [])

    def get(self, key: str | None) -> dict | None:
        return self.by_key.get(key) if key else None

    def procedures(self) -> list[Proc]:
        """The active, coded Procedures, parsed on first use (every active one is validated); more
        than MAX_LINES is an InvalidResource at the first past it."""
        if self._procs is None:
            procs = []
            for p, proc in active(self.of("Procedure")):
                pr = parse_procedure(p, proc)
                if pr is not None:
                    if len(procs) == MAX_LINES:
                        raise too_many_lines(p, "the record", "active Procedures")
                    procs.append(pr)
            self._procs = procs
        return self._procs


def too_many_lines(path: str, holder: str, what: str) -> InvalidResource:
    """The error for the first of `what` ("items", "lines", "active Procedures") past MAX_LINES
    (at `path`) that `holder` ("Claim", "the record", ...) has."""
    return fr.invalid(path, f"{holder} has more than {MAX_LINES} {what}; a review reads at most {MAX_LINES} "
                            "(an X12 837 claim carries at most 999 service lines)")


def index_companions(companions: Sequence[dict], full_validation: bool,
           aliases: Mapping[str, dict] | None = None) -> Index:
    """The companions indexed; `aliases` (see bundle_aliases) adds the references a Bundle gives
    its entries through fullUrl, e.g. "urn:uuid:..." for a resource without an id."""
    idx = Index()
    if companions is None:
        return idx
    if not isinstance(companions, (list, tuple)):
        raise fr.invalid("companions", "must be a list of resources")
    by_key, by_type = idx.by_key, idx.by_type
    for i, res in enumerate(companions):
        # Hot path: the accessors are called only when resourceType or id is not a non-blank string.
        rtype = res.get("resourceType") if type(res) is dict else None
        if type(rtype) is not str or not rtype.strip():
            rtype = fr.resource_type(res, "companions", index=i)
        if full_validation:
            fr.validate_full(res)
        rid = res.get("id")
        if type(rid) is not str or not rid.strip():
            rid = fr.string(rid, rtype, "id")
        if rid:
            path = f"{rtype}/{rid}"
            if by_key.setdefault(path, res) is not res:
                idx.repeated = True
        else:
            path = f"{rtype}[{i}]"
        group = by_type.get(rtype)
        if group is None:
            by_type[rtype] = [(path, res)]
        else:
            group.append((path, res))
    if aliases:
        members = {id(res) for res in companions}
        for alias, res in aliases.items():
            if id(res) in members:  # only resources that are companions of this case
                by_key.setdefault(alias, res)
    return idx


def active(pairs: Iterable[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The (path, resource) pairs whose status (validated) is not an inactive one."""
    out = []
    for p, r in pairs:
        status = r.get("status")
        if type(status) is not str or not status.strip():  # not a plain status: validate
            status = status_of(r, p)
        if status not in INACTIVE:
            out.append((p, r))
    return out


def parse_procedure(p: str, proc: dict) -> Proc | None:
    """An active Procedure of the record (None without a procedure code). Read in this order: code,
    report, basedOn, performed[x], then with an id (as _order_line reads it): reasonCode, reasonReference,
    bodySite; without one: bodySite, reasonCode, reasonReference.

    The id was validated by index_companions (a string, or absent)."""
    code = procedure_code(proc.get("code"), p, "code")
    if not code:
        return None
    reports = tuple(fr.references(proc.get("report"), p, "report"))
    based_on = tuple(fr.references(proc.get("basedOn"), p, "basedOn")) if "basedOn" in proc else ()
    rid = proc.get("id")
    day = procedure_date(proc, p)
    if rid is not None:
        reasons = unique(procedure_reasons(proc, p))
        sites = unique(sites_of(proc.get("bodySite"), p, "bodySite"))
        key = f"Procedure/{rid}"
    else:
        sites = tuple(sites_of(proc.get("bodySite"), p, "bodySite"))
        reasons = tuple(procedure_reasons(proc, p))
        key = None
    encounters, performers, start, end = procedure_session(proc, p)
    return Proc(p, proc, code, day, sites, reasons, reports, key, encounters, performers, start, end, based_on)


def procedure_session(proc: dict, path: str) -> tuple[tuple[str, ...], tuple[str, ...], datetime | None,
                                                       datetime | None]:
    """(encounters, performers, start, end) of a Procedure: encounter, performer.actor (but not a
    performer whose function says it did not perform it: an anaesthetist, an assistant, ...), and the
    performedPeriod's bounds when they carry a time and a time zone (NCCI Policy Manual Chapter I,
    section E: XE separate encounter, XP separate practitioner)."""
    enc = fr.reference(proc.get("encounter"), path, "encounter")
    performers = []
    for p, perf in fr.objects(proc.get("performer"), path, "performer"):
        actor = fr.reference(perf.get("actor"), p, "actor")
        function = perf.get("function")
        if actor and (function is None or performs(function, p, "function") is not False):
            performers.append(actor)  # not an anaesthetist, assistant, ... (codes.PERFORMING_ROLES)
    start = end = None
    period = proc.get("performedPeriod")
    if period is not None and type(period) is dict:  # validated by procedure_date
        start, end = moment(period.get("start")), moment(period.get("end"))
        if start is not None and end is not None and end < start:
            raise fr.invalid(f"{path}.performedPeriod", "end is before start (a Period's start is not after its "
                                                        "end: FHIR invariant per-1)")
    return ((enc,) if enc else ()), unique(performers), start, end


def moment(value) -> datetime | None:
    """A FHIR dateTime with a time and a time zone as an aware datetime (None otherwise); the
    caller has validated the value."""
    if type(value) is not str or "T" not in value:
        return None
    try:
        out = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return out if out.tzinfo is not None else None


def procedure_date(proc: dict, path: str) -> date | None:
    d = fr.fhir_datetime_date(proc.get("performedDateTime"), path, "performedDateTime")
    return d or fr.period_start(proc.get("performedPeriod"), path, "performedPeriod")


def procedure_reasons(proc: dict, path: str) -> list[str]:
    """reasonCode keys, then reasonReference references (of a Procedure or ServiceRequest)."""
    keys = concepts_keys(proc.get("reasonCode"), path, "reasonCode")
    keys += fr.references(proc.get("reasonReference"), path, "reasonReference")
    return keys

"""What a service handler receives: the hook request, its configuration, and access to FHIR data.

The service layer implements :class:`FhirData` over prefetch and the FHIR server; handlers only
see this interface, so they can be tested with any implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

from nccidata.api import ReferenceData


class DataUnavailable(Exception):
    """Data the service needs is neither in prefetch nor fetchable (the service layer answers 412)."""


class SearchRefused(DataUnavailable):
    """The FHIR server refused a search as asked (HTTP 400, 422 or 501: typically a search
    parameter it does not support); a narrower search may still work (hooks/services/gather.py)."""


T = TypeVar("T")


class InvalidResource(ValueError):
    """A FHIR resource in the request is invalid; `path` names the FHIR element (answered 400)."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


# What could not be checked (issue 11 section 2; hooks/unchecked.py renders it as a card).
# What a gap leaves unjudged (Gap.affects):
DOCUMENTATION = "documentation"  # time, dose, report, images, indication: no documentation cards
SETTING = "setting"  # the place of service (facility or not): modifier-26 may be missed
PROCEDURES = "procedures"  # other procedures of the encounter: bundling may be missed
CLAIM = "claim"  # the encounter's Claim: cards explain instead of updating the Claim

_WHY_LIMIT = 300  # a reason is a server's or the service's own message: kept short


@dataclass(frozen=True)
class Gap:
    what: str  # the data, e.g. "the encounter's Procedures (Procedure?encounter=Encounter/e1)"
    why: str  # e.g. "not prefetched and the request has no fhirServer"
    affects: tuple[str, ...]  # of DOCUMENTATION, SETTING, PROCEDURES, CLAIM


class Unchecked:
    """The gaps of one hook call, in the order they were met, each `what` once.
    Handlers and the FHIR layer add to it; the service layer answers it as one info card."""

    def __init__(self) -> None:
        self._gaps: dict[str, Gap] = {}

    def add(self, what: str, why: str, *affects: str) -> None:
        """Record that `what` could not be checked because `why`; `affects`: what it leaves
        unjudged (DOCUMENTATION, SETTING, PROCEDURES, CLAIM)."""
        if what not in self._gaps:
            self._gaps[what] = Gap(what, str(why)[:_WHY_LIMIT], tuple(affects))

    def affects(self, part: str) -> bool:
        return any(part in g.affects for g in self._gaps.values())

    def __iter__(self) -> Iterator[Gap]:
        return iter(self._gaps.values())

    def __len__(self) -> int:
        return len(self._gaps)

    def __bool__(self) -> bool:
        return bool(self._gaps)


class FhirData(Protocol):
    """FHIR data of one hook call (service/fhir_access.py implements it; docs/service.md).

    Every method raises DataUnavailable when the data is neither in prefetch nor fetchable
    (no fhirServer, server unreachable, 401/403/5xx): let it propagate for data the service
    needs (the service layer answers 412), catch it for data that is merely useful.
    """

    @property
    def has_server(self) -> bool:
        """True when the request named a ``fhirServer``: data not in prefetch may be fetched."""

    def prefetched(self, key: str) -> Any:
        """The data of the service's prefetch template `key` (a resource or a searchset Bundle):
        the client's prefetch, else fetched from the FHIR server. None when the template does
        not apply (a prefetch token without value, e.g. no encounterId) or there is no data
        (the client sent null: taken at its word, the server is not asked)."""

    def client_has_none(self, key: str) -> bool:
        """True when the client's prefetch for `key` is null (it has no data for it), so that
        a reason can say what really happened."""

    def read(self, reference: str) -> dict | None:
        """Read "Type/id" from prefetch or the FHIR server; None when the server says 404 or
        the client's prefetch for that read is null."""

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict]:
        """Search the FHIR server (all pages, bounded); resources of `resource_type` only.
        A search equal to one of the service's prefetch templates is answered from prefetch.
        Raises SearchRefused when the server refuses the search itself."""

    def concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T | DataUnavailable]:
        """Run independent calls (each using this object's methods) at the same time, a few in
        flight at once; each call's result, or the DataUnavailable it raised, in call order.
        Any other exception is raised. Without a FHIR server the calls simply run in turn."""


@dataclass
class HookRequest:
    hook: str
    hook_instance: str
    context: dict[str, Any]
    config: dict[str, Any]  # resolved configuration options (defaults + deployment + request)
    fhir: FhirData
    reference: ReferenceData  # NCCI/MPFS data in service (starter set or imported releases)
    extras: dict[str, Any] = field(default_factory=dict)
    # what could not be checked (hooks/unchecked.py); the service layer shares it with FhirData
    unchecked: Unchecked = field(default_factory=Unchecked)
    # the request asked "why no card?" (extension org.fluoro-cds.explain: true; hooks/explain.py)
    explain: bool = False

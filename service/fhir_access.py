"""FHIR data for a hook call: prefetch first, then the client's FHIR server (CDS Hooks 2.0).

Implements :class:`hooks.context.FhirData` over

1. the request's ``prefetch`` (CDS Hooks 2.0 "Providing FHIR Resources to a CDS Service"), keyed
   by the service's prefetch templates, resolved against the request context (prefetch tokens
   ``{{context.<field>}}`` and ``{{userPractitionerId}}``, ``{{userPractitionerRoleId}}``,
   ``{{userPatientId}}``, ``{{userRelatedPersonId}}`` derived from ``context.userId``);
2. the ``fhirServer`` with ``Authorization: Bearer <fhirAuthorization.access_token>`` (2.0 "FHIR
   Resource Access"), through a pooled ``requests.Session``, with timeouts and bounded paging.

Reading of the specification for the prefetch values (documented in docs/service.md):

* key absent: the client chose not to (or could not) prefetch it -> the service fetches it itself
  from ``fhirServer``; with no server the data is unavailable (DataUnavailable -> 412).
* ``null``: the client had no data for the key (2.0: "If the CDS Client has no data to populate a
  template prefetch key, the prefetch template key MUST have a value of null"). Taken at its
  word, with or without ``fhirServer``, by ``prefetched``, ``read`` and ``search`` alike: no
  data (None / []), no server call (a client that could not prefetch omits the key or sends an
  OperationOutcome instead).
* an ``OperationOutcome`` (2.0 allows a client to send one when prefetching failed): treated as
  absent - fetched from ``fhirServer`` when possible, otherwise unavailable.
* a Bundle whose ``self`` link still holds a template token (``{{context.encounterId}}``, also
  percent-encoded, as the CDS Hooks Sandbox sends for templates it could not resolve): not data,
  treated as absent.
* a Bundle with a ``next`` link (one page of a longer result): with ``fhirServer`` the remaining
  pages are read from it (bounded like searches); without one it is incomplete and treated as
  absent (the service says it could not be completed).

Independent fetches of one hook call run concurrently (:meth:`FhirAccess.concurrently`): a small
pool of threads shared by the process, at most ``max_parallel`` (8) requests of one hook call in
flight, so a review without prefetch costs about its dependency depth in round trips.

A template whose token has no value in the context (e.g. no encounterId) does not apply: its key
is None. Prefetch values are only looked at when a handler asks for them.
"""
from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urljoin, urlsplit

import requests
import urllib3

from hooks.context import DataUnavailable, InvalidResource, SearchRefused, Unchecked
from hooks.fhir_read import key_of, normalize_reference
from hooks.model import MAX_LINES
from hooks.services.gather import check_fetched
from hooks.unchecked import affected_by

from . import metrics
from .jsonio import MAX_DEPTH, loads, too_deep

T = TypeVar("T")

log = logging.getLogger("fluoro_cds.fhir")

_TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}
_MISSING = object()
_UNRESOLVED = object()
_KEY = re.compile(r"[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}")  # "Type/id" a gap may name


# --- fhirServer allowlist --------------------------------------------------------------------

_HOST = re.compile(r"(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?\.)*[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?"
                   r"|\[[0-9a-f:.]+\]")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/", not escaped again


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4 on an absolute path: "." dropped, ".." drops its parent."""
    out: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    return "/" + "/".join(out)


def normalize_url(url: str) -> tuple[str, str, int, str, str] | None:
    """(scheme, host, port, path, query) of an http(s) URL in one canonical form, or None when
    it is not acceptable: other scheme, no host or a host that is not a DNS name or IP literal,
    user info, a fragment, backslashes (also encoded: some servers read them as "/"), control
    characters or undecodable escapes.

    The path is percent-decoded once (a "%" left after that, i.e. double encoding, is refused)
    and its dot segments removed; scheme and host are lower-cased, the host's trailing dot and
    a default port dropped; the trailing slash of the path is dropped."""
    if not isinstance(url, str) or any(c in url for c in "\\\t\r\n") or not url.isprintable():
        return None
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        path = unquote(parts.path, errors="strict")
    except (ValueError, UnicodeDecodeError):
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if scheme not in _DEFAULT_PORTS or not _HOST.fullmatch(host):
        return None
    if parts.username is not None or parts.password is not None or "@" in parts.netloc \
            or parts.fragment or "%" in path or "\\" in path or not path.isprintable():
        return None
    if parts.path and not parts.path.startswith("/"):
        return None
    path = _remove_dot_segments(path or "/").rstrip("/")
    return scheme, host, port or _DEFAULT_PORTS[scheme], path, parts.query


def normalize_base(url: str) -> tuple[str, str, int, str] | None:
    """(scheme, host, port, path) of an acceptable FHIR base URL (normalize_url, no query)."""
    norm = normalize_url(url)
    if norm is None or norm[4]:
        return None
    return norm[:4]


def canonical_url(norm: tuple) -> str:
    """The URL of a normalize_url / normalize_base tuple (path re-encoded, query kept)."""
    scheme, host, port, path = norm[:4]
    netloc = host if port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    url = f"{scheme}://{netloc}{quote(path, safe=_PATH_SAFE)}"
    return f"{url}?{norm[4]}" if len(norm) > 4 and norm[4] else url


def _under(target: tuple, base: tuple) -> bool:
    """`target` (normalized) is `base` or lies under it on a path boundary."""
    return target[:3] == base[:3] and (target[3] == base[3] or target[3].startswith(base[3] + "/"))


def fhir_server_allowed(url: str, allowlist: tuple[str, ...]) -> bool:
    """True when `url` is an acceptable http(s) base URL and, if an allowlist is set, equals an
    allowlisted base or lies under one on a path boundary, both normalized (normalize_url:
    dot segments, percent-encoding, case, default ports; user info refused).
    ``https://fhir.example.org/r4`` allows ``.../r4`` and ``.../r4/tenant1``, not ``.../r4x``
    nor ``.../r4/../admin``."""
    target = normalize_base(url)
    if target is None:
        return False
    if not allowlist:
        return True
    return any(base is not None and _under(target, base)
               for base in (normalize_base(allowed) for allowed in allowlist))


# --- prefetch templates ----------------------------------------------------------------------

def _token_value(token: str, context: dict) -> str | None:
    if token.startswith("context."):
        value = context.get(token[len("context."):])
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or value == "":
            return None  # only root-level primitive context fields are tokens (2.0)
        return str(value)
    rtype = USER_TOKENS.get(token)
    if rtype:
        user = context.get("userId")
        if isinstance(user, str) and user.startswith(rtype + "/"):
            return user[len(rtype) + 1:] or None
        return None
    log.warning("unknown prefetch token {{%s}}", token)
    return None


def resolve_template(template: str, context: dict) -> str | None:
    """The relative FHIR URL of a prefetch template for this context, or None when a token has
    no value (the template does not apply). Values are percent-encoded (``/`` kept)."""
    missing = False

    def sub(m: re.Match) -> str:
        nonlocal missing
        value = _token_value(m.group(1), context)
        if value is None:
            missing = True
            return ""
        return quote(value, safe="/")

    url = _TOKEN.sub(sub, template)
    return None if missing else url


@dataclass(frozen=True)
class Query:
    """A relative FHIR request: a read (Type/id) or a type-level search (Type?params)."""

    resource_type: str
    resource_id: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    @property
    def is_read(self) -> bool:
        return self.resource_id is not None

    @classmethod
    def parse(cls, relative: str) -> "Query | None":
        path, _, query = relative.strip().lstrip("/").partition("?")
        segs = path.split("/")
        if not all(segs):  # an empty segment ("Encounter/1/", "Encounter//1") is no FHIR URL
            return None
        if len(segs) == 2 and not query:
            return cls(segs[0], segs[1])
        if len(segs) == 1:
            return cls(segs[0], None, tuple(sorted(parse_qsl(query, keep_blank_values=True))))
        return None

    def relative(self) -> str:
        return f"{self.resource_type}/{self.resource_id}" if self.is_read else self.resource_type


def _is_usable(value: Any) -> bool:
    return isinstance(value, dict) and value.get("resourceType") not in (None, "OperationOutcome")


def _entries(bundle: dict) -> list[dict]:
    """A Bundle's entries that are objects (none when `entry` is not an array)."""
    entries = bundle.get("entry")
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _links(bundle: dict) -> list:
    """A Bundle's `link` elements (none when it is not an array)."""
    links = bundle.get("link")
    return links if isinstance(links, list) else []


def _link(bundle: dict, relation: str) -> str | None:
    for link in _links(bundle):
        if isinstance(link, dict) and link.get("relation") == relation and isinstance(link.get("url"), str):
            return link["url"]
    return None


def unresolved_template(value: Any) -> bool:
    """True for a Bundle whose ``self`` link still holds a prefetch token (``{{...}}``, raw or
    percent-encoded): the client ran a template it could not resolve, so it says nothing."""
    if not (isinstance(value, dict) and value.get("resourceType") == "Bundle"):
        return False
    self_url = _link(value, "self")
    return self_url is not None and "{{" in unquote(self_url)


def paginated(value: Any) -> bool:
    """True for a Bundle that is one page of a longer result (it has a ``next`` link)."""
    return isinstance(value, dict) and value.get("resourceType") == "Bundle" \
        and _link(value, "next") is not None


def bundle_resources(bundle: dict, resource_type: str | None = None) -> list[dict]:
    """Resources in a Bundle's entries (optionally of one type)."""
    out = []
    for entry in _entries(bundle):
        res = entry.get("resource")
        if isinstance(res, dict) and (resource_type is None or res.get("resourceType") == resource_type):
            out.append(res)
    return out


# --- FHIR server client ----------------------------------------------------------------------

@dataclass(frozen=True)
class FhirClientSettings:
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    max_pages: int = 10
    max_resources: int = 1000
    max_parallel: int = 8  # requests of one hook call in flight at once
    deadline: float = 5.0  # seconds for all FHIR requests of one hook call together
    max_answer_bytes: int = 16 * 1024 * 1024  # per answer, read streamed and refused past it


# Search refusals: the server did not run the search as asked (an unsupported parameter, a
# missing required one); gather.py then tries a narrower search.
_REFUSED = frozenset({400, 422, 501})


_sessions = threading.local()


# --- the deadline on a socket ----------------------------------------------------------------
# requests' timeouts bound each socket read, not a whole answer: a server sending its status line
# and headers a byte at a time, each within the read timeout, would hold the call for ever. So
# each GET is watched: when the hook call's deadline passes, its socket is shut down, which ends
# any read in progress (headers or body); the GET then fails and is reported as late.
_watching = threading.local()  # .current: the _Watch of this thread's GET in progress


class _Watch:
    """Shuts down the socket attached to it at monotonic time `at` (or at once if later)."""

    def __init__(self, at: float):
        self._lock = threading.Lock()
        self._sock: Any = None
        self.fired = False
        self._timer = threading.Timer(max(0.0, at - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def attach(self, sock: Any) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            if self._sock is not None:
                _shut(self._sock)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            self._sock = None


def _shut(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _watched(base: type) -> type:
    """`base` (a urllib3 connection class) whose socket is attached to the thread's _Watch
    before the answer is read."""
    class Watched(base):  # type: ignore[misc, valid-type]
        def getresponse(self, *args, **kwargs):
            watch = getattr(_watching, "current", None)
            if watch is not None and self.sock is not None:
                watch.attach(self.sock)
            return super().getresponse(*args, **kwargs)
    Watched.__name__ = f"Watched{base.__name__}"
    return Watched


class _HttpPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _watched(urllib3.connection.HTTPConnection)


class _HttpsPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _watched(urllib3.connection.HTTPSConnection)


def _session() -> requests.Session:
    """A pooled Session per thread; trust_env off (no proxies or .netrc credentials from the
    environment), so the bearer token only ever goes to the fhirServer; its connections are
    watched (the deadline on a socket, above)."""
    s = getattr(_sessions, "session", None)
    if s is None:
        s = requests.Session()
        s.trust_env = False
        adapter = requests.adapters.HTTPAdapter()
        adapter.poolmanager.pool_classes_by_scheme = {"http": _HttpPool, "https": _HttpsPool}
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        _sessions.session = s
    return s


class FhirClient:
    """GETs against one FHIR base URL with one bearer token (never logged)."""

    def __init__(self, base_url: str, token: str | None, settings: FhirClientSettings):
        self.given_base = base_url.rstrip("/")  # as the caller wrote it (absolute references)
        self._norm = normalize_base(base_url)
        # requests go to the normalized base: what the allowlist checked is what is fetched
        self.base_url = canonical_url(self._norm) if self._norm else self.given_base
        self._headers = {"Accept": "application/fhir+json, application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._search_headers = dict(self._headers, Prefer="handling=strict")
        self.settings = settings
        self._deadline = time.monotonic() + settings.deadline  # one per hook call (per client)

    def _late(self) -> DataUnavailable:
        return DataUnavailable(f"the FHIR server did not answer within the hook call's deadline "
                               f"({self.settings.deadline:g} s, FLUORO_CDS_FHIR_DEADLINE)")

    def _get(self, url: str, params: list[tuple[str, str]] | None = None, *,
             strict: bool = False) -> requests.Response:
        """GET `url`, its body read whole (streamed, within the deadline and the size cap)."""
        headers = self._search_headers if strict else self._headers
        kind = "search" if strict else "read"
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._late()
        timeout = (min(self.settings.connect_timeout, remaining),
                   min(self.settings.read_timeout, remaining))
        status = None  # for the metric: None until the server answered
        _watching.current = watch = _Watch(self._deadline)
        try:
            resp = _session().get(url, params=params, headers=headers, allow_redirects=False,
                                  timeout=timeout, stream=True)
            status = resp.status_code
            try:
                resp._content = self._read_body(resp)  # requests' attribute for a read body
                resp._content_consumed = True  # close() then returns the connection to the pool
            finally:
                resp.close()  # a body not read to its end: the connection is dropped
            metrics.fhir_fetch(kind, status)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            metrics.fhir_fetch(kind, None)  # unreachable, or the answer broke off
            if time.monotonic() >= self._deadline:
                raise self._late() from None
            raise DataUnavailable(f"the FHIR server {self.base_url} could not be reached "
                                  f"({type(exc).__name__})") from None
        finally:
            watch.cancel()
            _watching.current = None
        return resp

    def _read_body(self, resp: requests.Response) -> bytes:
        """The answer's body, read as it arrives: DataUnavailable past max_answer_bytes (also
        after decompression) or past the deadline (a server sending a byte at a time)."""
        limit = self.settings.max_answer_bytes
        declared = resp.headers.get("Content-Length", "")
        too_large = DataUnavailable(f"the FHIR server's answer is larger than {limit} bytes "
                                    "(FLUORO_CDS_FHIR_MAX_ANSWER_BYTES)")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = resp.raw.read1(65536, decode_content=True)
            if not chunk:
                if time.monotonic() >= self._deadline:  # the watch shut the socket: cut short
                    raise self._late()
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise too_large
            if time.monotonic() >= self._deadline:
                raise self._late()
            chunks.append(chunk)

    def _json(self, resp: requests.Response, what: str) -> dict:
        data = resp.content
        if too_deep(data):
            raise DataUnavailable(f"the FHIR server answered {what} with JSON nested more than "
                                  f"{MAX_DEPTH} deep")
        try:
            body = loads(data)
        except ValueError:
            raise DataUnavailable(f"the FHIR server answered {what} with a body that is not JSON") from None
        if not isinstance(body, dict):
            raise DataUnavailable(f"the FHIR server answered {what} with JSON that is not a resource")
        return body

    def _fail(self, resp: requests.Response, what: str) -> DataUnavailable:
        if resp.status_code in (401, 403):
            why = "refused access (check fhirAuthorization)"
        elif 300 <= resp.status_code < 400:
            why = "redirected (not followed)"
        else:
            why = "failed"
        return DataUnavailable(f"the FHIR server {why}: HTTP {resp.status_code} on {what}")

    def read(self, resource_type: str, resource_id: str) -> dict | None:
        """GET [base]/Type/id; None on 404 / 410."""
        what = f"{resource_type} read"
        resp = self._get(f"{self.base_url}/{quote(resource_type)}/{quote(resource_id, safe='')}")
        if resp.status_code in (404, 410):
            return None
        if resp.status_code != 200:
            raise self._fail(resp, what)
        body = self._json(resp, what)
        if body.get("resourceType") != resource_type:
            raise DataUnavailable(f"the FHIR server answered a {what} with another resource type")
        if body.get("id") != resource_id:  # FHIR R4 RESTful API 3.1.0.5.1: read returns that id
            raise DataUnavailable(f"the FHIR server answered a {what} with a resource of "
                                  "another id")
        return body

    def search(self, resource_type: str, params: list[tuple[str, str]] | tuple = ()) -> dict:
        """GET [base]/Type?params and its `next` pages (bounded); one searchset Bundle.
        Asks for strict handling (FHIR R4 search: ``Prefer: handling=strict``), so that a server
        refuses a parameter it does not support instead of ignoring it; a refusal (400, 422, 501)
        raises SearchRefused."""
        return self._pages(f"{resource_type} search", f"{self.base_url}/{quote(resource_type)}",
                           list(params), [], 0)

    def rest_of(self, bundle: dict, what: str) -> dict:
        """The searchset Bundle `bundle` (a first page) with the entries of its `next` pages,
        read from this server (bounded like a search)."""
        entries = _entries(bundle)
        url = self._next_link(bundle)
        if url is None:
            return bundle
        return self._pages(what, url, None, entries, 1)

    def _pages(self, what: str, url: str | None, query: list[tuple[str, str]] | None,
               entries: list[dict], pages: int) -> dict:
        """The searchset of `entries` and the pages from `url` on, bounded; when the bound cut it
        short, the Bundle keeps a `next` link (the first page not read): it is incomplete."""
        left = None  # the next page not read
        if url and (pages >= self.settings.max_pages or len(entries) >= self.settings.max_resources):
            url, left = None, url
        while url:
            resp = self._get(url, query, strict=True)
            if resp.status_code in _REFUSED and pages == 0:
                raise SearchRefused(f"the FHIR server refused the {what}: HTTP {resp.status_code}")
            if resp.status_code != 200:
                raise self._fail(resp, what)
            body = self._json(resp, what)
            if body.get("resourceType") != "Bundle":
                raise DataUnavailable(f"the FHIR server answered a {what} with another resource type")
            for element in ("entry", "link"):
                if not isinstance(body.get(element) or [], list):
                    raise DataUnavailable(f"the FHIR server answered a {what} with a Bundle whose "
                                          f"{element} is not a JSON array")
            entries.extend(_entries(body))
            pages += 1
            url, query = self._next_link(body), None
            if url and (pages >= self.settings.max_pages or len(entries) >= self.settings.max_resources):
                log.warning("%s truncated after %d pages / %d entries", what, pages, len(entries))
                left = url
                break
        bundle = {"resourceType": "Bundle", "type": "searchset",
                  "entry": entries[: self.settings.max_resources]}
        if left or len(entries) > self.settings.max_resources:
            bundle["link"] = [{"relation": "next", "url": left or ""}]
        return bundle

    def _next_link(self, bundle: dict) -> str | None:
        """The normalized URL of the Bundle's `next` link; DataUnavailable when it leaves the
        base URL (compared normalized, as the allowlist compares fhirServer)."""
        for link in _links(bundle):
            if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
                url = link["url"]
                if not isinstance(url, str):
                    raise DataUnavailable("the FHIR server's next-page link is not a string")
                if not url.lower().startswith(("http://", "https://")):
                    url = urljoin(self.base_url + "/", url)  # RFC 3986 5.2: "/x" is the host's
                target = normalize_url(url)
                if target is None or self._norm is None or not _under(target, self._norm):
                    # never send the token elsewhere (e.g. a proxy's internal host name)
                    raise DataUnavailable("the FHIR server's next-page link leaves its base URL; "
                                          "not followed")
                return canonical_url(target)
        return None

    def fetch(self, query: Query) -> dict | None:
        if query.is_read:
            return self.read(query.resource_type, query.resource_id or "")
        return self.search(query.resource_type, list(query.params))


# --- the fetch pool ----------------------------------------------------------------------------
# One small pool of threads per process (created on first use, again after a fork), so that its
# threads keep their pooled Sessions (kept-alive connections) from one hook call to the next.
POOL_THREADS = 16
_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()
_on_pool = threading.local()


def _fetch_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="fhir-fetch"))
        return _pool[1]


def _attempt(call: Callable[[], T]) -> T | DataUnavailable:
    try:
        return call()
    except DataUnavailable as exc:
        return exc


def _on_pool_thread(call: Callable[[], T]) -> T | DataUnavailable:
    _on_pool.active = True
    return _attempt(call)


# --- FhirData over prefetch + server ---------------------------------------------------------

class FhirAccess:
    """hooks.context.FhirData for one hook call (not shared between requests)."""

    def __init__(self, *, prefetch: dict | None, templates: dict[str, str], context: dict,
                 client: FhirClient | None, unchecked: Unchecked | None = None):
        self._prefetch = prefetch or {}
        self._templates = templates
        self._context = context
        self._client = client
        self._queries: dict[str, Query | None] | None = None
        self._fetched: dict[str, Any] = {}
        self._index: dict[str, dict] | None = None
        self._count_lock = threading.Lock()
        self.fetch_count = 0  # server requests made (for audit/tests)
        # what could not be checked, shared with the handler's HookRequest: record here what was
        # given up without raising (a refused search parameter, a page not followed, a deadline)
        self.unchecked = unchecked if unchecked is not None else Unchecked()

    @property
    def has_server(self) -> bool:
        return self._client is not None

    def queries(self) -> dict[str, Query | None]:
        """Prefetch key -> resolved query (None when the template does not apply)."""
        if self._queries is None:
            out: dict[str, Query | None] = {}
            for key, template in self._templates.items():
                rel = resolve_template(template, self._context)
                out[key] = Query.parse(rel) if rel is not None else None
            self._queries = out
        return self._queries

    def _count(self) -> None:
        with self._count_lock:
            self.fetch_count += 1

    def _fetch(self, query: Query) -> dict | None:
        assert self._client is not None
        self._count()
        return self._bounded(self._checked(self._client.fetch(query), query), query.resource_type)

    def _checked(self, result: dict | None, query: Query, start: int = 0) -> dict | None:
        """A fetched answer after the element checks a handler relies on (gather.check_fetched):
        an invalid read raises DataUnavailable; the invalid resources of a searchset (its entries
        from `start` on: those before are the client's first page) are left out and each recorded
        as not checked. Fetched data is the FHIR server's: never a 400 to the caller (issue 12)."""
        if result is None:
            return None
        if query.is_read:
            try:
                check_fetched(result, query.relative())
            except InvalidResource as exc:
                raise DataUnavailable(f"the FHIR server's answer is invalid at {exc}") from None
            return result
        entries = result.get("entry") or []
        kept = entries[:start]
        for i in range(start, len(entries)):
            res = entries[i].get("resource")
            if isinstance(res, dict):
                key = key_of(res)
                path = key if key and _KEY.fullmatch(key) else f"Bundle.entry[{i}].resource"
                try:
                    check_fetched(res, path)
                except InvalidResource as exc:
                    rtype = res.get("resourceType")
                    what = (f"{key} (from the FHIR server)" if path == key else
                            f"entry {i} of the FHIR server's {query.relative()} answer")
                    self.unchecked.add(what, f"the FHIR server's answer is invalid at {exc}",
                                       *affected_by(rtype if isinstance(rtype, str) else query.resource_type))
                    continue
            kept.append(entries[i])
        return result if len(kept) == len(entries) else dict(result, entry=kept)

    def _bounded(self, result: dict | None, resource_type: str) -> dict | None:
        """A fetched searchset that the page or resource bound cut short (it keeps a `next`
        link) is recorded as not checked in full (issue 11 section 2); Procedures past the most a
        review reads (hooks.model.MAX_LINES, when FLUORO_CDS_FHIR_MAX_RESOURCES is above it) are
        left out the same way: the server's data, never a 400 to the caller."""
        if (resource_type == "Procedure" and isinstance(result, dict) and isinstance(result.get("entry"), list)
                and len(result["entry"]) > MAX_LINES):
            self.unchecked.add("all of the Procedure search results",
                               f"a review reads at most {MAX_LINES} Procedures (hooks.model.MAX_LINES)",
                               *affected_by(resource_type))
            result = dict(result, entry=result["entry"][:MAX_LINES])
        if isinstance(result, dict) and result.get("resourceType") == "Bundle" and _link(result, "next") is not None:
            s = self._client.settings if self._client else FhirClientSettings()
            self.unchecked.add(f"all of the {resource_type} search results",
                               f"only the first {s.max_pages} pages / {s.max_resources} resources were "
                               "read (FLUORO_CDS_FHIR_MAX_PAGES, FLUORO_CDS_FHIR_MAX_RESOURCES)",
                               *affected_by(resource_type))
        return result

    def concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T | DataUnavailable]:
        """hooks.context.FhirData.concurrently: the calls on the process's fetch pool, at most
        ``max_parallel`` of this hook call in flight; in turn without a server (nothing to wait
        for), for a single call, or when already on a pool thread (no nested waits on the pool)."""
        if self._client is None or len(calls) < 2 or getattr(_on_pool, "active", False):
            return [_attempt(call) for call in calls]
        self.queries(), self._prefetch_index()  # built once, before the threads read them
        limit = max(1, self._client.settings.max_parallel)
        pool = _fetch_pool()
        results: list[Any] = [None] * len(calls)
        pending: dict[Future, int] = {}
        todo = iter(enumerate(calls))
        for i, call in todo:
            pending[pool.submit(_on_pool_thread, call)] = i
            if len(pending) >= limit:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                results[pending.pop(future)] = future.result()  # other exceptions raise here
                nxt = next(todo, None)
                if nxt is not None:
                    pending[pool.submit(_on_pool_thread, nxt[1])] = nxt[0]
        return results

    def prefetched(self, key: str) -> Any:
        """The data of prefetch key `key`: the client's prefetch, else fetched from fhirServer.

        None when the template does not apply (a token without value) or there is no data
        (null). Raises DataUnavailable when it is neither prefetched nor fetchable."""
        if key in self._fetched:
            return self._fetched[key]
        queries = self.queries()
        value = self._prefetch.get(key, _MISSING)
        if key not in queries:  # not one of our templates: only what the client sent
            return value if _is_usable(value) else None
        query = queries[key]
        if query is None:
            return None
        if unresolved_template(value):
            value = _UNRESOLVED  # the client's template had no value for a token: not data
        elif paginated(value):
            if self._client is None:
                raise DataUnavailable(f"prefetch '{key}' ({query.relative()}) is one page of a "
                                      "longer result (link next) and the request has no "
                                      "fhirServer to read the rest from")
            self._count()
            given = len(_entries(value))  # the client's first page: the client's data
            result = self._bounded(self._checked(self._client.rest_of(value, f"prefetch '{key}' next page"),
                                                 query, given), query.resource_type)
            self._fetched[key] = result
            return result
        if _is_usable(value):
            return value
        if value is None:  # null: the client has no data for the key (2.0), taken at its word
            return None
        if self._client is None:  # absent or an OperationOutcome, nothing to fetch from
            why = ("was not prefetched" if value is _MISSING else
                   "was prefetched from an unresolved template" if value is _UNRESOLVED else
                   "failed in prefetch")
            raise DataUnavailable(f"prefetch '{key}' ({query.relative()}) {why} and the request "
                                  "has no fhirServer to fetch it from")
        result = self._fetch(query)
        self._fetched[key] = result
        return result

    def client_has_none(self, key: str) -> bool:
        """True when the client's prefetch for `key` is null: it has no data for it (2.0)."""
        return key in self._prefetch and self._prefetch[key] is None

    def _prefetch_index(self) -> dict[str, dict]:
        """"Type/id" -> resource over every usable prefetch value (Bundles: their entries)."""
        if self._index is None:
            index: dict[str, dict] = {}
            for value in self._prefetch.values():
                if not _is_usable(value):
                    continue
                resources = bundle_resources(value) if value["resourceType"] == "Bundle" else [value]
                for res in resources:
                    key = key_of(res)
                    if key is not None:
                        index.setdefault(key, res)
            self._index = index
        return self._index

    def read(self, reference: str) -> dict | None:
        """Read "Type/id" (a version is dropped, as hooks.fhir_read.normalize_reference does; an
        absolute URL only under fhirServer): from prefetch, else from fhirServer (None on 404)."""
        if self._client is not None:
            for base in (self._client.given_base, self._client.base_url):
                if reference.startswith(base + "/"):
                    reference = reference[len(base) + 1:]  # absolute, on fhirServer
                    break
        query = None if "://" in reference else Query.parse(normalize_reference(reference))
        if query is None or not query.is_read:
            raise ValueError(f"not a relative Type/id reference: {reference!r}")
        ref = query.relative()
        found = self._prefetch_index().get(ref)
        if found is not None:
            return found
        for key, q in self.queries().items():
            if q == query and self.client_has_none(key):
                return None  # the client said there is no such resource
        cache_key = "read:" + ref
        if cache_key in self._fetched:
            return self._fetched[cache_key]
        if self._client is None:
            raise DataUnavailable(f"{ref} is not in prefetch and the request has no fhirServer")
        result = self._fetch(query)
        self._fetched[cache_key] = result
        return result

    def search(self, resource_type: str, params: dict[str, str]) -> list[dict]:
        """Search: a prefetch template with the same query answers it; else fhirServer."""
        wanted = Query(resource_type, None, tuple(sorted((str(k), str(v)) for k, v in params.items())))
        for key, q in self.queries().items():
            if q == wanted:
                value = self.prefetched(key)
                return bundle_resources(value, resource_type) if _is_usable(value) else []
        cache_key = "search:" + repr(wanted)
        if cache_key in self._fetched:
            return self._fetched[cache_key]
        if self._client is None:
            raise DataUnavailable(f"{resource_type} search is not in prefetch and the request has "
                                  "no fhirServer")
        self._count()
        result = bundle_resources(self._bounded(self._checked(
            self._client.search(resource_type, list(wanted.params)), wanted), resource_type), resource_type)
        self._fetched[cache_key] = result
        return result

"""The EHR's FHIR server as the documentation app uses it: reads and writes with the launch's
access token, through Authlib's OAuth2Session (the token on every request, refreshed when it has
expired and a refresh token was offered). Every request is bounded (FLUORO_CDS_SMART_TIMEOUT per
connect and read, answers read up to MAX_ANSWER_BYTES); redirects are not followed.
"""
from __future__ import annotations

import json
from urllib.parse import quote

import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc6749.errors import OAuth2Error

MAX_ANSWER_BYTES = 4 * 1024 * 1024
FHIR_JSON = "application/fhir+json"


class Expired(Exception):
    """The launch's authorization is no longer valid (expired without a refresh token, refused
    by the server with 401, or the refresh was refused): the user launches the app again."""


class EhrError(Exception):
    """The EHR could not be read or written; the message is for the user (no token, no data)."""

    def __init__(self, message: str, status: int | None = None, outcome: str | None = None):
        super().__init__(message)
        self.status = status
        self.outcome = outcome  # the OperationOutcome's diagnostics, when the server sent one


def _outcome_text(body: object) -> str | None:
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [str(i.get("diagnostics") or (i.get("details") or {}).get("text") or i.get("code") or "")
                 for i in body.get("issue") or () if isinstance(i, dict)]
        text = "; ".join(t for t in texts if t)
        return text[:300] or None
    return None


class Ehr:
    """FHIR requests to `base` through `session` (an OAuth2Session holding the launch's token)."""

    def __init__(self, base: str, session: OAuth2Session):
        self.base = base.rstrip("/")
        self.session = session

    def _call(self, method: str, url: str, what: str, **kwargs) -> tuple[int, dict | None, requests.Response]:
        headers = {"Accept": FHIR_JSON}
        headers.update(kwargs.pop("headers", {}))
        try:
            resp = self.session.request(method, url, headers=headers, allow_redirects=False,
                                        stream=True, **kwargs)
        except (OAuthError, OAuth2Error):
            raise Expired() from None  # no refresh token, or the refresh was refused
        except requests.RequestException as exc:
            raise EhrError(f"the EHR's FHIR server could not be reached for {what} "
                           f"({type(exc).__name__})") from None
        try:
            raw = resp.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
        except (requests.RequestException, OSError) as exc:
            raise EhrError(f"the EHR's answer to {what} broke off ({type(exc).__name__})") from None
        finally:
            resp.close()
        if len(raw) > MAX_ANSWER_BYTES:
            raise EhrError(f"the EHR's answer to {what} is larger than {MAX_ANSWER_BYTES} bytes")
        if resp.status_code == 401:
            raise Expired()
        body = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
        return resp.status_code, body if isinstance(body, dict) else None, resp

    def read(self, key: str) -> dict | None:
        """GET [base]/Type/id; None on 404 / 410."""
        rtype, _, rid = key.partition("/")
        status, body, _ = self._call("GET", f"{self.base}/{quote(rtype)}/{quote(rid, safe='')}",
                                     f"reading {rtype}")
        if status in (404, 410):
            return None
        if status != 200 or body is None or body.get("resourceType") != rtype:
            raise EhrError(f"the EHR did not return the {rtype} (HTTP {status})", status, _outcome_text(body))
        return body

    def search(self, rtype: str, params: dict[str, str]) -> list[dict]:
        """The first page of [base]/Type?params (the app's searches are small)."""
        status, body, _ = self._call("GET", f"{self.base}/{quote(rtype)}", f"searching {rtype}",
                                     params=params)
        if status != 200 or body is None or body.get("resourceType") != "Bundle":
            raise EhrError(f"the EHR refused the {rtype} search (HTTP {status})", status, _outcome_text(body))
        return [e["resource"] for e in body.get("entry") or ()
                if isinstance(e, dict) and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == rtype]

    def supports_transaction(self) -> bool:
        """Whether the CapabilityStatement lists the system interaction ``transaction``."""
        try:
            status, body, _ = self._call("GET", f"{self.base}/metadata", "reading the CapabilityStatement")
        except EhrError:
            return False
        if status != 200 or body is None:
            return False
        return any(isinstance(i, dict) and i.get("code") == "transaction"
                   for rest in body.get("rest") or () if isinstance(rest, dict)
                   for i in rest.get("interaction") or ())

    def transaction(self, bundle: dict) -> dict:
        """POST the transaction Bundle to the base; the transaction-response Bundle."""
        status, body, _ = self._call("POST", self.base, "the transaction", json=bundle,
                                     headers={"Content-Type": FHIR_JSON})
        if status not in (200, 201) or body is None or body.get("resourceType") != "Bundle":
            raise EhrError(f"the EHR refused the transaction (HTTP {status}); nothing was written",
                           status, _outcome_text(body))
        return body

    def write(self, method: str, url: str, resource: dict, if_match: str | None = None) -> str:
        """POST or PUT one resource; the "Type/id" the server gives it."""
        headers = {"Content-Type": FHIR_JSON, "Prefer": "return=representation"}
        if if_match:
            headers["If-Match"] = if_match
        rtype = url.split("/", 1)[0]
        status, body, resp = self._call(method, f"{self.base}/{url}", f"writing the {rtype}",
                                        json=resource, headers=headers)
        if status not in (200, 201):
            raise EhrError(f"the EHR refused the {rtype} (HTTP {status})", status, _outcome_text(body))
        if body is not None and body.get("resourceType") == rtype and isinstance(body.get("id"), str):
            return f"{rtype}/{body['id']}"
        location = resp.headers.get("Location", "")
        parts = location.split("/_history")[0].rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == rtype:
            return f"{rtype}/{parts[-1]}"
        raise EhrError(f"the EHR stored the {rtype} but did not say its id")

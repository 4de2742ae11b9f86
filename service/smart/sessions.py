"""Server-side sessions of the SMART documentation app (docs/smart-app.md#sessions).

What a launch needs between requests (OAuth ``state``, the PKCE ``code_verifier``, the EHR's
endpoints, the access and refresh tokens, the launch context) is kept in the state database
(table ``smart_session``: shared by gunicorn workers and replicas), never in the browser. The
browser holds only the session's random id, signed with itsdangerous under a secret the state
database keeps (``service_secret``), in an HttpOnly, SameSite=Lax cookie scoped to ``/smart``.
Sessions are bounded: each lives FLUORO_CDS_SMART_SESSION_TTL seconds, and at most
:data:`MAX_SESSIONS` live at once (a new launch past that is refused with 503). Nothing here is
logged.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass

from flask import Request, Response
from itsdangerous import BadSignature, URLSafeSerializer

from ..state import StateStore
from .paths import SMART_PREFIX

COOKIE = "fluoro_cds_smart"
MAX_SESSIONS = 10_000
_SALT = "fluoro-cds-smart-session"
_SECRET_NAME = "smart-session-cookie"


class SessionsFull(Exception):
    """MAX_SESSIONS live sessions exist: no new launch until some expire."""


@dataclass
class Sessions:
    """Sessions in `state`, each living `ttl` seconds."""

    state: StateStore
    ttl: int

    def __post_init__(self) -> None:
        self._signer: URLSafeSerializer | None = None

    @property
    def signer(self) -> URLSafeSerializer:
        if self._signer is None:  # on first use: the state database is read once per process
            self._signer = URLSafeSerializer(self.state.secret(_SECRET_NAME, secrets.token_urlsafe(48)),
                                             salt=_SALT)
        return self._signer

    def start(self, data: dict) -> str:
        """A new session holding `data`; its id (SessionsFull past MAX_SESSIONS)."""
        sid = secrets.token_urlsafe(32)
        if not self.state.put_session(sid, time.time() + self.ttl, json.dumps(data), MAX_SESSIONS):
            raise SessionsFull()
        return sid

    def save(self, sid: str, data: dict) -> None:
        """Replace the data of session `sid` (its lifetime starts again)."""
        if not self.state.put_session(sid, time.time() + self.ttl, json.dumps(data), MAX_SESSIONS):
            raise SessionsFull()

    def load(self, request: Request) -> tuple[str, dict] | None:
        """(id, data) of the request's session; None when it has none, or it is forged or expired."""
        raw = request.cookies.get(COOKIE)
        if not raw or len(raw) > 512:
            return None
        try:
            sid = self.signer.loads(raw)
        except BadSignature:
            return None
        if not isinstance(sid, str):
            return None
        data = self.state.get_session(sid)
        if data is None:
            return None
        return sid, json.loads(data)

    def end(self, sid: str) -> None:
        self.state.delete_session(sid)

    def set_cookie(self, resp: Response, sid: str, secure: bool) -> None:
        resp.set_cookie(COOKIE, self.signer.dumps(sid), max_age=self.ttl, path=SMART_PREFIX,
                        httponly=True, samesite="Lax", secure=secure)

"""What one app instance holds for its requests: settings, services, reference data, state, verifier.

Built once by :func:`service.app.create_app` and kept in ``app.extensions["fluoro_cds"]``;
blueprints read it with :func:`runtime`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

from flask import Flask, current_app

from hooks.services import CdsService
from nccidata.live import LiveReference

from .auth import JwtVerifier
from .errors import ApiError
from .fhir_access import FhirClientSettings
from .jsonio import dumps
from .settings import Settings
from .smart.paths import SMART_LAUNCH_PATH
from .calls import after_calls
from .state import StateStore

log = logging.getLogger("fluoro_cds")

EXTENSION_KEY = "fluoro_cds"
RELEASE_LABEL_TTL = 60.0  # seconds the audit's data-release label is cached


class ReleaseLabel:
    """The reference data release in service (for audit records), cached for a minute."""

    def __init__(self, live: LiveReference):
        self._live = live
        self._of = None  # the reference data the cached label describes
        self._label: str | None = None
        self._until = 0.0

    def get(self) -> str | None:
        now = time.monotonic()
        reference = self._live.current()
        if now >= self._until or reference is not self._of:  # expired, or the first import landed
            self._of = reference
            try:
                info = reference.describe()
                self._label = str(info.get("label") or info.get("source") or "")[:200] or None
            except Exception:  # the audit must not fail the request
                self._label = None
            self._until = now + RELEASE_LABEL_TTL
        return self._label


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    services: dict[str, CdsService]  # by id, in discovery order
    live: LiveReference  # the store once it holds releases, else the starter set
    state: StateStore
    verifier: JwtVerifier | None  # None when FLUORO_CDS_AUTH=off
    release: ReleaseLabel
    client_settings: FhirClientSettings
    discovery_body: bytes
    smart_launch: str | None = None  # the documentation app's launch URL; None: built per request

    @classmethod
    def build(cls, settings: Settings, services: Sequence[CdsService]) -> "Runtime":
        live = LiveReference(settings.db_path)
        state = StateStore(settings.state_db_path, settings.audit_writer)
        state.before_store(after_calls)  # the calls' log lines and metrics, a batch at a time
        verifier = JwtVerifier(settings, state) if settings.auth == "jwt" else None
        if verifier is not None and not settings.base_url:
            log.warning("FLUORO_CDS_AUTH=jwt without FLUORO_CDS_BASE_URL: the JWT aud is checked "
                        "against a URL built from the request's Host header; set FLUORO_CDS_BASE_URL")
        return cls(
            settings=settings, services={s.id: s for s in services}, live=live, state=state,
            verifier=verifier, release=ReleaseLabel(live),
            client_settings=FhirClientSettings(connect_timeout=settings.fhir_connect_timeout,
                                               read_timeout=settings.fhir_timeout,
                                               max_pages=settings.fhir_max_pages,
                                               max_resources=settings.fhir_max_resources,
                                               deadline=settings.fhir_deadline,
                                               max_answer_bytes=settings.fhir_max_answer_bytes),
            discovery_body=dumps({"services": [s.discovery(settings.defaults) for s in services]}),
            smart_launch=settings.smart_launch_url or (
                settings.base_url.rstrip("/") + SMART_LAUNCH_PATH if settings.base_url else None))

    def install(self, app: Flask) -> None:
        app.extensions[EXTENSION_KEY] = self
        # kept for callers and tests that look them up by these names
        app.config["FLUORO_SETTINGS"] = self.settings
        app.config["FLUORO_REFERENCE"] = self.live
        app.config["FLUORO_STATE"] = self.state

    def service(self, service_id: str) -> CdsService:
        """The service `service_id`; 404 when there is none."""
        service = self.services.get(service_id)
        if service is None:
            raise ApiError(404, "unknown CDS service (the services are listed at GET /cds-services)", code="not-found")
        return service


def runtime() -> Runtime:
    """The Runtime of the app handling the current request (the app read once, not through the
    proxy: service/cds_hooks.py says why)."""
    return current_app._get_current_object().extensions[EXTENSION_KEY]  # type: ignore[attr-defined]

"""Flask application factory: CDS Hooks 2.0 discovery, invocation, feedback, health.

Protocol, settings and security are described in docs/service.md. A request passes the CORS
preflight and security headers (service/cors.py), then the CDS Hooks blueprint
(service/cds_hooks.py: authenticate -> parse_hook_request -> run_handler -> record_call) or the
health blueprint (service/health.py). A service call (POST /cds-services/{id}) takes the same
steps outside Flask's request cycle (service/call_path.py). Every error is a JSON OperationOutcome (service/errors.py).
"""
from __future__ import annotations

from typing import Sequence

from flask import Flask

from hooks.services import SERVICES, CdsService

from . import admin, cds_hooks, health, logs, metrics, openapi
from .call_path import install_call_path
from .cors import install_cors
from .errors import register_error_handlers
from .runtime import Runtime
from .settings import Settings
from .smart import views as smart_views
from .state import StateError
from .validation import warm_up

MAX_BODY_BYTES = 16 * 1024 * 1024


def create_app(settings: Settings | None = None,
               services: Sequence[CdsService] | None = None) -> Flask:
    """The Flask app. `services` replaces the shipped registry (tests register their own)."""
    settings = settings or Settings.from_env()
    app = Flask("fluoro_cds")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    rt = Runtime.build(settings, tuple(SERVICES if services is None else services))
    rt.install(app)
    warm_up()  # compile every schema now, so the first request is not slow
    register_error_handlers(app)
    app.register_error_handler(StateError, health.state_unavailable)  # 503, not 500
    answer_headers = install_cors(app, settings)  # before the blueprints: preflights are never authenticated
    if rt.verifier is not None:  # FLUORO_CDS_AUTH=jwt; otherwise no per-request check at all
        app.before_request(cds_hooks.authenticate)
    app.register_blueprint(cds_hooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(metrics.blueprint())
    app.register_blueprint(openapi.blueprint())
    app.register_blueprint(smart_views.bp)  # the SMART documentation app (docs/smart-app.md)
    logs.configure(settings.log_format)
    install_call_path(app, rt, answer_headers)  # POST /cds-services/{id} outside Flask's request cycle
    return app

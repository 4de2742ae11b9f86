"""The CDS service call, ``POST /cds-services/{id}``, served as plain WSGI in front of Flask.

A call needs nothing of Flask's request cycle: the Request and its context, URL routing, the
before- and after-request hooks, signals and the Response object cost ~0.49 M instructions of a
claim-review call's ~2.46 M (benchmarks/RESULTS.md, "Load benchmark"), where the call's own
reading of the environ and writing of its answer cost a few thousand. :class:`CallPath` wraps the
app's ``wsgi_app`` (Flask's documented place for WSGI middleware) and answers a POST to
``/cds-services/{id}`` of a registered service itself, with the steps of the Flask path
(:func:`service.cds_hooks.caller_claims`, then :func:`service.cds_hooks.answer_call`) and the
headers every answer carries (:class:`service.cors.AnswerHeaders`). An error is answered by the
app's own error handlers, in a request context pushed for it, exactly as the Flask path answers
it (after-request hooks included). Everything else (other methods and paths, an unknown service,
a path Flask's routing would normalise) goes to Flask unchanged; tests/test_call_path.py checks
that both paths answer every kind of call alike.
"""
from __future__ import annotations

from typing import Callable, Iterable

from flask import Flask

from .cds_hooks import PREFIX, answer_call, body_limit, caller_claims
from .cors import AnswerHeaders
from .runtime import Runtime

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]

_CALL = PREFIX + "/"  # /cds-services/{id}: the service id follows


class CallPath:
    """WSGI middleware: service calls answered here, every other request by `flask_app`."""

    def __init__(self, app: Flask, rt: Runtime, answer_headers: AnswerHeaders) -> None:
        self.app = app
        self.flask_wsgi: WsgiApp = app.wsgi_app
        self.rt = rt
        self.answer_headers = answer_headers

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        service = None
        if environ.get("REQUEST_METHOD") == "POST" and path.startswith(_CALL):
            # exactly /cds-services/{id} of a registered service (ids are plain ASCII names:
            # PATH_INFO needs no decoding to match one); anything else is Flask's to route
            service = self.rt.services.get(path[len(_CALL):])
        if service is None:
            return self.flask_wsgi(environ, start_response)
        rt = self.rt
        try:
            claims = caller_claims(rt, environ, path) if rt.verifier is not None else None
            body = answer_call(rt, service, environ, body_limit(self.app), claims)
        except Exception as exc:  # answered by the app's error handlers, as on the Flask path
            return self._error(exc, environ, start_response)
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        headers += self.answer_headers(environ)
        start_response("200 OK", headers)
        return [body]

    def _error(self, exc: Exception, environ: dict, start_response: Callable) -> Iterable[bytes]:
        """The answer of the app's error handlers to `exc` raised by a call, with its
        after-request hooks: what Flask answers when a view raises it."""
        app = self.app
        with app.request_context(environ):
            try:
                response = app.finalize_request(app.handle_user_exception(exc))
            except Exception as unhandled:  # as Flask's wsgi_app: its 500 handler
                response = app.handle_exception(unhandled)
            return response(environ, start_response)


def install_call_path(app: Flask, rt: Runtime, answer_headers: AnswerHeaders) -> None:
    """Serve `app`'s service calls through :class:`CallPath`."""
    app.wsgi_app = CallPath(app, rt, answer_headers)  # type: ignore[method-assign]

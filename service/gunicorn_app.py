"""Run the app under gunicorn with deploy/gunicorn.conf.py settings, from the CLI."""
from __future__ import annotations

from gunicorn.app.base import BaseApplication

import multiprocessing


def gunicorn_defaults() -> dict:
    """Production defaults (also loaded by deploy/gunicorn.conf.py): gthread workers."""
    return {
        "worker_class": "gthread",
        "workers": max(2, multiprocessing.cpu_count()),
        "threads": 4,
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,  # no access log by default: URLs may carry ids
        "errorlog": "-",
        "loglevel": "info",
        # gunicorn >= 25 opens a control socket at $XDG_RUNTIME_DIR/gunicorn.ctl or
        # ~/.gunicorn/gunicorn.ctl, one path for every instance of the machine's user (and a
        # worker fails to boot when HOME is not writable): none here.
        "control_socket_disable": True,
    }


class _App(BaseApplication):
    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self):
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self):
        from .app import create_app

        return create_app()


def run_gunicorn(host: str, port: int, workers: int | None) -> int:
    options = gunicorn_defaults()
    options["bind"] = f"{host}:{port}"
    if workers:
        options["workers"] = workers
    _App(options).run()
    return 0

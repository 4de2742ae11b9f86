"""Run the app under gunicorn with deploy/gunicorn.conf.py settings, from the CLI.

`fluoro-cds serve` puts nginx in front (service/front.py): gunicorn listens on a Unix socket of
this instance and nginx, started when gunicorn is ready and stopped when it exits, on host:port.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys

from gunicorn.app.base import BaseApplication

from .front import FrontError, FrontSettings, NginxFront
from .metrics import prepare_multiprocess


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


def run_gunicorn(host: str, port: int, workers: int | None,
                 front: FrontSettings | None = None) -> int:
    """gunicorn on host:port (front None), or behind an nginx front on host:port."""
    options = gunicorn_defaults()
    if workers:
        options["workers"] = workers
    prepare_multiprocess(options)  # /metrics adds up every worker's values
    if front is None:
        options["bind"] = f"{host}:{port}"
        _App(options).run()
        return 0
    try:
        nginx = NginxFront(host, port, front)
    except FrontError as exc:
        print(f"fluoro-cds: {exc}", file=sys.stderr)
        return 2
    options["bind"] = f"unix:{nginx.upstream}"
    master = os.getpid()

    def when_ready(_server) -> None:  # gunicorn listens: start the front (FrontError stops serve)
        nginx.start(on_exit=lambda: os.kill(master, signal.SIGTERM))

    def on_exit(_server) -> None:
        nginx.stop()

    options["when_ready"] = when_ready
    options["on_exit"] = on_exit
    try:
        _App(options).run()
    except FrontError as exc:
        print(f"fluoro-cds: the nginx front did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        nginx.stop()
    return 0

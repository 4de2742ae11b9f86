"""The production front: nginx in front of gunicorn, started and stopped by ``fluoro-cds serve``.

gunicorn's gthread workers read a request's headers and body in a worker thread without a
time limit, so a few slow clients (slow headers, slow bodies, a ``Content-Length`` longer than
the body) hold every thread. nginx reads each request whole, event-driven, before it passes it
on: ``client_header_timeout`` bounds the headers, ``client_body_timeout`` each pause in the body
(408, connection closed), ``client_max_body_size`` the body, with or without chunked encoding
(413). gunicorn then only ever sees complete requests, over a Unix socket in a directory of
this instance (nothing shared with other instances, removed on exit).

Every answer nginx makes itself (400, 408, 413, 414, 494, 502, 503, 504) is a JSON
OperationOutcome like the service's own errors (service/errors.py).
"""
from __future__ import annotations

import ctypes
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("fluoro_cds.front")

# status -> (OperationOutcome issue code, message) for the answers nginx gives itself
NGINX_ERRORS = {
    400: ("structure", "malformed HTTP request"),
    408: ("timeout", "the request was not received within the client timeout"),
    413: ("too-costly", "request body larger than {max_body} bytes"),
    414: ("too-costly", "request line too long"),
    494: ("too-costly", "request headers too large"),
    502: ("transient", "the service is not available"),
    503: ("transient", "the service is not available"),
    504: ("timeout", "the service did not answer in time"),
}


class FrontError(RuntimeError):
    """nginx could not be started (not installed, port taken, bad configuration)."""


@dataclass(frozen=True)
class FrontSettings:
    header_timeout: float = 10.0  # FLUORO_CDS_CLIENT_HEADER_TIMEOUT: whole request head, seconds
    body_timeout: float = 10.0  # FLUORO_CDS_CLIENT_BODY_TIMEOUT: longest pause in a body, seconds
    max_body: int = 16 * 1024 * 1024  # bytes (service.app.MAX_BODY_BYTES)
    app_timeout: float = 35.0  # seconds nginx waits for gunicorn's answer (its timeout is 30)


def find_nginx() -> str | None:
    """The nginx program: on PATH, else Debian's /usr/sbin/nginx."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def _error_body(status: int, settings: FrontSettings) -> str:
    code, message = NGINX_ERRORS[status]
    message = message.format(max_body=settings.max_body)
    body = json.dumps({"resourceType": "OperationOutcome", "error": message,
                       "issue": [{"severity": "error", "code": code, "diagnostics": message}]})
    return body.replace("\\", "\\\\").replace("'", "\\'")


# nginx keeps idle connections to gunicorn for reuse; gunicorn closes a connection idle for its
# `keepalive` seconds (service/gunicorn_app.py, 5). A request nginx writes on a connection gunicorn
# is closing fails ("writev() failed (32: Broken pipe) while sending request to upstream") and a
# POST is not retried: a 502 (four in 24,000 soak requests with nginx's default of 60 s). nginx
# drops its idle upstream connections well before gunicorn does.
UPSTREAM_IDLE_S = 2


def nginx_config(run_dir: Path, host: str, port: int, upstream: Path,
                 settings: FrontSettings) -> str:
    """The nginx.conf of one instance: listen on host:port, pass to the gunicorn socket."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    errors = "\n".join(
        f"        error_page {status} @e{status};\n"
        f"        location @e{status} {{ default_type application/json;"
        f" add_header Cache-Control no-store always;"
        f" return {status if status != 494 else 400} '{_error_body(status, settings)}'; }}"
        for status in NGINX_ERRORS)
    return f"""# fluoro-cds front (service/front.py), written for one instance
{user}
daemon off;
master_process on;
worker_processes 1;
pid {run_dir}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    server_tokens off;
    default_type application/octet-stream;
    client_body_temp_path {run_dir}/body;
    proxy_temp_path {run_dir}/proxy;
    fastcgi_temp_path {run_dir}/fastcgi;
    uwsgi_temp_path {run_dir}/uwsgi;
    scgi_temp_path {run_dir}/scgi;
    client_header_timeout {settings.header_timeout:g}s;
    client_body_timeout {settings.body_timeout:g}s;
    client_max_body_size {settings.max_body};
    client_body_buffer_size 1m;
    large_client_header_buffers 4 16k;
    keepalive_timeout 5s;
    send_timeout 30s;
    reset_timedout_connection on;
    upstream fluoro_cds_app {{
        server unix:{upstream};
        keepalive 32;
        keepalive_timeout {UPSTREAM_IDLE_S}s;
    }}
    server {{
        listen {listen} backlog=2048;
        location / {{
            proxy_pass http://fluoro_cds_app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_request_buffering on;
            proxy_buffering on;
            proxy_connect_timeout 5s;
            proxy_read_timeout {settings.app_timeout:g}s;
            proxy_send_timeout {settings.app_timeout:g}s;
            proxy_intercept_errors off;
        }}
{errors}
    }}
}}
"""


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux)
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class NginxFront:
    """One nginx instance in front of one gunicorn socket; :meth:`start` and :meth:`stop`."""

    def __init__(self, host: str, port: int, settings: FrontSettings, nginx: str | None = None):
        self.host, self.port, self.settings = host, port, settings
        self.nginx = nginx or find_nginx()
        if self.nginx is None:
            raise FrontError("nginx is not installed (Debian: apt-get install nginx); it reads "
                             "requests in front of gunicorn so slow clients cannot hold its "
                             "workers. `fluoro-cds serve --direct` runs gunicorn alone (only "
                             "behind another reverse proxy)")
        self.run_dir = Path(tempfile.mkdtemp(prefix="fluoro-cds-front-"))
        self.upstream = self.run_dir / "app.sock"
        self.proc: subprocess.Popen | None = None
        self._stopping = False
        self._owner = os.getpid()  # forked gunicorn workers unwinding this stack must not stop it

    def write_config(self) -> Path:
        conf = self.run_dir / "nginx.conf"
        conf.write_text(nginx_config(self.run_dir, self.host, self.port, self.upstream, self.settings))
        return conf

    def start(self, on_exit=None, wait: float = 10.0) -> None:
        """Start nginx and wait until it accepts connections; FrontError when it does not.
        `on_exit` is called (from a thread) if nginx ends before :meth:`stop`."""
        conf = self.write_config()
        self.proc = subprocess.Popen([self.nginx, "-p", str(self.run_dir), "-c", str(conf),
                                      "-e", "stderr"], stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FrontError(f"nginx exited with code {self.proc.returncode} "
                                 f"(is {self.host}:{self.port} free?)")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            self.stop()
            raise FrontError(f"nginx did not listen on {self.host}:{self.port} within {wait:g} s")
        if on_exit is not None:
            threading.Thread(target=self._watch, args=(on_exit,), name="nginx-watch",
                             daemon=True).start()

    def _watch(self, on_exit) -> None:
        assert self.proc is not None
        try:
            self.proc.wait()
        except ChildProcessError:  # reaped by gunicorn's SIGCHLD handler
            pass
        if not self._stopping:
            log.error("nginx (the front) ended; stopping the service")
            on_exit()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop nginx (fast shutdown, then kill) and remove this instance's directory; only in
        the process that made this front (a no-op in gunicorn's forked workers)."""
        if os.getpid() != self._owner:
            return
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            except ChildProcessError:
                pass
        shutil.rmtree(self.run_dir, ignore_errors=True)

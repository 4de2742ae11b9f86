"""Start `fluoro-cds serve` (gunicorn) as a real process on 127.0.0.1 for a test, and stop it.

Every wait is bounded; the process is killed when it does not stop by itself."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.fhir_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def serve_env(tmp_path: Path, **extra: str) -> dict:
    """The environment of a served process: no inherited FLUORO_CDS_ settings, the state DB and
    the user data dir in `tmp_path` (so no reference store: the embedded starter set)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUORO_CDS_")}
    env.update(PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(tmp_path / "data"),
               FLUORO_CDS_STATE_DB=str(tmp_path / "state.sqlite"))
    env.update(extra)
    return env


def post_on_new_connections(url: str, body: dict, n: int) -> None:
    """POST `body` to `url` `n` times, each on a new connection (gunicorn spreads them over its
    workers); every answer must be 200."""
    for _ in range(n):
        resp = requests.post(url, json=body, timeout=20, headers={"Connection": "close"})
        assert resp.status_code == 200, resp.status_code


class Served:
    """A `fluoro-cds serve` process; `url` is its base URL once it answers /healthz."""

    def __init__(self, env: dict, workers: int = 1, port: int | None = None, timeout: float = 60,
                 args: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(env.get("TMPDIR", "/tmp")) / f"fluoro-serve-{self.port}.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--workers", str(workers), *args],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:  # gunicorn listens before its workers have loaded the app: wait for an answer
                if requests.get(self.url + "/healthz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"serve did not start: {self.output()[-3000:]}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    def __enter__(self) -> "Served":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

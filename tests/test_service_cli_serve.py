"""`fluoro-cds serve` starts a real server (gunicorn) that answers discovery."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.fhir_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path, **extra) -> dict:
    """FLUORO_CDS_DB unset and the user data dir in tmp_path: the default store (absent here),
    so the embedded starter set, as on a fresh machine."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), XDG_DATA_HOME=str(tmp_path / "data"),
               FLUORO_CDS_STATE_DB=str(tmp_path / "state.sqlite"))
    for name in [n for n in env if n.startswith("FLUORO_CDS_") and n != "FLUORO_CDS_STATE_DB"]:
        env.pop(name, None)
    env.update(extra)
    return env


def test_serve_answers_discovery(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        resp = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # gunicorn listens before its worker has loaded the app: wait for an answer
                resp = requests.get(f"http://127.0.0.1:{port}/cds-services", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.2)
        assert resp is not None, proc.stdout.read().decode(errors="replace") if proc.poll() is not None else "timeout"
        assert resp.status_code == 200
        assert len(resp.json()["services"]) == 3
        ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
        assert ready.status_code == 200
        assert ready.json()["data"]["source"] == "starter"  # which reference data is in service
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.parametrize("variable, value", [
    ("FLUORO_CDS_AUTH", "jwt"),  # no trusted issuers
    ("FLUORO_CDS_DEFAULTS", '{"max-cardz": 2}'),  # unknown option
    ("FLUORO_CDS_FHIR_TIMEOUT", "-1"),
    ("FLUORO_CDS_DB", "/nonexistent/ncci.sqlite"),  # set but absent
])
def test_serve_with_bad_settings_exits_2_naming_the_variable(tmp_path, variable, value):
    result = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "1"],
                            cwd=ROOT, env=_env(tmp_path, **{variable: value}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    wanted = "FLUORO_CDS_TRUSTED_ISSUERS" if variable == "FLUORO_CDS_AUTH" else variable
    assert wanted in result.stderr
    assert value not in result.stderr or value == "jwt"  # the value is never echoed


def test_serve_refuses_jwt_without_fhir_allowlist(tmp_path):
    env = _env(tmp_path, FLUORO_CDS_AUTH="jwt",
               FLUORO_CDS_TRUSTED_ISSUERS='{"https://ehr.test": "https://ehr.test/jwks.json"}')
    result = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--port", "1"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "FLUORO_CDS_FHIR_ALLOWLIST" in result.stderr


def test_serve_without_writable_home_has_no_control_socket(tmp_path):
    """gunicorn's control socket would go to ~/.gunicorn/, shared by every instance: none."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = _env(tmp_path, HOME=str(home))
    env.pop("XDG_RUNTIME_DIR", None)
    proc, port = _start(tmp_path, env)
    try:
        assert requests.get(f"http://127.0.0.1:{port}/cds-services", timeout=10).status_code == 200
    finally:
        _stop(proc)
    out = proc.stdout.read().decode(errors="replace")
    assert "control" not in out.lower(), out


def _start(tmp_path, env: dict, workers: int = 1):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--workers", str(workers)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:  # gunicorn listens before its workers have loaded the app: wait for an answer
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return proc, port
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(proc.stdout.read().decode(errors="replace"))


def _stop(proc):
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_jwt_replay_is_refused_across_gunicorn_workers(tmp_path):
    import json

    from tests.service_support import StaticJsonServer, TokenFactory, ec_key

    key = ec_key("ec-1")
    jwks = StaticJsonServer({"/jwks.json": {"keys": [key.public_jwk]}})
    base = "http://cds.test"
    env = _env(tmp_path, FLUORO_CDS_AUTH="jwt", FLUORO_CDS_BASE_URL=base,
               FLUORO_CDS_FHIR_ALLOWLIST="https://fhir.test/r4",
               FLUORO_CDS_TRUSTED_ISSUERS=json.dumps({"https://ehr.test": jwks.url("/jwks.json")}))
    proc, port = _start(tmp_path, env, workers=2)
    try:
        tokens = TokenFactory("https://ehr.test", {"ec-1": key}, "ec-1")
        url = f"http://127.0.0.1:{port}/cds-services"
        fresh = [requests.get(url, headers={"Authorization": f"Bearer {tokens.mint(base + '/cds-services')}"},
                              timeout=10).status_code for _ in range(6)]
        assert fresh == [200] * 6
        token = tokens.mint(base + "/cds-services")
        first = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert first.status_code == 200
        # new connections each time: gunicorn spreads them over both workers
        replays = [requests.get(url, headers={"Authorization": f"Bearer {token}", "Connection": "close"},
                                timeout=10) for _ in range(8)]
        assert [r.status_code for r in replays] == [401] * 8
        assert all("replay" in r.json()["error"] for r in replays)
    finally:
        _stop(proc)
        jwks.close()


def test_gunicorn_with_the_deploy_config_checks_settings_too(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy/gunicorn.conf.py"),
                             "service.app:create_app()"], cwd=tmp_path,
                            env=_env(tmp_path, FLUORO_CDS_DEFAULTS='{"max-cardz": 1}'),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "FLUORO_CDS_DEFAULTS" in result.stderr

"""deploy/: the container file, the Kubernetes manifests, the systemd units and the nginx proxy,
checked against the code (ports, probe paths, every environment variable a real setting). No
container engine runs here, so the Containerfile is parsed and checked, not built; the systemd
units go through `systemd-analyze verify`; nginx runs for real in front of the service."""
from __future__ import annotations

import datetime
import ipaddress
import json
import time
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml

from service.settings import Settings
from tests.fhir_server import free_port
from tests.serve_support import Served, serve_env

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SETTINGS_SOURCE = (ROOT / "service" / "settings.py").read_text()
PORT = 8080  # `fluoro-cds serve` default, the port every deploy file uses


def real_settings() -> set[str]:
    return set(re.findall(r'"(FLUORO_CDS_[A-Z_]+)"', SETTINGS_SOURCE))


def manifests() -> list[dict]:
    return [d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "fluoro-cds.yaml").read_text()) if d]


def by_kind(kind: str) -> list[dict]:
    return [d for d in manifests() if d["kind"] == kind]


def app_routes() -> set[str]:
    from service.app import create_app

    app = create_app(Settings(db_path="/nonexistent/ncci.sqlite", state_db_path=":memory:"))
    return {r.rule for r in app.url_map.iter_rules()}


def test_every_kind_an_operator_needs_is_there():
    kinds = {d["kind"] for d in manifests()}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget",
            "PersistentVolumeClaim", "Job", "CronJob"} <= kinds


def test_deployment_probes_ports_and_resources_match_the_code():
    [deploy] = by_kind("Deployment")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    routes = app_routes()
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz" in routes
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" in routes
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": PORT}
    cmd = container["command"]
    assert cmd[:2] == ["fluoro-cds", "serve"] and cmd[cmd.index("--port") + 1] == str(PORT)
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert deploy["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    [svc] = by_kind("Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    [pdb] = by_kind("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < deploy["spec"]["replicas"]
    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes


def test_configmap_and_secret_hold_only_real_settings_that_pass_the_checks():
    [config] = by_kind("ConfigMap")
    [secret] = by_kind("Secret")
    env = {**config["data"], **secret["stringData"]}
    assert set(env) <= real_settings(), set(env) - real_settings()
    assert secret["stringData"]["FLUORO_CDS_STATE_DB"].startswith("postgresql://")
    settings = Settings.from_env(env)  # every value is valid (serving adds only file checks)
    assert settings.auth == "jwt" and settings.base_url == "https://cds.example.org"
    for doc in manifests():  # env vars given one by one elsewhere are real settings too
        for c in _containers(doc):
            for e in c.get("env", []):
                assert e["name"] in real_settings(), e["name"]
            refs = {r.get("configMapRef", r.get("secretRef", {})).get("name") for r in c.get("envFrom", [])}
            assert refs <= {"fluoro-cds-settings", "fluoro-cds-state"}


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec", {}).get("containers", [])


def test_ncci_database_is_on_a_volume_the_import_job_writes():
    [deploy] = by_kind("Deployment")
    [config] = by_kind("ConfigMap")
    [container] = deploy["spec"]["template"]["spec"]["containers"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    db = config["data"]["FLUORO_CDS_DB"]
    [mount] = [m for path, m in mounts.items() if db.startswith(path + "/")]
    assert mount.get("readOnly") is True
    [job] = by_kind("Job")
    [importer] = _containers(job)
    assert "ncci import" in " ".join(importer["command"])
    assert any(db.startswith(m["mountPath"] + "/") for m in importer["volumeMounts"])
    [cron] = by_kind("CronJob")
    assert _containers(cron)[0]["command"] == ["fluoro-cds", "state", "prune"]


def test_containerfile_is_slim_non_root_with_volume_and_healthcheck():
    lines = [l for l in (DEPLOY / "Containerfile").read_text().replace("\\\n", " ").splitlines()
             if l.strip() and not l.lstrip().startswith("#")]
    instr = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
    froms = [a for i, a in instr if i == "FROM"]
    assert len(froms) == 1 and re.fullmatch(r"python:3\.\d+-slim", froms[0].strip())
    [user] = [a.strip() for i, a in instr if i == "USER"]
    assert user not in ("0", "root")
    assert [a for i, a in instr if i == "EXPOSE"] == [str(PORT)]
    [health] = [a for i, a in instr if i == "HEALTHCHECK"]
    assert f"127.0.0.1:{PORT}/healthz" in health
    assert any(i == "VOLUME" for i, _ in instr)
    for i, a in instr:
        if i == "COPY":
            for src in a.split()[:-1]:
                assert (ROOT / src).exists(), src
        if i == "ENV":
            for name in re.findall(r"(FLUORO_CDS_[A-Z_]+)=", a):
                assert name in real_settings(), name
    run = " ".join(a for i, a in instr if i == "RUN")
    assert "pip install" in run and ".[postgres]" in run and "useradd" in run
    assert instr[-1][0] == "CMD" and '"serve"' in instr[-1][1]


def _unit_envs(text: str) -> set[str]:
    return set(re.findall(r"Environment=(FLUORO_CDS_[A-Z_]+)=", text))


def test_systemd_units_verify(tmp_path):
    units = ["fluoro-cds.service", "fluoro-cds-prune.service", "fluoro-cds-prune.timer"]
    for name in units:
        assert _unit_envs((DEPLOY / name).read_text()) <= real_settings()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    exe = shutil.which("fluoro-cds") or str(Path(__file__).resolve().parent.parent / ".venv/bin/fluoro-cds")
    for name in units:  # the units as shipped, with ExecStart pointing at this machine's install
        text = (DEPLOY / name).read_text().replace("/opt/fluoro-cds/venv/bin/fluoro-cds", exe)
        (tmp_path / name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no",
                             *[str(tmp_path / n) for n in units]],
                            capture_output=True, text=True, timeout=60)
    problems = [l for l in result.stderr.splitlines()
                if l.strip() and "fluoro-cds" in l and "EnvironmentFile" not in l]
    if result.returncode != 0 and "System has not been booted with systemd" in result.stderr:
        pytest.skip("systemd-analyze verify needs a systemd-booted machine")
    assert not problems, result.stderr


def _serve_args(command: list[str]) -> list[str]:
    """The options of a `fluoro-cds serve` command line, --host/--port and their values left out."""
    args = command[command.index("serve") + 1:]
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--host", "--port", "--workers"):
            skip = True
        else:
            out.append(a)
    return out


def _unit_command() -> list[str]:
    [line] = [l for l in (DEPLOY / "fluoro-cds.service").read_text().splitlines()
              if l.startswith("ExecStart=")]
    return line[len("ExecStart="):].split()


def test_one_nginx_in_each_layout():
    """Behind deploy/nginx.conf (the systemd layout) serve runs --direct; in the container and
    on Kubernetes nothing is in front inside the pod, so serve keeps its own nginx front."""
    assert _serve_args(_unit_command()) == ["--direct"]
    assert "127.0.0.1:%d" % PORT in (DEPLOY / "nginx.conf").read_text()
    cmd = json.loads(next(l for l in (DEPLOY / "Containerfile").read_text().splitlines()
                          if l.startswith("CMD [\"fluoro-cds\"")).split(" ", 1)[1])
    assert "--direct" not in cmd
    deployment = next(d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "fluoro-cds.yaml").read_text())
                      if d and d.get("kind") == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert "--direct" not in container["command"]


def _descendants(pid: int) -> list[str]:
    """The command names of every process under `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        p = int(stat.parent.name)
        names[p] = text[text.index("(") + 1:text.rindex(")")]
        children.setdefault(int(text[text.rindex(")") + 2:].split()[1]), []).append(p)
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(names.get(p, ""))
        todo += children.get(p, [])
    return out


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cds.example.org")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("cds.example.org"),
                                                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    crt, pem = tmp_path / "tls.crt", tmp_path / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_nginx_terminates_tls_in_front_of_the_service(tmp_path):
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.skip("nginx is not installed (tools/test-deps.sh installs Debian's package)")
    from tests.service_support import StaticJsonServer, TokenFactory, ec_key

    crt, pem = _self_signed(tmp_path)
    key = ec_key("ec-1")
    jwks = StaticJsonServer({"/jwks.json": {"keys": [key.public_jwk]}})
    tokens = TokenFactory("https://ehr.example.org", {"ec-1": key}, "ec-1")
    base = "https://cds.example.org"  # FLUORO_CDS_BASE_URL that deploy/nginx.conf implies
    conf = (DEPLOY / "nginx.conf").read_text()
    assert f"FLUORO_CDS_BASE_URL={base}" in conf and "server_name cds.example.org;" in conf
    tls_port = free_port()
    env = serve_env(tmp_path, FLUORO_CDS_AUTH="jwt", FLUORO_CDS_BASE_URL=base,
                    FLUORO_CDS_FHIR_ALLOWLIST="https://ehr.example.org/fhir",
                    FLUORO_CDS_TRUSTED_ISSUERS='{"https://ehr.example.org": "%s"}' % jwks.url("/jwks.json"))
    with Served(env, args=tuple(_serve_args(_unit_command()))) as served:  # as the unit runs it
        assert not [n for n in _descendants(served.proc.pid) if n.startswith("nginx")]  # one nginx
        site = (conf.replace("127.0.0.1:8080", f"127.0.0.1:{served.port}")
                .replace("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;")
                .replace("/etc/nginx/tls/fluoro-cds.crt", str(crt))
                .replace("/etc/nginx/tls/fluoro-cds.key", str(pem)))
        main = (f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                "events { worker_connections 64; }\n"
                f"http {{\n client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;\n"
                f" fastcgi_temp_path {tmp_path}/fcgi; uwsgi_temp_path {tmp_path}/uwsgi;"
                f" scgi_temp_path {tmp_path}/scgi;\n{site}\n}}\n")
        (tmp_path / "nginx.conf").write_text(main)
        test = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                              capture_output=True, text=True, timeout=30)
        assert test.returncode == 0, test.stderr
        proc = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                 "-g", "daemon off;"], stderr=subprocess.PIPE)
        try:
            session = requests.Session()
            session.verify = str(crt)
            url = f"https://127.0.0.1:{tls_port}"  # the certificate names 127.0.0.1 too
            for _ in range(50):
                try:
                    resp = session.get(url + "/healthz", timeout=5, verify=str(crt))
                    break
                except requests.ConnectionError as exc:
                    last = exc
                    time.sleep(0.1)
            else:
                raise AssertionError(f"nginx gave no answer: {last}")
            assert resp.status_code == 200 and resp.json() == {"status": "ok"}
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
            token = tokens.mint(base + "/cds-services")  # aud: the public URL, not the upstream
            disc = session.get(url + "/cds-services", timeout=10, verify=str(crt),
                               headers={"Authorization": f"Bearer {token}"})
            assert disc.status_code == 200, disc.text
            assert len(disc.json()["services"]) == 3
        finally:
            proc.terminate()
            proc.wait(10)
            jwks.close()


def _upstream_idle_seconds(conf: str) -> int:
    [block] = re.findall(r"upstream \w+ \{([^}]*)\}", conf)
    return int(re.search(r"keepalive_timeout (\d+)s;", block).group(1))


def test_nginx_drops_idle_upstream_connections_well_before_gunicorn(tmp_path):
    """nginx must stop reusing an idle connection to gunicorn before gunicorn closes it (its
    keepalive): otherwise a request written as gunicorn closes fails with a broken pipe, and nginx
    answers a POST 502 without a retry (seen in the 10-minute soak with nginx's default 60 s).
    Both the front `serve` writes and deploy/nginx.conf, with at least 2 s to spare."""
    from service.front import FrontSettings, nginx_config
    from service.gunicorn_app import gunicorn_defaults

    keepalive = gunicorn_defaults()["keepalive"]
    front = nginx_config(tmp_path, "127.0.0.1", 8080, tmp_path / "app.sock", FrontSettings())
    for conf in (front, (DEPLOY / "nginx.conf").read_text()):
        assert _upstream_idle_seconds(conf) <= keepalive - 2

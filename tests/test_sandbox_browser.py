"""The real CDS Hooks Sandbox in a real browser (issue 11 section 5).

../shared/clients/cds-hooks-sandbox/build (the official sandbox, built unchanged) is served on
127.0.0.1; tests/node/sandbox_drive.mjs drives it in Debian's chromium with playwright-core. The
sandbox reads its patient from an open @medplum/fhir-router server holding an encounter with a
64483 (transforaminal epidural) Procedure, discovers this service over HTTP (a real server on
127.0.0.1), and signs a 76000 imaging order: the service answers with its fluoroscopy-integral card,
and accepting the suggestion makes the sandbox post feedback, which the service stores.

Where the sandbox's UI cannot do it (its README: no 76000 in the PAMA picker, no Sign button, no
encounterId), the driver uses the sandbox's own Redux actions (UPDATED_STUDY, TRIGGER_ORDER_SIGN)
and a browser route adding context.encounterId; sandbox_drive.mjs says so where it does.
"""
from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.medplum_server import NODE_DIR, medplum_missing, start_medplum_server, stop_medplum_server
from tests.scenario_fixtures import CPT, LUMBAR, procedure, scenario

SANDBOX = SHARED / "clients" / "cds-hooks-sandbox" / "build"
CHROMIUM = Path("/usr/bin/chromium")
DRIVE_TIMEOUT = 120  # seconds for the whole browser session
SERVICE_ID = "fluoroscopy-order-review"


def _missing() -> str | None:
    if not (SANDBOX / "index.html").exists():
        return f"needs the CDS Hooks Sandbox build in {SANDBOX} (../shared absent on this machine)"
    if not CHROMIUM.exists():
        return "needs Debian's chromium at /usr/bin/chromium (tools/test-deps.sh installs it)"
    if not (NODE_DIR / "node_modules" / "playwright-core").is_dir():
        return "needs playwright-core in tests/node (tools/test-deps.sh runs npm ci there)"
    return medplum_missing()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Served:
    """A WSGI app or a static directory on 127.0.0.1:<free port>, in a daemon thread."""

    def __init__(self, *, app=None, directory: Path | None = None):
        if app is not None:
            from werkzeug.serving import make_server
            self._server = make_server("127.0.0.1", 0, app, threaded=True)
            port = self._server.server_port
        else:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0),
                                               functools.partial(_Quiet, directory=str(directory)))
            self._server.daemon_threads = True
            port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)


def _resources() -> tuple[dict, dict, list[dict]]:
    """Scenario 12's patient and encounter (an outpatient hospital visit) with a 64483 Procedure."""
    s = scenario(12)
    by_key = {f"{r['resourceType']}/{r['id']}": r for r in s.resources}
    patient, enc = by_key[s.encounter["subject"]["reference"]], s.encounter
    epidural = procedure("s12-sbx-64483", patient, enc, "64483", "2024-08-12", body_site=LUMBAR,
                         reason=("M54.17", "Radiculopathy, lumbosacral region"))
    keep = [r for r in s.resources if r["resourceType"] != "ServiceRequest"]
    return patient, enc, keep + [epidural]


def test_the_sandbox_shows_the_card_and_sends_feedback(tmp_path):
    why = _missing()
    if why:
        pytest.skip(why)
    from service.app import create_app
    from service.settings import Settings
    patient, enc, resources = _resources()
    fhir = start_medplum_server(open_access=True)
    app = create_app(Settings(db_path=str(tmp_path / "ncci.sqlite"),
                              state_db_path=str(tmp_path / "state.sqlite")))
    service = _Served(app=app)
    sandbox = _Served(directory=SANDBOX)
    screenshot = tmp_path / "sandbox.png"
    try:
        fhir.load(resources)
        args = {"sandboxUrl": sandbox.url, "fhirServer": fhir.base_url, "patientId": patient["id"],
                "encounterId": enc["id"], "discoveryUrl": f"{service.url}/cds-services",
                "serviceUrl": f"{service.url}/cds-services/{SERVICE_ID}",
                "coding": {"system": CPT, "code": "76000",
                           "display": "Fluoroscopy (separate procedure), up to 1 hour"},
                "screenshot": str(screenshot), "timeoutMs": 30000}
        run = subprocess.run(["node", str(NODE_DIR / "sandbox_drive.mjs"), json.dumps(args)],
                             cwd=NODE_DIR, capture_output=True, text=True, timeout=DRIVE_TIMEOUT)
        assert run.stdout.strip(), run.stderr[-3000:]
        out = json.loads(run.stdout.strip().splitlines()[-1])
        assert run.returncode == 0 and "error" not in out, out.get("error") or run.stderr[-3000:]
    finally:
        sandbox.close()
        service.close()
        stop_medplum_server(fhir)

    # the service appears in the sandbox's service list (its discovery, over CORS)
    assert args["serviceUrl"] in out["services"]
    # the order-sign call was the sandbox's own: its 76000 draft, its prefetch, our encounterId
    sent = out["orderSignRequest"]
    assert sent["hook"] == "order-sign" and sent["fhirServer"] == fhir.base_url
    [draft] = [e["resource"] for e in sent["context"]["draftOrders"]["entry"]]
    assert draft["resourceType"] == "ServiceRequest" and draft["code"]["coding"][0]["code"] == "76000"
    # the sandbox prefetched the encounter templates without an encounterId: unresolved-token
    # Bundles, which the service does not take as data (it read the encounter from fhirServer)
    unresolved = [k for k, v in (sent.get("prefetch") or {}).items()
                  if isinstance(v, dict) and "%7B%7B" in json.dumps(v.get("link", []))]
    assert "procedures" in unresolved, sent.get("prefetch")
    assert out["orderSignStatus"] == 200
    # the card as the sandbox renders it: fluoroscopy is integral to the epidural in the encounter
    [card] = [c for c in out["cardSummaries"] if "fluoro-cds" in c]
    assert "Remove 76000: fluoroscopy is integral to 64483" in card
    assert out["suggestion"].startswith("Remove 76000")
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # accepting the suggestion: the sandbox posts feedback, the service stores it
    assert out["feedback"]["status"] == 200
    [item] = out["feedback"]["body"]["feedback"]
    assert item["outcome"] == "accepted" and item["acceptedSuggestions"]
    stored = app.config["FLUORO_STATE"].feedback(SERVICE_ID)
    assert [f["outcome"] for f in stored] == ["accepted"]
    assert stored[0]["card_uuid"] == item["card"]
    keep = os.environ.get("FLUORO_CDS_SANDBOX_SCREENSHOT")  # e.g. docs/sandbox-order-sign.png
    if keep:
        shutil.copyfile(screenshot, keep)

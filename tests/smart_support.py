"""The documentation app's test set-up: sekmet-fhir behind a SMART EHR (tests/smart_ehr.py) and the
service on 127.0.0.1, plus the resources of an encounter whose 76000 documents nothing yet."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator

import requests

from tests.scenario_fixtures import CPT, ICD10CM, concept, practitioner, ref

DISCHARGE = "fluoroscopy-discharge-review"
PID, EID, PROC = "smart-pat", "smart-enc", "smart-76000"


def resources(suffix: str) -> list[dict]:
    """A patient's outpatient encounter with a diagnosis and a 76000 Procedure that documents
    nothing yet (no reason, no site, no time, dose, report or images)."""
    pat = {"resourceType": "Patient", "id": PID + suffix, "name": [{"family": "Launch", "given": ["Smart"]}],
           "gender": "unknown", "birthDate": "1960-01-01"}
    doc = practitioner("smart-rad" + suffix)
    cond = {"resourceType": "Condition", "id": "smart-cond" + suffix, "subject": ref(pat),
            "clinicalStatus": concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "code": {"coding": [{"system": ICD10CM, "code": "K22.2", "display": "Esophageal obstruction"}],
                     "text": "Esophageal obstruction"}}
    enc = {"resourceType": "Encounter", "id": EID + suffix, "status": "finished",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
           "subject": ref(pat), "period": {"start": "2024-08-12T08:00:00Z", "end": "2024-08-12T12:00:00Z"},
           "diagnosis": [{"condition": ref(cond)}]}
    proc = {"resourceType": "Procedure", "id": PROC + suffix, "status": "completed",
            "code": concept(CPT, "76000", "Fluoroscopy (separate procedure), up to 1 hour"),
            "subject": ref(pat), "encounter": ref(enc), "performedDateTime": "2024-08-12T10:00:00Z",
            "performer": [{"actor": {**ref(doc), "display": "Dr Rita Radiologist"}}]}
    return [pat, doc, cond, enc, proc]


class Served:
    """A WSGI app on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, app):
        from werkzeug.serving import make_server
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)


def discharge(service_url: str, ehr, suffix: str) -> list[dict]:
    """A fresh encounter-discharge call without prefetch: the service reads the EHR's FHIR server."""
    token = ehr.issue_token(patient=PID + suffix, encounter=EID + suffix)
    body = {"hook": "encounter-discharge", "hookInstance": "9c1f2d4e-0b7a-4c55-9d43-2f0e6b1a7c%02d" % len(suffix),
            "fhirServer": ehr.fhir_base,
            "fhirAuthorization": {"access_token": token, "token_type": "Bearer", "expires_in": 3600,
                                  "scope": "user/*.rs", "subject": "fluoro-cds"},
            "context": {"userId": "Practitioner/smart-rad" + suffix, "patientId": PID + suffix,
                        "encounterId": EID + suffix}}
    resp = requests.post(f"{service_url}/cds-services/{DISCHARGE}", json=body, timeout=30)
    assert resp.status_code == 200, resp.text[:500]
    return resp.json()["cards"]


def doc_card(cards: list[dict]) -> dict | None:
    found = [c for c in cards if c["source"]["topic"]["code"] == "documentation-missing"]
    return found[0] if found else None


def observations(fhir, suffix: str) -> list[dict]:
    bundle = fhir.get("Observation", encounter=f"Encounter/{EID + suffix}")
    return [e["resource"] for e in bundle.get("entry", [])]


@contextlib.contextmanager
def smart_world(fhir_server, tmp_path: Path, *, transactions: bool = True) -> Iterator[dict]:
    """The service (its FHIR allowlist: the EHR) and the EHR over `fhir_server`; yields
    {"app", "ehr", "url", "fhir"}. Both stop on exit."""
    from service.app import create_app
    from service.settings import Settings
    from tests.smart_ehr import SmartEhr

    holder: dict = {}
    # the service listens first (its URL is the EHR's redirect_uri), then the app is built
    served = Served(lambda environ, start_response: holder["app"](environ, start_response))
    ehr = SmartEhr(fhir_server.base_url, fhir_server.token, "fluoro-cds-documentation",
                   served.url + "/smart/callback", transactions=transactions)
    settings = Settings(db_path=str(tmp_path / "ncci.sqlite"), state_db_path=str(tmp_path / "state.sqlite"),
                        base_url=served.url, fhir_allowlist=(ehr.fhir_base,), smart_timeout=10.0)
    holder.update(app=create_app(settings), ehr=ehr, url=served.url, fhir=fhir_server)
    try:
        yield holder
    finally:
        served.close()
        ehr.close()

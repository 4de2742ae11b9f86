"""The documentation app's launch and save over plain HTTP (requests follows the redirects as a
browser would), against sekmet-fhir behind the Authlib EHR of tests/smart_ehr.py: a server without
transactions gets one write at a time (and the answer says so); an access token past its expiry
with no refresh token is refused before any FHIR request, with a clear message."""
from __future__ import annotations

import json
import re
import time

import requests

from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.smart_support import EID, PID, PROC, discharge, doc_card, observations, resources, smart_world


def _launch(world, suffix: str, **launch_options) -> tuple[requests.Session, str, str]:
    """(browser-like session, CSRF token, launch id) after an EHR launch from the card's link."""
    ehr, url = world["ehr"], world["url"]
    card = doc_card(discharge(url, ehr, suffix))
    [link] = [lk for lk in card["links"] if lk["type"] == "smart"]
    launch = ehr.register_launch(patient=PID + suffix, encounter=EID + suffix,
                                 app_context=link["appContext"], **launch_options)
    http = requests.Session()
    http.trust_env = False
    page = http.get(link["url"], params={"iss": ehr.fhir_base, "launch": launch}, timeout=30)
    assert page.status_code == 200 and 'id="documentation"' in page.text, page.text[:500]
    return http, re.search(r'data-csrf="([^"]+)"', page.text).group(1), launch


def _entry(suffix: str) -> dict:
    return {"indication": {"condition": f"Condition/smart-cond{suffix}"}, "fluoroscopyMinutes": 4,
            "dose": {"quantity": "air-kerma", "value": 35, "unit": "mGy"}, "bodySite": {"text": "Esophagus"},
            "findings": "Normal swallow.", "imagesRetained": {"retained": True}, "sign": True,
            "interpreter": f"Practitioner/smart-rad{suffix}"}


def test_a_server_without_transactions_gets_one_write_at_a_time(fhir_server, tmp_path):  # noqa: F811
    suffix = "-sep"
    fhir_server.load(resources(suffix))
    with smart_world(fhir_server, tmp_path, transactions=False) as world:
        http, csrf, _ = _launch(world, suffix)
        resp = http.post(world["url"] + "/smart/api/documentation", json=_entry(suffix),
                         headers={"X-CSRF-Token": csrf}, timeout=60)
        assert resp.status_code == 200, resp.text[:500]
        answer = resp.json()
        assert answer["mode"] == "separate" and answer["missing"] == []
        assert [w.split("/")[0] for w in answer["written"]] == [
            "Observation", "Observation", "DiagnosticReport", "ImagingStudy", "Procedure"]
        assert not [c for c in world["ehr"].calls if c[0] == "POST" and c[1] == ""]  # no transaction
        proc = fhir_server.get(f"Procedure/{PROC + suffix}")
        [report] = proc["report"]
        assert report["reference"] == answer["written"][2]  # the urn:uuid replaced by the real id
        assert proc["bodySite"] == [{"text": "Esophagus"}]
        dose = [o for o in observations(fhir_server, suffix) if o["code"]["coding"][0]["code"] == "113725"]
        assert dose and dose[0]["valueQuantity"]["unit"] == "mGy"
        assert doc_card(discharge(world["url"], world["ehr"], suffix)) is None
        page = http.get(world["url"] + "/smart/", timeout=30)
        assert "Nothing is missing" in page.text


def test_an_expired_token_without_refresh_is_refused_before_any_fhir_request(fhir_server, tmp_path):  # noqa: F811
    suffix = "-cli"
    fhir_server.load(resources(suffix))
    with smart_world(fhir_server, tmp_path) as world:
        http, csrf, _ = _launch(world, suffix, refresh=False)
        app = world["app"]
        from service.smart.sessions import COOKIE
        from service.smart.views import _sessions
        with app.app_context():  # the token's expiry passes (as time would)
            sessions = _sessions(app.extensions["fluoro_cds"])
            sid = sessions.signer.loads(http.cookies[COOKIE])
            data = json.loads(app.extensions["fluoro_cds"].state.get_session(sid))
            assert "refresh_token" not in data["token"]
            data["token"]["expires_at"] = int(time.time()) - 60
            sessions.save(sid, data)
        calls = len(world["ehr"].calls)
        resp = http.post(world["url"] + "/smart/api/documentation", json=_entry(suffix),
                         headers={"X-CSRF-Token": csrf}, timeout=30)
        assert resp.status_code == 401
        assert "expired" in resp.json()["error"] and "Nothing was written" in resp.json()["error"]
        assert len(world["ehr"].calls) == calls  # the app did not send the expired token
        page = http.get(world["url"] + "/smart/", timeout=30)
        assert page.status_code == 401 and "Authorization expired" in page.text
    assert observations(fhir_server, suffix) == []


def test_tokens_stay_on_the_server(fhir_server, tmp_path):  # noqa: F811
    """The browser holds a signed session id: no token in the cookie, the pages or the answers."""
    suffix = "-tok"
    fhir_server.load(resources(suffix))
    with smart_world(fhir_server, tmp_path) as world:
        http, csrf, _ = _launch(world, suffix)
        issued = world["ehr"].issued_to_app()
        assert issued
        page = http.get(world["url"] + "/smart/", timeout=30).text
        seen = page + json.dumps(dict(http.cookies))
        seen += http.post(world["url"] + "/smart/api/documentation", json={"fluoroscopyMinutes": -1},
                          headers={"X-CSRF-Token": csrf}, timeout=30).text
        assert not any(token in seen for token in issued)
        assert not any(r.refresh_token and r.refresh_token in seen for r in world["ehr"].tokens.values())


def test_a_claim_line_card_launches_on_its_encounters_procedure(fhir_server, tmp_path):  # noqa: F811
    """With a Claim, the card's 76000 line is a claim item: appContext names the Claim, the line and
    its encounter, which the app follows (not the launch's own encounter context)."""
    from tests.scenario_fixtures import claim_item, claim_resource, coverage, organization
    suffix = "-clm"
    records = resources(suffix)
    pat, doc, _, enc, _ = records
    payer = organization("smart-payer" + suffix, "Payer")
    cov = coverage("smart-cov" + suffix, pat, payer)
    claim = claim_resource("smart-claim" + suffix, pat, doc, cov, created="2024-08-13",
                           items=[claim_item(1, "76000", day="2024-08-12", pos="22", enc=enc)],
                           diagnoses=[("K22.2", "Esophageal obstruction")])
    fhir_server.load(records + [payer, cov, claim])
    with smart_world(fhir_server, tmp_path) as world:
        ehr, url = world["ehr"], world["url"]
        card = doc_card(discharge(url, ehr, suffix))
        [link] = [lk for lk in card["links"] if lk["type"] == "smart"]
        context = json.loads(link["appContext"])
        assert context["claim"] == f"Claim/smart-claim{suffix}" and context["line"] == 1
        assert context["encounter"] == f"Encounter/{EID + suffix}"
        assert "indication" not in context["missing"]  # the claim line's diagnosis
        launch = ehr.register_launch(patient=PID + suffix, encounter="somewhere-else",
                                     app_context=link["appContext"])
        http = requests.Session()
        http.trust_env = False
        page = http.get(link["url"], params={"iss": ehr.fhir_base, "launch": launch}, timeout=30)
        assert page.status_code == 200, page.text[:500]
        assert f"Procedure/{PROC + suffix}" in page.text
        listed = re.findall(r'data-element="([a-z-]+)"', page.text)
        assert listed == [m for m in context["missing"] if m != "separate-procedure"]


def test_a_standalone_launch_names_the_procedure_itself(fhir_server, tmp_path):  # noqa: F811
    """No EHR launch: /smart/launch?iss=...&procedure=... asks for launch/patient and launch/encounter
    (no `launch` parameter) and opens the form on that Procedure."""
    from tests.smart_ehr import Launch
    suffix = "-std"
    fhir_server.load(resources(suffix))
    with smart_world(fhir_server, tmp_path) as world:
        ehr, url = world["ehr"], world["url"]
        ehr.standalone = Launch(PID + suffix, EID + suffix, None, 3600, True)  # what the EHR's picker gives
        http = requests.Session()
        http.trust_env = False
        assert "Standalone launch" in http.get(url + "/smart/launch", timeout=30).text
        page = http.get(url + "/smart/launch", params={"iss": ehr.fhir_base, "procedure": f"Procedure/{PROC + suffix}"},
                        timeout=30)
        assert page.status_code == 200 and 'id="documentation"' in page.text, page.text[:500]
        [auth] = ehr.authorizations
        assert "launch" not in auth and auth["code_challenge_method"] == "S256"
        assert {"launch/patient", "launch/encounter"} <= set(auth["scope"].split())
        assert f"Procedure/{PROC + suffix}" in page.text
        assert re.findall(r'data-element="([a-z-]+)"', page.text)[:2] == ["indication", "fluoroscopy-time"]

"""The documentation app's server side over HTTP (no browser): the form's checks, the session and
CSRF guards, the iss allowlist; and the written resources read back by the rules' own extraction."""
from __future__ import annotations

import copy
import json
import time

import pytest

from hooks.extract import case_from_encounter
from nccidata.starter import starter as load_starter
from service.smart.form import Entry
from service.smart.record import replace_reference, transaction, writes
from service.smart.sessions import COOKIE
from tests.scenario_fixtures import CPT, concept, ref

UNREACHABLE = "http://127.0.0.1:9/fhir"  # the discard port: nothing listens
ALL = ("indication", "fluoroscopy-time", "radiation-dose", "body-site", "findings", "images-retained",
       "signed-interpretation")
VALID = {"indication": {"code": "K22.2", "text": "Esophageal obstruction"}, "fluoroscopyMinutes": 2.5,
         "dose": {"quantity": "dap", "value": 12.5, "unit": "Gy.cm2"}, "bodySite": {"code": "122496007"},
         "findings": "No stricture.", "imagesRetained": {"retained": True, "count": 4}, "sign": True,
         "interpreter": "Practitioner/rad"}


@pytest.fixture
def smart_app(tmp_path):
    from service.app import create_app
    from service.settings import Settings
    return create_app(Settings(db_path=str(tmp_path / "ncci.sqlite"), state_db_path=str(tmp_path / "state.sqlite"),
                               fhir_allowlist=(UNREACHABLE,), smart_timeout=1.0))


def _client(app, missing=ALL, *, csrf="c" * 32):
    """A test client holding a launched session whose form offered `missing`."""
    from service.smart.views import _sessions
    with app.app_context():
        sessions = _sessions(app.extensions["fluoro_cds"])
        sid = sessions.start({
            "iss": UNREACHABLE, "token_endpoint": "http://127.0.0.1:9/token", "csrf": csrf,
            "token": {"access_token": "tok", "token_type": "Bearer", "expires_at": int(time.time()) + 3600},
            "offer": {"procedure": "Procedure/p1", "encounter": "Encounter/e1", "patient": "Patient/pat",
                      "missing": list(missing), "conditions": ["Condition/c1"],
                      "performers": ["Practitioner/rad"]}})
        cookie = sessions.signer.dumps(sid)
    client = app.test_client()
    client.set_cookie(COOKIE, cookie, path="/smart")
    return client


def _post(client, body, csrf="c" * 32):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post("/smart/api/documentation", data=data, content_type="application/json",
                       headers={"X-CSRF-Token": csrf} if csrf else {})


def _with(path: str, value):
    body = copy.deepcopy(VALID)
    node = body
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return body


BAD = [
    ("fluoroscopyMinutes", -3, "greater than 0"),
    ("fluoroscopyMinutes", 0, "greater than 0"),
    ("fluoroscopyMinutes", "12 minutes", "a number"),
    ("fluoroscopyMinutes", True, "a number"),
    ("fluoroscopyMinutes", 1441, "at most 1440"),
    ("dose.value", "a lot", "a number"),
    ("dose.value", 20000, "at most 10000"),
    ("dose.unit", "rad.cm2", "Gy.cm2 or mGy.cm2"),
    ("dose.unit", "mGy", "matching the quantity"),
    ("dose.quantity", "ctdi", "dap"),
    ("indication.code", "not-a-code", "ICD-10-CM"),
    ("bodySite.code", "999999", "body sites the form offers"),
    ("findings", "   ", "1 to 4000 characters"),
    ("imagesRetained.count", 0, "whole number"),
    ("imagesRetained.retained", False, "box ticked"),
    ("sign", False, "box ticked"),
    ("interpreter", "Practitioner/someone-else", "performers the form offers"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_a_bad_value_is_a_400_naming_the_field_and_the_expected_form(smart_app, path, value, expected):
    resp = _post(_client(smart_app), _with(path, value))
    assert resp.status_code == 400
    body = resp.get_json()
    [problem] = body["problems"]
    assert problem["path"] == "$." + path and problem["field"] == path
    assert expected in problem["expected"]
    if isinstance(value, str) and value.strip() and value not in problem["expected"]:
        assert value not in resp.get_data(as_text=True)  # never the value sent


def test_every_problem_is_listed_at_once_and_nothing_is_fetched(smart_app):
    resp = _post(_client(smart_app), {"fluoroscopyMinutes": -1, "dose": {"quantity": "dap", "value": "x",
                                                                         "unit": "Gy.cm2"}})
    assert resp.status_code == 400
    paths = [p["path"] for p in resp.get_json()["problems"]]
    assert paths == ["$.indication", "$.fluoroscopyMinutes", "$.dose.value", "$.bodySite", "$.findings",
                     "$.imagesRetained", "$.sign", "$.interpreter"]


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_a_400(smart_app, raw):
    resp = _post(_client(smart_app), raw)
    assert resp.status_code == 400
    assert resp.get_json()["problems"] == [{"field": "", "path": "$",
                                            "expected": "a JSON object with the form's fields"}]


def test_only_the_missing_elements_are_read(smart_app):
    """A form asking for the time alone accepts the time alone; valid, it goes on to the EHR (here
    unreachable: a 502 saying so, nothing else)."""
    client = _client(smart_app, missing=("fluoroscopy-time",))
    resp = _post(client, {"fluoroscopyMinutes": 3})
    assert resp.status_code == 502
    assert "could not be reached" in resp.get_json()["error"]
    assert _post(client, {"fluoroscopyMinutes": "3"}).status_code == 400


def test_the_session_and_the_csrf_token_are_required(smart_app):
    assert _post(smart_app.test_client(), VALID).status_code == 401  # no session
    forged = smart_app.test_client()
    forged.set_cookie(COOKIE, "eyJmb3JnZWQiOjF9.bad", path="/smart")
    assert _post(forged, VALID).status_code == 401
    client = _client(smart_app)
    assert _post(client, VALID, csrf=None).status_code == 403
    assert _post(client, VALID, csrf="d" * 32).status_code == 403


def test_the_app_talks_only_to_allowlisted_servers(smart_app, tmp_path):
    client = smart_app.test_client()
    resp = client.get("/smart/launch?iss=https://elsewhere.example.org/fhir&launch=x")
    assert resp.status_code == 403 and "FLUORO_CDS_FHIR_ALLOWLIST" in resp.get_data(as_text=True)
    resp = client.get(f"/smart/launch?iss={UNREACHABLE}&launch=x")  # allowed, but nobody answers
    assert resp.status_code == 502 and "smart-configuration" in resp.get_data(as_text=True)
    from service.app import create_app
    from service.settings import Settings
    open_app = create_app(Settings(db_path=str(tmp_path / "n2.sqlite"), state_db_path=str(tmp_path / "s2.sqlite")))
    # an empty allowlist lets fhirServer be anything for hook calls, but the app reaches no server
    assert open_app.test_client().get(f"/smart/launch?iss={UNREACHABLE}").status_code == 403
    assert client.get("/smart/launch").status_code == 200  # the standalone launch form
    assert client.get(f"/smart/launch?iss={UNREACHABLE}&procedure=Patient/x").status_code == 400


def test_the_written_resources_are_documentation_to_the_rules():
    """writes() read back by hooks/extract (the discharge review's extraction): every element the
    entry records counts, with no element left missing."""
    pat = {"resourceType": "Patient", "id": "pat"}
    enc = {"resourceType": "Encounter", "id": "e1", "status": "finished", "subject": ref(pat),
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    proc = {"resourceType": "Procedure", "id": "p1", "status": "completed", "code": concept(CPT, "76000"),
            "subject": ref(pat), "encounter": ref(enc), "performedDateTime": "2024-08-12T10:00:00Z",
            "meta": {"versionId": "3"}}
    entry = Entry(reason=("K22.2", "Esophageal obstruction"), minutes=2.5, dose=("air-kerma", 40.0, "mGy"),
                  site=(None, "Esophagus"), findings="No stricture.", images=0, interpreter="Practitioner/rad")
    steps = writes(entry, proc, patient="Patient/pat", encounter="Encounter/e1")
    bundle = transaction(steps)
    assert [e["request"]["method"] for e in bundle["entry"]] == ["POST"] * 4 + ["PUT"]
    assert bundle["entry"][-1]["request"] == {"method": "PUT", "url": "Procedure/p1", "ifMatch": 'W/"3"'}
    # as the server stores them: ids for the urn:uuids
    resources, ids = [], {}
    for i, step in enumerate(steps):
        res = step.resource
        for old, new in ids.items():
            res = replace_reference(res, old, new)
        res = dict(res, id=res.get("id") or f"new{i}")
        if step.full_url:
            ids[step.full_url] = f"{res['resourceType']}/{res['id']}"
        resources.append(res)
    before = case_from_encounter(enc, [proc], None, load_starter())
    assert set(before.evidence.missing()) == set(ALL)
    case = case_from_encounter(enc, resources, None, load_starter())
    assert case.evidence.missing() == ()
    assert case.evidence.fluoro_minutes == 2.5
    [dose] = [r for r in resources if r["resourceType"] == "Observation" and r["valueQuantity"]["unit"] == "mGy"]
    assert dose["code"]["coding"][0]["code"] == "113725"  # air kerma: Dose (RP) Total


def test_the_card_link_follows_each_request_host_and_the_configured_url(tmp_path):
    """Without FLUORO_CDS_BASE_URL the link is the request's own root (cached per Host value: two
    hosts, two links); with it, or FLUORO_CDS_SMART_LAUNCH_URL, the configured URL."""
    from service.app import create_app
    from service.settings import Settings
    from tests.scenario_fixtures import scenario

    s = scenario(7)

    def link(app, host):
        resp = app.test_client().post(f"/cds-services/{s.service_id}", json=s.request(with_prefetch=True),
                                      headers={"Host": host})
        [card] = [c for c in resp.get_json()["cards"] if c["source"]["topic"]["code"] == "documentation-missing"]
        return [lk["url"] for lk in card["links"] if lk["type"] == "smart"][0]

    plain = create_app(Settings(db_path=str(tmp_path / "n.sqlite"), state_db_path=str(tmp_path / "s.sqlite")))
    assert link(plain, "a.example.org") == "http://a.example.org/smart/launch"
    assert link(plain, "b.example.org:8443") == "http://b.example.org:8443/smart/launch"
    assert link(plain, "a.example.org") == "http://a.example.org/smart/launch"
    based = create_app(Settings(db_path=str(tmp_path / "n.sqlite"), state_db_path=str(tmp_path / "s2.sqlite"),
                                base_url="https://cds.example.org/"))
    assert link(based, "a.example.org") == "https://cds.example.org/smart/launch"
    hosted = create_app(Settings(db_path=str(tmp_path / "n.sqlite"), state_db_path=str(tmp_path / "s3.sqlite"),
                                 base_url="https://cds.example.org",
                                 smart_launch_url="https://apps.example.org/fluoro/launch"))
    assert link(hosted, "a.example.org") == "https://apps.example.org/fluoro/launch"

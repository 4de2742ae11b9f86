"""Prefetch resolution and FHIR server access, against a REAL FHIR server (sekmet-fhir)."""
from __future__ import annotations

import pytest

from hooks.context import DataUnavailable
from hooks.services import SERVICES as SHIPPED
from hooks.services.base import CdsService
from service.fhir_access import (FhirAccess, FhirClient, FhirClientSettings, Query,
                                 fhir_server_allowed, resolve_template)
from tests.fhir_server import fhir_server  # noqa: F401  (session fixture)
from tests.service_support import (CPT, RecordingListener, assert_json_error, assert_valid_response,
                                   closed_port, discharge_request, make_app)

PATIENT, ENCOUNTER = "fx-pat-1", "fx-enc-1"
DISCHARGE_PREFETCH = {
    "encounter": "Encounter/{{context.encounterId}}",
    "procedures": "Procedure?encounter={{context.encounterId}}",
    "user": "Practitioner/{{userPractitionerId}}",
}


def _procedure(i: int) -> dict:
    return {"resourceType": "Procedure", "id": f"fx-proc-{i}", "status": "completed",
            "subject": {"reference": f"Patient/{PATIENT}"},
            "encounter": {"reference": f"Encounter/{ENCOUNTER}"},
            "code": {"coding": [{"system": CPT, "code": "76000" if i == 0 else f"2988{i}"}]},
            "performedDateTime": "2024-07-15"}


@pytest.fixture(scope="module")
def fhir(fhir_server):  # noqa: F811
    fhir_server.load([
        {"resourceType": "Patient", "id": PATIENT},
        {"resourceType": "Practitioner", "id": "fx-doc-1"},
        {"resourceType": "Encounter", "id": ENCOUNTER, "status": "finished",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
         "subject": {"reference": f"Patient/{PATIENT}"}},
    ])
    fhir_server.load({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": _procedure(i), "request": {"method": "PUT", "url": f"Procedure/fx-proc-{i}"}}
        for i in range(5)]})
    return fhir_server


def _client(server, token=None, **kw) -> FhirClient:
    return FhirClient(server.base_url, server.token if token is None else token,
                      FhirClientSettings(connect_timeout=5, read_timeout=20, **kw))


# --- pure parts ----------------------------------------------------------------------------------

def test_templates_resolve_context_and_user_tokens():
    ctx = {"userId": "PractitionerRole/role-9", "patientId": "p1", "encounterId": "e 1"}
    assert resolve_template("Patient/{{context.patientId}}", ctx) == "Patient/p1"
    assert resolve_template("Procedure?encounter={{context.encounterId}}", ctx) == \
        "Procedure?encounter=e%201"
    assert resolve_template("PractitionerRole?_id={{userPractitionerRoleId}}", ctx) == \
        "PractitionerRole?_id=role-9"
    assert resolve_template("{{context.userId}}", ctx) == "PractitionerRole/role-9"
    # a token without a value: the template does not apply
    assert resolve_template("Practitioner/{{userPractitionerId}}", ctx) is None
    assert resolve_template("Encounter/{{context.encounterId}}", {"patientId": "p1"}) is None
    assert resolve_template("Patient/{{userPatientId}}", {"userId": "Patient/p7"}) == "Patient/p7"
    assert resolve_template("RelatedPerson/{{userRelatedPersonId}}",
                            {"userId": "RelatedPerson/r1"}) == "RelatedPerson/r1"
    # only root-level primitive context fields are tokens
    assert resolve_template("X?y={{context.draftOrders}}", {"draftOrders": {"a": 1}}) is None


def test_query_parsing_distinguishes_reads_and_searches():
    assert Query.parse("Encounter/e1") == Query("Encounter", "e1")
    q = Query.parse("Procedure?subject=Patient/1&code=76000")
    assert not q.is_read and q.params == (("code", "76000"), ("subject", "Patient/1"))


@pytest.mark.parametrize("url,allowed", [
    ("https://fhir.example.org/r4", True),
    ("https://FHIR.example.org:443/r4/", True),
    ("https://fhir.example.org/r4/tenant-1", True),
    ("https://fhir.example.org/r4x", False),
    ("https://fhir.example.org/", False),
    ("http://fhir.example.org/r4", False),
    ("https://fhir.example.org:8443/r4", False),
    ("https://fhir.example.org.evil.com/r4", False),
    ("https://fhir.example.org@evil.com/r4", False),
    ("https://user:pw@fhir.example.org/r4", False),
    ("http://10.0.0.5:8080/fhir", True),
    ("http://10.0.0.5:8080/fhir?x=1", False),
    ("ftp://10.0.0.5:8080/fhir", False),
])
def test_fhir_server_allowlist(url, allowed):
    allow = ("https://fhir.example.org/r4", "http://10.0.0.5:8080/fhir/")
    assert fhir_server_allowed(url, allow) is allowed


def test_without_an_allowlist_any_http_server_is_allowed_but_no_other_scheme():
    assert fhir_server_allowed("http://anything.example:1234/base", ())
    assert not fhir_server_allowed("file:///etc/passwd", ())
    assert not fhir_server_allowed("gopher://x/", ())


# --- FhirAccess over prefetch and the real server -------------------------------------------------

def _access(prefetch, client, context=None):
    ctx = context or {"userId": "Practitioner/fx-doc-1", "patientId": PATIENT,
                      "encounterId": ENCOUNTER}
    return FhirAccess(prefetch=prefetch, templates=DISCHARGE_PREFETCH, context=ctx, client=client)


def test_reads_and_paged_searches_on_the_real_server(fhir):
    client = _client(fhir)
    assert client.read("Encounter", ENCOUNTER)["id"] == ENCOUNTER
    assert client.read("Encounter", "no-such-encounter") is None
    bundle = client.search("Procedure", [("encounter", ENCOUNTER), ("_count", "2")])
    assert sorted(e["resource"]["id"] for e in bundle["entry"]) == [f"fx-proc-{i}" for i in range(5)]
    bounded = _client(fhir, max_pages=2).search("Procedure", [("encounter", ENCOUNTER), ("_count", "2")])
    assert len(bounded["entry"]) == 4  # two pages of two, then paging stops
    capped = _client(fhir, max_resources=3).search("Procedure", [("encounter", ENCOUNTER), ("_count", "2")])
    assert len(capped["entry"]) == 3


def test_a_search_cut_short_by_the_page_bound_is_recorded_as_not_checked(fhir):
    access = _access(None, _client(fhir, max_pages=2))
    found = access.search("Procedure", {"encounter": f"Encounter/{ENCOUNTER}", "_count": "2"})
    assert len(found) == 4  # two pages of two; the third is not read
    [gap] = list(access.unchecked)
    assert "Procedure" in gap.what and "first 2 pages" in gap.why
    whole = _access(None, _client(fhir))
    assert len(whole.search("Procedure", {"encounter": f"Encounter/{ENCOUNTER}", "_count": "2"})) == 5
    assert not whole.unchecked


def test_missing_prefetch_is_fetched_with_the_bearer_token(fhir):
    access = _access(None, _client(fhir))
    assert access.prefetched("encounter")["id"] == ENCOUNTER
    procs = access.prefetched("procedures")
    assert procs["resourceType"] == "Bundle" and len(procs["entry"]) == 5
    assert access.prefetched("user")["id"] == "fx-doc-1"
    assert access.read(f"Patient/{PATIENT}")["id"] == PATIENT
    assert access.read("Patient/nobody") is None
    assert access.read(f"{fhir.base_url}/Patient/{PATIENT}")["id"] == PATIENT  # absolute, cached
    with pytest.raises(ValueError):
        access.read("https://elsewhere.example.org/fhir/Patient/1")
    assert {p["id"] for p in access.search("Procedure", {"encounter": ENCOUNTER})} == \
        {f"fx-proc-{i}" for i in range(5)}
    assert access.fetch_count == 5


def test_wrong_token_or_unreachable_server_is_data_unavailable(fhir):
    wrong = _access(None, _client(fhir, token="not-the-token"))
    with pytest.raises(DataUnavailable, match="refused access"):
        wrong.prefetched("encounter")
    with pytest.raises(DataUnavailable):
        wrong.read(f"Patient/{PATIENT}")
    gone = FhirClient(f"http://127.0.0.1:{closed_port()}/fhir", "t", FhirClientSettings(1, 1))
    with pytest.raises(DataUnavailable, match="could not be reached"):
        _access(None, gone).search("Procedure", {"encounter": ENCOUNTER})


def test_prefetch_is_used_first_and_null_and_operation_outcome_follow_the_spec(fhir):
    encounter = {"resourceType": "Encounter", "id": ENCOUNTER, "status": "finished",
                 "class": {"code": "AMB"}}
    proc = {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": {"resourceType": "Procedure", "id": "pf-1", "status": "completed",
                                    "subject": {"reference": "Patient/x"}}}]}
    # 1. prefetch given: no server round trip, even for reads of resources inside the bundle
    access = _access({"encounter": encounter, "procedures": proc}, _client(fhir))
    assert access.prefetched("encounter")["class"]["code"] == "AMB"
    assert [p["id"] for p in access.search("Procedure", {"encounter": ENCOUNTER})] == ["pf-1"]
    assert access.read("Procedure/pf-1")["id"] == "pf-1"
    assert access.fetch_count == 0
    # 2. null without a server: no data
    no_server = _access({"encounter": None, "procedures": None}, None)
    assert no_server.prefetched("encounter") is None
    assert no_server.search("Procedure", {"encounter": ENCOUNTER}) == []
    assert no_server.read(f"Encounter/{ENCOUNTER}") is None
    # 3. null with a server: taken at its word too (no data, no server call), by every method
    trusted = _access({"encounter": None, "procedures": None}, _client(fhir))
    assert trusted.prefetched("encounter") is None and trusted.client_has_none("encounter")
    assert trusted.read(f"Encounter/{ENCOUNTER}") is None
    assert trusted.search("Procedure", {"encounter": ENCOUNTER}) == []
    assert trusted.fetch_count == 0
    # 4. an OperationOutcome (prefetch failed): fetched when possible, else unavailable
    oo = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
    assert _access({"encounter": oo}, _client(fhir)).prefetched("encounter")["id"] == ENCOUNTER
    with pytest.raises(DataUnavailable, match="failed in prefetch"):
        _access({"encounter": oo}, None).prefetched("encounter")
    # 5. absent without a server: unavailable
    with pytest.raises(DataUnavailable, match="was not prefetched"):
        _access({}, None).prefetched("procedures")
    # 6. a template whose token has no value does not apply
    assert _access({}, None, context={"userId": "PractitionerRole/r", "patientId": PATIENT}
                   ).prefetched("encounter") is None


# --- through the app, with a test-only service that uses FHIR data ---------------------------------

def _fhir_using_service() -> CdsService:
    """Reads the encounter and its procedures (prefetch or server) and reports the CPT codes."""

    def handler(req):
        encounter = req.fhir.prefetched("encounter")
        if encounter is None:
            raise DataUnavailable("the encounter is needed")
        bundle = req.fhir.prefetched("procedures") or {}
        codes = sorted(c["code"] for e in bundle.get("entry", [])
                       for c in e["resource"].get("code", {}).get("coding", []))
        return {"cards": [{"uuid": "fx-card", "summary": f"codes {' '.join(codes)}"[:140],
                           "indicator": "info",
                           "source": {"label": "test", "topic": {"system": "urn:t", "code": "ptp-bundled"}}}]}

    return CdsService(id="test-fhir-reader", hook="encounter-discharge", title="t",
                      description="test-only", prefetch=DISCHARGE_PREFETCH, handler=handler)


@pytest.fixture
def app_client(tmp_path):
    def build(**settings):
        return make_app(tmp_path, services=SHIPPED + (_fhir_using_service(),), **settings).test_client()
    return build


def _request(server_url: str, token: str, **extra) -> dict:
    body = discharge_request(
        fhirServer=server_url,
        fhirAuthorization={"access_token": token, "token_type": "Bearer", "expires_in": 300,
                           "scope": "user/Encounter.read user/Procedure.read", "subject": "fluoro-cds"})
    body["context"] = {"userId": "Practitioner/fx-doc-1", "patientId": PATIENT, "encounterId": ENCOUNTER}
    body.update(extra)
    return body


def test_request_without_prefetch_is_served_from_the_fhir_server(fhir, app_client):
    client = app_client(fhir_allowlist=(fhir.base_url,))
    resp = client.post("/cds-services/test-fhir-reader", json=_request(fhir.base_url, fhir.token))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    body = assert_valid_response(resp.get_json())
    assert body["cards"][0]["summary"] == "codes 29881 29882 29883 29884 76000"
    # the token was required: the same request with a wrong token cannot get the data
    err = assert_json_error(client.post("/cds-services/test-fhir-reader",
                                        json=_request(fhir.base_url, "wrong-token")), 412)
    assert "refused access" in err["error"]
    # the shipped services also accept it
    ok = client.post("/cds-services/fluoroscopy-discharge-review",
                     json=_request(fhir.base_url, fhir.token))
    assert ok.status_code == 200


def test_unreachable_fhir_server_is_412_json(app_client):
    client = app_client()
    err = assert_json_error(client.post("/cds-services/test-fhir-reader",
                                        json=_request(f"http://127.0.0.1:{closed_port()}/fhir", "t")), 412)
    assert "could not be reached" in err["error"]


def test_no_prefetch_and_no_fhir_server_is_412(app_client):
    body = discharge_request()
    body["context"]["encounterId"] = ENCOUNTER
    err = assert_json_error(app_client().post("/cds-services/test-fhir-reader", json=body), 412)
    assert "encounter" in err["error"]


def test_fhir_server_off_the_allowlist_is_403_without_any_connection(app_client):
    listener = RecordingListener()
    try:
        client = app_client(fhir_allowlist=("https://fhir.example.org/r4",))
        err = assert_json_error(client.post("/cds-services/test-fhir-reader",
                                            json=_request(listener.base_url, "t")), 403)
        assert "allowlist" in err["error"]
        # a prefix that is not on a path boundary is not enough either
        client2 = app_client(fhir_allowlist=(f"http://127.0.0.1:{listener.port}/fh",))
        assert_json_error(client2.post("/cds-services/test-fhir-reader",
                                       json=_request(listener.base_url, "t")), 403)
        assert listener.connections == 0
        # control: once allowlisted, the service does connect (the listener closes: 412)
        client3 = app_client(fhir_allowlist=(f"http://127.0.0.1:{listener.port}",))
        assert_json_error(client3.post("/cds-services/test-fhir-reader",
                                       json=_request(listener.base_url, "t")), 412)
        assert listener.connections >= 1
    finally:
        listener.close()


def test_concurrent_requests_share_nothing_they_should_not(fhir, app_client):
    """Threads (as in gunicorn gthread workers) each get their own FHIR access and DB connection."""
    from concurrent.futures import ThreadPoolExecutor

    client = app_client(fhir_allowlist=(fhir.base_url,))

    def call(i: int) -> tuple[int, str]:
        token = fhir.token if i % 3 else "wrong-token"
        resp = client.post("/cds-services/test-fhir-reader", json=_request(fhir.base_url, token))
        body = resp.get_json()
        return resp.status_code, body["cards"][0]["summary"] if resp.status_code == 200 else body["error"]

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(call, range(18)))
    for i, (status, text) in enumerate(results):
        if i % 3:
            assert (status, text) == (200, "codes 29881 29882 29883 29884 76000")
        else:
            assert status == 412 and "refused access" in text
    audit = client.application.config["FLUORO_STATE"].audit()
    assert sorted(r["status"] for r in audit) == [200] * 12 + [412] * 6


def test_fetched_procedures_past_the_review_bound_are_left_out_as_not_checked(fhir, monkeypatch):
    """When FLUORO_CDS_FHIR_MAX_RESOURCES is above hooks.model.MAX_LINES, a Procedure search can
    return more than a review reads: the rest is the server's data, recorded as not checked, never
    a 400 to the caller (the bound made small here: 3 of the server's 5)."""
    from service import fhir_access

    monkeypatch.setattr(fhir_access, "MAX_LINES", 3)
    access = _access(None, _client(fhir))
    found = access.search("Procedure", {"encounter": f"Encounter/{ENCOUNTER}"})
    assert len(found) == 3
    [gap] = list(access.unchecked)
    assert gap.what == "all of the Procedure search results" and "at most 3 Procedures" in gap.why

"""The fhirServer allowlist and next links compare normalized URLs: no way around them.

Each bypass found in the security review (issue 12) and its encoded variants, checked on the
pure comparison, through the HTTP API (403, no connection made) and against a real HTTP server
on 127.0.0.1 that answers searches with next links leaving the base (never followed)."""
from __future__ import annotations

import pytest

from hooks.context import DataUnavailable
from service.fhir_access import FhirClient, FhirClientSettings, fhir_server_allowed, normalize_url
from tests.service_support import (RecordingListener, StaticJsonServer, assert_json_error,
                                   discharge_request, make_app)

ALLOW = ("https://allowed.example/fhir",)
BYPASSES = [
    "https://allowed.example/fhir/../admin",
    "https://allowed.example/fhir/./../admin",
    "https://allowed.example/fhir/t1/../../admin",
    "https://allowed.example/fhir/%2e%2e/admin",
    "https://allowed.example/fhir/%2E%2E/admin",
    "https://allowed.example/fhir/.%2e/admin",
    "https://allowed.example/fhir%2F..%2Fadmin",
    "https://allowed.example/fhir/%252e%252e/admin",  # double encoding: refused outright
    "https://allowed.example/fhir\\..\\admin",
    "https://allowed.example/fhir/..%5cadmin",
    "https://user@allowed.example/fhir",
    "https://user:pw@allowed.example/fhir",
    "https://allowed.example@evil.example/fhir",
    "https://evil.example#@allowed.example/fhir",
    "https://%61llowed.example/fhir",
    "https://allowed.example.evil.example/fhir",
    "https://allowed.example:8443/fhir",
    "http://allowed.example/fhir",
    "https://allowed.example/fhirx",
    "https://allowed.example/fhir/%00",
    "https://allowed.example/fhir/\t../admin",
]
SAME = [
    "https://allowed.example/fhir",
    "HTTPS://ALLOWED.EXAMPLE/fhir/",
    "https://allowed.example:443/fhir",
    "https://allowed.example.:443/fhir",
    "https://allowed.example/fhir/./tenant-1",
    "https://allowed.example/fhir/tenant-1/../tenant-2",
    "https://allowed.example/%66hir/tenant-1",
]


@pytest.mark.parametrize("url", BYPASSES)
def test_bypasses_are_refused(url):
    assert not fhir_server_allowed(url, ALLOW)


@pytest.mark.parametrize("url", SAME)
def test_spellings_of_an_allowed_base_are_allowed(url):
    assert fhir_server_allowed(url, ALLOW)


def test_the_client_requests_the_normalized_base():
    client = FhirClient("https://Allowed.example:443/fhir/t1/../t2/", None, FhirClientSettings())
    assert client.base_url == "https://allowed.example/fhir/t2"
    assert normalize_url("https://a.example/x/%7Euser?q=%2F") == ("https", "a.example", 443, "/x/~user", "q=%2F")


@pytest.mark.parametrize("server", ["http://127.0.0.1:{port}/fhir/../admin",
                                    "http://127.0.0.1:{port}/fhir/%2e%2e/admin",
                                    "http://u:p@127.0.0.1:{port}/fhir"])
def test_api_answers_403_and_connects_nowhere(tmp_path, server):
    listener = RecordingListener()
    try:
        app = make_app(tmp_path, fhir_allowlist=(f"http://127.0.0.1:{listener.port}/fhir",))
        body = discharge_request(fhirServer=server.format(port=listener.port),
                                 fhirAuthorization={"access_token": "secret", "token_type": "Bearer",
                                                    "expires_in": 300, "scope": "patient/*.read",
                                                    "subject": "fluoro-cds"})
        resp = app.test_client().post("/cds-services/fluoroscopy-discharge-review", json=body)
        assert assert_json_error(resp, 403)["issue"][0]["expression"] == ["$.fhirServer"]
    finally:
        listener.close()
    assert listener.connections == 0


@pytest.mark.parametrize("next_url", ["../admin/Procedure?page=2", "/admin/Procedure?page=2",
                                      "%2e%2e/admin/Procedure?page=2",
                                      "{origin}/fhir/../admin/Procedure?page=2",
                                      "{origin}/fhir/%2e%2e/admin/Procedure?page=2",
                                      "http://u@127.0.0.1:{port}/fhir/Procedure?page=2",
                                      "http://localhost:{port}/fhir/Procedure?page=2"])
def test_next_links_leaving_the_base_are_not_followed(next_url):
    server = StaticJsonServer({})
    origin = server.url("")
    port = origin.rsplit(":", 1)[1]
    server.documents["/fhir/Procedure?patient=p1"] = {
        "resourceType": "Bundle", "type": "searchset", "entry": [],
        "link": [{"relation": "next", "url": next_url.format(origin=origin, port=port)}]}
    try:
        client = FhirClient(origin + "/fhir", "secret", FhirClientSettings(1, 2))
        with pytest.raises(DataUnavailable, match="leaves its base URL"):
            client.search("Procedure", [("patient", "p1")])
    finally:
        server.close()
    assert server.hits == ["/fhir/Procedure?patient=p1"]  # the token went nowhere else


def test_next_link_under_the_base_is_followed_normalized():
    server = StaticJsonServer({})
    origin = server.url("")
    server.documents["/fhir/Procedure?patient=p1"] = {
        "resourceType": "Bundle", "type": "searchset", "entry": [],
        "link": [{"relation": "next", "url": "x/../Procedure?page=2"}]}
    server.documents["/fhir/Procedure?page=2"] = {"resourceType": "Bundle", "type": "searchset",
                                                  "entry": []}
    try:
        FhirClient(origin + "/fhir", "secret", FhirClientSettings(1, 2)).search(
            "Procedure", [("patient", "p1")])
    finally:
        server.close()
    assert server.hits == ["/fhir/Procedure?patient=p1", "/fhir/Procedure?page=2"]

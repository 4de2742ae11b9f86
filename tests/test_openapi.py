"""GET /openapi.json: an OpenAPI 3.1 document built from service/schemas, valid by
openapi-spec-validator and describing every route; a bounded schemathesis run against the live
service (`fluoro-cds serve` on 127.0.0.1) finds no 5xx."""
from __future__ import annotations

import pytest
import requests
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

import schemathesis
from service.openapi import openapi_document
from tests.serve_support import Served, serve_env
from tests.service_support import make_app


def test_document_is_valid_openapi_31_and_covers_every_route(tmp_path):
    app = make_app(tmp_path, admin_token="admin-token-0123456789abcdef")
    served = app.test_client().get("/openapi.json").get_json()
    assert served == openapi_document()
    validate(served)
    assert served["openapi"].startswith("3.1")
    documented = set(served["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # static files (the app's, the SMART app's CSS and script)
        path = rule.rule
        if "<service_id>" in path:  # one documented path per shipped service
            from hooks.services import SERVICES

            assert {path.replace("<service_id>", s.id) for s in SERVICES} <= documented, path
        else:
            assert path in documented, path


def test_request_bodies_are_the_schemas_the_service_validates_with():
    doc = openapi_document()
    body = doc["paths"]["/cds-services/fluoroscopy-claim-review"]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    assert schema["allOf"] == [{"$ref": "#/components/schemas/request"}]
    assert schema["properties"]["context"] == {
        "$ref": "#/components/schemas/context-org.fluoro-cds.claim-review"}
    from service.validation import _schemas

    request = _schemas()["urn:fluoro-cds:cds-hooks-2.0:request"]
    assert doc["components"]["schemas"]["request"]["required"] == request["required"]


SCHEMA = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openapi-live")
    with Served(serve_env(tmp, FLUORO_CDS_ADMIN_TOKEN="admin-token-0123456789abcdef"),
                workers=1) as served:
        yield served


@SCHEMA.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_5xx(case, live):
    response = case.call(base_url=live.url, timeout=20)
    assert response.status_code < 500, (case.method, case.path, response.status_code,
                                        response.text[:500])

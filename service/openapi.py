"""The OpenAPI 3.1 document of the service, at ``GET /openapi.json``, built from the JSON Schemas
the service validates with (service/schemas: one source). Each schema file becomes a component
(its ``urn:`` references rewritten to JSON pointers into the document); every shipped service
gets its own invocation and feedback paths, its request body being the request schema with that
hook's context schema."""
from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

from hooks.services import SERVICES

from .validation import CONTEXT_PREFIX, PREFIX, _schemas

ERROR = {"$ref": "#/components/schemas/OperationOutcome"}


def _name(schema_id: str) -> str:
    """Component name of a schema: request, common, context-order-sign, ..."""
    if schema_id.startswith(CONTEXT_PREFIX):
        return "context-" + schema_id[len(CONTEXT_PREFIX):]
    return schema_id[len(PREFIX):]


def _rewrite(node: Any, own: str) -> Any:
    """Copy of `node` with every $ref pointing into #/components/schemas."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("$id", "$schema"):
                continue
            if key == "$ref" and isinstance(value, str):
                target, _, fragment = value.partition("#")
                name = _name(target) if target else own
                out[key] = f"#/components/schemas/{name}" + (fragment if fragment else "")
            else:
                out[key] = _rewrite(value, own)
        return out
    if isinstance(node, list):
        return [_rewrite(v, own) for v in node]
    return node


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {400: "invalid request (the path of the problem in issue[0].expression)",
            401: "client JWT missing or invalid (FLUORO_CDS_AUTH=jwt)",
            403: "fhirServer not on the allowlist", 404: "unknown service or path",
            412: "FHIR data needed is neither prefetched nor fetchable",
            413: "body over 16 MiB", 415: "body is not JSON"}
    return {str(c): _json(ERROR, text.get(c, "error")) for c in codes}


def _html(description: str) -> dict:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _smart_paths() -> dict:
    """The SMART documentation app's pages and its save endpoint (docs/smart-app.md)."""
    query = [{"name": n, "in": "query", "schema": {"type": "string"}}
             for n in ("iss", "launch", "procedure", "encounter")]
    problem = {"type": "object", "required": ["error", "problems"], "properties": {
        "error": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "object", "required": ["field", "path", "expected"],
                                                "properties": {"field": {"type": "string"},
                                                               "path": {"type": "string"},
                                                               "expected": {"type": "string"}}}}}}
    return {
        "/smart/launch": {"get": {
            "operationId": "smartLaunch", "summary": "SMART EHR launch (iss, launch) or standalone launch",
            "parameters": query,
            "responses": {"200": _html("the standalone launch form (no iss)"),
                          "302": {"description": "to the EHR's authorization endpoint"},
                          "400": _html("a bad launch parameter"), "403": _html("iss not on FLUORO_CDS_FHIR_ALLOWLIST"),
                          "502": _html("the EHR's smart-configuration could not be read"),
                          "503": _html("too many open launches")}}},
        "/smart/callback": {"get": {
            "operationId": "smartCallback", "summary": "the OAuth 2.0 redirect_uri",
            "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                           for n in ("code", "state", "error")],
            "responses": {"303": {"description": "to the form"}, "400": _html("no launch, or state mismatch"),
                          "403": _html("authorization or token refused"),
                          "502": _html("the token endpoint could not be reached")}}},
        "/smart/": {"get": {
            "operationId": "smartForm", "summary": "the documentation form",
            "responses": {"200": _html("what is documented and the fields for what is missing"),
                          "401": _html("no launch, or the authorization expired"),
                          "502": _html("the record could not be read")}}},
        "/smart/api/documentation": {"post": {
            "operationId": "smartSave", "summary": "record the missing documentation in the EHR",
            "parameters": [{"name": "X-CSRF-Token", "in": "header", "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": _json({"type": "object"}, "written; what the review now finds missing"),
                          "400": _json(problem, "fields refused (each with its path and expected form)"),
                          **_errors(401, 403, 413), "409": _json(ERROR, "the form was not opened"),
                          "502": _json(ERROR, "the EHR refused or could not be reached")}}},
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict:
    """The document (built once per process)."""
    components = {_name(sid): _rewrite(copy.deepcopy(s), _name(sid)) for sid, s in _schemas().items()}
    components["OperationOutcome"] = {
        "type": "object", "required": ["resourceType", "error", "issue"],
        "properties": {"resourceType": {"const": "OperationOutcome"}, "error": {"type": "string"},
                       "issue": {"type": "array", "items": {"type": "object"}}}}
    paths: dict[str, dict] = {
        "/cds-services": {"get": {
            "operationId": "discovery", "summary": "CDS Hooks discovery",
            "responses": {"200": _json({"$ref": "#/components/schemas/discovery"}, "the services"),
                          **_errors(401)}}},
        "/healthz": {"get": {"operationId": "healthz", "summary": "liveness",
                             "responses": {"200": _json({"type": "object"}, "the process is up")}}},
        "/readyz": {"get": {"operationId": "readyz", "summary": "readiness",
                            "responses": {"200": _json({"type": "object"}, "ready"),
                                          "503": _json(ERROR, "not ready")}}},
        "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition format",
                                                   "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"operationId": "openapi", "summary": "this document",
                                  "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
        "/admin/report": {"get": {
            "operationId": "adminReport", "summary": "the feedback report (when FLUORO_CDS_ADMIN_TOKEN is set)",
            "security": [{"adminToken": []}],
            "parameters": [{"name": "since", "in": "query", "schema": {"type": "string", "format": "date"}},
                           {"name": "format", "in": "query", "schema": {"enum": ["json", "html"]}}],
            "responses": {"200": {"description": "the report",
                                  "content": {"application/json": {"schema": {"type": "object"}},
                                              "text/html": {"schema": {"type": "string"}}}},
                          **_errors(400, 401, 404)}}},
        **_smart_paths(),
    }
    for service in SERVICES:
        body = {"allOf": [{"$ref": "#/components/schemas/request"}],
                "properties": {"hook": {"const": service.hook}}}
        if CONTEXT_PREFIX + service.hook in _schemas():
            body["properties"]["context"] = {"$ref": f"#/components/schemas/context-{service.hook}"}
        paths[f"/cds-services/{service.id}"] = {"post": {
            "operationId": f"invoke-{service.id}", "summary": f"{service.id} ({service.hook} hook)",
            "security": [{}, {"cdsClientJwt": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
            "responses": {"200": _json({"$ref": "#/components/schemas/response"}, "cards"),
                          **_errors(400, 401, 403, 412, 413)}}}
        paths[f"/cds-services/{service.id}/feedback"] = {"post": {
            "operationId": f"feedback-{service.id}", "summary": f"feedback on {service.id} cards",
            "security": [{}, {"cdsClientJwt": []}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/feedback"}}}},
            "responses": {"200": _json({"type": "object", "required": ["stored"],
                                        "properties": {"stored": {"type": "integer", "minimum": 0}}},
                                       "items stored"), **_errors(400, 401, 413)}}}
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {"title": "fluoro-cds", "version": _version(),
                 "description": "CDS Hooks 2.0 service for CPT 76000 (fluoroscopy) billing "
                                "compliance; see docs/service.md."},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "cdsClientJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                             "description": "CDS Hooks 2.0 client JWT (FLUORO_CDS_AUTH=jwt)"},
            "adminToken": {"type": "http", "scheme": "bearer",
                           "description": "FLUORO_CDS_ADMIN_TOKEN"}}},
    }


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("fluoro-cds")
    except Exception:
        return "0"


def blueprint():
    from flask import Blueprint, Response

    from .jsonio import dumps

    bp = Blueprint("openapi", __name__)
    body = dumps(openapi_document())

    @bp.get("/openapi.json")
    def openapi() -> Response:
        return Response(body, mimetype="application/json")

    return bp

"""JSON Schema validation of CDS Hooks messages (schemas in service/schemas/*.json, Draft 2020-12).

Validators are compiled once per process. Errors name the JSON path of the first problem
(e.g. ``$.context.patientId``) so a client can fix its request; answered 400 by the app.

Two engines, one set of schemas: valid messages (the hot path) are accepted by jsonschema-rs
(compiled Rust, ~2 us for a claim-review request) when it is installed; a message it rejects is
explained by the reference implementation ``jsonschema`` (best_match, JSON path), which has the
last word (~350 us, only on the error path). Without jsonschema-rs, ``jsonschema`` does it all.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

try:  # optional fast path
    import jsonschema_rs
except ImportError:  # pragma: no cover - exercised where jsonschema-rs is absent
    jsonschema_rs = None

PREFIX = "urn:fluoro-cds:cds-hooks-2.0:"
CONTEXT_PREFIX = PREFIX + "context:"


class SchemaViolation(ValueError):
    """A message does not match its schema; `path` is the JSON path of the problem."""

    def __init__(self, message: str, path: str):
        super().__init__(message)
        self.path = path


@lru_cache(maxsize=1)
def _schemas() -> dict[str, dict]:
    """All schemas in service/schemas, by $id."""
    out = {}
    for entry in resources.files("service.schemas").iterdir():
        if entry.name.endswith(".json"):
            schema = json.loads(entry.read_text(encoding="utf-8"))
            out[schema["$id"]] = schema
    return out


@lru_cache(maxsize=1)
def _registry() -> Registry:
    return Registry().with_resources(
        (sid, Resource.from_contents(s, default_specification=DRAFT202012))
        for sid, s in _schemas().items())


class CompiledSchema:
    """A schema compiled for both engines: `is_valid` is fast, `errors` explain."""

    def __init__(self, schema: dict):
        Draft202012Validator.check_schema(schema)
        self.py = Draft202012Validator(schema, registry=_registry())
        self.rs = None
        if jsonschema_rs is not None:
            self.rs = jsonschema_rs.Draft202012Validator(
                schema, registry=_rs_registry(), validate_formats=False)

    def is_valid(self, instance: Any) -> bool:
        if self.rs is not None and self.rs.is_valid(instance):
            return True
        return self.py.is_valid(instance)

    def iter_errors(self, instance: Any):
        return self.py.iter_errors(instance)


@lru_cache(maxsize=1)
def _rs_registry():
    return jsonschema_rs.Registry(list(_schemas().items()))


def _compile(schema: dict) -> CompiledSchema:
    return CompiledSchema(schema)


@lru_cache(maxsize=None)
def validator(name: str) -> CompiledSchema:
    """The compiled validator of schema `name` (request, response, discovery, feedback, common)."""
    return _compile(_schemas()[PREFIX + name])


def hook_names() -> tuple[str, ...]:
    """Hooks with a context schema."""
    return tuple(sid[len(CONTEXT_PREFIX):] for sid in _schemas() if sid.startswith(CONTEXT_PREFIX))


@lru_cache(maxsize=None)
def request_validator(hook: str) -> CompiledSchema:
    """The request schema with the hook's context schema applied to `context`."""
    schemas = _schemas()
    if CONTEXT_PREFIX + hook not in schemas:
        raise KeyError(f"no context schema for hook '{hook}'")
    return _compile({"$schema": "https://json-schema.org/draft/2020-12/schema",
                     "allOf": [{"$ref": PREFIX + "request"}],
                     "properties": {"context": {"$ref": CONTEXT_PREFIX + hook}}})


@lru_cache(maxsize=1)
def resource_validator() -> CompiledSchema:
    """Any FHIR resource (common.json ``resource``): an object with a resourceType."""
    return _compile({"$schema": "https://json-schema.org/draft/2020-12/schema",
                     "$ref": PREFIX + "common#/$defs/resource"})


def first_error(v: CompiledSchema, instance: Any) -> ValidationError | None:
    """The most relevant error (jsonschema's best_match), or None when valid."""
    if v.rs is not None and v.rs.is_valid(instance):
        return None
    return best_match(v.iter_errors(instance))


def check(v: CompiledSchema, instance: Any, what: str) -> None:
    """Raise SchemaViolation naming the JSON path of the first problem."""
    err = first_error(v, instance)
    if err is not None:
        path = err.json_path
        raise SchemaViolation(f"{what} is invalid at {path}: {_message(err)}", path)


def _message(err: ValidationError) -> str:
    # Never echo long values (they may carry patient data): jsonschema quotes the instance.
    if err.validator in ("required", "dependentRequired"):
        return err.message
    if err.validator in ("type", "pattern", "const", "enum", "maxLength", "minLength",
                         "minItems", "maxItems", "minimum", "format"):
        expected = err.validator_value
        if err.validator == "type":
            return f"must be of type {expected}"
        if err.validator == "pattern":
            return f"does not match the pattern {expected}"
        if err.validator == "const":
            return f"must be {json.dumps(expected)}"
        if err.validator == "enum":
            return f"must be one of {', '.join(json.dumps(e) for e in expected)}"
        return f"violates {err.validator} {expected}"
    if err.validator == "not":
        return "has a property that is not allowed here"
    return f"violates '{err.validator}'"


def warm_up() -> None:
    """Compile every validator (call at app start so the first request is not slow)."""
    for name in ("request", "response", "discovery", "feedback"):
        validator(name)
    for hook in hook_names():
        request_validator(hook)
    resource_validator()

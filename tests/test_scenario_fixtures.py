"""The scenario fixtures are valid FHIR R4 and internally consistent."""
from __future__ import annotations

import pytest
from fhir.resources.R4B import get_fhir_model_class

from tests.scenario_fixtures import NUMBERS, scenario, valid_resources


def _validate(resource: dict) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


@pytest.mark.parametrize("n", NUMBERS)
def test_every_resource_is_valid_r4_with_an_id(n):
    s = scenario(n)
    for resource in valid_resources(s):
        assert resource.get("id") or resource["resourceType"] == "Bundle"
        _validate(resource)
    if s.hook == "org.fluoro-cds.claim-review":
        _validate(s.context["claim"]) if n != 17 else None
        assert s.context["claim"]["entry"][0]["resource"]["resourceType"] == "Claim"
        assert s.context_without_prefetch["claim"]["resourceType"] == "Claim"


@pytest.mark.parametrize("n", NUMBERS)
def test_references_resolve_within_the_scenario(n):
    s = scenario(n)
    known = {f"{r['resourceType']}/{r['id']}" for r in s.resources}
    if s.claim is not None:
        known.add(f"Claim/{s.claim['id']}")

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"reference"}:
                yield node["reference"]
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)

    for resource in s.resources:
        for reference in walk(resource):
            assert reference in known, (n, resource["id"], reference)


def test_scenario_17_claim_is_invalid_at_the_documented_path():
    s = scenario(17)
    from pydantic import ValidationError
    with pytest.raises(ValidationError) as err:
        _validate(s.claim)
    assert "servicedDate" in str(err.value)
    assert s.expected.error_path == "Claim.item[1].servicedDate"
    assert s.claim["item"][1]["servicedDate"] == "2024-13-45"


def test_ids_are_unique_across_scenarios():
    seen = {}
    for n in NUMBERS:
        for r in scenario(n).resources:
            key = f"{r['resourceType']}/{r['id']}"
            assert key not in seen or seen[key] == n, key
            seen[key] = n


def test_unknown_scenario_raises():
    with pytest.raises(KeyError):
        scenario(18)


def test_scenarios_are_built_fresh_and_independent():
    a, b = scenario(1), scenario(1)
    loc = [r for r in a.resources if r["resourceType"] == "Location"][0]
    loc["type"][0]["coding"][0]["code"] = "XX"
    assert [r for r in b.resources if r["resourceType"] == "Location"][0]["type"][0]["coding"][0]["code"] == "24"
    assert [r for r in scenario(1).resources if r["resourceType"] == "Location"][0]["type"][0]["coding"][0]["code"] == "24"


def test_prefetch_keys_match_the_service_templates():
    """Each prefetch run sends exactly the keys its service's prefetch templates declare
    (scenario 16 is the no-prefetch run: it sends none)."""
    from hooks.services import BY_ID

    for n in NUMBERS:
        s = scenario(n)
        declared = set(BY_ID[s.service_id].prefetch)
        if n == 16:
            assert s.prefetch == {}
            continue
        assert set(s.prefetch) == declared, (n, sorted(set(s.prefetch) ^ declared))

"""Smoke tests of the foundation: discovery, routing, errors."""
from __future__ import annotations


def test_discovery_lists_the_three_services(client):
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    services = {s["id"]: s for s in resp.get_json()["services"]}
    assert set(services) == {"fluoroscopy-order-review", "fluoroscopy-discharge-review",
                             "fluoroscopy-claim-review"}
    assert services["fluoroscopy-order-review"]["hook"] == "order-sign"
    assert services["fluoroscopy-discharge-review"]["hook"] == "encounter-discharge"
    codes = {o["code"] for o in services["fluoroscopy-claim-review"]["extension"]["fluoro-cds.configuration"]}
    assert {"global-billing", "distinct-modifier", "max-cards", "ptp-bundled"} <= codes


def test_unknown_service_is_404_json(client):
    resp = client.post("/cds-services/nope", json={"hook": "order-sign"})
    assert resp.status_code == 404
    error = resp.get_json()["error"]
    assert "unknown CDS service" in error and "nope" not in error  # never the value sent


def test_body_not_json_is_400_json(client):
    resp = client.post("/cds-services/fluoroscopy-claim-review", data=b"{not json",
                       content_type="application/json")
    assert resp.status_code == 400
    assert "JSON" in resp.get_json()["error"]


def test_wrong_hook_is_400(client):
    resp = client.post("/cds-services/fluoroscopy-claim-review",
                       json={"hook": "order-sign", "hookInstance": "x", "context": {}})
    assert resp.status_code == 400
    error = resp.get_json()["error"]
    assert "org.fluoro-cds.claim-review" in error  # the expected form, never the value sent
    assert "order-sign" not in error

"""Snapshot of the service's answers to every acceptance scenario, to compare two checkouts.

Not a test: prints one JSON document (status, selected headers and body of every answer, uuids and
``meta`` masked, then the audit rows without timings) for the 17 scenarios of tests/scenario_fixtures.py in
several variants: with prefetch, with prefetch and an Origin header, without prefetch (the claim
Bundle alone), without prefetch against a real FHIR server (sekmet-fhir, as the e2e tests), with
prefetch plus that server, and with configuration variants (max-cards, global-billing,
distinct-modifier, documentation-url, a topic switched off).

    PYTHONPATH=<checkout> python tests/scenario_snapshot.py > a.json   # e.g. main
    PYTHONPATH=. python tests/scenario_snapshot.py > b.json && cmp a.json b.json

The script only needs the checkout's ``service``, ``hooks`` and ``tests`` packages on PYTHONPATH.
"""
from __future__ import annotations

import copy
import logging
import re
import sys
import tempfile
from pathlib import Path

import orjson

from hooks.services import BY_ID
from service.app import create_app
from service.settings import Settings
from tests.cards_support import full_prefetch
from tests.fhir_server import start_fhir_server, stop_fhir_server
from tests.scenario_fixtures import NUMBERS, scenario

HEADERS = ("Content-Type", "Cache-Control", "X-Content-Type-Options", "Access-Control-Allow-Origin",
           "Access-Control-Expose-Headers", "Vary", "WWW-Authenticate")
UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[47][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")  # cards: v7
CONFIGS = (
    {"max-cards": 1},
    {"global-billing": True},
    {"distinct-modifier": "59"},
    {"documentation-url": "https://docs.example.org/fluoro"},
    {"fluoroscopy-integral": False, "ptp-bundled": False},
)


def _strip_meta(value):
    """`value` without ``meta`` elements (the FHIR server's lastUpdated / versionId)."""
    if isinstance(value, dict):
        return {k: _strip_meta(v) for k, v in value.items() if k != "meta"}
    if isinstance(value, list):
        return [_strip_meta(v) for v in value]
    return value


def _answer(client, path: str, body: dict | bytes, headers: dict | None = None) -> dict:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    resp = client.post(path, data=data, content_type="application/json", headers=headers or {})
    text = UUID.sub(b"<uuid>", resp.get_data())
    try:
        payload = orjson.loads(text)
    except orjson.JSONDecodeError:
        payload = text.decode("utf-8", "replace")
    return {"status": resp.status_code,
            "headers": {h: resp.headers.get(h) for h in HEADERS if h in resp.headers},
            "body": _strip_meta(payload)}


def _authorization(server) -> dict:
    return {"access_token": server.token, "token_type": "Bearer", "expires_in": 300,
            "scope": "user/*.read", "subject": "fluoro-cds-tests"}


def main() -> int:
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp())
    app = create_app(Settings(db_path=str(tmp / "ncci.sqlite"), state_db_path=str(tmp / "state.sqlite")))
    client = app.test_client()
    server = start_fhir_server()
    out: dict[str, dict] = {}
    try:
        for n in NUMBERS:
            if n != 17:
                server.load(scenario(n).resources)
        for n in NUMBERS:
            s = scenario(n)
            path = f"/cds-services/{s.service_id}"
            with_prefetch = s.request(with_prefetch=True)
            with_prefetch["prefetch"] = full_prefetch(s, BY_ID[s.service_id].prefetch)
            out[f"{n}/prefetch"] = _answer(client, path, with_prefetch)
            out[f"{n}/prefetch+origin"] = _answer(client, path, with_prefetch,
                                                 {"Origin": "https://ehr.example.org"})
            out[f"{n}/no-prefetch"] = _answer(client, path, s.request(with_prefetch=False))
            out[f"{n}/context-only"] = _answer(client, path, s.request(with_prefetch=True))
            if n != 16:
                body = s.request(with_prefetch=False, fhir_server=server.base_url)
                body["fhirAuthorization"] = _authorization(server)
                out[f"{n}/server"] = _answer(client, path, body)
                body = copy.deepcopy(with_prefetch)
                body["fhirServer"] = server.base_url
                body["fhirAuthorization"] = _authorization(server)
                out[f"{n}/prefetch+server"] = _answer(client, path, body)
            for i, config in enumerate(CONFIGS):
                body = copy.deepcopy(with_prefetch)
                ext = dict((body.get("extension") or {}).get("fluoro-cds.configuration") or {})
                ext.update(config)
                body["extension"] = {"fluoro-cds.configuration": ext}
                out[f"{n}/config{i}"] = _answer(client, path, body)
            if s.raw_body is not None:
                out[f"{n}/raw"] = _answer(client, path, s.raw_body)
        state = app.config["FLUORO_STATE"]
        out["audit"] = [{k: (len(v) if k == "card_uuids" else v) for k, v in row.items()
                         if k not in ("id", "at", "latency_ms")} for row in state.audit(limit=100000)]
    finally:
        stop_fhir_server(server)
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

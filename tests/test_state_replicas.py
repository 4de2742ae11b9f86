"""Two service processes (replicas behind one load balancer) sharing one real PostgreSQL state DB."""
from __future__ import annotations

import json
import time
import uuid

import requests

from service.state import StateStore
from tests.report_support import exercise
from tests.serve_support import Served, serve_env
from tests.service_support import StaticJsonServer, TokenFactory, ec_key

ADMIN = "replica-admin-token-0123456789"
BASE = "https://cds.example.test"  # the public URL both replicas are reached by
ISSUER = "https://ehr.example.test"


def test_replicas_share_the_replay_cache_and_the_feedback(tmp_path, pg_url):
    key = ec_key("ec-1")
    jwks = StaticJsonServer({"/jwks.json": {"keys": [key.public_jwk]}})
    tokens = TokenFactory(ISSUER, {"ec-1": key}, "ec-1")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    settings = dict(FLUORO_CDS_AUTH="jwt", FLUORO_CDS_BASE_URL=BASE, FLUORO_CDS_STATE_DB=pg_url,
                    FLUORO_CDS_FHIR_ALLOWLIST="https://ehr.example.test/fhir",
                    FLUORO_CDS_ADMIN_TOKEN=ADMIN,
                    FLUORO_CDS_TRUSTED_ISSUERS=json.dumps({ISSUER: jwks.url("/jwks.json")}))
    try:
        with Served(serve_env(tmp_path / "a", **settings)) as a, \
                Served(serve_env(tmp_path / "b", **settings)) as b:
            path = "/cds-services"
            token = tokens.mint(BASE + path)
            auth = {"Authorization": f"Bearer {token}"}
            assert requests.get(a.url + path, headers=auth, timeout=10).status_code == 200
            replay = requests.get(b.url + path, headers=auth, timeout=10)
            assert replay.status_code == 401 and "replay" in replay.json()["error"]
            assert requests.get(a.url + path, headers=auth, timeout=10).status_code == 401

            card = str(uuid.uuid4())
            fb_path = "/cds-services/fluoroscopy-claim-review/feedback"
            body = {"feedback": [{"card": card, "outcome": "overridden",
                                  "outcomeTimestamp": "2024-08-01T10:00:00Z",
                                  "overrideReason": {"reason": {"system": "https://example.test/r",
                                                                "code": "distinct"}}}]}
            resp = requests.post(a.url + fb_path, json=body, timeout=10,
                                 headers={"Authorization": f"Bearer {tokens.mint(BASE + fb_path)}"})
            assert resp.status_code == 200 and resp.json() == {"stored": 1}
            for served in (a, b):
                ready = requests.get(served.url + "/readyz", timeout=10)
                assert ready.status_code == 200, ready.text

            # cards shown by replica a, feedback sent to replica b: the report of either sees both
            def post(path, body):
                to = b if path.endswith("/feedback") else a
                resp = requests.post(to.url + path, json=body, timeout=20, headers={
                    "Authorization": f"Bearer {tokens.mint(BASE + path)}"})
                return resp.status_code, resp.json()

            exercise(post)
            time.sleep(0.5)  # a's audit writer stores its queue every 0.1 s
            for served in (a, b):
                report = requests.get(served.url + "/admin/report", timeout=20,
                                      headers={"Authorization": f"Bearer {ADMIN}"}).json()
                assert report["totals"] == {"cards_shown": 6, "feedback": 7, "accepted": 2,
                                            "overridden": 3, "unmatched_feedback": 2}
    finally:
        jwks.close()
    rows = StateStore(pg_url).feedback("fluoroscopy-claim-review")
    assert [(r["card_uuid"], r["override_reason_code"]) for r in rows][0] == (card, "distinct")
    assert len(rows) == 7

"""Cards and feedback through the real service, for the feedback report's tests."""
from __future__ import annotations

import uuid

from tests.service_support import CPT, claim

POS = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set"
OVERRIDE = "https://fluoro-cds.org/CodeSystem/override-reason"


def claim_request(*codes: str) -> dict:
    """A claim-review request billing `codes` on one day in an inpatient hospital (POS 21)."""
    body = claim()
    body["item"] = [{"sequence": i + 1, "productOrService": {"coding": [{"system": CPT, "code": c}]},
                     "servicedDate": "2024-08-01",
                     "locationCodeableConcept": {"coding": [{"system": POS, "code": "21"}]}}
                    for i, c in enumerate(codes)]
    return {"hook": "org.fluoro-cds.claim-review", "hookInstance": str(uuid.uuid4()),
            "context": {"patientId": "pat-1", "claim": body}}


def accepted(card: dict) -> dict:
    return {"card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2024-08-02T10:00:00Z",
            "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}]}


def overridden(card: dict, reason: str | None) -> dict:
    item = {"card": card["uuid"], "outcome": "overridden", "outcomeTimestamp": "2024-08-02T10:00:00Z"}
    if reason:
        item["overrideReason"] = {"reason": {"system": OVERRIDE, "code": reason},
                                  "userComment": "documented separately"}
    return item


SERVICE = "/cds-services/fluoroscopy-claim-review"


def exercise(post) -> dict[str, list[dict]]:
    """Shows cards and sends feedback through `post(path, json) -> (status, body)`:
    3 ptp-bundled cards (2 accepted, 1 overridden 'distinct-session'), 2 fluoroscopy-integral
    cards (1 overridden without reason, 1 overridden 'payer-policy'), 1 use-guidance-code card
    with no feedback, and one feedback item for a card never shown. Returns the cards by code."""
    shown: dict[str, list[dict]] = {}
    for codes in [("33289", "76000")] * 3 + [("29881", "76000"), ("62323", "76000"),
                                              ("20610", "76000")]:
        status, body = post(SERVICE, claim_request(*codes))
        assert status == 200, body
        for card in body["cards"]:
            shown.setdefault(card["source"]["topic"]["code"], []).append(card)
    ptp, integral = shown["ptp-bundled"], shown["fluoroscopy-integral"]
    items = [accepted(ptp[0]), accepted(ptp[1]), overridden(ptp[2], "distinct-session"),
             overridden(integral[0], None), overridden(integral[1], "payer-policy"),
             {"card": str(uuid.uuid4()), "outcome": "accepted", "outcomeTimestamp": "2024-08-02T10:00:00Z",
              "acceptedSuggestions": [{"id": str(uuid.uuid4())}]}]
    status, body = post(SERVICE + "/feedback", {"feedback": items})
    assert status == 200 and body == {"stored": 6}, body
    return shown

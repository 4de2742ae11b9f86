"""What the record already documents for the 76000, read the way encounter-discharge reads it.

The documentation app does not judge documentation itself: it runs the fluoroscopy-discharge-review
service's own review (:func:`hooks.services.discharge_review.review`: the same fetch plan, the same
extraction, hooks/extract/evidence.py, and the same rules) on the EHR's FHIR server with the
launch's access token, and reads the documentation-missing finding. One definition.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from hooks.config import resolve
from hooks.context import DataUnavailable, HookRequest, InvalidResource, Unchecked
from hooks.findings import DOCUMENTATION_MISSING
from hooks.model import DOC_ELEMENTS, Evidence
from hooks.services import discharge_review

from ..fhir_access import FhirAccess, FhirClient
from ..runtime import Runtime

# Elements the form can record (separate-procedure is a fact about other procedures, not an entry).
FORM_ELEMENTS = tuple(e for e in DOC_ELEMENTS if e != "separate-procedure")


@dataclass(frozen=True)
class Review:
    """The review's answer for the form."""

    missing: tuple[str, ...]  # documentation element codes the documentation-missing finding lists
    evidence: Evidence | None  # what the record shows (None when it could not be judged)
    judged: bool  # False when data needed to judge the documentation could not be read
    gaps: tuple[str, ...] = ()  # what could not be read (the review's "not checked" list)
    error: str | None = None  # why there is no review at all


def review_encounter(rt: Runtime, iss: str, access_token: str, *, patient: str, encounter: str,
                     user: str | None = None) -> Review:
    """The discharge review of Encounter `encounter` of Patient `patient` (ids), read from `iss`."""
    context = {"userId": user or "Practitioner/unknown", "patientId": patient, "encounterId": encounter}
    gaps = Unchecked()
    client = FhirClient(iss, access_token, rt.client_settings)
    fhir = FhirAccess(prefetch=None, templates=discharge_review.PREFETCH, context=context,
                      client=client, unchecked=gaps)
    request = HookRequest(hook="encounter-discharge", hook_instance=str(uuid.uuid4()), context=context,
                          config=resolve(None, rt.settings.defaults), fhir=fhir,
                          reference=rt.live.current(), unchecked=gaps)
    try:
        case, findings = discharge_review.review(request)
    except DataUnavailable as exc:
        return Review((), None, False, error=str(exc))
    except InvalidResource as exc:
        return Review((), None, False, error=f"the record holds an invalid resource at {exc.path}")
    missing: tuple[str, ...] = ()
    for f in findings:
        if f.code == DOCUMENTATION_MISSING:
            missing = f.missing
    judged = case.evidence_checked
    return Review(missing, case.evidence if judged else None, judged,
                  gaps=tuple(g.what for g in gaps))

"""The ``appContext`` of the documentation app's SMART link (docs/smart-app.md#appcontext).

CDS Hooks 2.0 ``Link.appContext`` is a string the EHR hands to the SMART app in the token
response. Ours is a small JSON object (compact, keys in this order, at most a few hundred bytes):

    {"procedure": "Procedure/p1", "encounter": "Encounter/e1", "missing": ["fluoroscopy-time"]}
    {"claim": "Claim/c1", "line": 2, "encounter": "Encounter/e1", "missing": ["radiation-dose"]}

``procedure`` names the 76000 Procedure (encounter-discharge and order-sign without a Claim);
``claim`` and ``line`` (``Claim.item.sequence``) the 76000 claim line; ``encounter`` the line's
encounter when the record names one; ``missing`` the documentation element codes of the card
(:data:`hooks.model.DOC_ELEMENTS`). Built here and read back here (:func:`parse_app_context`),
so the card and the app share one definition.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .model import DOC_ELEMENTS, Case

# The key of the resolved configuration that holds the app's launch URL: set by the service layer
# from FLUORO_CDS_SMART_LAUNCH_URL (service/settings.py), never by a request.
SMART_LAUNCH_KEY = "smart-launch-url"
MAX_APP_CONTEXT = 2048  # characters of an appContext read back (ours are far shorter)
_REF = re.compile(r"(Procedure|Claim|Encounter)/[A-Za-z0-9\-.]{1,64}")


def documentation_app_context(finding, case: Case) -> str:
    """The appContext of a documentation-missing card: its first 76000 line and missing elements."""
    ctx: dict = {}
    by_key = {line.key: line for line in case.lines}
    line = next((by_key[k] for k in finding.lines if k in by_key), None)
    if line is not None:
        if line.kind == "procedure" and line.resource:
            ctx["procedure"] = line.resource
        elif line.kind == "claim-item":
            cid = (case.claim or {}).get("id")
            if isinstance(cid, str) and _REF.fullmatch(f"Claim/{cid}"):
                ctx["claim"] = f"Claim/{cid}"
            if line.sequence is not None:
                ctx["line"] = line.sequence
        if line.encounters:
            ctx["encounter"] = line.encounters[0]
    ctx["missing"] = list(finding.missing)
    return json.dumps(ctx, separators=(",", ":"))


@dataclass(frozen=True)
class AppContext:
    """An appContext read back: what the app was launched for."""

    procedure: str | None = None
    claim: str | None = None
    line: int | None = None
    encounter: str | None = None
    missing: tuple[str, ...] = ()


def parse_app_context(text: object) -> AppContext:
    """The appContext `text` as built by :func:`documentation_app_context`; anything unreadable
    or of another shape gives an empty AppContext (the app then uses the launch's encounter)."""
    if not isinstance(text, str) or len(text) > MAX_APP_CONTEXT:
        return AppContext()
    try:
        raw = json.loads(text)
    except ValueError:
        return AppContext()
    if not isinstance(raw, dict):
        return AppContext()

    def ref(key: str, rtype: str) -> str | None:
        value = raw.get(key)
        return value if isinstance(value, str) and value.startswith(rtype + "/") \
            and _REF.fullmatch(value) else None

    line = raw.get("line")
    missing = raw.get("missing")
    return AppContext(
        procedure=ref("procedure", "Procedure"), claim=ref("claim", "Claim"),
        line=line if type(line) is int and line > 0 else None,
        encounter=ref("encounter", "Encounter"),
        missing=tuple(m for m in DOC_ELEMENTS if isinstance(missing, list) and m in missing))

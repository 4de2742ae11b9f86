"""The documentation app's pages and endpoints under /smart (docs/smart-app.md).

``GET /smart/launch``      EHR launch (``iss``, ``launch``) or standalone launch (``iss`` alone;
                           ``procedure`` / ``encounter`` name what to document); a form without
                           ``iss``. Discovery, then the authorization request (PKCE S256).
``GET /smart/callback``    the redirect_uri: the code exchanged for tokens, kept server side.
``GET /smart/``            the form: what is documented, fields for what is missing.
``POST /smart/api/documentation``  the form's JSON: checked (400 naming each field), then written
                           to the EHR in one transaction (or one write at a time), and reviewed again.

Every ``iss`` must lie under a base of FLUORO_CDS_FHIR_ALLOWLIST (the fhirServer allowlist; the app
talks to no FHIR server when it is empty). Tokens are never logged nor sent to the browser.
"""
from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from typing import Any

from authlib.integrations.base_client.errors import OAuthError
from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Blueprint, Response, redirect, render_template, request

from hooks import fhir_read as fr
from hooks.app_context import parse_app_context
from hooks.context import InvalidResource
from hooks.extract.codes import procedure_code
from hooks.extract.companions import INACTIVE
from hooks.findings import KINDS, DOCUMENTATION_MISSING

from ..errors import ApiError
from ..fhir_access import fhir_server_allowed
from ..jsonio import json_response, loads
from ..runtime import Runtime, runtime
from . import oauth
from .ehr import Ehr, EhrError, Expired
from .form import BODY_SITES, DOSE_UNITS, Problem, read_entry
from .paths import SMART_CALLBACK_PATH, SMART_LAUNCH_PATH, SMART_PREFIX
from .record import replace_reference, transaction, writes
from .review import FORM_ELEMENTS, Review, review_encounter
from .sessions import Sessions, SessionsFull

log = logging.getLogger("fluoro_cds.smart")

bp = Blueprint("smart", __name__, url_prefix=SMART_PREFIX, template_folder="templates",
               static_folder="static", static_url_path="/static")
MAX_FORM_BYTES = 64 * 1024
MAX_DIAGNOSES = 20
_SESSIONS = "fluoro_cds_smart_sessions"
EXPIRED_MESSAGE = ("Your authorization from the EHR has expired. Nothing was written. Open the app "
                   "again from the card in the EHR to continue.")


def _sessions(rt: Runtime) -> Sessions:
    from flask import current_app
    found = current_app.extensions.get(_SESSIONS)
    if found is None:
        found = current_app.extensions[_SESSIONS] = Sessions(rt.state, rt.settings.smart_session_ttl)
    return found


def _root() -> str:
    base = runtime().settings.base_url
    return base.rstrip("/") if base else request.url_root.rstrip("/")


def _secure() -> bool:
    return _root().startswith("https://")


def _page(template: str, status: int = 200, **values: Any) -> Response:
    resp = Response(render_template(template, **values), status=status, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                               "style-src 'self'; script-src 'self'; base-uri 'none'; "
                                               "form-action 'self'")
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _problem_page(title: str, message: str, status: int) -> Response:
    return _page("message.html", status, title=title, message=message, launch=SMART_LAUNCH_PATH)


# -- launch ------------------------------------------------------------------------------------
@bp.get("/launch")
def launch() -> Response:
    rt = runtime()
    iss = request.args.get("iss", "").strip()
    if not iss:
        return _page("standalone.html")
    if not rt.settings.fhir_allowlist or not fhir_server_allowed(iss, rt.settings.fhir_allowlist):
        return _problem_page("This EHR is not allowed",
                             "The app only talks to the FHIR servers of FLUORO_CDS_FHIR_ALLOWLIST; "
                             "the iss of this launch is not one of them.", 403)
    launch_id = request.args.get("launch") or None
    if launch_id is not None and len(launch_id) > 2048:
        return _problem_page("Launch refused", "The launch parameter is longer than 2048 characters.", 400)
    standalone = {}
    for key in ("procedure", "encounter"):  # standalone launch: what to document
        value = request.args.get(key)
        if value:
            parsed = getattr(parse_app_context(json.dumps({key: value})), key)
            if parsed is None:
                return _problem_page("Launch refused", f"{key} must be {key.capitalize()}/<id>.", 400)
            standalone[key] = parsed
    try:
        config = oauth.discover(iss, rt.settings.smart_timeout)
    except oauth.LaunchError as exc:
        return _problem_page("The EHR could not be reached", f"{exc}.", 502)
    scopes = oauth.EHR_SCOPES if launch_id else oauth.STANDALONE_SCOPES
    session = oauth.oauth_session(rt.settings.smart_client_id, rt.settings.smart_client_secret,
                                  timeout=rt.settings.smart_timeout,
                                  redirect_uri=_root() + SMART_CALLBACK_PATH, scope=" ".join(scopes))
    url, state, verifier = oauth.authorization_url(session, config, iss=iss, launch=launch_id)
    data = {"iss": iss, "token_endpoint": config.token_endpoint, "state": state, "verifier": verifier,
            "standalone": standalone, "csrf": secrets.token_urlsafe(24), "started": time.time()}
    try:
        sid = _sessions(rt).start(data)
    except SessionsFull:
        return _problem_page("Too many open launches", "Try again in a few minutes.", 503)
    resp = redirect(url, code=302)
    _sessions(rt).set_cookie(resp, sid, _secure())
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


@bp.get("/callback")
def callback() -> Response:
    rt = runtime()
    loaded = _sessions(rt).load(request)
    if loaded is None:
        return _problem_page("No launch in progress",
                             "This browser has no launch of the app in progress (or it expired). "
                             "Open the app again from the EHR.", 400)
    sid, data = loaded
    state = request.args.get("state", "")
    if not data.get("state") or not hmac.compare_digest(state, data["state"]):
        return _problem_page("Launch refused", "The authorization answer does not match this launch "
                                               "(state). Open the app again from the EHR.", 400)
    if "error" in request.args:
        return _problem_page("The EHR did not authorize the app",
                             "The authorization server answered " + _safe_code(request.args["error"]) + ".", 403)
    code = request.args.get("code")
    if not code or len(code) > 4096:
        return _problem_page("Launch refused", "The authorization answer has no code.", 400)
    session = oauth.oauth_session(rt.settings.smart_client_id, rt.settings.smart_client_secret,
                                  timeout=rt.settings.smart_timeout,
                                  redirect_uri=_root() + SMART_CALLBACK_PATH)
    try:
        token = session.fetch_token(data["token_endpoint"], code=code, code_verifier=data["verifier"],
                                    grant_type="authorization_code")
    except (OAuthError, OAuth2Error) as exc:
        return _problem_page("The EHR did not issue a token",
                             "The token request was refused (" + _safe_code(getattr(exc, "error", "")) + ").", 403)
    except Exception as exc:  # requests errors: unreachable, timeout
        return _problem_page("The EHR could not be reached",
                             f"The token request failed ({type(exc).__name__}).", 502)
    data.pop("state"), data.pop("verifier")
    data["token"] = dict(token)
    _sessions(rt).save(sid, data)
    return redirect(SMART_PREFIX + "/", code=303)


def _safe_code(value: str) -> str:
    """An OAuth error code as shown to the user: its RFC 6749 characters only, short."""
    kept = "".join(c for c in str(value) if c.isalnum() or c in "_-.")[:60]
    return kept or "an error"


# -- the form ----------------------------------------------------------------------------------
def _ehr(rt: Runtime, sid: str, data: dict) -> Ehr:
    def update_token(token, refresh_token=None, access_token=None):
        data["token"] = dict(token)
        _sessions(rt).save(sid, data)

    session = oauth.oauth_session(rt.settings.smart_client_id, rt.settings.smart_client_secret,
                                  timeout=rt.settings.smart_timeout, token=data["token"],
                                  token_endpoint=data["token_endpoint"], update_token=update_token)
    return Ehr(data["iss"], session)


def _fresh_token(ehr: Ehr) -> str:
    """The access token, refreshed first when it has expired (Expired when it cannot be)."""
    try:
        if not ehr.session.ensure_active_token():
            raise Expired()
    except (OAuthError, OAuth2Error):
        raise Expired() from None
    return ehr.session.token["access_token"]


def _target(ehr: Ehr, data: dict) -> dict:
    """What to document: the 76000 Procedure, its encounter and patient, as {"procedure",
    "encounter", "patient"}: the appContext's Procedure, else the active 76000 Procedure of the
    appContext's encounter (a claim line's: ``Claim.item.encounter``), of the standalone launch's,
    or of the launch's encounter context."""
    token = data["token"]
    ctx = parse_app_context(token.get("appContext"))
    chosen = data.get("standalone") or {}
    procedure_key = ctx.procedure or chosen.get("procedure")
    encounter_key = ctx.encounter or chosen.get("encounter")
    patient = token.get("patient") if isinstance(token.get("patient"), str) else None
    procedure = ehr.read(procedure_key) if procedure_key else None
    if not encounter_key and procedure is None and isinstance(token.get("encounter"), str):
        encounter_key = f"Encounter/{token['encounter']}"  # the launch's encounter context
    if procedure is not None:
        enc = (procedure.get("encounter") or {}).get("reference")
        encounter_key = encounter_key or (fr.normalize_reference(enc) if isinstance(enc, str) else None)
        subject = (procedure.get("subject") or {}).get("reference")
        if isinstance(subject, str) and subject.startswith("Patient/"):
            patient = patient or subject.split("/", 1)[1]
    if not encounter_key:
        raise EhrError("the launch names no encounter and no Procedure to document")
    if patient is None:
        encounter = ehr.read(encounter_key)
        subject = ((encounter or {}).get("subject") or {}).get("reference")
        if isinstance(subject, str) and subject.startswith("Patient/"):
            patient = subject.split("/", 1)[1]
    if patient is None:
        raise EhrError("the launch names no patient")
    if procedure is None:
        for p in ehr.search("Procedure", {"encounter": encounter_key, "patient": f"Patient/{patient}"}):
            try:
                code = procedure_code(p.get("code"), "Procedure", "code")
            except InvalidResource:
                continue
            if code == "76000" and p.get("status") not in INACTIVE:
                procedure = p
                break
    if procedure is None:
        raise EhrError("the encounter has no 76000 Procedure: record the fluoroscopy procedure "
                       "in the EHR first")
    return {"procedure": procedure, "encounter": encounter_key, "patient": patient}


def _choices(ehr: Ehr, procedure: dict, encounter_key: str) -> tuple[list[dict], list[dict]]:
    """(the encounter's diagnoses, the Procedure's performers) the form offers."""
    conditions: list[dict] = []
    encounter = ehr.read(encounter_key)
    for d in ((encounter or {}).get("diagnosis") or ())[:MAX_DIAGNOSES]:
        ref = (d.get("condition") or {}).get("reference") if isinstance(d, dict) else None
        if isinstance(ref, str) and fr.normalize_reference(ref).startswith("Condition/"):
            key = fr.normalize_reference(ref)
            cond = ehr.read(key) or {}
            code = cond.get("code") or {}
            coding = next((c for c in code.get("coding") or () if isinstance(c, dict)), {})
            label = code.get("text") or coding.get("display") or key
            if coding.get("code"):
                label = f"{coding['code']} {label}"
            conditions.append({"ref": key, "label": str(label)[:200]})
    performers: list[dict] = []
    for p in procedure.get("performer") or ():
        actor = p.get("actor") if isinstance(p, dict) else None
        ref = (actor or {}).get("reference")
        if isinstance(ref, str) and fr.normalize_reference(ref).startswith(("Practitioner/", "PractitionerRole/")):
            key = fr.normalize_reference(ref)
            performers.append({"ref": key, "label": str(actor.get("display") or key)[:200]})
    return conditions, performers


def _load() -> tuple[Runtime, str, dict] | Response:
    rt = runtime()
    loaded = _sessions(rt).load(request)
    if loaded is None or "token" not in loaded[1]:
        return _problem_page("No launch", "Open the app from the documentation card in the EHR "
                                          "(or start a standalone launch).", 401)
    return (rt, *loaded)


@bp.get("/")
def form() -> Response:
    loaded = _load()
    if isinstance(loaded, Response):
        return loaded
    rt, sid, data = loaded
    ehr = _ehr(rt, sid, data)
    try:
        token = _fresh_token(ehr)
        target = _target(ehr, data)
        result = review_encounter(rt, data["iss"], token, patient=target["patient"],
                                  encounter=target["encounter"].split("/", 1)[1])
        conditions, performers = _choices(ehr, target["procedure"], target["encounter"])
    except Expired:
        return _problem_page("Authorization expired", EXPIRED_MESSAGE, 401)
    except EhrError as exc:
        return _problem_page("The record could not be read", f"{str(exc)[:1].upper()}{str(exc)[1:]}.", 502)
    procedure = target["procedure"]
    missing = tuple(m for m in result.missing if m in FORM_ELEMENTS)
    data["offer"] = {"procedure": f"Procedure/{procedure['id']}", "encounter": target["encounter"],
                     "patient": f"Patient/{target['patient']}", "missing": list(missing),
                     "conditions": [c["ref"] for c in conditions],
                     "performers": [p["ref"] for p in performers]}
    _sessions(rt).save(sid, data)
    return _page("form.html", **_view(result, missing, procedure, conditions, performers, data["csrf"]))


def _view(result: Review, missing: tuple[str, ...], procedure: dict, conditions: list[dict],
          performers: list[dict], csrf: str) -> dict:
    wording = KINDS[DOCUMENTATION_MISSING].wording
    documented = _documented(result, missing)
    when = procedure.get("performedDateTime") or (procedure.get("performedPeriod") or {}).get("start") or ""
    return {"missing": missing, "documented": documented, "judged": result.judged,
            "gaps": result.gaps, "error": result.error, "separate": "separate-procedure" in result.missing,
            "procedure_key": f"Procedure/{procedure['id']}", "procedure_date": str(when)[:10],
            "conditions": conditions, "performers": performers, "body_sites": BODY_SITES,
            "dose_units": DOSE_UNITS, "csrf": csrf, "labels": {e: wording.get("missing." + e, e) for e in FORM_ELEMENTS}}


def _label(element: str) -> str:
    """How the card lists a documentation element (the finding's wording)."""
    return KINDS[DOCUMENTATION_MISSING].wording.get("missing." + element, element)


def _documented(result: Review, missing: tuple[str, ...]) -> list[str]:
    """The elements the review found documented (none when it could not judge)."""
    out = []
    if result.judged:
        evidence = result.evidence
        for e in FORM_ELEMENTS:
            if e not in missing:
                shown = _label(e)
                if e == "fluoroscopy-time" and evidence is not None and evidence.fluoro_minutes is not None:
                    shown += f": {evidence.fluoro_minutes:g} min"
                out.append(shown)
    return out


# -- save --------------------------------------------------------------------------------------
def _problems(problems: list[Problem]) -> Response:
    return json_response({"error": "The documentation was not saved: correct the fields named.",
                          "problems": [p.as_json() for p in problems]}, 400)


@bp.post("/api/documentation")
def save() -> Response:
    rt = runtime()
    loaded = _sessions(rt).load(request)
    if loaded is None or "token" not in loaded[1]:
        raise ApiError(401, "no launch of the documentation app in this browser (or it expired): "
                            "open the app again from the EHR", code="login")
    sid, data = loaded
    sent = request.headers.get("X-CSRF-Token", "")
    if not hmac.compare_digest(sent.encode(), str(data.get("csrf", "")).encode()) or not sent:
        raise ApiError(403, "the X-CSRF-Token header must carry the form's token", code="forbidden",
                       expression="X-CSRF-Token")
    offer = data.get("offer")
    if not offer:
        raise ApiError(409, "open the form (GET /smart/) before saving", code="conflict")
    raw = request.get_data(cache=False)
    if len(raw) > MAX_FORM_BYTES:
        raise ApiError(413, f"the form is larger than {MAX_FORM_BYTES} bytes", code="too-costly")
    try:
        body = loads(raw)
    except ValueError:
        return _problems([Problem("$", "a JSON object with the form's fields")])
    entry, problems = read_entry(body, tuple(offer["missing"]), conditions=tuple(offer["conditions"]),
                                 performers=tuple(offer["performers"]))
    if problems:
        return _problems(problems)
    ehr = _ehr(rt, sid, data)
    try:
        procedure = ehr.read(offer["procedure"])
        if procedure is None:
            raise EhrError("the Procedure is no longer on the EHR")
        steps = writes(entry, procedure, patient=offer["patient"], encounter=offer["encounter"])
        if not steps:
            return json_response({"written": [], "mode": "none", "missing": offer["missing"]})
        if ehr.supports_transaction():
            answer = ehr.transaction(transaction(steps))
            written = [str((e.get("response") or {}).get("location") or "").split("/_history")[0]
                       for e in answer.get("entry") or () if isinstance(e, dict)]
            mode = "transaction"
        else:
            written, mode = _one_by_one(ehr, steps), "separate"
    except Expired:
        raise ApiError(401, EXPIRED_MESSAGE, code="expired") from None
    except EhrError as exc:
        detail = f" The server said: {exc.outcome}" if exc.outcome else ""
        raise ApiError(502, f"{exc}.{detail}", code="exception") from None
    written = [fr.normalize_reference(w) for w in written if w]
    try:  # written: the review again (a failure now no longer means nothing was written)
        again = review_encounter(rt, data["iss"], _fresh_token(ehr), patient=offer["patient"].split("/", 1)[1],
                                 encounter=offer["encounter"].split("/", 1)[1])
    except Expired:
        again = Review((), None, False, error="the authorization expired after the save")
    if again.error:
        return json_response({"written": written, "mode": mode, "missing": list(offer["missing"]),
                              "labels": [_label(m) for m in offer["missing"]], "documented": [],
                              "judged": False, "review": f"Saved, but not reviewed again: {again.error}."})
    remaining = tuple(m for m in again.missing if m in FORM_ELEMENTS)
    offer["missing"] = list(remaining)
    _sessions(rt).save(sid, data)
    return json_response({"written": written, "mode": mode,
                          "missing": list(remaining), "labels": [_label(m) for m in remaining],
                          "documented": _documented(again, remaining), "judged": again.judged})


def _one_by_one(ehr: Ehr, steps) -> list[str]:
    """Write each resource alone (a server without transactions), new ones first, each urn:uuid
    then replaced by the id the server gave. An error names what was written before it."""
    done: list[str] = []
    ids: dict[str, str] = {}
    for step in steps:
        resource = step.resource
        for old, new in ids.items():
            resource = replace_reference(resource, old, new)
        try:
            key = ehr.write(step.method, step.url, resource, step.if_match)
        except EhrError as exc:
            if done:
                raise EhrError(f"{exc}; written before it: {', '.join(done)}", exc.status, exc.outcome) from None
            raise
        if step.full_url:
            ids[step.full_url] = key
        done.append(key)
    return done

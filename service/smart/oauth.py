"""SMART App Launch 2 for the documentation app: discovery, authorization code with PKCE, tokens.

Nothing about OAuth is written by hand here: :class:`authlib.integrations.requests_client.OAuth2Session`
(Authlib) builds the authorization URL with the PKCE ``code_challenge`` (S256, RFC 7636) from a
``code_verifier`` it generates, exchanges the code, sends the access token on every FHIR request
and refreshes it (refresh_token grant) when it has expired and a refresh token was offered.
This module reads ``{iss}/.well-known/smart-configuration`` (bounded: timeout and size) and
says which endpoints and scopes to use. docs/smart-app.md#launch.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from ..fhir_access import normalize_url

MAX_CONFIG_BYTES = 256 * 1024  # a smart-configuration document is a few kilobytes
# SMART v2 scopes (resource.cruds) for what the app reads and writes; `launch` (EHR launch) or
# `launch/patient launch/encounter` (standalone) are added; online_access asks for a refresh
# token that lives as long as the user's session at the EHR.
READ_WRITE_SCOPES = ("openid", "fhirUser", "online_access",
                     "user/Patient.rs", "user/Encounter.rs", "user/Condition.rs", "user/Claim.rs",
                     "user/Location.rs", "user/Practitioner.rs", "user/Procedure.rus",
                     "user/Observation.crs", "user/DiagnosticReport.crs", "user/ImagingStudy.crs")
EHR_SCOPES = ("launch",) + READ_WRITE_SCOPES
STANDALONE_SCOPES = ("launch/patient", "launch/encounter") + READ_WRITE_SCOPES


class LaunchError(Exception):
    """The launch cannot go on; the message is for the user (never holds a token)."""


@dataclass(frozen=True)
class SmartConfiguration:
    """What the app uses of an EHR's ``.well-known/smart-configuration``."""

    authorization_endpoint: str
    token_endpoint: str


def _endpoint(config: dict, key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or normalize_url(value) is None:
        raise LaunchError(f"the EHR's smart-configuration has no usable {key} (an http(s) URL)")
    return value


def discover(iss: str, timeout: float) -> SmartConfiguration:
    """The EHR's SMART configuration (SMART App Launch 2, "Conformance"): its authorization and
    token endpoints; LaunchError when it cannot be read or does not offer PKCE with S256 (SMART
    2 servers SHALL list it in code_challenge_methods_supported)."""
    url = iss.rstrip("/") + "/.well-known/smart-configuration"
    http = requests.Session()
    http.trust_env = False  # no proxy or .netrc credentials from the environment
    try:
        with http.get(url, headers={"Accept": "application/json"}, timeout=(timeout, timeout),
                      allow_redirects=False, stream=True) as resp:
            if resp.status_code != 200:
                raise LaunchError(f"the EHR's smart-configuration answered HTTP {resp.status_code}")
            body = resp.raw.read(MAX_CONFIG_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise LaunchError(f"the EHR's smart-configuration could not be read ({type(exc).__name__})") \
            from None
    finally:
        http.close()
    if len(body) > MAX_CONFIG_BYTES:
        raise LaunchError("the EHR's smart-configuration is larger than 256 KiB")
    try:
        config = json.loads(body)
    except ValueError:
        raise LaunchError("the EHR's smart-configuration is not JSON") from None
    if not isinstance(config, dict):
        raise LaunchError("the EHR's smart-configuration is not a JSON object")
    methods = config.get("code_challenge_methods_supported")
    if not isinstance(methods, list) or "S256" not in methods:
        raise LaunchError("the EHR does not offer PKCE with S256 (code_challenge_methods_supported)")
    return SmartConfiguration(_endpoint(config, "authorization_endpoint"),
                              _endpoint(config, "token_endpoint"))


TOKEN_LEEWAY = 5  # seconds before `expires_at` a token is taken as expired (then refreshed)


def oauth_session(client_id: str, client_secret: str | None, *, timeout: float,
                  redirect_uri: str | None = None, scope: str | None = None,
                  token: dict | None = None, token_endpoint: str | None = None,
                  update_token=None) -> OAuth2Session:
    """An Authlib OAuth2Session: PKCE S256, every request bounded by `timeout`, redirects not
    followed; with `token` and `token_endpoint` it sends the access token on every request and
    refreshes it (calling `update_token`) when it has expired and a refresh token was offered."""
    session = OAuth2Session(client_id, client_secret, scope=scope, redirect_uri=redirect_uri,
                            code_challenge_method="S256", token=token, token_endpoint=token_endpoint,
                            update_token=update_token, leeway=TOKEN_LEEWAY,
                            default_timeout=(timeout, timeout),
                            token_endpoint_auth_method="client_secret_basic" if client_secret
                            else "none")
    session.trust_env = False  # no proxy or .netrc credentials from the environment
    session.max_redirects = 0
    return session


def authorization_url(session: OAuth2Session, config: SmartConfiguration, *, iss: str,
                      launch: str | None) -> tuple[str, str, str]:
    """(URL to send the browser to, state, code_verifier) for an authorization request with
    ``aud`` = the FHIR server (SMART 2 requires it) and, for an EHR launch, ``launch``."""
    verifier = generate_token(64)
    extra = {"aud": iss}
    if launch:
        extra["launch"] = launch
    url, state = session.create_authorization_url(config.authorization_endpoint,
                                                  code_verifier=verifier, **extra)
    return url, state, verifier

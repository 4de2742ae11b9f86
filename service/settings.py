"""Deployment settings, from environment variables (documented in the README and docs/service.md).

Everything is checked once, when the settings are read: JSON values parse, the configuration
defaults resolve against the option list, numbers are in range. :meth:`Settings.from_env` with
``serving=True`` (``fluoro-cds serve`` and the gunicorn app factory) adds the checks that only
matter to a running service: a ``FLUORO_CDS_DB`` that is set must exist, and ``FLUORO_CDS_AUTH=jwt``
needs ``FLUORO_CDS_FHIR_ALLOWLIST`` (a caller's FHIR token must not go to any server it names).
Each failure is a :class:`SettingsError` whose message names the variable, never its value.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_data_dir

from hooks.config import ConfigError, resolve

from .fhir_access import normalize_base, normalize_url


# An HTTP field name (RFC 9110 section 5.1: a token), as FLUORO_CDS_CORS_ALLOW_HEADERS lists them.
HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"


# JWT algorithms a deployment may allow (FLUORO_CDS_JWT_ALGORITHMS) -> the JWK key type they use.
# CDS Hooks 2.0 "Trusting CDS Clients": ES384 and RS384 SHOULD be supported (the default);
# ES256 / RS256 for clients that sign with those. Never "none" nor HMAC (2.0 forbids them).
JWT_ALGORITHMS = {"ES384": "EC", "RS384": "RSA", "ES256": "EC", "RS256": "RSA"}
DEFAULT_JWT_ALGORITHMS = ("ES384", "RS384")


class SettingsError(ValueError):
    """An environment variable has an invalid value (the message names the variable)."""


def _data_dir() -> Path:
    return Path(user_data_dir("fluoro-cds", appauthor=False))


# name -> (default, lowest, highest, integer?) for the numeric settings
NUMBERS: dict[str, tuple[float, float, float, bool]] = {
    "FLUORO_CDS_FHIR_CONNECT_TIMEOUT": (3.0, 0.1, 60.0, False),
    "FLUORO_CDS_FHIR_TIMEOUT": (10.0, 0.1, 300.0, False),
    "FLUORO_CDS_FHIR_MAX_PAGES": (10, 1, 1000, True),
    "FLUORO_CDS_FHIR_MAX_RESOURCES": (1000, 1, 100_000, True),
    "FLUORO_CDS_FHIR_DEADLINE": (5.0, 0.5, 120.0, False),
    "FLUORO_CDS_FHIR_MAX_ANSWER_BYTES": (16 * 1024 * 1024, 65_536, 256 * 1024 * 1024, True),
    "FLUORO_CDS_JWT_LEEWAY": (30, 0, 600, True),
    "FLUORO_CDS_JWT_MAX_LIFETIME": (3600, 1, 86_400, True),
    "FLUORO_CDS_STATE_RETENTION_DAYS": (365, 0, 36_500, True),
    "FLUORO_CDS_CLIENT_HEADER_TIMEOUT": (10.0, 1.0, 300.0, False),
    "FLUORO_CDS_CLIENT_BODY_TIMEOUT": (10.0, 1.0, 300.0, False),
    "FLUORO_CDS_SMART_SESSION_TTL": (3600, 60, 86_400, True),
    "FLUORO_CDS_SMART_TIMEOUT": (10.0, 0.5, 60.0, False),
}


@dataclass(frozen=True)
class Settings:
    auth: str = "off"  # FLUORO_CDS_AUTH: off | jwt
    trusted_issuers: dict[str, str] = field(default_factory=dict)  # FLUORO_CDS_TRUSTED_ISSUERS
    base_url: str | None = None  # FLUORO_CDS_BASE_URL
    fhir_allowlist: tuple[str, ...] = ()  # FLUORO_CDS_FHIR_ALLOWLIST
    db_path: str = ""  # FLUORO_CDS_DB
    state_db_path: str = ""  # FLUORO_CDS_STATE_DB
    defaults: dict = field(default_factory=dict)  # FLUORO_CDS_DEFAULTS (configuration defaults)
    fhir_timeout: float = 10.0  # FLUORO_CDS_FHIR_TIMEOUT seconds (read timeout)
    fhir_connect_timeout: float = 3.0  # FLUORO_CDS_FHIR_CONNECT_TIMEOUT seconds
    fhir_max_pages: int = 10  # FLUORO_CDS_FHIR_MAX_PAGES: Bundle `next` pages followed per search
    fhir_max_resources: int = 1000  # FLUORO_CDS_FHIR_MAX_RESOURCES per search
    fhir_deadline: float = 5.0  # FLUORO_CDS_FHIR_DEADLINE: all FHIR requests of one hook call
    fhir_max_answer_bytes: int = 16 * 1024 * 1024  # FLUORO_CDS_FHIR_MAX_ANSWER_BYTES per answer
    jku_allowlist: tuple[str, ...] = ()  # FLUORO_CDS_JKU_ALLOWLIST: extra jku URLs honoured
    jwt_leeway: int = 30  # FLUORO_CDS_JWT_LEEWAY seconds of clock skew for exp / iat
    jwt_max_lifetime: int = 3600  # FLUORO_CDS_JWT_MAX_LIFETIME: longest exp - iat accepted
    jwt_algorithms: tuple[str, ...] = DEFAULT_JWT_ALGORITHMS  # FLUORO_CDS_JWT_ALGORITHMS
    cors_origins: tuple[str, ...] = ("*",)  # FLUORO_CDS_CORS_ORIGINS: "*" or origins, comma-separated
    cors_allow_headers: tuple[str, ...] = ()  # FLUORO_CDS_CORS_ALLOW_HEADERS: () = what the preflight asks
    state_retention_days: int = 365  # FLUORO_CDS_STATE_RETENTION_DAYS: audit/feedback kept (0: forever)
    # FLUORO_CDS_AUDIT_WRITER: process (the default read from the environment, i.e. for serve,
    # gunicorn and flask run) | thread (the default of Settings() made in code: tests, embedding)
    audit_writer: str = "thread"
    admin_token: str | None = field(default=None, repr=False)  # FLUORO_CDS_ADMIN_TOKEN: /admin/report
    log_format: str = "text"  # FLUORO_CDS_LOG_FORMAT: text (terminal) | json (one object per line)
    client_header_timeout: float = 10.0  # FLUORO_CDS_CLIENT_HEADER_TIMEOUT: whole request head (front)
    client_body_timeout: float = 10.0  # FLUORO_CDS_CLIENT_BODY_TIMEOUT: longest body pause (front)
    # the SMART documentation app (docs/smart-app.md)
    smart_launch_url: str = ""  # FLUORO_CDS_SMART_LAUNCH_URL: "" = this service's /smart/launch
    smart_client_id: str = "fluoro-cds-documentation"  # FLUORO_CDS_SMART_CLIENT_ID
    smart_client_secret: str | None = field(default=None, repr=False)  # FLUORO_CDS_SMART_CLIENT_SECRET
    smart_session_ttl: int = 3600  # FLUORO_CDS_SMART_SESSION_TTL: seconds a launch's session lives
    smart_timeout: float = 10.0  # FLUORO_CDS_SMART_TIMEOUT: each OAuth / FHIR request of the app

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, *, serving: bool = False) -> "Settings":
        """The settings of `env` (default os.environ); SettingsError naming the first bad one."""
        env = dict(os.environ if env is None else env)
        auth = env.get("FLUORO_CDS_AUTH", "off").strip().lower() or "off"
        if auth not in ("off", "jwt"):
            raise SettingsError("FLUORO_CDS_AUTH must be 'off' or 'jwt'")
        issuers = _json_object(env, "FLUORO_CDS_TRUSTED_ISSUERS")
        for issuer, url in issuers.items():
            if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                raise SettingsError("FLUORO_CDS_TRUSTED_ISSUERS must map each issuer to an "
                                    "http(s) JWKS URL (a string)")
        defaults = _json_object(env, "FLUORO_CDS_DEFAULTS")
        try:
            resolve(None, defaults)
        except ConfigError as exc:
            raise SettingsError(f"FLUORO_CDS_DEFAULTS: {exc}") from None
        allow = tuple(u.strip().rstrip("/") for u in env.get("FLUORO_CDS_FHIR_ALLOWLIST", "").split(",")
                      if u.strip())
        if any(normalize_base(u) is None for u in allow):
            raise SettingsError("FLUORO_CDS_FHIR_ALLOWLIST must hold comma-separated http(s) base "
                                "URLs without user info, query or fragment")
        data = _data_dir()
        numbers = {name: _number(env, name) for name in NUMBERS}
        cors = tuple(o.strip().rstrip("/") for o in env.get("FLUORO_CDS_CORS_ORIGINS", "*").split(",")
                     if o.strip()) or ("*",)
        allow_headers = tuple(h.strip() for h in env.get("FLUORO_CDS_CORS_ALLOW_HEADERS", "").split(",")
                              if h.strip())
        if any(not re.fullmatch(HEADER_NAME, h) for h in allow_headers):
            raise SettingsError("FLUORO_CDS_CORS_ALLOW_HEADERS must be comma-separated HTTP header names")
        jku = tuple(u.strip() for u in env.get("FLUORO_CDS_JKU_ALLOWLIST", "").split(",") if u.strip())
        algorithms = tuple(a.strip() for a in env.get("FLUORO_CDS_JWT_ALGORITHMS", "").split(",")
                           if a.strip()) or DEFAULT_JWT_ALGORITHMS
        if any(a not in JWT_ALGORITHMS for a in algorithms):
            raise SettingsError("FLUORO_CDS_JWT_ALGORITHMS must be comma-separated JWT algorithms "
                                f"among {', '.join(JWT_ALGORITHMS)}")
        if auth == "jwt" and not issuers:
            raise SettingsError("FLUORO_CDS_AUTH=jwt needs FLUORO_CDS_TRUSTED_ISSUERS "
                                '(a JSON object: issuer -> JWKS URL)')
        log_format = env.get("FLUORO_CDS_LOG_FORMAT", "text").strip().lower() or "text"
        if log_format not in ("text", "json"):
            raise SettingsError("FLUORO_CDS_LOG_FORMAT must be 'text' or 'json'")
        audit_writer = env.get("FLUORO_CDS_AUDIT_WRITER", "process").strip().lower() or "process"
        if audit_writer not in ("process", "thread"):
            raise SettingsError("FLUORO_CDS_AUDIT_WRITER must be 'process' or 'thread'")
        admin_token = env.get("FLUORO_CDS_ADMIN_TOKEN", "").strip() or None
        if admin_token is not None and len(admin_token) < 16:
            raise SettingsError("FLUORO_CDS_ADMIN_TOKEN must be at least 16 characters")
        launch_url = (env.get("FLUORO_CDS_SMART_LAUNCH_URL") or "").strip()
        if launch_url and normalize_url(launch_url) is None:
            raise SettingsError("FLUORO_CDS_SMART_LAUNCH_URL must be an absolute http(s) URL "
                                "without user info or fragment")
        client_id = (env.get("FLUORO_CDS_SMART_CLIENT_ID") or "").strip() or Settings.smart_client_id
        if not re.fullmatch(r"[\x21-\x7e]{1,200}", client_id):
            raise SettingsError("FLUORO_CDS_SMART_CLIENT_ID must be 1 to 200 visible ASCII characters")
        client_secret = (env.get("FLUORO_CDS_SMART_CLIENT_SECRET") or "").strip() or None
        db_set = (env.get("FLUORO_CDS_DB") or "").strip()
        if serving:
            if db_set and not Path(db_set).is_file():
                raise SettingsError("FLUORO_CDS_DB names a file that does not exist (import a "
                                    "release with `fluoro-cds ncci import`, or unset it to use the "
                                    "default store or the embedded starter data)")
            if auth == "jwt" and not allow:
                raise SettingsError("FLUORO_CDS_AUTH=jwt needs FLUORO_CDS_FHIR_ALLOWLIST: the "
                                    "caller's fhirAuthorization token must only go to known servers")
        return cls(
            auth=auth,
            trusted_issuers={str(k): v for k, v in issuers.items()},
            base_url=(env.get("FLUORO_CDS_BASE_URL") or None),
            fhir_allowlist=allow,
            db_path=db_set or str(data / "ncci.sqlite"),
            state_db_path=env.get("FLUORO_CDS_STATE_DB") or str(data / "state.sqlite"),
            defaults=defaults,
            fhir_timeout=numbers["FLUORO_CDS_FHIR_TIMEOUT"],
            fhir_connect_timeout=numbers["FLUORO_CDS_FHIR_CONNECT_TIMEOUT"],
            fhir_max_pages=int(numbers["FLUORO_CDS_FHIR_MAX_PAGES"]),
            fhir_max_resources=int(numbers["FLUORO_CDS_FHIR_MAX_RESOURCES"]),
            fhir_deadline=numbers["FLUORO_CDS_FHIR_DEADLINE"],
            fhir_max_answer_bytes=int(numbers["FLUORO_CDS_FHIR_MAX_ANSWER_BYTES"]),
            jku_allowlist=jku,
            jwt_leeway=int(numbers["FLUORO_CDS_JWT_LEEWAY"]),
            jwt_max_lifetime=int(numbers["FLUORO_CDS_JWT_MAX_LIFETIME"]),
            jwt_algorithms=tuple(dict.fromkeys(algorithms)),
            cors_origins=cors,
            cors_allow_headers=allow_headers,
            state_retention_days=int(numbers["FLUORO_CDS_STATE_RETENTION_DAYS"]),
            audit_writer=audit_writer,
            admin_token=admin_token,
            log_format=log_format,
            client_header_timeout=numbers["FLUORO_CDS_CLIENT_HEADER_TIMEOUT"],
            client_body_timeout=numbers["FLUORO_CDS_CLIENT_BODY_TIMEOUT"],
            smart_launch_url=launch_url,
            smart_client_id=client_id,
            smart_client_secret=client_secret,
            smart_session_ttl=int(numbers["FLUORO_CDS_SMART_SESSION_TTL"]),
            smart_timeout=numbers["FLUORO_CDS_SMART_TIMEOUT"],
        )


def _json_object(env: dict[str, str], name: str) -> dict:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object")
    return value


def _number(env: dict[str, str], name: str) -> float:
    """The value of numeric setting `name`, range-checked against NUMBERS."""
    default, low, high, integer = NUMBERS[name]
    raw = env.get(name, "").strip()
    if not raw:
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {kind} from {low:g} to {high:g}") from None
    if not (low <= value <= high):  # also refuses nan
        raise SettingsError(f"{name} must be {kind} from {low:g} to {high:g}")
    return value

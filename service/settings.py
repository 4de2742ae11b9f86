"""Deployment settings, from environment variables (documented in the README)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_data_dir


class SettingsError(ValueError):
    """An environment variable has an invalid value."""


def _data_dir() -> Path:
    return Path(user_data_dir("fluoro-cds", appauthor=False))


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
    jku_allowlist: tuple[str, ...] = ()  # FLUORO_CDS_JKU_ALLOWLIST: extra jku URLs honoured
    jwt_leeway: int = 30  # FLUORO_CDS_JWT_LEEWAY seconds of clock skew for exp / iat
    jwt_max_lifetime: int = 3600  # FLUORO_CDS_JWT_MAX_LIFETIME: longest exp - iat accepted
    cors_origins: tuple[str, ...] = ("*",)  # FLUORO_CDS_CORS_ORIGINS: "*" or origins, comma-separated
    state_retention_days: int = 365  # FLUORO_CDS_STATE_RETENTION_DAYS: audit/feedback kept (0: forever)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        auth = env.get("FLUORO_CDS_AUTH", "off").strip().lower() or "off"
        if auth not in ("off", "jwt"):
            raise SettingsError("FLUORO_CDS_AUTH must be 'off' or 'jwt'")
        issuers = _json_object(env, "FLUORO_CDS_TRUSTED_ISSUERS")
        defaults = _json_object(env, "FLUORO_CDS_DEFAULTS")
        allow = tuple(u.strip().rstrip("/") for u in env.get("FLUORO_CDS_FHIR_ALLOWLIST", "").split(",")
                      if u.strip())
        data = _data_dir()
        try:
            timeout = float(env.get("FLUORO_CDS_FHIR_TIMEOUT", "10"))
        except ValueError as exc:
            raise SettingsError("FLUORO_CDS_FHIR_TIMEOUT must be a number of seconds") from exc
        cors = tuple(o.strip().rstrip("/") for o in env.get("FLUORO_CDS_CORS_ORIGINS", "*").split(",")
                     if o.strip()) or ("*",)
        jku = tuple(u.strip() for u in env.get("FLUORO_CDS_JKU_ALLOWLIST", "").split(",") if u.strip())
        if auth == "jwt" and not issuers:
            raise SettingsError("FLUORO_CDS_AUTH=jwt needs FLUORO_CDS_TRUSTED_ISSUERS "
                                '(a JSON object: issuer -> JWKS URL)')
        return cls(
            auth=auth,
            trusted_issuers={str(k): str(v) for k, v in issuers.items()},
            base_url=(env.get("FLUORO_CDS_BASE_URL") or None),
            fhir_allowlist=allow,
            db_path=env.get("FLUORO_CDS_DB") or str(data / "ncci.sqlite"),
            state_db_path=env.get("FLUORO_CDS_STATE_DB") or str(data / "state.sqlite"),
            defaults=defaults,
            fhir_timeout=timeout,
            fhir_connect_timeout=_number(env, "FLUORO_CDS_FHIR_CONNECT_TIMEOUT", 3.0),
            fhir_max_pages=int(_number(env, "FLUORO_CDS_FHIR_MAX_PAGES", 10)),
            fhir_max_resources=int(_number(env, "FLUORO_CDS_FHIR_MAX_RESOURCES", 1000)),
            jku_allowlist=jku,
            jwt_leeway=int(_number(env, "FLUORO_CDS_JWT_LEEWAY", 30)),
            jwt_max_lifetime=int(_number(env, "FLUORO_CDS_JWT_MAX_LIFETIME", 3600)),
            cors_origins=cors,
            state_retention_days=int(_number(env, "FLUORO_CDS_STATE_RETENTION_DAYS", 365)),
        )


def _json_object(env: dict[str, str], name: str) -> dict:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{name} is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise SettingsError(f"{name} must be a JSON object")
    return value


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be a number") from exc
    if value < 0:
        raise SettingsError(f"{name} must not be negative")
    return value

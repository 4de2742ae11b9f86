"""Configuration options of the services (docs/contract.md#configuration).

Advertised in each discovery entry's ``extension`` in the style of Da Vinci CRD's configuration
options; a request sets them in ``extension["org.fluoro-cds.configuration"]`` (the project's
extension names are reverse-domain names of fluoro-cds.org, as CDS Hooks advises; the older
``fluoro-cds.configuration`` is still accepted) or ``extension["davinci-crd.configuration"]``;
deployments set defaults with
``FLUORO_CDS_DEFAULTS`` (a JSON object). :func:`resolve` merges and validates them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .findings import FINDING_CODES

# CDS Hooks extension names: "a strategy for naming that ensures global uniqueness, such as
# reverse-domain-name notation"; the project's domain is that of its URIs (https://fluoro-cds.org/).
EXTENSION_PREFIX = "org.fluoro-cds."
CONFIG_KEY = EXTENSION_PREFIX + "configuration"
LEGACY_CONFIG_KEY = "fluoro-cds.configuration"  # the name before issue 11 section 6, still accepted
CRD_CONFIG_KEY = "davinci-crd.configuration"
CONFIG_KEYS = (LEGACY_CONFIG_KEY, CONFIG_KEY, CRD_CONFIG_KEY)  # applied in this order
DISTINCT_MODIFIERS = ("59", "XS", "XU", "XE", "XP")


@dataclass(frozen=True)
class Option:
    code: str
    type: str  # "boolean" | "integer" | "string" (with `values`)
    name: str
    description: str
    default: Any
    values: tuple[str, ...] = ()

    def discovery(self) -> dict:
        entry = {"code": self.code, "type": self.type, "name": self.name,
                 "description": self.description, "default": self.default}
        if self.values:
            entry["enum"] = list(self.values)
        return entry


OPTIONS: tuple[Option, ...] = (
    Option("global-billing", "boolean", "Global billing",
           "The practice bills 76000 globally (professional and technical component) even in "
           "facility settings, so modifier 26 is not suggested.", False),
    Option("distinct-modifier", "string", "Distinct-service modifier",
           "The NCCI-associated modifier offered when a PTP edit allows a bypass.", "XS",
           DISTINCT_MODIFIERS),
    Option("max-cards", "integer", "Maximum cards",
           "Return at most this many cards, most important first (0 = no limit).", 0),
    Option("program", "string", "NCCI program",
           "The NCCI program (PTP and MUE files) for claims whose focal Claim.insurance Coverage does "
           "not name one (docs/rules.md#program): medicare or medicaid.", "medicare", ("medicare", "medicaid")),
    Option("documentation-url", "string", "Documentation app URL",
           "Absolute http(s) URL of the documentation app; when set, documentation-missing cards "
           "link to it (empty = no link).", ""),
) + tuple(
    Option(code, "boolean", f"Check {code}", f"Report '{code}' findings.", True)
    for code in FINDING_CODES
)
BY_CODE = {o.code: o for o in OPTIONS}
_DEFAULTS = {o.code: o.default for o in OPTIONS}  # copied per call, never handed out


class ConfigError(ValueError):
    """A configuration value is unknown or of the wrong type (answered 400)."""


def _coerce(option: Option, value: Any) -> Any:
    if option.type == "boolean":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"configuration option '{option.code}' must be a boolean")
    if option.type == "integer":
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise ConfigError(f"configuration option '{option.code}' must be a non-negative integer")
    if option.code == "documentation-url":
        if not isinstance(value, str) or (value and not value.startswith(("https://", "http://"))):
            raise ConfigError("configuration option 'documentation-url' must be an http(s) URL or ''")
        return value
    if not isinstance(value, str) or (option.values and value not in option.values):
        allowed = ", ".join(option.values)
        raise ConfigError(f"configuration option '{option.code}' must be one of: {allowed}")
    return value


def resolve(request_extension: dict | None, deployment: dict | None = None) -> dict[str, Any]:
    """Defaults, then deployment defaults, then the request's configuration object.

    In ``org.fluoro-cds.configuration`` (and its older name) and the deployment defaults,
    unknown option codes are
    rejected, so a typo does not silently do nothing. In ``davinci-crd.configuration`` they are
    ignored: CRD asks services to handle options they do not know gracefully, and a CRD client
    sends its own codes (``coverage``, ``prior-auth``, ...); the codes that mean something here
    (``max-cards`` and this service's options) apply. Other extension keys are ignored.
    """
    config = dict(_DEFAULTS)
    layers: list[tuple[dict, bool]] = [(deployment or {}, True)]
    ext = request_extension or {}
    if not isinstance(ext, dict):
        raise ConfigError("extension must be a JSON object")
    for key in CONFIG_KEYS:
        if key in ext:
            if not isinstance(ext[key], dict):
                raise ConfigError(f"extension['{key}'] must be a JSON object")
            layers.append((ext[key], key != CRD_CONFIG_KEY))
    for layer, strict in layers:
        for code, value in layer.items():
            option = BY_CODE.get(code)
            if option is None:
                if strict:
                    raise ConfigError(f"unknown configuration option '{code}'")
                continue
            config[code] = _coerce(option, value)
    return config


CRD_OPTIONS_KEY = "davinci-crd.configuration-options"
CRD_TYPES = ("boolean", "integer")  # CRD's configuration option types (ValueSet configTypes)


def discovery_extension(deployment: dict | None = None) -> dict:
    """The ``extension`` of a discovery entry advertising the options with the deployment's
    effective defaults: every option under ``org.fluoro-cds.configuration-options`` (and, under
    their older names, ``fluoro-cds.configuration-options`` and ``fluoro-cds.configuration``),
    and those of a CRD type (boolean, integer) under ``davinci-crd.configuration-options``."""
    effective = resolve(None, deployment)
    entries = []
    for o in OPTIONS:
        entry = o.discovery()
        entry["default"] = effective[o.code]
        entries.append(entry)
    crd = [e for e in entries if e["type"] in CRD_TYPES]
    return {CONFIG_KEY + "-options": entries, LEGACY_CONFIG_KEY + "-options": entries,
            LEGACY_CONFIG_KEY: entries, CRD_OPTIONS_KEY: crd}

"""Deployment settings are checked when read: each bad value names its variable, never the value."""
from __future__ import annotations

import pytest

from service.settings import NUMBERS, Settings, SettingsError


def test_defaults_of_an_empty_environment():
    s = Settings.from_env({})
    assert (s.auth, s.fhir_timeout, s.fhir_max_pages, s.defaults) == ("off", 10.0, 10, {})
    assert s.db_path.endswith("ncci.sqlite")


@pytest.mark.parametrize("name", sorted(NUMBERS))
@pytest.mark.parametrize("raw", ["-1", "abc", "nan", "1e9"])
def test_numbers_out_of_range_are_refused(name, raw):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: raw})


def test_numbers_in_range_are_taken():
    s = Settings.from_env({"FLUORO_CDS_FHIR_TIMEOUT": "2.5", "FLUORO_CDS_FHIR_MAX_PAGES": "3"})
    assert (s.fhir_timeout, s.fhir_max_pages) == (2.5, 3)


@pytest.mark.parametrize("raw", ['{"max-cardz": 1}', '{"max-cards": -1}', '{"global-billing": "yes"}',
                                 "[1]", "{not json"])
def test_configuration_defaults_are_resolved_at_start(raw):
    with pytest.raises(SettingsError, match="FLUORO_CDS_DEFAULTS") as info:
        Settings.from_env({"FLUORO_CDS_DEFAULTS": raw})
    assert "max-cardz" in str(info.value) or raw not in str(info.value)


def test_set_but_missing_db_is_an_error_only_when_serving(tmp_path):
    env = {"FLUORO_CDS_DB": str(tmp_path / "typo.sqlite")}
    assert Settings.from_env(env).db_path == env["FLUORO_CDS_DB"]  # import / batch may create it
    with pytest.raises(SettingsError, match="FLUORO_CDS_DB"):
        Settings.from_env(env, serving=True)
    (tmp_path / "typo.sqlite").write_bytes(b"")
    assert Settings.from_env(env, serving=True).db_path == env["FLUORO_CDS_DB"]


def test_jwt_needs_issuers_and_when_serving_a_fhir_allowlist():
    with pytest.raises(SettingsError, match="FLUORO_CDS_TRUSTED_ISSUERS"):
        Settings.from_env({"FLUORO_CDS_AUTH": "jwt"})
    env = {"FLUORO_CDS_AUTH": "jwt", "FLUORO_CDS_TRUSTED_ISSUERS": '{"https://ehr": "https://ehr/jwks"}'}
    assert Settings.from_env(env).auth == "jwt"
    with pytest.raises(SettingsError, match="FLUORO_CDS_FHIR_ALLOWLIST"):
        Settings.from_env(env, serving=True)
    env["FLUORO_CDS_FHIR_ALLOWLIST"] = "https://fhir.example.org/r4"
    assert Settings.from_env(env, serving=True).fhir_allowlist == ("https://fhir.example.org/r4",)


@pytest.mark.parametrize("raw", ["ftp://x/fhir", "https://user:pw@x/fhir", "https://x/fhir?a=1", "x"])
def test_fhir_allowlist_entries_must_be_base_urls(raw):
    with pytest.raises(SettingsError, match="FLUORO_CDS_FHIR_ALLOWLIST"):
        Settings.from_env({"FLUORO_CDS_FHIR_ALLOWLIST": raw})


def test_trusted_issuers_map_to_urls():
    with pytest.raises(SettingsError, match="FLUORO_CDS_TRUSTED_ISSUERS"):
        Settings.from_env({"FLUORO_CDS_TRUSTED_ISSUERS": '{"https://ehr": 5}'})


@pytest.mark.parametrize("name,raw", [("FLUORO_CDS_SMART_LAUNCH_URL", "/smart/launch"),
                                      ("FLUORO_CDS_SMART_LAUNCH_URL", "javascript:alert(1)"),
                                      ("FLUORO_CDS_SMART_LAUNCH_URL", "https://u:p@x/launch"),
                                      ("FLUORO_CDS_SMART_CLIENT_ID", "two words")])
def test_smart_app_settings_are_checked(name, raw):
    with pytest.raises(SettingsError, match=name) as err:
        Settings.from_env({name: raw})
    assert raw not in str(err.value)


def test_smart_app_settings_are_taken():
    s = Settings.from_env({"FLUORO_CDS_SMART_LAUNCH_URL": "https://apps.example.org/launch",
                           "FLUORO_CDS_SMART_CLIENT_ID": "fluoro-doc", "FLUORO_CDS_SMART_CLIENT_SECRET": "s3cret",
                           "FLUORO_CDS_SMART_SESSION_TTL": "600"})
    assert (s.smart_launch_url, s.smart_client_id, s.smart_session_ttl) == (
        "https://apps.example.org/launch", "fluoro-doc", 600)
    assert "s3cret" not in repr(s)
    assert Settings.from_env({}).smart_client_id == "fluoro-cds-documentation"

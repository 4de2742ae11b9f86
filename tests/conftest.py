"""Shared fixtures. Tests needing ../shared skip with a clear reason when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
NCCI_DIR = SHARED / "ncci"


def require_shared_ncci() -> Path:
    if not (NCCI_DIR / "ptp_practitioner_2024q3.tsv.gz").exists():
        pytest.skip(f"needs the CMS July 2024 tables in {NCCI_DIR} (absent on this machine)")
    return NCCI_DIR


@pytest.fixture
def ncci_dir() -> Path:
    return require_shared_ncci()


@pytest.fixture
def app(tmp_path, monkeypatch):
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(db_path=str(tmp_path / "ncci.sqlite"),
                        state_db_path=str(tmp_path / "state.sqlite"))
    return create_app(settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on 127.0.0.1 for the session (tests/pg_server.py)."""
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed")
    from tests.pg_server import PostgresServer, pg_bindir

    if pg_bindir() is None:
        pytest.skip("PostgreSQL server binaries not found (tools/test-deps.sh installs the "
                    "Debian package postgresql)")
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server) -> str:
    """The URL of a new empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()

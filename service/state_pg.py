"""The PostgreSQL backend of the state store (FLUORO_CDS_STATE_DB=postgresql://...), psycopg 3.

Several replicas share one database, so a JWT replayed to another replica is refused and the
feedback report sees every replica's cards. One connection per thread (a new one after fork, or
after the old one broke), autocommit outside explicit transactions, bounded waits: connect timeout
5 s, statement timeout 10 s. Migrations take a transaction-scoped advisory lock, so replicas
starting together apply each one once. Errors are raised as StateError naming the error class and
SQLSTATE only: a driver message can quote the connection string.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import psycopg

from .state import StateError

CONNECT_TIMEOUT = 5  # seconds
STATEMENT_TIMEOUT_MS = 10000
MIGRATION_LOCK = 0x466C756F  # pg_advisory_xact_lock key of fluoro-cds migrations ("Fluo")


def _error(exc: psycopg.Error) -> StateError:
    state = getattr(exc, "sqlstate", None)
    return StateError(f"{type(exc).__name__}" + (f" (SQLSTATE {state})" if state else ""))


class PostgresDatabase:
    """A PostgreSQL database reached through a libpq URL."""

    dialect = "postgresql"

    def __init__(self, url: str):
        self._url = url
        self._local = threading.local()

    def _conn(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or self._local.pid != os.getpid():
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT,
                                   application_name="fluoro-cds",
                                   options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", 0) == os.getpid():
            try:
                conn.close()
            except psycopg.Error:
                pass
        self._local.conn = None

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor]:
        try:
            conn = self._conn()
            with conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._drop()  # reconnect on next use (server restarted, network cut)
            raise _error(exc) from None

    def query(self, sql: str, args: Sequence = ()) -> tuple[list[str], list[tuple]]:
        try:
            with self._conn().cursor() as cur:
                cur.execute(sql, tuple(args))
                names = [d.name for d in cur.description or ()]
                return names, cur.fetchall() if cur.description else []
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                self._drop()
            raise _error(exc) from None

    def migration_lock(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    def close(self) -> None:
        self._drop()

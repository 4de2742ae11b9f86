"""The service's own state in one SQLite file (FLUORO_CDS_STATE_DB): feedback, audit, JWT replay cache.

WAL mode so that readers do not block the writer and several gunicorn workers can share the
file; one connection per thread (sqlite3 connections must not cross threads); a busy timeout so
concurrent writers wait instead of failing. Nothing here stores patient data: feedback holds
card/suggestion ids, outcome codes and the user's comment; audit holds ids, codes and timings.
"""
from __future__ import annotations

import atexit
import collections
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .jsonio import dumps, loads

log = logging.getLogger("fluoro_cds.state")
AUDIT_BATCH = 500  # rows written per transaction by the audit writer
AUDIT_INTERVAL = 0.1  # seconds between the audit writer's passes

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    service_id TEXT NOT NULL,
    card_uuid TEXT NOT NULL,
    outcome TEXT NOT NULL,
    accepted_suggestions TEXT NOT NULL,      -- JSON array of suggestion uuids
    override_reason_system TEXT,
    override_reason_code TEXT,
    user_comment TEXT,
    outcome_timestamp TEXT NOT NULL,
    received_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback(card_uuid);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    service_id TEXT NOT NULL,
    hook_instance TEXT,
    status INTEGER NOT NULL,
    card_uuids TEXT NOT NULL,                -- JSON array
    topics TEXT NOT NULL,                    -- JSON array of source.topic.code
    data_release TEXT,
    latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE TABLE IF NOT EXISTS jwt_seen (
    issuer TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX IF NOT EXISTS jwt_seen_expires ON jwt_seen(expires);
"""


def utc_now(t: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2024-07-01T12:00:00.123Z (now, or epoch seconds `t`)."""
    if t is None:
        t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@dataclass(frozen=True)
class AuditRecord:
    """One answered request, as the audit table stores it (built per request: its ``__init__``
    sets the fields in one ``__dict__`` update, as hooks/model.py's classes do)."""

    service_id: str
    hook_instance: str | None
    status: int
    card_uuids: tuple[str, ...]
    topics: tuple[str, ...]
    data_release: str | None
    latency_ms: float

    def __init__(self, service_id: str, hook_instance: str | None, status: int,
                 card_uuids: tuple[str, ...], topics: tuple[str, ...], data_release: str | None,
                 latency_ms: float) -> None:
        self.__dict__.update(service_id=service_id, hook_instance=hook_instance, status=status,
                             card_uuids=card_uuids, topics=topics, data_release=data_release,
                             latency_ms=latency_ms)


def _audit_row(at: float, rec: AuditRecord) -> tuple:
    return (utc_now(at), rec.service_id, rec.hook_instance, rec.status,
            dumps(list(rec.card_uuids)).decode(), dumps(list(rec.topics)).decode(),
            rec.data_release, round(rec.latency_ms, 3))


class StateStore:
    """Feedback, audit and JWT-replay tables in one SQLite file, safe across threads and processes."""

    def __init__(self, path: str):
        self.path = path
        if path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._audit_pending: collections.deque = collections.deque()
        self._audit_wake = threading.Event()
        self._audit_writer: threading.Thread | None = None
        self._audit_pid = 0
        self._audit_lock = threading.Lock()
        with self._conn() as conn:
            conn.executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (a new one after fork: gunicorn workers)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    # -- feedback ---------------------------------------------------------------------------
    def add_feedback(self, service_id: str, items: Iterable[dict]) -> int:
        """Store CDS Hooks feedback items (already schema-valid). Returns how many were stored."""
        received = utc_now()
        rows = []
        for item in items:
            reason = (item.get("overrideReason") or {})
            coding = reason.get("reason") or {}
            rows.append((service_id, item["card"], item["outcome"],
                         dumps([s["id"] for s in item.get("acceptedSuggestions", [])]).decode(),
                         coding.get("system"), coding.get("code"), reason.get("userComment"),
                         item["outcomeTimestamp"], received))
        conn = self._conn()
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO feedback (service_id, card_uuid, outcome, accepted_suggestions, "
                "override_reason_system, override_reason_code, user_comment, outcome_timestamp, "
                "received_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
        return len(rows)

    def feedback(self, service_id: str | None = None) -> list[dict[str, Any]]:
        """Stored feedback, oldest first (optionally for one service)."""
        sql = "SELECT * FROM feedback"
        args: tuple = ()
        if service_id:
            sql += " WHERE service_id = ?"
            args = (service_id,)
        return self._rows(sql + " ORDER BY id", args, json_cols=("accepted_suggestions",))

    # -- audit ------------------------------------------------------------------------------
    def record_audit(self, rec: AuditRecord) -> None:
        """Queue an audit row; a writer thread of this process stores the queued rows every
        AUDIT_INTERVAL seconds in one transaction, off the request path. `flush()` waits until
        queued rows are stored.

        The request thread only appends to a deque (atomic under the GIL, no lock, no wake-up):
        waking the writer for every request made each request hand the GIL over to it and wrote
        one SQLite transaction per request (py-spy: ~15% of a worker's GIL-holding samples).
        The timestamp is taken here and formatted by the writer.
        """
        if self._audit_pid != os.getpid():  # first use in this process (gunicorn forks workers)
            self._start_audit_writer()
        self._audit_pending.append((time.time(), rec))

    def _start_audit_writer(self) -> None:
        with self._audit_lock:
            if self._audit_pid != os.getpid():
                self._audit_pending = collections.deque()
                self._audit_wake = threading.Event()
                self._audit_writer = threading.Thread(target=self._write_audit, daemon=True,
                                                      name="fluoro-cds-audit")
                self._audit_writer.start()
                self._audit_pid = os.getpid()
                atexit.register(self.flush)

    def _write_audit(self) -> None:
        pending, wake = self._audit_pending, self._audit_wake
        while True:
            wake.wait(AUDIT_INTERVAL)
            wake.clear()
            while pending:
                items = []
                while pending and len(items) < AUDIT_BATCH:
                    items.append(pending.popleft())
                rows = [_audit_row(at, rec) for at, rec in (i for i in items if isinstance(i, tuple))]
                if rows:
                    try:
                        conn = self._conn()
                        with conn:
                            conn.execute("BEGIN IMMEDIATE")
                            conn.executemany(
                                "INSERT INTO audit (at, service_id, hook_instance, status, "
                                "card_uuids, topics, data_release, latency_ms) "
                                "VALUES (?,?,?,?,?,?,?,?)", rows)
                    except sqlite3.Error as exc:
                        log.error("%d audit records not written: %s", len(rows), exc)
                for item in items:
                    if isinstance(item, threading.Event):
                        item.set()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every audit row queued so far is written (True) or `timeout` passes."""
        if self._audit_pid != os.getpid():
            return True
        done = threading.Event()
        self._audit_pending.append(done)
        self._audit_wake.set()
        return done.wait(timeout)

    def audit(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The latest audit records, oldest first (after writing the queued ones)."""
        self.flush()
        rows = self._rows("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,),
                          json_cols=("card_uuids", "topics"))
        return rows[::-1]

    # -- JWT replay cache -------------------------------------------------------------------
    def claim_jti(self, issuer: str, jti: str, expires: float) -> bool:
        """Record (issuer, jti) until `expires`; False when it was already seen (a replay)."""
        conn = self._conn()
        try:
            conn.execute("INSERT INTO jwt_seen (issuer, jti, expires) VALUES (?,?,?)",
                         (issuer, jti, expires))
            return True
        except sqlite3.IntegrityError:
            row = conn.execute("SELECT expires FROM jwt_seen WHERE issuer=? AND jti=?",
                               (issuer, jti)).fetchone()
            if row and row[0] < time.time():  # an expired entry not purged yet: reuse the slot
                conn.execute("UPDATE jwt_seen SET expires=? WHERE issuer=? AND jti=?",
                             (expires, issuer, jti))
                return True
            return False

    def purge_jti(self, now: float | None = None) -> int:
        cur = self._conn().execute("DELETE FROM jwt_seen WHERE expires < ?",
                                   (now if now is not None else time.time(),))
        return cur.rowcount

    # -- health -----------------------------------------------------------------------------
    def check(self) -> None:
        """Raise sqlite3.Error unless the database can be read and written."""
        conn = self._conn()
        conn.execute("SELECT count(*) FROM audit WHERE id < 0").fetchone()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")

    def _rows(self, sql: str, args: tuple, json_cols: tuple[str, ...] = ()) -> list[dict]:
        cur = self._conn().execute(sql, args)
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            rec = dict(zip(names, row))
            for col in json_cols:
                rec[col] = loads(rec[col])
            out.append(rec)
        return out

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

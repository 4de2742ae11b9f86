"""The state store on both backends: a SQLite file and a real PostgreSQL server (tests/pg_server.py).

Same behaviour on both: feedback round trip, audit and cards shown, the atomic JWT replay check,
retention (prune), schema versioning; PostgreSQL is shared by several stores (replicas)."""
from __future__ import annotations

import json
import sqlite3
import threading
import time

import pytest

from service.state import SCHEMA_VERSION, AuditRecord, StateError, StateStore


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    return request.getfixturevalue("pg_url")


def _feedback(card: str, outcome: str = "overridden", reason: str | None = "distinct") -> dict:
    item = {"card": card, "outcome": outcome, "outcomeTimestamp": "2024-07-15T10:00:00Z"}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "s-" + card}]
    elif reason:
        item["overrideReason"] = {"reason": {"system": "https://fluoro-cds.org/CodeSystem/override-reason",
                                             "code": reason}, "userComment": "separate session"}
    return item


def test_feedback_round_trip(location):
    store = StateStore(location)
    assert store.add_feedback("svc", [_feedback("c1"), _feedback("c2", "accepted")]) == 2
    again = StateStore(location)  # another store (a restart, or another replica)
    rows = again.feedback("svc")
    assert [(r["card_uuid"], r["outcome"]) for r in rows] == [("c1", "overridden"), ("c2", "accepted")]
    assert rows[0]["override_reason_code"] == "distinct" and rows[0]["user_comment"] == "separate session"
    assert rows[1]["accepted_suggestions"] == ["s-c2"]
    assert again.feedback("other") == []


def test_audit_and_cards_shown(location):
    store = StateStore(location)
    store.record_audit(AuditRecord("svc", "hi-1", 200, ("c1", "c2"), ("ptp-bundled", "modifier-26"),
                                   "2024Q3", 1.25, citations=(("NCCI row A", "policy B"), ())))
    store.record_audit(AuditRecord("svc", "hi-2", 400, (), (), None, 0.5))
    rows = store.audit()
    assert [(r["hook_instance"], r["status"], r["card_uuids"], r["topics"]) for r in rows] == [
        ("hi-1", 200, ["c1", "c2"], ["ptp-bundled", "modifier-26"]), ("hi-2", 400, [], [])]
    shown = [(r["card_uuid"], r["topic"], r["citation"]) for r in store.cards_shown()]
    assert shown == [("c1", "ptp-bundled", "NCCI row A"), ("c1", "ptp-bundled", "policy B"),
                     ("c2", "modifier-26", "")]


def test_jwt_replay_is_refused_and_an_expired_entry_is_reused(location):
    store = StateStore(location)
    now = time.time()
    assert store.claim_jti("iss", "j1", now + 60) is True
    assert store.claim_jti("iss", "j1", now + 60) is False
    assert StateStore(location).claim_jti("iss", "j1", now + 60) is False  # another replica
    assert store.claim_jti("other-iss", "j1", now + 60) is True
    assert store.claim_jti("iss", "old", now - 1) is True
    assert store.claim_jti("iss", "old", now + 60) is True  # expired, not purged yet: reused
    assert store.purge_jti(now + 120) == 3


def test_concurrent_claims_of_one_jti_let_exactly_one_through(location):
    stores = [StateStore(location) for _ in range(4)]
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(store):
        barrier.wait(5)
        results.append(store.claim_jti("iss", "same", time.time() + 60))

    threads = [threading.Thread(target=claim, args=(stores[i % 4],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == [False] * 7 + [True]


def test_prune_deletes_rows_older_than_the_cutoff(location):
    store = StateStore(location)
    store.add_feedback("svc", [_feedback("c1")])
    store.record_audit(AuditRecord("svc", "hi", 200, ("c1",), ("ptp-bundled",), None, 1.0))
    store.claim_jti("iss", "gone", time.time() - 5)
    store.claim_jti("iss", "live", time.time() + 600)
    store.flush()
    assert store.prune("2000-01-01") == {"audit": 0, "card_shown": 0, "feedback": 0, "jwt_seen": 1,
                                        "smart_session": 0}
    assert store.prune("9999-01-01") == {"audit": 1, "card_shown": 1, "feedback": 1, "jwt_seen": 0,
                                        "smart_session": 0}
    assert store.feedback() == [] and store.audit() == [] and store.cards_shown() == []
    assert store.claim_jti("iss", "live", time.time() + 600) is False


def test_schema_is_versioned_and_migrations_run_once(location):
    first = StateStore(location)
    assert first.schema_version() == SCHEMA_VERSION
    first.add_feedback("svc", [_feedback("c1")])
    second = StateStore(location)  # a second start applies nothing and keeps the rows
    assert second.migrate() == SCHEMA_VERSION
    _, rows = second.query("SELECT count(*) FROM schema_version")
    assert rows[0][0] == SCHEMA_VERSION
    assert len(second.feedback()) == 1


def test_a_sqlite_file_from_before_versioning_is_migrated_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:  # the version-1 tables as the earlier service made them
        conn.executescript("""
            CREATE TABLE feedback (id INTEGER PRIMARY KEY, service_id TEXT NOT NULL,
              card_uuid TEXT NOT NULL, outcome TEXT NOT NULL, accepted_suggestions TEXT NOT NULL,
              override_reason_system TEXT, override_reason_code TEXT, user_comment TEXT,
              outcome_timestamp TEXT NOT NULL, received_at TEXT NOT NULL);
            CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, service_id TEXT NOT NULL,
              hook_instance TEXT, status INTEGER NOT NULL, card_uuids TEXT NOT NULL,
              topics TEXT NOT NULL, data_release TEXT, latency_ms REAL NOT NULL);
            CREATE TABLE jwt_seen (issuer TEXT NOT NULL, jti TEXT NOT NULL, expires REAL NOT NULL,
              PRIMARY KEY (issuer, jti));
            INSERT INTO feedback VALUES (1, 'svc', 'c0', 'accepted', '[]', NULL, NULL, NULL,
              '2024-07-01T00:00:00Z', '2024-07-01T00:00:01.000Z');""")
    store = StateStore(str(path))
    assert store.schema_version() == SCHEMA_VERSION
    assert [r["card_uuid"] for r in store.feedback()] == ["c0"]
    assert store.cards_shown() == []


def test_postgres_errors_are_state_errors_without_the_url(postgres_server):
    url = postgres_server.new_database().replace("@127.0.0.1", ":s3cret-pw@127.0.0.1")
    store = StateStore(url)  # trust auth: the password is not needed, but must never leak
    store.check()
    unreachable = url.rsplit("/", 1)[0].replace(str(postgres_server.port), "1") + "/x"
    with pytest.raises(StateError) as info:
        StateStore(unreachable)
    assert "s3cret" not in str(info.value) and "127.0.0.1" not in str(info.value)
    assert "OperationalError" in str(info.value)


def test_state_prune_command_keeps_rows_within_the_retention(location, monkeypatch, capsys):
    from service.cli import main

    store = StateStore(location)
    store.add_feedback("svc", [_feedback("new")])
    with store.db.transaction() as cur:  # one row received 40 days ago
        store._execute(cur, "INSERT INTO feedback (service_id, card_uuid, outcome, "
                       "accepted_suggestions, outcome_timestamp, received_at) VALUES (?,?,?,?,?,?)",
                       ("svc", "old", "accepted", "[]", "2024-01-01T00:00:00Z",
                        time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 40 * 86400))))
    monkeypatch.setenv("FLUORO_CDS_STATE_DB", location)
    monkeypatch.setenv("FLUORO_CDS_STATE_RETENTION_DAYS", "60")
    assert main(["state", "prune"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["retention_days"] == 60 and out["deleted"]["feedback"] == 0
    assert main(["state", "prune", "--days", "30"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["feedback"] == 1
    assert [r["card_uuid"] for r in StateStore(location).feedback()] == ["new"]
    assert main(["state", "prune", "--days", "-1"]) == 2
    assert "--days" in capsys.readouterr().err


def test_state_prune_command_reports_an_unusable_database(tmp_path, monkeypatch, capsys):
    from service.cli import main

    (tmp_path / "dir.sqlite").mkdir()
    monkeypatch.setenv("FLUORO_CDS_STATE_DB", str(tmp_path / "dir.sqlite"))
    assert main(["state", "prune"]) == 2
    assert "state database error" in capsys.readouterr().err


def test_feedback_while_the_state_database_is_down_is_a_503(tmp_path):
    import os

    from tests.service_support import make_app

    app = make_app(tmp_path)
    client = app.test_client()
    app.config["FLUORO_STATE"].close()
    for suffix in ("", "-wal", "-shm"):
        path = str(tmp_path / "state.sqlite") + suffix
        if os.path.exists(path):
            os.remove(path)
    os.mkdir(tmp_path / "state.sqlite")  # the file is replaced by a directory: unusable
    resp = client.post("/cds-services/fluoroscopy-claim-review/feedback",
                       json={"feedback": [_feedback("c1")]})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "5"
    assert "state database" in resp.get_json()["error"]

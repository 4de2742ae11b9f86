"""The audit writer process (service/audit_writer.py) on a real SQLite file and a real PostgreSQL
server: flush makes the rows visible, a writer that dies or falls behind never blocks the service
and its loss is counted (fluoro_cds_audit_lost) and logged, it exits with its parent, and under
gunicorn every worker has its own writer on one SQLite file."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from service import audit_writer
from service.settings import Settings, SettingsError
from service.state import AuditRecord, StateStore
from tests.report_support import claim_request
from tests.serve_support import ROOT, Served, post_on_new_connections, serve_env

SERVICE = "fluoroscopy-claim-review"


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    return request.getfixturevalue("pg_url")


def _rec(i: int, cards: int = 1) -> AuditRecord:
    ids = tuple(f"card-{i}-{k}" for k in range(cards))
    return AuditRecord("svc", f"hi-{i}", 200, ids, ("ptp-bundled",) * cards, "2024Q3", 1.5,
                       citations=(("NCCI PTP row",),) * cards)


def _lost(reason: str) -> float:
    return REGISTRY.get_sample_value("fluoro_cds_audit_lost_total", {"reason": reason}) or 0.0


def _wait(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie (not reaped yet) is gone too
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def store(location):
    s = StateStore(location, audit_writer="process")
    yield s
    if s._audit_proc is not None:
        s._audit_proc.close()


def test_the_writer_process_stores_rows_visible_after_flush(store, location):
    for i in range(30):
        store.record_audit(_rec(i, cards=2))
    assert store.flush()
    pid = store._audit_proc.pid
    assert pid is not None and pid != os.getpid()
    other = StateStore(location)  # another connection (another worker, a replica) sees them too
    rows = other.audit()
    assert [r["hook_instance"] for r in rows] == [f"hi-{i}" for i in range(30)]
    assert rows[0]["card_uuids"] == ["card-0-0", "card-0-1"] and rows[0]["data_release"] == "2024Q3"
    assert len(other.cards_shown()) == 60
    store.record_audit(_rec(30))
    assert [r["hook_instance"] for r in store.audit()][-1] == "hi-30"  # audit() flushes first
    assert store._audit_proc.pid == pid  # one writer for the store's process


def test_a_dead_writer_loses_only_its_unacknowledged_batch_counted_and_logged(store, caplog,
                                                                            monkeypatch):
    store.record_audit(_rec(0))
    assert store.flush()
    proc = store._audit_proc
    pid = proc.pid
    before = _lost("writer_died")
    os.kill(pid, signal.SIGSTOP)  # sent, never acknowledged: then the writer dies
    for i in range(1, 6):
        store.record_audit(_rec(i))
    assert _wait(lambda: sum(proc._unacked.values()) == 5)
    with caplog.at_level(logging.ERROR, logger="fluoro_cds.state"):
        os.kill(pid, signal.SIGKILL)
        assert _wait(lambda: proc.pid is None)  # the store's thread saw it (end of file)
        for i in range(6, 9):
            store.record_audit(_rec(i))  # never blocks nor raises
        assert store.flush()
    assert _lost("writer_died") - before == 5
    assert any("audit writer process exited" in r.getMessage() and "5 audit records" in r.getMessage()
               for r in caplog.records)
    # within RESTART_INTERVAL of the last start the store's thread writes the rows itself
    assert [r["hook_instance"] for r in store.audit()] == ["hi-0", "hi-6", "hi-7", "hi-8"]
    monkeypatch.setattr(audit_writer, "RESTART_INTERVAL", 0.0)  # then a new writer takes over
    store.record_audit(_rec(9))
    assert store.flush()
    assert proc.pid not in (None, pid)
    assert [r["hook_instance"] for r in store.audit()][-1] == "hi-9"


def test_a_writer_that_falls_behind_drops_whole_batches_counted_and_never_blocks(store, caplog,
                                                                                 monkeypatch):
    monkeypatch.setattr(audit_writer, "PIPE_BYTES", 4096)
    monkeypatch.setattr(audit_writer, "AUDIT_BUFFER_BYTES", 20_000)
    store.record_audit(_rec(0))
    assert store.flush()
    proc = store._audit_proc
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        before = _lost("writer_full")
        for i in range(1, 1001):  # ~100 kB, more than the pipe holds: the rest waits in memory
            store.record_audit(_rec(i))
        assert _wait(lambda: not store._audit_pending and proc._out)
        kept = sum(proc._unacked.values())  # 1000, or fewer if a pass split them (rest dropped)
        with caplog.at_level(logging.ERROR, logger="fluoro_cds.state"):
            for i in range(1001, 1101):  # the next batch finds the buffer full: dropped
                store.record_audit(_rec(i))
            assert _wait(lambda: _lost("writer_full") - before == 1100 - kept)
        assert kept >= 100
        assert any("audit writer process is behind" in r.getMessage() for r in caplog.records)
        started = time.monotonic()
        assert store.flush(timeout=0.5) is False  # bounded: the writer is stopped
        assert time.monotonic() - started < 2
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert store.flush()
    names = [r["hook_instance"] for r in store.audit(2000)]
    assert names == [f"hi-{i}" for i in range(kept + 1)]


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_a_batch_the_database_refuses_is_counted_and_logged(location, writer, caplog, capfd):
    store = StateStore(location, audit_writer=writer)
    try:
        store.record_audit(_rec(0))
        assert store.flush()
        with store.db.transaction() as cur:  # the batch's second INSERT fails: none of it stays
            cur.execute("DROP TABLE card_shown")
        before = _lost("database_error")
        with caplog.at_level(logging.ERROR, logger="fluoro_cds.state"):
            for i in range(1, 4):
                store.record_audit(_rec(i))
            assert store.flush()
            assert _wait(lambda: _lost("database_error") - before == 3)
        assert [r["hook_instance"] for r in store.audit()] == ["hi-0"]
        logged = (capfd.readouterr().err if writer == "process"  # the writer process's stderr
                  else "\n".join(r.getMessage() for r in caplog.records))
        assert "3 audit records not written" in logged
    finally:
        store.close()


def test_a_writer_that_cannot_start_leaves_the_writes_to_the_thread(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audit_writer, "START_TIMEOUT", 0.5)
    monkeypatch.setattr(audit_writer, "COMMAND", ("/bin/false",))  # exits, answers no "ready"
    store = StateStore(str(tmp_path / "state.sqlite"), audit_writer="process")
    with caplog.at_level(logging.ERROR, logger="fluoro_cds.state"):
        store.record_audit(_rec(1))
        assert store.flush()
    assert [r["hook_instance"] for r in store.audit()] == ["hi-1"]
    assert store._audit_proc.pid is None
    assert any("did not start" in r.getMessage() for r in caplog.records)


def test_the_writer_exits_when_its_parent_goes_away(tmp_path):
    db = tmp_path / "state.sqlite"
    script = textwrap.dedent(f"""
        import sys, time
        from service.state import AuditRecord, StateStore
        store = StateStore({str(db)!r}, audit_writer="process")
        for i in range(3):
            store.record_audit(AuditRecord("svc", f"hi-{{i}}", 200, (), (), None, 1.0))
        assert store.flush()
        proc = store._audit_proc
        sent = proc._seq
        store.record_audit(AuditRecord("svc", "hi-last", 200, (), (), None, 1.0))
        deadline = time.monotonic() + 10
        while proc._seq == sent and time.monotonic() < deadline:  # until it is in the pipe
            time.sleep(0.01)
        print(proc.pid, flush=True)
        sys.stdin.read()  # until the test kills this process
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
    finally:
        parent.kill()  # no atexit, no flush: only the pipe's end of file tells the writer
        parent.wait(10)
    assert _wait(lambda: _gone(pid))
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT hook_instance FROM audit ORDER BY id")]
    assert names == ["hi-0", "hi-1", "hi-2", "hi-last"]


def test_every_gunicorn_worker_has_its_writer_on_one_sqlite_file(tmp_path):
    env = serve_env(tmp_path, FLUORO_CDS_AUDIT_WRITER="process")
    served = Served(env, workers=2)
    try:
        url = f"{served.url}/cds-services/{SERVICE}"
        post_on_new_connections(url, claim_request("29881", "76000"), 24)  # over both workers

        def stored() -> int:
            with sqlite3.connect(tmp_path / "state.sqlite") as conn:
                return conn.execute("SELECT count(*) FROM audit").fetchone()[0]

        assert _wait(lambda: stored() == 24, 15), stored()
        writers = _writers(served.proc.pid)
        assert 1 <= len(writers) <= 2 and len({ppid for _, ppid in writers}) == len(writers)
    finally:
        served.stop()
    assert stored() == 24
    assert _wait(lambda: all(_gone(pid) for pid, _ in writers))


def _writers(master: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of the audit writer processes below gunicorn master `master`."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            procs[int(entry.name)] = (ppid, cmd)
    workers = {pid for pid, (ppid, _) in procs.items() if ppid == master}
    return [(pid, ppid) for pid, (ppid, cmd) in procs.items()
            if ppid in workers and b"service.audit_writer" in cmd]


def test_audit_writer_setting():
    assert Settings.from_env({}).audit_writer == "process"
    assert Settings.from_env({"FLUORO_CDS_AUDIT_WRITER": "Thread"}).audit_writer == "thread"
    with pytest.raises(SettingsError, match="FLUORO_CDS_AUDIT_WRITER"):
        Settings.from_env({"FLUORO_CDS_AUDIT_WRITER": "sidecar"})


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_the_batch_hook_sees_each_queued_record_and_its_failure_loses_no_row(tmp_path, mode, caplog):
    """before_store (service/calls.py: the calls' log lines and metrics) gets every queued
    record in order, extra fields included, before a flush returns; the rows stored are the
    audit fields only; a hook that raises is logged and the rows are stored all the same."""
    store = StateStore(str(tmp_path / "state.sqlite"), audit_writer=mode)
    seen: list[tuple] = []
    store.before_store(seen.extend)
    try:
        store.record_audit(_rec(0))
        store.queue_audit((time.time(), "svc", "hi-1", 200, ("card-1",), ("ptp-bundled",),
                           "2024Q3", 2.5, (("NCCI PTP row",),), {"iss": "https://ehr.example"}))
        assert store.flush()
        assert [r[2] for r in seen] == ["hi-0", "hi-1"] and seen[1][9] == {"iss": "https://ehr.example"}

        def broken(records):
            raise RuntimeError("boom")

        store.before_store(broken)
        with caplog.at_level(logging.ERROR, logger="fluoro_cds.state"):
            store.record_audit(_rec(2))
            assert store.flush()
        assert "batch hook failed" in caplog.text
        assert [r["hook_instance"] for r in store.audit()] == ["hi-0", "hi-1", "hi-2"]
        assert {r["citation"] for r in store.cards_shown()} == {"NCCI PTP row"}
    finally:
        store.close()

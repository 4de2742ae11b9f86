"""The audit writer process: stores the audit records of one service process, off its GIL.

Written per request, the audit record (service/state.py) was stored by a thread of the gunicorn
worker; its SQLite or PostgreSQL steps hand the GIL over and back around every call, and under
load the request threads paid for that (about 80-160 us of CPU per request, benchmarks/RESULTS.md).
With ``FLUORO_CDS_AUDIT_WRITER=process`` (the default of the service) the worker's audit thread only
serializes each batch once (pickle of plain tuples) and writes it to a pipe; this process, started
on the first record, owns its own connection to the state database and stores every batch in one
transaction. It exits when its parent goes away (end of file on the pipe).

Wire format, both ways length-free and ordered: parent -> child a sequence of pickles, each
``(seq, records)`` with ``records`` a list of :func:`service.state.audit_tuple` tuples (an empty
list is a sync request); child -> parent one line ``b"<seq> <written>\\n"`` per batch once its
transaction is over (``written`` 0 when the database refused it: the child logs why). The parent
never blocks on the pipe: what the pipe does not take waits in a bounded buffer
(:data:`AUDIT_BUFFER_BYTES`); a batch that would overflow it (and does not find it empty) is dropped, counted
(``fluoro_cds_audit_lost``) and logged, as are the batches a dead writer had not acknowledged.
"""
from __future__ import annotations

import fcntl
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

log = logging.getLogger("fluoro_cds.state")

AUDIT_BUFFER_BYTES = 8 * 1024 * 1024  # serialized batches waiting for the pipe, at most
PIPE_BYTES = 1024 * 1024  # asked of the kernel for the pipe (F_SETPIPE_SZ); 64 KiB when refused
START_TIMEOUT = 10.0  # seconds for the child to open the database and say it is ready
RESTART_INTERVAL = 5.0  # seconds between two starts of a writer that keeps dying
COMMAND = (sys.executable, "-m", "service.audit_writer")  # the writer process


class WriterDown(Exception):
    """The writer process is not running (it died, or could not start)."""


class AuditProcess:
    """The parent's end: one writer process per service process, used by the store's audit
    thread (and `close()` from any thread: a lock keeps them apart, never held while waiting).
    `lost(reason, n)` is told of every record that will not be stored."""

    def __init__(self, location: str, lost: Callable[[str, int], None]):
        self._location = location
        self._lost = lost
        self._proc: subprocess.Popen | None = None
        self._out = bytearray()  # serialized batches the pipe has not taken yet
        self._unacked: dict[int, int] = {}  # seq -> records sent, not yet acknowledged
        self._acks = b""
        self._seq = 0
        self._started = float("-inf")  # monotonic time of the last start
        self._closed = False
        self._lock = threading.RLock()

    # -- process ----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer and wait (bounded) until it has opened the database."""
        self._started = time.monotonic()
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
        proc = subprocess.Popen(list(COMMAND), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, env=env, close_fds=True)
        try:
            fcntl.fcntl(proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass
        self._proc, self._out, self._unacked, self._acks = proc, bytearray(), {}, b""
        try:  # the location (it may hold a password) goes through the pipe, never argv
            os.write(proc.stdin.fileno(), pickle.dumps(self._location, 5))
            ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
            line = os.read(proc.stdout.fileno(), 64) if ready else b""
        except OSError:
            line = b""
        if line != b"ready\n":
            self._kill()
            raise WriterDown("the audit writer process did not start")
        os.set_blocking(proc.stdin.fileno(), False)
        os.set_blocking(proc.stdout.fileno(), False)

    def running(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int | None:
        """The writer process's id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def may_start(self) -> bool:
        return not self._closed and time.monotonic() - self._started >= RESTART_INTERVAL

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        try:
            proc.kill()
            proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def _died(self) -> None:
        lost = sum(self._unacked.values())
        code = self._proc.poll() if self._proc else None
        self._kill()
        self._unacked, self._out = {}, bytearray()
        if lost:
            self._lost("writer_died", lost)
        log.error("the audit writer process exited (status %s); %d audit records not written",
                  code, lost)

    # -- batches ----------------------------------------------------------------------------
    def send(self, records: list[tuple]) -> int:
        """Queue one batch (an empty one: a sync request) and push what the pipe takes; returns
        its sequence number, or 0 when it was dropped (buffer full: counted and logged; a sync
        request, a few bytes, is never dropped)."""
        with self._lock:
            return self._send(records)

    def _send(self, records: list[tuple]) -> int:
        if self._proc is None:
            raise WriterDown("no audit writer process")
        self._seq += 1
        data = pickle.dumps((self._seq, records), 5)
        if records and self._out and len(self._out) + len(data) > AUDIT_BUFFER_BYTES:
            self._lost("writer_full", len(records))
            log.error("the audit writer process is behind (%d bytes waiting): %d audit records "
                      "dropped", len(self._out), len(records))
            self.pump()
            return 0
        self._out += data
        self._unacked[self._seq] = len(records)
        self.pump()
        return self._seq

    def pump(self) -> None:
        """Write what the pipe takes and read the acknowledgements, without blocking."""
        with self._lock:
            self._pump()

    def _pump(self) -> None:
        if self._proc is None:
            return
        try:
            if self._out:
                n = os.write(self._proc.stdin.fileno(), self._out)
                del self._out[:n]
            self._read_acks()
        except BlockingIOError:
            self._read_acks()
        except OSError:  # EPIPE: the writer is gone
            self._died()

    def _read_acks(self) -> None:
        try:
            data = os.read(self._proc.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        if not data:  # end of file: the writer is gone
            self._died()
            return
        self._acks += data
        *lines, self._acks = self._acks.split(b"\n")
        for line in lines:
            seq, written = map(int, line.split())
            sent = self._unacked.pop(seq, 0)
            if written < sent:
                self._lost("database_error", sent - written)

    def wait(self, seq: int, timeout: float) -> bool:
        """Wait until batch `seq` is acknowledged (True) or the writer died or `timeout` passed."""
        deadline = time.monotonic() + timeout
        while seq in self._unacked and (proc := self._proc) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                select.select([proc.stdout], [proc.stdin] if self._out else [], [], min(left, 0.5))
            except (OSError, ValueError):  # closed meanwhile (close() from another thread)
                pass
            self.pump()
        return seq not in self._unacked

    def sync(self, timeout: float) -> bool:
        """Wait until every batch sent so far is stored (True; also when no writer runs: the
        store's thread wrote them, or their loss was counted)."""
        if self._proc is None:
            return True
        seq = self.send([])
        return seq != 0 and self.wait(seq, timeout)

    def detach(self) -> None:
        """In a forked child: let go of the parent's writer (close the pipe ends, kill nothing)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass

    def close(self, timeout: float = 5.0) -> None:
        """Close the pipe (the writer stores what it has read, then exits) and wait for it
        (killed after `timeout` seconds)."""
        with self._lock:
            self._closed = True
            proc = self._proc
            if proc is None:
                return
            try:
                proc.stdin.close()
                proc.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._kill()


# -- the child ------------------------------------------------------------------------------
def main() -> int:
    """Read batches from stdin until end of file, store each in one transaction, acknowledge."""
    from .logs import configure
    from .state import StateError, open_database, write_audit_batch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C: the parent closes the pipe
    fmt = os.environ.get("FLUORO_CDS_LOG_FORMAT", "text").strip().lower()
    configure("json" if fmt == "json" else "text")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        location = pickle.load(stdin)
        db = open_database(location)
    except (EOFError, pickle.UnpicklingError, StateError) as exc:
        log.error("the audit writer process cannot start: %s", exc)
        return 1
    stdout.write(b"ready\n")
    stdout.flush()
    while True:
        try:
            seq, records = pickle.load(stdin)
        except EOFError:  # the parent has gone away
            return 0
        written = 0
        if records:
            try:
                written = write_audit_batch(db, records)
            except StateError as exc:
                log.error("%d audit records not written: %s", len(records), exc)
        try:
            stdout.write(b"%d %d\n" % (seq, written))
            stdout.flush()
        except BrokenPipeError:
            return 0


if __name__ == "__main__":
    sys.exit(main())

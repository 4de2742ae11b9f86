"""The reference data a long-running service answers with, following imports without a restart.

A service started before any NCCI import answers from the embedded starter set. Once an import
registers releases in the store's catalog, the service should answer from them, as a service
started afterwards would. The SQLite store already re-reads its catalog when it changes; this
holder covers the step before it: it checks at most once per `interval` whether the catalog now
holds releases, and from then on hands out the store.
"""
from __future__ import annotations

import threading
import time

from . import open_reference
from .api import ReferenceData
from .store import SqliteStore


class LiveReference:
    """``current()``: the store at `db_path` once it holds releases, the starter set until then."""

    def __init__(self, db_path: str | None, interval: float = 1.0):
        self.db_path, self.interval = db_path, interval
        self._lock = threading.Lock()
        self._reference = open_reference(db_path)
        self._settled = not db_path or isinstance(self._reference, SqliteStore)
        self._checked = time.monotonic()

    def current(self) -> ReferenceData:
        """The reference data in service now (a cheap attribute read once settled)."""
        if self._settled:
            return self._reference
        now = time.monotonic()
        if now - self._checked >= self.interval and self._lock.acquire(blocking=False):
            try:
                self._checked = now
                reference = open_reference(self.db_path)
                if isinstance(reference, SqliteStore):
                    self._reference, self._settled = reference, True
            finally:
                self._lock.release()
        return self._reference

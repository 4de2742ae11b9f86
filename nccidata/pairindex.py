"""The pair index of a PTP release: its rows sorted by (column_1, column_2), memory-mapped.

Why: "all PTP edits among a claim's codes" is ~90 ordered code pairs. Asked of SQLite, that is
~90 B-tree seeks through the sqlite3 module, about 1 us each on this class of machine (measured:
90-125 us per claim, see benchmarks/RESULTS.md), whatever the key layout. The pair index answers
the same question with one vectorised binary search over a sorted array (numpy), reading only
the pages it touches: nothing is loaded at start-up and the operating system shares the pages
between worker processes.

Layout, written next to the release's SQLite file and immutable like it:
- ``<release>.pairkeys.npy``: uint64, one per row, sorted, then sentinels (2**64 - 1), as
  many as the longest run of rows of one pair (an edit deleted and re-added: up to 4 in the
  July 2024 tables);
  key = n(column_1) << 26 | n(column_2) where n(code) is the code read as a base-36 number.
  CPT and HCPCS codes are five characters of [0-9A-Z]; 36**5 < 2**26, so keys are unique per
  pair and sort as the codes' text does.
- ``<release>.pairrows.npy``: the rows' other columns in the same order (ROW_DTYPE; dates as
  YYYYMMDD ints, 0 for none).

The index is built only when every code of the release has exactly five characters (all CMS
releases); otherwise the release is answered by SQL alone. The SQLite table stays the record:
the index is derived from the same rows in the same import and checked against SQL in tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

KEY_SHIFT = 26
CODE_MASK = (1 << KEY_SHIFT) - 1
CODE_WIDTH = 5
# the columns of the SQLite ptp table after the codes, in its order
ROW_DTYPE = np.dtype([("effective", "<i4"), ("deletion", "<i4"), ("modifier", "u1"),
                      ("rationale", "<u2"), ("source", "u1"), ("line", "<u4")])
_SHIFT = np.uint64(KEY_SHIFT)
SENTINEL = np.uint64(2 ** 64 - 1)  # after the last key: greater than any pair's key (< 2**52)
KEYS_SUFFIX = ".pairkeys.npy"
ROWS_SUFFIX = ".pairrows.npy"

_DIGITS = np.full(256, 255, dtype=np.uint8)
for _i, _ch in enumerate("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
    _DIGITS[ord(_ch)] = _i  # upper case only: SQL compares codes as text, so must the index


def code_number(code: str) -> int | None:
    """The code as a base-36 number, or None when it is not five ASCII digits or upper-case
    letters."""
    if len(code) != CODE_WIDTH or not code.isascii() or not code.isalnum() or code != code.upper():
        return None
    return int(code, 36)


def code_numbers(codes: Sequence[str]) -> np.ndarray | None:
    """Vectorised code_number for a column of codes already checked to be ASCII letters and
    digits; None when any code is not five characters long or has a lower-case letter."""
    joined = "".join(codes).encode("ascii")
    if len(joined) != CODE_WIDTH * len(codes):
        return None
    digits = _DIGITS[np.frombuffer(joined, dtype=np.uint8)].reshape(len(codes), CODE_WIDTH)
    if digits.max() >= 36:
        return None
    number = digits[:, 0].astype(np.uint64)
    for i in range(1, CODE_WIDTH):
        number *= np.uint64(36)
        number += digits[:, i]
    return number


def index_paths(release_file: str | Path) -> tuple[Path, Path]:
    p = str(release_file)
    return Path(p + KEYS_SUFFIX), Path(p + ROWS_SUFFIX)


class PairIndexBuilder:
    """Collects a PTP release's rows batch by batch while they are inserted into SQLite;
    `write` sorts them and writes the two arrays. Gives up (``usable`` False) on the first
    code that is not five characters."""

    def __init__(self) -> None:
        self.usable = True
        self._keys: list[np.ndarray] = []
        self._rows: list[np.ndarray] = []

    def add(self, column_1: Sequence[str], column_2: Sequence[str], effective: Iterable[int],
            deletion: Iterable[int], modifier: Sequence[str], rationale: Iterable[int],
            source: int, lines: Iterable[int]) -> None:
        """One batch: codes and modifier indicators as text, dates as YYYYMMDD ints (0: none)."""
        if not self.usable:
            return
        n = len(column_1)
        c1, c2 = code_numbers(column_1), code_numbers(column_2)
        if c1 is None or c2 is None:
            self.drop()
            return
        rows = np.empty(n, dtype=ROW_DTYPE)
        rows["effective"] = np.fromiter(effective, np.int32, n)
        rows["deletion"] = np.fromiter(deletion, np.int32, n)
        rows["line"] = (np.arange(lines.start, lines.stop, lines.step, dtype=np.uint32)
                        if isinstance(lines, range) else np.fromiter(lines, np.uint32, n))
        rows["rationale"] = np.fromiter(rationale, np.uint16, n)
        rows["source"] = source
        rows["modifier"] = np.frombuffer("".join(modifier).encode("ascii"), dtype=np.uint8) - ord("0")
        self._keys.append((c1 << _SHIFT) | c2)
        self._rows.append(rows)

    def drop(self) -> None:
        self.usable = False
        self._keys, self._rows = [], []

    def write(self, release_file: str | Path) -> list[Path]:
        """Sort and write the index beside `release_file`; returns the files written."""
        if not self.usable or not self._keys:
            return []
        keys = np.concatenate(self._keys)
        rows = np.concatenate(self._rows)
        self._keys, self._rows = [], []
        order = np.argsort(keys, kind="stable")  # rows of one pair keep their file order
        keys, rows = keys[order], rows[order]
        # the longest run of rows of one pair (an edit deleted and re-added, or in two source
        # files): that many sentinels follow the keys, so a lookup can read that far
        firsts = np.flatnonzero(np.diff(keys, prepend=SENTINEL) != 0)
        longest = int(np.diff(firsts, append=len(keys)).max())
        padded = np.concatenate([keys, np.full(longest, SENTINEL, dtype=np.uint64)])
        written = []
        for path, array in zip(index_paths(release_file), (padded, rows)):
            # written like the release file itself (synchronous=OFF): the catalog commit that
            # registers the release is the durable switch
            with open(path, "wb") as f:
                np.save(f, array, allow_pickle=False)
            written.append(path)
        return written


class PairIndex:
    """A release's pair index, memory-mapped read-only (safe to share between threads)."""

    def __init__(self, keys: np.ndarray, rows: np.ndarray):
        self.keys, self.rows = keys, rows
        # the keys are followed by as many sentinels as the longest run of rows of one pair
        self._window = np.arange(len(keys) - len(rows), dtype=np.intp)

    @classmethod
    def open(cls, release_file: str | Path) -> "PairIndex | None":
        """The index of `release_file`, or None when it has none (built before the index
        existed, or holding codes that are not five characters)."""
        kpath, rpath = index_paths(release_file)
        if not (kpath.exists() and rpath.exists()):
            return None
        keys = np.load(kpath, mmap_mode="r", allow_pickle=False)
        rows = np.load(rpath, mmap_mode="r", allow_pickle=False)
        if (rows.dtype != ROW_DTYPE or keys.dtype != np.uint64 or keys.ndim != 1 or rows.ndim != 1
                or len(keys) <= len(rows) or keys[-1] != SENTINEL):
            return None
        # plain ndarray views of the maps: numpy's memmap subclass adds per-call overhead
        return cls(np.asarray(keys), np.asarray(rows))

    def among(self, codes: Iterable[str]) -> list[tuple[str, str, tuple]]:
        """``(column_1, column_2, (effective, deletion, modifier, rationale, source, line))``
        for every row whose column_1 and column_2 are both among `codes` (upper case, as the
        store passes them; dates YYYYMMDD ints, 0 for none; modifier 0, 1 or 9; rationale and
        source ids of the release's tables), pairs in key order, a pair's rows in file order."""
        try:
            by_number = {int(c, 36): c for c in codes if len(c) == CODE_WIDTH and c.isalnum()}
        except ValueError:  # a letter outside A-Z (another script): no such code in a release
            by_number = {n: c for c in codes if (n := code_number(c)) is not None}
        if len(by_number) < 2:
            return []
        nums = np.fromiter(by_number, np.uint64, len(by_number))
        wanted = ((nums[:, None] << _SHIFT) | nums).ravel()
        keys = self.keys
        # One binary search per pair finds its first row, if any; its other rows, if any,
        # follow within the window (the sentinels after the last key keep every position
        # read in range).
        at = (keys.searchsorted(wanted)[:, None] + self._window).ravel()
        at = at[keys[at] == wanted.repeat(len(self._window))]
        if not at.size:
            return []
        found = keys[at].tolist()
        return list(zip([by_number[k >> KEY_SHIFT] for k in found],
                        [by_number[k & CODE_MASK] for k in found], self.rows[at].tolist()))

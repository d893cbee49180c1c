"""Which of a slice's identifiers the identity index may hold, answered from their hashes.

Why: matching a slice's identifiers against the identity index is a join that reads the
whole index (2M identifiers at the end of a 1M-lead first sync: 80-110 ms of CPU a slice,
2 s of the run, and more the larger the state grows). When no identifier of the slice can be
in it, as on a first sync or a list of new leads, that read finds nothing. This filter says
so from 8 bytes per identifier: the sorted hashes (DuckDB's ``hash(entity_type, kind,
value)``) of every identifier the index held when the run started, plus those each pass of
the run may add (its new identifiers, added when it is resolved, written or not).

Only a "none of them" is acted on: a slice with any identifier whose hash is present joins
the index as before, exactly, by value. So a hash collision costs a join, never a wrong
match. Past ``max_items`` identifiers (8 bytes each, 32 MB at the default) the filter gives
up and every slice joins, so that its memory stays bounded whatever the state's size.
"""

from __future__ import annotations

import threading

import duckdb
import numpy as np

MAX_ITEMS = 4_000_000


CHUNK = 1 << 19  # 512Ki hashes (4 MB) per sorted array at most


class IdentityFilter:
    """Hashes of identifiers the identity index may hold (see the module docstring).

    Sorted arrays of at most :data:`CHUNK` hashes each: an addition is merged into the
    newest array while that stays under the size, else starts an array of its own (NumPy
    sorts unsigned integers with a radix sort, so a merge is linear). One sorted array for
    everything would need twice its size while merging (40 MB at the end of a 1M-lead first
    sync); five arrays cost five binary searches a slice. Probes are sorted before the
    search: 100,000 unsorted hashes against 2M took 35 ms, sorted 10 ms (measured).
    """

    def __init__(self, max_items: int = MAX_ITEMS) -> None:
        self.max_items = max_items
        self._arrays: list[np.ndarray] = []
        self._size = 0
        self._loaded = False
        self.disabled = False
        self._lock = threading.Lock()

    def load(self, con: duckdb.DuckDBPyConnection) -> None:
        """Read the index's hashes once (the first pass to resolve calls this)."""
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            count = con.execute("SELECT count(*) FROM identity").fetchall()[0][0]
            if count > self.max_items:
                self.disabled = True
                return
            if count:
                got = con.execute("SELECT hash(entity_type, kind, value) AS h FROM identity").fetchnumpy()["h"]
                hashes = np.asarray(got, dtype=np.uint64)
                for start in range(0, len(hashes), CHUNK):
                    self._add(hashes[start:start + CHUNK])

    def add(self, hashes: np.ndarray) -> None:
        """Identifiers a pass may write to the index."""
        with self._lock:
            self._add(np.asarray(hashes, dtype=np.uint64))

    def _add(self, hashes: np.ndarray) -> None:
        if self.disabled or not len(hashes):
            return
        self._size += len(hashes)
        if self._size > self.max_items:
            self.disabled = True
            self._arrays = []
            return
        if self._arrays and len(self._arrays[-1]) + len(hashes) <= CHUNK:
            merged = np.concatenate([self._arrays[-1], hashes])
            merged.sort(kind="stable")
            self._arrays[-1] = merged
        else:
            self._arrays.append(np.sort(hashes, kind="stable"))

    def may_hold_any(self, hashes: np.ndarray) -> bool:
        """False only if the index holds none of these hashes (then a join would find nothing)."""
        with self._lock:
            if self.disabled or not self._loaded:
                return True
            probe = np.sort(np.asarray(hashes, dtype=np.uint64), kind="stable")
            for known in self._arrays:
                if len(probe):
                    at = np.minimum(np.searchsorted(known, probe), len(known) - 1)
                    if bool((known[at] == probe).any()):
                        return True
            return False

"""The sandbox's tenants (one per API key), the lock that makes requests atomic, persistence.

Requests are applied on the server's single event-loop thread without awaiting in
between, which already makes each request atomic with respect to the others; the
``threading.Lock`` exists for the persistence thread, which must read a consistent
state, and for in-process callers that inspect the store from another thread.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Sequence
from pathlib import Path

from .persist import FLUSH_INTERVAL_S as _FLUSH_S
from .persist import DuckDBPersistence, Snapshot, rows_of, tenant_id
from .store import Tenant


class SandboxState:
    """Tenants by API key; optionally backed by a DuckDB file (``--db``)."""

    def __init__(self, api_keys: Sequence[str], db_path: str | Path | None = None, seed: int | None = None) -> None:
        keys = [k for k in api_keys if k]
        if not keys:
            raise ValueError("the sandbox needs at least one API key")
        self.lock = threading.Lock()
        # Seeded, the generated unified ids repeat too; unseeded, they differ per run.
        rng = random.Random(None if seed is None else seed + 1)
        self.tenants: dict[str, Tenant] = {key: Tenant(tenant_id(key), rng) for key in keys}
        self._db = DuckDBPersistence(db_path) if db_path else None
        self._resets: list[str] = []
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self._db is not None:
            for tenant in self.tenants.values():
                companies, leads = self._db.load(tenant.tenant_id)
                tenant.restore(companies, leads)
                tenant.track_dirty = True

    def reset(self, tenant: Tenant) -> None:
        with self.lock:
            tenant.clear()
            if self._db is not None:
                self._resets.append(tenant.tenant_id)

    # ------------------------------------------------------------ persistence
    def _snapshot(self) -> Snapshot:
        snap = Snapshot()
        with self.lock:
            snap.resets, self._resets = self._resets, []
            for t in self.tenants.values():
                if t.dirty_companies:
                    only, t.dirty_companies = t.dirty_companies, set()
                    snap.rows += rows_of(
                        t.tenant_id,
                        "company",
                        "unified_company_id",
                        zip(sorted(only), t.company_docs(only), strict=True),
                    )
                if t.dirty_leads:
                    only, t.dirty_leads = t.dirty_leads, set()
                    snap.rows += rows_of(
                        t.tenant_id,
                        "lead",
                        "unified_lead_id",
                        zip(sorted(only), t.lead_docs(only), strict=True),
                    )
        return snap

    def flush(self) -> None:
        """Write what changed since the last flush (no-op without ``--db``)."""
        if self._db is None:
            return
        snap = self._snapshot()
        if snap.resets or snap.rows:
            self._db.write(snap)

    def start(self) -> None:
        if self._db is not None and self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="sandbox-flush", daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._stop.wait(_FLUSH_S):
            self.flush()

    def close(self) -> None:
        """Stop the flusher, write the last changes and close the file."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        if self._db is not None:
            self.flush()
            self._db.close()
            self._db = None

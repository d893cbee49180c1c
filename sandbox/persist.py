"""``--db PATH``: keep the sandbox's store in a DuckDB file across restarts.

The in-memory store stays the truth while the server runs (so persistence costs nothing
on the request path); records changed by a request are marked dirty, and a background
thread writes them every ``FLUSH_INTERVAL_S`` as JSON documents in the inspection shape
(the same documents ``/_sandbox/leads`` shows), plus once more on a clean stop. So a
clean stop (SIGINT/SIGTERM, leaving ``running_sandbox``) loses nothing, and a crash loses
at most the last interval.

Tenants are stored under a hash of their API key (never the key itself): the same key
finds its data again after a restart.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa

FLUSH_INTERVAL_S = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sandbox_records (
    tenant VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,
    uid VARCHAR NOT NULL,
    seq BIGINT NOT NULL,
    doc VARCHAR NOT NULL,
    PRIMARY KEY (tenant, kind, uid)
)
"""


def tenant_id(api_key: str) -> str:
    """A stable, non-reversible name for the tenant of ``api_key`` (the key is a secret)."""
    return hashlib.sha256(b"outreach-magic-sandbox\x00" + api_key.encode()).hexdigest()[:32]


@dataclass
class Snapshot:
    """What one flush writes: tenants to wipe first, then (tenant, kind, uid, seq, doc) rows."""

    resets: list[str] = field(default_factory=list)
    rows: list[tuple[str, str, str, int, bytes]] = field(default_factory=list)


class DuckDBPersistence:
    """Reads and writes the sandbox's records in one DuckDB file."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(self.path)
        self._con.execute(_SCHEMA)
        self._lock = threading.Lock()

    def load(self, tenant: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The tenant's (companies, leads) documents, in creation order."""
        with self._lock:
            rows = self._con.execute(
                "SELECT kind, doc FROM sandbox_records WHERE tenant = ? ORDER BY kind, seq", [tenant]
            ).fetchall()
        companies = [orjson.loads(doc) for kind, doc in rows if kind == "company"]
        leads = [orjson.loads(doc) for kind, doc in rows if kind == "lead"]
        return companies, leads

    def write(self, snap: Snapshot) -> None:
        with self._lock:
            self._con.execute("BEGIN")
            try:
                for tenant in snap.resets:
                    self._con.execute("DELETE FROM sandbox_records WHERE tenant = ?", [tenant])
                if snap.rows:
                    cols = list(zip(*snap.rows, strict=True))
                    batch = pa.table(
                        {
                            "tenant": pa.array(cols[0], pa.string()),
                            "kind": pa.array(cols[1], pa.string()),
                            "uid": pa.array(cols[2], pa.string()),
                            "seq": pa.array(cols[3], pa.int64()),
                            "doc": pa.array([d.decode() for d in cols[4]], pa.string()),
                        }
                    )
                    self._con.register("sandbox_batch", batch)
                    self._con.execute("INSERT OR REPLACE INTO sandbox_records SELECT * FROM sandbox_batch")
                    self._con.unregister("sandbox_batch")
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._con.close()


def rows_of(
    tenant: str, kind: str, uid_field: str, docs: Iterable[tuple[int, dict[str, Any]]]
) -> list[tuple[str, str, str, int, bytes]]:
    return [(tenant, kind, doc[uid_field], seq, orjson.dumps(doc)) for seq, doc in docs]

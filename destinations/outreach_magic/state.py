"""The durable state file (DuckDB): what the API confirmed, the rejected ledger and the run log.

Why one DuckDB file: orchestrator workers are often ephemeral, so everything that must
survive a run (identity index, last confirmed values, ledger, row hashes) lives in one
file whose path can point at durable storage. It holds personal data, so it is created
readable by its owner only, and it never holds the API key.

Tables (wide: one column per contract field, so a diff is a join). None has a primary
key: uniqueness is kept by the writers (``staging.py``), because DuckDB's index upserts
cost several times a plain append at these volumes.

* ``identity(entity_type, kind, value, entity_id, confirmed_at)``: every identifier the API
  confirmed, mapped to a local entity id (first come keeps it, like the server's own rule);
* ``lead_state``, ``company_state``: last confirmed attributes per entity (a missing value
  never overwrote a present one), plus the lead's company link;
* ``lead_ws_state``, ``company_ws_state``: workspace attributes per (entity, workspace);
* ``conn_state``: connection level per (lead, sender);
* ``rejected``: rows held back (``origin`` ``invalid``) or rejected by the API (``api``),
  with every reason; ``rejected_events``: content hashes of API-rejected events, so an
  unchanged rejected event is not resent until its data changes (or ``--retry-rejected``);
* ``row_hashes``: hashes of source rows whose every derived event was confirmed, so a
  rerun drops them before any per-row work;
* ``runs``: one row per run with its report.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import duckdb

from . import settings as s
from .exceptions import ConfigurationError

SCHEMA_VERSION = "2"
MEMORY_LIMIT = os.environ.get("OUTREACH_MAGIC_DUCKDB_MEMORY", "128MB")
# One DuckDB thread per query. A sync runs several query streams at once (the slice being
# resolved and sent, the next one being prepared, confirmations being written, the events'
# JSON being built), each on a thread of its own, and a 50k-row slice is one row group, which
# DuckDB scans on one thread anyway: its worker threads only added scheduling and contention.
# Paired 1M-row child syncs of bench/sync.py: 21.0-21.2 s with 1 thread, 23.5-23.6 s with
# DuckDB's default (one per core, 2 here); the rerun the same (2.4-2.5 s).
THREADS = int(os.environ.get("OUTREACH_MAGIC_DUCKDB_THREADS", "1"))
# DuckDB folds the WAL into the file (a checkpoint) once the WAL passes this size. Each
# checkpoint compresses the row groups appended since the last one and rewrites every table's
# last, partly filled row group, so checkpoints more often than a row group fills (122,880
# rows) compress the same rows several times: a 1M-row first sync spent 5-6 s of CPU in the
# 15 commits that checkpointed at DuckDB's 16 MB. Paired 1M-row child syncs: 29.7/30.4 s at
# 32 MB against 32.5/36.3 s at 16 MB, peak RSS 475-479 against 468-479 MB (64 MB: no faster
# than 32, RSS up to 490 MB; the WAL's rows wait in memory until they are checkpointed).
CHECKPOINT_THRESHOLD = os.environ.get("OUTREACH_MAGIC_DUCKDB_CHECKPOINT", "32MB")


def _cols(fields: tuple[str, ...]) -> str:
    return ", ".join(f"{f} {'VARCHAR[]' if f == 'tags' else 'VARCHAR'}" for f in fields)


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
CREATE TABLE IF NOT EXISTS identity (
    entity_type VARCHAR, kind VARCHAR, value VARCHAR, entity_id BIGINT, confirmed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS lead_state (
    entity_id BIGINT, {_cols(s.LEAD_ATTRIBUTES)}, company_entity_id BIGINT, confirmed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS company_state (
    entity_id BIGINT, {_cols(s.COMPANY_ATTRIBUTES)}, confirmed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS lead_ws_state (
    entity_id BIGINT, workspace_id VARCHAR, {_cols(s.WORKSPACE_ATTRIBUTES)}, confirmed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS company_ws_state (
    entity_id BIGINT, workspace_id VARCHAR, {_cols(s.WORKSPACE_ATTRIBUTES)}, confirmed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS conn_state (
    entity_id BIGINT, sender VARCHAR, linkedin_connection_level VARCHAR, confirmed_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS rejected (
    run_id VARCHAR, origin VARCHAR, source VARCHAR, row BIGINT, "column" VARCHAR, value VARCHAR,
    reason VARCHAR, row_hash BIGINT, created_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS rejected_events (content_hash UBIGINT PRIMARY KEY, run_id VARCHAR, reason VARCHAR);
CREATE TABLE IF NOT EXISTS row_hashes (hash BIGINT);
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY, started_at TIMESTAMP, finished_at TIMESTAMP, report JSON);
CREATE SEQUENCE IF NOT EXISTS entity_seq START 1;
"""


def default_state_path() -> Path:
    """Project-local default; point ``state_path`` at durable storage on ephemeral workers."""
    return Path(".outreach_magic") / "state.duckdb"


def connect(
    path: str | os.PathLike[str], *, target: str | None = None, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open (and create, owner-only) the state file, checking it belongs to ``target``.

    A state file records which API base URL it describes: confirmed values for the
    sandbox say nothing about production, so pointing one state at two targets would
    silently send nothing. That is refused with a clear message instead.
    """
    p = Path(path)
    if read_only:
        if not p.exists():
            raise ConfigurationError(f"no state file at {p}: nothing has been synced with this state yet")
        return duckdb.connect(str(p), read_only=True)
    p.parent.mkdir(parents=True, exist_ok=True)
    # The file holds personal data: whatever DuckDB creates (file, WAL) is owner-only.
    old = os.umask(0o077)
    try:
        con = duckdb.connect(str(p))
    finally:
        os.umask(old)
    os.chmod(p, 0o600)
    # Bounded memory: DuckDB would otherwise keep up to 80% of RAM of staging data in
    # memory; past this limit it spills to a folder beside the state file.
    con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
    spill = str(p.parent / (p.name + ".tmp"))
    # Settings are per database instance, shared by every connection to the file in this
    # process; DuckDB refuses to move a temp directory it has used, so set it only once.
    if con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0] != spill:
        with contextlib.suppress(duckdb.Error):
            con.execute(f"SET temp_directory = '{spill}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET threads = {THREADS}")
    con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
    con.execute(SCHEMA)
    rows = con.execute("SELECT value FROM meta WHERE key = 'target'").fetchall()
    row = rows[0] if rows else None
    if target is not None:
        if row is None:
            con.execute("INSERT INTO meta VALUES ('target', ?), ('schema', ?)", [target, SCHEMA_VERSION])
        elif row[0] != target:
            con.close()
            raise ConfigurationError(
                f"the state file {p} describes what {row[0]} confirmed, not {target}: "
                "use another --state for this target"
            )
    return con

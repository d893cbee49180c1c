"""Staging in DuckDB: normalize → validate → merge rows of one entity → diff → events → confirm.

Why it is built this way:

* **Columnar until the last moment.** Rows arrive as Arrow; normalization is vectorized
  (``identifiers.normalize_table``), the contract's rules run as one SQL predicate that
  flags *suspect* rows, and only those go through the pydantic model for the exact
  message (the predicate is a superset of the model's failures, so verdicts agree).
  Merging, diffing and event assembly are SQL; Python touches each outgoing event once,
  to drop its empty fields and write JSON.
* **One person is one lead.** Rows sharing a normalized lead identifier form one group,
  unless they conflict on an identifier kind (two different emails on one LinkedIn
  profile stay two events, so no email is lost). Companies the same. A group is matched
  to a known entity by the identity index, in the API's matching priority.
* **Latest wins, missing never overwrites.** Per attribute, the last non-null value by
  the order column (``_om_order``, compared as text: ISO timestamps sort right), then by
  row position.
* **Send only what changed.** A group is diffed against the last values the API
  confirmed; an event carries the group's identifiers plus only changed attributes.
* **Confirmed means confirmed.** State is written only for items whose index the API
  confirmed (``confirm``), in buffered flushes; a crash between a send and a flush
  causes a resend (harmless: upserts are idempotent), never a loss.
* **Rejected stays rejected until it changes.** An API-rejected event's content hash is
  kept, and the same event is not resent unless its data changed or the caller asks
  (``retry_rejected``).

Scopes and grains: lead attributes per lead entity; company attributes per company
entity; workspace attributes per (lead, workspace), or (company, workspace) for rows with
no lead; connection level per (lead, sender). One event carries a lead's identifiers,
its changed attributes, its company's identifiers (and that company's changed
attributes the first time it is named), one workspace and one connection; further
workspaces or senders of the same lead go in extra events with the lead's identifiers.
Two groups that resolve to one known entity (conflicting identifiers on one person)
are diffed separately; if their attribute values differ, each run sends both, as the
server itself would keep only the last.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import settings as s
from .contract import validate_item
from .read_ahead import read_ahead

LEAD_IDS = s.LEAD_IDENTIFIERS
COMPANY_IDS = s.COMPANY_IDENTIFIERS
WS_ATTRS = s.WORKSPACE_ATTRIBUTES
STRING_FIELDS = tuple(f for f in s.CANONICAL_FIELDS if f != "tags")
META = ("_om_source", "_om_row", "_om_order", "_om_hash")
# Confirmations are written to the state in flushes of this many items (or at the end).
FLUSH_ITEMS = 20_000
MAX_LEDGER_VALUE = 300


@dataclass
class RowIssue:
    """One reason a row was held back: source, row number, column, value and why."""

    source: str
    row: int
    column: str
    value: str
    reason: str


@dataclass
class StageReport:
    """Counts of one staging pass; ``add`` sums passes of one run."""

    rows_read: int = 0
    invalid: int = 0
    partial: int = 0
    merged: int = 0
    unchanged: int = 0
    skipped_rejected: int = 0
    events: int = 0
    applied: int = 0
    rejected: int = 0
    failed: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: StageReport) -> None:
        for name, value in asdict(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        self.ignored_columns = sorted(set(self.ignored_columns) | set(other.ignored_columns))
        self.samples = (self.samples + other.samples)[:5]


def _null_column(name: str, n: int) -> pa.Array:
    return pa.nulls(n, pa.list_(pa.string()) if name == "tags" else pa.string())


TAGS_TYPE = pa.list_(pa.string())


def _as_tags(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``tags`` as list<string>: a delimited string column is split on ``;``, ``,`` or ``|``."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return pc.split_pattern_regex(col.cast(pa.string()), r"\s*[;,|]\s*")
    if pa.types.is_null(col.type):
        return col.cast(TAGS_TYPE)
    return col.cast(TAGS_TYPE)


def conform(
    table: pa.Table | pa.RecordBatch, source_label: str, *, with_rid: bool = True
) -> tuple[pa.Table, list[str]]:
    """Give rows every canonical column, in one fixed order and type, and the row-meta columns.

    One schema for every batch keeps dlt's writer and the SQL below simple (absent
    columns are all-null, which costs next to nothing in Arrow and Parquet). Columns that
    are neither canonical nor ``_om_*``/``_dlt_*`` are reported and ignored: the contract
    forbids unknown keys, so they are never sent.
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    n = table.num_rows
    names = table.column_names
    ignored = [c for c in names if c not in s.CANONICAL_FIELDS and not c.startswith(("_om_", "_dlt_"))]
    cols: dict[str, pa.Array | pa.ChunkedArray] = {}
    for name in s.CANONICAL_FIELDS:
        if name not in names:
            cols[name] = _null_column(name, n)
        elif name == "tags":
            cols[name] = _as_tags(table.column(name))
        else:
            cols[name] = table.column(name).cast(pa.string())

    # Defaults are built only when the column is missing, and without a Python object per row
    # (a list of n labels cost 0.26 s per million rows, on the runner's read path).
    def meta(name: str, typ: pa.DataType, default: Callable[[], pa.Array]) -> pa.Array | pa.ChunkedArray:
        return table.column(name).cast(typ) if name in names else default()

    cols["_om_source"] = meta("_om_source", pa.string(), lambda: pa.repeat(pa.scalar(source_label, pa.string()), n))
    cols["_om_row"] = meta("_om_row", pa.int64(), lambda: _positions(n, start=1))
    cols["_om_order"] = meta("_om_order", pa.string(), lambda: pa.nulls(n, pa.string()))
    cols["_om_hash"] = meta("_om_hash", pa.int64(), lambda: pa.nulls(n, pa.int64()))
    if with_rid:
        cols["_rid"] = _positions(n)
    return pa.table(cols), ignored


def _positions(n: int, start: int = 0) -> pa.Array:
    """``start, start + 1, ...`` as int64, built by numpy (no Python int per row)."""
    return pa.array(np.arange(start, start + n, dtype=np.int64))


def _any(cols: Iterable[str], pred: str = "{} IS NOT NULL") -> str:
    parts = [pred.format(c) for c in cols]
    return "(" + " OR ".join(parts) + ")" if parts else "FALSE"


def _suspect_predicate() -> str:
    """SQL that is true for every row the contract model could reject (a superset)."""
    has_lead, has_company = _any(LEAD_IDS), _any(COMPANY_IDS)
    level = "linkedin_connection_level"
    checks = [
        f"NOT ({has_lead} OR {has_company})",
        f"(NOT {has_lead} AND {_any(s.LEAD_ATTRIBUTES)})",
        f"(NOT {has_company} AND {_any(s.COMPANY_ATTRIBUTES)})",
        f"(workspace_id IS NULL AND {_any(WS_ATTRS)})",
        f"((sender IS NULL) <> ({level} IS NULL))",
        f"({level} IS NOT NULL AND ({level} NOT IN ('1', '2', '3') OR NOT {has_lead}))",
        _any(STRING_FIELDS, "(length({0}) NOT BETWEEN 1 AND " + str(s.MAX_STRING_LENGTH) + ")"),
        f"(tags IS NOT NULL AND list_bool_or(list_transform(tags, lambda x: x IS NULL OR length(x) NOT BETWEEN 1 AND"
        f" {s.MAX_STRING_LENGTH})))",
    ]
    from .contract import _FORMATS  # the very patterns the model uses

    for name, (pattern, _what) in _FORMATS.items():
        flags = "(?i)" if pattern.flags & 2 else ""
        regex = (flags + _re2_unicode_space(pattern.pattern)).replace("'", "''")
        checks.append(f"({name} IS NOT NULL AND NOT regexp_full_match({name}, '{regex}'))")
    return " OR ".join(checks)


# Python's ``\s`` on str also matches Unicode spaces; RE2's only ASCII ones. The SQL copy
# of each pattern spells the Unicode ones out, so the predicate stays a superset.
_UNICODE_SPACE = r"\s\p{Z}\x{1c}-\x{1f}\x{85}"


def _re2_unicode_space(pattern: str) -> str:
    out = pattern.replace("[^@\\s]", f"[^@{_UNICODE_SPACE}]").replace("[^\\s/:@]", f"[^{_UNICODE_SPACE}/:@]")
    out = out.replace("[^/?#\\s]", f"[^/?#{_UNICODE_SPACE}]").replace("\\S", f"[^{_UNICODE_SPACE}]")
    return out


def _union_groups(tuples: Sequence[tuple[Any, ...]]) -> dict[int, int]:
    """Group identifier tuples that share a value and do not conflict on any kind.

    ``tuples`` are ``(tid, v1, v2, ...)`` in a stable order; returns tid → group tid.
    Greedy and deterministic: a tuple joins the earlier groups it shares a value with,
    in identifier priority order, as long as no kind has two different values.
    """
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    width = len(tuples[0]) - 1 if tuples else 0
    owner: list[dict[Any, int]] = [{} for _ in range(width)]
    values: dict[int, list[Any]] = {}
    for tid, *vals in tuples:
        parent[tid] = tid
        merged = list(vals)
        for i, v in enumerate(vals):
            if v is None or v not in owner[i]:
                continue
            g = find(owner[i][v])
            if g == tid:
                continue
            other = values[g]
            if all(a is None or b is None or a == b for a, b in zip(merged, other, strict=True)):
                parent[g] = tid
                merged = [a if a is not None else b for a, b in zip(merged, other, strict=True)]
                del values[g]
        values[tid] = merged
        for i, v in enumerate(merged):
            if v is not None:
                owner[i].setdefault(v, tid)
    return {tid: find(tid) for tid in parent}


class Staging:
    """One staging pass over one batch of canonical rows, bound to an open state connection."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        run_id: str | None = None,
        full_refresh: bool = False,
        retry_rejected: bool = False,
        record: bool = True,
        partition: tuple[int, int] | None = None,
    ) -> None:
        self.con = con
        # (i, n): keep only the leads (and company-only rows) whose key hashes to i of n,
        # so that n workers with n state files split one source between them.
        self.partition = partition
        # Staging tables live in memory; t_out sits in an attached in-memory database
        # rather than TEMP so that a cursor (another connection) can stream it.
        con.execute("ATTACH IF NOT EXISTS ':memory:' AS work")
        # One name per pass: passes of consecutive slices may overlap (see sink.py).
        self.out = f"work.t_out_{uuid.uuid4().hex[:16]}"
        self.run_id = run_id or uuid.uuid4().hex
        self.full_refresh = full_refresh
        self.retry_rejected = retry_rejected
        self.record = record  # False for dry runs: nothing is written to the state
        self.report = StageReport()
        self.present: list[str] = list(s.CANONICAL_FIELDS)
        self.has_order = False
        self._applied: list[int] = []
        # Confirmations are written by one background thread while delivery goes on (see
        # confirm); the lock keeps the main connection to one thread at a time.
        self._flusher: threading.Thread | None = None
        self._flush_error: BaseException | None = None
        self._con_lock = threading.Lock()
        self._streams: list[Generator[tuple[int, bytes], None, None]] = []
        self._issues: list[RowIssue] = []
        self._partial: list[RowIssue] = []
        self._sources: list[str] = []

    # ----------------------------------------------------------------- stage
    def prepare(self, table: pa.Table, source_label: str = "rows") -> None:
        """The half of staging that reads nothing the state's confirmations change.

        Normalizing, validating, grouping the rows into entities and merging each group's
        attributes depend on the slice alone, so the sink runs this for the next slice
        while the current one is delivered (on this pass's own connection: its temp
        tables are private). Matching the groups to known entities and diffing against the
        confirmed values must wait until the previous slice's confirmations are written:
        that is :meth:`resolve`.
        """
        from .identifiers import normalize_table

        conformed, ignored = conform(table, source_label)
        self.report.rows_read += conformed.num_rows
        self.report.ignored_columns = ignored
        result = normalize_table(conformed)
        normalized = result.table
        bad: dict[int, list[RowIssue]] = {}
        sources = normalized.column("_om_source").to_pylist() if result.errors else []
        rownums = normalized.column("_om_row").to_pylist() if result.errors else []
        for e in result.errors:
            bad.setdefault(e.row, []).append(RowIssue(sources[e.row], rownums[e.row], e.column, str(e.value), e.reason))
        con = self.con
        # Only columns that hold a value are materialized; the view ``t_rows`` adds the
        # rest as typed NULL constants, so the SQL below can name every field while
        # DuckDB moves a fraction of the data (exports rarely fill half the fields).
        n = normalized.num_rows
        self._sources = [str(x) for x in pc.unique(normalized.column("_om_source")).to_pylist() if x is not None]
        self.present = [c for c in s.CANONICAL_FIELDS if normalized.column(c).null_count < n]
        self.has_order = normalized.column("_om_order").null_count < n
        missing = [c for c in s.CANONICAL_FIELDS if c not in self.present]
        con.register("t_norm", normalized)
        con.execute("CREATE OR REPLACE TEMP TABLE t_bad (_rid BIGINT)")
        if bad:
            con.execute("INSERT INTO t_bad SELECT unnest(?)", [list(bad)])
        keep = ", ".join(["_rid", *META, *self.present])
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE t_rows_data AS SELECT {keep} FROM t_norm "
            "WHERE _rid NOT IN (SELECT _rid FROM t_bad)"
        )
        nulls = "".join(f", NULL::{'VARCHAR[]' if c == 'tags' else 'VARCHAR'} AS {c}" for c in missing)
        con.execute(f"CREATE OR REPLACE TEMP VIEW t_rows AS SELECT *{nulls} FROM t_rows_data")
        con.unregister("t_norm")
        self._drop_unmatchable()
        self._validate_suspects(bad)
        if self.partition is not None:
            index, count = self.partition
            mine = {rid for rid, issues in bad.items()
                    if zlib.crc32(f"{issues[0].source}:{issues[0].row}".encode()) % count == index}
            bad = {rid: issues for rid, issues in bad.items() if rid in mine}
            self._partial = [i for i in self._partial if zlib.crc32(f"{i.source}:{i.row}".encode()) % count == index]
        self.report.invalid += len(bad)
        for issues in bad.values():
            self._issues.extend(issues)
        self._group()
        self._aggregate()
        self._narrow_rows()

    def resolve(self) -> StageReport:
        """Match the prepared groups to known entities, diff, and build the events (``t_out``).

        Reads the identity index and the confirmed values, so it runs after every earlier
        slice's confirmations are written; the ledger is written here too, so that all of a
        pass's state writes happen in this order.
        """
        self._record_invalid()
        self._resolve(LEAD_IDS, "l")
        self._resolve(COMPANY_IDS, "c")
        self._diff()
        self._drop(*_AGGREGATES)
        self._build_events()
        self._drop("t_lead_ev", "c_changed", "d_lead", "d_comp", "d_lead_ws", "d_comp_ws", "d_conn", "l_groups",
                   "c_groups", "l_entity", "c_entity")
        self.con.execute("CREATE OR REPLACE TEMP TABLE t_confirmed (event_no BIGINT)")
        return self.report

    def _narrow_rows(self) -> None:
        """Once the groups are merged, keep of the slice's rows only what is still read: where
        each came from, its hash and its groups (counts, the ledger, the row hashes).

        The full rows would otherwise stay in DuckDB's memory while the slice waits to be
        resolved and while its events are sent, beside the next slice: memory DuckDB then
        freed by evicting, and the allocator flushes that go with evicting cost page faults.
        """
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE t_rowmeta AS SELECT _om_source, _om_row, _om_hash, lg, cg FROM t_rg")
        con.execute(f"DROP {'TABLE' if self.partition is not None else 'VIEW'} t_rg")  # see _group
        self._drop("t_rows", "t_rows_data", "l_rowgroup", "c_rowgroup", "t_bad")
        con.execute("CREATE TEMP VIEW t_rg AS SELECT * FROM t_rowmeta")

    def _drop_unmatchable(self) -> None:
        """Keep the matchable part of a row whose other part has no identifier.

        A HeyReach event names the lead's company but often not its LinkedIn page, so
        its company attributes cannot be matched to any company. Rejecting the row would
        lose a perfectly good lead; sending the attributes breaks the contract. So those
        attributes are dropped, the rest is sent, and the ledger says what was dropped
        (``origin = 'partial'``), so nothing disappears silently.
        """
        con = self.con
        for label, attrs, own_ids, other_ids in (
            ("company", s.COMPANY_ATTRIBUTES, COMPANY_IDS, LEAD_IDS),
            ("lead", s.LEAD_ATTRIBUTES, LEAD_IDS, COMPANY_IDS),
        ):
            where = f"NOT {_any(own_ids)} AND {_any(other_ids)} AND {_any(attrs)}"
            select = f"SELECT _rid, _om_source, _om_row, {', '.join(attrs)} FROM t_rows WHERE {where}"
            rows = con.execute(select).fetchall()
            if not rows:
                continue
            for _rid, source, rownum, *values in rows:
                present = [(f, v) for f, v in zip(attrs, values, strict=True) if v is not None]
                reason = (f"{label} attributes without a {label} identifier cannot be matched: dropped "
                          f"{', '.join(f for f, _ in present)}; the rest of the row is sent")
                self._partial.append(RowIssue(source, rownum, present[0][0], _short(present[0][1]), reason))
            cleared = ", ".join(f"{a} = NULL" for a in attrs if a in self.present)
            con.execute(f"UPDATE t_rows_data SET {cleared} WHERE _rid IN (SELECT _rid FROM t_rows WHERE {where})")
        self.report.partial += len({(i.source, i.row) for i in self._partial})

    def _validate_suspects(self, bad: dict[int, list[RowIssue]]) -> None:
        con = self.con
        fields = ", ".join(s.CANONICAL_FIELDS)
        suspects = con.execute(
            f"SELECT _rid, _om_source, _om_row, {fields} FROM t_rows WHERE {_suspect_predicate()}"
        ).fetchall()
        dropped = []
        for rid, source, rownum, *values in suspects:
            item = {"event": s.EVENT_NAME}
            item.update({k: v for k, v in zip(s.CANONICAL_FIELDS, values, strict=True) if v is not None})
            _event, errors = validate_item(item)
            if not errors:
                continue
            dropped.append(rid)
            for err in errors:
                column = str(err["loc"][0]) if err["loc"] else ""
                value = item.get(column, "") if column else ""
                reason = err["msg"]
                bad.setdefault(rid, []).append(RowIssue(source, rownum, column, _short(value), reason))
        if dropped:
            con.execute("DELETE FROM t_rows_data WHERE _rid IN (SELECT unnest(?))", [dropped])

    def _record_invalid(self) -> None:
        """Write this slice's held-back rows to the ledger, replacing what earlier runs said.

        Invalid rows are staged (and recorded) again on every run until fixed, so an
        earlier run's ``invalid`` entries for the same sources are removed first: the
        ledger says what is wrong *now*, once. ``partial`` rows are confirmed and not
        staged again, so they are recorded once and kept.
        """
        issues = [("invalid", i) for i in self._issues] + [("partial", i) for i in self._partial]
        self._issues.clear()
        self._partial.clear()
        if not self.record:
            return
        if self._sources:
            self.con.execute(
                "DELETE FROM rejected WHERE origin = 'invalid' AND run_id <> ? AND source IN (SELECT unnest(?))",
                [self.run_id, self._sources],
            )
        if not issues:
            return
        rows = [(self.run_id, origin, i.source, i.row, i.column, _short(i.value), i.reason) for origin, i in issues]
        self.con.executemany(
            "INSERT INTO rejected SELECT ?, ?, ?, ?, ?, ?, ?, NULL, now() WHERE NOT EXISTS (SELECT 1 FROM rejected "
            "WHERE origin = 'partial' AND $2 = 'partial' AND source = $3 AND row = $4 AND reason = $7)",
            rows,
        )
        self._issues.clear()

    # ------------------------------------------------------------- grouping
    def _cluster(self, id_cols: tuple[str, ...], prefix: str) -> None:
        """Assign ``{prefix}g`` (group) to every row that has one of ``id_cols``."""
        con = self.con
        cols = ", ".join(id_cols)
        con.execute(
            # A tuple's id is its first row: unique (a row has one tuple) and in row order,
            # with no sorting window to number the tuples.
            f"CREATE OR REPLACE TEMP TABLE {prefix}_tuples AS SELECT first_rid AS tid, * "
            f"FROM (SELECT {cols}, min(_rid) AS first_rid FROM t_rows WHERE {_any(id_cols)} GROUP BY ALL)"
        )
        shared = " UNION ".join(
            f"SELECT tid FROM {prefix}_tuples WHERE {c} IN "
            f"(SELECT {c} FROM {prefix}_tuples WHERE {c} IS NOT NULL GROUP BY 1 HAVING count(*) > 1)"
            for c in id_cols
        )
        linked = con.execute(f"SELECT tid, {cols} FROM {prefix}_tuples WHERE tid IN ({shared}) ORDER BY tid").fetchall()
        mapping = _union_groups(linked)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}_map (tid BIGINT, gid BIGINT)")
        if mapping:
            con.register("t_map", pa.table({"tid": list(mapping), "gid": list(mapping.values())}))
            con.execute(f"INSERT INTO {prefix}_map SELECT * FROM t_map")
            con.unregister("t_map")
        join = " AND ".join(f"r.{c} IS NOT DISTINCT FROM t.{c}" for c in id_cols)
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_rowgroup AS SELECT r._rid, coalesce(m.gid, t.tid) AS g "
            f"FROM t_rows r JOIN {prefix}_tuples t ON {join} LEFT JOIN {prefix}_map m ON m.tid = t.tid"
        )
        # The group's identifiers: no conflicts inside a group, so max() is the one value per kind.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_groups AS SELECT g, "
            + ", ".join(f"max({c}) AS {c}" for c in id_cols)
            + f" FROM {prefix}_tuples t LEFT JOIN {prefix}_map m ON m.tid = t.tid, "
            f"LATERAL (SELECT coalesce(m.gid, t.tid) AS g) GROUP BY g"
        )

    def _resolve(self, id_cols: tuple[str, ...], prefix: str) -> None:
        """Give every group of ``{prefix}_groups`` its entity: a known one by the identity
        index, in matching priority, else a new one (``{prefix}_entity``)."""
        con = self.con
        entity_type = "lead" if prefix == "l" else "company"
        unpivot = " UNION ALL ".join(
            f"SELECT g, '{c}' AS kind, {c} AS value, {i} AS prio FROM {prefix}_groups WHERE {c} IS NOT NULL"
            for i, c in enumerate(id_cols)
        )
        # One scan of the identity index per side: every identifier with the entity it is
        # known as (NULL: not known yet). Three joins against it (hit, new_ids, new
        # identifiers) read the whole index three times (1M-row sync: 9.5 -> 6.7 s in _group).
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_ids AS WITH ids AS ({unpivot}) "
            f"SELECT ids.g, ids.kind, ids.value, ids.prio, i.entity_id FROM ids LEFT JOIN identity i "
            f"ON i.entity_type = '{entity_type}' AND i.kind = ids.kind AND i.value = ids.value"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_entity AS "
            f"WITH hit AS (SELECT g, arg_min(entity_id, prio) FILTER (WHERE entity_id IS NOT NULL) AS e, "
            f"bool_or(entity_id IS NULL) AS new_ids FROM {prefix}_ids GROUP BY g) "
            f"SELECT grp.g, coalesce(hit.e, nextval('entity_seq')) AS e, hit.e IS NULL AS is_new, "
            f"coalesce(hit.new_ids, TRUE) AS new_ids "
            f"FROM {prefix}_groups grp LEFT JOIN hit USING (g)"
        )
        # Identifiers the state does not know yet, each owned by one group (the first),
        # written to ``identity`` when an event of that group is confirmed.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_newids AS SELECT n.g, n.kind, n.value, en.e "
            f"FROM (SELECT min(g) AS g, kind, value FROM {prefix}_ids WHERE entity_id IS NULL "
            f"GROUP BY kind, value) n JOIN {prefix}_entity en USING (g)"
        )
        con.execute(f"DROP TABLE {prefix}_ids")

    def _group(self) -> None:
        self._cluster(LEAD_IDS, "l")
        self._cluster(COMPANY_IDS, "c")
        # "Latest" is the order column, then the row position; a plain integer when the
        # source has no order column (comparing structs costs several times more).
        ordering = "(coalesce(r._om_order, ''), r._rid)" if self.has_order else "r._rid"
        # A view when nothing deletes from it: copying every column costs more than the
        # joins it saves. A partition deletes the other partitions' rows, so it copies.
        kind = "TABLE" if self.partition is not None else "VIEW"
        self.con.execute("DROP VIEW IF EXISTS t_rg")
        self.con.execute("DROP TABLE IF EXISTS t_rg")
        self.con.execute(
            f"CREATE TEMP {kind} t_rg AS SELECT r.*, lg.g AS lg, cg.g AS cg, "
            f"{ordering} AS _ord "
            "FROM t_rows r LEFT JOIN l_rowgroup lg USING (_rid) LEFT JOIN c_rowgroup cg USING (_rid)"
        )
        if self.partition is not None:
            self._keep_partition(*self.partition)
        # Staging tables are dropped as soon as they are no longer read: memory is the
        # limit on large slices, not time.
        self._drop("l_tuples", "l_map", "c_tuples", "c_map")
        if self.partition is not None:
            self._drop("t_rows", "t_rows_data", "l_rowgroup", "c_rowgroup")

    def _drop(self, *names: str) -> None:
        for name in names:
            kind = "VIEW" if name == "t_rows" else "TABLE"
            self.con.execute(f"DROP {kind} IF EXISTS {name}")

    def _keep_partition(self, index: int, count: int) -> None:
        """Drop the groups another partition owns.

        A lead's partition is the hash of its group's first identifier in the order email,
        LinkedIn URL, Sales Navigator URL, LinkedIn id, unified id (the email first because
        it is the one most exports have); a company-only row's, of its company's domain,
        LinkedIn URL or unified id. Every partition groups *all* rows first, so rows of one
        lead always land together. A lead that later gains a higher-ranked identifier may
        move to another partition: that partition then sends it once more (harmless).
        """
        con = self.con
        lead_key = (
            "coalesce(lead_email, lead_linkedin_url, lead_sales_navigator_url, lead_linkedin_id, unified_lead_id)"
        )
        comp_key = "coalesce(company_domain, company_linkedin_url, unified_company_id)"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE t_part AS "
            f"SELECT 'l' AS side, g, hash({lead_key}) % {count} = {index} AS mine FROM l_groups "
            f"UNION ALL SELECT 'c', g, hash({comp_key}) % {count} = {index} FROM c_groups"
        )
        con.execute(
            "DELETE FROM t_rg WHERE CASE WHEN lg IS NOT NULL "
            "THEN lg NOT IN (SELECT g FROM t_part WHERE side = 'l' AND mine) "
            "ELSE cg NOT IN (SELECT g FROM t_part WHERE side = 'c' AND mine) END"
        )
        con.execute("DELETE FROM l_groups WHERE g NOT IN (SELECT lg FROM t_rg WHERE lg IS NOT NULL)")

    # ---------------------------------------------------------- merge, diff
    def _aggregate(self) -> None:
        """Merge each group's rows: per attribute the latest value (``m_*`` tables).

        Depends on the slice alone (part of :meth:`prepare`); :meth:`_diff` joins the
        result to the entities and their confirmed values.
        """
        con = self.con
        present = set(self.present)

        # Fields no row has are NULL constants rather than per-row aggregates.
        def latest(cols: Iterable[str]) -> str:
            return ", ".join(
                f"arg_max({c}, _ord) FILTER (WHERE {c} IS NOT NULL) AS {c}" if c in present else f"{_null(c)} AS {c}"
                for c in cols
            )

        # Leads: attributes, platform, and the company they were last named with.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE m_lead AS SELECT lg AS g, {latest(s.LEAD_ATTRIBUTES)}, "
            f"arg_max(platform, _ord) FILTER (WHERE platform IS NOT NULL) AS platform, "
            f"arg_max(cg, _ord) FILTER (WHERE cg IS NOT NULL) AS cg, count(*) AS n "
            f"FROM t_rg WHERE lg IS NOT NULL GROUP BY lg"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE m_comp AS SELECT cg AS g, {latest(s.COMPANY_ATTRIBUTES)}, "
            f"arg_max(platform, _ord) FILTER (WHERE platform IS NOT NULL) AS platform, count(*) AS n, "
            f"bool_and(lg IS NULL) AS alone FROM t_rg WHERE cg IS NOT NULL GROUP BY cg"
        )
        # Workspace attributes per (lead, workspace), or (company, workspace) for rows without a lead.
        for scope, key, where in (("lead", "lg", "lg IS NOT NULL"), ("comp", "cg", "lg IS NULL AND cg IS NOT NULL")):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE m_{scope}_ws AS SELECT {key} AS g, workspace_id, "
                f"{latest(WS_ATTRS)} FROM t_rg WHERE {where} AND workspace_id IS NOT NULL "
                f"GROUP BY {key}, workspace_id"
            )
        con.execute(
            "CREATE OR REPLACE TEMP TABLE m_conn AS SELECT lg AS g, sender, "
            "arg_max(linkedin_connection_level, _ord) AS linkedin_connection_level FROM t_rg "
            "WHERE lg IS NOT NULL AND sender IS NOT NULL GROUP BY lg, sender"
        )

    def _diff(self) -> None:
        """Compare the merged groups (``m_*``) with what the API confirmed (``d_*``)."""
        con = self.con
        refresh = "TRUE" if self.full_refresh else "FALSE"
        present = set(self.present)

        def changed(cols: Iterable[str], state: str = "st") -> str:
            return ", ".join(
                f"CASE WHEN {refresh} OR m.{c} IS DISTINCT FROM {state}.{c} THEN m.{c} END AS {c}"
                if c in present else f"{_null(c)} AS {c}"
                for c in cols
            )

        def any_changed(cols: Iterable[str]) -> str:
            return _any(cols) if cols else "FALSE"

        con.execute(
            f"CREATE OR REPLACE TEMP TABLE d_lead AS SELECT m.g, le.e, le.new_ids, le.is_new AS le_new, m.platform, "
            f"m.cg, ce.e AS ce, ce.is_new AS ce_new, "
            f"{changed(s.LEAD_ATTRIBUTES)}, "
            f"({refresh} OR ce.e IS DISTINCT FROM st.company_entity_id AND ce.e IS NOT NULL) AS link_changed "
            f"FROM m_lead m JOIN l_entity le ON le.g = m.g LEFT JOIN c_entity ce ON ce.g = m.cg "
            f"LEFT JOIN lead_state st ON st.entity_id = le.e"
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE d_comp AS SELECT m.g, ce.e, ce.new_ids, ce.is_new, m.platform, m.alone, "
            f"{changed(s.COMPANY_ATTRIBUTES)} FROM m_comp m JOIN c_entity ce ON ce.g = m.g "
            f"LEFT JOIN company_state st ON st.entity_id = ce.e"
        )
        for scope, ent, state in (("lead", "l_entity", "lead_ws_state"), ("comp", "c_entity", "company_ws_state")):
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE d_{scope}_ws AS "
                f"SELECT m.g, m.workspace_id, {changed(WS_ATTRS)} FROM m_{scope}_ws m JOIN {ent} en ON en.g = m.g "
                f"LEFT JOIN {state} st ON st.entity_id = en.e AND st.workspace_id = m.workspace_id"
            )
            con.execute(f"DELETE FROM d_{scope}_ws WHERE NOT {any_changed(WS_ATTRS)}")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE d_conn AS "
            f"SELECT m.g, m.sender, m.linkedin_connection_level FROM m_conn m JOIN l_entity en ON en.g = m.g "
            f"LEFT JOIN conn_state st ON st.entity_id = en.e AND st.sender = m.sender "
            f"WHERE {refresh} OR m.linkedin_connection_level IS DISTINCT FROM st.linkedin_connection_level"
        )

    # -------------------------------------------------------------- events
    def _build_events(self) -> None:
        """Assemble every outgoing event as one row of ``t_out`` (fields + bookkeeping)."""
        con = self.con
        lead_attrs = ", ".join(f"d.{c}" for c in s.LEAD_ATTRIBUTES)
        comp_attrs_named = ", ".join(f"CASE WHEN t.cfirst THEN dc.{c} END AS {c}" for c in s.COMPANY_ATTRIBUTES)
        ws_cols = ", ".join(f"w.{c}" for c in WS_ATTRS)
        lid = ", ".join(f"lgr.{c}" for c in LEAD_IDS)
        cid = ", ".join(f"cgr.{c}" for c in COMPANY_IDS)
        present = set(self.present)
        refresh = "TRUE" if self.full_refresh else "FALSE"
        lead_changed = _any([f"d.{c}" for c in s.LEAD_ATTRIBUTES if c in present])
        null_ws = ", ".join(f"NULL::{'VARCHAR[]' if c == 'tags' else 'VARCHAR'}" for c in WS_ATTRS)
        comp_changed = _any([f"{c}" for c in s.COMPANY_ATTRIBUTES if c in present])
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE c_changed AS "
            f"SELECT g, e, ({comp_changed} OR new_ids OR {refresh}) AS changed FROM d_comp"
        )
        # Base lead events: leads with any change, or whose first workspace/connection changed.
        con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE t_lead_ev AS
            WITH ws AS (SELECT *, row_number() OVER (PARTITION BY g ORDER BY workspace_id) AS k FROM d_lead_ws),
                 cn AS (SELECT *, row_number() OVER (PARTITION BY g ORDER BY sender) AS k FROM d_conn),
                 base AS (
                    SELECT d.*, w.workspace_id, {ws_cols}, c.sender, c.linkedin_connection_level,
                           cc.changed AS comp_changed, cc.e AS comp_e,
                           ({lead_changed} OR d.new_ids OR d.link_changed OR coalesce(cc.changed, FALSE)
                            OR w.g IS NOT NULL OR c.g IS NOT NULL) AS needed
                    FROM d_lead d
                    LEFT JOIN ws w ON w.g = d.g AND w.k = 1
                    LEFT JOIN cn c ON c.g = d.g AND c.k = 1
                    LEFT JOIN c_changed cc ON cc.g = d.cg),
                 -- The first lead (lowest group) naming each company carries its attributes.
                 -- An aggregate and a join, not row_number() over (cg): that window sorted
                 -- every slice (80 of the statement's 130 ms on 50,000 leads).
                 firsts AS (SELECT cg, min(g) AS first_g FROM base WHERE needed AND cg IS NOT NULL GROUP BY cg)
            -- Only what d_lead does not hold: the events table joins d_lead for the rest
            -- (copying the lead's attributes into this table as well cost more than the join).
            SELECT b.g, b.cg, b.workspace_id, {", ".join(f"b.{c}" for c in WS_ATTRS)}, b.sender,
                   b.linkedin_connection_level, coalesce(b.comp_changed AND b.g = f.first_g, FALSE) AS cfirst
            FROM base b LEFT JOIN firsts f ON f.cg = b.cg WHERE b.needed
            """
        )
        # The events table keeps the bookkeeping and the fields this slice fills: the others
        # are NULL in every event, and every reader (JSON, confirmations) knows ``present``.
        kept = [*_OK_BOOKKEEPING[1:], *(c for c in s.CANONICAL_FIELDS if c in present)]
        con.execute(
            f"""
            CREATE OR REPLACE TABLE {self.out} AS
            WITH lead_ev AS (
                SELECT 1 AS part, d.g AS lg, d.e AS le, d.le_new, d.cg, d.ce, d.ce_new, d.platform, {lid},
                       {lead_attrs},
                       {cid}, {comp_attrs_named}, t.workspace_id, {", ".join(f"t.{c}" for c in WS_ATTRS)},
                       t.sender, t.linkedin_connection_level, TRUE AS carries_lead, t.cfirst AS carries_company
                FROM t_lead_ev t JOIN d_lead d ON d.g = t.g JOIN l_groups lgr ON lgr.g = t.g
                LEFT JOIN c_groups cgr ON cgr.g = d.cg LEFT JOIN d_comp dc ON dc.g = d.cg),
            extra_ws AS (
                SELECT 2 AS part, w.g AS lg, le.e AS le, le.is_new AS le_new, NULL::BIGINT AS cg,
                       NULL::BIGINT AS ce, NULL::BOOLEAN AS ce_new, dl.platform, {lid},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in s.LEAD_ATTRIBUTES)},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in COMPANY_IDS)},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in s.COMPANY_ATTRIBUTES)},
                       w.workspace_id, {ws_cols}, NULL::VARCHAR AS sender, NULL::VARCHAR AS linkedin_connection_level,
                       FALSE AS carries_lead, FALSE AS carries_company
                FROM (SELECT *, row_number() OVER (PARTITION BY g ORDER BY workspace_id) AS k FROM d_lead_ws) w
                JOIN l_groups lgr ON lgr.g = w.g JOIN l_entity le ON le.g = w.g JOIN d_lead dl ON dl.g = w.g
                WHERE w.k > 1),
            extra_conn AS (
                SELECT 3 AS part, c.g AS lg, le.e AS le, le.is_new AS le_new, NULL::BIGINT AS cg,
                       NULL::BIGINT AS ce, NULL::BOOLEAN AS ce_new, dl.platform, {lid},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in s.LEAD_ATTRIBUTES)},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in COMPANY_IDS)},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in s.COMPANY_ATTRIBUTES)},
                       NULL::VARCHAR AS workspace_id, {null_ws},
                       c.sender, c.linkedin_connection_level, FALSE AS carries_lead, FALSE AS carries_company
                FROM (SELECT *, row_number() OVER (PARTITION BY g ORDER BY sender) AS k FROM d_conn) c
                JOIN l_groups lgr ON lgr.g = c.g JOIN l_entity le ON le.g = c.g JOIN d_lead dl ON dl.g = c.g
                WHERE c.k > 1),
            comp_ev AS (
                SELECT 4 AS part, NULL::BIGINT AS lg, NULL::BIGINT AS le, NULL::BOOLEAN AS le_new, dc.g AS cg,
                       dc.e AS ce, dc.is_new AS ce_new, dc.platform,
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in LEAD_IDS)},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in s.LEAD_ATTRIBUTES)},
                       {cid}, {", ".join(f"dc.{c}" for c in s.COMPANY_ATTRIBUTES)},
                       w.workspace_id, {ws_cols}, NULL::VARCHAR AS sender, NULL::VARCHAR AS linkedin_connection_level,
                       FALSE AS carries_lead, TRUE AS carries_company
                FROM d_comp dc JOIN c_groups cgr ON cgr.g = dc.g JOIN c_changed cc ON cc.g = dc.g
                LEFT JOIN (SELECT *, row_number() OVER (PARTITION BY g ORDER BY workspace_id) AS k FROM d_comp_ws) w
                  ON w.g = dc.g AND w.k = 1
                WHERE (cc.changed OR w.g IS NOT NULL)
                  AND dc.g NOT IN (SELECT cg FROM t_lead_ev WHERE cfirst)),
            comp_extra_ws AS (
                SELECT 5 AS part, NULL::BIGINT AS lg, NULL::BIGINT AS le, NULL::BOOLEAN AS le_new, w.g AS cg,
                       ce.e AS ce, ce.is_new AS ce_new, dc.platform,
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in LEAD_IDS)},
                       {", ".join(f"NULL::VARCHAR AS {c}" for c in s.LEAD_ATTRIBUTES)},
                       {cid}, {", ".join(f"NULL::VARCHAR AS {c}" for c in s.COMPANY_ATTRIBUTES)},
                       w.workspace_id, {ws_cols}, NULL::VARCHAR AS sender, NULL::VARCHAR AS linkedin_connection_level,
                       FALSE AS carries_lead, FALSE AS carries_company
                FROM (SELECT *, row_number() OVER (PARTITION BY g ORDER BY workspace_id) AS k FROM d_comp_ws) w
                JOIN c_groups cgr ON cgr.g = w.g JOIN c_entity ce ON ce.g = w.g JOIN d_comp dc ON dc.g = w.g
                WHERE w.k > 1),
            alle AS (
                SELECT * FROM lead_ev UNION ALL BY NAME SELECT * FROM extra_ws
                UNION ALL BY NAME SELECT * FROM extra_conn
                UNION ALL BY NAME SELECT * FROM comp_ev UNION ALL BY NAME SELECT * FROM comp_extra_ws),
            SELECT row_number() OVER () AS event_no, {", ".join(kept)} FROM alle
            """
        )
        # Events the API rejected before, unchanged since: held back unless asked to retry.
        if not self.retry_rejected and not self.full_refresh and _scalar(con, "SELECT count(*) FROM rejected_events"):
            skipped = _scalar(
                con,
                f"DELETE FROM {self.out} WHERE {self._hash_sql()} IN (SELECT content_hash FROM rejected_events)",
            )
            self.report.skipped_rejected += int(skipped or 0)
        self.report.events += int(_scalar(con, f"SELECT count(*) FROM {self.out}") or 0)
        stats = con.execute(
            "SELECT (SELECT count(*) FROM t_rg), "
            "(SELECT count(*) FROM l_groups) + (SELECT count(*) FROM c_groups WHERE g IN "
            " (SELECT cg FROM t_rg WHERE lg IS NULL)), "
            f"(SELECT count(*) FROM l_groups WHERE g NOT IN (SELECT lg FROM {self.out} WHERE lg IS NOT NULL)) + "
            f"(SELECT count(*) FROM d_comp WHERE alone AND g NOT IN (SELECT cg FROM {self.out} WHERE cg IS NOT NULL))"
        ).fetchall()[0]
        valid_rows, entities, unchanged = (int(x) for x in stats)
        self.report.merged += max(valid_rows - entities, 0)
        self.report.unchanged += unchanged

    def _json_sql(self) -> str:
        """SQL for an event's wire JSON, from its row of the events table.

        Written by DuckDB (20x faster than dicts + orjson here): empty fields are left out,
        values escaped by to_json. Not stored: it is computed while the events stream out,
        by a thread beside the delivery (see :meth:`events`), and for the odd row that needs
        its content hash.
        """
        # concat_ws skips NULL arguments, and '"name":' || to_json(NULL) is NULL: an empty
        # field drops out without a CASE per field (a quarter of the JSON's cost). The text is
        # byte for byte what the CASE form wrote, so stored content hashes stay valid.
        parts = "".join(f", '\"{c}\":' || to_json({c})" for c in self.present)  # canonical order
        return f"'{{' || concat_ws(',', '\"event\":\"{s.EVENT_NAME}\"'{parts}) || '}}'"

    def _hash_sql(self) -> str:
        """An event's content hash (names an API-rejected event in ``rejected_events``)."""
        return f"hash({self._json_sql()})"

    # ---------------------------------------------------------- delivery I/O
    def events(self, chunk_rows: int = 10_000) -> Iterator[tuple[int, bytes]]:
        """Yield ``(event_no, JSON bytes)`` for every event, streaming.

        A cursor (its own connection to the same database) streams the pass's events table, so the
        delivery callbacks can write confirmations through the main connection meanwhile.
        :meth:`close` closes the stream too: after a delivery that raised, the traceback keeps
        the generator alive, and its Arrow reader would keep the database file open (another
        connection to it with other settings then fails) until the garbage collector ran.
        """
        stream = self._stream_events(chunk_rows)
        self._streams.append(stream)
        return stream

    def _stream_events(self, chunk_rows: int) -> Generator[tuple[int, bytes], None, None]:
        """The events, written to JSON by DuckDB in a thread of their own (:func:`read_ahead`).

        The thread runs the query and converts each chunk to Python while the caller's
        thread (the delivery loop) sends the previous ones: DuckDB releases the GIL while it
        builds JSON, so that work overlaps the network instead of stalling the loop. At most
        two chunks wait; closing the stream stops the thread.
        """
        with self._con_lock:
            cur = self.con.cursor()
        sql = f"SELECT event_no, encode({self._json_sql()}) AS json FROM {self.out}"

        def chunks() -> Iterator[tuple[list[int], list[bytes]]]:
            try:
                for batch in cur.sql(sql).to_arrow_reader(chunk_rows):
                    yield batch.column(0).to_pylist(), batch.column(1).to_pylist()
            finally:
                cur.close()

        for numbers, data in read_ahead(chunks(), depth=2, name="outreach-magic-events"):
            yield from zip(numbers, data, strict=True)

    def samples(self, n: int = 3) -> list[dict[str, Any]]:
        """A few outgoing events, for ``--dry-run``."""
        out = []
        for _no, data in self.events():
            out.append(orjson.loads(data))
            if len(out) >= n:
                break
        return out

    def confirm(self, applied: Iterable[int]) -> None:
        """Buffer event numbers the API confirmed; flushed to the state in batches.

        A full buffer is written by a background thread, so the delivery loop (which calls
        this) keeps sending meanwhile: a flush takes a few hundred ms, during which a
        blocking write used to leave every connection idle (measured: 10% of the delivery
        time with 50 ms API latency). One flush at a time: a second full buffer waits for
        the first, so memory stays bounded. Nothing changes in what the state claims: only
        confirmed events are written, and a crash loses at most the unwritten buffers,
        whose events are sent again next run.
        """
        self._applied.extend(applied)
        if len(self._applied) >= FLUSH_ITEMS:
            self._join_flusher()
            batch, self._applied = self._applied, []
            self._flusher = threading.Thread(
                target=self._flush_in_background, args=(batch,), name="outreach-magic-flush", daemon=True
            )
            self._flusher.start()

    def _flush_in_background(self, batch: list[int]) -> None:
        try:
            self._write_applied(batch)
        except BaseException as exc:  # raised in the caller's thread by the next join
            self._flush_error = exc

    def _join_flusher(self) -> None:
        """Wait for the background flush, and raise what it failed with."""
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        if self._flush_error is not None:
            exc, self._flush_error = self._flush_error, None
            raise exc

    def reject(self, event_no: int, errors: Sequence[dict[str, Any]]) -> None:
        """Record an API rejection against every source row of the event, with the server's message."""
        self.report.rejected += 1
        if not self.record:
            return
        reason = "; ".join(str(e.get("msg", e)) for e in errors) or "rejected by the API"
        column = next((str(e["loc"][0]) for e in errors if e.get("loc")), "")
        with self._con_lock:
            self.con.execute(
                "INSERT INTO rejected SELECT ?, 'api', r._om_source, r._om_row, ?, NULL, ?, r._om_hash, now() "
                f"FROM {self.out} o JOIN t_rg r ON (o.lg IS NOT NULL AND r.lg = o.lg) "
                "OR (o.lg IS NULL AND r.cg = o.cg AND r.lg IS NULL) WHERE o.event_no = ?",
                [self.run_id, column, reason, event_no],
            )
            self.con.execute(
                f"INSERT OR REPLACE INTO rejected_events SELECT {self._hash_sql()}, ?, ? FROM {self.out} "
                "WHERE event_no = ?",
                [self.run_id, reason, event_no],
            )

    def flush(self, *, final: bool = False) -> None:
        """Write every buffered confirmation to the state, after any background flush
        (``final``: and the row hashes, see :meth:`finish`)."""
        self._join_flusher()
        applied, self._applied = self._applied, []
        if applied or final:
            self._write_applied(applied, final=final)

    def _write_applied(self, applied: list[int], *, final: bool = False) -> None:
        """Write these confirmations to the state, in one transaction."""
        with self._con_lock:
            self.report.applied += len(applied)
            if self.record:
                self._write_transaction(applied, final=final)

    def _write_transaction(self, applied: list[int], *, final: bool = False) -> None:
        """Write confirmations; ``final`` (the pass's last write) also records the row hashes,
        in the same transaction (one commit a slice fewer)."""
        con = self.con
        con.execute("BEGIN")
        try:
            if applied:
                con.register("t_ok_arrow", pa.table({"event_no": pa.array(applied, pa.int64())}))
                # Only the columns the state takes and this slice fills are copied; the view adds
                # the rest as NULL constants (a copy of every column took 76 ms a flush).
                present = set(self.present)
                copied = ", ".join([*_OK_BOOKKEEPING, *(c for c in _STATE_FIELDS if c in present)])
                nulls = "".join(f", {_null(c)} AS {c}" for c in _STATE_FIELDS if c not in present)
                con.execute(
                    f"CREATE OR REPLACE TEMP TABLE t_ok_data AS SELECT {copied} FROM {self.out} o "
                    "SEMI JOIN t_ok_arrow USING (event_no)"
                )
                con.execute(f"CREATE OR REPLACE TEMP VIEW t_ok AS SELECT *{nulls} FROM t_ok_data")
                con.unregister("t_ok_arrow")
                self._write_confirmed()
                con.execute("INSERT INTO t_confirmed SELECT event_no FROM t_ok")
            if final:
                self._remember_rows()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _write_confirmed(self) -> None:
        """Merge the values of the confirmed events (``t_ok``) into the state tables.

        State tables have no primary keys: DuckDB's index upserts cost several times an
        append here, so new identifiers come from the per-pass list of identifiers the
        state did not have (``l_newids``/``c_newids``, each value owned by one group), and
        attributes are merged with one UPDATE of known keys plus one INSERT of new ones.
        """
        con = self.con
        for prefix, entity_type, group in (("l", "lead", "lg"), ("c", "company", "cg")):
            done = f"SELECT {group} FROM t_ok WHERE {group} IS NOT NULL"
            con.execute(
                f"INSERT INTO identity SELECT '{entity_type}', kind, value, e, now() FROM {prefix}_newids "
                f"WHERE g IN ({done})"
            )
            con.execute(f"DELETE FROM {prefix}_newids WHERE g IN ({done})")

        def merge(table: str, keys: Sequence[tuple[str, str]], cols: Sequence[tuple[str, str]], where: str,
                  new: str) -> None:
            """keys/cols: (state column, t_ok expression); the last confirmed event per key wins.

            ``new`` is true for events of an entity this pass created: the state has no row
            of it, and no other event of this pass writes the same key (each new entity is
            one group's, and a group has one event per key), so those rows are appended as
            they are, without the window that picks the latest event per key (half of a
            first sync's lead_state write: 41 -> 22 ms a slice). Only the others are
            matched against the state table (an UPDATE and an anti-join that read the whole
            table: most of a flush's time on a first sync, when every entity is new).
            """
            key_sel = ", ".join(f"{expr} AS {col}" for col, expr in keys)
            col_sel = ", ".join(f"{expr} AS {col}" for col, expr in cols)
            part = ", ".join(col for col, _ in keys)
            names = ", ".join([*(c for c, _ in keys), *(c for c, _ in cols)])

            def src(which: str, *, latest: bool = True) -> str:
                last = f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY event_no DESC) = 1" if latest else ""
                return f"(SELECT {key_sel}, {col_sel} FROM t_ok WHERE {where} AND {which} {last})"

            con.execute(
                f"INSERT INTO {table} ({names}, confirmed_at) SELECT {names}, now() FROM {src(new, latest=False)} o"
            )
            known = f"NOT {new}"
            if not _scalar(con, f"SELECT count(*) FROM t_ok WHERE {where} AND {known}"):
                return
            match = " AND ".join(f"{table}.{col} = o.{col}" for col, _ in keys)
            sets = ", ".join(f"{col} = coalesce(o.{col}, {table}.{col})" for col, _ in cols)
            con.execute(f"UPDATE {table} SET {sets}, confirmed_at = now() FROM {src(known)} o WHERE {match}")
            anti = " AND ".join(f"st.{col} = o.{col}" for col, _ in keys)
            con.execute(
                f"INSERT INTO {table} ({names}, confirmed_at) SELECT {names}, now() FROM {src(known)} o "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} st WHERE {anti})"
            )

        same = lambda cols: [(c, c) for c in cols]  # noqa: E731
        lead_new, comp_new = "coalesce(le_new, FALSE)", "coalesce(ce_new, FALSE)"
        merge("lead_state", [("entity_id", "le")], [*same(s.LEAD_ATTRIBUTES), ("company_entity_id", "ce")],
              "carries_lead", lead_new)
        merge("company_state", [("entity_id", "ce")], same(s.COMPANY_ATTRIBUTES), "carries_company", comp_new)
        # A slice without workspaces or senders has no event for those tables: their
        # statements are skipped rather than run on nothing (three flushes a slice add up).
        if "workspace_id" in self.present:
            merge("lead_ws_state", [("entity_id", "le"), ("workspace_id", "workspace_id")], same(WS_ATTRS),
                  "le IS NOT NULL AND workspace_id IS NOT NULL", lead_new)
            merge("company_ws_state", [("entity_id", "ce"), ("workspace_id", "workspace_id")], same(WS_ATTRS),
                  "le IS NULL AND workspace_id IS NOT NULL", comp_new)
        if "sender" in self.present:
            merge("conn_state", [("entity_id", "le"), ("sender", "sender")], same(["linkedin_connection_level"]),
                  "sender IS NOT NULL", lead_new)

    def close(self) -> None:
        """Drop this pass's events table and close the connection (idempotent)."""
        with contextlib.suppress(BaseException):
            self._join_flusher()  # its failure, if any, was raised by flush() already
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.close()
        self._streams.clear()
        with contextlib.suppress(Exception):
            self.con.execute(f"DROP TABLE IF EXISTS {self.out}")
        with contextlib.suppress(Exception):
            self.con.close()

    def finish(self, failed: int = 0) -> StageReport:
        """Write the last confirmations and remember the hashes of rows whose every event was
        confirmed, in one transaction (after any background flush).

        A row whose lead or company still has an unconfirmed event (failed, rejected,
        crashed before confirmation) keeps no hash, so the next run stages it again.
        """
        self.report.failed += failed
        self.flush(final=True)
        return self.report

    def _remember_rows(self) -> None:
        self.con.execute(
            "INSERT INTO row_hashes "
            f"WITH un AS (SELECT lg, cg FROM {self.out} ANTI JOIN t_confirmed USING (event_no)) "
            "SELECT DISTINCT r._om_hash FROM t_rg r WHERE r._om_hash IS NOT NULL "
            "AND (r.lg IS NULL OR r.lg NOT IN (SELECT lg FROM un WHERE lg IS NOT NULL)) "
            "AND (r.cg IS NULL OR r.cg NOT IN (SELECT cg FROM un WHERE cg IS NOT NULL)) "
            "AND NOT EXISTS (SELECT 1 FROM row_hashes h WHERE h.hash = r._om_hash)"
        )


# The merged groups :meth:`Staging.prepare` leaves for :meth:`Staging.resolve`.
_AGGREGATES = ("m_lead", "m_comp", "m_lead_ws", "m_comp_ws", "m_conn")
# Columns of the events table that confirmation writes read besides the fields.
_OK_BOOKKEEPING = ("event_no", "lg", "cg", "le", "ce", "le_new", "ce_new", "carries_lead", "carries_company")
# The fields the state tables take from confirmed events.
_STATE_FIELDS = (*s.LEAD_ATTRIBUTES, *s.COMPANY_ATTRIBUTES, *WS_ATTRS, "workspace_id", "sender",
                 "linkedin_connection_level")


def _null(field: str) -> str:
    return "NULL::VARCHAR[]" if field == "tags" else "NULL::VARCHAR"


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    """First value of a statement's result, consuming it whole (DuckDB 2 keeps partial results open)."""
    rows = con.execute(sql).fetchall()
    return rows[0][0] if rows else None


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode() if value is not None else ""
    return text if len(text) <= MAX_LEDGER_VALUE else text[: MAX_LEDGER_VALUE - 1] + "…"


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]

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

import collections
import contextlib
import itertools
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar, cast

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from destinations.outreach_magic.arrow_literals import as_numpy, literal, numeric_array, positions

from . import settings as s
from .batching import JoinedBatch
from .contract import validate_item
from .identity_filter import IdentityFilter
from .read_ahead import ReadAhead, read_ahead

T = TypeVar("T")
LEAD_IDS = s.LEAD_IDENTIFIERS
COMPANY_IDS = s.COMPANY_IDENTIFIERS
WS_ATTRS = s.WORKSPACE_ATTRIBUTES
STRING_FIELDS = tuple(f for f in s.CANONICAL_FIELDS if f != "tags")
META = ("_om_source", "_om_row", "_om_order", "_om_hash")
# Confirmations are written to the state in flushes of this many items (or at the end).
FLUSH_ITEMS = 60_000
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

    cols["_om_source"] = meta("_om_source", pa.string(), lambda: pa.repeat(literal(source_label, pa.string()), n))
    cols["_om_row"] = meta("_om_row", pa.int64(), lambda: positions(n, start=1))
    cols["_om_order"] = meta("_om_order", pa.string(), lambda: pa.nulls(n, pa.string()))
    cols["_om_hash"] = meta("_om_hash", pa.int64(), lambda: pa.nulls(n, pa.int64()))
    if with_rid:
        cols["_rid"] = positions(n)
    return pa.table(cols), ignored


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
        known: IdentityFilter | None = None,
        writer: Executor | None = None,
        unsettled: Unsettled | None = None,
    ) -> None:
        self.con = con
        self.known = known  # identifiers the index may hold: lets a slice of new ones skip the join
        self.unsettled = unsettled  # whether the run had a failed event (see _remember_rows)
        # (i, n): keep only the leads (and company-only rows) whose key hashes to i of n,
        # so that n workers with n state files split one source between them.
        self.partition = partition
        # Staging tables live in memory; t_out sits in an attached in-memory database
        # rather than TEMP so that a cursor (another connection) can stream it.
        con.execute("ATTACH IF NOT EXISTS ':memory:' AS work")
        # One name per pass: passes of consecutive slices may overlap (see sink.py). The events
        # table and the identifiers this pass would add to the state live in the shared
        # in-memory database ``work``, so that the next slice, resolved while this one is
        # delivered, can read them (see :meth:`resolve`'s ``pending``).
        uid = uuid.uuid4().hex[:16]
        self.out = f"work.t_out_{uid}"
        self.newids = {"l": f"work.l_newids_{uid}", "c": f"work.c_newids_{uid}"}
        self.speculative = False  # resolved against an earlier pass's unconfirmed events
        self._resolved_report: StageReport | None = None
        self._primed: tuple[int, list[JoinedBatch], Generator[list[JoinedBatch], None, None]] | None = None
        self.run_id = run_id or uuid.uuid4().hex
        self.full_refresh = full_refresh
        self.retry_rejected = retry_rejected
        self.record = record  # False for dry runs: nothing is written to the state
        self.report = StageReport()
        self.present: list[str] = list(s.CANONICAL_FIELDS)
        self.has_order = False
        # Confirmed event numbers not yet handed to the writer: the chunks as they came (a
        # batch's keys, often a NumPy array), joined into one array when written.
        self._applied: list[Any] = []
        self._applied_n = 0
        self._written = 0  # confirmations written so far (by the writer thread)
        # Confirmations are written by a writer thread while delivery goes on (see confirm):
        # the sink's, shared by the passes of one file so that their writes land in order, or
        # one of this pass's own. The lock keeps the main connection to one thread at a time.
        self._writer = writer
        self._own_writer: ThreadPoolExecutor | None = None
        self._writes: collections.deque[Future[Any]] = collections.deque()
        self._con_lock = threading.Lock()
        self._streams: list[Any] = []  # open streams (generators, ReadAhead): close() stops each
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

    def resolve(self, pending: Sequence[Staging] = ()) -> StageReport:
        """Match the prepared groups to known entities, diff, and build the events (``t_out``).

        Reads the identity index and the confirmed values, so it needs every earlier slice's
        confirmations written; the ledger is written here too, so that all of a pass's state
        writes happen in this order.

        With ``pending`` (earlier slices' passes, oldest first, delivered or being delivered,
        whose confirmations may not all be written yet), it needs every earlier slice's
        confirmations but theirs: the pending passes' events are taken as confirmed, their new
        identifiers as known and their values laid over the state's in order, exactly as
        their confirmation writes will merge them (:data:`_STATE_MERGES`). Then this slice can
        be matched and diffed while the previous one is delivered, instead of between two
        deliveries. The guess holds if the API applies every one of those events; if it does
        not, the caller calls :meth:`re_resolve` once their confirmations are written. Their
        writes may land while this runs: a value already merged into the state and laid over
        again is the same value.
        """
        self._record_invalid()
        self._resolved_report = StageReport(
            events=self.report.events, merged=self.report.merged, unchanged=self.report.unchanged,
            skipped_rejected=self.report.skipped_rejected)
        pending = [p for p in pending if p.report.events]  # a pass that sent nothing adds nothing
        self.speculative = bool(pending)
        self._resolve(LEAD_IDS, "l", pending)
        self._resolve(COMPANY_IDS, "c", pending)
        self._diff(pending)
        # What a re-resolve starts from is kept until the guess is confirmed (:meth:`accept`).
        prepared = ("l_groups", "c_groups", *_AGGREGATES)
        if not self.speculative:
            self._drop(*_AGGREGATES)
        self._build_events()
        self._drop("t_lead_ev", "c_changed", "d_lead", "d_comp", "d_lead_ws", "d_comp_ws", "d_conn", "l_entity",
                   "c_entity", *(() if self.speculative else prepared))
        for name in ("t_confirmed (event_no BIGINT)", "l_written (g BIGINT)", "c_written (g BIGINT)"):
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {name}")
        return self.report

    def accept(self) -> None:
        """The pending pass's events were all applied: the speculative resolve stands."""
        if self.speculative:
            self.speculative = False
            self._drop("l_groups", "c_groups", *_AGGREGATES)

    def re_resolve(self) -> StageReport:
        """Resolve again against the state as it is written now.

        For a speculative resolve whose pending pass did not have every event applied: its
        new identifiers and values were taken as known, and some are not. Nothing of this
        pass was sent or written yet, so its events are dropped and built anew.
        """
        for stream in self._streams:
            stream.close()
        self._streams.clear()
        self._primed = None
        self._drop(self.out, *self.newids.values())
        done = self._resolved_report
        assert done is not None, "re_resolve() before resolve()"
        for name in ("events", "merged", "unchanged", "skipped_rejected"):
            setattr(self.report, name, getattr(done, name))
        return self.resolve()

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
            # with no sorting window to number the tuples. Its rows come along as a list, so
            # that rows find their tuple by unnesting it rather than by a join on every
            # identifier column (12 -> 2 ms a 50,000-row slice, measured alone).
            f"CREATE OR REPLACE TEMP TABLE {prefix}_tuples AS SELECT min(_rid) AS tid, count(*) AS n, "
            f"list(_rid) AS rids, {cols} FROM t_rows WHERE {_any(id_cols)} GROUP BY ALL"
        )
        # Tuples sharing a value with another tuple, by identifier kind (kinds no row of the
        # slice fills cannot link anything: left out, rather than grouped as all-NULL).
        shared = " UNION ".join(
            f"SELECT tid FROM {prefix}_tuples WHERE {c} IN "
            f"(SELECT {c} FROM {prefix}_tuples WHERE {c} IS NOT NULL GROUP BY 1 HAVING count(*) > 1)"
            for c in id_cols if c in self.present
        )
        linked = con.execute(
            f"SELECT tid, {cols} FROM {prefix}_tuples WHERE tid IN ({shared}) ORDER BY tid"
        ).fetchall() if shared else []
        mapping = _union_groups(linked)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}_map (tid BIGINT, gid BIGINT)")
        if mapping:
            tids = numeric_array(np.fromiter(mapping, np.int64, len(mapping)))
            gids = numeric_array(np.fromiter(mapping.values(), np.int64, len(mapping)))
            con.register("t_map", pa.table({"tid": tids, "gid": gids}))
            con.execute(f"INSERT INTO {prefix}_map SELECT * FROM t_map")
            con.unregister("t_map")
        # ``single``: the row is its group's only row (a tuple of one row, linked to no other),
        # which is most rows of most sources; merging such a group is a copy (see _aggregate).
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_rowgroup AS SELECT unnest(t.rids) AS _rid, "
            f"coalesce(m.gid, t.tid) AS g, m.tid IS NULL AND t.n = 1 AS single "
            f"FROM {prefix}_tuples t LEFT JOIN {prefix}_map m ON m.tid = t.tid"
        )
        # The group's identifiers: a tuple linked to no other is its group as it is; a linked
        # group has no conflicts inside, so max() is the one value per kind.
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {prefix}_groups AS SELECT tid AS g, {cols} FROM {prefix}_tuples "
            f"WHERE tid NOT IN (SELECT tid FROM {prefix}_map) UNION ALL SELECT m.gid AS g, "
            + ", ".join(f"max({c}) AS {c}" for c in id_cols)
            + f" FROM {prefix}_tuples t JOIN {prefix}_map m ON m.tid = t.tid GROUP BY m.gid"
        )

    def _resolve(self, id_cols: tuple[str, ...], prefix: str, pending: Sequence[Staging] = ()) -> None:
        """Give every group of ``{prefix}_groups`` its entity: a known one by the identity
        index (and the identifiers ``pending`` is adding to it), in matching priority, else a
        new one (``{prefix}_entity``)."""
        con = self.con
        entity_type = "lead" if prefix == "l" else "company"
        unpivot = " UNION ALL ".join(
            f"SELECT g, '{c}' AS kind, {c} AS value, {i} AS prio FROM {prefix}_groups WHERE {c} IS NOT NULL"
            for i, c in enumerate(id_cols)
        )
        # One scan of the identity index per side: every identifier with the entity it is
        # known as (NULL: not known yet). Three joins against it (hit, new_ids, new
        # identifiers) read the whole index three times (1M-row sync: 9.5 -> 6.7 s in _group).
        # A pending pass's new identifiers are one more, small join: its list keeps every one
        # (written to the index or not yet), each with the entity the index has or will have;
        # a value is new in one pass at most (the later ones found it pending).
        # The identity filter (when the sink gives one) skips both joins for a slice none of
        # whose identifiers the index or the pending pass can hold (see identity_filter.py).
        known, joins = "i.entity_id", (
            f" LEFT JOIN identity i ON i.entity_type = '{entity_type}' AND i.kind = ids.kind AND i.value = ids.value")
        for k, earlier in enumerate(pending):
            known = f"coalesce({known}, p{k}.e)"
            joins += f" LEFT JOIN {earlier.newids[prefix]} p{k} ON p{k}.kind = ids.kind AND p{k}.value = ids.value"
        source, fresh = f"({unpivot})", None
        if self.known is not None:
            self.known.load(con)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {prefix}_probe AS "
                f"SELECT *, hash('{entity_type}', kind, value) AS h FROM {source}"
            )
            source = f"{prefix}_probe"
            hashes = con.execute(f"SELECT h FROM {source}").fetchnumpy()["h"]
            if not self.known.may_hold_any(hashes):
                fresh = hashes  # every identifier is new, so is every group's entity
        if fresh is None:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {prefix}_ids AS "
                f"SELECT ids.g, ids.kind, ids.value, ids.prio, {known} AS entity_id FROM {source} ids{joins}"
            )
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {prefix}_entity AS "
                f"WITH hit AS (SELECT g, arg_min(entity_id, prio) FILTER (WHERE entity_id IS NOT NULL) AS e, "
                f"bool_or(entity_id IS NULL) AS new_ids FROM {prefix}_ids GROUP BY g) "
                f"SELECT grp.g, coalesce(hit.e, nextval('entity_seq')) AS e, hit.e IS NULL AS is_new, "
                f"coalesce(hit.new_ids, TRUE) AS new_ids "
                f"FROM {prefix}_groups grp LEFT JOIN hit USING (g)"
            )
            unknown = f"(SELECT g, kind, value FROM {prefix}_ids WHERE entity_id IS NULL)"
        else:
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {prefix}_entity AS SELECT g, nextval('entity_seq') AS e, "
                f"TRUE AS is_new, TRUE AS new_ids FROM {prefix}_groups"
            )
            unknown = source
        # Identifiers the state does not know yet, each owned by one group (the first),
        # written to ``identity`` when an event of that group is confirmed.
        con.execute(
            f"CREATE OR REPLACE TABLE {self.newids[prefix]} AS SELECT n.g, n.kind, n.value, en.e "
            f"FROM (SELECT min(g) AS g, kind, value FROM {unknown} GROUP BY kind, value) n JOIN {prefix}_entity en "
            f"USING (g)"
        )
        if self.known is not None:
            self.known.add(fresh if fresh is not None else con.execute(
                f"SELECT hash('{entity_type}', kind, value) AS h FROM {self.newids[prefix]}").fetchnumpy()["h"])
        self._drop(f"{prefix}_ids", f"{prefix}_probe")

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
            f"CREATE TEMP {kind} t_rg AS SELECT r.*, lg.g AS lg, cg.g AS cg, lg.single AS lsingle, "
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

        def alone(cols: Iterable[str]) -> str:
            return ", ".join(c if c in present else f"{_null(c)} AS {c}" for c in cols)

        # Leads: attributes, platform, and the company they were last named with. A lead of
        # one row is that row: copied, not aggregated (the aggregate cost 3x the copy).
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE m_lead AS SELECT lg AS g, {alone(s.LEAD_ATTRIBUTES)}, platform, cg, "
            f"1::BIGINT AS n FROM t_rg WHERE lg IS NOT NULL AND lsingle UNION ALL "
            f"SELECT lg AS g, {latest(s.LEAD_ATTRIBUTES)}, "
            f"arg_max(platform, _ord) FILTER (WHERE platform IS NOT NULL) AS platform, "
            f"arg_max(cg, _ord) FILTER (WHERE cg IS NOT NULL) AS cg, count(*) AS n "
            f"FROM t_rg WHERE lg IS NOT NULL AND NOT lsingle GROUP BY lg"
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

    def _diff(self, pending: Sequence[Staging] = ()) -> None:
        """Compare the merged groups (``m_*``) with what the API confirmed (``d_*``): the state,
        with ``pending``'s events laid over it (see :meth:`resolve`)."""
        con = self.con
        refresh = "TRUE" if self.full_refresh else "FALSE"
        present = set(self.present)

        def prior(table: str, on: str) -> tuple[str, Callable[[str], str]]:
            """Joins that give each merged row the stored values of ``table`` (``on`` names the
            joined alias ``{t}``), and the SQL of one stored value."""
            joins = f"LEFT JOIN {table} st ON {on.format(t='st')}"
            m = _MERGE_BY_TABLE[table]
            # Only the pending events of entities this slice has: the rest cannot join.
            entity = m.keys[0][1]  # le or ce
            mine = f"{entity} IN (SELECT e FROM {'l_entity' if entity == 'le' else 'c_entity'})"
            layers = ["st"]  # the newest first
            for k, earlier in enumerate(pending):
                if m.needs is None or m.needs in earlier.present:
                    overlay = _latest_values(m, earlier.out, f"{m.where} AND {mine}", earlier.present)
                    joins += f" LEFT JOIN {overlay} pv{k} ON {on.format(t=f'pv{k}')}"
                    layers.insert(0, f"pv{k}")
            if len(layers) == 1:
                return joins, lambda c: f"st.{c}"
            return joins, lambda c: "coalesce(" + ", ".join(f"{t}.{c}" for t in layers) + ")"

        def changed(cols: Iterable[str], stored: Callable[[str], str]) -> str:
            return ", ".join(
                f"CASE WHEN {refresh} OR m.{c} IS DISTINCT FROM {stored(c)} THEN m.{c} END AS {c}"
                if c in present else f"{_null(c)} AS {c}"
                for c in cols
            )

        def any_changed(cols: Iterable[str]) -> str:
            return _any(cols) if cols else "FALSE"

        joins, stored = prior("lead_state", "{t}.entity_id = le.e")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE d_lead AS SELECT m.g, le.e, le.new_ids, le.is_new AS le_new, m.platform, "
            f"m.cg, ce.e AS ce, ce.is_new AS ce_new, "
            f"{changed(s.LEAD_ATTRIBUTES, stored)}, "
            f"({refresh} OR ce.e IS DISTINCT FROM {stored('company_entity_id')} AND ce.e IS NOT NULL) AS link_changed "
            f"FROM m_lead m JOIN l_entity le ON le.g = m.g LEFT JOIN c_entity ce ON ce.g = m.cg {joins}"
        )
        joins, stored = prior("company_state", "{t}.entity_id = ce.e")
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE d_comp AS SELECT m.g, ce.e, ce.new_ids, ce.is_new, m.platform, m.alone, "
            f"{changed(s.COMPANY_ATTRIBUTES, stored)} FROM m_comp m JOIN c_entity ce ON ce.g = m.g {joins}"
        )
        for scope, ent, table in (("lead", "l_entity", "lead_ws_state"), ("comp", "c_entity", "company_ws_state")):
            joins, stored = prior(table, "{t}.entity_id = en.e AND {t}.workspace_id = m.workspace_id")
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE d_{scope}_ws AS "
                f"SELECT m.g, m.workspace_id, {changed(WS_ATTRS, stored)} FROM m_{scope}_ws m "
                f"JOIN {ent} en ON en.g = m.g {joins}"
            )
            con.execute(f"DELETE FROM d_{scope}_ws WHERE NOT {any_changed(WS_ATTRS)}")
        joins, stored = prior("conn_state", "{t}.entity_id = en.e AND {t}.sender = m.sender")
        con.execute(
            "CREATE OR REPLACE TEMP TABLE d_conn AS "
            f"SELECT m.g, m.sender, m.linkedin_connection_level FROM m_conn m JOIN l_entity en ON en.g = m.g {joins} "
            f"WHERE {refresh} OR m.linkedin_connection_level IS DISTINCT FROM {stored('linkedin_connection_level')}"
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
        """Yield ``(event_no, JSON bytes)`` for every event, streaming (a dry run's samples,
        and callers of their own; the sink sends :meth:`request_batches`).

        A cursor (its own connection to the same database) streams the pass's events table, so the
        delivery callbacks can write confirmations through the main connection meanwhile.
        :meth:`close` closes the stream too: after a delivery that raised, the traceback keeps
        the generator alive, and its Arrow reader would keep the database file open (another
        connection to it with other settings then fails) until the garbage collector ran.
        """
        stream = self._stream(self._event_chunks(chunk_rows))
        return (item for numbers, data in stream for item in zip(numbers, data, strict=True))

    def request_batches(self, batch_size: int) -> Iterator[JoinedBatch]:
        """The events as request bodies of ``batch_size`` events each, joined by DuckDB.

        One bytes object a request rather than one an event: the delivery thread then handles
        2,000 objects for 1M events instead of 1M tuples of a key and its bytes (batching them,
        reporting them, confirming them cost about 2 s of a 1M-event sync's CPU). Written in
        a thread beside the delivery (see :meth:`_stream`); :meth:`prime` writes the first
        ones early.
        """
        primed, self._primed = self._primed, None
        if primed is not None and primed[0] == batch_size:
            _size, first, chunks = primed
            # The thread writing the rest starts now, while the first bodies are sent; it
            # owns (and closes) the chunks' generator from here on.
            self._streams.remove(chunks)
            rest = self._stream(chunks, started=True)
            return itertools.chain(first, (batch for chunk in rest for batch in chunk))
        if primed is not None:
            primed[2].close()
        stream = self._stream(self._batch_chunks(batch_size))
        return (batch for chunk in stream for batch in chunk)

    def prime(self, batch_size: int) -> None:
        """Write the first request bodies now, so that delivery finds them ready.

        The sink primes a slice as soon as it is resolved, while the previous one is
        delivered: written when the delivery starts, the first bodies kept the API idle for
        the time DuckDB took to write them (30-45 ms a slice before, measured). Only the
        first chunk is written here; the rest waits for the delivery, so that a slice
        waiting its turn holds 10,000 events' bodies, not 30,000.
        """
        chunks = self._batch_chunks(batch_size)
        first = next(chunks, None)
        if first is None:
            chunks.close()
            return
        self._primed = (batch_size, first, chunks)
        self._streams.append(chunks)

    def _stream(self, chunks: Iterator[T], *, started: bool = False) -> Iterator[T]:
        """``chunks`` produced by a thread of their own (:func:`read_ahead`), at most one
        waiting (``started``: the thread starts now, not at the first ``next()``).

        DuckDB releases the GIL while it builds the JSON, so that work overlaps the network
        instead of stalling the delivery loop; closing the stream (or :meth:`close`) stops
        the thread.
        """
        stream: Any = (ReadAhead(chunks, depth=1, name="outreach-magic-events") if started
                       else read_ahead(chunks, depth=1, name="outreach-magic-events"))
        self._streams.append(stream)
        return cast(Iterator[T], stream)

    def _ranges(self, cur: duckdb.DuckDBPyConnection, rows: int) -> Iterator[tuple[int, int]]:
        """Event numbers ``rows`` at a time: one query per range rather than one query read in
        batches, since DuckDB builds a query's whole Arrow result before it hands over the
        first batch (the JSON of a 50,000-event slice: about 30 MB, 30 ms before the first
        event); a range is a filter on one integer column, and JSON for those rows only."""
        last = cur.execute(f"SELECT max(event_no) FROM {self.out}").fetchall()[0][0] or 0
        for start in range(1, last + 1, rows):
            yield start, start + rows - 1

    def _event_chunks(self, chunk_rows: int) -> Iterator[tuple[list[int], list[bytes]]]:
        with self._con_lock:
            cur = self.con.cursor()
        sql = f"SELECT event_no, encode({self._json_sql()}) AS json FROM {self.out} WHERE event_no BETWEEN $1 AND $2"
        try:
            for start, stop in self._ranges(cur, chunk_rows):
                got = cur.sql(sql, params=[start, stop]).to_arrow_table()
                if got.num_rows:
                    yield got.column(0).to_pylist(), got.column(1).to_pylist()
        finally:
            cur.close()

    def _batch_chunks(self, batch_size: int) -> Generator[list[JoinedBatch], None, None]:
        """Bodies of ``batch_size`` events, about 10,000 events a query, each with its
        events' numbers and sizes. DuckDB writes each event's JSON; Arrow joins each run of
        ``batch_size`` of them into one body (``binary_join`` over list offsets), so no
        Python object is made per event. (DuckDB's ``string_agg`` grouped by batch did the
        same at twice the CPU: an ordered aggregate sorts every group.)"""
        with self._con_lock:
            cur = self.con.cursor()
        rows = batch_size * max(1, 10_000 // batch_size)
        sql = f"SELECT event_no, encode({self._json_sql()}) AS j FROM {self.out} WHERE event_no BETWEEN $1 AND $2"
        seq = 0
        try:
            for start, stop in self._ranges(cur, rows):
                got = cur.sql(sql, params=[start, stop]).to_arrow_table()
                n = got.num_rows
                if not n:
                    continue
                data = got.column("j").combine_chunks()
                # NumPy views serve as the batches' sequences (sliced, indexed, measured)
                keys = cast(Sequence[Any], as_numpy(got.column("event_no")))
                sizes = cast(Sequence[int], as_numpy(pc.binary_length(data)))
                ends = np.append(np.arange(0, n, batch_size, dtype=np.int32), np.int32(n))
                joined = pc.binary_join(pa.ListArray.from_arrays(numeric_array(ends), data), literal(b",", data.type))
                bodies = pc.binary_join_element_wise(
                    literal(b"[", data.type), joined, literal(b"]", data.type), literal(b"", data.type)
                ).to_pylist()
                out = []
                for i, body in enumerate(bodies):
                    a, b = ends[i], ends[i + 1]
                    out.append(JoinedBatch(seq, keys[a:b], body, sizes[a:b]))
                    seq += 1
                yield out
        finally:
            cur.close()

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

        A full buffer is written by the writer thread, so the delivery loop (which calls
        this) keeps sending meanwhile: a flush takes a few hundred ms, during which a
        blocking write used to leave every connection idle (measured: 10% of the delivery
        time with 50 ms API latency). At most one more buffer waits for the writer, so memory
        stays bounded; a write that failed is raised here, stopping the delivery. Nothing
        changes in what the state claims: only confirmed events are written, and a crash
        loses at most the unwritten buffers, whose events are sent again next run.
        """
        chunk = applied if isinstance(applied, (list, np.ndarray, range)) else list(applied)
        if not len(chunk):
            return
        self._applied.append(chunk)
        self._applied_n += len(chunk)
        if self._applied_n >= FLUSH_ITEMS:
            self._reap(keep=1)
            self._submit(self._flush_in_background, self._take_applied())

    def _take_applied(self) -> np.ndarray:
        """The buffered confirmations as one array, leaving the buffer empty."""
        chunks, self._applied, self._applied_n = self._applied, [], 0
        if not chunks:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([np.asarray(c, dtype=np.int64) for c in chunks])

    def _flush_in_background(self, batch: np.ndarray) -> None:
        self._write_applied(batch)

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue a write on the writer thread (after every write queued before, of any pass)."""
        writer = self._writer
        if writer is None:
            if self._own_writer is None:
                self._own_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-magic-flush")
            writer = self._own_writer
        future = writer.submit(fn, *args, **kwargs)
        self._writes.append(future)
        return future

    def _reap(self, keep: int = 0) -> None:
        """Raise the first of this pass's writes that failed; wait until at most ``keep`` are
        still queued or running."""
        while self._writes and (self._writes[0].done() or len(self._writes) > keep):
            self._writes.popleft().result()

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
        """Write every buffered confirmation to the state, after the writes queued before
        (``final``: and the row hashes, see :meth:`finish`), and wait for them."""
        self._reap(keep=0)
        applied = self._take_applied()
        if len(applied) or final:
            self._submit(self._write_applied, applied, final=final)
            self._reap(keep=0)

    def _write_applied(self, applied: np.ndarray, *, final: bool = False) -> None:
        """Write these confirmations to the state, in one transaction."""
        with self._con_lock:
            self.report.applied += len(applied)
            if self.record:
                self._write_transaction(applied, final=final)

    def _write_transaction(self, applied: np.ndarray, *, final: bool = False) -> None:
        """Write confirmations; ``final`` (the pass's last write) also records the row hashes,
        in the same transaction (one commit a slice fewer)."""
        con = self.con
        # Every event of the pass in one write (the usual case: one write a slice, everything
        # applied): the events table itself is what was confirmed, with nothing to select,
        # copy or look up (a third of the write's statements).
        whole = final and not self._written and len(applied) == self.report.events
        con.execute("BEGIN")
        try:
            if len(applied):
                # Only the columns the state takes and this slice fills are read; the view adds
                # the rest as NULL constants (a copy of every column took 76 ms a flush).
                present = set(self.present)
                copied = ", ".join([*_OK_BOOKKEEPING, *(c for c in _STATE_FIELDS if c in present)])
                nulls = "".join(f", {_null(c)} AS {c}" for c in _STATE_FIELDS if c not in present)
                source = self.out
                if not whole:
                    event_nos = numeric_array(np.asarray(applied, dtype=np.int64))
                    con.register("t_ok_arrow", pa.table({"event_no": event_nos}))
                    con.execute(
                        f"CREATE OR REPLACE TEMP TABLE t_ok_data AS SELECT {copied} FROM {self.out} o "
                        "SEMI JOIN t_ok_arrow USING (event_no)"
                    )
                    con.unregister("t_ok_arrow")
                    source = "t_ok_data"
                con.execute(f"CREATE OR REPLACE TEMP VIEW t_ok AS SELECT {copied}{nulls} FROM {source}")
                self._write_confirmed(whole=whole)
                if not whole:
                    con.execute("INSERT INTO t_confirmed SELECT event_no FROM t_ok")
            if final:
                self._remember_rows(whole=whole)
            con.execute("COMMIT")
            self._written += len(applied)
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _write_confirmed(self, *, whole: bool = False) -> None:
        """Merge the values of the confirmed events (``t_ok``) into the state tables.

        State tables have no primary keys: DuckDB's index upserts cost several times an
        append here, so new identifiers come from the per-pass list of identifiers the
        state did not have (``self.newids``, each value owned by one group), and
        attributes are merged with one UPDATE of known keys plus one INSERT of new ones.
        """
        con = self.con
        # A group's identifiers are written with its first confirmed event (a group can have
        # several: extra workspaces, senders). The list of new identifiers itself is left as
        # it is: the next slice may be reading it (see :meth:`resolve`), and one transaction
        # cannot write both the state file and the shared in-memory database.
        for prefix, entity_type, group in (("l", "lead", "lg"), ("c", "company", "cg")):
            insert = f"INSERT INTO identity SELECT '{entity_type}', kind, value, e, now() FROM {self.newids[prefix]}"
            if whole:  # every group confirmed at once: every new identifier
                con.execute(insert)
                continue
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE t_fresh AS SELECT DISTINCT {group} AS g FROM t_ok "
                f"WHERE {group} IS NOT NULL AND {group} NOT IN (SELECT g FROM {prefix}_written)"
            )
            con.execute(f"{insert} SEMI JOIN t_fresh USING (g)")
            con.execute(f"INSERT INTO {prefix}_written SELECT g FROM t_fresh")

        def merge(m: _StateMerge) -> None:
            """The last confirmed value per key and column wins (:func:`_latest_values`).

            Events of an entity this pass created (``m.new``) are appended as they are: the
            state has no row of it, and no other event of this pass writes the same key
            (each new entity is one group's, and a group has one event per key), so they
            need neither the per-key aggregate (half of a first sync's lead_state write: 41
            -> 22 ms a slice) nor a match against the state table. Only the others are
            (an UPDATE and an anti-join that read the whole table: most of a flush's time on
            a first sync, when every entity is new).
            """
            table = m.table
            names = ", ".join(col for col, _ in (*m.keys, *m.cols))
            fresh = ", ".join(f"{expr} AS {col}" for col, expr in (*m.keys, *m.cols))
            con.execute(
                f"INSERT INTO {table} ({names}, confirmed_at) SELECT {names}, now() "
                f"FROM (SELECT {fresh} FROM t_ok WHERE {m.where} AND {m.new})"
            )
            known = f"NOT {m.new}"
            if not _scalar(con, f"SELECT count(*) FROM t_ok WHERE {m.where} AND {known}"):
                return
            src = _latest_values(m, "t_ok", f"{m.where} AND {known}")
            match = " AND ".join(f"{table}.{col} = o.{col}" for col, _ in m.keys)
            sets = ", ".join(f"{col} = coalesce(o.{col}, {table}.{col})" for col, _ in m.cols)
            con.execute(f"UPDATE {table} SET {sets}, confirmed_at = now() FROM {src} o WHERE {match}")
            anti = " AND ".join(f"st.{col} = o.{col}" for col, _ in m.keys)
            con.execute(
                f"INSERT INTO {table} ({names}, confirmed_at) SELECT {names}, now() FROM {src} o "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} st WHERE {anti})"
            )

        # A slice without workspaces or senders has no event for those tables: their
        # statements are skipped rather than run on nothing (three flushes a slice add up).
        for m in _STATE_MERGES:
            if m.needs is None or m.needs in self.present:
                merge(m)

    def close(self) -> None:
        """Drop this pass's events table and close the connection (idempotent), once its
        queued writes are done (their failures were raised to the caller already)."""
        while self._writes:
            with contextlib.suppress(BaseException):
                self._writes.popleft().result()
        if self._own_writer is not None:
            self._own_writer.shutdown()
            self._own_writer = None
        for stream in self._streams:
            with contextlib.suppress(Exception):
                stream.close()
        self._streams.clear()
        self._primed = None
        for name in (self.out, *self.newids.values()):
            with contextlib.suppress(Exception):
                self.con.execute(f"DROP TABLE IF EXISTS {name}")
        with contextlib.suppress(Exception):
            self.con.close()

    def finish(self, failed: int = 0) -> StageReport:
        """Write the last confirmations and remember the hashes of rows whose every event was
        confirmed, in one transaction (after the writes queued before).

        A row whose lead or company still has an unconfirmed event (failed, rejected,
        crashed before confirmation) keeps no hash, so the next run stages it again.
        """
        return self.finish_later(failed).result()

    def finish_later(self, failed: int = 0) -> Future[StageReport]:
        """:meth:`finish` on the writer thread: the future's result is this pass's report,
        complete once every confirmation of the pass is written (or the write's error)."""
        self.report.failed += failed
        self._reap(keep=len(self._writes))  # a write that failed already is raised now
        applied = self._take_applied()

        def final() -> StageReport:
            self._write_applied(applied, final=True)
            return self.report

        return self._submit(final)

    def _remember_rows(self, *, whole: bool = False) -> None:
        """Record the hashes of the rows whose every event was confirmed (``whole``: all were),
        unless an event of this run failed (then none from here on: see :class:`Unsettled`)."""
        if self.unsettled is not None and self.unsettled.failed:
            return
        unconfirmed = "" if whole else (
            "AND (r.lg IS NULL OR r.lg NOT IN (SELECT lg FROM un WHERE lg IS NOT NULL)) "
            "AND (r.cg IS NULL OR r.cg NOT IN (SELECT cg FROM un WHERE cg IS NOT NULL)) "
        )
        self.con.execute(
            "INSERT INTO row_hashes "
            f"WITH un AS (SELECT lg, cg FROM {self.out} ANTI JOIN t_confirmed USING (event_no)) "
            "SELECT DISTINCT r._om_hash FROM t_rg r WHERE r._om_hash IS NOT NULL "
            f"{unconfirmed}"
            "AND NOT EXISTS (SELECT 1 FROM row_hashes h WHERE h.hash = r._om_hash)"
        )


class Unsettled:
    """Whether an event of this run failed for a transient reason; from then on, no row is
    hashed as settled (shared by the passes of one run).

    A person's rows may fall in two slices. If the earlier slice's event failed and the
    later one's was applied, hashing the later row would leave the earlier row alone to be
    staged next run, and its older values would overwrite the newer ones the API holds (the
    entity cannot tell: a failed slice's new identifiers were never written, so the later
    slice may have made another entity of the same person). Unhashed, the rows from the
    failure on are staged together next run, where the later row wins; what the API
    confirmed is found unchanged and not sent again. It costs a rerun after an outage
    re-reading those rows, nothing more. API rejections do not count: a rejected row stays
    held back until it changes, and stopping the hashing for it would make every later
    run stage the rest of the file again.
    """

    def __init__(self) -> None:
        self.failed = False

    def mark_failed(self) -> None:
        self.failed = True


@dataclass(frozen=True)
class _StateMerge:
    """How confirmed events merge into one state table (the writes, and the overlay a
    speculative resolve lays over the state): per key, the last confirmed event's non-empty
    values over the stored ones. ``keys``/``cols`` are (state column, events-table expression);
    ``where`` picks the events that write this table, ``new`` those of an entity the pass
    created; ``needs`` names a field without which no event writes the table."""

    table: str
    keys: tuple[tuple[str, str], ...]
    cols: tuple[tuple[str, str], ...]
    where: str
    new: str
    needs: str | None = None


def _same(cols: Iterable[str]) -> tuple[tuple[str, str], ...]:
    return tuple((c, c) for c in cols)


_LEAD_NEW, _COMP_NEW = "coalesce(le_new, FALSE)", "coalesce(ce_new, FALSE)"
_STATE_MERGES = (
    _StateMerge("lead_state", (("entity_id", "le"),), (*_same(s.LEAD_ATTRIBUTES), ("company_entity_id", "ce")),
                "carries_lead", _LEAD_NEW),
    _StateMerge("company_state", (("entity_id", "ce"),), _same(s.COMPANY_ATTRIBUTES), "carries_company", _COMP_NEW),
    _StateMerge("lead_ws_state", (("entity_id", "le"), ("workspace_id", "workspace_id")), _same(WS_ATTRS),
                "le IS NOT NULL AND workspace_id IS NOT NULL", _LEAD_NEW, "workspace_id"),
    _StateMerge("company_ws_state", (("entity_id", "ce"), ("workspace_id", "workspace_id")), _same(WS_ATTRS),
                "le IS NULL AND workspace_id IS NOT NULL", _COMP_NEW, "workspace_id"),
    _StateMerge("conn_state", (("entity_id", "le"), ("sender", "sender")), _same(["linkedin_connection_level"]),
                "sender IS NOT NULL", _LEAD_NEW, "sender"),
)
_MERGE_BY_TABLE = {m.table: m for m in _STATE_MERGES}


def _latest_values(m: _StateMerge, events: str, where: str, fields: Iterable[str] | None = None) -> str:
    """Per key of ``m``, each column's value from the last event (by ``event_no``) that has
    one: what the server holds after applying those events in order, and the same whichever
    way the events are split into confirmation flushes (so a speculative resolve can lay a
    pending pass's events over the state before they are written). ``fields``: the columns
    ``events`` has (others read as NULL)."""
    have = None if fields is None else {*_OK_BOOKKEEPING, *fields}

    def value(col: str, expr: str) -> str:
        return expr if have is None or expr in have else _null(col)

    keys = ", ".join(f"{value(col, expr)} AS {col}" for col, expr in m.keys)
    cols = ", ".join(
        f"arg_max({value(col, expr)}, event_no) FILTER (WHERE {value(col, expr)} IS NOT NULL) AS {col}"
        for col, expr in m.cols
    )
    return f"(SELECT {keys}, {cols} FROM {events} WHERE {where} GROUP BY ALL)"

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

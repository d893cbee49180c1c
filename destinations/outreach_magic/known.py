"""Which rows of a prospect list does Outreach Magic already hold? Checked offline, from the state.

Enrichment tools charge per row, so a list should be checked *before* it is enriched.
The sync engine's state file already holds every identifier the API confirmed
(``identity``), normalized, so the check is a join: no request, no write.

Why it is built this way:

* **Same reading, same normalization as sync.** Rows go through the same readers,
  presets/mapping and :func:`identifiers.normalize_table`; a LinkedIn URL spelled
  ``http://uk.linkedin.com/in/Jane-Doe?trk=x`` finds the lead synced as
  ``https://www.linkedin.com/in/jane-doe/``.
* **The API's matching priority.** A row's lead identifiers are tried in the contract's
  order (``unified_lead_id``, email, LinkedIn URL, Sales Navigator URL, LinkedIn id); the
  first that the state knows names the lead and goes in ``om_matched_on``. Failing a lead,
  the company identifiers the same way (``known_company``: the person is still new, but
  company enrichment is not needed).
* **Statuses, in precedence order:** ``known_lead`` (a valid lead identifier matched, even
  if another cell of the row is broken: the person is known either way); ``invalid`` (an
  identifier cell does not normalize, so the row cannot be checked reliably, and sync would
  hold it back too; or the row has no identifier at all); ``known_company``; ``new``.
  Attribute cells are not judged: they do not decide whether a contact is known.
* **Vectorized.** Identifier columns are normalized in Arrow; DuckDB joins the list's
  values against ``identity`` one kind at a time (only the kinds the list has), keeps the
  highest-priority hit per row, and Python never loops over rows (only over invalid cells).
* **Read-only.** The state is opened ``read_only`` (DuckDB then takes a shared lock and
  writes nothing), so the file's bytes and mtime stay as they were; the check knows only
  what *this* connector synced into *this* state file, which every report says.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.typing import TDataItems

from destinations.outreach_magic.arrow_literals import numeric_array
from sources.canonical import expand_specs
from sources.mapping import MappingPlan

from . import settings as s
from . import state as state_mod
from .exceptions import ConfigurationError
from .identifiers import normalize_table
from .staging import RowIssue

KNOWN_LEAD, KNOWN_COMPANY, NEW, INVALID = "known_lead", "known_company", "new", "invalid"
STATUSES: tuple[str, ...] = (KNOWN_LEAD, KNOWN_COMPANY, NEW, INVALID)
KNOWN_STATUSES: frozenset[str] = frozenset({KNOWN_LEAD, KNOWN_COMPANY})
STATUS_COLUMNS: tuple[str, ...] = ("om_status", "om_matched_on", "om_last_synced_at", "om_reason")
"""Added to every row: the status, the identifier kind that matched, when the matched
lead/company was last confirmed, and (invalid rows only) why the row could not be checked."""

LEAD_IDS = s.LEAD_IDENTIFIERS
COMPANY_IDS = s.COMPANY_IDENTIFIERS
ID_FIELDS: tuple[str, ...] = (*LEAD_IDS, *COMPANY_IDS)
NO_IDENTIFIER = "no lead or company identifier"
_PROVENANCE = ("_om_source", "_om_row")
_TS = pa.timestamp("us")
_STATUS_CODE = {name: i for i, name in enumerate(STATUSES)}


#: Why one row is ``invalid``: its source, 1-based row, the column, the value and the
#: reason; the same record the sync's ledger keeps.
KnownIssue = RowIssue


@dataclass
class StateSummary:
    """What the state file can vouch for: printed with every result, so nobody over-trusts it."""

    path: str
    target: str | None
    leads: int
    companies: int
    last_sync: str | None

    def describe(self) -> str:
        where = self.target or "an unrecorded API target"
        last = f", last sync finished {self.last_sync}" if self.last_sync else ""
        return (
            f"checked against the state file {self.path}: it knows only the {self.leads:,} leads and "
            f"{self.companies:,} companies this connector synced to {where}{last}; contacts that reached "
            "Outreach Magic any other way (or through another state file) count as new"
        )


@dataclass
class SourceCheck:
    """One source of the list: how its columns were mapped and how many rows it had."""

    spec: str
    preset: str
    reason: str
    rows: int = 0


@dataclass
class KnownResult:
    """The outcome of a check: every input row (original columns) plus the ``om_*`` columns.

    ``table`` keeps the input order; ``statuses`` is the narrow per-row view (provenance and
    ``om_*`` columns only) for joining back to data the caller already holds.
    """

    table: pa.Table
    state: StateSummary
    sources: list[SourceCheck] = field(default_factory=list)
    issues: list[KnownIssue] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def statuses(self) -> pa.Table:
        names = [c for c in (*_PROVENANCE, *STATUS_COLUMNS) if c in self.table.column_names]
        return self.table.select(names)

    @property
    def counts(self) -> dict[str, int]:
        """Rows per status (every status present, zero when absent)."""
        out = dict.fromkeys(STATUSES, 0)
        if self.table.num_rows:
            for row in self.table.column("om_status").value_counts().to_pylist():
                out[row["values"]] = row["counts"]
        return out

    @property
    def matched_on(self) -> dict[str, int]:
        """Known rows per identifier kind that matched, in matching priority."""
        counts: dict[str, int] = {}
        if self.table.num_rows:
            for row in self.table.column("om_matched_on").value_counts().to_pylist():
                if row["values"] is not None:
                    counts[row["values"]] = row["counts"]
        return {k: counts[k] for k in ID_FIELDS if k in counts}

    @property
    def credits_saved(self) -> int:
        """Rows whose lead Outreach Magic already holds: one enrichment credit each, not spent."""
        return self.counts[KNOWN_LEAD]

    def rows_with(self, statuses: Iterable[str]) -> pa.Table:
        """The rows (all columns) whose status is one of ``statuses``, in input order."""
        wanted = pa.array(sorted(set(statuses)), pa.string())
        return self.table.filter(pc.is_in(self.table.column("om_status"), value_set=wanted))

    def known(self) -> pa.Table:
        """``known_lead`` and ``known_company`` rows: what the state says Outreach Magic holds."""
        return self.rows_with(KNOWN_STATUSES)

    def new(self) -> pa.Table:
        """``new`` and ``invalid`` rows: not confirmed by the API through this connector."""
        return self.rows_with((NEW, INVALID))

    def to_dict(self) -> dict[str, Any]:
        return {
            "state_path": self.state.path,
            "target": self.state.target,
            "state_leads": self.state.leads,
            "state_companies": self.state.companies,
            "state_last_sync": self.state.last_sync,
            "note": self.state.describe(),
            "rows": self.table.num_rows,
            "counts": self.counts,
            "matched_on": self.matched_on,
            "credits_saved": self.credits_saved,
            "sources": [src.__dict__ for src in self.sources],
            "invalid_examples": [i.__dict__ for i in self.issues[:20]],
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------- the index
class KnownIndex:
    """A read-only view of one state file's identity index that checks canonical rows.

    Holding one open across batches saves reopening the file; a running sync holds the
    write lock, so opening fails then, with a message saying so.
    """

    def __init__(self, state_path: str | Path) -> None:
        self.path = str(state_path)
        try:
            self.con = state_mod.connect(self.path, read_only=True)
        except duckdb.IOException as exc:
            raise ConfigurationError(
                f"cannot open the state file {self.path} read-only ({exc}); a sync may be writing it: "
                "run the check after it finished"
            ) from exc
        if not self._has_table("identity"):
            self.con.close()
            raise ConfigurationError(f"{self.path} is not an outreach-magic state file (no identity table)")

    def _has_table(self, name: str) -> bool:
        rows = self.con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
        ).fetchall()
        return bool(rows[0][0])

    def summary(self) -> StateSummary:
        con = self.con
        target = con.execute("SELECT max(value) FROM meta WHERE key = 'target'").fetchall()[0][0]
        # One state row per confirmed entity: counting them is instant, unlike distinct ids.
        leads, companies = con.execute(
            "SELECT (SELECT count(*) FROM lead_state), (SELECT count(*) FROM company_state)"
        ).fetchall()[0]
        last = con.execute("SELECT max(finished_at) FROM runs").fetchall()[0][0]
        when = f"{last:%Y-%m-%d %H:%M:%S}" if last else None
        return StateSummary(self.path, target, int(leads), int(companies), when)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> KnownIndex:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @staticmethod
    def _match(
        con: duckdb.DuckDBPyConnection, values: pa.Array, rows: np.ndarray, kind: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which of ``rows`` have a (normalized) ``kind`` value the API confirmed: positions, entity ids, when."""
        present = values.is_valid()
        if not pc.any(present).as_py():
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, "datetime64[us]")
        probe = pa.table({"_k": pa.array(rows), "v": values}).filter(present)
        entity_type = "lead" if kind in LEAD_IDS else "company"
        sql = (
            "SELECT t._k, i.entity_id, i.confirmed_at::TIMESTAMP AS at FROM t_known_probe t JOIN identity i "
            f"ON i.entity_type = '{entity_type}' AND i.kind = '{kind}' AND i.value = t.v"
        )
        con.register("t_known_probe", probe)
        try:
            hits = con.sql(sql).to_arrow_table()
        finally:
            con.unregister("t_known_probe")
        return (
            hits.column("_k").to_numpy(),
            hits.column("entity_id").to_numpy(),
            hits.column("at").combine_chunks().cast(_TS).to_numpy(zero_copy_only=False),
        )

    @staticmethod
    def _last_synced(con: duckdb.DuckDBPyConnection, entity_type: str, entities: np.ndarray, at: np.ndarray) -> None:
        """Overwrite ``at`` (identifier first confirmed) with the entity's last confirmed sync, where recorded.

        One join for all hits of a type, after the cascade, instead of one per identifier kind.
        """
        if not len(entities):
            return
        con.register("t_known_hits", pa.table({"i": np.arange(len(entities)), "e": entities}))
        try:
            rows = con.sql(
                f"SELECT h.i, st.confirmed_at::TIMESTAMP AS at FROM t_known_hits h "
                f"JOIN {entity_type}_state st ON st.entity_id = h.e WHERE st.confirmed_at IS NOT NULL"
            ).to_arrow_table()
        finally:
            con.unregister("t_known_hits")
        at[rows.column("i").to_numpy()] = rows.column("at").combine_chunks().cast(_TS).to_numpy(zero_copy_only=False)

    def check(self, canonical: pa.Table | pa.RecordBatch) -> tuple[pa.Table, dict[int, tuple[str, str, str]]]:
        """Statuses of canonical rows: a table of the ``om_*`` columns (same order) and the invalid cells.

        ``canonical`` needs only the identifier columns it has (absent ones count as
        empty). The second value maps a row position to its first invalid identifier cell
        ``(column, value, reason)``, for the rows whose status is ``invalid``.

        A cascade in matching priority, so that the costly part (normalizing in Python
        what Arrow cannot; profiled at 2/3 of the time) runs only where it can change the
        answer: each lead identifier kind is normalized and matched only for the rows no
        higher-priority kind matched (a later kind cannot change a known lead's status),
        then the company identifiers only for rows whose lead is not known. Every identifier
        cell of a row that is not a known lead gets normalized, so its ``invalid`` verdict
        is complete.
        """
        n = canonical.num_rows
        names = set(canonical.schema.names)
        columns = {
            c: canonical.column(c).cast(pa.string())
            for c in ID_FIELDS
            if c in names and canonical.column(c).null_count < n
        }
        kind = np.full(n, -1, dtype=np.int64)  # index into ID_FIELDS of the matched kind
        at = np.full(n, np.datetime64("NaT"), dtype="datetime64[us]")
        entity = np.full(n, -1, dtype=np.int64)
        bad: dict[int, tuple[str, str, str]] = {}
        has_id = np.zeros(n, dtype=bool)
        todo = np.arange(n, dtype=np.int64)
        for prio, field_name in enumerate(ID_FIELDS):
            if field_name not in columns or not len(todo):
                continue
            values = self._normalize(columns[field_name], field_name, todo, bad, has_id)
            unmatched = kind[todo] < 0  # company kinds: rows a higher company kind matched still get normalized
            k, ent, when = self._match(self.con, values.filter(pa.array(unmatched)), todo[unmatched], field_name)
            kind[k], entity[k], at[k] = prio, ent, when
            if field_name in LEAD_IDS:
                todo = todo[kind[todo] < 0]

        known_lead = (kind >= 0) & (kind < len(LEAD_IDS))
        for entity_type, rows_of in (("lead", known_lead), ("company", kind >= len(LEAD_IDS))):
            picked = np.flatnonzero(rows_of)
            when = at[picked]
            self._last_synced(self.con, entity_type, entity[picked], when)
            at[picked] = when
        invalid = ~known_lead & ~has_id
        if bad:
            invalid[np.fromiter(bad, dtype=np.int64, count=len(bad))] = True
        invalid &= ~known_lead
        status = np.full(n, _STATUS_CODE[NEW], dtype=np.int64)
        status[kind >= len(LEAD_IDS)] = _STATUS_CODE[KNOWN_COMPANY]
        status[invalid] = _STATUS_CODE[INVALID]
        status[known_lead] = _STATUS_CODE[KNOWN_LEAD]
        kind[invalid] = -1
        at[invalid] = np.datetime64("NaT")

        invalid_rows = np.flatnonzero(invalid)
        verdicts: dict[int, tuple[str, str, str]] = {}
        texts: list[str] = []
        for r in invalid_rows.tolist():
            cell = bad.get(r)
            if cell is not None:
                verdicts[r] = cell
            texts.append(f"{cell[0]} {cell[1]!r}: {cell[2]}" if cell else NO_IDENTIFIER)
        reason_index = np.full(n, -1, dtype=np.int64)
        reason_index[invalid_rows] = np.arange(len(invalid_rows))
        out = pa.table(
            {
                "om_status": _take(pa.array(STATUSES, pa.string()), status),
                "om_matched_on": _take(pa.array(ID_FIELDS, pa.string()), kind),
                "om_last_synced_at": pa.array(at, _TS),
                "om_reason": _take(pa.array(texts, pa.string()), reason_index),
            }
        )
        return out, verdicts

    @staticmethod
    def _normalize(
        column: pa.Array, name: str, rows: np.ndarray, bad: dict[int, tuple[str, str, str]], has_id: np.ndarray
    ) -> pa.Array:
        """``name`` normalized for ``rows``; records invalid cells (first per row) and rows that have an identifier."""
        if len(rows) < len(column):
            column = column.take(pa.array(rows))
        result = normalize_table(pa.table({name: column}))
        for issue in result.errors:
            bad.setdefault(int(rows[issue.row]), (issue.column, issue.value, issue.reason))
        values = result.table.column(name).combine_chunks()
        has_id[rows[values.is_valid().to_numpy(zero_copy_only=False)]] = True
        return values


def _take(values: pa.Array, index: np.ndarray) -> pa.Array:
    """``values[index]`` with -1 meaning null."""
    mask = index < 0
    return values.take(numeric_array(np.where(mask, 0, index), mask=mask))


# ---------------------------------------------------------------------------- reading lists
def _label(spec: Any) -> str:
    return str(spec) if isinstance(spec, (str, Path)) else f"<{type(spec).__name__}>"


def _identifier_plan(plan: MappingPlan) -> MappingPlan:
    """The plan cut down to identifier fields: only those decide a status (profiled: mapping
    every column cost as much as reading the file). A preset that derives fields from the
    row (HeyReach-style events) keeps its whole plan, since derivation may need any field."""
    if plan.derive is not None:
        return plan
    columns = {f: src for f, src in plan.columns.items() if f in ID_FIELDS}
    return dataclasses.replace(plan, columns=columns, constants={}, order_by=None)


def _read_mapped(
    spec: Any, check: SourceCheck, preset: str, mapping_file: str | Path | None, reader_kwargs: dict[str, Any]
) -> Iterator[tuple[pa.RecordBatch, pa.RecordBatch]]:
    """(original batch, canonical identifier batch) pairs: the same reader and plan as sync's ``open_source``."""
    from sources.canonical import open_source
    from sources.mapping import apply_mapping, plan_mapping
    from sources.readers import read_source

    opened = open_source(spec, preset=preset, mapping_file=mapping_file, **reader_kwargs)
    plan, planned = opened.plan, None
    check.preset, check.reason = plan.preset, plan.reason
    for batch in read_source(spec, **reader_kwargs):
        if batch.schema.names != planned:  # as CanonicalSource: the rows may show columns the peek missed
            plan = _identifier_plan(plan_mapping(batch.schema.names, preset=plan.preset, mapping_file=mapping_file))
            planned = batch.schema.names
        check.rows += batch.num_rows
        yield batch, apply_mapping(batch, plan)


def _unify(tables: list[pa.Table]) -> pa.Table:
    """One table from sources with different columns (union, in order of first appearance)."""
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # same name, incompatible types: keep both as text
        return pa.concat_tables([_as_text(t) for t in tables], promote_options="permissive")


def _as_text(table: pa.Table) -> pa.Table:
    cols = [
        c if c.type == pa.string() or name in STATUS_COLUMNS or name == "_om_row" else _text_column(c)
        for name, c in zip(table.column_names, table.columns, strict=True)
    ]
    return pa.table(cols, names=table.column_names)


def _text_column(col: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    try:
        return col.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        import orjson

        return pa.array(
            [None if v is None else orjson.dumps(v, default=str).decode() for v in col.to_pylist()], pa.string()
        )


def check_known(
    source: Any,
    state_path: str | Path | None = None,
    *,
    preset: str = "auto",
    mapping_file: str | Path | None = None,
    chunk_rows: int = 1_000_000,
    **reader_kwargs: Any,
) -> KnownResult:
    """Check a prospect list against what this connector synced; never calls the API, never writes.

    ``source``: a path, glob, database URL, DataFrame or Arrow table/batch, or a list of
    them (read as ``sync`` reads them; ``reader_kwargs`` such as ``table=``/``query=`` go
    to the reader). ``state_path``: the sync state file (default
    ``.outreach_magic/state.duckdb``). Rows are checked ``chunk_rows`` at a time, so one
    join per chunk, not per read batch. The result keeps every original column (plus the
    provenance ``_om_source``/``_om_row``) and adds :data:`STATUS_COLUMNS`.
    """
    started = time.perf_counter()
    path = str(state_path if state_path is not None else state_mod.default_state_path())
    issues: list[KnownIssue] = []
    checks: list[SourceCheck] = []
    tables: list[pa.Table] = []
    with KnownIndex(path) as index:
        summary = index.summary()
        for spec in expand_specs(source):
            check = SourceCheck(_label(spec), "", "")
            checks.append(check)
            pairs = _read_mapped(spec, check, preset, mapping_file, reader_kwargs)
            for originals, canon in _chunks(pairs, chunk_rows):
                table, found = _check_chunk(index, originals, canon, check.spec)
                tables.append(table)
                issues.extend(found)
    table = _unify(tables) if tables else _empty_result()
    return KnownResult(table, summary, checks, issues, time.perf_counter() - started)


def _chunks(
    pairs: Iterable[tuple[pa.RecordBatch, pa.RecordBatch]], chunk_rows: int
) -> Iterator[tuple[list[pa.RecordBatch], list[pa.RecordBatch]]]:
    """Group read batches into chunks of about ``chunk_rows`` rows with one canonical schema."""
    originals: list[pa.RecordBatch] = []
    canon: list[pa.RecordBatch] = []
    pending = 0
    for original, canonical in pairs:
        if canon and canonical.schema != canon[0].schema:
            yield originals, canon
            originals, canon, pending = [], [], 0
        originals.append(original)
        canon.append(canonical)
        pending += original.num_rows
        if pending >= chunk_rows:
            yield originals, canon
            originals, canon, pending = [], [], 0
    if originals:
        yield originals, canon


def _check_chunk(
    index: KnownIndex, originals: list[pa.RecordBatch], canon: list[pa.RecordBatch], label: str
) -> tuple[pa.Table, list[KnownIssue]]:
    """One chunk: original columns + ``om_*`` columns, and the invalid cells as issues."""
    original = _unify([pa.Table.from_batches([b]) for b in originals])
    # A list checked before (an earlier output) gets fresh statuses, not a second set of columns.
    original = original.drop_columns([c for c in STATUS_COLUMNS if c in original.column_names])
    statuses, bad = index.check(pa.Table.from_batches(canon))
    found: list[KnownIssue] = []
    if bad:  # only the invalid rows' provenance is turned into Python values (to_pylist of 1M rows: 0.7 s)
        positions = sorted(bad)
        picked = pa.array(positions, pa.int64())
        names = original.column_names
        sources = original.column("_om_source").take(picked).to_pylist() if "_om_source" in names else None
        rows = original.column("_om_row").take(picked).to_pylist() if "_om_row" in names else None
        for i, row in enumerate(positions):
            column, value, reason = bad[row]
            found.append(KnownIssue(
                str(sources[i]) if sources else label, int(rows[i]) if rows else row + 1, column, value, reason
            ))
    for name in STATUS_COLUMNS:
        original = original.append_column(name, statuses.column(name))
    return original, found


def _empty_result() -> pa.Table:
    return pa.table(
        {
            "om_status": pa.array([], pa.string()),
            "om_matched_on": pa.array([], pa.string()),
            "om_last_synced_at": pa.array([], _TS),
            "om_reason": pa.array([], pa.string()),
        }
    )


# ---------------------------------------------------------------------------- dlt
def _as_arrow(items: TDataItems) -> tuple[pa.Table, str]:
    if isinstance(items, pa.Table):
        return items, "table"
    if isinstance(items, pa.RecordBatch):
        return pa.Table.from_batches([items]), "batch"
    rows = items if isinstance(items, list) else [items]
    return pa.Table.from_pylist(rows), "rows"


@dlt.transformer(name="unknown_leads")
def skip_known(
    items: TDataItems,
    state_path: str = str(state_mod.default_state_path()),
    drop: Sequence[str] = (KNOWN_LEAD,),
    tag: bool = True,
    preset: str | None = None,
) -> Iterator[TDataItems]:
    """Drop (and/or tag) rows Outreach Magic already holds, so an enrichment step skips them.

    ``items``: canonical rows (columns named like the API fields; dicts or Arrow), or raw
    export rows with ``preset`` (``"auto"`` or a preset name) to find their identifiers.
    Rows whose status is in ``drop`` are removed (``drop=()`` removes nothing); with
    ``tag`` the rest get the ``om_*`` columns. Items come back in the shape they came
    (dicts stay dicts, Arrow stays Arrow). The state is opened read-only once per batch::

        pipeline.run(prospects() | skip_known(state_path="state/om.duckdb") | enrich)
    """
    table, shape = _as_arrow(items)
    if table.num_rows == 0:
        yield items
        return
    canonical: pa.Table | pa.RecordBatch = table
    if preset is not None:
        from sources.mapping import apply_mapping, plan_mapping

        plan = plan_mapping(table.column_names, preset=preset)
        canonical = pa.Table.from_batches([apply_mapping(b, plan) for b in table.to_batches()])
    with KnownIndex(state_path) as index:
        statuses, _bad = index.check(canonical)
    if tag:
        for name in STATUS_COLUMNS:
            table = table.append_column(name, statuses.column(name))
    if drop:
        keep = pc.invert(pc.is_in(statuses.column("om_status"), value_set=pa.array(list(drop))))
        table = table.filter(keep)
    if shape == "rows":
        yield table.to_pylist()
    elif shape == "batch":
        yield from table.to_batches()
    else:
        yield table

"""The runner: sources → row-hash filter → dlt pipeline → outreach_magic destination → report.

One function, :func:`run_sync`, used by the CLI, the example pipelines and the
orchestrator glue, so every way of running behaves the same. Why it does what it does:

* **Rows confirmed before are dropped first.** Each canonical row gets a content hash;
  hashes of rows whose every event the API confirmed are kept in the state file, so a
  rerun over unchanged data costs little more than reading the source: no dlt extract,
  no normalization, no request.
* **Pending work first.** ``pipeline.run(data)`` with a pending load package would only
  finish that package and drop the new data (DESIGN.md), so pending packages are
  normalized and loaded before anything new is extracted.
* **dlt's working folder sits beside the state file**, so an orchestrator worker that
  keeps the state path keeps the pipeline too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from destinations.outreach_magic import settings
from destinations.outreach_magic import state as state_mod
from destinations.outreach_magic.arrow_literals import numeric_array, positions
from destinations.outreach_magic.exceptions import (
    ConfigurationError,
    OutreachMagicError,
)
from destinations.outreach_magic.read_ahead import read_ahead
from destinations.outreach_magic.sink import RunTotals, pop_totals, totals_for
from destinations.outreach_magic.staging import conform, new_run_id

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2
PIPELINE_NAME = "outreach_magic_sync"


@dataclass
class SyncRequest:
    """What to sync and how; every CLI flag maps to one field."""

    sources: list[Any]
    api_key: str | None = None
    preset: str = "auto"
    mapping: str | None = None
    table: str | None = None
    query: str | None = None
    cursor_column: str | None = None
    constants: dict[str, Any] = field(default_factory=dict)
    base_url: str = settings.DEFAULT_BASE_URL
    state_path: str = str(state_mod.default_state_path())
    dry_run: bool = False
    full_refresh: bool = False
    retry_rejected: bool = False
    batch_size: int = settings.DEFAULT_BATCH_SIZE
    concurrency: int = 4
    allow_insecure_http: bool = False
    stage_rows: int = 50_000
    read_rows: int = 20_000
    max_attempts: int = 8
    timeout: float = 30.0
    partition: str | None = None  # "i/n": sync only this worker's share of the leads (own state file each)

    def __repr__(self) -> str:
        return f"SyncRequest(sources={self.sources!r}, base_url={self.base_url!r}, api_key='***')"


@dataclass
class SourceInfo:
    spec: str
    preset: str
    reason: str
    unused: list[str]
    rows: int = 0
    issues: list[Any] = field(default_factory=list)


#: The staging counts a run's report adds up from its load jobs.
_STAGE_COUNTS = ("invalid", "partial", "merged", "unchanged", "skipped_rejected", "events", "applied", "rejected",
                 "failed")


@dataclass
class SyncReport:
    """What happened to every row of one run; ``to_dict`` is the ``--json`` output."""

    run_id: str
    base_url: str
    state_path: str
    dry_run: bool = False
    rows_read: int = 0
    rows_skipped_unchanged: int = 0
    invalid: int = 0
    partial: int = 0
    merged: int = 0
    unchanged: int = 0
    skipped_rejected: int = 0
    events: int = 0
    applied: int = 0
    rejected: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    seconds: float = 0.0
    delivery_seconds: float = 0.0
    sources: list[SourceInfo] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    failure_reasons: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    exit_code: int = EXIT_OK

    @property
    def needs_rerun(self) -> bool:
        """Some events failed transiently: a rerun sends exactly those."""
        return self.failed > 0

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "sources"}
        out["sources"] = [
            {**{k: v for k, v in s.__dict__.items() if k != "issues"},
             "issues": [{"kind": i.kind, "row": i.row, "message": i.message} for i in s.issues]}
            for s in self.sources
        ]
        out["needs_rerun"] = self.needs_rerun
        out["seconds"] = round(self.seconds, 3)
        out["delivery_seconds"] = round(self.delivery_seconds, 3)
        return out

    def absorb(self, totals: RunTotals) -> None:
        st = totals.stage
        for name in _STAGE_COUNTS:
            setattr(self, name, getattr(self, name) + getattr(st, name))
        self.requests += totals.requests
        self.retries += totals.retries
        self.throttled += totals.throttled
        self.delivery_seconds += totals.delivery_seconds
        self.ignored_columns = sorted(set(self.ignored_columns) | set(st.ignored_columns))
        self.samples = (self.samples + st.samples)[:5]
        for reason, n in totals.failure_reasons.items():
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + n


class RowFilter:
    """Adds ``_om_hash`` to canonical rows and drops rows whose hash was confirmed before.

    DuckDB computes the hash (the stored hashes are DuckDB's, so it stays the one to
    compute them) and returns that column alone; the rows stay in Arrow. The confirmed
    hashes are read once, at the first batch (after pending work has loaded, which adds
    some), into a sorted array that every batch is looked up in: 8 bytes per confirmed row.
    Before, each batch went through DuckDB whole and was anti-joined with the row_hashes
    table, which read all of it per batch: 27 ms a 20k-row batch of a rerun over 1M
    unchanged rows, against 18 ms now; on a first sync (nothing confirmed yet) 27 -> 11 ms.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, *, skip_known: bool) -> None:
        self.con = con
        self.skip_known = skip_known
        self.read = 0
        self.skipped = 0
        self._known: np.ndarray | None = None

    def __call__(self, batch: pa.RecordBatch | pa.Table, label: str) -> pa.Table:
        self.read += batch.num_rows
        table, _ignored = conform(batch, label, with_rid=False)
        table = table.drop_columns(["_om_hash"])
        fields = [*settings.CANONICAL_FIELDS, "_om_order"]
        names = ",".join(fields)
        # A position column puts the hashes back in row order: DuckDB does not promise the
        # order of a scan's output (preserve_insertion_order is off on this connection).
        self.con.register("t_batch", table.append_column("_om_pos", positions(table.num_rows)))
        try:
            got = self.con.execute(
                f"SELECT _om_pos AS pos, (hash('{names}', {', '.join(fields)}) & 9223372036854775807)::BIGINT AS h "
                "FROM t_batch"
            ).fetchnumpy()
        finally:
            self.con.unregister("t_batch")
        hashes = np.empty(table.num_rows, dtype=np.int64)
        hashes[got["pos"]] = got["h"]
        table = table.append_column("_om_hash", numeric_array(hashes))
        if self.skip_known:
            known = self._confirmed_hashes()
            if len(known):
                # Searched in sorted order: a binary search per row jumps around the known
                # hashes (8 MB for 1M rows) and misses the cache; sorted probes walk them in
                # order (35 -> 10 ms for 100,000 probes into 2M, measured for identity_filter).
                order = np.argsort(hashes, kind="stable")
                probe = hashes[order]
                at = np.minimum(np.searchsorted(known, probe), len(known) - 1)
                fresh = np.empty(len(hashes), dtype=bool)
                fresh[order] = known[at] != probe
                table = table.filter(numeric_array(fresh))
        self.skipped += batch.num_rows - table.num_rows
        return table

    def _confirmed_hashes(self) -> np.ndarray:
        if self._known is None:
            column = self.con.execute("SELECT hash FROM row_hashes").fetchnumpy()["hash"]
            self._known = np.sort(np.asarray(column, dtype=np.int64))
        return self._known


def _label(spec: Any) -> str:
    from sources.readers.columnar import is_frame

    if is_frame(spec):
        return "<frame>"
    if isinstance(spec, str) and "://" in spec:
        from sources.readers.sql import redact

        return str(redact(spec))
    return str(spec)


def _cursor_key(spec: Any, request: SyncRequest) -> str | None:
    """Incremental reads are kept per (database, table, cursor column) in the state file."""
    if not request.cursor_column or not isinstance(spec, str) or "://" not in spec or not request.table:
        return None
    return f"cursor:{_label(spec)}:{request.table}:{request.cursor_column}"


def _meta_get(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
    rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
    return str(rows[0][0]) if rows else None


def _meta_set(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
    con.execute("DELETE FROM meta WHERE key = ?", [key])
    con.execute("INSERT INTO meta VALUES (?, ?)", [key, value])


def _load_cursor(con: duckdb.DuckDBPyConnection, key: str) -> Any:
    text = _meta_get(con, key)
    return json.loads(text) if text is not None else None


def _cursor_tracker(cursors: dict[str, Any], key: str, column: str) -> Callable[[pa.RecordBatch], None]:
    from sources.readers import max_cursor

    def track(batch: pa.RecordBatch) -> None:
        if column in batch.schema.names:
            cursors[key] = max_cursor(batch, column, cursors[key])

    return track


def _save_cursors(state_path: str, target: str, cursors: dict[str, Any]) -> None:
    """Advance the cursors only after a run whose events were all confirmed or settled."""
    con = state_mod.connect(state_path, target=target)
    try:
        for key, value in cursors.items():
            if value is None:
                continue
            _meta_set(con, key, json.dumps(value.isoformat() if hasattr(value, "isoformat") else value))
    finally:
        con.close()


def _record_source_issues(state_path: str, request: SyncRequest, report: SyncReport, run_id: str) -> None:
    """Rows a reader had to skip (ragged, truncated, not an object) go to the ledger as invalid."""
    skipped = [(info, i) for info in report.sources for i in info.issues if i.row is not None]
    report.invalid += len(skipped)
    if not skipped or request.dry_run:
        return
    con = state_mod.connect(state_path, target=request.base_url)
    try:
        con.executemany(
            "INSERT INTO rejected VALUES (?, 'invalid', ?, ?, '', '', ?, NULL, now())",
            [(run_id, i.source or info.spec, i.row, f"{i.kind}: {i.message}") for info, i in skipped],
        )
    finally:
        con.close()


_DLT_WORK = "dlt_work_pending"


def _dlt_work_pending(con: duckdb.DuckDBPyConnection, state_dir: Path) -> bool:
    """Whether dlt may hold a package this runner extracted but did not finish loading.

    The runner marks the state before it extracts and clears the mark once the load has
    finished, so a run that stopped half-way (a crash, a fatal error) leaves it set and the
    next run loads that package first. A state file written before the mark existed says
    nothing: then dlt's own folder beside it decides.
    """
    mark = _meta_get(con, _DLT_WORK)
    return mark == "1" if mark is not None else (state_dir / "dlt" / PIPELINE_NAME).exists()


def _mark_dlt_work(con: duckdb.DuckDBPyConnection, *, pending: bool) -> None:
    _meta_set(con, _DLT_WORK, "1" if pending else "0")


def _load_pending(pipeline: Any) -> None:
    if pipeline.list_extracted_load_packages():
        pipeline.normalize()
    if pipeline.list_normalized_load_packages():
        pipeline.load()


def _configure_dlt() -> None:
    """dlt settings for this runner: uncompressed load files (they live seconds), and dlt's
    own logging quiet, because every failure it would log with a traceback is reported by
    the runner itself, once, in words (set RUNTIME__LOG_LEVEL to see dlt's logs)."""
    os.environ.setdefault("NORMALIZE__DATA_WRITER__DISABLE_COMPRESSION", "true")
    os.environ.setdefault("DATA_WRITER__DISABLE_COMPRESSION", "true")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", "CRITICAL")


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's malloc arenas for this process (unless the user set the cap already).

    glibc gives threads arenas of their own, up to 8 per core, and each keeps the memory
    its thread freed. Here a fresh thread per slice builds the events' JSON (a million
    objects of 600 bytes each), confirmations are written from another, the next slice is
    prepared in a third: the arenas' kept memory added 30-40 MB to a 1M-row sync's peak
    (the child sync of ``bench/sync.py``, paired runs: peak RSS 483-492 MB with glibc's
    default, 451-458 MB with two arenas, at the same speed; one arena was slower).
    Applies to arenas created after the call, so it is called before the sync starts any
    thread; a no-op off glibc, and when MALLOC_ARENA_MAX or GLIBC_TUNABLES sets the cap.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run_sync(
    request: SyncRequest,
    progress: Callable[[str], None] | None = None,
    tick: Callable[[int, int], None] | None = None,
) -> SyncReport:
    """Run one sync and say what happened to every row (never raises for expected failures)."""
    from sources.canonical import expand_specs, open_source

    started = time.perf_counter()
    _limit_malloc_arenas()
    run_id = new_run_id()
    state_path = str(Path(request.state_path))
    report = SyncReport(run_id=run_id, base_url=request.base_url, state_path=state_path, dry_run=request.dry_run)
    say = progress or (lambda _msg: None)
    try:
        if not request.api_key and not request.dry_run:
            raise ConfigurationError(
                "no API key: set OUTREACH_MAGIC_API_KEY, or api_key under [destination.outreach_magic] "
                "in .dlt/secrets.toml"
            )
        _configure_dlt()
        if not request.dry_run:
            # Refuse an insecure target before reading anything, not after staging it all.
            from destinations.outreach_magic.client import _check_base_url

            _check_base_url(request.base_url, request.allow_insecure_http)
        specs = expand_specs(request.sources)
        # Reader batches of 20k rows: larger ones buy little speed and cost peak memory.
        reader_kwargs: dict[str, Any] = {"batch_rows": request.read_rows}
        for key in ("table", "query", "cursor_column"):
            if getattr(request, key):
                reader_kwargs[key] = getattr(request, key)
        state_dir = Path(state_path).parent
        con = state_mod.connect(state_path, target=request.base_url)
        opened = []
        cursors: dict[str, Any] = {}
        for spec in specs:
            issues: list[Any] = []
            kwargs = dict(reader_kwargs, issues=issues)
            cursor_key = _cursor_key(spec, request)
            if cursor_key:
                # ">=" the mark: a row committed later with the mark's own timestamp is not
                # missed; rows read again are dropped by their hash at no cost.
                kwargs["cursor_start"] = _load_cursor(con, cursor_key)
                kwargs["cursor_inclusive"] = True
            src = open_source(spec, preset=request.preset, mapping_file=request.mapping,
                              constants=request.constants or None, **kwargs)
            label = _label(spec)
            info = SourceInfo(label, src.plan.preset, src.plan.reason, list(src.plan.unused))
            info.issues = issues
            if cursor_key:
                cursors[cursor_key] = None  # the highest value read this run
                src.on_raw = _cursor_tracker(cursors, cursor_key, str(request.cursor_column))
            report.sources.append(info)
            opened.append((src, info))
            say(f"{info.spec}: {info.reason}")
        row_filter = RowFilter(con, skip_known=not (request.full_refresh or request.retry_rejected))

        def rows() -> Iterator[pa.Table]:
            for src, info in opened:
                batches = iter(src)
                try:
                    for batch in batches:
                        info.rows += batch.num_rows
                        kept = row_filter(batch, info.spec)
                        if kept.num_rows:
                            yield kept
                finally:
                    close = getattr(batches, "close", None)  # release the source (a database cursor)
                    if close is not None:  # even when the load fails half-way
                        close()
                info.unused = list(src.plan.unused)  # the plan may have learnt columns while reading
                say(f"read {info.rows:,} rows from {info.spec}")

        def make_pipeline() -> Any:
            # dlt is imported here, not above: a rerun with nothing new and no unfinished
            # work never needs it (importing dlt and restoring the pipeline: 0.7 s of a
            # 3 s rerun over 1M unchanged rows).
            import dlt

            from destinations.outreach_magic import outreach_magic

            destination = outreach_magic(
                api_key=request.api_key or "dry-run",
                base_url=request.base_url,
                state_path=state_path,
                request_batch_size=request.batch_size,
                max_concurrency=request.concurrency,
                full_refresh=request.full_refresh,
                retry_rejected=request.retry_rejected,
                dry_run=request.dry_run,
                allow_insecure_http=request.allow_insecure_http,
                stage_rows=request.stage_rows,
                max_attempts=request.max_attempts,
                timeout=request.timeout,
                run_id=run_id,
                partition=request.partition,
            )
            made = dlt.pipeline(
                pipeline_name=PIPELINE_NAME,
                pipelines_dir=str(state_dir / "dlt"),
                destination=destination,
                dataset_name="outreach_magic",
            )
            # No copy of dlt's pipeline state goes to the API: it could never be restored
            # from there, the sync's own state lives in the state file, and writing that row
            # (Table.from_pylist) made the first sync of a new state import pandas (see
            # destinations/outreach_magic/arrow_literals.py). This pipeline only; a user's
            # own pipeline keeps its setting.
            made.config.restore_from_destination = False
            return made

        totals = totals_for(run_id)
        totals.say, totals.tick = progress, tick
        pipeline: Any = None
        try:
            if _dlt_work_pending(con, state_dir):
                con.close()  # the sink opens the state itself; pending packages load first
                pipeline = make_pipeline()
                _load_pending(pipeline)
                con = state_mod.connect(state_path, target=request.base_url)
                _mark_dlt_work(con, pending=False)
                row_filter.con = con
            # Look at the first surviving batch before involving dlt: a rerun over
            # unchanged data then costs reading and hashing the source, nothing more.
            pending = rows()
            first = next(pending, None)
            if first is not None:
                import dlt

                _mark_dlt_work(con, pending=True)  # before dlt writes a package; cleared once loaded
                pipeline = pipeline or make_pipeline()
                # The source is read, mapped and filtered one batch ahead, in a thread, while
                # dlt writes the previous batch to its load file: the two halves of extract
                # then share the two cores (Arrow, DuckDB and the Parquet writer release the GIL).
                ahead = read_ahead(pending, name="outreach-magic-read")
                try:
                    pipeline.extract(dlt.resource(itertools.chain([first], ahead), name="rows",
                                                  write_disposition="append"))
                finally:
                    ahead.close()  # the thread is done with the state connection before it closes
            con.close()
            if first is not None:
                pipeline.normalize()
            if pipeline is not None and pipeline.list_normalized_load_packages():
                say("staging, diffing and sending…")
                pipeline.load()
            if first is not None:
                con = state_mod.connect(state_path, target=request.base_url)
                _mark_dlt_work(con, pending=False)
        finally:
            with contextlib.suppress(Exception):
                con.close()
        report.rows_read = row_filter.read
        report.rows_skipped_unchanged = row_filter.skipped
        report.unchanged += row_filter.skipped
        _record_source_issues(state_path, request, report, run_id)
        totals = totals_for(run_id)
        if cursors and not request.dry_run and totals.fatal is None and not totals.stage.failed:
            _save_cursors(state_path, request.base_url, cursors)
    except OutreachMagicError as exc:
        report.error = str(exc)
        report.exit_code = EXIT_FAILED
    except Exception as exc:  # dlt wraps the sink's terminal errors; say what it was, no traceback
        fatal = totals_for(run_id).fatal
        cause = fatal if fatal is not None else _root_cause(exc)
        report.error = str(cause) if isinstance(cause, OutreachMagicError) else f"{type(cause).__name__}: {cause}"
        report.exit_code = EXIT_FAILED
    finally:
        report.absorb(pop_totals(run_id))
        report.seconds = time.perf_counter() - started
    if report.exit_code == EXIT_OK and (report.invalid or report.partial or report.rejected or report.failed):
        report.exit_code = EXIT_PARTIAL
    return report


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    cur: BaseException | None = exc
    best: BaseException = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OutreachMagicError):
            return cur
        best = cur
        cur = cur.__cause__ or cur.__context__ or getattr(cur, "exception", None)
    return best

"""One load job: stage a file of canonical rows, send what changed, confirm what the API applied.

This is the body of the ``@dlt.destination`` sink, kept free of dlt so it can be called
and tested directly. dlt records a job as done only after the sink returns, so a crash
anywhere in here makes dlt (or our runner) call it again with the same file: staging
then diffs against what was confirmed and resends only the rest.

The file is staged in slices of ``stage_rows`` rows that pass, in order, through a
pipeline of threads (:func:`sync_file`): prepared two slices ahead, resolved one slice
ahead against the state plus the events in flight, delivered, their confirmations
written by one writer in order. At most four slices are held, so memory stays bounded
whatever the file's size. A lead whose rows fall in two slices is still one lead (the
second slice finds it through the identity index, or through the first slice's new
identifiers while those are in flight); only the order column's "latest wins" is then
applied per slice, the later slice winning.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from destinations.outreach_magic.arrow_literals import literal

from . import state
from .client import DeliveryClient, DeliveryStats, Outcomes
from .identity_filter import IdentityFilter
from .staging import StageReport, Staging, Unsettled, new_run_id


@dataclass
class SinkOptions:
    """Everything a load job needs besides the rows; built from dlt config by the factory."""

    api_key: str
    base_url: str
    state_path: str
    batch_size: int = 100
    max_batch_bytes: int = 5 * 1024 * 1024
    max_concurrency: int = 4
    timeout: float = 30.0
    max_attempts: int = 8
    workspace_id: str | None = None
    platform: str | None = None
    full_refresh: bool = False
    retry_rejected: bool = False
    dry_run: bool = False
    allow_insecure_http: bool = False
    stage_rows: int = 50_000
    run_id: str = ""
    partition: tuple[int, int] | None = None  # (index, count): this worker's share of the leads

    def __repr__(self) -> str:  # never show the key
        shown = {k: v for k, v in asdict(self).items() if k != "api_key"}
        return f"SinkOptions({shown}, api_key='***')"


@dataclass
class RunTotals:
    """What all load jobs of one run did: staging counts plus delivery counters."""

    stage: StageReport = field(default_factory=StageReport)
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    splits: int = 0
    delivery_seconds: float = 0.0
    failure_reasons: dict[str, int] = field(default_factory=dict)
    fatal: Exception | None = None  # the run-stopping error, for the runner's report
    unsettled: Unsettled = field(default_factory=Unsettled)  # whether an event failed (no more row hashes)
    # Progress hooks the runner sets: a message, and (events done, events of this slice).
    say: Callable[[str], None] | None = None
    tick: Callable[[int, int], None] | None = None

    def add_delivery(self, stats: DeliveryStats) -> None:
        self.delivery_seconds += stats.seconds
        self.requests += stats.requests
        self.retries += stats.retries
        self.throttled += stats.throttled
        self.splits += stats.splits


_TOTALS: dict[str, RunTotals] = {}
_LOCK = threading.Lock()


def totals_for(run_id: str) -> RunTotals:
    """The running totals of ``run_id`` (created on first use; the runner reads them at the end)."""
    with _LOCK:
        return _TOTALS.setdefault(run_id, RunTotals())


def pop_totals(run_id: str) -> RunTotals:
    with _LOCK:
        return _TOTALS.pop(run_id, RunTotals())


def _defaults(table: pa.Table, opts: SinkOptions) -> pa.Table:
    """Fill ``workspace_id``/``platform`` from config where a row has none."""
    for name, value in (("workspace_id", opts.workspace_id), ("platform", opts.platform)):
        if not value:
            continue
        if name in table.column_names:
            col = table.column(name).cast(pa.string())
            filled = pc.fill_null(col, literal(value, pa.string()))
            table = table.set_column(table.column_names.index(name), name, filled)
        else:
            table = table.append_column(name, pa.repeat(literal(value, pa.string()), table.num_rows))
    return table


def _slices(path: str, stage_rows: int) -> Iterator[pa.Table]:
    # pre_buffer off: with it, Arrow buffers the column chunks of the whole file up front
    # (the 1M-row load file: 79 MB of Arrow memory against 31 MB without, same speed).
    reader = pq.ParquetFile(path, pre_buffer=False)
    columns = _filled_columns(reader)
    for batch in reader.iter_batches(batch_size=stage_rows, columns=columns):
        yield pa.Table.from_batches([batch])


def _filled_columns(reader: pq.ParquetFile) -> list[str] | None:
    """The columns that hold a value somewhere, by the file's statistics (None: all of them).

    Load files carry every canonical column, and exports fill a fraction (14 of 39 in the
    benchmark): the empty ones are left unread, and staging adds them back as nulls
    (1M rows: 0.81 -> 0.44 s of CPU to read). A column without null-count statistics is read.
    """
    meta = reader.metadata
    empty = set(meta.schema.names)
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or stats.null_count < group.num_rows:
                empty.discard(chunk.path_in_schema.split(".", 1)[0])
    if not empty:
        return None
    return [name for name in reader.schema_arrow.names if name not in empty]


def prepare_table(table: pa.Table, opts: SinkOptions, *, source_label: str = "rows",
                  known: IdentityFilter | None = None, writer: Executor | None = None,
                  unsettled: Unsettled | None = None) -> Staging:
    """Prepare one slice (:meth:`Staging.prepare`) on a connection of its own, so that it
    can run beside another slice's delivery."""
    con = state.connect(opts.state_path, target=opts.base_url)
    try:
        staging = Staging(
            con,
            run_id=opts.run_id,
            full_refresh=opts.full_refresh,
            retry_rejected=opts.retry_rejected,
            record=not opts.dry_run,
            partition=opts.partition,
            known=known,
            writer=writer,
            unsettled=unsettled,
        )
        staging.prepare(_defaults(table, opts), source_label=source_label)
    except BaseException:
        con.close()
        raise
    return staging


def stage_table(table: pa.Table, opts: SinkOptions, *, source_label: str = "rows") -> Staging:
    """Stage one slice: prepare it, then resolve it against the state as it is now."""
    staging = prepare_table(table, opts, source_label=source_label)
    _or_close(staging, staging.resolve)
    return staging


def _or_close(staging: Staging, step: Callable[[], object]) -> None:
    """Run one step of a pass (resolve, resolve again); if it fails, close the pass (its
    connection would keep the state file open) and raise."""
    try:
        step()
    except BaseException:
        staging.close()
        raise


def deliver_staged(
    staging: Staging,
    opts: SinkOptions,
    *,
    client: DeliveryClient | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunTotals:
    """Send a staged slice's events, confirm what the API applied, then close its connection."""
    try:
        _, written = _deliver(staging, opts, client=client, on_progress=on_progress)
        totals_for(opts.run_id).stage.add(written.result())
    finally:
        staging.close()
    return totals_for(opts.run_id)


def _deliver(
    staging: Staging,
    opts: SinkOptions,
    *,
    client: DeliveryClient | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[bool, Future[StageReport]]:
    """Send a staged slice's events and queue the writes of what the API applied.

    Returns whether the API applied every event (known when the last answer is in) and the
    future of the pass's report, complete once its last confirmations are written. The
    connection stays open: the next slice may be resolved against this one meanwhile.
    """
    totals = totals_for(opts.run_id)
    if opts.dry_run:
        staging.report.samples = staging.samples(3)
        done: Future[StageReport] = Future()
        done.set_result(staging.report)
        return False, done
    failed = 0
    n_events = staging.report.events
    if n_events:
        client = client or make_client(opts)
        if totals.say:
            totals.say(f"sending {n_events:,} events to {opts.base_url}")
        if on_progress is None and totals.tick is not None:
            tick = totals.tick

            def on_progress(done: int) -> None:
                tick(done, n_events)

        def on_outcomes(outcomes: Outcomes) -> None:
            nonlocal failed
            if outcomes.all_applied:  # the usual case: no item to look at one by one
                staging.confirm(outcomes.keys)
                return
            applied = [o.key for o in outcomes if o.status == "applied"]
            if len(applied) < len(outcomes):
                for o in outcomes:
                    if o.status == "rejected":
                        staging.reject(o.key, o.errors)
                    elif o.status != "applied":
                        failed += 1
                        reason = o.reason or "failed"
                        totals.failure_reasons[reason] = totals.failure_reasons.get(reason, 0) + 1
            staging.confirm(applied)

        try:
            stats = client.deliver_batches(staging.request_batches(opts.batch_size), on_outcomes,
                                           on_progress=on_progress)
        except BaseException:
            staging.flush()  # whatever was confirmed before an error stays confirmed
            raise
        totals.add_delivery(stats)
    if failed and staging.unsettled is not None:  # before this pass's last write is queued
        staging.unsettled.mark_failed()
    return staging.report.rejected == 0 and failed == 0, staging.finish_later(failed=failed)


def sync_table(
    table: pa.Table,
    opts: SinkOptions,
    *,
    source_label: str = "rows",
    client: DeliveryClient | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> RunTotals:
    """Stage, deliver and confirm one table of canonical rows (one slice)."""
    staging = stage_table(table, opts, source_label=source_label)
    return deliver_staged(staging, opts, client=client, on_progress=on_progress)


def make_client(opts: SinkOptions) -> DeliveryClient:
    return DeliveryClient(
        api_key=opts.api_key,
        base_url=opts.base_url,
        batch_size=opts.batch_size,
        max_batch_bytes=opts.max_batch_bytes,
        max_concurrency=opts.max_concurrency,
        timeout=opts.timeout,
        max_attempts=opts.max_attempts,
        allow_insecure_http=opts.allow_insecure_http,
    )


def sync_file(path: str, opts: SinkOptions, *, source_label: str = "rows",
              on_progress: Callable[[int], None] | None = None) -> RunTotals:
    """Sync one parquet load file, slice by slice (bounded memory).

    Three stages run at once, each slice passing through them in order, each stage on a
    thread and a DuckDB connection of its own (DuckDB and Arrow release the GIL):

    1. *prepare* (normalize, validate, group, merge: the slice alone) runs ``PREPARE_AHEAD``
       slices ahead, on a helper 10 nice levels down;
    2. *resolve* (match against the identity index, diff against the confirmed values,
       build the events and start writing their JSON) runs one slice ahead of delivery,
       against the state plus the events of the slice being delivered, taken as confirmed
       (:meth:`Staging.resolve`'s ``pending``);
    3. *deliver* sends the slice's events and writes what the API confirmed.

    Before, a slice was resolved between two deliveries and the API idled meanwhile (a
    third of a 1M-row sync's time). A slice resolved against events that were then not all
    applied is resolved again once their confirmations are written, before it is sent: a
    lead straddling two slices still ends as one entity, diffed against what the API holds.
    """
    if not opts.run_id:
        opts.run_id = new_run_id()
    client = None if opts.dry_run else make_client(opts)
    totals = totals_for(opts.run_id)
    label = source_label or Path(path).name
    slices = _slices(path, opts.stage_rows)
    known = IdentityFilter()  # one per file: its passes resolve in order

    def prepare_next() -> Staging | None:
        table = next(slices, None)
        if table is None:
            return None
        return prepare_table(table, opts, source_label=label, known=known, writer=writing,
                             unsettled=totals.unsettled)

    def resolve_next(prepared: Future[Staging | None], pending: list[Staging],
                     written: Future[StageReport] | None) -> Staging | None:
        staging = prepared.result()
        if staging is not None:
            try:
                if written is not None:  # every pass before the pending ones is written
                    written.result()
                staging.resolve(pending)
                if not opts.dry_run:
                    staging.prime(opts.batch_size)
            except BaseException:
                staging.close()
                raise
        return staging

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-magic-prepare",
                            initializer=_yield_to_delivery) as preparing, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-magic-resolve") as resolving, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="outreach-magic-write") as writing:
        prepared = collections.deque(preparing.submit(prepare_next) for _ in range(PREPARE_AHEAD))
        feeding = prepared.popleft()  # the prepared slice the resolve stage works on
        resolved: Future[Staging | None] = resolving.submit(resolve_next, feeding, [], None)
        staging: Staging | None = None
        # Delivered passes, each with the future of its last write, closed once written (the
        # resolve that reads one as its pending pass has finished by the time it is here).
        delivered: collections.deque[tuple[Staging, Future[StageReport]]] = collections.deque()
        applied_all = True
        try:
            while True:
                staging = resolved.result()
                _close_written(delivered, totals, wait=False)
                if staging is None:
                    break
                if staging.speculative:
                    if applied_all:
                        staging.accept()
                    else:  # resolved against events the API did not all apply: again, as written
                        _close_written(delivered, totals, wait=True)
                        _or_close(staging, staging.re_resolve)
                prepared.append(preparing.submit(prepare_next))
                feeding = prepared.popleft()
                # Resolved against the state plus the slice about to be delivered and the one
                # delivered before (its last writes may still be queued); older ones are waited
                # for (they almost always are written by then: the writer works in order).
                pending = [] if opts.dry_run else [*([delivered[-1][0]] if delivered else []), staging]
                written = delivered[-2][1] if len(delivered) >= 2 else None
                resolved = resolving.submit(resolve_next, feeding, pending, written)
                applied_all, final = _deliver(staging, opts, client=client, on_progress=on_progress)
                delivered.append((staging, final))
                staging = None
            _close_written(delivered, totals, wait=True)
        finally:
            for future in (resolved, feeding, *prepared):  # closing a slice twice is harmless
                _discard(future)
            if staging is not None:
                staging.close()
            for left, _ in delivered:  # after an error: wait for what is queued, then close
                left.close()
    return totals


def _close_written(delivered: collections.deque[tuple[Staging, Future[StageReport]]], totals: RunTotals, *,
                   wait: bool) -> None:
    """Count and close the delivered passes whose last write is done, oldest first (``wait``:
    all of them, once written). A failed write is raised (the load job then fails, and dlt
    retries it)."""
    while delivered and (wait or delivered[0][1].done()):
        staging, final = delivered[0]
        report = final.result()
        delivered.popleft()
        totals.stage.add(report)
        staging.close()


# Slices prepared ahead of the one being resolved (see :func:`sync_file`).
PREPARE_AHEAD = 2


def _yield_to_delivery(step: int = 10) -> None:
    """Lower the calling thread's CPU priority by ``step`` nice levels (Linux; elsewhere a
    no-op). The helper thread's initializer: it runs once, in that thread.

    The helper thread prepares work ahead; the thread that resolves and delivers is the one
    the run waits for. On two busy cores (the sandbox, or other jobs, beside this process) the
    scheduler then gives the delivery the CPU first and the preparation the rest: paired
    1M-row child syncs of bench/sync.py were 0.1-1.6 s faster in each of five pairs.
    """
    tid = threading.get_native_id()
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + step, 19))


def _discard(ahead: Future[Staging | None]) -> None:
    """Close a slice prepared ahead of a failure (its connection would keep the file open)."""
    if ahead.cancel():
        return
    with contextlib.suppress(BaseException):
        staging = ahead.result()
        if staging is not None:
            staging.close()


def describe(opts: SinkOptions) -> dict[str, Any]:
    """Options as shown in reports: never the key."""
    return {k: v for k, v in asdict(opts).items() if k != "api_key"}

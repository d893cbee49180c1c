"""Scale out one sync: N hash partitions run as N parallel worker processes, their reports summed.

Every worker reads the whole source and groups all rows into leads first, then keeps the
leads whose key hashes to its index (``--partition i/n``, see ``staging.py``), so the rows
of one lead never land in two workers. Each partition has its own state file: DuckDB
files take one writer, and a partition remembers only what it sent. On one machine this
module runs the workers as processes (spawned, not forked: the parent may hold DuckDB
connections and HTTP pools); under Airflow or Dagster each partition is one task or one
asset partition with the same ``partition`` and state path, so N workers on N machines
do the same thing (see the README, "Scale-out by partition").

Keep N fixed for a state folder: a lead's partition depends on N, so changing N makes
each lead land in a partition that has not seen it and sends it once more (harmless:
upserts are idempotent, but it costs requests).

    python -m pipelines.orchestration.partitioned leads.csv --partitions 4 --state-dir state/ --json
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipelines.runner import EXIT_OK, SyncReport, SyncRequest, run_sync

# Counts that add up across partitions: each event, request and invalid row belongs to one
# partition, and a row's confirmed hash is recorded by the partition that owns its lead.
SUMMED = ("rows_skipped_unchanged", "invalid", "partial", "merged", "unchanged", "skipped_rejected", "events",
          "applied", "rejected", "failed", "requests", "retries", "throttled")


def partition_request(request: SyncRequest, index: int, count: int, state_dir: str | Path) -> SyncRequest:
    """The request of worker ``index`` of ``count``: same sources, its own partition and state file."""
    state = Path(state_dir) / f"part-{index}-of-{count}" / "state.duckdb"
    state.parent.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(request, partition=f"{index}/{count}", state_path=str(state))


@dataclass
class PartitionedReport:
    """The summed report of all partitions, and each partition's own."""

    total: SyncReport
    partitions: list[SyncReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return self.total.exit_code

    def to_dict(self) -> dict[str, Any]:
        return {**self.total.to_dict(), "partitions": [p.to_dict() for p in self.partitions]}


def sum_reports(reports: list[SyncReport]) -> SyncReport:
    """One report for the whole sync.

    Counts of events, requests and outcomes add up; ``rows_read`` does not (every partition
    reads every row), so it is the largest partition's; ``seconds`` is the slowest worker's
    (they ran in parallel); the exit code is the worst one.
    """
    if not reports:
        raise ValueError("no partition reports to sum")
    first = reports[0]
    total = SyncReport(run_id="+".join(r.run_id for r in reports), base_url=first.base_url,
                       state_path=str(Path(first.state_path).parent.parent), dry_run=first.dry_run)
    for name in SUMMED:
        setattr(total, name, sum(getattr(r, name) for r in reports))
    total.rows_read = max(r.rows_read for r in reports)
    total.seconds = max(r.seconds for r in reports)
    total.sources = first.sources
    total.ignored_columns = sorted({c for r in reports for c in r.ignored_columns})
    total.samples = [s for r in reports for s in r.samples][:5]
    for r in reports:
        for reason, n in r.failure_reasons.items():
            total.failure_reasons[reason] = total.failure_reasons.get(reason, 0) + n
    errors = [f"partition {i}: {r.error}" for i, r in enumerate(reports) if r.error]
    total.error = "; ".join(errors) or None
    total.exit_code = max(r.exit_code for r in reports)
    return total


def run_partitioned(request: SyncRequest, count: int, state_dir: str | Path,
                    max_workers: int | None = None) -> PartitionedReport:
    """Run ``count`` partitions of ``request`` in parallel processes and sum their reports.

    ``request.partition`` and ``request.state_path`` are replaced per worker. Frames in
    ``request.sources`` are pickled to every worker; prefer paths and URLs.
    """
    if count < 1:
        raise ValueError("count must be at least 1")
    requests = [partition_request(request, i, count, state_dir) for i in range(count)]
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max_workers or count, mp_context=ctx) as pool:
        reports = list(pool.map(run_sync, requests))
    return PartitionedReport(total=sum_reports(reports), partitions=reports)


def main(argv: list[str] | None = None) -> int:
    from pipelines.sync_cli import add_sync_arguments, format_report, request_from_args

    parser = argparse.ArgumentParser(prog="python -m pipelines.orchestration.partitioned",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sync_arguments(parser)
    parser.add_argument("--partitions", type=int, required=True, help="number of parallel workers (N)")
    parser.add_argument("--state-dir", required=True, help="folder holding one state file per partition")
    args = parser.parse_args(argv)
    if args.partition or args.state or args.sandbox:
        parser.error("--partition, --state and --sandbox do not apply: use --partitions and --state-dir")
    result = run_partitioned(request_from_args(args), args.partitions, args.state_dir)
    if args.json:
        sys.stdout.write(orjson.dumps(result.to_dict()).decode() + "\n")
    else:
        for i, part in enumerate(result.partitions):
            print(f"partition {i}/{args.partitions}: {part.events:,} events, {part.applied:,} applied, "
                  f"exit {part.exit_code}")
        print(format_report(result.total))
    return result.exit_code if result.exit_code != EXIT_OK else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``outreach-magic sync`` and ``outreach-magic rejected``: argument parsing and the report.

The work itself is :func:`pipelines.runner.run_sync`; this module turns flags into a
:class:`SyncRequest` and a :class:`SyncReport` into text or JSON, and maps the outcome to
the exit code (0 all applied, 1 some rows invalid/rejected/failed, 2 nothing could be done).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from destinations.outreach_magic import settings
from destinations.outreach_magic import state as state_mod
from destinations.outreach_magic.exceptions import ConfigurationError
from pipelines.progress import Progress
from pipelines.runner import EXIT_FAILED, SyncReport, SyncRequest, run_sync

API_KEY_ENV = "OUTREACH_MAGIC_API_KEY"
CONSTANT_FLAGS = ("workspace_id", "platform", "import_name", "list_source", "icp", "lead_status", "exclusion_reason")


def resolve_api_key() -> str | None:
    """``OUTREACH_MAGIC_API_KEY``, else dlt secrets (env ``DESTINATION__OUTREACH_MAGIC__API_KEY`` or secrets.toml)."""
    key = os.environ.get(API_KEY_ENV)
    if key:
        return key
    try:
        import dlt

        value: Any = dlt.secrets.get("destination.outreach_magic.api_key")
        return str(value) if value else None
    except Exception:
        return None


def add_source_arguments(parser: argparse.ArgumentParser, mapping_help: str) -> None:
    """What to read and how to map it: shared by ``sync`` and ``known``, which read alike."""
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="file or glob (CSV, JSONL, JSON, Parquet), DuckDB file, or SQL database URL")
    parser.add_argument("--preset", default="auto", help="apollo, zoominfo, lusha, clearbit, clay, heyreach, prosp, "
                        "canonical, generic, or auto (default)")
    parser.add_argument("--mapping", help=mapping_help)
    parser.add_argument("--table", help="table to read from a DuckDB file or SQL database")
    parser.add_argument("--query", help="SQL query to read from a DuckDB file or SQL database")


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser, "TOML mapping file (columns, constants, order_by)")
    parser.add_argument("--cursor-column", help="incremental cursor column for SQL tables (e.g. updated_at)")
    for flag in CONSTANT_FLAGS:
        parser.add_argument("--" + flag.replace("_", "-"), dest=flag, help=f"set {flag} on every row")
    parser.add_argument("--tag", action="append", dest="tags", help="add a tag to every row (repeatable)")
    parser.add_argument("--base-url", default=None, help=f"API base URL (default {settings.DEFAULT_BASE_URL})")
    parser.add_argument("--state", default=None, help="state file (default .outreach_magic/state.duckdb; "
                        "with --sandbox a temporary one)")
    parser.add_argument("--dry-run", action="store_true", help="do everything except send; show sample payloads")
    parser.add_argument("--full-refresh", action="store_true", help="send everything again, changed or not")
    parser.add_argument("--retry-rejected", action="store_true", help="resend rows the API rejected before")
    parser.add_argument("--batch-size", type=int, default=settings.DEFAULT_BATCH_SIZE,
                        help=f"events per request (1..{settings.MAX_ITEMS_PER_REQUEST}, default 100)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight at most (default 4)")
    parser.add_argument("--allow-insecure-http", action="store_true",
                        help="allow sending the API key over plain HTTP to a non-loopback host")
    parser.add_argument("--partition", help="i/n: sync only partition i (0-based) of n, by lead; each partition "
                        "needs its own --state")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    parser.add_argument("--sandbox", action="store_true", help="start an embedded sandbox and sync into it")


def request_from_args(args: argparse.Namespace) -> SyncRequest:
    constants: dict[str, Any] = {f: getattr(args, f) for f in CONSTANT_FLAGS if getattr(args, f, None)}
    if getattr(args, "tags", None):
        constants["tags"] = list(args.tags)
    return SyncRequest(
        sources=list(args.sources),
        api_key=resolve_api_key(),
        preset=args.preset,
        mapping=args.mapping,
        table=args.table,
        query=args.query,
        cursor_column=args.cursor_column,
        constants=constants,
        base_url=(args.base_url or settings.DEFAULT_BASE_URL).rstrip("/"),
        state_path=args.state or str(state_mod.default_state_path()),
        dry_run=args.dry_run,
        full_refresh=args.full_refresh,
        retry_rejected=args.retry_rejected,
        batch_size=args.batch_size,
        concurrency=args.concurrency,
        allow_insecure_http=args.allow_insecure_http,
        partition=args.partition,
    )


def format_report(report: SyncReport) -> str:
    """The human summary: one line per count, then what to do next."""
    lines = []
    for src in report.sources:
        lines.append(f"source {src.spec}: {src.reason}; {src.rows:,} rows")
        if src.unused:
            lines.append(f"  unused columns (never sent): {', '.join(src.unused)}")
    if report.ignored_columns:
        lines.append(f"ignored non-API columns: {', '.join(report.ignored_columns)}")
    verb = "would send" if report.dry_run else "sent"
    rows = [
        ("rows read", report.rows_read),
        ("invalid (held back, see `outreach-magic rejected`)", report.invalid),
        ("partly sent (unmatchable fields dropped, see ledger)", report.partial),
        ("merged into another row's lead/company", report.merged),
        ("unchanged since the last confirmed sync", report.unchanged),
        ("rejected before, unchanged (not resent)", report.skipped_rejected),
        (f"events {verb}", report.events),
    ]
    if not report.dry_run:
        rows += [
            ("applied", report.applied),
            ("rejected by the API", report.rejected),
            ("failed (will be resent next run)", report.failed),
            ("requests", report.requests),
            ("retries", report.retries),
        ]
    width = max(len(label) for label, _ in rows)
    lines.append(f"Outreach Magic sync {report.run_id} → {report.base_url}{' (dry run)' if report.dry_run else ''}")
    lines += [f"  {label:<{width}}  {value:>10,}" for label, value in rows]
    lines.append(f"  {'seconds':<{width}}  {report.seconds:>10.1f}")
    if report.dry_run and report.samples:
        lines.append("sample payloads:")
        lines += ["  " + orjson.dumps(s).decode() for s in report.samples]
    if report.failure_reasons:
        for reason, n in sorted(report.failure_reasons.items(), key=lambda kv: -kv[1])[:5]:
            lines.append(f"  failed: {n:,} × {reason}")
    if report.needs_rerun:
        lines.append("Some events failed after retries: run the same command again to send exactly those.")
    if report.error:
        lines.append(f"error: {report.error}")
    lines.append(f"state: {report.state_path}")
    return "\n".join(lines)


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        request = request_from_args(args)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    progress = Progress(quiet=False)
    if args.sandbox:
        from sandbox import running_sandbox

        key = request.api_key or "sandbox-key"
        with running_sandbox([key]) as sb:
            request.api_key = key
            request.base_url = sb.url
            if not args.state:
                request.state_path = str(Path(".outreach_magic") / "sandbox-state.duckdb")
                Path(request.state_path).unlink(missing_ok=True)
            progress.message(f"embedded sandbox at {sb.url}")
            report = _run(request, progress)
    else:
        report = _run(request, progress)
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_dict()).decode() + "\n")
    else:
        print(format_report(report))
    return report.exit_code


def _run(request: SyncRequest, progress: Progress) -> SyncReport:
    return run_sync(request, progress=progress.message, tick=progress.tick)


def cmd_rejected(args: argparse.Namespace) -> int:
    path = args.state or str(state_mod.default_state_path())
    try:
        con = state_mod.connect(path, read_only=True)
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    rows = con.execute(
        'SELECT created_at, run_id, origin, source, row, "column", value, reason FROM rejected '
        "ORDER BY created_at, source, row"
    ).fetchall()
    con.close()
    header = ["created_at", "run_id", "origin", "source", "row", "column", "value", "reason"]
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        print(f"{len(rows):,} rejected rows written to {args.csv}")
        return 0
    if not rows:
        print("no rejected rows")
        return 0
    for created, _run_id, origin, source, row, column, value, reason in rows:
        where = f"{source} row {row}" + (f", column {column}" if column else "")
        shown = f" value {value!r}" if value else ""
        print(f"{created:%Y-%m-%d %H:%M:%S} [{origin}] {where}:{shown} {reason}")
    print(f"{len(rows):,} ledger entries (invalid, partly sent or rejected by the API); a later sync retries "
          "rejected rows when their data changes, "
          "or all of them with --retry-rejected")
    return 0


def add_parsers(sub: Any) -> None:
    sync = sub.add_parser("sync", help="sync sources into Outreach Magic")
    add_sync_arguments(sync)
    sync.set_defaults(func=cmd_sync)
    rejected = sub.add_parser("rejected", help="list rows held back or rejected, with reasons")
    rejected.add_argument("--state", default=None, help="state file (default .outreach_magic/state.duckdb)")
    rejected.add_argument("--csv", help="write them to this CSV file instead")
    rejected.set_defaults(func=cmd_rejected)

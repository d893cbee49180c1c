"""``outreach-magic known``: which rows of a prospect list Outreach Magic already holds.

The work is :func:`destinations.outreach_magic.known.check_known` (offline, read-only);
this module parses flags, writes the two outputs and prints the summary. Exit codes:
0 checked, 2 nothing could be checked (no state file, unreadable source, bad flags).

Outputs: ``--out-known`` gets the ``known_lead`` and ``known_company`` rows, ``--out-new``
the ``new`` and ``invalid`` ones, each with every original column plus ``om_status``,
``om_matched_on``, ``om_last_synced_at`` and ``om_reason``, in input order. The format
follows the extension: ``.csv`` (default for anything else), ``.parquet``, ``.jsonl``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from destinations.outreach_magic import state as state_mod
from destinations.outreach_magic.exceptions import OutreachMagicError
from destinations.outreach_magic.known import (
    INVALID,
    KNOWN_COMPANY,
    KNOWN_LEAD,
    NEW,
    KnownResult,
    check_known,
)
from pipelines.sync_cli import add_source_arguments

EXIT_OK, EXIT_FAILED = 0, 2
PROVENANCE = ("_om_source", "_om_row")


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "known",
        help="check which rows of a list Outreach Magic already holds (offline, before enrichment)",
        description="Check a prospect list against what this connector has synced (its state file), "
        "without calling the API: rows whose lead is known, whose company is known, new, or invalid.",
    )
    add_source_arguments(parser, "TOML mapping file (columns)")
    parser.add_argument("--state", default=None, help="state file of the sync to check against "
                        "(default .outreach_magic/state.duckdb)")
    parser.add_argument("--out-new", help="write the new and invalid rows here (.csv, .parquet or .jsonl)")
    parser.add_argument("--out-known", help="write the known_lead and known_company rows here "
                        "(.csv, .parquet or .jsonl)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object on stdout")
    parser.set_defaults(func=cmd_known)


def cmd_known(args: argparse.Namespace) -> int:
    reader_kwargs = {k: getattr(args, k) for k in ("table", "query") if getattr(args, k, None)}
    state_path = args.state or str(state_mod.default_state_path())
    try:
        result = check_known(list(args.sources), state_path, preset=args.preset, mapping_file=args.mapping,
                             **reader_kwargs)
        written = {}
        if args.out_known:
            written["known"] = (args.out_known, write_rows(result.known(), args.out_known))
        if args.out_new:
            written["new"] = (args.out_new, write_rows(result.new(), args.out_new))
    except (OutreachMagicError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        out = result.to_dict()
        out["outputs"] = {k: {"path": p, "rows": n} for k, (p, n) in written.items()}
        sys.stdout.write(orjson.dumps(out).decode() + "\n")
    else:
        print(format_summary(result, written))
    return EXIT_OK


def output_table(table: pa.Table) -> pa.Table:
    """What a file gets: the original columns and the ``om_*`` ones, not the reader's provenance."""
    return table.drop_columns([c for c in PROVENANCE if c in table.column_names])


def write_rows(table: pa.Table, path: str | Path) -> int:
    """Write rows as CSV, Parquet or JSON Lines (by extension); returns how many."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = output_table(table)
    suffix = target.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        pq.write_table(table, target)
    elif suffix in (".jsonl", ".ndjson"):
        import duckdb

        con = duckdb.connect()
        try:
            con.register("t_rows", table)
            escaped = str(target).replace("'", "''")
            con.execute(f"COPY (SELECT * FROM t_rows) TO '{escaped}' (FORMAT JSON)")
        finally:
            con.close()
    else:
        import pyarrow.csv as pacsv

        pacsv.write_csv(_flat_for_csv(table), target)
    return table.num_rows


def _flat_for_csv(table: pa.Table) -> pa.Table:
    """CSV cells are text: nested values (lists, objects from JSON sources) become JSON text."""
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            values = [None if v is None else orjson.dumps(v, default=str).decode() for v in column.to_pylist()]
            columns.append(pa.array(values, pa.string()))
        else:
            columns.append(column)
    return pa.table(columns, names=table.column_names)


def format_summary(result: KnownResult, written: dict[str, tuple[str, int]] | None = None) -> str:
    """The human summary: the state's scope first, then counts per status and what was saved."""
    counts = result.counts
    total = result.table.num_rows
    lines = [f"Outreach Magic known-contacts check: {result.state.describe()}.",
             "Nothing was sent and the state was not changed."]
    for src in result.sources:
        lines.append(f"source {src.spec}: {src.reason}; {src.rows:,} rows")
    rows = [
        (KNOWN_LEAD, "lead already in Outreach Magic", counts[KNOWN_LEAD]),
        (KNOWN_COMPANY, "new person, company already in Outreach Magic", counts[KNOWN_COMPANY]),
        (NEW, "not synced by this connector", counts[NEW]),
        (INVALID, "identifiers do not normalize, or none at all", counts[INVALID]),
    ]
    for status, meaning, n in rows:
        lines.append(f"  {status:<14}{n:>12,}  {_pct(n, total):>6}  {meaning}")
    lines.append(f"  {'rows':<14}{total:>12,}")
    if result.matched_on:
        lines.append("  matched on: " + ", ".join(f"{k} {v:,}" for k, v in result.matched_on.items()))
    lines.append(
        f"Enrichment saved: {result.credits_saved:,} of {total:,} rows ({_pct(result.credits_saved, total)}) need no "
        f"person enrichment (one credit per row on Clay, Apollo, ZoomInfo, Lusha); "
        f"{counts[KNOWN_COMPANY]:,} more need no company enrichment."
    )
    for issue in result.issues[:5]:
        lines.append(f"  invalid: {issue.source} row {issue.row}, {issue.column} {issue.value!r}: {issue.reason}")
    if counts[INVALID] > min(len(result.issues), 5):
        lines.append(f"  ... {counts[INVALID]:,} invalid rows in all (see om_reason in --out-new)")
    for label, (path, n) in (written or {}).items():
        lines.append(f"wrote {n:,} {label} rows to {path}")
    lines.append(f"{result.seconds:.1f} s")
    return "\n".join(lines)


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"

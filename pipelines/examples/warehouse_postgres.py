"""Example: a warehouse table (PostgreSQL, or any SQLAlchemy database) read incrementally by ``updated_at``.

The table is read through dlt's ``sql_database`` source (``sql_table``, pyarrow backend)
with ``dlt.sources.incremental(cursor_column)``, so a scheduled run reads only rows
changed since the last one instead of scanning the whole table. Why the high-water mark
lives in a small JSON file beside the state file, and not in dlt's pipeline state:

* dlt advances an incremental cursor when the rows are *extracted*; the connector counts
  a row as synced only once the API *confirmed* it. If some events still failed after
  every retry, those rows must be read again next run, so the mark advances only after
  a run with no failed event and no error. Rows read twice cost nothing extra: the
  runner drops rows whose content was confirmed before.
* The cursor is read with ``>=`` (``range_start="closed"``): rows committed later with
  the same timestamp as the last mark are not missed (the runner's own
  ``cursor_column`` reads with ``>`` and misses them; tested in tests/test_examples.py).

Columns named like the API's fields (``lead_email``, ``company_domain``...) need no
mapping; other names are mapped by the ``generic`` preset or a ``--mapping`` file.
``--reset-cursor`` reads the whole table once (e.g. with ``--retry-rejected`` semantics in
mind, or after changing the mapping). Try it::

    python -m pipelines.examples.warehouse_postgres postgresql://postgres@127.0.0.1:5432/test \\
        --table public.crm_leads --sandbox
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipelines.examples._common import Target, add_target_arguments, run_main
from pipelines.runner import SyncReport, SyncRequest, run_sync


def cursor_file(state_path: str | Path) -> Path:
    """Where the high-water marks of one state file live: ``<state>.cursors.json`` beside it."""
    state = Path(state_path)
    return state.with_name(state.name + ".cursors.json")


def _encode(value: Any) -> dict[str, Any]:
    if isinstance(value, dt.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return {"type": "str", "value": str(value)}
    return {"type": type(value).__name__, "value": value}


def _decode(entry: dict[str, Any]) -> Any:
    kind, value = entry["type"], entry["value"]
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    return value


def _mark_key(url: str, table: str, cursor_column: str) -> str:
    from sources.readers.sql import redact

    return f"{redact(url)}|{table}|{cursor_column}"


def load_mark(state_path: str | Path, url: str, table: str, cursor_column: str) -> Any:
    """The cursor value the last fully confirmed run reached, or None (read everything)."""
    path = cursor_file(state_path)
    if not path.exists():
        return None
    entry = json.loads(path.read_text(encoding="utf-8")).get(_mark_key(url, table, cursor_column))
    return None if entry is None else _decode(entry)


def save_mark(state_path: str | Path, url: str, table: str, cursor_column: str, value: Any) -> None:
    """Write the mark atomically (write a temp file, then rename), so a crash leaves the old one."""
    path = cursor_file(state_path)
    marks = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    marks[_mark_key(url, table, cursor_column)] = _encode(value)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(marks, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)


def changed_rows(url: str, table: str, cursor_column: str, start: Any, seen: dict[str, Any],
                 chunk_size: int = 50_000) -> pa.RecordBatchReader:
    """Rows with ``cursor_column >= start`` as a stream of Arrow batches, read by dlt's ``sql_table``.

    ``seen["max"]`` is updated to the largest cursor value read, as the stream is consumed.
    """
    import dlt
    from dlt.sources.sql_database import sql_table

    from sources.readers.sql import list_sql_columns, max_cursor, normalize_url

    schema_name, _, name = table.rpartition(".")
    resource = sql_table(
        credentials=normalize_url(url),
        table=name,
        schema=schema_name or None,
        backend="pyarrow",
        chunk_size=chunk_size,
        reflection_level="full",
        incremental=dlt.sources.incremental(cursor_column, initial_value=start, range_start="closed",
                                            on_cursor_value_missing="include"),
    )
    items = iter(resource)
    first = next(items, None)
    if first is None:  # nothing changed: an empty frame still lets the runner finish pending work
        names = list_sql_columns(url, table, None)
        return pa.RecordBatchReader.from_batches(pa.schema([(n, pa.string()) for n in names]), iter(()))
    first_table = first if isinstance(first, pa.Table) else pa.Table.from_batches([first])
    schema = first_table.schema

    def batches() -> Iterator[pa.RecordBatch]:
        for item in _chain(first_table, items):
            tbl = item if isinstance(item, pa.Table) else pa.Table.from_batches([item])
            tbl = tbl.select(schema.names).cast(schema)
            for batch in tbl.to_batches():
                seen["max"] = max_cursor(batch, cursor_column, seen["max"])
                yield batch

    return pa.RecordBatchReader.from_batches(schema, batches())


def _chain(first: pa.Table, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest


def sync_warehouse_table(
    url: str,
    table: str,
    *,
    api_key: str | None,
    base_url: str,
    state_path: str,
    cursor_column: str = "updated_at",
    preset: str = "auto",
    mapping: str | None = None,
    constants: dict[str, Any] | None = None,
    dry_run: bool = False,
    reset_cursor: bool = False,
) -> SyncReport:
    """Sync the rows of ``table`` changed since the last confirmed run; advance the mark only if all were confirmed."""
    start = None if reset_cursor else load_mark(state_path, url, table, cursor_column)
    seen: dict[str, Any] = {"max": start}
    rows = changed_rows(url, table, cursor_column, start, seen)
    report = run_sync(SyncRequest(sources=[rows], api_key=api_key, base_url=base_url, state_path=state_path,
                                  preset=preset, mapping=mapping, constants=dict(constants or {}), dry_run=dry_run))
    if not dry_run and report.error is None and report.failed == 0 and seen["max"] is not None:
        save_mark(state_path, url, table, cursor_column, seen["max"])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.examples.warehouse_postgres", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="database URL, e.g. postgresql://user@host:5432/db (password: use ~/.pgpass)")
    parser.add_argument("--table", required=True, help="schema.table to read")
    parser.add_argument("--cursor-column", default="updated_at", help="incremental cursor (default updated_at)")
    parser.add_argument("--preset", default="auto", help="canonical, generic, or auto (default)")
    parser.add_argument("--mapping", help="TOML mapping file for non-canonical column names")
    parser.add_argument("--reset-cursor", action="store_true", help="read the whole table this time")
    add_target_arguments(parser, ".outreach_magic/warehouse.duckdb")

    def body(args: argparse.Namespace, t: Target) -> SyncReport:
        return sync_warehouse_table(args.url, args.table, api_key=t.api_key, base_url=t.base_url,
                                    state_path=t.state_path, cursor_column=args.cursor_column, preset=args.preset,
                                    mapping=args.mapping, constants=t.constants, dry_run=t.dry_run,
                                    reset_cursor=args.reset_cursor)

    return run_main(parser, argv, body)


if __name__ == "__main__":
    raise SystemExit(main())

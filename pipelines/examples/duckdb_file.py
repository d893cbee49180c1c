"""Example: a DuckDB database file, one table or a query, read by DuckDB directly.

DuckDB is read with DuckDB itself, yielding Arrow batches (dlt's SQLAlchemy route to
DuckDB breaks with SQLAlchemy >= 2.0.45, see DESIGN.md). The file is opened read-only,
so a warehouse job may keep writing to it between syncs. Try it on a sample file built
from the bundled CRM tables::

    python -m pipelines.examples.duckdb_file --sample /tmp/crm.duckdb --table leads_flat --sandbox \\
        --workspace-id 65f1a2b3c4d5e6f7890a1b2c
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.examples._common import Target, add_target_arguments, run_main
from pipelines.runner import SyncReport, SyncRequest, run_sync

WAREHOUSE_DATA = Path(__file__).parent / "data" / "warehouse"
MODEL_SQL = WAREHOUSE_DATA / "om_leads.sql"


def build_sample_warehouse(path: str | Path) -> Path:
    """A DuckDB file with the bundled CRM tables ``leads`` and ``companies``, and ``leads_flat``
    (the model ``om_leads.sql`` materialized as a table, as a dbt run would leave it)."""
    import duckdb

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        for name in ("leads", "companies"):
            csv = (WAREHOUSE_DATA / f"crm_{name}.csv").as_posix()
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM read_csv('{csv}', header = true)")
        con.execute(f"CREATE OR REPLACE TABLE leads_flat AS {MODEL_SQL.read_text(encoding='utf-8')}")
    finally:
        con.close()
    return path


def sync_duckdb_file(
    path: str | Path,
    *,
    api_key: str | None,
    base_url: str,
    state_path: str,
    table: str | None = None,
    query: str | None = None,
    preset: str = "auto",
    constants: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> SyncReport:
    """Sync one table (``table=``) or the result of a query (``query=``) of a DuckDB file."""
    return run_sync(SyncRequest(sources=[str(path)], table=table, query=query, api_key=api_key, base_url=base_url,
                                state_path=state_path, preset=preset, constants=dict(constants or {}),
                                dry_run=dry_run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.examples.duckdb_file", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", nargs="?", help="DuckDB file (or use --sample PATH)")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--table", help="table (or schema.table) to sync")
    group.add_argument("--query", help="SQL query whose result to sync")
    parser.add_argument("--sample", metavar="PATH", help="first build a sample DuckDB file at PATH and sync it")
    parser.add_argument("--preset", default="auto", help="canonical, generic, or auto (default)")
    add_target_arguments(parser, ".outreach_magic/duckdb_file.duckdb")

    def body(args: argparse.Namespace, t: Target) -> SyncReport:
        database = build_sample_warehouse(args.sample) if args.sample else args.database
        if database is None:
            parser.error("pass a DuckDB file or --sample PATH")
        return sync_duckdb_file(database, table=args.table, query=args.query, api_key=t.api_key,
                                base_url=t.base_url, state_path=t.state_path, preset=args.preset,
                                constants=t.constants, dry_run=t.dry_run)

    return run_main(parser, argv, body)


if __name__ == "__main__":
    raise SystemExit(main())

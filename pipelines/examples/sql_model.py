"""Example: a SQL model (a query joining leads and companies, as a dbt model would) as the source.

The model's SQL (default: the bundled ``data/warehouse/om_leads.sql``) names every column
like the API field it fills, so the connector needs no mapping, and runs as-is on the
database that holds the tables: a DuckDB file (read by DuckDB) or a SQLAlchemy URL such
as ``postgresql://...`` (read with a server-side cursor). With dbt, point ``--model`` at
the compiled file (``target/compiled/<project>/models/om_leads.sql``), or sync the
materialized table instead. Try it::

    python -m pipelines.examples.sql_model --sample /tmp/crm.duckdb --sandbox --workspace-id 65f1a2b3c4d5e6f7890a1b2c
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipelines.examples._common import Target, add_target_arguments, run_main
from pipelines.examples.duckdb_file import MODEL_SQL, build_sample_warehouse
from pipelines.runner import SyncReport, SyncRequest, run_sync


def read_model(path: str | Path = MODEL_SQL) -> str:
    """The model's SELECT without comments or a trailing semicolon (it is run as a subquery too)."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if not line.lstrip().startswith("--")]
    return "\n".join(lines).strip().rstrip(";")


def sync_sql_model(
    database: str | Path,
    *,
    api_key: str | None,
    base_url: str,
    state_path: str,
    model: str | Path = MODEL_SQL,
    constants: dict[str, Any] | None = None,
    dry_run: bool = False,
) -> SyncReport:
    """Run the model's query on ``database`` (DuckDB file or SQL URL) and sync its rows."""
    return run_sync(SyncRequest(sources=[str(database)], query=read_model(model), preset="canonical", api_key=api_key,
                                base_url=base_url, state_path=state_path, constants=dict(constants or {}),
                                dry_run=dry_run))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.examples.sql_model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("database", nargs="?", help="DuckDB file or database URL holding `leads` and `companies`")
    parser.add_argument("--model", default=str(MODEL_SQL), help="the model's .sql file (default: om_leads.sql)")
    parser.add_argument("--sample", metavar="PATH", help="first build a sample DuckDB file at PATH and use it")
    add_target_arguments(parser, ".outreach_magic/sql_model.duckdb")

    def body(args: argparse.Namespace, t: Target) -> SyncReport:
        database = build_sample_warehouse(args.sample) if args.sample else args.database
        if database is None:
            parser.error("pass a database (DuckDB file or URL) or --sample PATH")
        return sync_sql_model(database, model=args.model, api_key=t.api_key, base_url=t.base_url,
                              state_path=t.state_path, constants=t.constants, dry_run=t.dry_run)

    return run_main(parser, argv, body)


if __name__ == "__main__":
    raise SystemExit(main())

"""A table or query in a DuckDB database file, read with DuckDB directly.

Not through SQLAlchemy: duckdb-engine breaks with SQLAlchemy >= 2.0.45 (see DESIGN.md).
The file is opened read-only so that a sync never takes the write lock of a database
another process (a dbt run, a notebook) is writing; the relation's Arrow reader streams
record batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from destinations.outreach_magic.exceptions import SourceError

from ._common import add_provenance, dedupe_names

# A relation's streaming Arrow reader: `to_arrow_reader` in duckdb 2.x, `fetch_arrow_reader` in 1.x.
# (On a DB-API result, duckdb 2.x warns that Arrow output makes an extra copy of the rows.)
_ARROW_READER = (
    "to_arrow_reader" if hasattr(duckdb.DuckDBPyRelation, "to_arrow_reader") else "fetch_arrow_reader"
)


def quote_identifier(name: str) -> str:
    """`schema.table` -> `"schema"."table"`; embedded quotes doubled (no SQL injection via names)."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def _relation_sql(table: str | None, query: str | None, where: str) -> str:
    if (table is None) == (query is None):
        raise SourceError(f"{where}: pass exactly one of table= or query= for a DuckDB database")
    return f"SELECT * FROM {quote_identifier(table)}" if table is not None else str(query)


def _connect(path: Path) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise SourceError(f"{path}: cannot open as a DuckDB database ({exc})") from exc


def list_duckdb_columns(path: Path, table: str | None, query: str | None) -> list[str]:
    sql = _relation_sql(table, query, str(path))
    con = _connect(path)
    try:
        return dedupe_names(con.sql(sql).columns)
    except duckdb.Error as exc:
        raise SourceError(f"{path}: {table or 'query'}: {exc}") from exc
    finally:
        con.close()


def read_duckdb(
    path: Path, table: str | None, query: str | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    sql = _relation_sql(table, query, str(path))
    label = table if table is not None else "query"
    con = _connect(path)
    try:
        try:
            reader = getattr(con.sql(sql), _ARROW_READER)(batch_rows)
        except duckdb.Error as exc:
            raise SourceError(f"{path}: {label}: {exc}") from exc
        names = dedupe_names(reader.schema.names)
        row = 1
        for batch in reader:
            if batch.num_rows == 0:
                continue
            yield add_provenance(batch, label, row, names)
            row += batch.num_rows
    finally:
        con.close()

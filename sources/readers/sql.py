"""Any database SQLAlchemy reaches (PostgreSQL, MySQL, SQLite, ...), read through dlt's `sql_table`.

- `table=` goes through `dlt.sources.sql_database.sql_table(backend="pyarrow")`, which
  reflects the table and yields Arrow tables with the database's own types.
- Incremental reads: `cursor_column` (e.g. `updated_at`) with `cursor_start` become
  `dlt.sources.incremental(cursor_column, initial_value=cursor_start, range_start="open")`,
  so dlt adds `WHERE cursor > :start` to the query: only rows AFTER the start value are read.
  State is NOT kept here (the resource is iterated outside any dlt pipeline, so dlt keeps no
  state either): the caller persists the high-water mark (see `max_cursor`) only after the
  rows were confirmed, and passes it back as `cursor_start` next time. That keeps one
  source of truth for "what was synced" (the connector's ledger), instead of a second one
  in dlt's pipeline state that could run ahead of what the API confirmed.
  `cursor_inclusive=True` reads `>=` instead: rows sharing the last timestamp are re-read
  (harmless, the staging diff drops unchanged rows) and a row committed later with the
  same timestamp is not missed.
- `query=` runs the SQL text with SQLAlchemy (server-side cursor, `fetchmany`), for views
  and joins that are not a table; the cursor options do not apply to it.
- `postgresql://` URLs: SQLAlchemy 2.1 defaults to the psycopg 3 driver; when only
  psycopg2 is installed the URL is pointed at it. Passwords never appear in messages.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from destinations.outreach_magic.exceptions import SourceError

from ._common import add_provenance, dedupe_names


def is_sql_url(spec: str) -> bool:
    head = spec.split("://", 1)[0] if "://" in spec else ""
    return bool(head) and head.replace("+", "").replace("_", "").isalnum() and "/" not in head


def _make_url(url: str) -> Any:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url)
    except ArgumentError as exc:
        raise SourceError(f"not a valid database URL ({exc.__class__.__name__})") from exc


def redact(url: str) -> str:
    try:
        return str(_make_url(url).render_as_string(hide_password=True))
    except SourceError:
        return "<database url>"


def normalize_url(url: str) -> str:
    """Pick an installed driver for bare `postgresql://` / `postgres://` / `mysql://` URLs."""
    parsed = _make_url(url)
    backend, _, driver = parsed.drivername.partition("+")
    if driver:
        return url
    if backend in ("postgresql", "postgres"):
        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            parsed = parsed.set(drivername="postgresql+psycopg2")
        elif backend == "postgres":
            parsed = parsed.set(drivername="postgresql")
    elif (
        backend == "mysql"
        and importlib.util.find_spec("MySQLdb") is None
        and importlib.util.find_spec("pymysql") is not None
    ):
        parsed = parsed.set(drivername="mysql+pymysql")
    return str(parsed.render_as_string(hide_password=False))


def _split(table: str) -> tuple[str | None, str]:
    schema, _, name = table.rpartition(".")
    return (schema or None), name


def _fail(url: str, what: str, exc: BaseException) -> SourceError:
    msg = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return SourceError(f"{redact(url)}: {what}: {exc.__class__.__name__}: {msg}")


def list_sql_columns(url: str, table: str | None, query: str | None) -> list[str]:
    from sqlalchemy import create_engine, inspect, text

    if (table is None) == (query is None):
        raise SourceError(f"{redact(url)}: pass exactly one of table= or query=")
    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as con:
            if table is not None:
                schema, name = _split(table)
                return dedupe_names([c["name"] for c in inspect(con).get_columns(name, schema=schema)])
            inner = str(query).strip().rstrip(";")
            result = con.execute(text(f"SELECT * FROM ({inner}) AS om_q WHERE 1 = 0"))
            return dedupe_names(list(result.keys()))
    except Exception as exc:
        raise _fail(url, table or "query", exc) from exc
    finally:
        engine.dispose()


def read_sql_table(
    url: str,
    table: str,
    batch_rows: int,
    cursor_column: str | None,
    cursor_start: Any,
    cursor_inclusive: bool,
) -> Iterator[pa.RecordBatch]:
    import dlt
    from dlt.sources.sql_database import sql_table

    schema, name = _split(table)

    def make(start: Any) -> Any:
        incremental = None
        if cursor_column is not None:
            incremental = dlt.sources.incremental(
                cursor_column,
                initial_value=start,
                range_start="closed" if cursor_inclusive else "open",
                on_cursor_value_missing="include",
            )
        try:
            return sql_table(
                credentials=normalize_url(url),
                table=name,
                schema=schema,
                backend="pyarrow",
                chunk_size=batch_rows,
                incremental=incremental,
                reflection_level="full",
            )
        except Exception as exc:
            raise _fail(url, table, exc) from exc

    resource = make(None if isinstance(cursor_start, str) else cursor_start)
    if cursor_column is not None:
        columns: Any = resource.columns
        if cursor_column not in columns:
            raise SourceError(f"{redact(url)}: {table}: no cursor column {cursor_column!r}")
        if isinstance(cursor_start, str):
            # a high-water mark persisted as JSON comes back as ISO text: type it like the column
            resource = make(_coerce_start(cursor_start, columns[cursor_column].get("data_type"), url, table))
    row = 1
    names: list[str] | None = None
    items = iter(resource)
    try:
        while True:
            try:
                item = next(items)
            except StopIteration:
                return
            except Exception as exc:
                raise _fail(url, table, exc) from exc
            batches = item.to_batches() if isinstance(item, pa.Table) else [item]
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                names = names or dedupe_names(batch.schema.names)
                for start in range(0, batch.num_rows, batch_rows):
                    part = batch.slice(start, batch_rows)
                    yield add_provenance(part, table, row, names)
                    row += part.num_rows
    finally:
        # A consumer that stops early (an error downstream) must not leave the server-side
        # cursor's transaction open: it holds locks until garbage collection, if ever.
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _coerce_start(value: str, data_type: str | None, url: str, table: str) -> Any:
    """ISO text -> datetime/date for timestamp/date cursors (`Z` accepted); other types unchanged."""
    from datetime import date, datetime

    try:
        if data_type == "timestamp":
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        if data_type == "date":
            return date.fromisoformat(value)
        if data_type == "bigint":
            return int(value)
    except ValueError as exc:
        raise SourceError(f"{redact(url)}: {table}: cursor_start {value!r} is not a valid {data_type}") from exc
    return value


def read_sql_query(url: str, query: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    from sqlalchemy import create_engine, text

    engine = create_engine(normalize_url(url))
    try:
        with engine.connect() as con:
            try:
                result = con.execution_options(stream_results=True).execute(text(query))
            except Exception as exc:
                raise _fail(url, "query", exc) from exc
            names = dedupe_names(list(map(str, result.keys())))
            row = 1
            while rows := result.fetchmany(batch_rows):
                arrays = []
                for col in zip(*rows, strict=True):
                    try:
                        arrays.append(pa.array(col))
                    except (pa.ArrowInvalid, pa.ArrowTypeError):
                        arrays.append(pa.array([None if v is None else str(v) for v in col], pa.string()))
                batch = pa.RecordBatch.from_arrays(arrays, names=[f"f{i}" for i in range(len(arrays))])
                yield add_provenance(batch, "query", row, names)
                row += batch.num_rows
    finally:
        engine.dispose()


def max_cursor(batch: pa.RecordBatch, column: str, current: Any = None) -> Any:
    """The larger of `current` and the batch's maximum `column` value (None-safe).

    The caller keeps this across batches and persists it as the next `cursor_start` once
    the rows are confirmed.
    """
    import pyarrow.compute as pc

    value = pc.max(batch.column(column)).as_py()
    if value is None:
        return current
    if current is None:
        return value
    return max(current, value)

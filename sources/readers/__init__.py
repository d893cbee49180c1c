"""Read any source as a stream of Arrow record batches with provenance columns.

Entry points: `read_source(spec, ...)` and `list_columns(spec, ...)`.

`spec` is one of:
- a file path or glob: CSV/TSV/TXT, JSONL/NDJSON, JSON (array or object document),
  Parquet, chosen by extension (`fmt=` overrides: csv, jsonl, json, parquet, duckdb, sqlite);
- a DuckDB database file (`.duckdb`, `.ddb`, or `.db` holding a DuckDB file) with `table=`
  or `query=`; a `.db`/`.sqlite` file holding SQLite goes through the SQL reader;
- a SQLAlchemy database URL (`postgresql://...`, `mysql://...`, `sqlite:///...`) with
  `table=` (dlt `sql_table`, pyarrow backend, optional cursor) or `query=`;
- a pandas DataFrame or a pyarrow Table / RecordBatch / RecordBatchReader.

Every batch carries the original column names (duplicates renamed by position `Name__2`),
plus `_om_source` (file name or table/query label) and `_om_row` (1-based record position
in that source). Problems that were worked around (bad rows, encoding fallback) go to the
`issues` list when one is passed, else they are emitted as `SourceWarning`s. A source that
cannot be read at all raises `SourceError` naming it.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from destinations.outreach_magic.exceptions import SourceError

from ._common import (
    PROVENANCE_COLUMNS,
    ROW_COLUMN,
    SOURCE_COLUMN,
    IssueSink,
    SourceIssue,
    SourceWarning,
    check_batch_rows,
    dedupe_names,
)
from .columnar import is_frame, list_frame_columns, list_parquet_columns, read_frame, read_parquet
from .delimited import list_csv_columns, read_delimited
from .duckdb_source import list_duckdb_columns, read_duckdb
from .jsonfiles import list_json_columns, read_json_document, read_jsonl
from .sql import is_sql_url, list_sql_columns, max_cursor, read_sql_query, read_sql_table

__all__ = [
    "PROVENANCE_COLUMNS",
    "ROW_COLUMN",
    "SOURCE_COLUMN",
    "SourceIssue",
    "SourceWarning",
    "dedupe_names",
    "detect_format",
    "list_columns",
    "max_cursor",
    "read_source",
]

EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".tab": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".duckdb": "duckdb",
    ".ddb": "duckdb",
    ".db": "database",
    ".sqlite": "sqlite",
    ".sqlite3": "sqlite",
}
FORMATS = ("csv", "jsonl", "json", "parquet", "duckdb", "sqlite")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def detect_format(path: Path, fmt: str | None = None) -> str:
    """The reader for one file: `fmt` if given, else by extension (`.db` by its magic bytes)."""
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        fmt = {"tsv": "csv", "txt": "csv", "ndjson": "jsonl", "pq": "parquet", "db": "database"}.get(fmt, fmt)
        if fmt not in (*FORMATS, "database"):
            raise SourceError(f"{path}: unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    else:
        fmt = EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise SourceError(
                f"{path}: cannot tell the format from the extension {path.suffix!r}; pass fmt= one of "
                f"{', '.join(FORMATS)}"
            )
    if fmt == "database":
        with path.open("rb") as fh:
            head = fh.read(16)
        fmt = "sqlite" if head == _SQLITE_MAGIC else "duckdb"
    return fmt


def _expand(spec: str | os.PathLike[str]) -> list[Path]:
    text = os.fspath(spec)
    if any(ch in text for ch in "*?["):
        matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            raise SourceError(f"{text}: the pattern matches no file")
        return files
    path = Path(text).expanduser()
    if not path.exists():
        raise SourceError(f"{text}: no such file")
    if path.is_dir():
        raise SourceError(f"{text}: is a directory; pass a file or a glob such as {text}/*.csv")
    return [path]


_REMOTE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss", "http", "https", "ftp", "sftp")


def _local_file_url(spec: Any) -> Any:
    """`file:///x.csv` -> `/x.csv`; `duckdb:///x.duckdb` -> `x.duckdb` (SQLAlchemy's convention:
    four slashes for an absolute path), read with DuckDB directly because duckdb-engine breaks
    with SQLAlchemy >= 2.0.45; remote file URLs are refused with a clear message.

    Without this, `s3://bucket/leads.csv` would be taken for a database URL and fail deep
    inside SQLAlchemy ("Can't load plugin: sqlalchemy.dialects:s3").
    """
    if not isinstance(spec, str) or "://" not in spec:
        return spec
    scheme, _, rest = spec.partition("://")
    if scheme.lower() == "file":
        return rest
    if scheme.lower() == "duckdb":
        return rest[1:] if rest.startswith("/") else rest
    if scheme.lower() in _REMOTE_SCHEMES:
        raise SourceError(
            f"{spec}: remote files are not read directly; download the file or use dlt's filesystem source"
        )
    return spec


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def read_source(
    spec: Any,
    *,
    table: str | None = None,
    query: str | None = None,
    batch_rows: int = 50_000,
    cursor_column: str | None = None,
    cursor_start: Any = None,
    fmt: str | None = None,
    cursor_inclusive: bool = False,
    issues: list[SourceIssue] | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield record batches of at most `batch_rows` rows from `spec` (see the module docstring).

    `cursor_column`/`cursor_start`/`cursor_inclusive` apply to SQL tables only: rows whose
    cursor is greater than (or equal to, if inclusive) `cursor_start`. The caller persists
    the high-water mark (`max_cursor`) itself. Validation of `spec` happens on the first
    `next()`, as for any generator.
    """
    check_batch_rows(batch_rows)
    sink = IssueSink(issues)
    if is_frame(spec):
        yield from read_frame(spec, batch_rows)
        return
    spec = _local_file_url(spec)
    if isinstance(spec, str) and is_sql_url(spec):
        yield from _read_sql(spec, table, query, batch_rows, cursor_column, cursor_start, cursor_inclusive)
        return
    if not isinstance(spec, (str, os.PathLike)):
        raise SourceError(f"cannot read a {type(spec).__name__}: pass a path, a glob, a URL or a frame")
    for path in _expand(spec):
        kind = detect_format(path, fmt)
        if cursor_column is not None and kind not in ("sqlite",):
            raise SourceError(f"{path}: cursor_column applies to SQL tables only")
        if kind == "csv":
            yield from read_delimited(path, batch_rows, sink)
        elif kind == "jsonl":
            yield from read_jsonl(path, batch_rows, sink)
        elif kind == "json":
            yield from read_json_document(path, batch_rows, sink)
        elif kind == "parquet":
            yield from read_parquet(path, batch_rows)
        elif kind == "duckdb":
            yield from read_duckdb(path, table, query, batch_rows)
        else:  # sqlite file
            url = _sqlite_url(path)
            yield from _read_sql(url, table, query, batch_rows, cursor_column, cursor_start, cursor_inclusive)


def _read_sql(
    url: str,
    table: str | None,
    query: str | None,
    batch_rows: int,
    cursor_column: str | None,
    cursor_start: Any,
    cursor_inclusive: bool,
) -> Iterator[pa.RecordBatch]:
    from .sql import redact

    if (table is None) == (query is None):
        raise SourceError(f"{redact(url)}: pass exactly one of table= or query=")
    if query is not None:
        if cursor_column is not None:
            raise SourceError(f"{redact(url)}: cursor_column applies to table= only; filter inside the query")
        yield from read_sql_query(url, query, batch_rows)
    else:
        assert table is not None
        yield from read_sql_table(url, table, batch_rows, cursor_column, cursor_start, cursor_inclusive)


def list_columns(
    spec: Any,
    *,
    table: str | None = None,
    query: str | None = None,
    fmt: str | None = None,
    **_ignored: Any,
) -> list[str]:
    """The source's column names (de-duplicated by position), read from headers/schemas only.

    CSV: the header row; JSONL: the first 1000 records; JSON: the whole document (it has to be
    parsed); Parquet/DuckDB/SQL: the schema. A glob: the union over its files, in order of
    first appearance. Provenance columns are not included. Accepts read_source's keyword
    arguments so callers can pass the same options to both.
    """
    if is_frame(spec):
        return list_frame_columns(spec)
    spec = _local_file_url(spec)
    if isinstance(spec, str) and is_sql_url(spec):
        return list_sql_columns(spec, table, query)
    if not isinstance(spec, (str, os.PathLike)):
        raise SourceError(f"cannot read a {type(spec).__name__}: pass a path, a glob, a URL or a frame")
    seen: dict[str, None] = {}
    for path in _expand(spec):
        kind = detect_format(path, fmt)
        if kind == "csv":
            cols = list_csv_columns(path)
        elif kind in ("jsonl", "json"):
            cols = list_json_columns(path, jsonl=kind == "jsonl")
        elif kind == "parquet":
            cols = list_parquet_columns(path)
        elif kind == "duckdb":
            cols = list_duckdb_columns(path, table, query)
        else:
            cols = list_sql_columns(_sqlite_url(path), table, query)
        seen.update(dict.fromkeys(cols))
    return list(seen)

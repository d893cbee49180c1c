"""sources.readers against the REAL PostgreSQL server of this machine (127.0.0.1:5432, trust auth).

Skipped only when the server cannot be reached. Each test works on its own uniquely named
table and drops it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from destinations.outreach_magic.exceptions import SourceError
from sources.readers import list_columns, max_cursor, read_source

URL = "postgresql://postgres@127.0.0.1:5432/test"
DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"

psycopg2 = pytest.importorskip("psycopg2")


def _connect() -> Any:
    try:
        return psycopg2.connect(DSN)
    except psycopg2.OperationalError as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL on 127.0.0.1:5432 is unreachable: {exc}")


def ts(day: int) -> datetime:
    return datetime(2024, 1, day, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def table() -> Iterator[tuple[Any, str]]:
    con = _connect()
    con.autocommit = True
    name = f"om_readers_{uuid.uuid4().hex[:12]}"
    with con.cursor() as cur:
        cur.execute(
            f"CREATE TABLE public.{name} (id serial PRIMARY KEY, email text, zip text, "
            "employees integer, updated_at timestamptz)"
        )
        cur.executemany(
            f"INSERT INTO public.{name} (email, zip, employees, updated_at) VALUES (%s, %s, %s, %s)",
            [
                ("ann@example.com", "01234", 12, ts(1)),
                ("bo@example.org", "00501", None, ts(2)),
                ("cy@example.net", None, 1240, ts(3)),
            ],
        )
    try:
        yield con, name
    finally:
        with con.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS public.{name}")
        con.close()


def _rows(**kwargs: Any) -> list[dict[str, Any]]:
    return [r for b in read_source(URL, **kwargs) for r in b.to_pylist()]


def test_reads_a_table_with_types_and_provenance(table: tuple[Any, str]) -> None:
    _, name = table
    batches = list(read_source(URL, table=name, batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 1]
    got = [r for b in batches for r in b.to_pylist()]
    assert [r["email"] for r in got] == ["ann@example.com", "bo@example.org", "cy@example.net"]
    assert got[0]["zip"] == "01234" and got[1]["zip"] == "00501" and got[2]["zip"] is None
    assert got[2]["employees"] == 1240 and got[1]["employees"] is None
    assert got[0]["updated_at"] == ts(1)
    assert [(r["_om_source"], r["_om_row"]) for r in got] == [(name, 1), (name, 2), (name, 3)]
    assert list_columns(URL, table=name) == ["id", "email", "zip", "employees", "updated_at"]


def test_schema_qualified_table_name(table: tuple[Any, str]) -> None:
    _, name = table
    assert len(_rows(table=f"public.{name}")) == 3


def test_incremental_cursor_second_read_yields_only_new_rows(table: tuple[Any, str]) -> None:
    con, name = table
    high = None
    first = list(read_source(URL, table=name, cursor_column="updated_at", cursor_start=None))
    for batch in first:
        high = max_cursor(batch, "updated_at", high)
    assert sum(b.num_rows for b in first) == 3 and high == ts(3)

    with con.cursor() as cur:
        cur.executemany(
            f"INSERT INTO public.{name} (email, zip, updated_at) VALUES (%s, %s, %s)",
            [("dee@example.com", "02134", ts(4)), ("eve@example.com", "10001", ts(5))],
        )
        cur.execute(f"UPDATE public.{name} SET zip = '01235', updated_at = %s WHERE email = 'ann@example.com'",
                    (ts(6),))
    second = _rows(table=name, cursor_column="updated_at", cursor_start=high)
    assert sorted(r["email"] for r in second) == ["ann@example.com", "dee@example.com", "eve@example.com"]
    assert [r["zip"] for r in second if r["email"] == "ann@example.com"] == ["01235"]

    # a high-water mark persisted as JSON comes back as ISO text: still typed like the column
    nothing_new = _rows(table=name, cursor_column="updated_at", cursor_start="2024-01-06T12:00:00Z")
    assert nothing_new == []
    inclusive = _rows(table=name, cursor_column="updated_at", cursor_start=ts(6), cursor_inclusive=True)
    assert [r["email"] for r in inclusive] == ["ann@example.com"]


def test_query_reads_a_join_or_view(table: tuple[Any, str]) -> None:
    _, name = table
    got = _rows(query=f"SELECT email, zip FROM public.{name} WHERE zip LIKE '0%' ORDER BY id")
    assert [(r["email"], r["zip"], r["_om_row"]) for r in got] == [
        ("ann@example.com", "01234", 1),
        ("bo@example.org", "00501", 2),
    ]


def test_missing_table_and_missing_cursor_column_raise_source_error(table: tuple[Any, str]) -> None:
    _, name = table
    with pytest.raises(SourceError, match="no_such_table_xyz"):
        _rows(table="no_such_table_xyz")
    with pytest.raises(SourceError, match="modified_at"):
        _rows(table=name, cursor_column="modified_at")

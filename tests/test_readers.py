"""Behaviour of sources.readers: every format, the traps real exports contain, bounded memory."""

from __future__ import annotations

import csv
import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from destinations.outreach_magic.exceptions import SourceError
from sources import documents
from sources.readers import SourceIssue, SourceWarning, delimited, list_columns, read_source

FIX = Path(__file__).parent / "fixtures" / "readers"


def rows(spec: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return [r for b in read_source(spec, **kwargs) for r in b.to_pylist()]


# --- CSV -------------------------------------------------------------------------------


def test_csv_keeps_strings_leading_zeros_bom_crlf_quotes_and_duplicate_headers() -> None:
    got = rows(FIX / "people_bom_crlf.csv")
    assert list(got[0]) == [
        "Id", "First Name", "Email", "Email__2", "Zip", "Phone", "Note", "_om_source", "_om_row"
    ]
    assert got[0]["Id"] == "007" and got[0]["Zip"] == "01234" and got[0]["Phone"] == "0049 30 1234"
    assert got[0]["Email"] == "ann@example.com" and got[0]["Email__2"] == "ann.work@example.org"
    assert got[0]["Note"] == "Likes commas, and\r\nnew lines"
    assert got[1]["First Name"] == "José" and got[1]["Email"] is None  # empty cell -> null
    assert got[2]["First Name"] == 'Zoë "Z" Ng' and got[2]["Phone"] is None  # "" -> null too
    assert [r["_om_row"] for r in got] == [1, 2, 3]  # records, not lines (row 1 spans two lines)
    assert {r["_om_source"] for r in got} == {"people_bom_crlf.csv"}


def test_csv_all_columns_are_strings() -> None:
    batch = next(read_source(FIX / "people_bom_crlf.csv"))
    assert all(t == pa.string() for t in batch.schema.types[:-1])
    assert batch.schema.field("_om_row").type == pa.int64()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("semicolon.csv", {"id": "2", "name": "Bo, Jr.", "city": "Zürich"}),
        ("tabs.tsv", {"id": "02", "name": "Bob", "company": "Example|Co"}),
        ("pipes.txt", {"id": "2", "name": "Bob", "domain": "example.org"}),
        ("utf16.txt", None),
    ],
)
def test_csv_delimiter_is_detected(name: str, expected: dict[str, str] | None) -> None:
    got = rows(FIX / name)
    if expected is None:  # Excel "Unicode text": UTF-16 with BOM, tab separated
        assert got[0]["id"] == "1" and got[0]["name"] == "Åsa"
    else:
        assert {k: got[1][k] for k in expected} == expected


def test_csv_excel_sep_line_is_obeyed_and_skipped_on_both_paths(tmp_path: Path) -> None:
    (tmp_path / "clean.csv").write_text("sep=|\nid|name\n01|Ann, A\n")
    assert rows(tmp_path / "clean.csv") == [{"id": "01", "name": "Ann, A", "_om_source": "clean.csv", "_om_row": 1}]
    issues: list[SourceIssue] = []
    got = rows(FIX / "excel_sep.csv", issues=issues)  # the ragged row 2 sends it down the slow path
    assert [(r["id"], r["note"], r["_om_row"]) for r in got] == [("01", "a,b", 1), ("03", "x", 3)]
    assert [(i.kind, i.row) for i in issues] == [("ragged_row", 2)]
    assert list_columns(FIX / "excel_sep.csv") == ["id", "name", "note"]


def test_csv_non_utf8_is_decoded_as_cp1252_and_reported() -> None:
    issues: list[SourceIssue] = []
    got = rows(FIX / "latin1.csv", issues=issues)
    assert got[1]["name"] == "Renée Œuvre" and got[0]["city"] == "Málaga"
    assert [i.kind for i in issues] == ["encoding"]
    assert "cp1252" in issues[0].message


def test_issues_become_warnings_when_no_list_is_passed() -> None:
    with pytest.warns(SourceWarning, match="latin1.csv"):
        rows(FIX / "latin1.csv")


def test_csv_ragged_and_truncated_rows_are_skipped_and_reported_with_their_position() -> None:
    issues: list[SourceIssue] = []
    got = rows(FIX / "ragged.csv", issues=issues)
    assert [(r["id"], r["_om_row"]) for r in got] == [("1", 1), ("4", 4)]
    assert [(i.kind, i.row, i.line) for i in issues] == [
        ("ragged_row", 2, 3),
        ("ragged_row", 3, 4),
        ("ragged_row", 5, 6),  # the truncated last line
    ]


def test_csv_trailing_empty_fields_are_kept_but_real_extra_values_are_not() -> None:
    issues: list[SourceIssue] = []
    got = rows(FIX / "trailing_delimiter.csv", issues=issues)
    assert [(r["id"], r["name"], r["_om_row"]) for r in got] == [("1", "Ann", 1), ("2", "Bo", 2)]
    assert [(i.kind, i.row) for i in issues] == [("ragged_row", 3)]


def test_list_columns_reads_only_the_head_of_a_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "late_latin1.csv"
    path.write_bytes(b"id,name\n" + b"1,Ann\n" * 20_000 + "2,José\n".encode("cp1252"))
    limits: list[int | None] = []
    real = delimited.detect_encoding

    def spy(p: Path, limit: int | None = None) -> tuple[str, bool]:
        limits.append(limit)
        return real(p, limit)

    monkeypatch.setattr(delimited, "detect_encoding", spy)
    assert list_columns(path) == ["id", "name"]
    assert limits == [delimited.SAMPLE_BYTES]
    assert real(path, delimited.SAMPLE_BYTES) == ("utf-8-sig", False)
    issues: list[SourceIssue] = []
    assert rows(path, issues=issues)[-1]["name"] == "José"  # the full read scans the whole file
    assert [i.kind for i in issues] == ["encoding"]


def test_csv_bad_row_deep_in_a_big_file_keeps_row_numbers_exact(tmp_path: Path) -> None:
    path = tmp_path / "big_ragged.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "email"])
        for i in range(1, 30_001):
            w.writerow([f"{i:06d}", f"p{i}@example.com"] if i != 25_000 else [f"{i:06d}"])
    issues: list[SourceIssue] = []
    batches = list(read_source(path, batch_rows=5_000, issues=issues))
    numbers = [n for b in batches for n in b.column("_om_row").to_pylist()]
    ids = [v for b in batches for v in b.column("id").to_pylist()]
    assert numbers == [n for n in range(1, 30_001) if n != 25_000]
    assert ids == [f"{n:06d}" for n in numbers]
    assert [(i.kind, i.row) for i in issues] == [("ragged_row", 25_000)]
    assert max(b.num_rows for b in batches) <= 5_000


def test_csv_header_only_yields_nothing_but_lists_columns() -> None:
    assert rows(FIX / "header_only.csv") == []
    assert list_columns(FIX / "header_only.csv") == ["id", "name", "email"]


def test_list_columns_dedupes_and_strips_bom() -> None:
    assert list_columns(FIX / "people_bom_crlf.csv") == [
        "Id", "First Name", "Email", "Email__2", "Zip", "Phone", "Note"
    ]


def test_big_csv_streams_in_batches_with_bounded_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pyarrow holds ~32 blocks of read-ahead; with 64 KiB blocks that is ~2 MB, far below the
    # file, so a reader that loaded the file whole would fail the bounds below.
    monkeypatch.setattr(delimited, "BLOCK_BYTES", 64 * 1024)
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "first", "last", "email", "linkedin", "company", "website", "zip"])
        for i in range(200_000):
            w.writerow([f"{i:07d}", "Ann", "Lee", f"ann{i}@example.com", f"https://www.linkedin.com/in/ann-{i}",
                        "Acme, Inc", "https://acme.example.com/about", "01234"])
    size = path.stat().st_size
    tracemalloc.start()
    count = batches = 0
    arrow_peak = 0
    last = 0
    for batch in read_source(path, batch_rows=10_000):
        batches += 1
        count += batch.num_rows
        assert batch.column("_om_row")[0].as_py() == last + 1
        last = batch.column("_om_row")[-1].as_py()
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes())
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 200_000 and last == 200_000
    assert batches >= 20
    # The file is ~25 MB; holding it whole in Arrow or Python would exceed these bounds.
    assert arrow_peak < size / 3, (arrow_peak, size)
    assert py_peak < size / 5, (py_peak, size)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["Email", "Email", "Email"], ["Email", "Email__2", "Email__3"]),
        (["\ufeffId", "Name"], ["Id", "Name"]),
        (["a", "", "b", ""], ["a", "column_2", "b", "column_4"]),
        (["Name", "Name__2", "Name"], ["Name", "Name__2", "Name__3"]),
        (["x", "x", "x__2"], ["x", "x__2", "x__2__2"]),
    ],
)
def test_dedupe_names_by_position(names: list[str], expected: list[str]) -> None:
    from sources.readers import dedupe_names

    assert dedupe_names(names) == expected


def test_csv_single_column_and_empty_file(tmp_path: Path) -> None:
    (tmp_path / "one.csv").write_text("email\nann@example.com\n\nbo@example.org\n")
    assert [r["email"] for r in rows(tmp_path / "one.csv")] == ["ann@example.com", "bo@example.org"]
    (tmp_path / "empty.csv").write_bytes(b"")
    assert rows(tmp_path / "empty.csv") == [] and list_columns(tmp_path / "empty.csv") == []


def test_abandoning_a_csv_read_early_does_not_hang(tmp_path: Path) -> None:
    """pyarrow's read-ahead thread deadlocked at exit when fed a Python file object (observed)."""
    import subprocess
    import sys

    path = tmp_path / "many.csv"
    path.write_text("id,email\n" + "".join(f"{i},p{i}@example.com\n" for i in range(100_000)))
    code = (
        "import sys; from sources.readers import read_source\n"
        "g = read_source(sys.argv[1], batch_rows=1000); b = next(g); g.close(); print(b.num_rows)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1000"


# --- JSON ------------------------------------------------------------------------------


def test_jsonl_flattens_types_consistent_columns_and_reports_bad_lines() -> None:
    issues: list[SourceIssue] = []
    batches = list(read_source(FIX / "people.jsonl", issues=issues))
    schema = batches[0].schema
    assert schema.field("id").type == pa.int64()
    assert schema.field("score").type == pa.float64()  # 1.5 and 2: numbers
    assert schema.field("active").type == pa.bool_()
    assert schema.field("mixed").type == pa.string()  # 1 and "two"
    assert schema.field("tags").type == pa.list_(pa.string())
    assert schema.field("roles").type == pa.string()  # list of objects -> JSON text
    got = [r for b in batches for r in b.to_pylist()]
    assert got[0]["person.name.givenName"] == "Ann" and got[0]["person.employment.domain"] == "example.com"
    assert got[0]["zip"] == "01234" and got[0]["mixed"] == "1" and got[1]["mixed"] == "two"
    assert got[0]["roles"] == '[{"title":"CTO"}]' and got[0]["tags"] == ["vip", "eu"]
    assert [r["_om_row"] for r in got] == [1, 2, 5]
    assert [(i.kind, i.row, i.line) for i in issues] == [("invalid_json", 3, 4), ("not_an_object", 4, 5)]


def test_jsonl_schema_is_the_same_in_every_batch(tmp_path: Path) -> None:
    path = tmp_path / "drift.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": "x", "b": true}\n')
    batches = list(read_source(path, batch_rows=1))
    assert len(batches) == 3
    assert len({b.schema for b in batches}) == 1
    assert batches[0].schema.field("a").type == pa.string()
    assert [b.to_pylist()[0]["a"] for b in batches] == ["1", "2", "x"]


@pytest.mark.parametrize(("name", "first"), [("latin1.jsonl", "José"), ("latin1.json", "Renée")])
def test_json_that_is_not_utf8_is_decoded_as_cp1252_and_reported(name: str, first: str) -> None:
    issues: list[SourceIssue] = []
    assert rows(FIX / name, issues=issues)[0]["name"] == first
    assert [i.kind for i in issues] == ["encoding"]


@pytest.mark.parametrize("name", ["people_array.json", "wrapped.json", "single_key.json"])
def test_json_documents_yield_their_records(name: str) -> None:
    got = rows(FIX / name)
    assert [r["id"] for r in got] == [1, 2]
    assert got[1]["person.name.givenName"] == "Bo"


def test_json_object_without_a_list_is_one_row() -> None:
    got = rows(FIX / "one_object.json")
    assert got == [{"person.email": "ann@example.com", "company.domain": "example.com",
                    "_om_source": "one_object.json", "_om_row": 1}]


def test_json_file_holding_json_lines_is_read_as_json_lines() -> None:
    assert [r["a"] for r in rows(FIX / "lines_named.json")] == [1, 2]


def test_registered_document_adapter_is_asked_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(documents, "DOCUMENT_ADAPTERS", [])

    @documents.register_document_adapter
    def persons(doc: Any) -> list[dict[str, Any]] | None:
        if "person" not in doc:
            return None
        return [{"email": doc["person"]["email"], "domain": doc["company"]["domain"]}]

    assert [persons] == documents.DOCUMENT_ADAPTERS
    got = rows(FIX / "one_object.json")
    assert [(r["email"], r["domain"]) for r in got] == [("ann@example.com", "example.com")]


# --- Parquet, DuckDB, SQLite, frames --------------------------------------------------


def test_parquet_streams_batches_with_provenance(tmp_path: Path) -> None:
    path = tmp_path / "people.parquet"
    pq.write_table(pa.table({"id": [f"{i:03d}" for i in range(25)], "n": list(range(25))}), path,
                   row_group_size=10)
    batches = list(read_source(path, batch_rows=7))
    assert max(b.num_rows for b in batches) <= 7
    got = [r for b in batches for r in b.to_pylist()]
    assert [r["_om_row"] for r in got] == list(range(1, 26))
    assert got[0]["id"] == "000" and got[24]["n"] == 24
    assert list_columns(path) == ["id", "n"]


def test_duckdb_table_and_query(tmp_path: Path) -> None:
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE SCHEMA crm; CREATE TABLE crm.leads AS SELECT lpad(i::VARCHAR, 5, '0') AS zip, "
                "'p' || i || '@example.com' AS email FROM range(12) t(i)")
    con.close()
    got = [r for b in read_source(path, table="crm.leads", batch_rows=5) for r in b.to_pylist()]
    assert got[0]["zip"] == "00000" and [r["_om_row"] for r in got] == list(range(1, 13))
    assert got[0]["_om_source"] == "crm.leads"
    assert len(rows(f"duckdb:///{path}", table="crm.leads")) == 12  # SQLAlchemy-style URL, 4 slashes
    got = rows(path, query="SELECT email, email FROM crm.leads WHERE zip = '00003'")
    assert got == [
        {"email": "p3@example.com", "email__2": "p3@example.com", "_om_source": "query", "_om_row": 1}
    ]
    assert list_columns(path, table="crm.leads") == ["zip", "email"]
    with pytest.raises(SourceError, match="no_such_table"):
        rows(path, table="no_such_table")


def test_db_file_holding_sqlite_goes_through_sql(tmp_path: Path) -> None:
    path = tmp_path / "crm.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE leads (zip TEXT, email TEXT)")
    con.executemany("INSERT INTO leads VALUES (?, ?)", [("01234", "a@example.com"), ("00501", "b@x.example")])
    con.commit()
    con.close()
    got = rows(path, table="leads")
    assert [(r["zip"], r["_om_row"], r["_om_source"]) for r in got] == [
        ("01234", 1, "leads"),
        ("00501", 2, "leads"),
    ]
    got = rows(f"sqlite:///{path}", query="SELECT email FROM leads ORDER BY email DESC")
    assert [r["email"] for r in got] == ["b@x.example", "a@example.com"]
    assert list_columns(f"sqlite:///{path}", table="leads") == ["zip", "email"]
    with pytest.raises(SourceError, match="nope"):
        rows(f"sqlite:///{path}", table="nope")


def test_pandas_frame_passes_through_by_position() -> None:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame([["001", "a@example.com", 1], ["002", "b@example.com", "x"], ["003", None, 3]],
                      columns=["id", "email", "email"])
    batches = list(read_source(df, batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 1]
    got = [r for b in batches for r in b.to_pylist()]
    assert list(got[0]) == ["id", "email", "email__2", "_om_source", "_om_row"]
    assert [r["id"] for r in got] == ["001", "002", "003"] and got[2]["email"] is None
    assert [r["email__2"] for r in got] == ["1", "x", "3"]  # mixed object column -> strings
    assert [r["_om_row"] for r in got] == [1, 2, 3]


def test_arrow_table_is_sliced_to_batch_rows() -> None:
    table = pa.table({"id": list(range(10))})
    batches = list(read_source(table, batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert batches[2].column("_om_row").to_pylist() == [9, 10]


def test_file_url_is_a_local_path() -> None:
    assert rows(f"file://{FIX / 'pipes.txt'}")[0]["domain"] == "example.com"


def test_glob_numbers_rows_per_file(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("email\na@example.com\nb@example.com\n")
    (tmp_path / "b.csv").write_text("email\nc@example.com\n")
    got = rows(str(tmp_path / "*.csv"))
    assert [(r["_om_source"], r["_om_row"]) for r in got] == [("a.csv", 1), ("a.csv", 2), ("b.csv", 1)]


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kwargs", "match"),
    [
        (FIX / "missing.csv", {}, "missing.csv: no such file"),
        (FIX / "notes.xlsx", {}, r"notes.xlsx: cannot tell the format"),
        (FIX / "ragged.csv", {"fmt": "xml"}, "unknown format 'xml'"),
        (str(FIX / "*.nothing"), {}, "matches no file"),
        (FIX / "ragged.csv", {"batch_rows": 0}, "batch_rows"),
        (12, {}, "cannot read a int"),
        ("postgresql://u:s3cret@127.0.0.1:1/x", {}, "exactly one of table= or query="),
        ("s3://bucket/leads.csv", {}, "remote files are not read directly"),
    ],
)
def test_unreadable_sources_raise_source_error_naming_them(
    spec: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(SourceError, match=match) as info:
        rows(spec, **kwargs)
    assert "s3cret" not in str(info.value)


def test_unreachable_database_error_names_it_without_password() -> None:
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:1") as info:
        rows("postgresql://u:s3cret@127.0.0.1:1/x", table="t")
    assert "s3cret" not in str(info.value)

"""A repeated header (``lead_email`` twice, read as ``lead_email``, ``lead_email__2``).

The first copy is sent; a later copy fills only rows where the earlier ones are empty. A
value a copy holds beside a different non-empty one is not sent (sending it would guess
whether it is a second address of the person or another person), so it is never dropped
silently: the source's issues name the header and count the rows, and a copy none of whose
values was sent is listed with the unused columns.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa

from sources.canonical import CanonicalSource, open_source
from sources.mapping import UNSENT_ROWS_KEPT, CopyTally, apply_mapping, plan_mapping
from sources.readers import SourceIssue


def _read(path: Path, text: str, **kwargs: Any) -> tuple[list[dict[str, Any]], list[SourceIssue], CanonicalSource]:
    path.write_text(text, encoding="utf-8")
    issues: list[SourceIssue] = []
    src = open_source(str(path), issues=issues, **kwargs)
    rows = [r for batch in src for r in batch.to_pylist()]
    return rows, issues, src


def _notes(issues: list[SourceIssue]) -> list[str]:
    return [i.message for i in issues if i.kind == "duplicate_header"]


def test_a_copy_fills_empty_rows_and_its_lost_values_are_counted_by_row(tmp_path: Path) -> None:
    rows, issues, src = _read(
        tmp_path / "d.csv",
        "lead_email,lead_email,lead_first_name\n"
        "d1@ok.example,d2@ok.example,Dee\n"  # conflict: d2 not sent
        ",e@ok.example,Eve\n"  # fills the empty first copy
        "f@ok.example,f@ok.example,Fay\n"  # same value: nothing lost
        "g@ok.example,,Gus\n",
    )
    assert [r["lead_email"] for r in rows] == ["d1@ok.example", "e@ok.example", "f@ok.example", "g@ok.example"]
    notes = _notes(issues)
    assert notes[0].startswith("header 'lead_email' appears 2 times (read as lead_email, lead_email__2)")
    assert "lead_email__2 fills lead_email only on rows where lead_email is empty" in notes[0]
    (lost,) = [m for m in notes if m.startswith("lead_email__2")]
    assert "on 1 row it held a value different from the lead_email sent" in lost and "(rows 1)" in lost
    assert "on 2 rows its value was the one sent" in lost
    assert all(i.row is None for i in issues)  # warnings, not invalid rows: every row was sent
    # partly used, so not an "unused" column; the issue is what names its lost value
    assert "lead_email__2" not in src.plan.unused
    assert src.copy_tallies["lead_email__2"] == CopyTally(used=2, unsent=1, rows=[1])


def test_a_copy_none_of_whose_values_was_sent_is_an_unused_column(tmp_path: Path) -> None:
    _, issues, src = _read(
        tmp_path / "d.csv",
        "lead_email,lead_first_name,lead_email\na@ok.example,Ann,b@ok.example\nc@ok.example,Cy,\n",
    )
    assert src.plan.unused == ["lead_email__2"]
    assert any(m.startswith("lead_email__2") and "(rows 1)" in m for m in _notes(issues))


def test_identical_or_empty_copies_cost_only_the_header_warning(tmp_path: Path) -> None:
    _, issues, src = _read(
        tmp_path / "d.csv",
        "lead_email,lead_email,company_domain,company_domain\n"
        "a@ok.example,a@ok.example,ok.example,\nb@ok.example, b@ok.example ,,\n",
    )
    notes = _notes(issues)
    assert [m.split(" appears")[0] for m in notes] == ["header 'lead_email'", "header 'company_domain'"]
    assert src.plan.unused == []


def test_unmapped_repeated_header_and_a_lone_suffix_like_name(tmp_path: Path) -> None:
    _, issues, src = _read(
        tmp_path / "d.csv",
        "lead_email,lead_first_name,notes,notes,Name__2\na@ok.example,Ann,x,y,z\n",
    )
    # ``Name__2`` without a ``Name`` is a header of its own, not a copy
    assert _notes(issues) == ["header 'notes' appears 2 times (read as notes, notes__2); no API field uses it"]
    assert src.plan.unused == ["notes", "notes__2", "Name__2"]


def test_many_lost_rows_keep_the_first_rows_and_the_count(tmp_path: Path) -> None:
    n = UNSENT_ROWS_KEPT + 5
    body = "".join(f"a{i}@ok.example,b{i}@ok.example\n" for i in range(n))
    _, issues, _ = _read(tmp_path / "d.csv", "lead_email,lead_email\n" + body, batch_rows=7)
    (lost,) = [m for m in _notes(issues) if m.startswith("lead_email__2")]
    first = ", ".join(str(r) for r in range(1, UNSENT_ROWS_KEPT + 1))
    assert f"on {n} rows it held a value" in lost and f"(rows {first} and 5 more)" in lost


def test_a_mapping_file_that_names_the_copies_chooses_their_order(tmp_path: Path) -> None:
    mapping = tmp_path / "m.toml"
    mapping.write_text('[columns]\nlead_email = ["Email__2", "Email"]\n', encoding="utf-8")
    rows, issues, src = _read(tmp_path / "d.csv", "Email,Email\na@ok.example,b@ok.example\n", mapping_file=mapping)
    assert rows[0]["lead_email"] == "b@ok.example"
    assert src.plan.copies == {}
    assert len(_notes(issues)) == 1  # the header note only: the user chose which copy wins


def test_without_an_issues_list_the_notes_are_warnings(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("Email,Email,First Name\na@ok.example,b@ok.example,Ann\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = open_source(str(path), preset="generic")
        list(src)
    messages = [str(w.message) for w in caught]
    assert any("header 'Email' appears 2 times" in m for m in messages), messages
    assert any(m.startswith("d.csv: Email__2") and "(rows 1)" in m for m in messages), messages
    assert any("Email__2 fills lead_email" in line for line in src.plan.describe())


def test_tag_lists_compare_by_content() -> None:
    plan = plan_mapping(["tags", "tags__2", "lead_email", "_om_row"], preset="canonical")
    assert plan.copies == {"tags__2": "tags"}
    tags = pa.list_(pa.string())
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([["a", "b"], None, ["x"]], tags),
            pa.array([["a", "b"], ["c"], ["y"]], tags),
            pa.array(["1@ok.example", "2@ok.example", "3@ok.example"]),
            pa.array([1, 2, 3], pa.int64()),
        ],
        names=["tags", "tags__2", "lead_email", "_om_row"],
    )
    tallies: dict[str, CopyTally] = {}
    out = apply_mapping(batch, plan, tallies)
    assert out.column(out.schema.get_field_index("tags")).to_pylist() == [["a", "b"], ["c"], ["x"]]
    assert tallies == {"tags__2": CopyTally(used=2, unsent=1, rows=[3])}

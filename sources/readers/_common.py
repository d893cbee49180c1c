"""Shared pieces of every reader: provenance columns, header de-duplication, issue reporting.

Every reader yields Arrow record batches with the source's ORIGINAL column names plus two
provenance columns (`_om_source`, `_om_row`) so that a row rejected much later, after
normalization and merging, can still be reported as "contacts.csv row 1207".
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa

from destinations.outreach_magic.arrow_literals import literal, positions
from destinations.outreach_magic.exceptions import SourceError

SOURCE_COLUMN = "_om_source"
ROW_COLUMN = "_om_row"
PROVENANCE_COLUMNS = (SOURCE_COLUMN, ROW_COLUMN)


@dataclass(frozen=True)
class SourceIssue:
    """Something a reader noticed and worked around: a skipped bad row, a guessed encoding.

    `row` is the 1-based data-record position (same numbering as `_om_row`), `line` the
    1-based physical line in a text file where known. Neither ever holds row *content*
    beyond a short excerpt, because sources may contain personal data.
    """

    source: str
    kind: str  # "encoding" | "ragged_row" | "invalid_json" | "not_an_object" | ...
    message: str
    row: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f" row {self.row}" if self.row is not None else ""
        where += f" (line {self.line})" if self.line is not None else ""
        return f"{self.source}{where}: {self.message}"


class SourceWarning(UserWarning):
    """Emitted for a SourceIssue when the caller passed no `issues` list to collect them."""


class IssueSink:
    """Collects issues into the caller's list, or warns, so nothing is silently dropped."""

    def __init__(self, target: list[SourceIssue] | None) -> None:
        self._target = target

    def report(self, issue: SourceIssue) -> None:
        if self._target is not None:
            self._target.append(issue)
        else:
            warnings.warn(str(issue), SourceWarning, stacklevel=3)


def dedupe_names(names: Sequence[str]) -> list[str]:
    """Make column names unique BY POSITION: the second `Name` becomes `Name__2`, the third `Name__3`.

    Exports really do repeat headers (two `Email` columns in Apollo/Clay exports); Arrow
    and dict-based code would otherwise let the last one silently win. A UTF-8 BOM left on
    the first name is stripped; an empty name becomes `column_<position>`.
    """
    out: list[str] = []
    seen: set[str] = set()
    counts: dict[str, int] = {}
    for i, raw in enumerate(names):
        name = raw.lstrip("\ufeff") if i == 0 else raw
        if name == "":
            name = f"column_{i + 1}"
        base = name
        if name in seen:
            n = counts.get(base, 1)
            while True:
                n += 1
                name = f"{base}__{n}"
                if name not in seen:
                    break
            counts[base] = n
        seen.add(name)
        out.append(name)
    return out


def add_provenance(batch: pa.RecordBatch, label: str, first_row: int, names: Sequence[str]) -> pa.RecordBatch:
    """Rename columns by position to `names` and append `_om_source` / `_om_row`.

    `first_row` is the 1-based record number of the batch's first row; rows are numbered
    consecutively. Source columns that already carry a provenance name (e.g. a Parquet
    file written by an earlier run) are dropped: the values this read computes win.
    """
    return add_provenance_rows(batch, label, positions(batch.num_rows, start=first_row), names)


def add_provenance_rows(
    batch: pa.RecordBatch, label: str, rows: pa.Array, names: Sequence[str]
) -> pa.RecordBatch:
    """Like add_provenance, with explicit row numbers (readers that skipped bad records)."""
    pairs = zip(names, batch.columns, strict=True)
    keep = [(name, col) for name, col in pairs if name not in PROVENANCE_COLUMNS]
    arrays = [col for _, col in keep]
    arrays.append(pa.repeat(literal(label, pa.string()), batch.num_rows))  # no pandas: see arrow_literals
    arrays.append(rows)
    return pa.RecordBatch.from_arrays(arrays, names=[name for name, _ in keep] + list(PROVENANCE_COLUMNS))


def slice_batches(batches: Iterable[pa.RecordBatch], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Cut batches larger than `batch_rows` (zero-copy slices); drop empty ones."""
    for batch in batches:
        for start in range(0, batch.num_rows, batch_rows):
            yield batch.slice(start, batch_rows)


def check_batch_rows(batch_rows: int) -> None:
    if not isinstance(batch_rows, int) or batch_rows < 1:
        raise SourceError(f"batch_rows must be a positive integer, got {batch_rows!r}")

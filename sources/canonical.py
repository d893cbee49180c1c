"""Glue: a source spec in, canonical record batches out, with the mapping plan known up front.

The runner needs the plan (which preset, which columns are unused) before it reads a
single row, to print it and to decide the dlt schema; ``open_source`` builds it from the
headers alone (``list_columns``), and iterating reads the rows batch by batch.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from sources.mapping import CopyTally, MappingPlan, apply_mapping, plan_mapping

#: Reader keyword arguments that also matter for listing the columns.
_LISTING_KWARGS = ("table", "query", "fmt")


class CanonicalSource:
    """Iterable of canonical RecordBatches of one source; ``plan`` is ready before iteration.

    Iterating twice reads the source twice (each iteration is a fresh reader), so a
    caller that needs a second pass does not have to keep batches in memory.
    """

    def __init__(
        self,
        spec: Any,
        plan: MappingPlan,
        reader_kwargs: dict[str, Any],
        *,
        columns: list[str],
        mapping_file: str | Path | None = None,
        constants: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.plan = plan
        self.reader_kwargs = reader_kwargs
        self.mapping_file = mapping_file
        self.constants = constants
        self._planned_columns = list(columns)
        #: per fallback copy of a repeated header: what became of its values in the last pass
        self.copy_tallies: dict[str, CopyTally] = {}
        #: Called with every raw batch before mapping (the runner tracks an incremental
        #: cursor column there, which the mapping does not keep).
        self.on_raw: Callable[[pa.RecordBatch], None] | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        from sources.readers import read_source

        self.copy_tallies = {}
        for batch in read_source(self.spec, **self.reader_kwargs):
            if batch.schema.names != self._planned_columns:
                self._replan(batch.schema.names)
            if self.on_raw is not None:
                self.on_raw(batch)
            yield apply_mapping(batch, self.plan, self.copy_tallies)
        self._report_unsent_copies()

    def _report_unsent_copies(self) -> None:
        """After a full pass: name every fallback copy whose values were not all sent.

        A copy none of whose values was sent joins ``plan.unused`` (the report's unused
        columns); every copy that lost values gets an issue with the count and first rows.
        """
        for col, tally in self.copy_tallies.items():
            if not tally.unsent:
                continue
            if not tally.used and col not in self.plan.unused:
                self.plan.unused.append(col)
            field = self.plan.copies.get(col, "its field")
            rows = ", ".join(map(str, tally.rows))
            if tally.unsent > len(tally.rows):
                rows += f" and {tally.unsent - len(tally.rows):,} more"
            base = next((h for h, cols in self.plan.repeated.items() if col in cols), col)
            self._issue(
                f"{col} (a copy of the repeated header {base!r}): on {_rows(tally.unsent)} it held a value "
                f"different from the {field} sent, and that value was not sent (rows {rows}); "
                f"on {_rows(tally.used)} its value was the one sent"
            )

    def _issue(self, message: str) -> None:
        from sources.readers import IssueSink, SourceIssue

        IssueSink(self.reader_kwargs.get("issues")).report(
            SourceIssue(_issue_label(self.spec), "duplicate_header", message)
        )

    def report_repeated_headers(self, headers: set[str] | None = None) -> None:
        """One issue (or warning, without an issues list) per header the source repeats."""
        for header, note in self.plan.repeated_notes().items():
            if headers is None or header in headers:
                self._issue(note)

    def _replan(self, columns: list[str]) -> None:
        """Re-resolve the columns, same preset, when the rows show columns the header peek missed.

        Listing the columns of JSON Lines samples the first records only; a key that first
        appears later (an email on event 1,500) would otherwise never be mapped. The preset
        ``auto`` chose stays: only which columns feed which field is recomputed.
        """
        replanned = plan_mapping(
            columns, preset=self.plan.preset, mapping_file=self.mapping_file, constants=self.constants
        )
        replanned.reason = self.plan.reason
        self.plan.columns, self.plan.helpers, self.plan.unused = (
            replanned.columns,
            replanned.helpers,
            replanned.unused,
        )
        new_repeats = set(replanned.repeated) - set(self.plan.repeated)
        self.plan.repeated, self.plan.copies = replanned.repeated, replanned.copies
        if new_repeats:
            self.report_repeated_headers(new_repeats)
        self._planned_columns = list(columns)


def _rows(n: int) -> str:
    return f"{n:,} row" + ("" if n == 1 else "s")


def _issue_label(spec: Any) -> str:
    """The source an issue names: a file's name; never a URL (it may carry a password)."""
    if isinstance(spec, Path) or (isinstance(spec, str) and "://" not in spec):
        return Path(spec).name
    return "query" if isinstance(spec, str) else type(spec).__name__


def expand_specs(specs: Any) -> list[Any]:
    """One entry per file: globs become their sorted files; URLs, frames and paths pass through.

    ``sync`` and ``known`` both use it, so each file of a glob gets its own plan and count.
    """
    from destinations.outreach_magic.exceptions import SourceError

    items = list(specs) if isinstance(specs, (list, tuple)) else [specs]
    out: list[Any] = []
    for spec in items:
        if isinstance(spec, str) and "://" not in spec and any(ch in spec for ch in "*?["):
            matches = sorted(glob.glob(spec))
            if not matches:
                raise SourceError(f"no file matches {spec!r}")
            out.extend(matches)
        else:
            out.append(spec)
    return out


def open_source(
    spec: Any,
    *,
    preset: str = "auto",
    mapping_file: str | Path | None = None,
    constants: dict[str, Any] | None = None,
    **reader_kwargs: Any,
) -> CanonicalSource:
    """Plan the mapping of ``spec`` from its headers and return the canonical batches to iterate.

    ``reader_kwargs`` go to ``sources.readers.read_source`` (``table``, ``query``,
    ``batch_rows``, ``cursor_column``, ``cursor_start``, ``fmt``...).
    """
    from sources.readers import list_columns

    listing = {k: reader_kwargs[k] for k in _LISTING_KWARGS if reader_kwargs.get(k) is not None}
    columns = list_columns(spec, **listing)
    plan = plan_mapping(columns, preset=preset, mapping_file=mapping_file, constants=constants)
    source = CanonicalSource(
        spec, plan, reader_kwargs, columns=columns, mapping_file=mapping_file, constants=constants
    )
    source.report_repeated_headers()
    return source

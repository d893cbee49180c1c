"""Glue: a source spec in, canonical record batches out, with the mapping plan known up front.

The runner needs the plan (which preset, which columns are unused) before it reads a
single row, to print it and to decide the dlt schema; ``open_source`` builds it from the
headers alone (``list_columns``), and iterating reads the rows batch by batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from sources.mapping import MappingPlan, apply_mapping, plan_mapping

#: Reader keyword arguments that also matter for listing the columns.
_LISTING_KWARGS = ("table", "query", "fmt")


class CanonicalSource:
    """Iterable of canonical RecordBatches of one source; ``plan`` is ready before iteration.

    Iterating twice reads the source twice (each iteration is a fresh reader), so a
    caller that needs a second pass does not have to keep batches in memory.
    """

    def __init__(self, spec: Any, plan: MappingPlan, reader_kwargs: dict[str, Any]) -> None:
        self.spec = spec
        self.plan = plan
        self.reader_kwargs = reader_kwargs

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        from sources.readers import read_source

        for batch in read_source(self.spec, **self.reader_kwargs):
            yield apply_mapping(batch, self.plan)


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
    return CanonicalSource(spec, plan, reader_kwargs)

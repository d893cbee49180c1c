"""The Outreach Magic ``update_attributes`` dlt destination.

Use it around any dlt source whose columns are named like the API's fields::

    import dlt
    from destinations.outreach_magic import outreach_magic

    pipeline = dlt.pipeline("leads_to_om", destination=outreach_magic(state_path="state/om.duckdb"))
    pipeline.run(my_rows, table_name="leads")

The factory lives in ``destination.py`` and is imported on first use, so that the
modules that need no dlt (the contract for the sandbox, identifiers, the client) load
without it: importing dlt takes about a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .destination import outreach_magic, parse_partition
    from .sink import SinkOptions

__all__ = ["SinkOptions", "outreach_magic", "parse_partition"]


def __getattr__(name: str) -> Any:
    if name in ("outreach_magic", "parse_partition"):
        from . import destination

        return getattr(destination, name)
    if name == "SinkOptions":
        from .sink import SinkOptions

        return SinkOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

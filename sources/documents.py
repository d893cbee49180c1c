"""Registry of JSON *document* adapters: tool-specific shapes that are not a plain list of records.

A top-level JSON object (e.g. Lusha's bulk person response, whose companies sit in a separate
map) cannot be turned into rows generically. The readers ask every registered adapter, in
order, before falling back to the generic rules (`{"data": [...]}`, `{"results": [...]}`, a
single key holding a list of objects, else the object itself as one row). Presets register
their adapters here so that the readers never import presets (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

DocumentAdapter = Callable[[Any], "Iterable[dict[str, Any]] | None"]

#: Adapters asked in order; the first that returns something other than None wins.
DOCUMENT_ADAPTERS: list[DocumentAdapter] = []


def register_document_adapter(adapter: DocumentAdapter) -> DocumentAdapter:
    """Decorator: add `adapter(doc) -> Iterable[dict] | None` to DOCUMENT_ADAPTERS (once)."""
    if adapter not in DOCUMENT_ADAPTERS:
        DOCUMENT_ADAPTERS.append(adapter)
    return adapter


def _register_builtin_adapters() -> None:
    """Register the presets' adapters even when only the readers are imported.

    Without this, ``read_source("lusha.json")`` would read a Lusha bulk response as one
    wide row unless something had imported ``sources.presets`` first. The import runs here,
    at the end of this module, so ``register_document_adapter`` already exists when
    ``sources.presets`` imports it back.
    """
    from sources.presets.json_tools import lusha_document

    register_document_adapter(lusha_document)


_register_builtin_adapters()

"""Presets from each tool's export columns to the canonical fields (named like the API's).

``PRESETS`` is the registry the mapping and the CLI use. Importing this package also
registers the Lusha document adapter with the readers (``sources.documents``), so a Lusha
bulk response reads as one row per contact with its company joined in.
"""

from __future__ import annotations

from sources.documents import register_document_adapter
from sources.presets.base import Preset, base_header, header_key
from sources.presets.csv_tools import APOLLO, CLAY, LUSHA, ZOOMINFO
from sources.presets.generic import CANONICAL, GENERIC
from sources.presets.json_tools import CLEARBIT, HEYREACH, PROSP, lusha_document

#: Registry in ``auto``'s tie-break order (earlier wins a tie).
PRESETS: dict[str, Preset] = {
    p.name: p for p in (APOLLO, ZOOMINFO, LUSHA, CLEARBIT, CLAY, HEYREACH, PROSP, CANONICAL, GENERIC)
}

register_document_adapter(lusha_document)

__all__ = ["PRESETS", "Preset", "base_header", "header_key", "lusha_document"]

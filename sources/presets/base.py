"""What a preset is: canonical field -> the source column names a tool really uses.

A preset never normalizes identifiers (staging does that once, for every source alike); it
only says which source column holds which canonical field, how to recognise the tool from
its headers, and, for event exports, which fields follow from the event (``derive``).

Header names are compared by :func:`header_key` (case, spaces, underscores, dots and
punctuation ignored), because the same export reaches users re-saved by Excel, Google
Sheets or a script that renamed ``First Name`` to ``first_name``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa

#: The readers rename the 2nd, 3rd... occurrence of a header to ``Name__2``, ``Name__3``.
DUPLICATE_SUFFIX = re.compile(r"__(\d+)$")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")

#: ``derive(mapped, helpers) -> mapped``: mapped canonical arrays and helper arrays (by helper
#: name) of one batch in, the canonical arrays to emit out. Runs vectorized, once per batch.
Derive = Callable[[dict[str, pa.Array], dict[str, pa.Array]], dict[str, pa.Array]]


def header_key(name: str) -> str:
    """Comparison key of a header: lower-case letters and digits only (``# Employees`` -> ``employees``)."""
    return _NON_ALNUM.sub("", name.replace("\ufeff", "").lower())


def base_header(name: str) -> tuple[str, int]:
    """Split a reader-renamed duplicate header: ``Email__2`` -> (``Email``, 2), ``Email`` -> 1."""
    m = DUPLICATE_SUFFIX.search(name)
    if m is None:
        return name, 1
    return name[: m.start()], int(m.group(1))


@dataclass(frozen=True)
class Preset:
    """One tool's export format.

    ``columns`` maps each canonical field to source header names in priority order: when
    several are present, the first non-empty value wins per row (Apollo's ``Company``
    before ``Company Name for Emails``). ``signature`` lists headers distinctive of the tool,
    used by ``auto``; ``min_signature`` is how many of them must be present. ``guessed`` names
    the source columns whose spelling we could not confirm from public material (the README
    marks them). ``platform`` is the default ``platform`` constant (overridable).
    """

    name: str
    title: str
    columns: Mapping[str, tuple[str, ...]]
    signature: tuple[str, ...] = ()
    min_signature: int = 2
    helpers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    derive: Derive | None = None
    platform: str | None = None
    guessed: frozenset[str] = frozenset()
    #: Only for ``canonical``: compare headers exactly (lower-cased), not by ``header_key``.
    exact: bool = False

    def key(self, header: str) -> str:
        """The comparison key this preset uses for a header."""
        return header.strip().lower() if self.exact else header_key(header)

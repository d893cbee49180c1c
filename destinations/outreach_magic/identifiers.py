"""Normalize identifiers and attributes so that one person is one lead and one company one company.

The API matches every identifier except emails *exactly as sent* (``shared/API-CONTRACT.md``),
so two spellings of one LinkedIn URL become two leads unless the client writes them one
way. Every function here is pure, returns ``None`` for "not provided" (``None``, NaN, an
empty or blank string) and raises :class:`IdentifierError` for a value that cannot be
normalized: nothing is silently dropped, guessed or followed over the network.

Rules (each decision says why; the tests in ``tests/test_identifiers.py`` pin every one):

Common to every identifier column
  * Trim surrounding whitespace; remove NUL, other control characters and zero-width
    characters (U+200B/C/D, U+2060, U+FEFF): they are copy-paste artefacts and invisible.
  * Placeholders (``n/a``, ``na``, ``-``, ``--``, ``none``, ``null``, ``nil``, ``unknown``,
    ``undefined``, ``nan``, ``#n/a``, ``tbd``, ``?``, ...) are INVALID, not "not provided": the
    issue says so for emails, and the same holds for every identifier column, because a
    placeholder means the source *tried* to fill the cell, which a report should show.
  * Internal whitespace in an identifier makes it invalid (it is never squeezed out).

email (``lead_email``)
  Strip ``mailto:`` (and its ``?subject=`` part), a display name around ``<addr>``, and
  matching quotes; lower-case (the API matches emails ignoring case, and most exports
  differ only in case); an internationalized domain goes to its ASCII ``xn--`` form (IDNA
  2008 with UTS #46 mapping, as browsers do). Invalid: placeholders, Apollo's stand-in
  ``email_not_unlocked@domain.com``, no or several ``@`` (two addresses in one cell are not
  split: which one is the lead's would be a guess), spaces, a local part over 64 or an
  address over 254 characters, leading/trailing/double dots, a domain without a dot or
  with a numeric top-level label. Gmail dots and ``+tags`` are kept: they are part of
  the address.

LinkedIn profile URL (``lead_linkedin_url``, ``sender``) -> ``https://www.linkedin.com/in/<slug>/``
  http or https or no scheme, any ``*.linkedin.com`` host (``www``, ``m``, country
  subdomains such as ``uk``), ``/mwlite/`` and ``/comm/`` prefixes, query strings
  (``?trk=``, ``?originalSubdomain=``), fragments and every segment after the slug
  (``/en``, ``/details/experience/``, ``/recent-activity/all/``, ``/overlay/...``) are
  dropped. The slug is percent-decoded (UTF-8), NFC-normalized and lower-cased, except a
  member-id slug (``ACoAA...``/``ACwAA...``), which is case-sensitive and kept as is.
  Clearbit-style handles ``in/<slug>`` become full URLs. Two people with the same name
  keep their distinct slugs (the numeric suffix is never trimmed).
  Legacy ``/pub/<name>/<a>/<b>/<c>`` URLs map to ``/in/<name>-<c><b><a>`` with ``b`` and
  ``c`` left-padded with zeros to three characters: this is the target of LinkedIn's own
  301 redirects for those URLs (documented with real examples by the
  ``linkedin-canonical-url`` package: ``/pub/krzysztof-marzec/a7/576/b50`` ->
  ``/in/krzysztof-marzec-b50576a7``, ``/pub/abdi-ahmed/100/384/6b0`` ->
  ``/in/abdi-ahmed-6b0384100``); ``/pub/`` without the three hex segments and ``/pub/dir/``
  (a search directory) are invalid.
  Invalid, never converted or followed: ``lnkd.in`` short links (following one needs the
  network and may land anywhere), company/school/showcase pages, Sales Navigator URLs
  (they belong in ``lead_sales_navigator_url``), ``/profile/view?id=`` URLs, other hosts.

Sales Navigator URL (``lead_sales_navigator_url``) -> ``https://www.linkedin.com/sales/lead/<id>``
  ``/sales/lead/<id>,NAME_SEARCH,xyz`` and ``/sales/people/<id>,...`` (also with ``%2C``);
  the id keeps its case (ids are case-sensitive). An id that is entirely lower case and
  starts ``acwaa``/``acoaa`` was lower-cased by some tool: it is invalid, not "repaired"
  (the original case cannot be recovered). Other ``/sales/`` pages are invalid.

LinkedIn company URL (``company_linkedin_url``) -> ``https://www.linkedin.com/company/<slug>/``
  Same host/prefix/query/trailing-segment rules; ``/school/`` and ``/showcase/`` pages keep
  their kind (the contract accepts them); the slug is decoded and lower-cased (company
  slugs are case-insensitive on LinkedIn); numeric ids are kept. ``company/<slug>``
  handles become full URLs. A person's ``/in/`` URL in this column is invalid.

company domain (``company_domain``) from a website URL, a bare host or an email
  The registrable domain by the Public Suffix List *including its private section*
  (``foo.github.io``, ``x.herokuapp.com`` stay whole; ``www.acme.co.uk`` -> ``acme.co.uk``),
  lower-cased, IDN to ASCII. Offline: tldextract with ``suffix_list_urls=()`` and no cache
  directory reads only its bundled snapshot (a test runs it with sockets disabled).
  A host whose top-level label is not in the list gets the PSL's implicit ``*`` rule
  (the last label is the suffix), so ``bücher.example`` -> ``xn--bcher-kva.example``.
  Invalid: IP addresses, single labels (``localhost``), a bare public suffix
  (``co.uk``, ``github.io``), schemes other than http(s), and a *page* on a platform that
  is not the company's own site (``linkedin.com/company/x``, ``facebook.com/acme``, ...:
  taking ``linkedin.com`` as the domain would merge every such company into one).
  Free-mail domains (``gmail.com``) are not judged here: that is a mapping decision.

company_employee_count -> a digit string
  ``1,240``/``1 240``/``1'240``/``1.240`` (groups of three: a fractional head count does not
  exist, so a dot before exactly three digits can only be grouping) -> ``1240``;
  ``1240.0`` -> ``1240``; ``1.2k`` -> ``1200`` and ``3M`` -> ``3000000`` (the source's own
  number written short; exact decimal arithmetic, must come out whole); a trailing
  ``employees`` is dropped. Invalid, not guessed: ranges (``51-200``, ``10,001+``: they belong
  in ``company_employee_range``, which keeps them as text), approximations (``~500``,
  ``<50``), negatives, fractions, placeholders.

ids
  ``unified_lead_id``, ``unified_company_id``, ``workspace_id``: trimmed, lower-cased, must be
  24 hex characters. ``lead_linkedin_id``: trimmed, case kept (member ids are
  case-sensitive), no whitespace or ``/`` (a URL is not an id); URNs are not unwrapped,
  because which form the API stores is not documented.

linkedin_connection_level -> ``"1"``, ``"2"`` or ``"3"``
  From ``1``/``"1"``/``"1st"``/``"first"``/``"1st degree"``/``DISTANCE_1`` (LinkedIn's API
  vocabulary); ``3rd+`` -> ``"3"`` (LinkedIn's label for "3rd degree and beyond", and 3
  is the API's highest level). Anything else (``OUT_OF_NETWORK``, ``4``) is invalid.

tags -> list of strings
  From a list, a JSON array string, or a string delimited by ``;``, ``,`` or ``|`` (all
  three split); each tag gets the text rule; empty tags are dropped, duplicates removed
  keeping the first (tags are a set and replace the stored list); nothing left -> None.

free text (names, titles, ``company_name``, ``icp``, ...)
  Trim; remove NUL/control/zero-width characters except ZWNJ/ZWJ (U+200C/D), which
  change meaning in Persian and Indic scripts and in emoji; NFC (canonically equivalent,
  so no meaning changes, but equal text compares equal); collapse every run of
  whitespace (newlines, tabs, NBSP) to one space, except in ``company_description``,
  which keeps its line breaks (CRLF -> LF). Placeholders are KEPT in free text: ``NA``
  is Namibia and ``Null`` a surname, so a placeholder cannot be told from a value there.
  Over 10,000 characters (the contract's limit) is invalid, never truncated.

Speed (``bench/normalize.py``): each normalizer is cached per distinct value
(``functools.lru_cache``, bounded). :func:`normalize_table` is the hot path:

* a vectorized Arrow prefilter per kind settles the values already canonical or in the
  common messy forms (case, whitespace, ``http://``, country hosts, query strings,
  trailing segments, ``mailto:``, ``Name <addr>``, websites with paths/ports/``www.``), and
  rewrites them in C++; it validates with one anchored regex (RE2 runs it as a DFA)
  and extracts with splits, because RE2 capture groups cost ~10x more; the PSL walk runs
  as set lookups on labels taken from one split's offsets;
* only the rest goes through the Python functions, once per distinct value;
* a column whose first rows repeat a lot (company websites in a lead export) is
  dictionary-encoded and normalized per distinct value; an all-null column costs nothing;
* prefilters return full-length values merged with ``if_else`` (``replace_with_mask``
  cost ten times more).
Measured and not kept: a thread per column (Arrow releases the GIL) gained nothing on
the shared 2-core machine. ``fast=False`` turns the prefilters off; the tests run every
case (and random strings, with hypothesis) both ways and require the same output.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache, partial
from typing import Any
from urllib.parse import unquote

import idna
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import tldextract

from destinations.outreach_magic.arrow_literals import (
    FALSE,
    TRUE,
    as_numpy,
    literal,
    numeric_array,
    string_array,
    string_list_array,
)

from . import settings as s

CACHE_SIZE = 1 << 16
"""Distinct values remembered per normalizer: bounded, so a 50M-row run cannot grow memory."""

PLACEHOLDERS: frozenset[str] = frozenset(
    {
        "n/a", "n.a.", "n.a", "na", "#n/a", "-", "--", "---", "—", "–", "none", "null", "nil",
        "unknown", "undefined", "nan", "tbd", "?", "not available", "not provided", "no email",
        "(none)", "[none]", "<none>", "(blank)", "blank", "empty",
    }
)  # fmt: skip

APOLLO_LOCKED_LOCAL = "email_not_unlocked"
"""Apollo's stand-in for an email the plan has not revealed: an address, but nobody's."""

PLATFORM_DOMAINS: frozenset[str] = frozenset(
    {
        "linkedin.com", "lnkd.in", "facebook.com", "fb.com", "fb.me", "instagram.com",
        "twitter.com", "x.com", "youtube.com", "crunchbase.com", "angel.co", "wellfound.com",
        "github.com", "medium.com", "google.com", "goo.gl", "bit.ly", "linktr.ee",
    }
)  # fmt: skip
"""Hosts whose *pages* are profiles of many companies: a path on them is not a company site."""

MEMBER_ID_PREFIXES = ("ACoAA", "ACwAA")
MULTILINE_TEXT_FIELDS: frozenset[str] = frozenset({"company_description"})


class IdentifierError(ValueError):
    """A value that cannot be normalized; ``str()`` names the column, the value and why."""

    def __init__(self, column: str, value: Any, reason: str) -> None:
        self.column = column
        self.value = value
        self.reason = reason
        super().__init__(f"{column}: {value!r} is {reason}")


@dataclass(frozen=True, slots=True)
class RowIssue:
    """One invalid cell of :func:`normalize_table`'s input (``row`` is its 0-based position)."""

    row: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True)
class NormalizeResult:
    """The normalized table (invalid cells set to null) and one issue per invalid cell."""

    table: pa.Table | pa.RecordBatch
    errors: list[RowIssue]


class _Invalid:
    """A cached verdict "invalid because ``reason``" (lru_cache does not cache exceptions)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_Outcome = Any  # str | list[str] | None | _Invalid (kept loose for the generic plumbing)

# --- cleaning ------------------------------------------------------------------------

_CONTROL = {c: None for c in (*range(0, 9), 11, 12, *range(14, 32), 127, *range(128, 160))}
_ZERO_WIDTH_ALWAYS = {0x200B: None, 0x2060: None, 0xFEFF: None}
_ZERO_WIDTH_JOINERS = {0x200C: None, 0x200D: None}
_TEXT_DROP = {**_CONTROL, **_ZERO_WIDTH_ALWAYS}
# Bidirectional controls (LRM, RLM, embeddings, overrides, isolates) never belong in an
# identifier: they make "\u202eevil@x" display as another address and match nothing.
_BIDI_CONTROLS = {cp: None for cp in (0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}
_IDENT_DROP = {**_CONTROL, **_ZERO_WIDTH_ALWAYS, **_ZERO_WIDTH_JOINERS, **_BIDI_CONTROLS, 9: " ", 10: " ", 13: " "}
_SPACE_RUN = re.compile(r"\s+")
_NEWLINES = re.compile(r"\r\n?")
_HAS_SPACE = re.compile(r"\s")


_IDENT_SPECIAL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]")
_TEXT_SPECIAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u2060\ufeff]")


def _clean_identifier(value: str) -> str:
    """Invisible characters out, then trim (``translate`` only when needed: it is slow)."""
    if _IDENT_SPECIAL.search(value):
        value = value.translate(_IDENT_DROP)
    return value.strip()


_URL_RE = re.compile(r"^([a-z][a-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?", re.I)


def _split_url(value: str, default_scheme: str) -> tuple[str, str, str, str, str] | None:
    """``(scheme, host, port, path, query)`` of a URL, a scheme added if missing.

    A small regex instead of ``urllib.parse.urlsplit``, which costs ~10x more per call and
    whose extra checks (port ranges, brackets) are not wanted here; the host keeps its case.
    """
    if value.startswith("//"):
        value = default_scheme + ":" + value
    elif _SCHEME_RE.match(value) is None:
        value = default_scheme + "://" + value
    match = _URL_RE.match(value)
    if match is None:
        return None
    scheme, netloc, path, query = match.groups()
    host, _, port = netloc.rsplit("@", 1)[-1].partition(":")
    return scheme.lower(), host, port, path, query or ""


def _is_placeholder(value: str) -> bool:
    return value.lower() in PLACEHOLDERS


# --- email ---------------------------------------------------------------------------

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_TLD = r"[a-z][a-z0-9-]{0,61}[a-z0-9]"
_ASCII_DOMAIN = rf"(?:{_LABEL}\.)+{_TLD}"
EMAIL_FAST_PATTERN = rf"^{_ATOM}(?:\.{_ATOM})*@{_ASCII_DOMAIN}$"
"""An ASCII address already in canonical form once lower-cased (shared by both paths)."""
_EMAIL_ASCII_RE = re.compile(EMAIL_FAST_PATTERN)
_UNICODE_LOCAL_RE = re.compile(r'^[^\s@<>()\[\],;:"\\.]+(?:\.[^\s@<>()\[\],;:"\\.]+)*$')
_ASCII_DOMAIN_RE = re.compile(rf"^{_ASCII_DOMAIN}$")
_ANGLE_RE = re.compile(r"<([^<>]*)>")


def _to_ascii_host(host: str) -> str | _Invalid:
    """Lower-case an ASCII host, or IDNA-encode a Unicode one (UTS #46, as browsers do)."""
    return host.lower() if host.isascii() else _idna_host(host)


@lru_cache(maxsize=CACHE_SIZE)
def _idna_host(host: str) -> str | _Invalid:
    """Cached apart: IDNA costs ~100 us a call, and one company's domain repeats per employee."""
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return _Invalid("an invalid internationalized domain name")


@lru_cache(maxsize=CACHE_SIZE)
def _email(raw: str) -> _Outcome:
    what = "not an email address"
    value = _clean_identifier(raw)
    if not value:
        return None
    if _is_placeholder(value):
        return _Invalid(f"{what} (placeholder)")
    if value[:7].lower() == "mailto:":
        value = value[7:].split("?", 1)[0].strip()
    angle = _ANGLE_RE.findall(value)
    if len(angle) == 1:
        value = angle[0].strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1].strip()
    if value.count("@") > 1:
        return _Invalid(f"{what} (several '@': one address per cell)")
    if "@" not in value:
        return _Invalid(f"{what} (no '@')")
    if _HAS_SPACE.search(value) or "<" in value or ">" in value:
        return _Invalid(f"{what} (contains spaces or brackets)")
    local, domain = value.split("@")
    if domain.endswith("."):
        domain = domain[:-1]
    ascii_domain = _to_ascii_host(domain)
    if isinstance(ascii_domain, _Invalid):
        return _Invalid(f"{what} ({ascii_domain.reason})")
    local = local.lower()
    if local == APOLLO_LOCKED_LOCAL:
        return _Invalid(f"{what} (placeholder: Apollo's locked-email stand-in)")
    address = f"{local}@{ascii_domain}"
    if not local or len(local) > 64 or len(address) > 254:
        return _Invalid(f"{what} (empty or too long)")
    if local.isascii():
        ok = _EMAIL_ASCII_RE.match(address) is not None
    else:
        ok = _UNICODE_LOCAL_RE.match(local) is not None and _ASCII_DOMAIN_RE.match(ascii_domain) is not None
    return address if ok else _Invalid(what)


# --- LinkedIn ------------------------------------------------------------------------

_SCHEME_RE = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)
_PATH_PREFIXES = frozenset({"mwlite", "comm"})
_COMPANY_KINDS = frozenset({"company", "school", "showcase"})
_HEX_1_3 = re.compile(r"^[0-9a-f]{1,3}$")
_SALES_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_BAD_SLUG_RE = re.compile(r"[\s/?#]")


def _linkedin_segments(value: str) -> list[str] | _Invalid:
    """The path segments of a LinkedIn URL or handle (prefixes dropped), or why it is none."""
    if _SCHEME_RE.match(value) is None and "." not in value.lstrip("/").split("/", 1)[0]:
        path = value  # a handle such as "in/jane" or "/company/acme" (Clearbit)
    else:
        parts = _split_url(value, "https")
        if parts is None:
            return _Invalid("not a URL")
        scheme, host, _, path, _ = parts
        host = host.lower().rstrip(".")
        if scheme not in ("http", "https"):
            return _Invalid(f"not a LinkedIn URL (scheme {scheme!r})")
        if host == "lnkd.in" or host.endswith(".lnkd.in"):
            return _Invalid("a lnkd.in short link, not followed: that needs the network, may lead anywhere")
        if host != "linkedin.com" and not host.endswith(".linkedin.com"):
            return _Invalid("not a LinkedIn URL")
    segments = [p for p in path.split("/") if p]
    while segments and segments[0].lower() in _PATH_PREFIXES:
        segments = segments[1:]
    return segments


def _url_input(raw: str, what: str) -> str | _Invalid | None:
    """The cleaned value of a LinkedIn URL cell, or its verdict: None (not provided) or invalid."""
    value = _clean_identifier(raw)
    if not value:
        return None
    if _is_placeholder(value):
        return _Invalid(f"{what} (placeholder)")
    if _HAS_SPACE.search(value):
        return _Invalid(f"{what} (contains spaces)")
    return value


def _segments_invalid(what: str, invalid: _Invalid) -> _Invalid:
    """A URL-level reason ("a lnkd.in short link...") is worded for the column's kind."""
    return _Invalid(f"{what} ({invalid.reason})") if invalid.reason.startswith("a ") else invalid


_PERCENT_RUN = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


def _unquote_run(match: re.Match[str]) -> str:
    return bytes.fromhex(match.group().replace("%", "")).decode("utf-8")


def _decode_slug(segment: str) -> str | _Invalid:
    """Percent-decode (UTF-8, strict) and NFC; a regex over %-runs is ~3x ``urllib``'s unquote."""
    try:
        slug = _PERCENT_RUN.sub(_unquote_run, segment) if "%" in segment else segment
    except UnicodeDecodeError:
        return _Invalid("badly percent-encoded")
    slug = unicodedata.normalize("NFC", _clean_identifier(slug))
    if not slug or _BAD_SLUG_RE.search(slug):
        return _Invalid("an unusable slug")
    return slug


def _pub_slug(segments: list[str]) -> str | _Invalid:
    """Legacy ``/pub/name/a/b/c`` -> ``name-cba`` (b, c zero-padded to 3): LinkedIn's redirect."""
    if len(segments) < 5 or segments[1].lower() == "dir":
        return _Invalid("a legacy /pub/ URL without its id segments (cannot be mapped to /in/)")
    a, b, c = (x.lower() for x in segments[2:5])
    if not all(_HEX_1_3.match(x) for x in (a, b, c)):
        return _Invalid("a legacy /pub/ URL with unexpected id segments")
    name = _decode_slug(segments[1])
    if isinstance(name, _Invalid):
        return name
    return f"{name.lower()}-{c.zfill(3)}{b.zfill(3)}{a}"


_SIMPLE_PROFILE_RE = re.compile(r"^(?:https?://)?(?:[a-z0-9-]+\.)?linkedin\.com/in/([^/?#]+)(?:[/?#]|$)", re.I)


@lru_cache(maxsize=CACHE_SIZE)
def _profile_url(raw: str) -> _Outcome:
    what = "not a LinkedIn profile URL"
    value = _url_input(raw, what)
    if not isinstance(value, str):
        return value
    simple = _SIMPLE_PROFILE_RE.match(value)  # the common shape, without the general parse
    segments = ["in", simple.group(1)] if simple else _linkedin_segments(value)
    if isinstance(segments, _Invalid):
        return _segments_invalid(what, segments)
    kind = segments[0].lower() if segments else ""
    if kind == "in" and len(segments) >= 2:
        slug = _decode_slug(segments[1])
        if isinstance(slug, _Invalid):
            return _Invalid(f"{what} ({slug.reason})")
        if not slug.startswith(MEMBER_ID_PREFIXES):
            slug = slug.lower()
    elif kind == "pub":
        slug = _pub_slug(segments)
        if isinstance(slug, _Invalid):
            return _Invalid(f"{what} ({slug.reason})")
    elif kind in _COMPANY_KINDS:
        return _Invalid(f"{what} (a {kind} page, not a person)")
    elif kind == "sales":
        return _Invalid(f"{what} (a Sales Navigator URL: it belongs in lead_sales_navigator_url)")
    elif kind == "profile":
        return _Invalid(f"{what} (a legacy profile/view URL without a public slug)")
    else:
        return _Invalid(what)
    out = f"https://www.linkedin.com/in/{slug}/"
    return out if len(out) <= s.MAX_STRING_LENGTH else _Invalid(f"{what} (too long)")


@lru_cache(maxsize=CACHE_SIZE)
def _sales_navigator_url(raw: str) -> _Outcome:
    what = "not a Sales Navigator lead URL"
    value = _url_input(raw, what)
    if not isinstance(value, str):
        return value
    segments = _linkedin_segments(value)
    if isinstance(segments, _Invalid):
        return _segments_invalid(what, segments)
    kinds = [x.lower() for x in segments[:2]]
    if kinds[:1] == ["in"]:
        return _Invalid(f"{what} (a public profile URL: it belongs in lead_linkedin_url)")
    if kinds not in (["sales", "lead"], ["sales", "people"]) or len(segments) < 3:
        return _Invalid(what)
    lead_id = unquote(segments[2], errors="replace").split(",", 1)[0].strip()
    if not _SALES_ID_RE.match(lead_id):
        return _Invalid(f"{what} (unexpected characters in the id)")
    if lead_id == lead_id.lower() and lead_id.startswith(("acwaa", "acoaa")):
        return _Invalid(f"{what} (the id was lower-cased; ids are case-sensitive and cannot be repaired)")
    return f"https://www.linkedin.com/sales/lead/{lead_id}"


@lru_cache(maxsize=CACHE_SIZE)
def _company_url(raw: str) -> _Outcome:
    what = "not a LinkedIn company URL"
    value = _url_input(raw, what)
    if not isinstance(value, str):
        return value
    segments = _linkedin_segments(value)
    if isinstance(segments, _Invalid):
        return _segments_invalid(what, segments)
    kind = segments[0].lower() if segments else ""
    if kind in ("in", "pub"):
        return _Invalid(f"{what} (a person's profile, not a company page)")
    if kind not in _COMPANY_KINDS or len(segments) < 2:
        return _Invalid(what)
    slug = _decode_slug(segments[1])
    if isinstance(slug, _Invalid):
        return _Invalid(f"{what} ({slug.reason})")
    out = f"https://www.linkedin.com/{kind}/{slug.lower()}/"
    return out if len(out) <= s.MAX_STRING_LENGTH else _Invalid(f"{what} (too long)")


# --- domains -------------------------------------------------------------------------


@lru_cache(maxsize=1)
def public_suffix_extractor() -> tldextract.TLDExtract:
    """tldextract on its bundled PSL snapshot only: no URL to fetch, no cache dir to write.

    ``suffix_list_urls=()`` is what makes it offline: with no URL there is nothing to
    download, and ``cache_dir=None`` keeps it from reading a stale or foreign cache.
    """
    return tldextract.TLDExtract(
        cache_dir=None,
        suffix_list_urls=(),
        fallback_to_snapshot=True,
        include_psl_private_domains=True,
    )


def _registrable(host: str) -> str | _Invalid:
    labels = host.split(".")
    if len(labels) < 2:
        return _Invalid("a single label, not a registrable domain")
    result = public_suffix_extractor().extract_str(host)
    if not result.suffix:  # the PSL's implicit "*" rule: the last label is the suffix
        return ".".join(labels[-2:])
    if not result.domain:
        return _Invalid(f"a public suffix {result.suffix!r}, not a registrable domain")
    return f"{result.domain}.{result.suffix}"


_IPV4_RE = re.compile(r"^[0-9]+(?:\.[0-9]+){3}$")


@lru_cache(maxsize=CACHE_SIZE)
def _domain(raw: str) -> _Outcome:
    what = "not a company domain"
    value = _clean_identifier(raw)
    if not value:
        return None
    if _is_placeholder(value):
        return _Invalid(f"{what} (placeholder)")
    if _HAS_SPACE.search(value) or "\\" in value:
        return _Invalid(f"{what} (contains spaces)")
    path = ""
    if value[:7].lower() == "mailto:" or ("@" in value and _SCHEME_RE.match(value) is None):
        email = _email(value)
        if email is None or isinstance(email, _Invalid):
            return _Invalid(f"{what} (an email without a usable domain)")
        host = email.rsplit("@", 1)[1]
    else:
        parts = _split_url(value, "http")
        if parts is None:
            return _Invalid(f"{what} (not a URL)")
        scheme, host, port, url_path, query = parts
        if scheme not in ("http", "https"):
            return _Invalid(f"{what} (scheme {scheme!r})")
        if host.startswith("["):
            return _Invalid(f"{what} (an IP address)")
        if port and not port.isdigit():
            return _Invalid(f"{what} (bad port)")
        path = url_path.strip("/") + query
        host = host.rstrip(".")
        ascii_host = _to_ascii_host(host)
        if isinstance(ascii_host, _Invalid):
            return _Invalid(f"{what} ({ascii_host.reason})")
        host = ascii_host
    if _IPV4_RE.match(host):
        return _Invalid(f"{what} (an IP address)")
    if not _ASCII_DOMAIN_RE.match(host) and "." in host:
        return _Invalid(f"{what} (invalid host name)")
    domain = _registrable(host)
    if isinstance(domain, _Invalid):
        return _Invalid(f"{what} ({domain.reason})")
    if path and domain in PLATFORM_DOMAINS:
        return _Invalid(f"{what} (a page on {domain}, not the company's own website)")
    return domain


# --- numbers, levels, ids ------------------------------------------------------------

_EMPLOYEES_WORD = re.compile(r"\s*employees?\s*$", re.I)
_RANGE_RE = re.compile(r"^[0-9][0-9,.\s']*\s*(?:-|–|—|to)\s*[0-9][0-9,.\s']*$|\+$", re.I)
_APPROX_RE = re.compile(r"^(?:~|≈|<|>|≤|≥|approx|about|circa|ca\.|over|under|more than|less than)", re.I)
_GROUPED = (
    re.compile(r"^[0-9]{1,3}(?:,[0-9]{3})+$"),
    re.compile(r"^[0-9]{1,3}(?:\.[0-9]{3})+$"),
    re.compile(r"^[0-9]{1,3}(?:[ \u00a0\u202f\u2009'’][0-9]{3})+$"),
)
_SHORT_RE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([km])$", re.I)
_WHOLE_RE = re.compile(r"^([0-9]+)(?:\.0+)?$")


@lru_cache(maxsize=CACHE_SIZE)
def _employee_count(raw: str) -> _Outcome:
    what = "not an employee count"
    value = _clean_identifier(raw)
    if not value:
        return None
    if _is_placeholder(value):
        return _Invalid(f"{what} (placeholder)")
    value = _EMPLOYEES_WORD.sub("", value)
    if _RANGE_RE.search(value):
        return _Invalid(f"{what} (a range: ranges belong in company_employee_range)")
    if _APPROX_RE.match(value):
        return _Invalid(f"{what} (an approximation)")
    for grouped in _GROUPED:
        if grouped.match(value):
            return str(int(re.sub(r"[^0-9]", "", value)))
    short = _SHORT_RE.match(value)
    if short:
        try:
            number = Decimal(short.group(1)) * (1000 if short.group(2).lower() == "k" else 1_000_000)
        except InvalidOperation:  # pragma: no cover - the regex admits only decimals
            return _Invalid(what)
        if number != number.to_integral_value():
            return _Invalid(f"{what} (not a whole number)")
        return str(int(number))
    whole = _WHOLE_RE.match(value)
    if whole:
        return str(int(whole.group(1)))
    if value.startswith("-"):
        return _Invalid(f"{what} (negative)")
    return _Invalid(f"{what} (not a whole number)")


_LEVEL_RE = re.compile(r"^(?:distance_)?([123])(?:st|nd|rd)?(\+)?(?:\s*(?:degree|°))?$", re.I)
_LEVEL_WORDS = {"first": "1", "second": "2", "third": "3"}


@lru_cache(maxsize=CACHE_SIZE)
def _connection_level(raw: str) -> _Outcome:
    what = "not a LinkedIn connection level (1, 2 or 3)"
    value = _clean_identifier(raw)
    if not value:
        return None
    if _is_placeholder(value):
        return _Invalid(f"{what} (placeholder)")
    match = _LEVEL_RE.match(value)
    if match:
        if match.group(2) and match.group(1) != "3":
            return _Invalid(what)
        return match.group(1)
    word = _LEVEL_WORDS.get(value.lower().removesuffix(" degree"))
    return word if word else _Invalid(what)


_HEX_ID_RE = re.compile(s.HEX_ID_PATTERN)


@lru_cache(maxsize=CACHE_SIZE)
def _hex_id(raw: str) -> _Outcome:
    what = "not a 24-character hex id"
    value = _clean_identifier(raw)
    if not value:
        return None
    if _is_placeholder(value):
        return _Invalid(f"{what} (placeholder)")
    value = value.lower()
    return value if _HEX_ID_RE.match(value) else _Invalid(what)


@lru_cache(maxsize=CACHE_SIZE)
def _linkedin_id(raw: str) -> _Outcome:
    what = "not a LinkedIn member id"
    value = _clean_identifier(raw)
    if not value:
        return None
    if _is_placeholder(value):
        return _Invalid(f"{what} (placeholder)")
    if _HAS_SPACE.search(value) or "/" in value:
        return _Invalid(f"{what} (contains spaces or '/': a URL is not an id)")
    return value if len(value) <= s.MAX_STRING_LENGTH else _Invalid(f"{what} (too long)")


# --- text and tags -------------------------------------------------------------------


def _clean_text(raw: str, multiline: bool) -> _Outcome:
    value = raw.translate(_TEXT_DROP) if _TEXT_SPECIAL.search(raw) else raw
    value = unicodedata.normalize("NFC", value)
    value = _NEWLINES.sub("\n", value) if multiline else _SPACE_RUN.sub(" ", value)
    value = value.strip()
    if not value:
        return None
    if len(value) > s.MAX_STRING_LENGTH:
        return _Invalid(f"longer than {s.MAX_STRING_LENGTH:,} characters (never truncated)")
    return value


@lru_cache(maxsize=CACHE_SIZE)
def _text(raw: str) -> _Outcome:
    return _clean_text(raw, multiline=False)


@lru_cache(maxsize=CACHE_SIZE)
def _multiline_text(raw: str) -> _Outcome:
    return _clean_text(raw, multiline=True)


_TAG_SPLIT = re.compile(r"[;,|]")


def _tag_list(items: Iterable[Any]) -> _Outcome:
    tags: list[str] = []
    for item in items:
        if item is None or (isinstance(item, float) and math.isnan(item)):
            continue
        if not isinstance(item, str):
            return _Invalid(f"not a list of tags (an item is {type(item).__name__})")
        tag = _text(item)
        if isinstance(tag, _Invalid):
            return _Invalid(f"not a list of tags (a tag is {tag.reason})")
        if tag is not None and tag not in tags:
            tags.append(tag)
    return tags or None


@lru_cache(maxsize=CACHE_SIZE)
def _tags_from_string(raw: str) -> _Outcome:
    value = raw.strip()
    if value.startswith("[") and value.endswith("]"):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return _tag_list(parsed)
    return _tag_list(_TAG_SPLIT.split(value))


# --- public API ----------------------------------------------------------------------


def _not_provided(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _as_text(value: Any, column: str, what: str) -> str:
    """The string to normalize: str as is, int as digits; anything else is invalid."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise IdentifierError(column, value, f"{what} (a {type(value).__name__}, not text)")


def _run(core: Callable[[str], _Outcome], column: str, what: str, value: Any) -> Any:
    if _not_provided(value):
        return None
    out = core(_as_text(value, column, what))
    if isinstance(out, _Invalid):
        raise IdentifierError(column, value, out.reason)
    return out


def normalize_email(value: Any, column: str = "lead_email") -> str | None:
    """``'Jane.Doe@Bücher.example '`` -> ``'jane.doe@xn--bcher-kva.example'``."""
    return _run(_email, column, "not an email address", value)


def normalize_linkedin_profile_url(value: Any, column: str = "lead_linkedin_url") -> str | None:
    """Any spelling of a profile URL -> ``https://www.linkedin.com/in/<slug>/``."""
    return _run(_profile_url, column, "not a LinkedIn profile URL", value)


def normalize_sales_navigator_url(value: Any, column: str = "lead_sales_navigator_url") -> str | None:
    """``.../sales/lead/<id>,NAME_SEARCH,x`` -> ``https://www.linkedin.com/sales/lead/<id>``."""
    return _run(_sales_navigator_url, column, "not a Sales Navigator lead URL", value)


def normalize_linkedin_company_url(value: Any, column: str = "company_linkedin_url") -> str | None:
    """Any spelling of a company page -> ``https://www.linkedin.com/company/<slug>/``."""
    return _run(_company_url, column, "not a LinkedIn company URL", value)


def normalize_domain(value: Any, column: str = "company_domain") -> str | None:
    """A website URL, a host or an email -> its registrable domain (PSL, private section too)."""
    return _run(_domain, column, "not a company domain", value)


def normalize_employee_count(value: Any, column: str = "company_employee_count") -> str | None:
    """``1,240`` / ``1.2k`` / ``1240.0`` / ``1240`` -> ``'1240'``-style digit strings; ranges are invalid."""
    what = "not an employee count"
    if isinstance(value, float) and not math.isnan(value):
        if value < 0 or value != int(value):
            raise IdentifierError(column, value, f"{what} (not a whole, non-negative number)")
        return str(int(value))
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        raise IdentifierError(column, value, f"{what} (negative)")
    return _run(_employee_count, column, what, value)


def normalize_connection_level(value: Any, column: str = "linkedin_connection_level") -> str | None:
    """``1`` / ``'1st'`` / ``'2nd'`` / ``'3rd+'`` / ``'DISTANCE_2'`` -> ``'1'``, ``'2'`` or ``'3'``."""
    if isinstance(value, float) and not math.isnan(value) and value == int(value):
        value = int(value)
    return _run(_connection_level, column, "not a LinkedIn connection level (1, 2 or 3)", value)


def normalize_hex_id(value: Any, column: str = "unified_lead_id") -> str | None:
    """``unified_*_id`` and ``workspace_id``: 24 hex characters, lower-cased."""
    return _run(_hex_id, column, "not a 24-character hex id", value)


def normalize_linkedin_id(value: Any, column: str = "lead_linkedin_id") -> str | None:
    """A LinkedIn member id: trimmed, case kept."""
    return _run(_linkedin_id, column, "not a LinkedIn member id", value)


def normalize_text(value: Any, column: str = "text", multiline: bool = False) -> str | None:
    """Free text: trimmed, invisible junk removed, NFC, whitespace runs collapsed (unless multiline)."""
    return _run(_multiline_text if multiline else _text, column, "not text", value)


def normalize_tags(value: str | list[Any] | tuple[Any, ...] | None, column: str = "tags") -> list[str] | None:
    """A list, a JSON array string or a ``;``/``,``/``|``-delimited string -> distinct trimmed tags."""
    if _not_provided(value):
        return None
    if isinstance(value, str):
        out = _tags_from_string(value)
    elif isinstance(value, (list, tuple)):
        out = _tag_list(value)
    else:
        raise IdentifierError(column, value, f"not a list of tags (a {type(value).__name__})")
    if isinstance(out, _Invalid):
        raise IdentifierError(column, value, out.reason)
    return list(out) if out is not None else None  # a copy: the cached list must not be mutated


@dataclass(frozen=True)
class _Kind:
    """How one canonical column is normalized: the cached core and an optional Arrow prefilter."""

    core: Callable[[str], _Outcome]
    fast: Callable[[pa.Array], tuple[pa.Array, pa.Array]] | None = None
    """Vectorized prefilter: (mask of rows it settled, their values in row order)."""


# --- vectorized prefilters (each must give exactly what the Python core gives) --------
#
# A prefilter returns ``(mask, values)``: ``mask`` marks the rows it settled (valid and
# already normalized by Arrow), ``values`` is full length and meaningful where ``mask`` is
# (merging with ``if_else`` costs a tenth of ``replace_with_mask``).
# Validation uses one full, anchored regex per kind (RE2 runs those as a DFA: fast);
# extraction avoids capture groups, which RE2 runs an order of magnitude slower, and
# uses splits instead. The tests run every case through both paths and compare.

_Fast = Callable[[pa.Array], tuple[pa.Array, pa.Array]]
_LINKEDIN_HOST_FAST = r"^(?i:(?:https?://)?(?:[a-z0-9-]+\.)?linkedin\.com)/(?:(?:mwlite|comm)/)*"
_PROFILE_FAST = _LINKEDIN_HOST_FAST + r"in/[A-Za-z0-9_-]+(?:[/?#][\x21-\x7e]*)?$"
_SALES_FAST = _LINKEDIN_HOST_FAST + r"sales/(?:lead|people)/[A-Z][A-Za-z0-9_-]*(?:[,/?#][\x21-\x7e]*)?$"
_COMPANY_FAST = _LINKEDIN_HOST_FAST + r"(?:company|school|showcase)/[a-z0-9_-]+(?:[/?#][\x21-\x7e]*)?$"
_HOST_FAST = (
    r"^(?:https?://)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.){1,3}[a-z][a-z0-9-]{0,61}[a-z0-9]"
    # no spaces, no backslash, no "@" (Python reads a value with "@" as an email): as in Python
    r"\.?(?::[0-9]{1,5})?(?:[/?#][\x21-\x3f\x41-\x5b\x5d-\x7e]*)?$"
)
_TEXT_FAST = r"^[\x21-\x7e]+(?: [\x21-\x7e]+)*$"
_URL_MAX_FAST = 9000  # longer inputs go the Python way, which enforces the 10,000 limit on the output


def _str(value: str) -> pa.Scalar:
    """A string literal for a compute call (see arrow_literals: no pandas import)."""
    return literal(value, pa.string())


def _expand(mask: pa.Array, values: pa.Array) -> pa.Array:
    """``values`` (one per true ``mask`` entry) spread to ``mask``'s length, null elsewhere."""
    settled = as_numpy(mask)
    index = np.cumsum(settled) - 1
    return pc.take(values, numeric_array(index, mask=~settled))


def _before(arr: pa.Array, pattern: str) -> pa.Array:
    """Each string up to the first match of the character class ``pattern``.

    Most values have no tail at all, or just a trailing ``/``: those cost one DFA scan;
    only the rest is split (a regex split costs several times a match).
    """
    arr = pc.utf8_rtrim(arr, characters="/")
    has = pc.fill_null(pc.match_substring_regex(arr, pattern), FALSE)
    if not pc.any(has).as_py():
        return arr
    return pc.if_else(has, _expand(has, _nth(arr.filter(has), pattern, 0, regex=True)), arr)


def _nth(arr: pa.Array, pattern: str, index: int, regex: bool = False) -> pa.Array:
    """Element ``index`` of splitting every string once at the first ``pattern``."""
    split = pc.split_pattern_regex if regex else pc.split_pattern
    return pc.list_element(split(arr, pattern, max_splits=1), literal(index, pa.int32()))


def _settled(arr: pa.Array, pattern: str, max_len: int, lower: bool = False) -> tuple[pa.Array, pa.Array]:
    """Trimmed (and lower-cased) values, and the mask of those matching ``pattern``."""
    trimmed = pc.ascii_trim_whitespace(arr)
    if lower:
        trimmed = pc.ascii_lower(trimmed)
    mask = pc.and_(
        pc.match_substring_regex(trimmed, pattern), pc.less_equal(pc.utf8_length(trimmed), literal(max_len, pa.int32()))
    )
    return pc.fill_null(mask, FALSE), trimmed


def _fast_profile(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    mask, trimmed = _settled(arr, _PROFILE_FAST, _URL_MAX_FAST)
    slug = _before(_nth(pc.if_else(mask, trimmed, literal("/in/x", trimmed.type)), "/in/", 1), "[/?#]")
    member_id = pc.or_(pc.starts_with(slug, MEMBER_ID_PREFIXES[0]), pc.starts_with(slug, MEMBER_ID_PREFIXES[1]))
    slug = pc.if_else(member_id, slug, pc.ascii_lower(slug))
    return mask, pc.binary_join_element_wise(_str("https://www.linkedin.com/in/"), slug, _str("/"), _str(""))


def _fast_sales(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    mask, trimmed = _settled(arr, _SALES_FAST, _URL_MAX_FAST)
    filled = pc.if_else(mask, trimmed, literal("/sales/lead/X", trimmed.type))
    tail = _nth(filled, "/sales/(?:lead|people)/", 1, regex=True)
    lead_id = _before(tail, "[,/?#]")
    return mask, pc.binary_join_element_wise(_str("https://www.linkedin.com/sales/lead/"), lead_id, _str(""))


def _fast_company(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    mask, trimmed = _settled(arr, _COMPANY_FAST, _URL_MAX_FAST)
    filled = pc.if_else(mask, trimmed, literal("linkedin.com/company/x", trimmed.type))
    path = _nth(filled, r"(?i)linkedin\.com/", 1, regex=True)
    for prefix in ("mwlite/", "comm/"):  # at most a few repeats in practice; loop until none
        while pc.any(pc.starts_with(path, prefix)).as_py():
            path = pc.if_else(pc.starts_with(path, prefix), pc.utf8_slice_codeunits(path, len(prefix)), path)
    kind = _nth(path, "/", 0)
    slug = _before(_nth(path, "/", 1), "[/?#]")
    return mask, pc.binary_join_element_wise(
        _str("https://www.linkedin.com/"), kind, _str("/"), slug, _str("/"), _str("")
    )


_ATOM_NO_QUERY = _ATOM.replace("?", "")
_MAILTO_FAST = rf"^mailto:{_ATOM_NO_QUERY}(?:\.{_ATOM_NO_QUERY})*@{_ASCII_DOMAIN}(?:\?[\x21-\x7e]*)?$"
_ANGLE_FAST = rf"^[^<>?]*<{EMAIL_FAST_PATTERN[1:-1]}>$"  # "Jane Doe <jane@example.com>"


def _fast_email(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Plain addresses, ``mailto:`` links and ``Name <address>`` forms, lower-cased.

    The wrapped forms are looked for only among the rows that are not plain addresses
    (a small share), so their regexes do not cost a pass over the whole column.
    """
    lowered = pc.ascii_lower(pc.ascii_trim_whitespace(arr))
    plain = pc.fill_null(pc.match_substring_regex(lowered, EMAIL_FAST_PATTERN), FALSE)
    address, settled = lowered, plain
    others = pc.invert(plain)
    rest = lowered.filter(others)
    rest_address, rest_settled = rest, pa.nulls(len(rest), pa.bool_()).fill_null(FALSE)
    for pattern, extract in (
        (_MAILTO_FAST, lambda x: _nth(pc.utf8_slice_codeunits(x, 7), "?", 0)),
        (_ANGLE_FAST, lambda x: _nth(_nth(x, "<", 1), ">", 0)),
    ):
        wrapped = pc.fill_null(pc.match_substring_regex(rest, pattern), FALSE)
        if pc.any(wrapped).as_py():
            rest_address = pc.replace_with_mask(rest_address, wrapped, extract(rest.filter(wrapped)))
            rest_settled = pc.or_(rest_settled, wrapped)
    if pc.any(rest_settled).as_py():
        wrapped_rows = pc.fill_null(_expand(others, rest_settled), FALSE)
        address = pc.if_else(wrapped_rows, _expand(others, rest_address), lowered)
        settled = pc.or_(plain, wrapped_rows)
    mask = pc.and_(
        pc.and_(settled, pc.fill_null(pc.less_equal(pc.utf8_length(address), literal(254, pa.int32())), FALSE)),
        pc.and_(
            pc.fill_null(pc.less_equal(pc.find_substring(address, "@"), literal(64, pa.int32())), FALSE),
            pc.invert(pc.fill_null(pc.starts_with(address, APOLLO_LOCKED_LOCAL + "@"), TRUE)),
        ),
    )
    return mask, address


@dataclass(frozen=True)
class _SuffixSets:
    """The PSL as Arrow value sets for the vectorized walk (see :func:`_fast_domain`)."""

    rules: pa.Array  # plain ASCII rules
    go_on_1: pa.Array  # 1-label wildcard bases: the walk would go one label further
    go_on_2: pa.Array  # 2-label wildcard bases and inner nodes of longer rules
    stop_3: pa.Array  # 3-label rules, wildcard bases and inner nodes: leave to Python
    platforms: pa.Array


@lru_cache(maxsize=1)
def _suffix_sets() -> _SuffixSets:
    rules = set(public_suffix_extractor().tlds)
    plain = {r for r in rules if r[0] not in "*!"}
    wild = {r[2:] for r in rules if r.startswith("*.")}
    inner: set[str] = set()
    for rule in plain | wild:
        labels = rule.split(".")
        inner.update(".".join(labels[-k:]) for k in range(1, len(labels)))
    inner -= plain

    def arr(values: Iterable[str]) -> pa.Array:
        return string_array(sorted(v for v in values if v.isascii()))

    return _SuffixSets(
        rules=arr(plain),
        go_on_1=arr(w for w in wild if "." not in w),
        go_on_2=arr(x for x in wild | inner if x.count(".") == 1),
        stop_3=arr(x for x in plain | wild | inner if x.count(".") == 2),
        platforms=arr(PLATFORM_DOMAINS),
    )


def _fast_domain(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The PSL's longest-match walk, vectorized for plain ASCII hosts.

    Walking labels from the right as tldextract does: with ``l1``, ``l2``, ``l3`` the last
    one, two, three labels, the registrable domain is ``l2`` unless ``l2`` is a rule, then
    ``l3``. Whenever the walk could go further (a wildcard, an inner node of a longer
    rule, a 3-label rule), or the host is punycode, a suffix itself or a platform, the
    row is left to the Python path. Labels come from one split and index arithmetic on
    its offsets, which costs a fraction of per-row regex captures.
    """
    sets = _suffix_sets()
    host_mask, lowered = _settled(arr, _HOST_FAST, _URL_MAX_FAST, lower=True)
    urls = lowered.filter(host_mask)
    for scheme in ("https://", "http://"):  # validated: a scheme can only be at the start
        urls = pc.replace_substring(urls, scheme, "", max_replacements=1)
    hosts = pc.utf8_rtrim(_before(urls, "[:/?#]"), characters=".")
    parts = pc.split_pattern(hosts, ".")
    offsets = as_numpy(parts.offsets)
    labels = parts.values
    ends = offsets[1:]
    count = ends - offsets[:-1]  # >= 2 by the host regex
    l1 = pc.take(labels, numeric_array(ends - 1))
    l2 = pc.binary_join_element_wise(pc.take(labels, numeric_array(ends - 2)), l1, _str("."))
    unsure = pc.or_(
        pc.or_(pc.is_in(l1, value_set=sets.go_on_1), pc.is_in(l2, value_set=sets.go_on_2)),
        pc.match_substring(hosts, "xn--"),
    )
    deeper = as_numpy(pc.is_in(l2, value_set=sets.rules))
    registrable = l2
    if deeper.any():
        unsure = pc.or_(unsure, numeric_array(deeper & (count < 3)))  # the host is a public suffix
        rows = np.flatnonzero(deeper & (count >= 3))
        l3 = pc.binary_join_element_wise(
            pc.take(labels, numeric_array(ends[rows] - 3)), pc.take(l2, numeric_array(rows)), _str(".")
        )
        at_rows = np.zeros(len(hosts), dtype=bool)
        at_rows[rows] = True
        registrable = pc.replace_with_mask(l2, numeric_array(at_rows), l3)
        stop = np.zeros(len(hosts), dtype=bool)
        stop[rows] = as_numpy(pc.is_in(l3, value_set=sets.stop_3))
        unsure = pc.or_(unsure, numeric_array(stop))
    ok = pc.invert(pc.or_(unsure, pc.is_in(registrable, value_set=sets.platforms)))
    return pc.fill_null(_expand(host_mask, ok), FALSE), _expand(host_mask, registrable)


def _fast_match(pattern: str, lower: bool, max_len: int) -> _Fast:
    def fast(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
        mask, trimmed = _settled(arr, pattern, max_len, lower=lower)
        return mask, trimmed

    return fast


def _fast_text(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    mask = pc.and_(
        pc.match_substring_regex(arr, _TEXT_FAST),
        pc.less_equal(pc.utf8_length(arr), literal(s.MAX_STRING_LENGTH, pa.int32())),
    )
    mask = pc.fill_null(mask, FALSE)
    return mask, arr


_PROFILE = _Kind(_profile_url, _fast_profile)
_HEX = _Kind(_hex_id, _fast_match(r"^[0-9a-f]{24}$", lower=True, max_len=24))
_TEXT = _Kind(_text, _fast_text)

_KINDS: dict[str, _Kind] = {
    "workspace_id": _HEX,
    "unified_lead_id": _HEX,
    "unified_company_id": _HEX,
    "lead_email": _Kind(_email, _fast_email),
    "lead_linkedin_url": _PROFILE,
    "sender": _PROFILE,
    "lead_sales_navigator_url": _Kind(_sales_navigator_url, _fast_sales),
    "lead_linkedin_id": _Kind(_linkedin_id),
    "company_linkedin_url": _Kind(_company_url, _fast_company),
    "company_domain": _Kind(_domain, _fast_domain),
    "company_employee_count": _Kind(_employee_count, _fast_match(r"^(?:0|[1-9][0-9]{0,17})$", False, 18)),
    "linkedin_connection_level": _Kind(_connection_level),
    "tags": _Kind(_tags_from_string),
    "company_description": _Kind(_multiline_text, _fast_text),
}
for _field in s.CANONICAL_FIELDS:
    _KINDS.setdefault(_field, _TEXT)


def _normalizer_for(field: str) -> Callable[[Any], Any]:
    special: dict[str, Callable[..., Any]] = {
        "lead_email": normalize_email,
        "lead_linkedin_url": normalize_linkedin_profile_url,
        "sender": normalize_linkedin_profile_url,
        "lead_sales_navigator_url": normalize_sales_navigator_url,
        "company_linkedin_url": normalize_linkedin_company_url,
        "company_domain": normalize_domain,
        "company_employee_count": normalize_employee_count,
        "linkedin_connection_level": normalize_connection_level,
        "workspace_id": normalize_hex_id,
        "unified_lead_id": normalize_hex_id,
        "unified_company_id": normalize_hex_id,
        "lead_linkedin_id": normalize_linkedin_id,
        "tags": normalize_tags,
    }
    if field in special:
        return partial(special[field], column=field)
    return partial(normalize_text, column=field, multiline=field in MULTILINE_TEXT_FIELDS)


NORMALIZERS: dict[str, Callable[[Any], Any]] = {f: _normalizer_for(f) for f in s.CANONICAL_FIELDS}
"""Every canonical field -> its normalizer (returns None for "not provided", raises IdentifierError)."""


# --- the columnar hot path -----------------------------------------------------------


def _as_string_array(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        return arr.cast(pa.string())
    if not pa.types.is_string(arr.type):
        return arr.cast(pa.string())
    return arr


_Bad = list[tuple[int, str, str]]  # (position, value, reason)


def _slow_path(kind: _Kind, arr: pa.Array, pending: pa.Array, out_type: pa.DataType) -> tuple[pa.Array, _Bad]:
    """Run the Python core once per distinct pending value; map the answers back to positions."""
    uniques = pc.unique(arr.filter(pending))
    outs: list[Any] = []
    reasons: dict[int, str] = {}
    for i, raw in enumerate(uniques.to_pylist()):
        out = kind.core(raw)
        if isinstance(out, _Invalid):
            reasons[i] = out.reason
            out = None
        outs.append(out)
    positions = pc.index_in(arr, value_set=uniques)
    bad: _Bad = []
    if reasons:
        is_bad = pc.is_in(positions, value_set=numeric_array(np.fromiter(reasons, np.int32, len(reasons))))
        at = pc.indices_nonzero(pc.fill_null(is_bad, FALSE))
        rows = at.to_pylist()
        codes = pc.take(positions, at).to_pylist()
        values = pc.take(arr, at).to_pylist()
        bad = [(row, value, reasons[code]) for row, code, value in zip(rows, codes, values, strict=True)]
    answers = string_array(outs) if out_type == pa.string() else string_list_array(outs)
    return pc.take(answers, positions), bad


def _normalize_strings(kind: _Kind, arr: pa.Array, fast: bool, out_type: pa.DataType) -> tuple[pa.Array, _Bad]:
    """Prefilter in Arrow, then the Python core for what is left."""
    valid = pc.is_valid(arr)
    if fast and kind.fast is not None:
        mask, fast_values = kind.fast(arr)
        pending = pc.and_(valid, pc.invert(mask))
        if not pc.any(pending).as_py():
            return pc.if_else(mask, fast_values, literal(None, out_type)), []
        slow_values, bad = _slow_path(kind, arr, pending, out_type)
        return pc.if_else(mask, fast_values, slow_values), bad
    if not pc.any(valid).as_py():
        return pa.nulls(len(arr), out_type), []
    return _slow_path(kind, arr, valid, out_type)


REPETITIVE_SAMPLE = 20_000
REPETITIVE_RATIO = 0.3
"""A column whose first rows hold fewer distinct values than this share is normalized per
distinct value (company websites in a lead export repeat per employee); emails and
profile URLs are mostly distinct, and dictionary-encoding them would only cost time."""
REPETITIVE_RATIO_BY_FIELD = {"company_domain": 0.7}
"""The domain prefilter costs ~3x a dictionary encoding per row, so it pays off sooner."""


def _normalize_tags_list(column: pa.ChunkedArray | pa.Array, errors: list[RowIssue]) -> pa.Array:
    values = column.to_pylist()
    outs: list[list[str] | None] = []
    for row, item in enumerate(values):
        out = _tag_list(item) if item is not None else None
        if isinstance(out, _Invalid):
            errors.append(RowIssue(row, "tags", json.dumps(item, ensure_ascii=False), out.reason))
            out = None
        outs.append(out)
    return string_list_array(outs)


def _normalize_column(
    name: str, column: pa.ChunkedArray | pa.Array, fast: bool, errors: list[RowIssue]
) -> pa.Array:
    kind = _KINDS[name]
    out_type = pa.list_(pa.string()) if name == "tags" else pa.string()
    if column.null_count == len(column):  # exports rarely fill half the fields: cost nothing
        return pa.nulls(len(column), out_type)
    if name == "tags" and (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return _normalize_tags_list(column, errors)
    arr = _as_string_array(column)
    sample = arr.slice(0, REPETITIVE_SAMPLE)
    ratio = REPETITIVE_RATIO_BY_FIELD.get(name, REPETITIVE_RATIO)
    if len(arr) > REPETITIVE_SAMPLE and len(pc.unique(sample)) < ratio * len(sample):
        encoded = pc.dictionary_encode(arr)
        normalized, bad_codes = _normalize_strings(kind, encoded.dictionary, fast, out_type)
        out = pc.take(normalized, encoded.indices)
        if bad_codes:
            reasons = {code: (value, reason) for code, value, reason in bad_codes}
            bad_set = np.fromiter(reasons, np.int32, len(reasons))
            is_bad = pc.is_in(encoded.indices, value_set=numeric_array(bad_set).cast(encoded.indices.type))
            at = pc.indices_nonzero(pc.fill_null(is_bad, FALSE))
            rows = at.to_pylist()
            codes = pc.take(encoded.indices, at).to_pylist()
            errors.extend(RowIssue(r, name, *reasons[c]) for r, c in zip(rows, codes, strict=True))
        return out
    out, bad = _normalize_strings(kind, arr, fast, out_type)
    errors.extend(RowIssue(row, name, value, reason) for row, value, reason in bad)
    return out


def normalize_table(table: pa.Table | pa.RecordBatch, *, fast: bool = True) -> NormalizeResult:
    """Normalize every canonical column of ``table``; other columns pass through untouched.

    Invalid cells become null and are reported as :class:`RowIssue` (row = 0-based
    position in ``table``), ordered by row, then column. String columns stay strings
    (non-string canonical columns are cast to string by Arrow first); ``tags`` becomes
    ``list<string>``. ``fast=False`` skips the vectorized prefilters (for tests).
    """
    errors: list[RowIssue] = []
    columns: list[pa.Array | pa.ChunkedArray] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        if name in _KINDS:
            columns.append(_normalize_column(name, column, fast, errors))
        else:
            columns.append(column)
    order = {n: i for i, n in enumerate(table.column_names)}
    errors.sort(key=lambda e: (e.row, order[e.column]))
    if isinstance(table, pa.RecordBatch):
        return NormalizeResult(pa.RecordBatch.from_arrays(columns, names=table.column_names), errors)
    return NormalizeResult(pa.Table.from_arrays(columns, names=table.column_names), errors)

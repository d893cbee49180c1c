"""The ``update_attributes`` event as code: one pydantic v2 model, its rules and the error shape.

This module is the single reference for the wire format of ``shared/API-CONTRACT.md``.
The connector validates rows with it before spending a request, and the sandbox answers
with it, so the client's verdict and the server's verdict cannot drift apart.

Why these choices:

* every string field is strict (a number is *not* coerced, ``string_type``) and 1 to
  10,000 characters long, and unknown keys are forbidden (``extra_forbidden``): a mapping
  mistake surfaces as an error instead of vanishing;
* ``null`` means "not provided", so every field is optional and defaults to ``None``;
* formats are *checked*, never rewritten: normalizing identifiers is the client's job
  (``identifiers.py``), and a server that silently rewrote them would hide client bugs;
* each cross-field rule is one named ``model_validator``; pydantic runs them only when
  every field validated, which is the contract's "field errors before cross-field rules";
* messages are raised with :class:`PydanticCustomError` so they render as
  ``Value error: ...`` (a plain ``ValueError`` would render ``Value error, ...``), and
  error entries never echo the submitted value (it may be personal data).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal, NamedTuple, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from . import settings as s

Str = Annotated[
    str, StringConstraints(strict=True, min_length=s.MIN_STRING_LENGTH, max_length=s.MAX_STRING_LENGTH)
]


class ErrorEntry(TypedDict):
    """One error of one item: pydantic's ``msg`` and ``type``, plus the field path ``loc``."""

    msg: str
    type: str
    loc: list[str | int]


class ItemErrors(TypedDict):
    index: int
    error: list[ErrorEntry]


class ErrorsBlock(TypedDict):
    count: int
    details: list[ItemErrors]


class BatchResult(TypedDict):
    errors: ErrorsBlock
    success: int
    total: int


_FORMATS: dict[str, tuple[re.Pattern[str], str]] = {
    "workspace_id": (re.compile(s.HEX_ID_PATTERN), "24-character hex id"),
    "unified_lead_id": (re.compile(s.HEX_ID_PATTERN), "24-character hex id"),
    "unified_company_id": (re.compile(s.HEX_ID_PATTERN), "24-character hex id"),
    "lead_email": (re.compile(s.EMAIL_PATTERN), "email address"),
    "lead_linkedin_url": (re.compile(s.LINKEDIN_PROFILE_PATTERN, re.I), "LinkedIn profile URL"),
    "sender": (re.compile(s.LINKEDIN_PROFILE_PATTERN, re.I), "LinkedIn profile URL"),
    "lead_sales_navigator_url": (re.compile(s.SALES_NAVIGATOR_PATTERN, re.I), "Sales Navigator URL"),
    "company_linkedin_url": (re.compile(s.LINKEDIN_COMPANY_PATTERN, re.I), "LinkedIn company URL"),
    "company_domain": (re.compile(s.DOMAIN_PATTERN), "domain"),
    "company_employee_count": (re.compile(s.DIGITS_PATTERN), "employee count (digits only)"),
}
FORMAT_FIELDS: tuple[str, ...] = tuple(_FORMATS)


def format_error(field: str, value: str) -> str | None:
    """The contract's format message for ``value`` in ``field``, or None when it is well-formed."""
    rule = _FORMATS.get(field)
    if rule is None or rule[0].match(value):
        return None
    return f"Value error: {field} is not a valid {rule[1]}"


def _value_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("value_error", message)


class UpdateAttributesEvent(BaseModel):
    """One ``update_attributes`` event, every field of the contract, every rule."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    event: Literal["update_attributes"]
    platform: Str | None = None

    workspace_id: Str | None = None
    import_name: Str | None = None
    list_source: Str | None = None
    exclusion_reason: Str | None = None
    icp: Str | None = None
    tags: list[Str] | None = None
    lead_status: Str | None = None

    unified_lead_id: Str | None = None
    lead_email: Str | None = None
    lead_linkedin_url: Str | None = None
    lead_sales_navigator_url: Str | None = None
    lead_linkedin_id: Str | None = None

    lead_first_name: Str | None = None
    lead_last_name: Str | None = None
    lead_full_name: Str | None = None
    lead_country: Str | None = None
    lead_job_title: Str | None = None
    lead_seniority: Str | None = None
    lead_function: Str | None = None
    lead_linkedin_headline: Str | None = None
    lead_reporting_location: Str | None = None

    unified_company_id: Str | None = None
    company_domain: Str | None = None
    company_linkedin_url: Str | None = None

    company_name: Str | None = None
    company_country: Str | None = None
    company_employee_range: Str | None = None
    company_industry: Str | None = None
    company_description: Str | None = None
    company_employee_count: Str | None = None
    company_normalized_name: Str | None = None
    company_normalized_industry: Str | None = None

    sender: Str | None = None
    linkedin_connection_level: Str | None = None

    @field_validator(*FORMAT_FIELDS)
    @classmethod
    def _check_format(cls, value: str | None, info: Any) -> str | None:
        """Rule 7: formats, checked as written (the field name comes from pydantic)."""
        if value is not None:
            message = format_error(info.field_name, value)
            if message:
                raise _value_error(message)
        return value

    @model_validator(mode="after")
    def workspace_rule(self) -> UpdateAttributesEvent:
        """Rule 4: workspace attributes are stored per workspace, so they need its id."""
        if self.workspace_id is None and any(getattr(self, f) is not None for f in s.WORKSPACE_ATTRIBUTES):
            raise _value_error(s.WORKSPACE_RULE_MESSAGE)
        return self

    @model_validator(mode="after")
    def connection_rule(self) -> UpdateAttributesEvent:
        """Rule 5: a connection level is a (sender, lead) pair with a level of 1, 2 or 3."""
        sender, level = self.sender, self.linkedin_connection_level
        if sender is None and level is None:
            return self
        if sender is None or level is None:
            raise _value_error("Value error: sender and linkedin_connection_level are required together")
        if level not in s.CONNECTION_LEVELS:
            raise _value_error("Value error: linkedin_connection_level must be one of '1', '2', '3'")
        if not self.has_lead_identifier():
            raise _value_error("Value error: linkedin_connection_level needs at least one lead identifier")
        return self

    @model_validator(mode="after")
    def identifier_rule(self) -> UpdateAttributesEvent:
        """Rule 6 (ours): every event must be matchable, and attributes need their entity's id."""
        has_lead, has_company = self.has_lead_identifier(), self.has_company_identifier()
        if not has_lead and not has_company:
            raise _value_error("Value error: at least one lead identifier or company identifier is required")
        if not has_lead and any(getattr(self, f) is not None for f in s.LEAD_ATTRIBUTES):
            raise _value_error("Value error: lead attributes need a lead identifier")
        if not has_company and any(getattr(self, f) is not None for f in s.COMPANY_ATTRIBUTES):
            raise _value_error("Value error: company attributes need a company identifier")
        return self

    def has_lead_identifier(self) -> bool:
        return any(getattr(self, f) is not None for f in s.LEAD_IDENTIFIERS)

    def has_company_identifier(self) -> bool:
        return any(getattr(self, f) is not None for f in s.COMPANY_IDENTIFIERS)

    def provided(self) -> dict[str, Any]:
        """The fields that were provided (``None`` means "not provided" and is left out)."""
        return self.model_dump(exclude_none=True)


def _entries(exc: ValidationError) -> list[ErrorEntry]:
    """Copy only ``msg``, ``type`` and ``loc``: never the submitted value, never a URL."""
    return [
        {"msg": e["msg"], "type": e["type"], "loc": list(e["loc"])}
        for e in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def validate_item(item: Any) -> tuple[UpdateAttributesEvent | None, list[ErrorEntry]]:
    """Validate one array element: the event, or ``None`` and its errors (never raises)."""
    if not isinstance(item, dict):
        return None, [{"msg": "Input should be a valid dictionary", "type": "dict_type", "loc": []}]
    try:
        return UpdateAttributesEvent.model_validate(item), []
    except ValidationError as exc:
        return None, _entries(exc)


# Fast path: one bit per field group, one dict lookup per key.
_EVENT, _WS_ID, _WS_ATTR, _TAGS, _LEAD_ID, _LEAD_ATTR, _CO_ID, _CO_ATTR, _SENDER, _LEVEL, _OTHER = (
    1 << n for n in range(11)
)


def _fast_spec() -> dict[str, tuple[int, Any]]:
    spec: dict[str, tuple[int, Any]] = {}
    groups = [
        (("event",), _EVENT), (("platform",), _OTHER), ((s.WORKSPACE_ID,), _WS_ID),
        (tuple(f for f in s.WORKSPACE_ATTRIBUTES if f != "tags"), _WS_ATTR), (("tags",), _TAGS | _WS_ATTR),
        (s.LEAD_IDENTIFIERS, _LEAD_ID), (s.LEAD_ATTRIBUTES, _LEAD_ATTR), (s.COMPANY_IDENTIFIERS, _CO_ID),
        (s.COMPANY_ATTRIBUTES, _CO_ATTR), (("sender",), _SENDER), (("linkedin_connection_level",), _LEVEL),
    ]
    for fields, bit in groups:
        for f in fields:
            rule = _FORMATS.get(f)
            spec[f] = (bit, (_QUICK[f], rule[0].match) if rule else None)
    assert set(spec) == set(s.ALL_FIELDS)
    return spec


_HEX = "0123456789abcdef"


def _quick_hex_id(v: str) -> bool:
    return len(v) == 24 and not v.strip(_HEX)


def _quick_email(v: str) -> bool:
    # printable and no space => no whitespace (every Unicode space but " " is unprintable)
    at = v.find("@")
    return (
        at > 0 and v.count("@") == 1 and v.find(".", at + 2, len(v) - 1) != -1
        and " " not in v and v.isprintable()
    )


def _quick_domain(v: str) -> bool:
    return (
        v.find(".", 1, len(v) - 1) != -1 and " " not in v and "/" not in v and ":" not in v and "@" not in v
        and v.isprintable()
    )


def _quick_url(prefix: str, trailing_slash: bool) -> Any:
    """``prefix`` + one path segment (+ an optional "/"), or + anything printable without spaces."""
    cut = len(prefix)

    def check(v: str) -> bool:
        if not v.startswith(prefix):
            return False
        rest = v[cut:-1] if trailing_slash and v.endswith("/") else v[cut:]
        if not rest or " " in rest or not rest.isprintable():
            return False
        return not trailing_slash or ("/" not in rest and "?" not in rest and "#" not in rest)

    return check


# Sufficient conditions, cheaper than the regexes (a few C string calls instead of a
# backtracking match): True implies the contract's regex matches; False says nothing,
# and the regex decides. ``test_sandbox_fastpath`` checks the implication.
_QUICK: dict[str, Any] = {
    "workspace_id": _quick_hex_id,
    "unified_lead_id": _quick_hex_id,
    "unified_company_id": _quick_hex_id,
    "lead_email": _quick_email,
    "company_domain": _quick_domain,
    "lead_linkedin_url": _quick_url("https://www.linkedin.com/in/", True),
    "sender": _quick_url("https://www.linkedin.com/in/", True),
    "lead_sales_navigator_url": _quick_url("https://www.linkedin.com/sales/", False),
    "company_linkedin_url": _quick_url("https://www.linkedin.com/company/", True),
    "company_employee_count": lambda v: v.isascii() and v.isdigit(),
}
_FAST_SPEC = _fast_spec()
_MIN, _MAX = s.MIN_STRING_LENGTH, s.MAX_STRING_LENGTH
_LEVELS = frozenset(s.CONNECTION_LEVELS)


_SHAPES: dict[tuple[Any, ...], tuple[tuple[tuple[str, Any, Any], ...], bool] | None] = {}
_SHAPES_MAX = 1024
_STR_ONLY = {str}
_DICT_ONLY = {dict}
_MISSING: Any = object()


def _rules_hold(seen: int) -> bool:
    """Rules 4 to 6 over the field groups present (the level's value is checked apart)."""
    if seen & _WS_ATTR and not seen & _WS_ID:
        return False
    if seen & (_SENDER | _LEVEL) and (not seen & _SENDER or not seen & _LEVEL or not seen & _LEAD_ID):
        return False
    if not seen & (_LEAD_ID | _CO_ID):
        return False
    if seen & _LEAD_ATTR and not seen & _LEAD_ID:
        return False
    return not (seen & _CO_ATTR and not seen & _CO_ID)


def _shape(keys: tuple[Any, ...]) -> tuple[tuple[tuple[str, Any, Any], ...], bool] | None:
    """What a key tuple implies when every value is a non-null ``str``: the format checks
    left to run and whether the level needs checking; None when the general path must judge."""
    seen = 0
    formats = []
    for key in keys:
        entry = _FAST_SPEC.get(key)
        if entry is None or entry[0] & _TAGS:
            return None
        seen |= entry[0]
        if entry[1] is not None:
            formats.append((key, *entry[1]))
    if not seen & _EVENT or not _rules_hold(seen):
        return None
    return tuple(formats), bool(seen & _LEVEL)


def passes_fast_path(item: Any) -> bool:
    """True only when ``item`` is certainly valid; False means "ask the pydantic model".

    Why: building the pydantic model costs about 16 us per event, which alone would cap
    the sandbox far below its throughput target. This check is a conservative shortcut
    in front of the model, never a second rule book: it accepts only plain ``dict``s of
    plain ``str`` values (and a ``list`` of ``str`` for ``tags``) that satisfy every rule
    with the very same regexes, and anything unusual (a ``str`` subclass, a number, an
    unknown key, any failure) goes to the model, which alone produces error entries. So
    the verdicts cannot differ as long as "fast accepts => model accepts" holds, which
    ``tests/test_sandbox_fastpath.py`` checks over many generated events.
    """
    if type(item) is not dict:
        return False
    # Events of one sync share a few key sets: judge the key set once, then per event only
    # the values (types and lengths through C-level map(), then the formats).
    shape = _shape_of(tuple(item))
    if shape is None:
        return _fast_general(item)
    values = item.values()
    if set(map(type, values)) != _STR_ONLY:
        return _fast_general(item)
    if min(map(len, values)) < _MIN or max(map(len, values)) > _MAX or item["event"] != "update_attributes":
        return False
    formats, level = shape
    for key, quick, match in formats:
        value = item[key]
        if not quick(value) and match(value) is None:
            return False
    return not level or item["linkedin_connection_level"] in _LEVELS


def _fast_general(item: dict[Any, Any]) -> bool:
    """The fast path for any dict: one pass over its keys (nulls, ``tags``, odd types)."""
    spec = _FAST_SPEC
    seen = 0
    for key, value in item.items():
        entry = spec.get(key)
        if entry is None:
            return False  # unknown (or non-str) key
        if value is None:
            continue
        bit, match = entry
        if type(value) is str:
            if bit & _TAGS or not _MIN <= len(value) <= _MAX:
                return False
            if match is not None and not match[0](value) and match[1](value) is None:
                return False
        elif bit & _TAGS and type(value) is list:
            for tag in value:
                if type(tag) is not str or not _MIN <= len(tag) <= _MAX:
                    return False
        else:
            return False
        seen |= bit
    if not seen & _EVENT or item["event"] != "update_attributes":
        return False
    if seen & _WS_ATTR and not seen & _WS_ID:
        return False
    if seen & (_SENDER | _LEVEL) and (
        not seen & _SENDER
        or not seen & _LEVEL
        or not seen & _LEAD_ID
        or item["linkedin_connection_level"] not in _LEVELS
    ):
        return False
    if not seen & (_LEAD_ID | _CO_ID):
        return False
    if seen & _LEAD_ATTR and not seen & _LEAD_ID:
        return False
    return not (seen & _CO_ATTR and not seen & _CO_ID)


# The format regexes in MULTILINE mode, to judge many values joined by "\n" at once.
# Exact because no pattern can match a "\n" (every class excludes it), so each match is one
# whole line, and a line is one value when the values hold no "\n" (counted below).
_LINES: dict[str, re.Pattern[str]] = {
    f: re.compile(rule[0].pattern, rule[0].flags | re.MULTILINE) for f, rule in _FORMATS.items()
}
# Stricter, ASCII-only forms of the formats, each a sufficient condition for its contract
# regex (a line it accepts, the contract's pattern accepts), written without backtracking
# (possessive quantifiers, dot-free segments) and checked over a whole column with one
# ``fullmatch``: about 4x cheaper than ``findall`` with the contract's patterns, which
# remain the judge whenever the quick form says no (``test_sandbox_fastpath`` checks the
# implication on generated values).
_PRINT = "!-~"  # printable ASCII without space
_NO_AT = "!-?A-~"  # ... without "@"
_LABEL = r"!-\-/-?A-~"  # ... without "@" and "."
_HOST = r"!-\-0-9;-?A-~"  # ... without "@", ".", "/" and ":"
_SLUG = r"!\"$-.0->@-~"  # ... without "/", "?" and "#"
_QUICK_LINE: dict[str, str] = {
    "workspace_id": "[0-9a-f]{24}",
    "unified_lead_id": "[0-9a-f]{24}",
    "unified_company_id": "[0-9a-f]{24}",
    "lead_email": f"[{_NO_AT}]++@[{_LABEL}]++(?:\\.[{_LABEL}]++)++",
    "company_domain": f"[{_HOST}]++(?:\\.[{_HOST}]++)++",
    "lead_linkedin_url": f"https://www\\.linkedin\\.com/in/[{_SLUG}]++/?",
    "sender": f"https://www\\.linkedin\\.com/in/[{_SLUG}]++/?",
    "lead_sales_navigator_url": f"https://www\\.linkedin\\.com/sales/[{_PRINT}]++",
    "company_linkedin_url": f"https://www\\.linkedin\\.com/(?:company|school|showcase)/[{_SLUG}]++/?",
    "company_employee_count": "[0-9]++",
}
_COLUMN: dict[str, re.Pattern[str]] = {
    f: re.compile(f"(?:{line}\n)*+{line}") for f, line in _QUICK_LINE.items()
}
assert set(_COLUMN) == set(_FORMATS)
_BATCH_MIN = 8  # below this, per-item checks cost less than setting up the batch checks


def _shape_of(keys: tuple[Any, ...]) -> tuple[tuple[tuple[str, Any, Any], ...], bool] | None:
    shape = _SHAPES.get(keys, _MISSING)
    if shape is _MISSING:
        shape = _shape(keys)
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[keys] = shape
    return shape


def _group_passes(
    group: list[dict[str, Any]],
    keys: tuple[str, ...],
    shape: tuple[tuple[tuple[str, Any, Any], ...], bool],
    from_json: bool,
    columns: dict[str, Sequence[Any]],
) -> bool:
    """True when every event of ``group`` (all with the key tuple ``keys``) certainly passes.

    The same checks as :func:`passes_fast_path`, run column by column with C-level calls.
    The columns come from one ``zip`` over the events' values (one key tuple, so one value
    order). ``all(col)`` rejects an empty value (and any falsy non-string); ``"\n".join``
    proves the rest are ``str`` (with ``from_json``, where a ``str`` is never a subclass;
    otherwise exact types are checked too); a column shorter than the length limit in
    total needs no per-value length; a format column is matched once when all its values
    are equal (a workspace id), else whole, after the count of "\n" proved one value per
    line. The columns are left in ``columns`` for the store.
    """
    n = len(group)
    formats = {key: (quick, match) for key, quick, match in shape[0]}
    for key, col in zip(keys, zip(*map(dict.values, group), strict=True), strict=True):
        if not all(col):
            return False
        if not from_json and set(map(type, col)) != _STR_ONLY:
            return False
        try:
            joined = "\n".join(col)
        except TypeError:  # a value that is not a str
            return False
        if len(joined) > _MAX and max(map(len, col)) > _MAX:
            return False
        check = formats.get(key)
        if check is not None:
            if col.count(col[0]) == n:  # one value throughout (a workspace id, a sender)
                if not check[0](col[0]) and check[1](col[0]) is None:
                    return False
            elif (
                joined.count("\n") != n - 1
                or (_COLUMN[key].fullmatch(joined) is None and len(_LINES[key].findall(joined)) != n)
            ):
                return False
        columns[key] = col
    if columns["event"].count("update_attributes") != n:
        return False
    return not shape[1] or set(columns["linkedin_connection_level"]) <= _LEVELS


assert _MIN == 1, "_group_passes checks the minimum length as 'no empty string'"


class Verdicts(NamedTuple):
    """What :func:`fast_verdicts` found out about a batch."""

    valid: list[bool]  # per item: certainly valid (False: ask the model)
    plain: set[tuple[Any, ...]]  # key tuples whose whole group passed the group check
    keys: list[tuple[Any, ...] | None]  # per item: its key tuple, None for a non-dict
    # for a batch that is one plain group: its values field by field, in item order
    columns: dict[str, Sequence[Any]] | None = None


def passes_fast_path_many(items: Sequence[Any]) -> list[bool]:
    """``[passes_fast_path(item) for item in items]``, computed per key set where it pays.

    Events are grouped by their key tuple; a group of certainly-valid events is judged with
    a handful of C-level passes; a group that fails any check falls back to per-item checks,
    so the result is always exactly the per-item one (``test_sandbox_fastpath`` checks it).
    """
    return fast_verdicts(items).valid


def fast_verdicts(items: Sequence[Any], from_json: bool = False) -> Verdicts:
    """:func:`passes_fast_path_many`'s verdicts, plus what the sandbox's store reuses.

    Every item whose key tuple is in ``plain`` is a ``dict`` of plain ``str`` values (no
    null, no list) and certainly valid, so the store can apply runs of them in bulk
    without looking at their values' types again. ``from_json``: the items come from a
    JSON parser, so a ``str`` is never a subclass and need not be checked for one.
    """
    n = len(items)
    if set(map(type, items)) == _DICT_ONLY:
        keys: list[tuple[Any, ...] | None] = list(map(tuple, items))
    else:
        keys = [tuple(item) if type(item) is dict else None for item in items]
    groups: dict[tuple[Any, ...], Sequence[int]] = {}
    if n and keys[0] is not None and keys.count(keys[0]) == n:  # one key set (the usual batch)
        groups[keys[0]] = range(n)
    else:
        lists: dict[tuple[Any, ...], list[int]] = {}
        for index, k in enumerate(keys):
            if k is not None:
                group = lists.get(k)
                if group is None:
                    lists[k] = [index]
                else:
                    group.append(index)
        groups.update(lists)
    plain: set[tuple[Any, ...]] = set()
    result = [False] * n
    columns: dict[str, Sequence[Any]] | None = None
    for k, indexes in groups.items():
        shape = _shape_of(k)
        whole = len(indexes) == n
        cols: dict[str, Sequence[Any]] = {}
        if shape is not None and len(indexes) >= _BATCH_MIN and _group_passes(
            list(items) if whole else [items[i] for i in indexes], k, shape, from_json, cols
        ):
            plain.add(k)
            for i in indexes:
                result[i] = True
            if whole:
                columns = cols
        else:
            for i in indexes:
                result[i] = passes_fast_path(items[i])
    return Verdicts(result, plain, keys, columns)


def item_errors(item: Any) -> list[ErrorEntry]:
    """The contract's verdict on one item: an empty list when it is valid.

    Certainly-valid items skip the model (see :func:`passes_fast_path`); every error
    entry still comes from the pydantic model.
    """
    if passes_fast_path(item):
        return []
    return validate_item(item)[1]


def build_result(total: int, details: Sequence[ItemErrors]) -> BatchResult:
    """The 200 body: ``success + errors.count == total``, details in index order."""
    ordered = sorted(details, key=lambda d: d["index"])
    return {
        "errors": {"count": len(ordered), "details": list(ordered)},
        "success": total - len(ordered),
        "total": total,
    }


def validate_batch(items: Any) -> BatchResult:
    """Validate a body (one object or an array) and answer in the contract's result shape.

    Only validation is judged here; the sandbox adds the verdicts that need its store
    (a ``unified_*_id`` that names no record).
    """
    batch = items if isinstance(items, list) else [items]
    details: list[ItemErrors] = []
    for index, item in enumerate(batch):
        errors = item_errors(item)
        if errors:
            details.append({"index": index, "error": errors})
    return build_result(len(batch), details)

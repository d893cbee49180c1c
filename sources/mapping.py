"""Source columns -> canonical columns: the plan (once per source) and its vectorized application.

``plan_mapping`` looks only at the header list: it picks a preset (``auto`` scores each
tool's distinctive headers), applies a user's TOML mapping file and constant fields, and
lists the columns nothing uses (reported once, never sent). ``apply_mapping`` then turns
every record batch into canonical columns named exactly like the API fields, with
pyarrow.compute only: it runs on millions of rows.

Values are cast to strings and trimmed, empty means "not provided", mojibake is repaired
where that is certain, and range-shaped employee counts move to ``company_employee_range``.
Identifiers are *not* normalized here: staging normalizes every source alike.

Mapping file (TOML)::

    preset = "apollo"            # optional; otherwise the caller's choice / auto
    order_by = "updated_at"      # optional; latest wins when rows of one lead conflict
    [columns]                    # canonical field = source column, or a list (first non-empty wins)
    lead_email = ["Work Email", "Email"]
    company_domain = ""          # empty: do not map this field at all
    [constants]                  # the same value on every row (replaces any column)
    workspace_id = "65f0c0ffee0000000000beef"
    tags = ["q3", "webinar"]
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import tomllib
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from destinations.outreach_magic.arrow_literals import FALSE, literal
from destinations.outreach_magic.exceptions import ConfigurationError
from destinations.outreach_magic.settings import CANONICAL_FIELDS, CONNECTION_LEVELS
from sources.presets import PRESETS, Preset, base_header, header_key
from sources.presets.base import Derive
from sources.presets.values import (
    STRING,
    TAGS_LIST,
    clean,
    clean_list,
    first_item,
    order_strings,
    repair_mojibake,
    repeat,
    split_employees,
    to_strings,
)

#: Fields a constant may set. Identifiers and attributes are per row by nature: one constant
#: email would merge every row into one lead.
CONSTANT_FIELDS: tuple[str, ...] = (
    "workspace_id",
    "import_name",
    "list_source",
    "exclusion_reason",
    "icp",
    "tags",
    "lead_status",
    "platform",
    "sender",
    "linkedin_connection_level",
)
#: Columns the readers add; passed through, never mapped, never reported as unused.
META_COLUMNS: tuple[str, ...] = ("_om_source", "_om_row")
ORDER_COLUMN = "_om_order"


class MappingError(ConfigurationError):
    """A mapping cannot be built: unknown field, missing column, bad mapping file or preset."""


def _unknown(kind: str, key: str, allowed: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"unknown {kind} {key!r}{hint}; allowed: {', '.join(allowed)}"


class MappingFile(BaseModel):
    """The user's TOML mapping file, validated: every key names a real field."""

    model_config = ConfigDict(extra="forbid")

    preset: str | None = None
    order_by: str | None = None
    columns: dict[str, str | list[str]] = {}
    constants: dict[str, str | int | list[str]] = {}

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        if v is not None and v != "auto" and v not in PRESETS:
            raise ValueError(_unknown("preset", v, [*PRESETS, "auto"]))
        return v

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, v: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for key in v:
            if key not in CANONICAL_FIELDS:
                raise ValueError(_unknown("canonical field", key, CANONICAL_FIELDS))
        return v

    @field_validator("constants")
    @classmethod
    def _known_constants(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_constants(v)


def check_constants(constants: dict[str, Any]) -> dict[str, Any]:
    """Validate constant fields and bring values to their wire types (``tags`` a list, the rest strings)."""
    out: dict[str, Any] = {}
    for key, value in constants.items():
        if key not in CONSTANT_FIELDS:
            raise ValueError(_unknown("constant field", key, CONSTANT_FIELDS))
        if value is None or value == "" or value == []:
            continue
        if key == "tags":
            items = value if isinstance(value, list) else str(value).split(",")
            tags = [str(t).strip() for t in items if str(t).strip()]
            if tags:
                out[key] = tags
            continue
        if isinstance(value, list):
            raise ValueError(f"constant {key!r} must be a single value, not a list")
        text = str(value).strip()
        if key == "linkedin_connection_level" and text not in CONNECTION_LEVELS:
            raise ValueError(
                f"constant 'linkedin_connection_level' must be one of {CONNECTION_LEVELS}, not {text!r}"
            )
        out[key] = text
    return out


def load_mapping_file(path: str | Path) -> MappingFile:
    """Read and validate a mapping file; errors name the file and the offending key."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as e:
        raise MappingError(f"mapping file {p} does not exist") from e
    except tomllib.TOMLDecodeError as e:
        raise MappingError(f"mapping file {p} is not valid TOML: {e}") from e
    try:
        return MappingFile.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
            for err in e.errors(include_url=False, include_input=False)
        )
        raise MappingError(f"mapping file {p}: {problems}") from e


@dataclass
class MappingPlan:
    """How one source becomes canonical columns; built from its headers before any row is read."""

    preset: str
    reason: str
    #: canonical field -> source column, or source columns (first non-empty wins per row)
    columns: dict[str, str | list[str]]
    constants: dict[str, Any]
    order_by: str | None
    unused: list[str]
    #: non-canonical inputs a preset derives fields from (e.g. the event type of HeyReach)
    helpers: dict[str, str | list[str]] = field(default_factory=dict)
    derive: Derive | None = None
    #: a header the source repeats -> its columns as the reader named them, in file order
    #: (``Email`` -> ``["Email", "Email__2"]``)
    repeated: dict[str, list[str]] = field(default_factory=dict)
    #: later copies of a repeated header that a preset maps -> the field they feed. Such a
    #: copy is a fallback: its value is sent only on rows where the earlier candidates are empty.
    copies: dict[str, str] = field(default_factory=dict)

    def describe(self) -> list[str]:
        """Report lines: the choice, each field's source, constants, unused columns."""
        lines = [self.reason]
        for f, src in self.columns.items():
            lines.append(f"  {f} <- {', '.join(_as_list(src))}")
        for f, value in self.constants.items():
            lines.append(f"  {f} = {value!r} (constant)")
        if self.order_by:
            lines.append(f"  order by {self.order_by} (latest wins)")
        if self.unused:
            lines.append(f"  unused columns (not sent): {', '.join(self.unused)}")
        lines.extend(f"  {note}" for note in self.repeated_notes().values())
        return lines

    def repeated_notes(self) -> dict[str, str]:
        """One warning per repeated header (header -> note): its copies, and what each copy feeds."""
        notes = {}
        for header, cols in self.repeated.items():
            feeds = {c: [f for f, src in (*self.columns.items(), *self.helpers.items()) if c in _as_list(src)]
                     for c in cols}
            note = f"header {header!r} appears {len(cols)} times (read as {', '.join(cols)})"
            fallbacks = [c for c in cols if c in self.copies]
            if fallbacks:
                note += "; " + "; ".join(
                    f"{c} fills {self.copies[c]} only on rows where {_before(self.columns[self.copies[c]], c)} "
                    f"empty, a different value beside a non-empty one is not sent"
                    for c in fallbacks
                )
            if not any(feeds.values()):
                note += "; no API field uses it"
            notes[header] = note
        return notes


def _before(src: str | list[str], col: str) -> str:
    """``A is`` / ``A and B are``: the candidates ahead of ``col`` in a field's source list."""
    names = _as_list(src)
    ahead = names[: names.index(col)]
    return f"{ahead[0]} is" if len(ahead) == 1 else f"{', '.join(ahead[:-1])} and {ahead[-1]} are"


@dataclass
class CopyTally:
    """What became of one fallback copy of a repeated header (``MappingPlan.copies``) over the rows read."""

    #: rows where its value is the one sent (the earlier candidates were empty, or equal)
    used: int = 0
    #: rows where it held a value different from the one sent: that value was not sent
    unsent: int = 0
    #: the first of those rows (1-based ``_om_row``), at most :data:`UNSENT_ROWS_KEPT`
    rows: list[int] = field(default_factory=list)


UNSENT_ROWS_KEPT = 20


def _as_list(src: str | list[str]) -> list[str]:
    return [src] if isinstance(src, str) else list(src)


def _one_or_many(cols: list[str]) -> str | list[str]:
    return cols[0] if len(cols) == 1 else cols


def _index(preset: Preset, columns: list[str]) -> dict[str, list[str]]:
    """key of a header -> the actual columns with that header, duplicates in file order."""
    index: dict[str, list[tuple[int, int, str]]] = {}
    for pos, col in enumerate(columns):
        base, nth = base_header(col)
        index.setdefault(preset.key(base), []).append((nth, pos, col))
    return {k: [c for _, _, c in sorted(v)] for k, v in index.items()}


def _resolve(preset: Preset, aliases: tuple[str, ...], index: dict[str, list[str]]) -> list[str]:
    found: list[str] = []
    for alias in aliases:
        for col in index.get(preset.key(alias), []):
            if col not in found:
                found.append(col)
    return found


def choose_preset(columns: list[str]) -> tuple[str, str]:
    """Pick a preset from headers alone; returns (name, human reason)."""
    data = [c for c in columns if c not in META_COLUMNS]
    present = {header_key(base_header(c)[0]) for c in data}
    best: tuple[float, int, str, list[str]] | None = None
    for preset in PRESETS.values():
        if not preset.signature:
            continue
        # Spellings that differ only in case/punctuation (``event_type``, ``eventType``) count once.
        distinct = {header_key(s): s for s in reversed(preset.signature)}
        hits = [s for k, s in distinct.items() if k in present][::-1]
        if len(hits) < preset.min_signature:
            continue
        score = (len(hits) / len(distinct), len(hits))
        if best is None or score > best[:2]:
            best = (*score, preset.name, hits)
    canonical = [c for c in data if c.strip().lower() in CANONICAL_FIELDS]
    if len(canonical) >= 2 and (best is None or len(canonical) > best[1]):
        return (
            "canonical",
            f"auto: canonical ({len(canonical)} of {len(data)} columns are named like API fields)",
        )
    if best is not None:
        _, n, name, hits = best
        p = PRESETS[name]
        total = len({header_key(s) for s in p.signature})
        return name, f"auto: {name} (matched {n} of {total} {p.title} headers: {', '.join(hits)})"
    return "generic", "auto: generic (no tool preset matched the headers)"


def plan_mapping(
    columns: list[str],
    preset: str = "auto",
    mapping_file: str | Path | None = None,
    constants: dict[str, Any] | None = None,
) -> MappingPlan:
    """Build the plan for a source with these headers (see the module docstring for the rules).

    Precedence: an explicit ``preset`` argument over the mapping file's ``preset`` over
    ``auto``; mapping-file columns over preset columns; constants (CLI over mapping file
    over the preset's default ``platform``) over any column for the same field.
    """
    mf = load_mapping_file(mapping_file) if mapping_file is not None else MappingFile()
    data = [c for c in columns if c not in META_COLUMNS]
    if len(set(data)) != len(data):
        dupes = sorted({c for c in data if data.count(c) > 1})
        raise MappingError(f"the source has duplicate column names {dupes}: the reader must rename them")

    if preset == "auto" and mf.preset not in (None, "auto"):
        name, reason = str(mf.preset), f"preset {mf.preset} (from mapping file {mapping_file})"
    elif preset == "auto":
        name, reason = choose_preset(data)
    elif preset in PRESETS:
        name, reason = preset, f"preset {preset} (chosen by the caller)"
    else:
        raise MappingError(_unknown("preset", preset, [*PRESETS, "auto"]))
    chosen = PRESETS[name]

    index = _index(chosen, data)
    mapped: dict[str, str | list[str]] = {}
    for f, aliases in chosen.columns.items():
        found = _resolve(chosen, aliases, index)
        if found:
            mapped[f] = _one_or_many(found)
    helpers: dict[str, str | list[str]] = {}
    for h, aliases in chosen.helpers.items():
        found = _resolve(chosen, aliases, index)
        if found:
            helpers[h] = _one_or_many(found)

    overridden: set[str] = set()
    for f, src in mf.columns.items():
        overridden.add(f)
        names = [s for s in _as_list(src) if s.strip()]
        if not names:
            mapped.pop(f, None)
            continue
        missing = [s for s in names if s not in data]
        if missing:
            raise MappingError(
                f"mapping file {mapping_file}: column {missing[0]!r} for {f} is not in the source; "
                f"its columns are: {', '.join(data)}"
            )
        mapped[f] = _one_or_many(names)

    merged: dict[str, Any] = {}
    if chosen.platform:
        merged["platform"] = chosen.platform
    if "platform" in mapped:
        merged.pop("platform", None)
    merged.update(mf.constants)
    try:
        merged.update(check_constants(constants or {}))
    except ValueError as e:
        raise MappingError(str(e)) from e
    for f in merged:
        mapped.pop(f, None)

    order_by = mf.order_by
    if order_by is not None and order_by not in data:
        raise MappingError(
            f"order_by column {order_by!r} is not in the source; its columns are: {', '.join(data)}"
        )

    derive = chosen.derive
    if derive is not None and overridden & {"sender", "linkedin_connection_level"}:
        derive = None
    if derive is not None and {"sender", "linkedin_connection_level"} & set(merged):
        derive = None

    if name == "generic" and mapped:
        used = [c for src in mapped.values() for c in _as_list(src)]
        reason += f"; used {', '.join(used)}"

    repeated: dict[str, list[str]] = {}
    for c in data:
        base, nth = base_header(c)
        if nth > 1 and base in data:
            repeated.setdefault(base, [base]).append(c)
    # A later copy feeding a field the preset resolved is a fallback; a mapping file that
    # names the copies itself chose their order, and nothing is reported as a fallback.
    copies = {
        c: f
        for f, src in mapped.items()
        if f not in overridden
        for c in _as_list(src)
        if base_header(c)[1] > 1 and base_header(c)[0] in repeated
    }

    used_cols = {c for src in (*mapped.values(), *helpers.values()) for c in _as_list(src)}
    if order_by:
        used_cols.add(order_by)
    unused = [c for c in data if c not in used_cols]
    ordered = {f: mapped[f] for f in CANONICAL_FIELDS if f in mapped}
    ordered_constants = {f: merged[f] for f in CANONICAL_FIELDS if f in merged}
    return MappingPlan(
        preset=name,
        reason=reason,
        columns=ordered,
        constants=ordered_constants,
        order_by=order_by,
        unused=unused,
        helpers=helpers,
        derive=derive,
        repeated=repeated,
        copies=copies,
    )


def _column(batch: pa.RecordBatch, name: str) -> pa.Array:
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        raise MappingError(f"column {name!r} of the mapping plan is missing from a batch of the source")
    return batch.column(idx)


def _prepare(arr: pa.Array, *, as_tags: bool) -> pa.Array:
    try:
        text = to_strings(arr)
    except TypeError as e:
        raise MappingError(str(e)) from e
    if pa.types.is_list(text.type):
        return clean_list(text) if as_tags else first_item(text)
    return clean(text)


def _field_array(
    batch: pa.RecordBatch,
    src: str | list[str],
    *,
    as_tags: bool = False,
    tallies: dict[str, CopyTally] | None = None,
) -> pa.Array:
    names = _as_list(src)
    arrays = [_prepare(_column(batch, s), as_tags=as_tags) for s in names]
    if len(arrays) == 1:
        return arrays[0]
    if len({a.type for a in arrays}) > 1:  # tags from a list column and a delimited one
        arrays = [pc.binary_join(a, literal(",", STRING)) if pa.types.is_list(a.type) else a for a in arrays]
    result = pc.coalesce(*arrays)
    if tallies:
        for name, arr in zip(names, arrays, strict=True):
            if name in tallies:
                _tally(tallies[name], batch, arr, result)
    return result


def _tally(tally: CopyTally, batch: pa.RecordBatch, copy: pa.Array, sent: pa.Array) -> None:
    """Count the rows where a fallback copy's value is the one sent, and those where it is not."""
    if pa.types.is_list(copy.type):  # compare tag lists by their joined text
        copy, sent = pc.binary_join(copy, literal("\x1f", STRING)), pc.binary_join(sent, literal("\x1f", STRING))
    held = pc.is_valid(copy)
    same = pc.fill_null(pc.equal(copy, sent), FALSE)
    tally.used += pc.sum(pc.and_(held, same)).as_py() or 0
    lost = pc.and_(held, pc.invert(same))
    n = pc.sum(lost).as_py() or 0
    tally.unsent += n
    idx = batch.schema.get_field_index(META_COLUMNS[1])
    room = UNSENT_ROWS_KEPT - len(tally.rows)
    if n and room > 0 and idx >= 0:
        tally.rows.extend(pc.filter(batch.column(idx), lost)[:room].to_pylist())


def apply_mapping(
    batch: pa.RecordBatch, plan: MappingPlan, tallies: dict[str, CopyTally] | None = None
) -> pa.RecordBatch:
    """Canonical columns of one batch (strings; ``tags`` list<string> or string), plus
    ``_om_source``/``_om_row`` passed through and ``_om_order`` when the plan orders rows.

    ``tallies``, when given, counts per fallback copy of a repeated header (``plan.copies``)
    the rows where its value was sent and those where a different value was (its own is lost).
    """
    if tallies is not None:
        for c in plan.copies:
            tallies.setdefault(c, CopyTally())
    out: dict[str, pa.Array] = {
        f: _field_array(batch, src, as_tags=(f == "tags"), tallies=tallies) for f, src in plan.columns.items()
    }
    if "company_employee_count" in out:
        count, range_ = split_employees(out["company_employee_count"], out.get("company_employee_range"))
        out["company_employee_count"] = count
        out["company_employee_range"] = range_
    for f, arr in out.items():
        if arr.type == STRING:
            out[f] = repair_mojibake(arr)
    if plan.derive is not None:
        helpers = {h: repair_mojibake(_field_array(batch, src)) for h, src in plan.helpers.items()}
        out = plan.derive(out, helpers)
    for f, value in plan.constants.items():
        out[f] = repeat(value, batch.num_rows)

    names: list[str] = []
    arrays: list[pa.Array] = []
    for f in CANONICAL_FIELDS:
        if f in out:
            arr = out[f]
            names.append(f)
            arrays.append(arr if arr.type in (STRING, TAGS_LIST) else arr.cast(STRING))
    for meta in META_COLUMNS:
        idx = batch.schema.get_field_index(meta)
        if idx >= 0:
            names.append(meta)
            arrays.append(batch.column(idx))
    if plan.order_by:
        names.append(ORDER_COLUMN)
        arrays.append(order_strings(_column(batch, plan.order_by)))
    return pa.RecordBatch.from_arrays(arrays, names=names)

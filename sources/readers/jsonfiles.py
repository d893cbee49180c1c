"""JSONL / NDJSON and JSON documents: one record per row, nested objects flattened.

Rules (why: presets and users address fields by path, e.g. Clearbit's `person.name.givenName`):
- nested objects become dotted column names (`person.name.givenName`);
- a list of scalars becomes `list<string>` (each scalar as its JSON text: `true`, `3`, `a`);
- a list containing objects or lists is kept as its JSON text (a string column);
- a column whose non-null values are all bools / all ints / all numbers keeps that Arrow
  type (bool / int64 / float64); any other mix becomes string (JSON text of non-strings).
- JSONL is read twice, streaming, in bounded memory: pass 1 only infers the column set and
  types, pass 2 builds batches with that one schema. Two passes cost a second parse but give
  every batch the same schema, which downstream code (dlt, DuckDB staging) relies on.
- A JSON document is parsed whole (orjson; a document must be held to know its shape).
  A top-level array yields its elements; a top-level object is first offered to
  `sources.documents.DOCUMENT_ADAPTERS`, then `{"data": [...]}`, `{"results": [...]}`, or a
  single key holding a list of objects yields that list; otherwise the object is one row.
  A `.json` file that turns out to be JSON Lines is read as JSON Lines.
- `_om_row` counts non-blank lines in JSONL (a bad line keeps its number and is reported),
  and elements in a JSON array.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from destinations.outreach_magic.arrow_literals import numeric_array, string_array, string_list_array
from destinations.outreach_magic.exceptions import SourceError
from sources import documents

from ._common import IssueSink, SourceIssue, add_provenance_rows, dedupe_names
from .delimited import LENIENT_CP1252  # registers the lenient cp1252 codec

_LIST = "list"
_JSON = "json"
_BIGINT = "bigint"
_INT64_MAX = 2**63 - 1
WRAPPER_KEYS = ("data", "results")


def _flatten(record: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    # `type(x) is` rather than isinstance: orjson only produces exact built-in types, and
    # this loop runs once per field per record on both passes.
    for key, value in record.items():
        t = type(value)
        if t is dict:
            _flatten(value, prefix + key + ".", out)
        elif t is list:
            if any(type(v) is dict or type(v) is list for v in value):
                out[prefix + key] = ("__json__", orjson.dumps(value).decode())
            else:
                out[prefix + key] = ("__list__", value)
        else:
            out[prefix + key] = value


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten(record, "", out)
    return out


_KINDS: dict[type, str] = {bool: "bool", float: "float", str: "str"}


def _kind(value: Any) -> str | None:
    t = type(value)
    if t is str or t is bool or t is float:
        return _KINDS[t]
    if value is None:
        return None
    if t is int:
        return "int" if -_INT64_MAX - 1 <= value <= _INT64_MAX else _BIGINT
    if t is tuple:
        return _LIST if value[0] == "__list__" else _JSON
    return "str"


class SchemaBuilder:
    """Pass 1: column order (first appearance) and the set of value kinds per column."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[str]] = {}
        self._shapes: set[tuple[tuple[str, str | None], ...]] = set()

    def add(self, flat: dict[str, Any]) -> None:
        # Records of one export mostly share a shape: remember shapes already counted.
        shape = tuple((name, _kind(value)) for name, value in flat.items())
        if shape in self._shapes:
            return
        self._shapes.add(shape)
        for name, k in shape:
            kinds = self.kinds.setdefault(name, set())
            if k is not None:
                kinds.add(k)

    def arrow_types(self) -> dict[str, pa.DataType]:
        types: dict[str, pa.DataType] = {}
        for name, kinds in self.kinds.items():
            if kinds == {"bool"}:
                types[name] = pa.bool_()
            elif kinds == {"int"}:
                types[name] = pa.int64()
            elif kinds and kinds <= {"int", "float"}:
                types[name] = pa.float64()
            elif kinds == {_LIST}:
                types[name] = pa.list_(pa.string())
            else:
                types[name] = pa.string()  # str, json text, big ints, mixes, all-null
        return types


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _to_string(value: Any) -> str | None:
    if isinstance(value, tuple):
        return value[1] if value[0] == "__json__" else orjson.dumps(value[1]).decode()
    return _scalar_text(value)


def _column(values: list[Any], typ: pa.DataType) -> pa.Array:
    """One column from Python values, built from buffers (``pa.array`` would import pandas:
    see destinations/outreach_magic/arrow_literals.py)."""
    if pa.types.is_string(typ):
        return string_array([_to_string(v) for v in values])
    if pa.types.is_list(typ):
        return string_list_array([None if v is None else [_scalar_text(x) for x in v[1]] for v in values])
    nulls = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    dtype = {pa.bool_(): np.bool_, pa.int64(): np.int64, pa.float64(): np.float64}[typ]
    data: np.ndarray = np.array([False if v is None else v for v in values], dtype=dtype)
    return numeric_array(data, mask=nulls if nulls.any() else None)


def _build(
    flats: list[dict[str, Any]], numbers: list[int], types: dict[str, pa.DataType], label: str
) -> pa.RecordBatch:
    names = list(types)
    arrays = [_column([f.get(n) for f in flats], types[n]) for n in names]
    batch = pa.RecordBatch.from_arrays(arrays, names=names)
    return add_provenance_rows(batch, label, numeric_array(np.asarray(numbers, dtype=np.int64)), dedupe_names(names))


def _jsonl_records(path: Path, sink: IssueSink | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(record number, object) for every non-blank line; bad lines reported once (pass 2)."""
    label = path.name
    record = 0
    recoded = False
    with path.open("rb") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            record += 1
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                obj = _recode(line)
                if obj is not None:
                    if sink is not None and not recoded:
                        sink.report(SourceIssue(label, "encoding", "lines that are not valid UTF-8 were "
                                                "decoded as Windows-1252 (cp1252)", row=record, line=line_no))
                    recoded = True
                elif sink is not None:
                    sink.report(SourceIssue(label, "invalid_json", f"not valid JSON ({exc}); line skipped",
                                            row=record, line=line_no))
                if obj is None:
                    continue
            if not isinstance(obj, dict):
                if sink is not None:
                    sink.report(SourceIssue(label, "not_an_object",
                                            f"a {type(obj).__name__}, not an object; line skipped",
                                            row=record, line=line_no))
                continue
            yield record, obj


def _recode(line: bytes) -> Any:
    """A line that is not UTF-8 (a Latin-1 export) parsed after decoding it as cp1252, else None."""
    try:
        line.decode("utf-8")
        return None  # valid UTF-8: the JSON itself is broken, not the encoding
    except UnicodeDecodeError:
        pass
    try:
        return orjson.loads(line.decode(LENIENT_CP1252))
    except orjson.JSONDecodeError:
        return None


def _batches(
    records: Iterable[tuple[int, dict[str, Any]]], types: dict[str, pa.DataType], label: str, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    flats: list[dict[str, Any]] = []
    numbers: list[int] = []
    for number, obj in records:
        flats.append(flatten(obj))
        numbers.append(number)
        if len(flats) >= batch_rows:
            yield _build(flats, numbers, types, label)
            flats, numbers = [], []
    if flats:
        yield _build(flats, numbers, types, label)


def read_jsonl(path: Path, batch_rows: int, sink: IssueSink) -> Iterator[pa.RecordBatch]:
    schema = SchemaBuilder()
    for _, obj in _jsonl_records(path, None):
        schema.add(flatten(obj))
    yield from _batches(_jsonl_records(path, sink), schema.arrow_types(), path.name, batch_rows)


def document_records(doc: Any) -> list[Any]:
    """Turn a parsed JSON document into its list of records (see module docstring)."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for adapter in documents.DOCUMENT_ADAPTERS:  # looked up now: registration may come later
            rows = adapter(doc)
            if rows is not None:
                return list(rows)
        for key in WRAPPER_KEYS:
            if isinstance(doc.get(key), list):
                return list(doc[key])
        if len(doc) == 1:
            (only,) = doc.values()
            if isinstance(only, list) and only and all(isinstance(x, dict) for x in only):
                return only
        return [doc]
    return [doc]


def _load_document(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise SourceError(f"{path}: not a valid JSON document ({exc})") from exc


def _looks_like_jsonl(path: Path) -> bool:
    """A `.json` file holding one object per line fails as a document with 'trailing' data."""
    with path.open("rb") as fh:
        first = fh.readline()
    try:
        return isinstance(orjson.loads(first), dict) and bool(first.strip())
    except orjson.JSONDecodeError:
        return False


def read_json_document(path: Path, batch_rows: int, sink: IssueSink) -> Iterator[pa.RecordBatch]:
    try:
        doc = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        if _looks_like_jsonl(path):
            yield from read_jsonl(path, batch_rows, sink)
            return
        doc = _recode(path.read_bytes())
        if doc is None:
            raise SourceError(f"{path}: not a valid JSON document ({exc})") from exc
        sink.report(SourceIssue(path.name, "encoding", "file is not valid UTF-8; decoded as Windows-1252 (cp1252)"))
    records: list[tuple[int, dict[str, Any]]] = []
    for number, obj in enumerate(document_records(doc), start=1):
        if isinstance(obj, dict):
            records.append((number, obj))
        else:
            sink.report(SourceIssue(path.name, "not_an_object",
                                    f"element is a {type(obj).__name__}, not an object; skipped", row=number))
    schema = SchemaBuilder()
    for _, obj in records:
        schema.add(flatten(obj))
    yield from _batches(records, schema.arrow_types(), path.name, batch_rows)


JSONL_SAMPLE_RECORDS = 1000


def list_json_columns(path: Path, jsonl: bool) -> list[str]:
    """Columns of the first JSONL_SAMPLE_RECORDS records (JSONL) or of the whole document."""
    schema = SchemaBuilder()
    if jsonl or (_looks_like_jsonl(path) and not _is_document(path)):
        for i, (_, obj) in enumerate(_jsonl_records(path, None)):
            if i >= JSONL_SAMPLE_RECORDS:
                break
            schema.add(flatten(obj))
    else:
        for obj in document_records(_load_document(path)):
            if isinstance(obj, dict):
                schema.add(flatten(obj))
    return dedupe_names(list(schema.kinds))


def _is_document(path: Path) -> bool:
    try:
        orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        return False
    return True

"""Arrow scalars and arrays built from buffers, for the sync's path.

``pa.scalar``, ``pa.array`` (of a list or a NumPy array), ``Array.to_numpy`` and a compute
call given a Python value (``pc.equal(a, 0)``) make pyarrow import pandas on their first
use when it is installed: 45 MB of RSS and 0.35 s, for a library the sync never calls.
With the runner's pipeline sending dlt no state row (pipelines/runner.py), a 1M-row
``python bench/sync.py`` peaks at 436-447 MB instead of 471-482, a rerun at 231-236
instead of 269-275 (2026-12-07). The helpers here give what pyarrow's constructors give
(tests/test_arrow_literals.py), from buffers, which import nothing. What still converts
Python values with pyarrow's own constructors: the SQL reader's type inference and a
pandas DataFrame given as a source (pandas is imported then anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import pyarrow as pa

_NUMPY = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
    pa.float32(): np.float32, pa.float64(): np.float64,
}


@lru_cache(maxsize=1024)
def literal(value: bool | int | float | str | bytes | None, type_: pa.DataType) -> pa.Scalar:
    """``pa.scalar(value, type_)`` without the pandas import (see the module's docstring).

    Cached: the same few literals serve every batch.
    """
    if value is None:
        return pa.nulls(1, type_)[0]
    if pa.types.is_boolean(type_):
        return numeric_array(np.array([bool(value)]))[0]
    if isinstance(value, (str, bytes)) and (
        pa.types.is_string(type_) or pa.types.is_large_string(type_)
        or pa.types.is_binary(type_) or pa.types.is_large_binary(type_)
    ):
        data = value.encode() if isinstance(value, str) else value
        large = pa.types.is_large_string(type_) or pa.types.is_large_binary(type_)
        width = np.int64 if large else np.int32
        offsets = np.array([0, len(data)], dtype=width)
        return pa.Array.from_buffers(type_, 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])[0]
    if type_ in _NUMPY:
        return numeric_array(np.array([value], dtype=_NUMPY[type_]))[0]
    raise TypeError(f"no literal of type {type_}")


_ARROW = {np.dtype(v): k for k, v in _NUMPY.items()}


def numeric_array(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    """``pa.array(values, mask=mask)`` for a NumPy array of numbers or booleans, without
    the pandas import: the array's own buffer, zero copy when it is contiguous (booleans
    are packed into bits, as Arrow holds them). ``mask`` is True where the value is null,
    as for ``pa.array``."""
    validity = None
    if mask is not None:
        validity = pa.py_buffer(np.packbits(~np.asarray(mask, dtype=bool), bitorder="little"))
    if values.dtype == np.bool_:
        bits = np.packbits(values, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [validity, pa.py_buffer(bits)])
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(_ARROW[values.dtype], len(values), [validity, pa.py_buffer(values)])


def positions(n: int, start: int = 0) -> pa.Array:
    """``start, start + 1, ...`` (``n`` of them) as int64, built by NumPy: no Python int a row."""
    return numeric_array(np.arange(start, start + n, dtype=np.int64))


def string_array(values: Sequence[str | None]) -> pa.Array:
    """``pa.array(values, pa.string())`` without the pandas import (None is null)."""
    encoded = [b"" if v is None else v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    nulls = np.fromiter((v is None for v in values), dtype=bool, count=len(encoded))
    validity = pa.py_buffer(np.packbits(~nulls, bitorder="little")) if nulls.any() else None
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
    )


def string_list_array(values: Sequence[Sequence[str | None] | None]) -> pa.Array:
    """``pa.array(values, pa.list_(pa.string()))`` without the pandas import (None is null)."""
    lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int32, count=len(values))
    offsets = np.zeros(len(values) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    items = string_array([item for v in values if v is not None for item in v])
    nulls = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    mask = numeric_array(nulls) if nulls.any() else None
    return pa.ListArray.from_arrays(numeric_array(offsets), items, type=pa.list_(pa.string()), mask=mask)


def as_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``arr.to_numpy(zero_copy_only=False)`` without the pandas import that ``to_numpy``
    makes: numbers are a read-only view of the array's buffer, booleans unpacked from bits.
    Arrays with nulls, or of other types, take ``to_numpy`` itself."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if arr.null_count or not (pa.types.is_boolean(t) or t in _NUMPY):
        return arr.to_numpy(zero_copy_only=False)
    n, data = len(arr), arr.buffers()[1]
    if pa.types.is_boolean(t):
        if not n:
            return np.zeros(0, dtype=bool)
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=arr.offset + n, bitorder="little")
        return bits[arr.offset:].view(bool)
    dtype = np.dtype(_NUMPY[t])
    if not n:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(data, dtype=dtype, count=n, offset=arr.offset * dtype.itemsize)


FALSE = literal(False, pa.bool_())
TRUE = literal(True, pa.bool_())

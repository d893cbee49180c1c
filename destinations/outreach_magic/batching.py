"""Cut a lazy stream of pre-serialized events into request bodies bounded by count and bytes.

Why bytes as well as count: events vary from a few hundred bytes to tens of kilobytes
(descriptions, tags), and the API answers 413 over its byte limit; cutting on both keeps
every request under both limits without measuring a body twice. Items are never parsed
again here: the body is ``[`` + the items joined by ``,`` + ``]``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Batch:
    """Items of one request, in the order they were pulled (``seq`` orders batches)."""

    seq: int
    keys: tuple[Any, ...]
    chunks: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.chunks)

    def body(self) -> bytes:
        return b"[" + b",".join(self.chunks) + b"]"

    def nbytes(self) -> int:
        return body_size(self.chunks)

    def halves(self) -> tuple[Batch, Batch]:
        mid = len(self.chunks) // 2
        return (
            Batch(self.seq, self.keys[:mid], self.chunks[:mid]),
            Batch(self.seq, self.keys[mid:], self.chunks[mid:]),
        )


def body_size(chunks: tuple[bytes, ...] | list[bytes]) -> int:
    """Size of ``[a,b,c]`` without building it."""
    return 2 + sum(len(c) for c in chunks) + max(0, len(chunks) - 1)


def batches(items: Iterable[tuple[Any, bytes]], *, max_items: int, max_bytes: int) -> Iterator[Batch]:
    """Yield batches of at most ``max_items`` items and ``max_bytes`` body bytes, lazily.

    An item larger than ``max_bytes`` on its own is sent alone: the server, not this
    client, decides whether it is too large (413), so its verdict lands in the outcomes.
    """
    keys: list[Any] = []
    chunks: list[bytes] = []
    size = 1  # "[" plus, per item, its bytes and one separator ("," or the closing "]")
    seq = 0
    for key, chunk in items:
        added = len(chunk) + 1
        if chunks and (len(chunks) >= max_items or size + added > max_bytes):
            yield Batch(seq, tuple(keys), tuple(chunks))
            seq += 1
            keys, chunks, size = [], [], 1
        if type(chunk) is not bytes:  # the fast path is exact bytes; accept other buffers
            if not isinstance(chunk, bytearray | memoryview):
                raise TypeError(f"items must be (key, bytes) pairs, got {type(chunk).__name__} for the payload")
            chunk = bytes(chunk)
        keys.append(key)
        chunks.append(chunk)
        size += added
    if chunks:
        yield Batch(seq, tuple(keys), tuple(chunks))

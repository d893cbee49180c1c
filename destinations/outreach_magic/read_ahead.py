"""Run an iterator in a thread of its own, a few items ahead of the code that consumes it.

Why: a sync has stretches where one thread alternates between producing data and handing
it on, while the second core idles: dlt's extract reads, maps and filters a batch of the
source, then writes it to the load file, then reads the next; the delivery loop sends a
chunk of events, then waits for DuckDB to write the next one's JSON. DuckDB, Arrow and the
Parquet writer release the GIL, so running the producing side in a thread lets the two
halves overlap. The queue is bounded (``depth`` items wait at most), so memory stays
bounded too, and closing the consumer stops the thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()


def read_ahead(
    items: Iterable[T], *, depth: int = 1, name: str = "outreach-magic-read-ahead"
) -> Generator[T, None, None]:
    """Yield ``items`` in order, produced by a thread that runs up to ``depth`` items ahead.

    An exception raised while producing is raised here, at the item it replaced. Closing
    this generator (or leaving a ``for`` loop over it early) stops the thread after the item
    it is producing, closes ``items`` in that thread (a generator's ``finally`` releases its
    cursor there) and waits for it: once this generator is closed, nothing runs ``items``.
    The thread starts at the first ``next()``, not before (:class:`ReadAhead`: at once).
    """
    ahead = ReadAhead(items, depth=depth, name=name)
    try:
        yield from ahead
    finally:
        ahead.close()


class ReadAhead(Iterator[T]):
    """:func:`read_ahead` with the thread started now, for a consumer that comes later.

    :meth:`close` stops the thread whether or not anything was consumed (a generator that
    never started would not run its ``finally``); it is called on exhaustion and on error.
    """

    def __init__(self, items: Iterable[T], *, depth: int = 1, name: str = "outreach-magic-read-ahead") -> None:
        source = iter(items)
        self._ready: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        ready, stop = self._ready, self._stop

        def put(ok: bool, item: object) -> bool:
            while not stop.is_set():
                try:
                    ready.put((ok, item), timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for item in source:
                    if not put(True, item):
                        return
                put(True, _END)
            except BaseException as exc:  # raised again in the consumer's thread
                put(False, exc)
            finally:
                close = getattr(source, "close", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        close()

        self._thread = threading.Thread(target=produce, name=name, daemon=True)
        self._thread.start()

    def __next__(self) -> T:
        if self._stop.is_set():
            raise StopIteration
        ok, item = self._ready.get()
        if not ok:
            self.close()
            assert isinstance(item, BaseException)
            raise item
        if item is _END:
            self.close()
            raise StopIteration
        return item  # type: ignore[return-value]

    def close(self) -> None:
        """Stop the thread (after the item it is producing) and wait for it."""
        self._stop.set()
        self._thread.join()

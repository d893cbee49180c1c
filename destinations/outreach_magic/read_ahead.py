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
from collections.abc import Generator, Iterable
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
    The thread starts at the first ``next()``, not before.
    """
    source = iter(items)
    ready: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

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

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = ready.get()
            if not ok:
                assert isinstance(item, BaseException)
                raise item
            if item is _END:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()

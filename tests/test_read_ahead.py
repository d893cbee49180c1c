"""read_ahead: items in order from a thread of their own, errors where they happened,
bounded lead, and nothing left running once the consumer closes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from destinations.outreach_magic.read_ahead import read_ahead


def test_items_arrive_in_order_produced_by_another_thread() -> None:
    producers: set[str] = set()

    def items() -> Iterator[int]:
        for i in range(1000):
            producers.add(threading.current_thread().name)
            yield i

    assert list(read_ahead(items(), depth=3, name="om-test-producer")) == list(range(1000))
    assert producers == {"om-test-producer"}


def test_an_error_while_producing_is_raised_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("row 3, column lead_email: broken")

    got: list[int] = []
    with pytest.raises(ValueError, match="row 3, column lead_email"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1, 2]


def test_the_producer_runs_at_most_depth_plus_one_items_ahead() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    stream = read_ahead(items(), depth=2)
    assert next(stream) == 0
    time.sleep(0.3)  # ample time for the thread to run as far as the queue lets it
    # item 0 consumed, items 1-2 queued, item 3 produced and waiting for room
    assert len(produced) <= 4
    stream.close()


def test_closing_early_stops_the_thread_and_closes_the_source_in_it() -> None:
    closed_in: list[str] = []

    def items() -> Iterator[int]:
        try:
            yield from range(10_000)
        finally:
            closed_in.append(threading.current_thread().name)

    before = {t.name for t in threading.enumerate()}
    stream = read_ahead(items(), depth=1, name="om-test-early")
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()
    assert closed_in == ["om-test-early"]  # released by the producer, before close() returned
    assert "om-test-early" not in {t.name for t in threading.enumerate()} - before


def test_no_thread_starts_until_the_first_item_is_asked_for() -> None:
    started: list[bool] = []

    def items() -> Iterator[int]:
        started.append(True)
        yield 1

    stream = read_ahead(items(), name="om-test-lazy")
    time.sleep(0.05)
    assert not started and "om-test-lazy" not in {t.name for t in threading.enumerate()}
    stream.close()
    assert not started


def test_a_started_read_ahead_produces_before_anyone_asks_and_close_stops_it_unconsumed() -> None:
    """ReadAhead starts its thread at once (the next slice's request bodies are written while
    the current one is still sent); closed before anything was consumed, it still stops the
    thread and closes the source there."""
    from destinations.outreach_magic.read_ahead import ReadAhead

    produced: list[int] = []
    closed_in: list[str] = []

    def items() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    ahead = ReadAhead(items(), depth=1, name="om-test-eager")
    deadline = time.monotonic() + 5
    while not produced and time.monotonic() < deadline:
        time.sleep(0.01)
    assert produced, "nothing was produced before the first next()"
    assert len(produced) <= 3  # one waiting in the queue, one being put, no more
    ahead.close()
    assert closed_in == ["om-test-eager"]
    assert "om-test-eager" not in {t.name for t in threading.enumerate()}
    assert list(ReadAhead(iter([1, 2, 3]), name="om-test-eager-2")) == [1, 2, 3]

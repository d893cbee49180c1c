"""The delivery client against httpx.MockTransport: no socket, no real sleeping.

Each test pins down one delivery rule of ``shared/DESIGN.md``; the handlers play the API
of ``shared/API-CONTRACT.md`` (result body, 401/413/429/503...).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from destinations.outreach_magic.batching import batches
from destinations.outreach_magic.client import USER_AGENT, DeliveryClient, DeliveryStats, ItemOutcome, Outcomes
from destinations.outreach_magic.exceptions import (
    ApiContractError,
    ApiUnavailableError,
    AuthenticationError,
    ConfigurationError,
    InsecureTransportError,
)

API_KEY = "sk_live_TOPSECRET_0123456789"
Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


def event(i: int, *, pad: int = 0, tag: str = "lead") -> bytes:
    doc: dict[str, Any] = {"event": "update_attributes", "lead_email": f"{tag}{i}@example.com"}
    if pad:
        doc["lead_linkedin_headline"] = "x" * pad
    return orjson.dumps(doc)


def items(n: int, **kw: Any) -> list[tuple[Any, bytes]]:
    return [(("row", i), event(i, **kw)) for i in range(n)]


def emails(request: httpx.Request) -> list[str]:
    return [doc["lead_email"] for doc in orjson.loads(request.content)]


def result(total: int, details: list[dict[str, Any]] | None = None) -> httpx.Response:
    details = details or []
    errors = {"count": len(details), "details": details}
    body = {"errors": errors, "success": total - len(details), "total": total}
    return httpx.Response(200, json=body)


async def ok(request: httpx.Request) -> httpx.Response:
    return result(len(orjson.loads(request.content)))


class Sleeps:
    """An injected ``sleep`` that returns at once and remembers what it was asked to wait."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def client(handler: Handler, sleeps: Sleeps | None = None, **kw: Any) -> DeliveryClient:
    kw.setdefault("jitter", None)
    kw.setdefault("base_url", "https://api.example.test")
    return DeliveryClient(
        api_key=API_KEY, transport=httpx.MockTransport(handler), sleep=sleeps or Sleeps(), **kw
    )


def deliver(c: DeliveryClient, data: Any) -> tuple[DeliveryStats, list[Outcomes]]:
    calls: list[Outcomes] = []
    stats = c.deliver(data, calls.append)
    return stats, calls


def by_key(calls: list[Outcomes]) -> dict[Any, ItemOutcome]:
    flat = [o for batch in calls for o in batch]
    result = {o.key: o for o in flat}
    assert len(result) == len(flat), "an item was reported twice"
    return result


# --- batching -------------------------------------------------------------------------


def test_batches_are_cut_by_item_count_and_every_item_is_applied_once() -> None:
    sizes: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(emails(request)))
        return await ok(request)

    stats, calls = deliver(client(handler, batch_size=100), items(250))
    assert sorted(sizes) == [50, 100, 100]
    outcomes = by_key(calls)
    assert set(outcomes) == {("row", i) for i in range(250)}
    assert {o.status for o in outcomes.values()} == {"applied"}
    assert (stats.requests, stats.applied, stats.items_sent, stats.batches) == (3, 250, 250, 3)


def test_batches_are_cut_by_bytes_below_the_limit() -> None:
    one = len(event(0, pad=300))
    limit = 2 + 3 * one + 2  # three items and their two commas fit, four do not
    bodies: list[bytes] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return await ok(request)

    stats, _ = deliver(client(handler, batch_size=1000, max_batch_bytes=limit), items(10, pad=300))
    assert all(len(b) <= limit for b in bodies)
    assert sorted(len(orjson.loads(b)) for b in bodies) == [1, 3, 3, 3]
    assert stats.applied == 10


def test_an_item_larger_than_the_byte_limit_is_sent_alone() -> None:
    sizes: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(emails(request)))
        return await ok(request)

    data = [("small-1", event(1)), ("big", event(2, pad=500)), ("small-2", event(3))]
    deliver(client(handler, max_batch_bytes=200), data)
    assert sorted(sizes) == [1, 1, 1]


def test_body_is_a_json_array_in_item_order_and_outcomes_keep_that_order() -> None:
    seen: dict[str, list[str]] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        got = emails(request)
        seen[got[0]] = got
        return await ok(request)

    _, calls = deliver(client(handler, batch_size=7, max_concurrency=3), items(30))
    assert len(calls) == 5
    for batch in calls:
        indexes = [o.key[1] for o in batch]
        assert indexes == sorted(indexes)
        assert seen[f"lead{indexes[0]}@example.com"] == [f"lead{i}@example.com" for i in indexes]


def test_headers_carry_key_json_content_type_and_user_agent() -> None:
    headers: list[httpx.Headers] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers)
        assert request.url.path == "/v1/events"
        return await ok(request)

    deliver(client(handler), items(1))
    assert headers[0]["x-api-key"] == API_KEY
    assert headers[0]["content-type"] == "application/json"
    assert headers[0]["user-agent"] == USER_AGENT and USER_AGENT.startswith("outreach-magic-connector/")
    assert "authorization" not in headers[0]


def test_items_are_pulled_lazily_with_a_bounded_number_of_batches_ahead() -> None:
    pulled = 0
    pulled_at_first_report: list[int] = []

    def endless() -> Iterator[tuple[Any, bytes]]:
        nonlocal pulled
        i = 0
        while True:
            pulled += 1
            yield i, event(i)
            i += 1

    def take(n: int) -> Iterator[tuple[Any, bytes]]:
        for _, item in zip(range(n), endless(), strict=False):
            yield item

    def on_outcomes(outcomes: Outcomes) -> None:
        if not pulled_at_first_report:
            pulled_at_first_report.append(pulled)

    c = client(ok, batch_size=10, max_concurrency=2)
    c.deliver(take(5_000), on_outcomes)
    # (concurrency + 1) batches handed over, plus the item that closed the last batch.
    assert pulled_at_first_report[0] <= (2 + 1) * 10 + 1


def test_progress_reports_cumulative_items_done() -> None:
    progress: list[int] = []
    c = client(ok, batch_size=10)
    c.deliver(items(35), lambda _: None, on_progress=progress.append)
    assert progress == sorted(progress) and progress[-1] == 35 and len(progress) == 4


# --- results --------------------------------------------------------------------------


def test_per_index_errors_map_back_to_the_rejected_items_with_the_servers_entries() -> None:
    entry = {"msg": "Value error: lead_email is not a valid email address", "type": "value_error", "loc": []}

    async def handler(request: httpx.Request) -> httpx.Response:
        got = emails(request)
        bad = [{"index": i, "error": [dict(entry, extra="ignored")]} for i, e in enumerate(got) if "bad" in e]
        return result(len(got), bad)

    data = [(f"k{i}", event(i, tag="bad" if i % 4 == 1 else "lead")) for i in range(20)]
    stats, calls = deliver(client(handler, batch_size=6), data)
    outcomes = by_key(calls)
    for i in range(20):
        o = outcomes[f"k{i}"]
        if i % 4 == 1:
            assert (o.status, o.errors, o.reason) == ("rejected", [entry], None)
        else:
            assert (o.status, o.errors) == ("applied", ())
    assert (stats.applied, stats.rejected, stats.failed) == (15, 5, 0)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>gateway</html>",
        b"[]",
        b'{"ok": true}',
        b'{"errors": {"count": 0, "details": []}, "success": 5, "total": 5}',  # wrong total (batch of 3)
        b'{"errors": {"count": 1, "details": [{"index": 7, "error": []}]}, "success": 2, "total": 3}',
    ],
)
def test_a_200_whose_body_is_not_the_result_object_is_retried(body: bytes) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, content=body) if calls == 1 else await ok(request)

    stats, outcomes = deliver(client(handler), items(3))
    assert calls == 2 and stats.retries == 1
    assert [o.status for o in outcomes[0]] == ["applied"] * 3


# --- retries --------------------------------------------------------------------------


def test_503_500_502_are_retried_until_success_and_503_honours_retry_after() -> None:
    answers = [
        httpx.Response(503, headers={"Retry-After": "7"}, json={"error": "unavailable"}),
        httpx.Response(500),
        httpx.Response(502),
    ]

    async def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0) if answers else await ok(request)

    sleeps = Sleeps()
    stats, calls = deliver(client(handler, sleeps, backoff_base=0.25), items(5))
    assert [o.status for o in calls[0]] == ["applied"] * 5
    assert (stats.requests, stats.retries) == (4, 3)
    assert sleeps.delays[0] >= 7
    assert sleeps.delays[1:] == [0.5, 1.0]  # exponential backoff (jitter off): 2nd and 3rd retry
    assert stats.status_counts == {"503": 1, "500": 1, "502": 1, "200": 1}
    assert stats.min_concurrency_limit == 2  # a 503 also asks us to slow down


def test_a_429_holds_back_the_other_batches_too() -> None:
    log: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        log.append("POST " + emails(request)[0])
        if len(log) == 1:
            return httpx.Response(429, headers={"Retry-After": "30"})
        return await ok(request)

    class LoggingSleeps(Sleeps):
        async def __call__(self, delay: float) -> None:
            log.append(f"sleep {delay:.0f}")

    deliver(client(handler, LoggingSleeps(), batch_size=1, max_concurrency=1), items(3))
    # the rate limit is per key: a batch that was not throttled waits out the Retry-After too
    second = log.index("POST lead1@example.com")
    assert log[second - 1] in ("sleep 30", "sleep 29")


def test_backoff_is_capped_and_jitter_stays_within_it() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500)

    sleeps = Sleeps()

    async def first_ok(request: httpx.Request) -> httpx.Response:
        return await ok(request)

    # one batch that always fails, one that succeeds so the run is not "unreachable"
    async def mixed(request: httpx.Request) -> httpx.Response:
        return await (first_ok(request) if "lead0@" in request.content.decode() else handler(request))

    c = client(mixed, sleeps, batch_size=1, max_concurrency=1, backoff_base=1.0, backoff_cap=5.0)
    deliver(c, items(2))
    assert sleeps.delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]

    sleeps = Sleeps()
    c = client(mixed, sleeps, batch_size=1, max_concurrency=1, backoff_cap=5.0, jitter=lambda d: d * 0.5)
    deliver(c, items(2))
    assert max(sleeps.delays) == 2.5


def test_exhausted_retries_fail_that_batch_only_while_other_batches_are_applied() -> None:
    tries: Counter[str] = Counter()

    async def handler(request: httpx.Request) -> httpx.Response:
        got = emails(request)
        if any("poison" in e for e in got):
            tries["poison"] += 1
            return httpx.Response(500, text="boom")
        return await ok(request)

    data = [(i, event(i, tag="poison" if 10 <= i < 20 else "lead")) for i in range(40)]
    stats, calls = deliver(client(handler, batch_size=10, max_attempts=3), data)
    outcomes = by_key(calls)
    assert tries["poison"] == 3
    for i in range(40):
        if 10 <= i < 20:
            assert outcomes[i].status == "failed"
            assert outcomes[i].reason == "retries exhausted after HTTP 500"
        else:
            assert outcomes[i].status == "applied"
    assert (stats.applied, stats.failed) == (30, 10)


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.ConnectTimeout("connect timed out"),
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset by peer"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),  # a lost response
    ],
)
def test_timeouts_resets_and_lost_responses_are_retried(error: Exception) -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise error
        return await ok(request)

    # a first batch answered normally, so the failures are not "API unreachable"
    stats, calls_ = deliver(client(handler, batch_size=3, max_concurrency=1), items(3))
    assert [o.status for o in calls_[0]] == ["applied"] * 3
    assert (stats.requests, stats.retries) == (3, 2)
    assert stats.status_counts[type(error).__name__] == 2


def test_failed_reason_names_the_transport_error_when_retries_run_out() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "lead0@" in request.content.decode():
            return await ok(request)
        raise httpx.ReadTimeout("slow")

    _, calls = deliver(client(handler, batch_size=1, max_concurrency=1, max_attempts=2), items(2))
    outcomes = by_key(calls)
    assert outcomes[("row", 0)].status == "applied"
    assert outcomes[("row", 1)].reason == "retries exhausted after ReadTimeout"


def test_429_honours_retry_after_halves_concurrency_and_recovers() -> None:
    in_flight = 0
    seen: list[int] = []  # requests in flight when each request arrived, in arrival order

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight
        in_flight += 1
        seen.append(in_flight)
        number = len(seen)
        try:
            await asyncio.sleep(0.01)
            if number <= 4:
                return httpx.Response(429, headers={"Retry-After": "3"}, json={"error": "Rate limit"})
            return await ok(request)
        finally:
            in_flight -= 1

    sleeps = Sleeps()
    stats, calls = deliver(client(handler, sleeps, batch_size=1, max_concurrency=4), items(80))
    assert len(by_key(calls)) == 80 and stats.applied == 80
    assert max(seen[:4]) == 4  # full concurrency before the throttle
    assert stats.throttled == 4 and stats.retries == 4
    assert sum(d >= 3 for d in sleeps.delays) >= 4  # each throttled batch waited Retry-After
    assert stats.min_concurrency_limit == 2  # halved once for one burst of 429s, not four times
    assert max(seen[4:8]) <= 2  # slowed down right after the throttle
    assert max(seen[-20:]) == 4  # and grew back to the configured concurrency
    assert stats.max_concurrency_seen == 4


def test_429_has_its_own_larger_budget_then_fails_the_batch() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        if "lead0@" in request.content.decode():
            return await ok(request)
        return httpx.Response(429, headers={"Retry-After": "1"})

    stats, calls = deliver(client(handler, batch_size=1, max_concurrency=1, max_attempts=2), items(2))
    assert by_key(calls)[("row", 1)].reason == "retries exhausted after HTTP 429"
    assert stats.throttled == 7  # 2 attempts x 4 = 8 answers, the 8th gives up
    assert stats.requests == 1 + 8


def test_413_splits_the_batch_down_to_the_single_item_that_is_too_large() -> None:
    sizes: list[int] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        got = emails(request)
        sizes.append(len(got))
        if len(got) > 2 or any("huge" in e for e in got):
            return httpx.Response(413, json={"error": "too large"})
        return result(len(got))

    data = [(i, event(i, tag="huge" if i == 5 else "lead")) for i in range(8)]
    stats, calls = deliver(client(handler, batch_size=8), data)
    assert len(calls) == 1  # still one report for the one batch
    assert [o.key for o in calls[0]] == list(range(8))
    statuses = {o.key: o.status for o in calls[0]}
    assert statuses == {i: "rejected" if i == 5 else "applied" for i in range(8)}
    assert calls[0][5].errors[0]["type"] == "payload_too_large"
    assert sizes[0] == 8 and 1 in sizes
    assert stats.splits >= 3 and stats.rejected == 1 and stats.applied == 7


# --- terminal answers -----------------------------------------------------------------


def test_401_raises_at_once_and_no_more_requests_are_made() -> None:
    requests = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        return httpx.Response(401, json={"error": "Invalid API key provided"})

    reported: list[Outcomes] = []
    with pytest.raises(AuthenticationError) as info:
        client(handler, batch_size=10, max_concurrency=1).deliver(items(100), reported.append)
    assert requests == 1 and reported == []
    assert API_KEY not in str(info.value)


def test_401_with_concurrency_stops_after_the_requests_already_in_flight() -> None:
    requests = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        await asyncio.sleep(0.005)
        return httpx.Response(401, json={"error": "Invalid API key provided"})

    reported: list[Outcomes] = []
    with pytest.raises(AuthenticationError):
        client(handler, batch_size=1, max_concurrency=4).deliver(items(200), reported.append)
    assert requests <= 4 and reported == []


@pytest.mark.parametrize("status", [400, 415, 404, 422])
def test_other_4xx_raise_api_contract_error_with_status_and_body(status: int) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"error": "body is not JSON"})

    with pytest.raises(ApiContractError) as info:
        deliver(client(handler), items(3))
    assert info.value.status == status
    assert "body is not JSON" in str(info.value)


def test_unreachable_api_raises_api_unavailable() -> None:
    requests = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        raise httpx.ConnectError("[Errno 111] Connection refused")

    reported: list[Outcomes] = []
    with pytest.raises(ApiUnavailableError) as info:
        client(handler, max_attempts=3, max_concurrency=1).deliver(items(500), reported.append)
    assert requests == 3 and reported == []
    assert "ConnectError" in str(info.value)


def test_a_closed_loopback_port_raises_api_unavailable() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = DeliveryClient(api_key=API_KEY, base_url=f"http://127.0.0.1:{port}", max_attempts=2, sleep=Sleeps())
    with pytest.raises(ApiUnavailableError):
        c.deliver(items(2), lambda _: None)


def test_failures_after_some_response_are_reported_per_item_not_raised() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return await ok(request)
        raise httpx.ConnectError("refused")

    stats, _ = deliver(client(handler, batch_size=1, max_concurrency=1, max_attempts=2), items(3))
    assert (stats.applied, stats.failed) == (1, 2)


# --- configuration and secrecy --------------------------------------------------------


@pytest.mark.parametrize("url", ["http://api.outreachmagic.io", "http://10.0.0.5:8787", "http://example.com/"])
def test_plain_http_to_a_remote_host_is_refused(url: str) -> None:
    with pytest.raises(InsecureTransportError) as info:
        DeliveryClient(api_key=API_KEY, base_url=url)
    assert API_KEY not in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8787", "http://127.5.6.7", "http://localhost:9000", "http://[::1]:8787"]
)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    DeliveryClient(api_key=API_KEY, base_url=url)


def test_plain_http_is_allowed_when_explicitly_asked() -> None:
    DeliveryClient(api_key=API_KEY, base_url="http://10.0.0.5:8787", allow_insecure_http=True)


@pytest.mark.parametrize(
    "kw",
    [
        {"batch_size": 0},
        {"batch_size": 1001},
        {"max_concurrency": 0},
        {"max_batch_bytes": 10},
        {"max_attempts": 0},
        {"timeout": 0},
        {"api_key": ""},
        {"api_key": "abc\ndef"},
        {"base_url": "ftp://api.outreachmagic.io"},
        {"base_url": "https://user:pw@api.outreachmagic.io"},
    ],
)
def test_invalid_settings_raise_configuration_error(kw: dict[str, Any]) -> None:
    kw = {"api_key": API_KEY, **kw}
    with pytest.raises(ConfigurationError):
        DeliveryClient(**kw)


def test_the_key_never_appears_in_repr_errors_or_outcomes() -> None:
    c = client(ok)
    assert API_KEY not in repr(c) and "***" in repr(c)

    async def echo(request: httpx.Request) -> httpx.Response:  # a server that echoes the key back
        return httpx.Response(400, text=f"bad request from key {request.headers['x-api-key']}")

    with pytest.raises(ApiContractError) as info:
        deliver(client(echo), items(1))
    assert API_KEY not in str(info.value) and API_KEY not in info.value.body and "***" in str(info.value)

    async def flaky(request: httpx.Request) -> httpx.Response:
        if "lead0@" in request.content.decode():
            return await ok(request)
        return httpx.Response(503, text=API_KEY)

    _, calls = deliver(client(flaky, batch_size=1, max_concurrency=1, max_attempts=2), items(2))
    assert all(API_KEY not in repr(o) for batch in calls for o in batch)


# --- threads and loops ----------------------------------------------------------------


def test_deliver_works_inside_a_running_event_loop_and_reports_in_the_callers_thread() -> None:
    threads: set[int] = set()

    async def orchestrator_task() -> DeliveryStats:
        # what Airflow/Dagster/Jupyter look like: a synchronous call made while a loop runs
        return client(ok, batch_size=5).deliver(items(23), lambda _: threads.add(threading.get_ident()))

    stats = asyncio.run(orchestrator_task())
    assert stats.applied == 23
    assert threads == {threading.get_ident()}


def test_deliver_leaves_an_event_loop_the_caller_set_but_did_not_start_alone() -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        client(ok).deliver(items(3), lambda _: None)
        assert asyncio.get_event_loop_policy().get_event_loop() is loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def test_inside_a_running_loop_a_401_still_raises_and_stops() -> None:
    requests = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        return httpx.Response(401, json={"error": "Invalid API key provided"})

    async def orchestrator_task() -> None:
        client(handler, batch_size=1, max_concurrency=1).deliver(items(50), lambda _: None)

    with pytest.raises(AuthenticationError):
        asyncio.run(orchestrator_task())
    assert requests == 1


def test_inside_a_running_loop_an_exception_in_on_outcomes_propagates() -> None:
    requests = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        return await ok(request)

    def boom(outcomes: Outcomes) -> None:
        raise RuntimeError("ledger is full")

    async def orchestrator_task() -> None:
        client(handler, batch_size=1, max_concurrency=2).deliver(items(1000), boom)

    with pytest.raises(RuntimeError, match="ledger is full"):
        asyncio.run(orchestrator_task())
    assert requests < 20


def test_an_exception_in_on_outcomes_stops_delivery_and_propagates() -> None:
    requests = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal requests
        requests += 1
        return await ok(request)

    def boom(outcomes: Outcomes) -> None:
        raise RuntimeError("ledger is full")

    with pytest.raises(RuntimeError, match="ledger is full"):
        client(handler, batch_size=1, max_concurrency=2).deliver(items(1000), boom)
    assert requests < 20


def test_a_client_can_deliver_twice() -> None:
    c = client(ok, batch_size=4)
    assert c.deliver(items(9), lambda _: None).applied == 9
    assert c.deliver(items(3), lambda _: None).applied == 3


def test_empty_input_makes_no_request() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    stats, calls = deliver(client(handler), [])
    assert (stats.requests, calls) == (0, [])


# --- the decision function on its own -------------------------------------------------


def _decide(answer: httpx.Response | BaseException, attempt: int = 1, throttles: int = 0, n: int = 5) -> Any:
    from destinations.outreach_magic.retry import RetryPolicy, decide

    policy = RetryPolicy(max_attempts=3, backoff_base=1.0, backoff_cap=10.0, jitter=None)
    return decide(answer, attempt=attempt, throttles=throttles, batch_len=n, policy=policy)


@pytest.mark.parametrize(
    ("answer", "kw", "action", "delay"),
    [
        (httpx.Response(200), {}, "accept", 0.0),
        (httpx.Response(401), {}, "auth_error", 0.0),
        (httpx.Response(400), {}, "contract_error", 0.0),
        (httpx.Response(301), {}, "contract_error", 0.0),
        (httpx.Response(413), {}, "split", 0.0),
        (httpx.Response(413), {"n": 1}, "reject_item", 0.0),
        (httpx.Response(429, headers={"Retry-After": "5"}), {"throttles": 1}, "throttle", 5.0),
        (httpx.Response(429), {"throttles": 12}, "give_up", 0.0),
        (httpx.Response(503, headers={"Retry-After": "4"}), {}, "throttle", 4.0),
        (httpx.Response(503), {"attempt": 2}, "throttle", 2.0),
        (httpx.Response(500), {"attempt": 2}, "retry", 2.0),
        (httpx.Response(408), {}, "retry", 1.0),
        (httpx.Response(502), {"attempt": 3}, "give_up", 0.0),
        (httpx.ReadTimeout("t"), {}, "retry", 1.0),
        (httpx.ConnectError("c"), {"attempt": 3}, "give_up", 0.0),
    ],
)
def test_decide_maps_every_answer_to_one_action(
    answer: Any, kw: dict[str, Any], action: str, delay: float
) -> None:
    decision = _decide(answer, **kw)
    assert (decision.action.value, decision.delay) == (action, delay)


def test_decide_reraises_errors_that_are_bugs_not_weather() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        _decide(httpx.UnsupportedProtocol("ftp"))


def test_retry_after_accepts_seconds_and_http_dates_and_is_capped() -> None:
    from destinations.outreach_magic.retry import MAX_RETRY_AFTER, parse_retry_after

    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=40.0) == 60.0
    assert parse_retry_after("999999") == MAX_RETRY_AFTER
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


# --- batching as a property -----------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 150), max_size=60),
    max_items=st.integers(1, 12),
    max_bytes=st.integers(64, 500),
)
def test_batches_keep_order_respect_both_limits_and_are_as_full_as_allowed(
    sizes: list[int], max_items: int, max_bytes: int
) -> None:
    data = [(i, b"x" * n) for i, n in enumerate(sizes)]
    cut = list(batches(data, max_items=max_items, max_bytes=max_bytes))
    assert [k for b in cut for k in b.keys] == list(range(len(sizes)))
    for b in cut:
        assert len(b.body()) == b.nbytes()
        assert len(b) <= max_items
        assert len(b) == 1 or b.nbytes() <= max_bytes  # only a lone oversized item may exceed
    for b, after in itertools.pairwise(cut):
        assert len(b) == max_items or b.nbytes() + len(after.chunks[0]) + 1 > max_bytes


def test_a_payload_that_is_not_bytes_is_refused() -> None:
    with pytest.raises(TypeError):
        list(batches([(1, {"event": "update_attributes"})], max_items=10, max_bytes=1000))  # type: ignore[list-item]

"""Each fault mode, observed the way a client sees it: over real loopback HTTP with httpx."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.sandbox_helpers import sandbox_leads, sandbox_stats

KEY = "test-key"


def ev(i: int) -> dict[str, Any]:
    return {"event": "update_attributes", "lead_email": f"user{i}@example.com"}


def post(client: httpx.Client, url: str, body: Any) -> httpx.Response:
    return client.post(f"{url}/v1/events", json=body, headers={"x-api-key": KEY})


def test_latency_delays_events_but_not_inspection(sandbox_factory: Any) -> None:
    sb = sandbox_factory(latency_ms=300)
    with httpx.Client(timeout=10) as c:
        post(c, sb.url, ev(0))  # warm the connection
        t0 = time.perf_counter()
        assert post(c, sb.url, ev(1)).status_code == 200
        slow = time.perf_counter() - t0
        t0 = time.perf_counter()
        c.get(f"{sb.url}/_sandbox/stats", headers={"x-api-key": KEY})
        fast = time.perf_counter() - t0
    assert slow >= 0.3 and fast < 0.25


def test_latency_is_not_blocking(sandbox_factory: Any) -> None:
    sb = sandbox_factory(latency_ms=400)
    import concurrent.futures as cf

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(4) as pool:
        codes = list(
            pool.map(
                lambda i: (
                    httpx.post(f"{sb.url}/v1/events", json=ev(i), headers={"x-api-key": KEY}, timeout=10).status_code
                ),
                range(4),
            )
        )
    assert codes == [200] * 4 and time.perf_counter() - t0 < 1.5  # 4 x 0.4 s would be 1.6 s serially


def test_latency_is_the_response_time_not_added_to_the_work(sandbox_factory: Any) -> None:
    """The answer leaves ``latency`` after the request arrived; the work is done meanwhile.

    So "concurrency x batch / latency" bounds a client, whatever the sandbox's own
    processing costs: the upsert is visible before the answer, which still takes the latency.
    """
    import concurrent.futures as cf

    sb = sandbox_factory(latency_ms=600)
    with cf.ThreadPoolExecutor(1) as pool:
        t0 = time.perf_counter()
        pending = pool.submit(
            lambda: httpx.post(f"{sb.url}/v1/events", json=ev(7), headers={"x-api-key": KEY}, timeout=10)
        )
        time.sleep(0.3)
        seen_early = [lead["identifiers"] for lead in sandbox_leads(sb.url, KEY)]
        assert not pending.done()
        assert pending.result().status_code == 200
        took = time.perf_counter() - t0
    assert seen_early and 0.6 <= took < 1.0, (seen_early, took)


def test_rate_limit_answers_429_with_retry_after_and_applies_nothing(sandbox_factory: Any) -> None:
    sb = sandbox_factory(rate_limit=2)
    with httpx.Client(timeout=10) as c:
        responses = [post(c, sb.url, ev(i)) for i in range(5)]
        codes = [r.status_code for r in responses]
        assert codes[:2] == [200, 200] and 429 in codes[2:]
        limited = [r for r in responses if r.status_code == 429]
        for r in limited:
            assert r.json() == {"error": "Rate limit exceeded"}
            assert int(r.headers["retry-after"]) >= 1
        # inspection is never rate limited
        for _ in range(5):
            assert c.get(f"{sb.url}/_sandbox/stats", headers={"x-api-key": KEY}).status_code == 200
        # the other tenant has its own bucket
        assert c.post(f"{sb.url}/v1/events", json=ev(9), headers={"x-api-key": "other-key"}).status_code == 200
        time.sleep(1.1)
        assert post(c, sb.url, ev(100)).status_code == 200  # tokens come back
    applied = sum(1 for r in responses if r.status_code == 200) + 1
    assert len(sandbox_leads(sb.url, KEY)) == applied
    assert sandbox_stats(sb.url, KEY)["status_counts"]["429"] == len(limited)


def test_error_rate_answers_5xx_and_applies_nothing(sandbox_factory: Any) -> None:
    sb = sandbox_factory(error_rate=1.0, seed=3)
    with httpx.Client(timeout=10) as c:
        responses = [post(c, sb.url, [ev(i), ev(i + 100)]) for i in range(30)]
    codes = {r.status_code for r in responses}
    assert codes == {500, 502, 503}
    for r in responses:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1"
    assert sandbox_leads(sb.url, KEY) == []
    st = sandbox_stats(sb.url, KEY)
    assert st["events_received"] == 60 and st["events_applied"] == 0 and st["requests"] == 30
    assert sum(st["status_counts"][k] for k in ("500", "502", "503")) == 30


def outcomes(sb: Any, n: int) -> list[str]:
    seen = []
    with httpx.Client(timeout=10) as c:
        for i in range(n):
            try:
                seen.append(str(post(c, sb.url, ev(i)).status_code))
            except httpx.TransportError as exc:
                seen.append(type(exc).__name__)
    return seen


def test_seed_makes_faults_repeatable_and_rates_hold(sandbox_factory: Any) -> None:
    settings = {"error_rate": 0.3, "drop_rate": 0.2, "lost_response_rate": 0.2, "seed": 11}
    first = outcomes(sandbox_factory(**settings), 60)
    second = outcomes(sandbox_factory(**settings), 60)
    assert first == second
    assert len(set(first)) >= 4  # 200, some 5xx, some transport errors
    other = outcomes(sandbox_factory(**{**settings, "seed": 12}), 60)
    assert other != first


def test_drop_closes_the_connection_and_applies_nothing(sandbox_factory: Any) -> None:
    sb = sandbox_factory(drop_rate=1.0)
    with httpx.Client(timeout=10) as c:
        for i in range(3):
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                post(c, sb.url, ev(i))
    assert sandbox_leads(sb.url, KEY) == []  # inspection is never dropped
    st = sandbox_stats(sb.url, KEY)
    assert st["status_counts"]["drop"] == 3 and st["events_received"] == 3 and st["events_applied"] == 0


def test_lost_response_applies_then_closes(sandbox_factory: Any) -> None:
    sb = sandbox_factory(lost_response_rate=1.0)
    with httpx.Client(timeout=10) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            post(c, sb.url, [ev(1), ev(2)])
        # the client retries: idempotent, still two leads
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            post(c, sb.url, [ev(1), ev(2)])
    assert len(sandbox_leads(sb.url, KEY)) == 2
    st = sandbox_stats(sb.url, KEY)
    assert st["status_counts"]["lost"] == 2 and st["events_applied"] == 4 and st["status_counts"]["200"] == 0


def test_faults_apply_only_after_the_contract_checks(sandbox_factory: Any) -> None:
    sb = sandbox_factory(error_rate=1.0)
    with httpx.Client(timeout=10) as c:
        assert c.post(f"{sb.url}/v1/events", json=ev(1), headers={"x-api-key": "nope"}).status_code == 401
        r = c.post(f"{sb.url}/v1/events", content=b"[]", headers={"x-api-key": KEY, "content-type": "application/json"})
        assert r.status_code == 400


def test_invalid_fault_settings_are_refused() -> None:
    from sandbox import FaultSettings

    with pytest.raises(ValueError):
        FaultSettings(error_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError):
        FaultSettings(error_rate=-0.1)

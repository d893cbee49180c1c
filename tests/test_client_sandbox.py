"""The delivery client against the real sandbox over loopback HTTP.

The unit tests (``test_client.py``) pin each rule with a mock transport; these check that
the rules add up on a real socket: uvicorn closing connections mid-answer, a real token
bucket sending 429s, responses lost after the server applied the batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from destinations.outreach_magic.client import DeliveryClient, DeliveryStats, ItemOutcome, Outcomes
from destinations.outreach_magic.exceptions import ApiUnavailableError, AuthenticationError
from sandbox import RunningSandbox
from tests.sandbox_helpers import sandbox_companies, sandbox_leads, sandbox_stats

KEY = "test-key"
WORKSPACE = "0123456789abcdef01234567"


def make_events(n: int) -> list[tuple[Any, bytes]]:
    """``n`` events on distinct leads, some sharing companies, every 50th one invalid.

    Company attributes depend only on the domain, so the stored state does not depend on
    the order in which concurrent (and retried) batches are applied.
    """
    out: list[tuple[Any, bytes]] = []
    for i in range(n):
        domain = f"company{i % 97}.example.com"
        doc: dict[str, Any] = {
            "event": "update_attributes",
            "platform": "clay",
            "lead_email": f"Lead.{i}@example.com",
            "lead_first_name": f"First{i}",
            "lead_job_title": "VP Sales" if i % 3 else "CTO",
            "company_domain": domain,
            "company_name": f"Company {i % 97}",
            "workspace_id": WORKSPACE,
            "tags": ["a", f"t{i % 5}"],
        }
        if i % 50 == 49:
            doc["lead_email"] = f"not-an-email-{i}"  # the API rejects this item
        out.append((i, orjson.dumps(doc)))
    return out


def _canonical(
    records: list[dict[str, Any]], id_field: str, companies: dict[str, str] | None = None
) -> list[str]:
    """Records without the server-assigned ids, so two runs' stores can be compared."""
    rows = []
    for record in records:
        record = dict(record)
        record.pop(id_field)
        if companies is not None:
            record["unified_company_id"] = companies.get(record.get("unified_company_id") or "")
        rows.append(json.dumps(record, sort_keys=True))
    return sorted(rows)


def store_of(sb: RunningSandbox) -> tuple[list[str], list[str]]:
    companies = sandbox_companies(sb.url, KEY)
    by_id = {c["unified_company_id"]: json.dumps(c["identifiers"], sort_keys=True) for c in companies}
    return (
        _canonical(sandbox_leads(sb.url, KEY), "unified_lead_id", by_id),
        _canonical(companies, "unified_company_id"),
    )


def run(
    sb: RunningSandbox, events: list[tuple[Any, bytes]], **kw: Any
) -> tuple[DeliveryStats, dict[Any, ItemOutcome]]:
    kw.setdefault("backoff_base", 0.02)
    kw.setdefault("backoff_cap", 0.5)
    client = DeliveryClient(api_key=KEY, base_url=sb.url, **kw)
    outcomes: dict[Any, ItemOutcome] = {}

    def collect(batch: Outcomes) -> None:
        for outcome in batch:
            assert outcome.key not in outcomes, "an item was reported twice"
            outcomes[outcome.key] = outcome

    return client.deliver(events, collect), outcomes


def test_a_faulty_sandbox_ends_up_storing_exactly_what_a_fault_free_one_stores(
    sandbox_server: RunningSandbox, sandbox_factory: Callable[..., RunningSandbox]
) -> None:
    events = make_events(5_000)
    invalid = {i for i in range(5_000) if i % 50 == 49}

    clean_stats, clean = run(sandbox_server, events, batch_size=100, max_concurrency=4)
    assert clean_stats.retries == 0 and clean_stats.requests == 50

    faulty = sandbox_factory(
        error_rate=0.1, drop_rate=0.02, lost_response_rate=0.02, rate_limit=15, seed=11
    )
    stats, outcomes = run(faulty, events, batch_size=100, max_concurrency=8, max_attempts=12)

    for result in (clean, outcomes):
        assert set(result) == set(range(5_000))
        assert {k for k, o in result.items() if o.status == "rejected"} == invalid
        assert all(o.status == "applied" for k, o in result.items() if k not in invalid)
    assert outcomes[49].errors[0]["msg"] == "Value error: lead_email is not a valid email address"
    assert (stats.applied, stats.rejected, stats.failed) == (4_900, 100, 0)

    clean_leads, clean_companies = store_of(sandbox_server)
    leads, companies = store_of(faulty)
    assert len(leads) == len(clean_leads) == 4_900 and len(companies) == len(clean_companies) == 97
    assert leads == clean_leads and companies == clean_companies

    server = sandbox_stats(faulty.url, KEY)["status_counts"]
    print(f"\nfaulty run: {stats}\nsandbox status counts: {server}")
    assert stats.retries > 0 and stats.requests > 50
    # every fault kind happened, and the client saw each one it could see
    assert server.get("lost", 0) > 0 and server.get("drop", 0) > 0
    assert server.get("429", 0) > 0 and stats.throttled == server["429"]
    assert sum(server.get(code, 0) for code in ("500", "502", "503")) > 0


def test_a_real_401_stops_the_run(sandbox_server: RunningSandbox) -> None:
    client = DeliveryClient(api_key="wrong-key", base_url=sandbox_server.url)
    reported: list[Outcomes] = []
    with pytest.raises(AuthenticationError):
        client.deliver(make_events(300), reported.append)
    assert reported == []
    assert sandbox_leads(sandbox_server.url, KEY) == []


def test_real_413s_split_batches_and_reject_only_the_oversized_item(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    sb = sandbox_factory(max_items=10, max_bytes=2_000)
    events = make_events(60)
    big = orjson.loads(events[7][1])
    big["company_description"] = "x" * 3_000
    events[7] = (7, orjson.dumps(big))

    stats, outcomes = run(sb, events, batch_size=40)
    assert outcomes[7].status == "rejected" and outcomes[7].errors[0]["type"] == "payload_too_large"
    assert outcomes[49].status == "rejected"  # the invalid email, judged by the API
    assert {k for k, o in outcomes.items() if o.status == "applied"} == set(range(60)) - {7, 49}
    assert stats.splits > 0
    assert len(sandbox_leads(sb.url, KEY)) == 58


def test_a_server_slower_than_the_timeout_is_retried_then_reported_unreachable(
    sandbox_factory: Callable[..., RunningSandbox],
) -> None:
    sb = sandbox_factory(latency_ms=400)
    client = DeliveryClient(api_key=KEY, base_url=sb.url, timeout=0.1, max_attempts=2, backoff_base=0.01)
    with pytest.raises(ApiUnavailableError, match=r"after 2 attempts \(last: ReadTimeout\)"):
        client.deliver(make_events(5), lambda _: None)


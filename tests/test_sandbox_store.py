"""The store's bulk path ends in exactly the state the one-by-one reference path reaches.

``Tenant.apply_many`` applies runs of similar events with a few ``dict.update`` calls per
field; ``Tenant.apply`` is the event-by-event reference. Random batches built from small
pools of identifiers (so that keys repeat within runs, across runs, in other letter case,
and link records through a second identifier) must leave both tenants with the same
leads and companies, ids included, and the same per-index failures.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from destinations.outreach_magic.contract import Verdicts, fast_verdicts, validate_item
from sandbox.store import _BULK_MIN, Tenant

WS = ["65f1a2b3c4d5e6f7890a1b2c", "75f1a2b3c4d5e6f7890a1b2c"]
SHAPES: list[tuple[str, ...]] = [
    ("lead_email", "lead_first_name", "company_domain", "company_name", "workspace_id", "icp"),
    ("lead_email", "lead_linkedin_url", "lead_job_title", "company_domain"),
    ("lead_linkedin_url", "lead_last_name", "sender", "linkedin_connection_level"),
    ("company_domain", "company_linkedin_url", "company_industry", "workspace_id", "lead_status"),
    ("company_domain", "company_name"),
    ("lead_email", "lead_first_name"),
    ("lead_email", "lead_linkedin_url", "lead_sales_navigator_url", "company_domain", "company_linkedin_url"),
]


def _value(rng: random.Random, field: str, pool: int) -> Any:
    n = rng.randrange(pool)
    if field == "lead_email":
        email = f"p{n}@example.com"
        return email.upper() if rng.random() < 0.2 else email
    if field == "lead_linkedin_url":
        return f"https://www.linkedin.com/in/p{n}/"
    if field == "lead_sales_navigator_url":
        return f"https://www.linkedin.com/sales/lead/p{n}"
    if field == "sender":
        return f"https://www.linkedin.com/in/sender{n % 3}/"
    if field == "linkedin_connection_level":
        return rng.choice(["1", "2", "3"])
    if field == "company_domain":
        return f"c{n % (pool // 3 + 1)}.example.com"
    if field == "company_linkedin_url":
        return f"https://www.linkedin.com/company/c{n}/"
    if field == "workspace_id":
        return rng.choice(WS)
    return f"{field}-{rng.randrange(5)}"


def _batch(rng: random.Random, tenant: Tenant, pool: int) -> list[Any]:
    items: list[Any] = []
    single = rng.choice(SHAPES) if rng.random() < 0.3 else None  # one key set: the columns hand-over
    while len(items) < rng.randrange(1, 120):
        shape = single or rng.choice(SHAPES)
        for _ in range(rng.choice([1, 3, _BULK_MIN, 20, 40])):
            ev: dict[str, Any] = {"event": "update_attributes", "platform": "clay"}
            ev.update({f: _value(rng, f, pool) for f in shape})
            items.append(ev)
    # now and then something the bulk path must leave to the reference path
    for _ in range(rng.randrange(3)):
        i = rng.randrange(len(items))
        kind = rng.randrange(4)
        if kind == 0 and tenant.leads.n:
            uid = tenant.leads.uid(rng.randrange(tenant.leads.n))
            items[i] = {"event": "update_attributes", "unified_lead_id": uid, "lead_job_title": "by id"}
        elif kind == 1:
            items[i] = {**items[i], "lead_first_name": None} if "lead_email" in items[i] else items[i]
        elif kind == 2:
            items[i] = {"event": "update_attributes", "lead_email": "not an email"}
        else:
            items[i] = {"event": "update_attributes", "unified_company_id": "0" * 24}
    return items


def _verdicts(items: list[Any]) -> Verdicts:
    """What the server hands the store: the fast verdicts completed by the model."""
    verdicts = fast_verdicts(items, from_json=True)
    valid = [v or not validate_item(item)[1] for v, item in zip(verdicts.valid, items, strict=True)]
    return verdicts._replace(valid=valid)


@pytest.mark.parametrize("seed", range(12))
def test_bulk_and_one_by_one_end_in_the_same_store(seed: int) -> None:
    rng = random.Random(seed)
    pool = rng.choice([10, 40, 400])
    bulk, reference = Tenant("t", random.Random(seed)), Tenant("t", random.Random(seed))
    bulk_runs = handed_over = 0
    run_in_bulk = bulk._apply_run

    def counting(plan: Any, run: Any) -> bool:
        nonlocal bulk_runs
        done = run_in_bulk(plan, run)
        bulk_runs += done
        return done

    bulk._apply_run = counting  # type: ignore[method-assign]
    for _ in range(25):
        items = _batch(rng, reference, pool)
        verdicts = _verdicts(items)
        valid = verdicts.valid
        failed = bulk.apply_many(items, verdicts)
        handed_over += verdicts.columns is not None
        expected = []
        for i, item in enumerate(items):
            if valid[i] and (message := reference.apply(item)) is not None:
                expected.append((i, message))
        assert failed == expected
    assert bulk_runs > 10, "the bulk path was hardly exercised"
    assert handed_over, "no batch handed its columns over"
    assert list(bulk.lead_docs()) == list(reference.lead_docs())
    assert list(bulk.company_docs()) == list(reference.company_docs())
    assert bulk.leads.n >= 5 and bulk.companies.n >= 2


def test_a_second_identifier_repeated_in_a_run_goes_event_by_event() -> None:
    """Two events of one run share a LinkedIn URL but not an email: the second attaches its
    email to the record the first created (one lead, two emails), as one by one would."""
    tenant = Tenant("t", random.Random(1))
    run = [{"event": "update_attributes", "lead_email": f"e{i}@x.com", "lead_linkedin_url":
            f"https://www.linkedin.com/in/p{i}/"} for i in range(_BULK_MIN)]
    run[-1]["lead_linkedin_url"] = run[0]["lead_linkedin_url"]
    verdicts = fast_verdicts(run)
    assert verdicts.plain and all(verdicts.valid)
    assert tenant.apply_many(run, verdicts) == []
    docs = list(tenant.lead_docs())
    assert len(docs) == _BULK_MIN - 1
    assert docs[0]["identifiers"]["lead_email"] == ["e0@x.com", f"e{_BULK_MIN - 1}@x.com"]

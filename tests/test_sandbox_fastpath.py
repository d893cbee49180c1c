"""The contract's fast path never accepts what the pydantic model rejects.

``contract.passes_fast_path`` lets certainly-valid items skip the model (for the
sandbox's throughput); ``item_errors`` must still give exactly the model's verdicts.
Hypothesis generates events near every rule's edge: right and wrong types, empty and
over-long strings, each format's near misses, missing ids, unknown keys, nulls.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from destinations.outreach_magic import settings as s
from destinations.outreach_magic.contract import item_errors, passes_fast_path, passes_fast_path_many, validate_item

GOOD = {
    "workspace_id": "65f1a2b3c4d5e6f7890a1b2c",
    "unified_lead_id": "65f1a2b3c4d5e6f7890a1d3e",
    "unified_company_id": "65f1a2b3c4d5e6f7890a1e4f",
    "lead_email": "a.b@example.com",
    "lead_linkedin_url": "https://www.linkedin.com/in/jane/",
    "sender": "https://linkedin.com/in/s",
    "lead_sales_navigator_url": "https://www.linkedin.com/sales/lead/X",
    "company_domain": "example.co",
    "company_linkedin_url": "https://www.linkedin.com/company/x/",
    "company_employee_count": "12",
    "linkedin_connection_level": "2",
}
NEAR_MISSES = [
    "",
    " ",
    "x",
    "a@b",
    "a b@c.d",
    "65F1A2B3C4D5E6F7890A1B2C",
    "123\n",
    "https://linkedin.com/in/a/b",
    "example.co:80",
    "4",
    "1,2",
    "http://x.linkedin.com/company/a",
    "x" * 10_001,
    "x" * 10_000,
]


class Str(str):
    """A ``str`` subclass: the fast path must leave it to the model."""


def values(field: str) -> st.SearchStrategy[Any]:
    good = GOOD.get(field, "value")
    return st.one_of(
        st.just(good),
        st.just(good),
        st.none(),
        st.sampled_from(NEAR_MISSES),
        st.text(max_size=30),
        st.integers(),
        st.just(Str(good)),
        st.lists(st.just(good), max_size=2),
        st.just("update_attributes"),
    )


FIELDS = [f for f in s.ALL_FIELDS if f != "event"]


VALID_BASES: list[dict[str, Any]] = [
    {"event": "update_attributes", "lead_email": "a@example.com"},
    {
        "event": "update_attributes",
        "company_domain": "example.co",
        "company_name": "E",
        "workspace_id": GOOD["workspace_id"],
        "tags": ["t"],
    },
    {"event": "update_attributes", **GOOD, "lead_first_name": "J", "company_name": "C", "icp": "I", "tags": []},
    {
        "event": "update_attributes",
        "lead_linkedin_id": "li",
        "sender": GOOD["sender"],
        "linkedin_connection_level": "3",
    },
    {"event": "update_attributes", "unified_company_id": GOOD["unified_company_id"], "company_industry": "S"},
]
MUTABLE = [*s.ALL_FIELDS, "lead_colour"]


@st.composite
def events(draw: st.DrawFn) -> Any:
    """A valid event with 0 to 3 mutations (a field set, nulled or removed), so about half stay valid."""
    item: dict[Any, Any] = dict(draw(st.sampled_from(VALID_BASES)))
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(MUTABLE))
        action = draw(st.integers(0, 4))
        if action == 0:
            item.pop(field, None)
        elif action == 1:
            item[field] = None
        elif field == "tags" and action == 2:
            item[field] = draw(st.lists(st.one_of(st.sampled_from(["t", "", "x" * 10_001]), st.integers()), max_size=3))
        else:
            item[field] = draw(values(field))
    if draw(st.integers(0, 40)) == 0:
        return draw(st.sampled_from([[item], "x", 1, None]))
    return item


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events())
def test_fast_path_accepts_only_what_the_model_accepts(item: Any) -> None:
    model, errors = validate_item(item)
    if passes_fast_path(item):
        assert model is not None and errors == []
    assert item_errors(item) == errors


def test_fast_path_agrees_with_the_model_over_many_mutated_events() -> None:
    """A seeded sweep wider than hypothesis's budget: 20,000 events, both verdicts counted."""
    rng = random.Random(20261126)
    pool: list[Any] = [*NEAR_MISSES, *GOOD.values(), None, 1, 1.5, True, ["t"], [1], {}, "value", Str("a@b.co")]
    agree_valid = agree_invalid = 0
    for _ in range(20_000):
        item: dict[Any, Any] = dict(rng.choice(VALID_BASES))
        for _ in range(rng.randint(0, 3)):
            field = rng.choice(MUTABLE)
            if rng.random() < 0.2:
                item.pop(field, None)
            else:
                item[field] = rng.choice(pool)
        model, errors = validate_item(item)
        fast = passes_fast_path(item)
        assert not fast or model is not None, item
        assert item_errors(item) == errors
        if fast:
            agree_valid += 1
        elif model is None:
            agree_invalid += 1
    # the sweep has teeth only if both verdicts are common
    assert agree_valid > 3_000 and agree_invalid > 3_000


def test_fast_path_takes_the_common_valid_events() -> None:
    """Otherwise the shortcut would silently stop paying off."""
    assert passes_fast_path({"event": "update_attributes", **GOOD, "tags": ["a"], "icp": "x"})
    assert passes_fast_path({"event": "update_attributes", "lead_email": "a@b.co", "lead_first_name": None})
    assert not passes_fast_path({"event": "update_attributes", "lead_email": Str("a@b.co")})


def test_batch_fast_path_equals_the_per_item_one() -> None:
    """Homogeneous batches take the grouped checks; one bad event must not pass with the group."""
    rng = random.Random(7)
    base = {"event": "update_attributes", **GOOD, "lead_first_name": "J", "company_name": "C", "icp": "I"}
    for _ in range(300):
        batch: list[Any] = [dict(base, lead_email=f"u{i}@example.com") for i in range(rng.randint(1, 40))]
        for _ in range(rng.randint(0, 2)):  # plant a near miss (or a valid oddity) anywhere
            i = rng.randrange(len(batch))
            field = rng.choice([*GOOD, "event", "lead_first_name"])
            batch[i] = dict(batch[i], **{field: rng.choice([*NEAR_MISSES, "a\nb", 1, Str("x"), GOOD.get(field, "v")])})
        if rng.random() < 0.1:
            batch.append(rng.choice([1, None, {"event": "update_attributes", "lead_email": "a@b.co"}]))
        expected = [passes_fast_path(item) for item in batch]
        assert passes_fast_path_many(batch) == expected
        for item, fast in zip(batch, expected, strict=True):
            assert not fast or validate_item(item)[0] is not None


def test_values_with_newlines_cannot_shift_lines_in_the_grouped_check() -> None:
    good = {"event": "update_attributes", "lead_email": "a@example.com"}
    # "x@y.co\nz@w.co" is one invalid value that looks like two valid lines, which would
    # make up for the invalid "bad" if the grouped check only counted matching lines
    two_lines = {"event": "update_attributes", "lead_email": "x@y.co\nz@w.co"}
    bad = {"event": "update_attributes", "lead_email": "bad"}
    batch = [dict(good) for _ in range(8)] + [two_lines, bad]
    assert passes_fast_path_many(batch) == [True] * 8 + [False, False]
    assert item_errors(two_lines) and item_errors(bad)


_SEPARATORS = ["", " ", "\n", "\t", "\x1c", "\xa0", "\u2028", "@", ".", "/", ":", "?", "#", "-", "é", "K"]


def test_column_quick_patterns_imply_the_contract_patterns() -> None:
    """The grouped check's ASCII patterns are sufficient conditions: whatever line they
    accept, the contract's own regex accepts (else the group check would let bad values in;
    a "\n" inside a value is the newline count's business, see the test above). Every field's
    good value with each separator inserted at each position, after each prefix."""
    import re

    from destinations.outreach_magic.contract import _FORMATS, _QUICK_LINE

    prefixes = ["", "https://www.linkedin.com/in/", "https://www.linkedin.com/company/", "x@", "a."]
    accepted = 0
    for field in sorted(GOOD.keys() - {"linkedin_connection_level"}):
        good = GOOD[field]
        for prefix in prefixes:
            for cut in range(len(good) + 1):
                for insert in _SEPARATORS:
                    value = prefix + good[:cut] + insert + good[cut:]
                    if re.fullmatch(_QUICK_LINE[field], value) is not None:
                        accepted += 1
                        assert _FORMATS[field][0].match(value), (field, value)
        assert re.fullmatch(_QUICK_LINE[field], good) is not None or field == "sender", (field, good)
    assert accepted > 500  # the quick forms do accept most well-formed values

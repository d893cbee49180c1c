"""Property tests: the contract model answers arbitrary JSON with verdicts, never with a crash.

The sandbox and the staging step both feed untrusted values to ``contract.py``; any
exception other than pydantic's ``ValidationError`` would turn one bad row (or one bad
request body) into a failed run or a 500. Values are drawn from all of JSON, and also
from event-shaped objects (contract keys with hostile values), which reach much deeper
into the validators than random dicts do.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from destinations.outreach_magic import settings as s
from destinations.outreach_magic.contract import (
    UpdateAttributesEvent,
    item_errors,
    validate_batch,
    validate_item,
)

HOSTILE_TEXT = st.one_of(
    st.text(),
    st.text(alphabet=st.sampled_from("\x00\u200b\u200d\u200f\u202e\ufeff\ud7ff\U0001f680é@./: \t\n")),
    st.sampled_from(["", " ", "update_attributes", "a@b.co", "https://www.linkedin.com/in/x", "0" * 24, "1",
                     "x" * 10_001]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), HOSTILE_TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(HOSTILE_TEXT, inner, max_size=4)), max_leaves=12)
EVENT_LIKE = st.dictionaries(
    st.one_of(st.sampled_from(s.ALL_FIELDS), HOSTILE_TEXT),
    st.one_of(JSON, HOSTILE_TEXT, st.lists(HOSTILE_TEXT, max_size=3)),
    max_size=8,
).map(lambda d: {"event": "update_attributes", **d} if len(d) % 2 else d)
PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _model_verdict(item: Any) -> bool:
    """True when valid; raises anything but ValidationError through."""
    try:
        UpdateAttributesEvent.model_validate(item)
    except ValidationError:
        return False
    return True


@PROFILE
@given(st.one_of(JSON, EVENT_LIKE))
def test_model_raises_only_validation_errors(item: Any) -> None:
    _model_verdict(item)


@PROFILE
@given(st.one_of(JSON, EVENT_LIKE))
def test_validate_item_never_raises_and_errors_have_the_contract_shape(item: Any) -> None:
    event, errors = validate_item(item)
    assert (event is None) == bool(errors)
    for entry in errors:
        assert set(entry) == {"msg", "type", "loc"} and isinstance(entry["msg"], str) and entry["type"]


@PROFILE
@given(st.one_of(JSON, EVENT_LIKE))
def test_fast_path_and_model_agree(item: Any) -> None:
    assert (item_errors(item) == []) == (validate_item(item)[0] is not None)


@PROFILE
@given(st.lists(st.one_of(JSON, EVENT_LIKE), max_size=6))
def test_batch_result_accounts_for_every_item(items: list[Any]) -> None:
    result = validate_batch(items)
    assert result["total"] == len(items)
    assert result["success"] + result["errors"]["count"] == result["total"]
    indexes = [d["index"] for d in result["errors"]["details"]]
    assert indexes == sorted(set(indexes)) and all(0 <= i < len(items) for i in indexes)

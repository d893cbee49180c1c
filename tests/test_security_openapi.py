"""The sandbox serves an OpenAPI document of the contract, and schemathesis fuzzes it with that document.

Generation runs in both modes against the running sandbox over loopback:

* positive: bodies the document admits; every answer must be documented (status, content
  type, headers, body schema), never a 5xx, and a 200 must account for every item;
* negative: bodies the document forbids; still never a 5xx and always a documented
  answer. schemathesis' ``negative_data_rejection`` check is excluded on purpose: the
  contract answers a schema-breaking *item* with a 200 whose ``errors.details`` name its
  index (partial success), not with a 4xx; the per-item verdict is checked instead.

schemathesis also probes authentication (``ignored_auth``): a request without the key,
or with a wrong one, must be refused with 401 on every operation.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

schemathesis = pytest.importorskip("schemathesis")

from destinations.outreach_magic import settings as s  # noqa: E402
from destinations.outreach_magic.contract import validate_item  # noqa: E402
from sandbox.openapi import build_openapi  # noqa: E402

KEY = "test-key"
EXAMPLES = {"POST /v1/events": 80}


def _served(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def test_the_sandbox_serves_the_contract_document(sandbox_server: Any) -> None:
    document = _served(sandbox_server.url)
    assert document == build_openapi(sandbox_server.url)
    event = document["components"]["schemas"]["UpdateAttributesEvent"]
    assert set(event["properties"]) == set(s.ALL_FIELDS) and event["additionalProperties"] is False
    assert document["paths"][s.EVENTS_PATH]["post"]["responses"]["429"]["headers"]["Retry-After"]["required"]


def test_document_examples_agree_with_the_model() -> None:
    """A value the document's pattern admits is one the model accepts (the document is never looser)."""
    props = build_openapi()["components"]["schemas"]["UpdateAttributesEvent"]["properties"]
    assert props["lead_email"]["pattern"] == s.EMAIL_PATTERN
    assert validate_item({"event": "update_attributes", "lead_email": "a@b.co", "lead_first_name": "x" * 10_000})[0]
    assert props["lead_first_name"]["maxLength"] == s.MAX_STRING_LENGTH


def _fuzz_operation(url: str, operation: Any, mode: Any, counts: dict[int, int]) -> None:
    excluded = [schemathesis.checks.negative_data_rejection, schemathesis.checks.positive_data_acceptance]

    @settings(max_examples=EXAMPLES.get(operation.label, 15), deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        response = case.call(base_url=url, headers={"x-api-key": KEY}, timeout=30)
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        case.validate_response(response, excluded_checks=excluded, headers={"x-api-key": KEY})
        assert response.status_code < 500
        if operation.label == "POST /v1/events" and response.status_code == 200:
            body = response.json()
            items = case.body if isinstance(case.body, list) else [case.body]
            assert body["total"] == len(items)
            assert body["success"] + body["errors"]["count"] == body["total"]
            rejected = {d["index"] for d in body["errors"]["details"]}
            # the server may reject more (unknown unified ids), never fewer than the model
            assert {i for i, item in enumerate(items) if validate_item(item)[1]} <= rejected

    check()


def _fuzz(url: str, mode: Any) -> dict[str, dict[int, int]]:
    schema = schemathesis.openapi.from_dict(_served(url))
    seen: dict[str, dict[int, int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        _fuzz_operation(url, operation, mode, seen.setdefault(f"{operation.label} {mode.value}", {}))
    return seen


def test_schemathesis_positive_fuzzing_of_the_running_sandbox(sandbox_server: Any) -> None:
    seen = _fuzz(sandbox_server.url, schemathesis.GenerationMode.POSITIVE)
    print(f"\nschemathesis positive: {seen}")
    assert seen["POST /v1/events positive"].get(200, 0) > 0


def test_schemathesis_negative_fuzzing_of_the_running_sandbox(sandbox_server: Any) -> None:
    seen = _fuzz(sandbox_server.url, schemathesis.GenerationMode.NEGATIVE)
    print(f"\nschemathesis negative: {seen}")
    assert sum(seen["POST /v1/events negative"].values()) > 0

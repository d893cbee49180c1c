"""Every response case of POST /v1/events, over real loopback HTTP, in the contract's order."""

from __future__ import annotations

from typing import Any

import httpx

from destinations.outreach_magic import settings as s
from sandbox import RunningSandbox
from tests.sandbox_helpers import CLIENT, post_events, sandbox_leads, sandbox_stats
from tests.test_contract import MINIMAL  # the seed's minimal example, written once


def raw(sb: RunningSandbox, content: bytes, headers: dict[str, str]) -> httpx.Response:
    return CLIENT.post(f"{sb.url}/v1/events", content=content, headers=headers)


def json_headers(key: str = "test-key", ctype: str = "application/json") -> dict[str, str]:
    return {"x-api-key": key, "content-type": ctype}


def test_valid_single_object_is_applied(sandbox_server: RunningSandbox) -> None:
    r = post_events(sandbox_server.url, "test-key", MINIMAL)
    assert r.status_code == 200
    assert r.json() == {"errors": {"count": 0, "details": []}, "success": 1, "total": 1}
    assert len(sandbox_leads(sandbox_server.url, "test-key")) == 1


def test_missing_and_unknown_key_are_401_and_not_counted(sandbox_server: RunningSandbox) -> None:
    for headers in ({"content-type": "application/json"}, json_headers("nope")):
        r = raw(sandbox_server, b"{}", headers)
        assert r.status_code == 401 and r.json() == {"error": s.INVALID_API_KEY_MESSAGE}
    assert sandbox_stats(sandbox_server.url, "test-key")["requests"] == 0
    assert CLIENT.get(f"{sandbox_server.url}/_sandbox/stats", headers={"x-api-key": "nope"}).status_code == 401


def test_key_is_checked_before_content_type(sandbox_server: RunningSandbox) -> None:
    assert raw(sandbox_server, b"x", {"x-api-key": "nope", "content-type": "text/plain"}).status_code == 401


def test_content_type_missing_or_not_json_is_415(sandbox_server: RunningSandbox) -> None:
    for headers in (
        {"x-api-key": "test-key"},
        json_headers(ctype="text/plain"),
        json_headers(ctype="application/jsonx"),
    ):
        r = raw(sandbox_server, b'{"event": "update_attributes", "lead_email": "a@b.co"}', headers)
        assert r.status_code == 415 and r.json() == {"error": s.CONTENT_TYPE_MESSAGE}
    assert sandbox_leads(sandbox_server.url, "test-key") == []


def test_content_type_ignores_case_and_parameters(sandbox_server: RunningSandbox) -> None:
    r = raw(
        sandbox_server,
        b'{"event": "update_attributes", "lead_email": "a@b.co"}',
        json_headers(ctype="Application/JSON; charset=utf-8"),
    )
    assert r.status_code == 200 and r.json()["success"] == 1


def test_content_type_is_checked_before_size_and_shape(sandbox_factory: Any) -> None:
    sb = sandbox_factory(max_bytes=10)
    assert raw(sb, b"x" * 100, json_headers(ctype="text/plain")).status_code == 415
    assert raw(sb, b"x" * 100, json_headers()).status_code == 413  # size before body shape


def test_body_over_byte_limit_is_413(sandbox_factory: Any) -> None:
    sb = sandbox_factory(max_bytes=200)
    small = {"event": "update_attributes", "lead_email": "a@b.co"}
    assert post_events(sb.url, "test-key", small).status_code == 200
    r = post_events(sb.url, "test-key", [small] * 10)
    assert r.status_code == 413 and "error" in r.json()
    assert sandbox_stats(sb.url, "test-key")["status_counts"]["413"] == 1


def test_more_items_than_limit_is_413_and_nothing_applied(sandbox_factory: Any) -> None:
    sb = sandbox_factory(max_items=3)
    body = [{"event": "update_attributes", "lead_email": f"u{i}@b.co"} for i in range(4)]
    assert post_events(sb.url, "test-key", body).status_code == 413
    assert post_events(sb.url, "test-key", body[:3]).status_code == 200
    assert len(sandbox_leads(sb.url, "test-key")) == 3


def test_bad_bodies_are_400(sandbox_server: RunningSandbox) -> None:
    for content in (b"{not json", b"42", b'"text"', b"null", b"[]", b""):
        r = raw(sandbox_server, content, json_headers())
        assert r.status_code == 400, content
        assert isinstance(r.json()["error"], str)
    assert sandbox_stats(sandbox_server.url, "test-key")["status_counts"]["400"] == 6


def test_partial_success_reports_indexes_and_applies_valid_items(sandbox_server: RunningSandbox) -> None:
    bad_ws = {"event": "update_attributes", "lead_email": "x@example.com", "import_name": "I"}
    body = [MINIMAL, bad_ws, 1, {"event": "update_attributes", "lead_email": "y@example.com"}]
    r = post_events(sandbox_server.url, "test-key", body)
    j = r.json()
    assert r.status_code == 200 and j["success"] == 2 and j["total"] == 4 and j["errors"]["count"] == 2
    assert [d["index"] for d in j["errors"]["details"]] == [1, 2]
    assert j["errors"]["details"][0]["error"] == [{"msg": s.WORKSPACE_RULE_MESSAGE, "type": "value_error", "loc": []}]
    assert j["errors"]["details"][1]["error"][0]["type"] == "dict_type"
    emails = sorted(e for ld in sandbox_leads(sandbox_server.url, "test-key") for e in ld["identifiers"]["lead_email"])
    assert emails == ["jane.doe@example.com", "y@example.com"]


def test_all_items_invalid_is_still_200(sandbox_server: RunningSandbox) -> None:
    r = post_events(sandbox_server.url, "test-key", [{"event": "update_attributes", "lead_email": "not an email"}])
    assert r.status_code == 200 and r.json()["success"] == 0 and r.json()["errors"]["count"] == 1
    assert "not an email" not in r.text, "errors never echo the submitted value"


def test_stats_count_requests_events_and_statuses(sandbox_server: RunningSandbox) -> None:
    url = sandbox_server.url
    post_events(url, "test-key", [MINIMAL, {"event": "nope"}])
    raw(sandbox_server, b"{}", json_headers(ctype="text/plain"))
    raw(sandbox_server, b"[]", json_headers())
    st = sandbox_stats(url, "test-key")
    assert st["requests"] == 3 and st["events_received"] == 2
    assert st["events_applied"] == 1 and st["events_rejected"] == 1
    assert st["status_counts"] == {
        "200": 1,
        "429": 0,
        "503": 0,
        "500": 0,
        "502": 0,
        "413": 0,
        "415": 1,
        "400": 1,
        "drop": 0,
        "lost": 0,
    }
    assert sandbox_stats(url, "other-key")["requests"] == 0


def test_reset_empties_data_and_counters_of_that_tenant_only(sandbox_server: RunningSandbox) -> None:
    url = sandbox_server.url
    post_events(url, "test-key", MINIMAL)
    post_events(url, "other-key", MINIMAL)
    r = CLIENT.post(f"{url}/_sandbox/reset", headers={"x-api-key": "test-key"})
    assert r.status_code == 200 and r.json() == {"reset": True}
    assert sandbox_leads(url, "test-key") == [] and sandbox_stats(url, "test-key")["requests"] == 0
    assert len(sandbox_leads(url, "other-key")) == 1
    assert CLIENT.post(f"{url}/_sandbox/reset").status_code == 401


def test_inspection_endpoints_need_a_key(sandbox_server: RunningSandbox) -> None:
    for path in ("leads", "companies", "stats"):
        r = CLIENT.get(f"{sandbox_server.url}/_sandbox/{path}")
        assert r.status_code == 401 and r.json() == {"error": s.INVALID_API_KEY_MESSAGE}


def test_get_on_events_is_405(sandbox_server: RunningSandbox) -> None:
    assert CLIENT.get(f"{sandbox_server.url}/v1/events", headers={"x-api-key": "test-key"}).status_code == 405

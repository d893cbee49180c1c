"""The contract model against the seed's examples and the contract's rules."""

from __future__ import annotations

from typing import Any

import pytest

from destinations.outreach_magic import settings as s
from destinations.outreach_magic.contract import item_errors, validate_batch

WS = "65f1a2b3c4d5e6f7890a1b2c"
MINIMAL = {
    "event": "update_attributes",
    "platform": "clay",
    "workspace_id": WS,
    "lead_email": "jane.doe@example.com",
    "company_domain": "example.co",
    "lead_first_name": "Jane",
    "company_name": "Example Co",
}
FULL = {
    "event": "update_attributes", "platform": "clay", "workspace_id": WS,
    "import_name": "Sample Import - ICP 1", "list_source": "apollo", "exclusion_reason": "existing_customer",
    "icp": "ICP 1", "unified_lead_id": "65f1a2b3c4d5e6f7890a1d3e", "lead_email": "jane.doe@example.com",
    "lead_linkedin_url": "https://www.linkedin.com/in/sample-profile/",
    "lead_sales_navigator_url": "https://www.linkedin.com/sales/people/1234567890",
    "lead_linkedin_id": "sample-linkedin-id", "lead_first_name": "Jane", "lead_last_name": "Doe",
    "lead_full_name": "Jane Doe", "lead_country": "United States", "lead_job_title": "Head of Operations",
    "lead_seniority": "director", "lead_function": "Operations",
    "lead_linkedin_headline": "Ops leader focused on scalable systems", "lead_reporting_location": "United States",
    "unified_company_id": "65f1a2b3c4d5e6f7890a1e4f", "company_domain": "example.co",
    "company_linkedin_url": "https://www.linkedin.com/company/example-co/", "company_name": "Example Co",
    "company_country": "United States", "company_employee_range": "51-200 employees",
    "company_industry": "Software", "company_description": "Sample description",
    "company_employee_count": "123", "company_normalized_name": "ExampleCo",
    "company_normalized_industry": "Software & Services",
}


def ev(**fields: Any) -> dict[str, Any]:
    return {"event": "update_attributes", **fields}


def test_seed_examples_validate() -> None:
    assert validate_batch(MINIMAL) == {"errors": {"count": 0, "details": []}, "success": 1, "total": 1}
    second = dict(MINIMAL, lead_email="alex.lee@example.com", company_domain="sample.io")
    assert validate_batch([MINIMAL, second])["success"] == 2
    assert validate_batch(FULL)["success"] == 1


def test_full_example_covers_every_field() -> None:
    assert set(FULL) | {"tags", "lead_status", "sender", "linkedin_connection_level"} == set(s.ALL_FIELDS)


def test_workspace_rule_has_the_exact_message_for_each_workspace_attribute() -> None:
    for field in s.WORKSPACE_ATTRIBUTES:
        value: Any = ["a"] if field == "tags" else "x"
        errors = item_errors(ev(lead_email="x@example.com", **{field: value}))
        assert errors == [{"msg": s.WORKSPACE_RULE_MESSAGE, "type": "value_error", "loc": []}], field
        assert item_errors(ev(lead_email="x@example.com", workspace_id=WS, **{field: value})) == []


@pytest.mark.parametrize(
    ("body", "etype", "loc"),
    [
        (1, "dict_type", []),
        ({"lead_email": "a@example.com"}, "missing", ["event"]),
        (ev(event="lead_status_updated", lead_email="a@example.com"), "literal_error", ["event"]),
        (ev(lead_email="a@example.com", lead_favourite_colour="red"), "extra_forbidden", ["lead_favourite_colour"]),
        (ev(company_domain="example.co", company_employee_count=123), "string_type", ["company_employee_count"]),
        (ev(lead_email="a@example.com", lead_first_name=""), "string_too_short", ["lead_first_name"]),
        (ev(lead_email="a@example.com", lead_linkedin_headline="x" * 10_001), "string_too_long",
         ["lead_linkedin_headline"]),
        (ev(lead_email="a@example.com", workspace_id=WS, tags="a,b"), "list_type", ["tags"]),
        (ev(lead_email="a@example.com", workspace_id=WS, tags=["a", 1]), "string_type", ["tags", 1]),
    ],
)
def test_field_errors_use_pydantic_vocabulary(body: Any, etype: str, loc: list[Any]) -> None:
    errors = item_errors(body)
    assert errors and errors[0]["type"] == etype and errors[0]["loc"] == loc


def test_exactly_10000_characters_is_allowed() -> None:
    assert item_errors(ev(lead_email="a@example.com", lead_linkedin_headline="x" * 10_000)) == []


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("workspace_id", WS, "ws-1"),
        ("unified_lead_id", "65f1a2b3c4d5e6f7890a1d3e", "65F1A2B3C4D5E6F7890A1D3E"),
        ("unified_company_id", "65f1a2b3c4d5e6f7890a1e4f", "65f1a2b3"),
        ("lead_email", "a.b@example.co.uk", "not an email"),
        ("lead_email", "a@example.com", "a@example"),
        ("lead_linkedin_url", "https://WWW.LinkedIn.com/in/jane/", "https://www.linkedin.com/company/x/"),
        ("lead_linkedin_url", "http://linkedin.com/in/jane", "https://www.linkedin.com/in/jane/details/x"),
        ("lead_sales_navigator_url", "https://www.linkedin.com/sales/lead/ACwAA,NAME", "https://example.com/sales/x"),
        ("company_linkedin_url", "https://www.linkedin.com/school/mit/", "https://www.linkedin.com/in/jane/"),
        ("company_domain", "example.co", "https://example.co/about"),
        ("company_domain", "sub.example.co", "example.co:8080"),
        ("company_employee_count", "1240", "1,240"),
    ],
)
def test_formats_are_checked_as_written(field: str, good: str, bad: str) -> None:
    lead = {} if field.startswith(("lead_", "unified_lead")) else {"lead_email": "x@example.com"}
    company = {"company_domain": "example.co"} if field.startswith("company_") and field != "company_domain" else {}
    base = {**lead, **company, "workspace_id": WS} if field == "workspace_id" else {**lead, **company}
    if field == "workspace_id":
        base["icp"] = "A"
    assert item_errors(ev(**{**base, field: good})) == []
    errors = item_errors(ev(**{**base, field: bad}))
    assert errors[0]["type"] == "value_error"
    assert errors[0]["msg"].startswith(f"Value error: {field} is not a valid ")
    assert bad not in errors[0]["msg"], "error entries never echo the submitted value"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"lead_email": "z@example.com", "linkedin_connection_level": "2"}, "required together"),
        ({"lead_email": "z@example.com", "sender": "https://www.linkedin.com/in/s/"}, "required together"),
        ({"lead_email": "z@example.com", "linkedin_connection_level": "4", "sender": "https://www.linkedin.com/in/s/"},
         "one of"),
        ({"company_domain": "example.co", "linkedin_connection_level": "1", "sender": "https://www.linkedin.com/in/s/"},
         "lead identifier"),
        ({"lead_first_name": "NoId"}, "at least one lead identifier or company identifier"),
        ({"company_domain": "example.co", "lead_first_name": "Orphan"}, "lead attributes need"),
        ({"lead_email": "z@example.com", "company_name": "Orphan Co"}, "company attributes need"),
    ],
)
def test_cross_field_rules(fields: dict[str, Any], fragment: str) -> None:
    errors = item_errors(ev(**fields))
    assert len(errors) == 1 and errors[0]["type"] == "value_error" and fragment in errors[0]["msg"]


def test_sender_must_be_a_profile_url() -> None:
    errors = item_errors(ev(lead_email="z@example.com", linkedin_connection_level="2",
                            sender="https://www.linkedin.com/company/x/"))
    assert errors[0]["loc"] == ["sender"]


def test_valid_connection_level_and_null_fields() -> None:
    assert item_errors(ev(lead_email="z@example.com", linkedin_connection_level="3",
                          sender="https://www.linkedin.com/in/sender-x/")) == []
    assert item_errors(ev(lead_email="z@example.com", lead_first_name=None, company_name=None)) == []


def test_partial_success_keeps_indexes_and_counts() -> None:
    result = validate_batch([MINIMAL, ev(lead_email="x@example.com", import_name="I"), [1], MINIMAL])
    assert [d["index"] for d in result["errors"]["details"]] == [1, 2]
    assert result["success"] == 2 and result["total"] == 4 and result["errors"]["count"] == 2

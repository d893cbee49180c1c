"""The sandbox's matching and upsert semantics (contract: "Matching and upsert semantics")."""

from __future__ import annotations

from typing import Any

from sandbox import RunningSandbox
from tests.sandbox_helpers import lead_by, post_events, sandbox_companies, sandbox_leads

WS = "65f1a2b3c4d5e6f7890a1b2c"
WS2 = "65f1a2b3c4d5e6f7890a1b2d"
LI = "https://www.linkedin.com/in/jane/"
SENDER = "https://www.linkedin.com/in/sender-x/"
SENDER2 = "https://www.linkedin.com/in/sender-y/"


def ev(**fields: Any) -> dict[str, Any]:
    return {"event": "update_attributes", **fields}


def send(sb: RunningSandbox, *events: dict[str, Any], key: str = "test-key") -> dict[str, Any]:
    r = post_events(sb.url, key, list(events))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def leads(sb: RunningSandbox, key: str = "test-key") -> list[dict[str, Any]]:
    return sandbox_leads(sb.url, key)


def test_new_lead_gets_a_24_hex_id_and_its_identifiers(sandbox_server: RunningSandbox) -> None:
    send(sandbox_server, ev(lead_email="a@example.com", lead_linkedin_id="li-1", lead_first_name="A"))
    [lead] = leads(sandbox_server)
    uid = lead["unified_lead_id"]
    assert len(uid) == 24 and all(c in "0123456789abcdef" for c in uid)
    assert lead["identifiers"] == {
        "lead_email": ["a@example.com"],
        "lead_linkedin_url": [],
        "lead_sales_navigator_url": [],
        "lead_linkedin_id": ["li-1"],
    }
    assert lead["attributes"] == {"lead_first_name": "A"}
    assert lead["unified_company_id"] is None and lead["workspaces"] == {} and lead["connections"] == {}


def test_identifier_priority_selects_the_first_matching_lead(sandbox_server: RunningSandbox) -> None:
    send(sandbox_server, ev(lead_email="a@example.com"), ev(lead_linkedin_url=LI))
    # email outranks the LinkedIn URL: the event lands on the email's lead
    send(sandbox_server, ev(lead_email="a@example.com", lead_linkedin_url=LI, lead_job_title="CTO"))
    ls = leads(sandbox_server)
    assert len(ls) == 2
    by_email = lead_by(ls, "lead_email", "a@example.com")[0]
    by_url = lead_by(ls, "lead_linkedin_url", LI)[0]
    assert by_email["attributes"] == {"lead_job_title": "CTO"} and by_url["attributes"] == {}
    # the URL already belongs to another lead: it stays there, the event still succeeds
    assert by_email["identifiers"]["lead_linkedin_url"] == []
    # a unified id outranks everything
    result = send(
        sandbox_server,
        ev(unified_lead_id=by_url["unified_lead_id"], lead_email="a@example.com", lead_job_title="CEO"),
    )
    assert result["success"] == 1
    ls = leads(sandbox_server)
    assert lead_by(ls, "lead_linkedin_url", LI)[0]["attributes"] == {"lead_job_title": "CEO"}


def test_new_identifiers_are_attached_to_the_matched_lead(sandbox_server: RunningSandbox) -> None:
    send(sandbox_server, ev(lead_email="a@example.com"))
    send(
        sandbox_server,
        ev(
            lead_email="a@example.com",
            lead_linkedin_url=LI,
            lead_sales_navigator_url="https://www.linkedin.com/sales/lead/X1",
        ),
    )
    [lead] = leads(sandbox_server)
    assert lead["identifiers"]["lead_linkedin_url"] == [LI]
    send(sandbox_server, ev(lead_linkedin_url=LI, lead_linkedin_id="li-9"))  # matched by the attached URL
    [lead] = leads(sandbox_server)
    assert lead["identifiers"]["lead_linkedin_id"] == ["li-9"]


def test_unknown_unified_id_alone_fails_and_applies_nothing(sandbox_server: RunningSandbox) -> None:
    result = send(
        sandbox_server,
        ev(unified_lead_id="a" * 24, lead_first_name="Ghost", company_domain="g.co", workspace_id=WS, icp="X"),
    )
    assert result["success"] == 0
    [entry] = result["errors"]["details"][0]["error"]
    assert entry["type"] == "value_error" and entry["msg"] == "Value error: unified_lead_id matches no lead"
    assert leads(sandbox_server) == [] and sandbox_companies(sandbox_server.url, "test-key") == []
    result = send(sandbox_server, ev(unified_company_id="b" * 24, company_name="Ghost Co"))
    assert result["errors"]["details"][0]["error"][0]["msg"] == "Value error: unified_company_id matches no company"
    assert sandbox_companies(sandbox_server.url, "test-key") == []


def test_unknown_unified_id_with_other_identifiers_is_skipped_not_attached(
    sandbox_server: RunningSandbox,
) -> None:
    for _ in range(2):
        result = send(
            sandbox_server,
            ev(
                unified_lead_id="a" * 24,
                lead_email="a@example.com",
                unified_company_id="b" * 24,
                company_domain="a.co",
            ),
        )
        assert result["success"] == 1
    [lead] = leads(sandbox_server)
    [company] = sandbox_companies(sandbox_server.url, "test-key")
    assert lead["unified_lead_id"] != "a" * 24 and company["unified_company_id"] != "b" * 24
    assert lead["unified_company_id"] == company["unified_company_id"]


def test_company_matching_and_last_company_named_wins(sandbox_server: RunningSandbox) -> None:
    send(sandbox_server, ev(lead_email="a@example.com", company_domain="one.co", company_name="One"))
    send(sandbox_server, ev(company_linkedin_url="https://www.linkedin.com/company/two/", company_name="Two"))
    send(
        sandbox_server,
        ev(lead_email="a@example.com", company_linkedin_url="https://www.linkedin.com/company/two/"),
    )
    companies = {c["attributes"]["company_name"]: c for c in sandbox_companies(sandbox_server.url, "test-key")}
    assert set(companies) == {"One", "Two"}
    [lead] = leads(sandbox_server)
    assert lead["unified_company_id"] == companies["Two"]["unified_company_id"]
    # a lead-only event keeps the link
    send(sandbox_server, ev(lead_email="a@example.com", lead_first_name="A"))
    assert leads(sandbox_server)[0]["unified_company_id"] == companies["Two"]["unified_company_id"]
    # domain outranks LinkedIn URL: the URL already on "Two" stays there
    send(
        sandbox_server,
        ev(
            company_domain="one.co",
            company_linkedin_url="https://www.linkedin.com/company/two/",
            company_industry="Software",
        ),
    )
    companies = {c["attributes"]["company_name"]: c for c in sandbox_companies(sandbox_server.url, "test-key")}
    assert companies["One"]["attributes"]["company_industry"] == "Software"
    assert companies["One"]["identifiers"]["company_linkedin_url"] == []


def test_workspace_attributes_per_workspace_and_lead_or_company(sandbox_server: RunningSandbox) -> None:
    send(
        sandbox_server,
        ev(lead_email="a@example.com", company_domain="a.co", workspace_id=WS, icp="ICP 1", tags=["x", "y"]),
    )
    send(sandbox_server, ev(lead_email="a@example.com", workspace_id=WS2, icp="ICP 2"))
    send(sandbox_server, ev(company_domain="a.co", workspace_id=WS, lead_status="customer"))
    [lead] = leads(sandbox_server)
    assert lead["workspaces"] == {WS: {"icp": "ICP 1", "tags": ["x", "y"]}, WS2: {"icp": "ICP 2"}}
    [company] = sandbox_companies(sandbox_server.url, "test-key")
    assert company["workspaces"] == {WS: {"lead_status": "customer"}}


def test_tags_replace_and_null_never_clears(sandbox_server: RunningSandbox) -> None:
    send(
        sandbox_server,
        ev(lead_email="a@example.com", lead_first_name="A", workspace_id=WS, icp="I", tags=["x", "y"]),
    )
    send(
        sandbox_server,
        ev(
            lead_email="a@example.com",
            lead_first_name=None,
            lead_last_name="B",
            workspace_id=WS,
            icp=None,
            tags=["z"],
        ),
    )
    [lead] = leads(sandbox_server)
    assert lead["attributes"] == {"lead_first_name": "A", "lead_last_name": "B"}
    assert lead["workspaces"][WS] == {"icp": "I", "tags": ["z"]}
    send(sandbox_server, ev(lead_email="a@example.com", workspace_id=WS, tags=[]))
    assert leads(sandbox_server)[0]["workspaces"][WS]["tags"] == []


def test_connection_level_per_sender_and_lead_last_wins(sandbox_server: RunningSandbox) -> None:
    send(
        sandbox_server,
        ev(lead_email="a@example.com", sender=SENDER, linkedin_connection_level="2"),
        ev(lead_email="a@example.com", sender=SENDER2, linkedin_connection_level="3"),
        ev(lead_email="b@example.com", sender=SENDER, linkedin_connection_level="1"),
    )
    send(sandbox_server, ev(lead_email="a@example.com", sender=SENDER, linkedin_connection_level="1"))
    ls = leads(sandbox_server)
    assert lead_by(ls, "lead_email", "a@example.com")[0]["connections"] == {SENDER: "1", SENDER2: "3"}
    assert lead_by(ls, "lead_email", "b@example.com")[0]["connections"] == {SENDER: "1"}


def test_email_matches_ignoring_case_and_keeps_first_spelling(sandbox_server: RunningSandbox) -> None:
    send(sandbox_server, ev(lead_email="Jane.Doe@Example.com", lead_first_name="Jane"))
    send(sandbox_server, ev(lead_email="JANE.DOE@EXAMPLE.COM", lead_last_name="Doe"))
    [lead] = leads(sandbox_server)
    assert lead["identifiers"]["lead_email"] == ["Jane.Doe@Example.com"]
    assert lead["attributes"] == {"lead_first_name": "Jane", "lead_last_name": "Doe"}


def test_other_identifiers_match_exactly_as_sent(sandbox_server: RunningSandbox) -> None:
    send(
        sandbox_server,
        ev(lead_linkedin_url="https://www.linkedin.com/in/jane/"),
        ev(lead_linkedin_url="https://www.linkedin.com/in/Jane/"),
        ev(company_domain="a.co"),
        ev(company_domain="A.co"),
    )
    assert len(leads(sandbox_server)) == 2 and len(sandbox_companies(sandbox_server.url, "test-key")) == 2


def test_items_apply_in_array_order(sandbox_server: RunningSandbox) -> None:
    send(
        sandbox_server,
        ev(lead_email="a@example.com", lead_job_title="first"),
        ev(lead_email="a@example.com", lead_job_title="second"),
    )
    assert leads(sandbox_server)[0]["attributes"]["lead_job_title"] == "second"


def test_reapplying_the_same_events_leaves_the_same_state(sandbox_server: RunningSandbox) -> None:
    events = [
        ev(
            lead_email="a@example.com",
            lead_linkedin_url=LI,
            company_domain="a.co",
            company_name="A",
            workspace_id=WS,
            tags=["t"],
            sender=SENDER,
            linkedin_connection_level="2",
            lead_first_name="A",
        ),
        ev(company_domain="b.co", workspace_id=WS, icp="B"),
        ev(lead_email="b@example.com", company_domain="b.co"),
    ]
    send(sandbox_server, *events)
    before = (leads(sandbox_server), sandbox_companies(sandbox_server.url, "test-key"))
    send(sandbox_server, *events)
    send(sandbox_server, *events)
    assert (leads(sandbox_server), sandbox_companies(sandbox_server.url, "test-key")) == before


def test_tenants_are_isolated(sandbox_server: RunningSandbox) -> None:
    send(sandbox_server, ev(lead_email="a@example.com", company_domain="a.co"))
    [mine] = leads(sandbox_server)
    assert leads(sandbox_server, "other-key") == []
    # another tenant's unified id is unknown here
    result = send(sandbox_server, ev(unified_lead_id=mine["unified_lead_id"], lead_first_name="X"), key="other-key")
    assert result["success"] == 0
    send(sandbox_server, ev(lead_email="a@example.com", company_domain="a.co"), key="other-key")
    [theirs] = leads(sandbox_server, "other-key")
    assert theirs["unified_lead_id"] != mine["unified_lead_id"]
    assert theirs["unified_company_id"] != mine["unified_company_id"]
    assert leads(sandbox_server) == [mine]

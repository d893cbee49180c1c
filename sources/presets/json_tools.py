"""Presets for JSON sources: Clearbit's combined person+company response, and the webhook /
export events of the LinkedIn tools HeyReach and Prosp; plus the Lusha document adapter.

The readers flatten nested objects to dotted names (``person.name.givenName``), so these
presets name dotted paths. HeyReach and Prosp events carry the LinkedIn account that sent
the outreach; an event that proves a 1st-degree connection (an accepted invitation, or a
reply to a LinkedIn message, which only connections can send) sets
``linkedin_connection_level`` to ``"1"`` and ``sender`` to that account's profile URL,
the API's connection-level feature. Other events (a sent invitation, an InMail reply,
which needs no connection) set neither: a level is never guessed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from destinations.outreach_magic.arrow_literals import FALSE, literal, string_array
from sources.presets.base import Preset, header_key

CLEARBIT = Preset(
    name="clearbit",
    title="Clearbit (combined person + company)",
    platform="clearbit",
    columns={
        "lead_email": ("person.email",),
        "lead_linkedin_url": ("person.linkedin.handle",),
        "lead_first_name": ("person.name.givenName",),
        "lead_last_name": ("person.name.familyName",),
        "lead_full_name": ("person.name.fullName",),
        "lead_job_title": ("person.employment.title",),
        "lead_seniority": ("person.employment.seniority",),
        "lead_function": ("person.employment.role",),
        "lead_country": ("person.geo.country",),
        "lead_reporting_location": ("person.location",),
        "company_name": ("company.name", "person.employment.name"),
        "company_domain": ("company.domain", "person.employment.domain"),
        "company_linkedin_url": ("company.linkedin.handle",),
        "company_employee_count": ("company.metrics.employees",),
        "company_employee_range": ("company.metrics.employeesRange",),
        "company_industry": ("company.category.industry",),
        "company_country": ("company.geo.country",),
        "company_description": ("company.description",),
        "company_normalized_name": ("company.legalName",),
        "company_normalized_industry": ("company.category.industryGroup",),
    },
    signature=(
        "person.name.givenName",
        "person.name.familyName",
        "person.employment.title",
        "person.employment.domain",
        "person.linkedin.handle",
        "company.linkedin.handle",
        "company.metrics.employees",
        "company.metrics.employeesRange",
        "company.category.industry",
        "company.category.sector",
    ),
    min_signature=2,
)

# Event names (compared by header_key, so spelling and case do not matter) that show a
# 1st-degree connection between the sender account and the lead.
CONNECTION_EVENTS: frozenset[str] = frozenset(
    header_key(e)
    for e in (
        # HeyReach webhook event types
        "CONNECTION_REQUEST_ACCEPTED",
        "MESSAGE_REPLY_RECEIVED",
        "EVERY_MESSAGE_REPLY_RECEIVED",
        # Prosp and generic spellings (guessed)
        "connection_accepted",
        "invitation_accepted",
        "new_connection",
        "linkedin_reply",
        "linkedin_reply_received",
        "reply_received",
        "message_received",
    )
)


def derive_connection(mapped: dict[str, pa.Array], helpers: dict[str, pa.Array]) -> dict[str, pa.Array]:
    """Set level "1" and keep ``sender`` only on rows whose event proves a connection.

    A ``sender`` without a level would fail the API's connection rule, so on other rows the
    sender is dropped too. A mapping that sets either field itself is left alone (the
    caller skips this function then).
    """
    sender = mapped.get("sender")
    event = helpers.get("event")
    if sender is None or event is None:
        mapped.pop("sender", None)
        return mapped
    keys = pc.replace_substring_regex(pc.utf8_lower(event), r"[^0-9a-z]+", "")
    proves = pc.and_kleene(
        pc.is_in(keys, value_set=string_array(sorted(CONNECTION_EVENTS))),
        pc.is_valid(sender),
    )
    proves = pc.fill_null(proves, FALSE)
    mapped["sender"] = pc.if_else(proves, sender, literal(None, pa.string()))
    mapped["linkedin_connection_level"] = pc.if_else(proves, literal("1", pa.string()), literal(None, pa.string()))
    return mapped


# HeyReach webhook payloads: ``event_type``, ``lead`` (``profile_url``, ``first_name``,
# ``company_name``, ``position``...), ``sender`` (the LinkedIn account, ``profile_url``) and
# ``campaign``. Integrations also describe camelCase forms (``eventType``,
# ``leadProfile.linkedInUrl``, ``lead.profileUrl``, ``sender.linkedInUrl``): both are listed.
HEYREACH = Preset(
    name="heyreach",
    title="HeyReach (webhook / export events)",
    platform="heyreach",
    columns={
        "lead_linkedin_url": (
            "lead.profile_url",
            "lead.profileUrl",
            "leadProfile.linkedInUrl",
            "lead.linkedInUrl",
            "lead.linkedin_url",
        ),
        "lead_email": (
            "lead.email_address",
            "lead.emailAddress",
            "leadProfile.emailAddress",
            "lead.enriched_email",
            "lead.custom_email",
        ),
        "lead_first_name": ("lead.first_name", "lead.firstName", "leadProfile.firstName"),
        "lead_last_name": ("lead.last_name", "lead.lastName", "leadProfile.lastName"),
        "lead_full_name": ("lead.full_name", "lead.fullName", "leadProfile.fullName"),
        "lead_job_title": ("lead.position", "lead.title", "leadProfile.position"),
        "lead_linkedin_headline": ("lead.headline", "leadProfile.headline"),
        "lead_reporting_location": ("lead.location", "leadProfile.location"),
        "company_name": ("lead.company_name", "lead.companyName", "leadProfile.companyName"),
        "company_linkedin_url": ("lead.company_url", "lead.companyUrl", "leadProfile.companyUrl"),
        "sender": (
            "sender.profile_url",
            "sender.profileUrl",
            "sender.linkedInUrl",
            "sender.linkedin_url",
            "linkedInAccount.linkedInUrl",
        ),
        "tags": ("lead.tags", "leadProfile.tags"),
    },
    helpers={"event": ("event_type", "eventType")},
    derive=derive_connection,
    signature=(
        "event_type",
        "eventType",
        "lead.profile_url",
        "lead.profileUrl",
        "leadProfile.linkedInUrl",
        "sender.profile_url",
        "sender.linkedInUrl",
        "lead.company_name",
        "lead.position",
        "campaign.name",
        "campaign.id",
    ),
    min_signature=2,
    guessed=frozenset(
        {
            "lead.profileUrl",
            "lead.linkedInUrl",
            "lead.linkedin_url",
            "lead.emailAddress",
            "lead.enriched_email",
            "lead.custom_email",
            "lead.firstName",
            "lead.lastName",
            "lead.full_name",
            "lead.fullName",
            "leadProfile.fullName",
            "lead.title",
            "leadProfile.position",
            "lead.headline",
            "leadProfile.headline",
            "leadProfile.location",
            "lead.companyName",
            "leadProfile.companyName",
            "lead.company_url",
            "lead.companyUrl",
            "leadProfile.companyUrl",
            "sender.profile_url",
            "sender.profileUrl",
            "sender.linkedin_url",
            "linkedInAccount.linkedInUrl",
            "lead.tags",
            "leadProfile.tags",
        }
    ),
)

# Prosp (prosp.ai) publishes no payload reference we could read: every name here is a guess,
# covering snake_case and camelCase. A real payload that differs needs a mapping file.
PROSP = Preset(
    name="prosp",
    title="Prosp (webhook / export events)",
    platform="prosp",
    columns={
        "lead_linkedin_url": (
            "lead.linkedin_url",
            "lead.linkedinUrl",
            "lead.linkedin",
            "lead.profile_url",
            "prospect.linkedin_url",
            "prospect.linkedinUrl",
            "linkedin_url",
        ),
        "lead_email": ("lead.email", "prospect.email", "email"),
        "lead_first_name": ("lead.first_name", "lead.firstName", "prospect.first_name", "first_name"),
        "lead_last_name": ("lead.last_name", "lead.lastName", "prospect.last_name", "last_name"),
        "lead_full_name": ("lead.name", "lead.full_name", "prospect.name", "name"),
        "lead_job_title": ("lead.title", "lead.job_title", "lead.headline_title", "prospect.title"),
        "lead_linkedin_headline": ("lead.headline", "prospect.headline"),
        "lead_reporting_location": ("lead.location", "prospect.location"),
        "company_name": ("lead.company", "lead.company_name", "prospect.company", "company"),
        "company_domain": ("lead.company_website", "lead.website", "prospect.company_website"),
        "sender": (
            "sender.linkedin_url",
            "sender.linkedinUrl",
            "sender.profile_url",
            "account.linkedin_url",
            "linkedin_account.linkedin_url",
            "sender_linkedin_url",
        ),
    },
    helpers={"event": ("event", "event_type", "type", "action")},
    derive=derive_connection,
    signature=(
        "lead.linkedin_url",
        "lead.linkedinUrl",
        "prospect.linkedin_url",
        "sender.linkedin_url",
        "sender.linkedinUrl",
        "account.linkedin_url",
        "sender_linkedin_url",
        "campaign_name",
        "campaign.name",
        "lead.company",
    ),
    min_signature=2,
    # every name is a guess: set below with dataclasses.replace
)


# HeyReach's event *names* are documented; the payload's field spellings are not published in
# anything we could read (two spellings are covered), so every column name is marked guessed.
HEYREACH = dataclasses.replace(
    HEYREACH,
    guessed=frozenset(n for names in (*HEYREACH.columns.values(), *HEYREACH.helpers.values()) for n in names),
)

# Everything in the Prosp preset is a guess (see above).
PROSP = dataclasses.replace(
    PROSP, guessed=frozenset(n for names in (*PROSP.columns.values(), *PROSP.helpers.values()) for n in names)
)


def lusha_document(doc: Any) -> Iterable[dict[str, Any]] | None:
    """Rows from a Lusha person-API response (single or bulk), or None if ``doc`` is not one.

    Bulk (``POST /v2/person``): ``{"contacts": {"<contactId>": {"data": {..., "companyId": 7}}},
    "companies": {"7": {...}}}``: each contact's company is looked up in the separate map and
    nested under ``company``. Single (``GET /v2/person``): ``{"contact": {"data": {...}}}``.
    ``emailAddresses`` and ``phoneNumbers`` (lists of objects) become lists of strings so that
    the readers keep them as ``list<string>``; contacts without ``data`` (not found) are skipped.
    """
    if not isinstance(doc, dict):
        return None
    contacts = doc.get("contacts")
    if isinstance(contacts, dict) and contacts and all(isinstance(v, dict) for v in contacts.values()):
        found = doc.get("companies")
        companies: dict[str, Any] = found if isinstance(found, dict) else {}
        return [
            _lusha_row(entry["data"], str(contact_id), companies)
            for contact_id, entry in contacts.items()
            if isinstance(entry.get("data"), dict)
        ]
    contact = doc.get("contact")
    if isinstance(contact, dict) and isinstance(contact.get("data"), dict):
        return [_lusha_row(contact["data"], None, {})]
    return None


def _lusha_row(data: dict[str, Any], contact_id: str | None, companies: dict[str, Any]) -> dict[str, Any]:
    row = dict(data)
    if contact_id is not None:
        row["contactId"] = contact_id
    company_id = row.get("companyId")
    if "company" not in row and company_id is not None:
        company = companies.get(str(company_id))
        if isinstance(company, dict):
            row["company"] = company
    for key, inner in (("emailAddresses", "email"), ("phoneNumbers", "number")):
        values = row.get(key)
        if isinstance(values, list):
            row[key] = [
                str(v.get(inner)) if isinstance(v, dict) else str(v)
                for v in values
                if v is not None and (not isinstance(v, dict) or v.get(inner))
            ]
    return row

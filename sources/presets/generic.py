"""``canonical`` (columns already named like the API fields) and ``generic`` (common header
names of any lead export: Seamless.AI, Hunter, RocketReach, a CRM report, a hand-made sheet).

``generic`` is what ``auto`` falls back to when no tool preset matches. Its names are
compared by ``header_key``, so ``Work Email``, ``work_email`` and ``WORK EMAIL`` are one
name. It maps a column only when the header says unambiguously what it holds: ``Name``
alone is not mapped (person or company?), nor is ``URL``.
"""

from __future__ import annotations

import dataclasses

from destinations.outreach_magic.settings import CANONICAL_FIELDS
from sources.presets.base import Preset

CANONICAL = Preset(
    name="canonical",
    title="Canonical (columns named like the API fields)",
    columns={f: (f,) for f in CANONICAL_FIELDS},
    exact=True,
)

GENERIC = Preset(
    name="generic",
    title="Generic (common header names)",
    columns={
        "lead_email": (
            "Email",
            "Email Address",
            "Work Email",
            "Business Email",
            "Professional Email",
            "Contact Email",
            "E-mail",
            "Email 1",
            "Email 2",
            "Primary Email",
            "Verified Email",
        ),
        "lead_linkedin_url": (
            "Person Linkedin Url",
            "LinkedIn Profile",
            "LinkedIn Profile URL",
            "LinkedIn URL",
            "LinkedIn",
            "Linkedin Link",
            "Contact LinkedIn URL",
            "Contact LI Profile URL",
            "LI Profile URL",
            "Profile URL",
        ),
        "lead_sales_navigator_url": ("Sales Navigator URL", "Sales Nav URL", "Sales Navigator Profile URL"),
        "lead_first_name": ("First Name", "Firstname", "Given Name"),
        "lead_last_name": ("Last Name", "Lastname", "Surname", "Family Name"),
        "lead_full_name": ("Full Name", "Contact Name", "Contact Full Name", "Person Name"),
        "lead_job_title": ("Title", "Job Title", "Position", "Job Position", "Role", "Current Title"),
        "lead_seniority": ("Seniority", "Seniority Level", "Management Level"),
        "lead_function": ("Department", "Departments", "Job Function", "Function"),
        "lead_linkedin_headline": ("Headline", "LinkedIn Headline"),
        "lead_country": ("Country", "Contact Country", "Person Country"),
        "lead_reporting_location": ("Location", "Contact Location", "Person Location"),
        "company_name": (
            "Company",
            "Company Name",
            "Organization",
            "Organization Name",
            "Account Name",
            "Employer",
            "Current Employer",
        ),
        "company_domain": (
            "Company Domain",
            "Domain",
            "Website",
            "Company Website",
            "Website URL",
            "Company URL",
            "Organization Domain",
            "Domain Name",
            "Current Employer Domain",
            "Current Employer Website",
        ),
        "company_linkedin_url": (
            "Company Linkedin Url",
            "Company LinkedIn",
            "Company LinkedIn Profile",
            "Company LI Profile URL",
            "Organization LinkedIn URL",
        ),
        "company_employee_count": (
            "Employees",
            "# Employees",
            "Employee Count",
            "Number of Employees",
            "No. of Employees",
            "Headcount",
            "Company Headcount",
            "Company Employee Count",
            "Company Staff Count",
        ),
        "company_employee_range": (
            "Employee Range",
            "Company Size",
            "Size",
            "Company Size Range",
            "Company Staff Count Range",
            "Employees Range",
        ),
        "company_industry": ("Industry", "Company Industry"),
        "company_country": ("Company Country", "HQ Country", "Company HQ Country"),
        "company_description": ("Company Description", "Description", "About Company"),
    },
)

# Columns already named like the API's fields are recognised too, after the common names,
# so a file mixing ``lead_email`` with ``First Name`` loses neither.
GENERIC = dataclasses.replace(
    GENERIC, columns={f: (*GENERIC.columns.get(f, ()), f) for f in CANONICAL_FIELDS}
)

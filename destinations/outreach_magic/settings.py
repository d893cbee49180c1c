"""Constants of the Outreach Magic ``update_attributes`` contract and of the connector.

Only constants live here (dlt's verified-source style), so that the field lists, the
limits and every **(ours)** choice of ``shared/API-CONTRACT.md`` sit in one place and can
change when the real service answers differently.
"""

from __future__ import annotations

DEFAULT_BASE_URL = "https://api.outreachmagic.io"
EVENTS_PATH = "/v1/events"
EVENT_NAME = "update_attributes"

# --- field groups, in the contract's order (matching priority where it matters)
CORE_FIELDS: tuple[str, ...] = ("event", "platform")
WORKSPACE_ID = "workspace_id"
WORKSPACE_ATTRIBUTES: tuple[str, ...] = (
    "import_name",
    "list_source",
    "exclusion_reason",
    "icp",
    "tags",
    "lead_status",
)
WORKSPACE_FIELDS: tuple[str, ...] = (WORKSPACE_ID, *WORKSPACE_ATTRIBUTES)
LEAD_IDENTIFIERS: tuple[str, ...] = (
    "unified_lead_id",
    "lead_email",
    "lead_linkedin_url",
    "lead_sales_navigator_url",
    "lead_linkedin_id",
)
LEAD_ATTRIBUTES: tuple[str, ...] = (
    "lead_first_name",
    "lead_last_name",
    "lead_full_name",
    "lead_country",
    "lead_job_title",
    "lead_seniority",
    "lead_function",
    "lead_linkedin_headline",
    "lead_reporting_location",
)
COMPANY_IDENTIFIERS: tuple[str, ...] = ("unified_company_id", "company_domain", "company_linkedin_url")
COMPANY_ATTRIBUTES: tuple[str, ...] = (
    "company_name",
    "company_country",
    "company_employee_range",
    "company_industry",
    "company_description",
    "company_employee_count",
    "company_normalized_name",
    "company_normalized_industry",
)
CONNECTION_FIELDS: tuple[str, ...] = ("sender", "linkedin_connection_level")
CONNECTION_LEVELS: tuple[str, ...] = ("1", "2", "3")

ALL_FIELDS: tuple[str, ...] = (
    *CORE_FIELDS,
    *WORKSPACE_FIELDS,
    *LEAD_IDENTIFIERS,
    *LEAD_ATTRIBUTES,
    *COMPANY_IDENTIFIERS,
    *COMPANY_ATTRIBUTES,
    *CONNECTION_FIELDS,
)
# Every field a source row may carry (all but the constant ``event``).
CANONICAL_FIELDS: tuple[str, ...] = tuple(f for f in ALL_FIELDS if f != "event")

# --- value limits (ours)
MIN_STRING_LENGTH = 1
MAX_STRING_LENGTH = 10_000

# --- request limits (ours; the sandbox's defaults and the client's caps)
MAX_ITEMS_PER_REQUEST = 1_000
MAX_BYTES_PER_REQUEST = 10 * 1024 * 1024
DEFAULT_BATCH_SIZE = 100

# --- exact messages the contract fixes
WORKSPACE_RULE_MESSAGE = (
    "Value error: workspace_id is required if any of "
    "['import_name','list_source','exclusion_reason','icp','tags','lead_status'] is present"
)
WORKSPACE_RULE_PREFIX = "Value error: workspace_id is required"
INVALID_API_KEY_MESSAGE = "Invalid API key provided"
RATE_LIMIT_MESSAGE = "Rate limit exceeded"
CONTENT_TYPE_MESSAGE = "Content-Type header must be application/json"

# --- formats (ours): checked as written, never rewritten by the server
HEX_ID_PATTERN = r"^[0-9a-f]{24}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
LINKEDIN_PROFILE_PATTERN = r"^https?://([a-z0-9-]+\.)?linkedin\.com/in/[^/?#\s]+/?$"
SALES_NAVIGATOR_PATTERN = r"^https?://([a-z0-9-]+\.)?linkedin\.com/sales/\S+$"
LINKEDIN_COMPANY_PATTERN = r"^https?://([a-z0-9-]+\.)?linkedin\.com/(company|school|showcase)/[^/?#\s]+/?$"
DOMAIN_PATTERN = r"^[^\s/:@]+\.[^\s/:@]+$"
DIGITS_PATTERN = r"^[0-9]+$"

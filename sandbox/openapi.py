"""An OpenAPI 3 document of the ``update_attributes`` contract, built from ``settings``.

Why it is generated rather than written by hand: the field lists, limits and formats
live in ``destinations/outreach_magic/settings.py`` (and the model in ``contract.py``
uses the same constants), so a document built from them cannot drift from the code that
enforces them. The sandbox serves it at ``GET /openapi.json``, and
``tests/test_security_openapi.py`` fuzzes the running sandbox with it (schemathesis).

What JSON Schema cannot say is said in descriptions and left to the server: the
cross-field rules (workspace, connection, identifier rules 4 to 6), the fact that a
well-formed ``unified_*_id`` must also name a stored record, and the case-insensitive
LinkedIn host (ECMA-262 patterns have no inline ``(?i)``: the document carries the
lower-case spelling, so every value it describes is valid, though not every valid value
is described). Invalid items are *not* a 4xx: the request body admits any object or
non-empty array, and the 200 answer says per index what was applied.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from destinations.outreach_magic import settings as s

_FORMAT_PATTERNS: dict[str, str] = {
    "workspace_id": s.HEX_ID_PATTERN,
    "unified_lead_id": s.HEX_ID_PATTERN,
    "unified_company_id": s.HEX_ID_PATTERN,
    "lead_email": s.EMAIL_PATTERN,
    "lead_linkedin_url": s.LINKEDIN_PROFILE_PATTERN,
    "sender": s.LINKEDIN_PROFILE_PATTERN,
    "lead_sales_navigator_url": s.SALES_NAVIGATOR_PATTERN,
    "company_linkedin_url": s.LINKEDIN_COMPANY_PATTERN,
    "company_domain": s.DOMAIN_PATTERN,
    "company_employee_count": s.DIGITS_PATTERN,
}

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("workspace", s.WORKSPACE_FIELDS),
    ("lead identifier (matching priority order)", s.LEAD_IDENTIFIERS),
    ("lead attribute", s.LEAD_ATTRIBUTES),
    ("company identifier (matching priority order)", s.COMPANY_IDENTIFIERS),
    ("company attribute", s.COMPANY_ATTRIBUTES),
    ("connection", s.CONNECTION_FIELDS),
)


def _string(description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "string",
        "minLength": s.MIN_STRING_LENGTH,
        "maxLength": s.MAX_STRING_LENGTH,
        "description": description,
    }
    if pattern is not None:
        schema["pattern"] = pattern
    return schema


def event_schema() -> dict[str, Any]:
    """The event object: every field of the contract, strict strings, no other keys."""
    properties: dict[str, Any] = {
        "event": {"type": "string", "enum": [s.EVENT_NAME]},
        "platform": _string("source tool, e.g. clay or apollo"),
    }
    for group, fields in _GROUPS:
        for name in fields:
            if name == "tags":
                properties[name] = {"type": "array", "items": _string("a tag"),
                                    "description": "workspace attribute; replaces the stored list"}
            elif name == "linkedin_connection_level":
                properties[name] = {"type": "string", "enum": list(s.CONNECTION_LEVELS),
                                    "description": "connection level of sender to the lead"}
            else:
                properties[name] = _string(group, _FORMAT_PATTERNS.get(name))
    assert set(properties) == set(s.ALL_FIELDS)
    return {
        "type": "object",
        "required": ["event"],
        "additionalProperties": False,
        "properties": properties,
        "description": (
            "One update_attributes event. Cross-field rules the server also applies: "
            f"{s.WORKSPACE_RULE_MESSAGE!r}; sender and linkedin_connection_level together, with a lead "
            "identifier; at least one lead or company identifier; lead (company) attributes need a lead "
            "(company) identifier; a unified_*_id must name a stored record."
        ),
    }


def _error_body() -> dict[str, Any]:
    return {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _result_body() -> dict[str, Any]:
    entry = {
        "type": "object",
        "required": ["msg", "type"],
        "properties": {
            "msg": {"type": "string"},
            "type": {"type": "string"},
            "loc": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
        },
    }
    detail = {
        "type": "object",
        "required": ["index", "error"],
        "properties": {"index": {"type": "integer", "minimum": 0}, "error": {"type": "array", "items": entry}},
    }
    return {
        "type": "object",
        "required": ["errors", "success", "total"],
        "properties": {
            "errors": {
                "type": "object",
                "required": ["count", "details"],
                "properties": {"count": {"type": "integer", "minimum": 0},
                               "details": {"type": "array", "items": detail}},
            },
            "success": {"type": "integer", "minimum": 0},
            "total": {"type": "integer", "minimum": 1},
        },
    }


def _json(ref: str, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}
    if headers:
        out["headers"] = headers
    return out


def _inspection(summary: str, items: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "tags": ["sandbox"],
            "responses": {
                "200": {"description": "the key's tenant only",
                        "content": {"application/json": {"schema": items}}},
                "401": _json("Error", "key missing or unknown"),
            },
        }
    }


def build_openapi(server_url: str | None = None) -> dict[str, Any]:
    """The whole document; ``server_url`` becomes its only server (the sandbox's own URL)."""
    retry_after = {"Retry-After": {"schema": {"type": "integer", "minimum": 1}, "required": True}}
    events_op = {
        "summary": "Apply update_attributes events (one object or a batch)",
        "operationId": "postEvents",
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/UpdateAttributesEvent"},
                    {"type": "array", "minItems": 1, "maxItems": s.MAX_ITEMS_PER_REQUEST,
                     "items": {"$ref": "#/components/schemas/UpdateAttributesEvent"}},
                ],
                "description": (
                    "Items that break the event schema are answered per index in a 200, not with a 4xx. "
                    f"At most {s.MAX_ITEMS_PER_REQUEST} items and {s.MAX_BYTES_PER_REQUEST} bytes."
                ),
            }}},
        },
        "responses": {
            "200": _json("BatchResult", "applied what was valid; success + errors.count == total"),
            "400": _json("Error", "body not JSON, not an object or array, or an empty array"),
            "401": _json("Error", "key missing or unknown"),
            "413": _json("Error", "too many items or too many bytes"),
            "415": _json("Error", "content type missing or not JSON"),
            "429": _json("Error", "rate limited", retry_after),
            "500": _json("Error", "server error (injected by the sandbox's --error-rate)"),
            "502": _json("Error", "bad gateway (injected)"),
            "503": _json("Error", "unavailable (injected)", retry_after),
        },
    }
    lead = {"type": "object", "required": ["unified_lead_id", "identifiers", "attributes"]}
    company = {"type": "object", "required": ["unified_company_id", "identifiers", "attributes"]}
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Outreach Magic update_attributes (sandbox)",
            "version": "1",
            "description": "Generated from destinations/outreach_magic/settings.py; see shared/API-CONTRACT.md.",
        },
        "paths": {
            s.EVENTS_PATH: {"post": events_op},
            "/_sandbox/leads": _inspection("Stored leads (sandbox only)", {"type": "array", "items": lead}),
            "/_sandbox/companies": _inspection("Stored companies (sandbox only)",
                                               {"type": "array", "items": company}),
            "/_sandbox/stats": _inspection("Counters (sandbox only)", {
                "type": "object",
                "required": ["requests", "events_received", "events_applied", "events_rejected", "status_counts"],
            }),
        },
        "components": {
            "schemas": {
                "UpdateAttributesEvent": event_schema(),
                "BatchResult": _result_body(),
                "Error": _error_body(),
            },
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}},
        },
        "security": [{"apiKey": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


async def openapi_endpoint(request: Request) -> JSONResponse:
    """``GET /openapi.json``: the document, with the URL the client reached as its server.

    No key needed: the document describes the public contract and holds no tenant data.
    """
    return JSONResponse(build_openapi(str(request.base_url).rstrip("/")))

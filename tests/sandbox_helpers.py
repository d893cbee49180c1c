"""Small HTTP helpers for tests that inspect a running sandbox (``/_sandbox/*``)."""

from __future__ import annotations

from typing import Any

import httpx

EVENTS = "/v1/events"
# One shared client: creating an httpx.Client per call builds an SSL context (~50 ms).
CLIENT = httpx.Client(timeout=10)


def _get(url: str, key: str, path: str) -> Any:
    response = CLIENT.get(f"{url}{path}", headers={"x-api-key": key})
    response.raise_for_status()
    return response.json()


def sandbox_leads(url: str, key: str) -> list[dict[str, Any]]:
    """Every lead of ``key``'s tenant, in the contract's inspection shape."""
    leads: list[dict[str, Any]] = _get(url, key, "/_sandbox/leads")
    return leads


def sandbox_companies(url: str, key: str) -> list[dict[str, Any]]:
    """Every company of ``key``'s tenant."""
    companies: list[dict[str, Any]] = _get(url, key, "/_sandbox/companies")
    return companies


def sandbox_stats(url: str, key: str) -> dict[str, Any]:
    """The tenant's counters: requests, events_received/applied/rejected, status_counts."""
    stats: dict[str, Any] = _get(url, key, "/_sandbox/stats")
    return stats


def sandbox_reset(url: str, key: str) -> None:
    CLIENT.post(f"{url}/_sandbox/reset", headers={"x-api-key": key}).raise_for_status()


def post_events(url: str, key: str, body: Any, **kwargs: Any) -> httpx.Response:
    """POST ``body`` as JSON to ``/v1/events`` with ``key``."""
    return CLIENT.post(f"{url}{EVENTS}", json=body, headers={"x-api-key": key}, **kwargs)


def lead_by(leads: list[dict[str, Any]], field: str, value: str) -> list[dict[str, Any]]:
    """The leads carrying identifier ``value`` in ``field``."""
    return [lead for lead in leads if value in lead["identifiers"].get(field, [])]

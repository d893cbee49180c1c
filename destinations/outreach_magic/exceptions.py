"""Errors classified by what to do about them (dlt's style): terminal or transient.

Terminal errors stop a run and mark nothing as synced; transient ones leave the affected
items unconfirmed so that the next run sends them again. No message here ever includes
the API key.
"""

from __future__ import annotations


class OutreachMagicError(Exception):
    """Base of every error this connector raises on purpose."""


class TerminalError(OutreachMagicError):
    """Retrying will not help: fix configuration or code first."""


class TransientError(OutreachMagicError):
    """The same call may succeed later (outage, rate limit, network)."""


class ConfigurationError(TerminalError):
    """Missing or invalid settings (API key, base URL, state path...)."""


class AuthenticationError(TerminalError):
    """The API answered 401: the key is missing or unknown. Nothing was marked synced."""


class InsecureTransportError(ConfigurationError):
    """Refused to send the API key over plain HTTP to a host that is not loopback."""


class ApiContractError(TerminalError):
    """The API answered a 4xx we cannot act on: a bug in what we sent."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"Outreach Magic answered HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


class ApiUnavailableError(TransientError):
    """Retries were exhausted (5xx, timeouts, resets, 429): the items stay unconfirmed."""


class SourceError(TerminalError):
    """A source could not be read at all (missing file, unknown format, bad query)."""

"""The delivery client's whole retry decision, in one function (stripe-python's style).

Why one function: every answer the API can give (a status, a transport error, a 200 whose
body we cannot read) ends up as exactly one :class:`Decision`, so the policy can be read
top to bottom, tested without a socket, and changed in one place when the real service
answers differently. Jitter is a separate, injectable callable so tests switch it off.

The policy (``shared/DESIGN.md`` "Delivery rules"):

* 2xx with a readable result body: done (the body, not the status, says what was applied);
* 429: slow down (halve the in-flight limit) and wait at least ``Retry-After``; 429s have
  their own, larger budget because being throttled is normal, not a failure;
* 503: wait at least ``Retry-After`` too and slow down; counts as a failed attempt;
* other 5xx, 408, timeouts, connection errors, lost responses (``RemoteProtocolError``)
  and a 2xx whose body is not the result object: capped exponential backoff with jitter.
  Resending is safe because upserts are idempotent;
* 413: split the batch in halves; a single item that is still too large is rejected;
* 401: stop the run; any other 4xx (or 3xx): a bug in what we sent, fail loudly;
* attempts exhausted: give up on that batch only (its items stay unconfirmed).
"""

from __future__ import annotations

import email.utils
import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

# A server asking us to wait longer than this is treated as asking for this long:
# a run should not sleep for hours on one header.
MAX_RETRY_AFTER = 300.0
# 429s are expected under a rate limit: they get this many times the error budget.
THROTTLE_BUDGET_FACTOR = 4

Jitter = Callable[[float], float]


def full_jitter(delay: float) -> float:
    """AWS's "full jitter": a uniform delay in ``[0, delay]`` spreads clients apart best."""
    return random.uniform(0.0, delay)


def no_jitter(delay: float) -> float:
    return delay


class Action(enum.Enum):
    ACCEPT = "accept"  # 2xx with a readable result body
    RETRY = "retry"  # wait ``delay``, send the same batch again
    THROTTLE = "throttle"  # like RETRY, and lower the concurrency limit
    SPLIT = "split"  # 413 with more than one item: send each half
    REJECT_ITEM = "reject_item"  # 413 with a single item: permanently too large
    GIVE_UP = "give_up"  # transient, but the attempts are exhausted
    AUTH_ERROR = "auth_error"  # 401: stop the run
    CONTRACT_ERROR = "contract_error"  # other 4xx/3xx: stop the run, it is our bug


@dataclass(frozen=True)
class RetryPolicy:
    """Budgets and backoff shape; ``jitter=None`` means exact delays (tests)."""

    max_attempts: int = 8
    backoff_base: float = 0.25
    backoff_cap: float = 30.0
    jitter: Jitter | None = full_jitter

    def backoff(self, attempt: int) -> float:
        """Capped exponential delay before retry number ``attempt`` (1-based), jittered."""
        delay = min(self.backoff_cap, self.backoff_base * (2 ** max(0, attempt - 1)))
        return self.jitter(delay) if self.jitter is not None else delay


@dataclass(frozen=True)
class Decision:
    action: Action
    delay: float = 0.0
    reason: str = ""  # short, key-free description of what happened ("HTTP 503", "ReadTimeout")


class MalformedResponse(Exception):
    """A 2xx whose body is not the contract's result object (decided: transient, retried)."""


# Transport errors worth another try: the request may not have reached the server, or
# the answer was lost on the way back (then the server may have applied it: resending is
# idempotent). UnsupportedProtocol / LocalProtocolError are bugs and are not listed.
TRANSPORT_ERRORS: tuple[type[httpx.TransportError], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
    httpx.ProxyError,
)
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (*TRANSPORT_ERRORS, MalformedResponse)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


def decide(
    result: httpx.Response | BaseException,
    *,
    attempt: int,
    throttles: int,
    batch_len: int,
    policy: RetryPolicy,
) -> Decision:
    """What to do after one try of one batch.

    ``attempt`` counts the failed tries so far *including this one* (not counting 429s),
    ``throttles`` the 429s so far including this one. The caller has already checked a
    2xx body; a 2xx reaching here means it was readable (pass :class:`MalformedResponse`
    otherwise).
    """
    if isinstance(result, BaseException):
        if not isinstance(result, RETRYABLE_ERRORS):
            raise result
        reason = "malformed response body" if isinstance(result, MalformedResponse) else type(result).__name__
        return _retry_or_give_up(Action.RETRY, reason, attempt, policy, floor=0.0)

    status = result.status_code
    reason = f"HTTP {status}"
    if 200 <= status < 300:
        return Decision(Action.ACCEPT, reason=reason)
    if status == 401:
        return Decision(Action.AUTH_ERROR, reason=reason)
    if status == 413:
        return Decision(Action.SPLIT if batch_len > 1 else Action.REJECT_ITEM, reason=reason)
    retry_after = parse_retry_after(result.headers.get("retry-after"))
    if status == 429:
        if throttles >= policy.max_attempts * THROTTLE_BUDGET_FACTOR:
            return Decision(Action.GIVE_UP, reason=reason)
        # Honour the server's wait exactly (it knows its bucket), never less than backoff.
        delay = max(retry_after or 0.0, policy.backoff(throttles))
        return Decision(Action.THROTTLE, delay=delay, reason=reason)
    if status == 503:
        return _retry_or_give_up(Action.THROTTLE, reason, attempt, policy, floor=retry_after or 0.0)
    if status >= 500 or status == 408:
        return _retry_or_give_up(Action.RETRY, reason, attempt, policy, floor=retry_after or 0.0)
    return Decision(Action.CONTRACT_ERROR, reason=reason)


def _retry_or_give_up(
    action: Action, reason: str, attempt: int, policy: RetryPolicy, *, floor: float
) -> Decision:
    if attempt >= policy.max_attempts:
        return Decision(Action.GIVE_UP, reason=reason)
    return Decision(action, delay=max(floor, policy.backoff(attempt)), reason=reason)

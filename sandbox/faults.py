"""Fault injection for ``POST /v1/events``: latency, rate limit, 5xx, drops, lost responses.

All randomness comes from one ``random.Random`` seeded by ``--seed``, and each request
that reaches the fault stage draws exactly twice, so a given seed and request order give
the same faults every run. One uniform draw is split into disjoint bands
(error, then drop, then lost), so each rate is exactly the fraction of requests that get
that fault; the rates must therefore add up to at most 1.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from enum import Enum


class Fault(Enum):
    NONE = "none"
    ERROR_503 = "503"
    ERROR_500 = "500"
    ERROR_502 = "502"
    DROP = "drop"
    LOST = "lost"


_ERRORS = (Fault.ERROR_503, Fault.ERROR_500, Fault.ERROR_502)


@dataclass
class FaultSettings:
    """The fault flags of ``outreach-magic sandbox``; everything off by default."""

    latency_ms: float = 0.0
    rate_limit: float | None = None
    error_rate: float = 0.0
    drop_rate: float = 0.0
    lost_response_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("error_rate", "drop_rate", "lost_response_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.error_rate + self.drop_rate + self.lost_response_rate > 1.0 + 1e-9:
            raise ValueError("error_rate + drop_rate + lost_response_rate must not exceed 1")
        if self.latency_ms < 0:
            raise ValueError("latency_ms must not be negative")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be positive")


@dataclass
class TokenBucket:
    """At most ``rate`` requests a second with a burst of ``rate`` (the contract's limiter)."""

    rate: float
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = max(self.rate, 1.0)

    def take(self, now: float | None = None) -> int:
        """0 when a token was taken, else the whole seconds (>= 1) until one is available."""
        now = time.monotonic() if now is None else now
        self.tokens = min(max(self.rate, 1.0), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


class FaultInjector:
    """Decides, per request, which fault (if any) it gets."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = settings
        self._rng = random.Random(settings.seed)
        self._buckets: dict[str, TokenBucket] = {}
        self.active = bool(settings.error_rate or settings.drop_rate or settings.lost_response_rate)

    @property
    def latency_s(self) -> float:
        return self.settings.latency_ms / 1000.0

    def retry_after(self, tenant_id: str) -> int:
        """0 when the tenant's request may go on, else the ``Retry-After`` seconds of a 429."""
        rate = self.settings.rate_limit
        if rate is None:
            return 0
        bucket = self._buckets.get(tenant_id)
        if bucket is None:
            bucket = self._buckets[tenant_id] = TokenBucket(rate)
        return bucket.take()

    def draw(self) -> Fault:
        if not self.active:
            return Fault.NONE
        u, pick = self._rng.random(), self._rng.random()
        st = self.settings
        if u < st.error_rate:
            return _ERRORS[min(int(pick * 3), 2)]
        if u < st.error_rate + st.drop_rate:
            return Fault.DROP
        if u < st.error_rate + st.drop_rate + st.lost_response_rate:
            return Fault.LOST
        return Fault.NONE

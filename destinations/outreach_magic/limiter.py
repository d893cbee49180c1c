"""An AIMD limit on requests in flight: halve on "slow down", grow back by one per window.

Why AIMD rather than a fixed rate: the client does not know the server's rate limit (it
is per key and may change), and a fixed pace either wastes capacity or keeps hitting
429. Halving on a throttle answer and adding about one slot per window of successes
(TCP's congestion avoidance) converges on what the server accepts and recovers by
itself. Only one halving per "epoch": requests that were already in flight when the
limit dropped report the same congestion and must not halve it again.
"""

from __future__ import annotations

import asyncio
import time


class AdaptiveLimiter:
    def __init__(self, max_limit: int) -> None:
        self.max_limit = max_limit
        self.limit = float(max_limit)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.min_limit = max_limit
        self.epoch = 0
        self.resume_at = 0.0  # time.monotonic() before which no new request should start
        self._cond = asyncio.Condition()

    @property
    def slots(self) -> int:
        return max(1, int(self.limit))

    async def acquire(self) -> int:
        """Wait for a slot; returns the epoch the request starts in (for :meth:`throttled`)."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.slots)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return self.epoch

    async def release(self) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    def succeeded(self) -> None:
        """Additive increase: about +1 slot per window of successful requests."""
        self.limit = min(float(self.max_limit), self.limit + 1.0 / self.limit)

    def throttled(self, epoch: int, pause: float = 0.0) -> None:
        """Multiplicative decrease, once per epoch; ``pause`` holds back new requests too."""
        if pause > 0:
            self.resume_at = max(self.resume_at, time.monotonic() + pause)
        if epoch == self.epoch:
            self.limit = max(1.0, self.limit / 2.0)
            self.min_limit = min(self.min_limit, self.slots)
            self.epoch += 1

    def pause_remaining(self) -> float:
        return max(0.0, self.resume_at - time.monotonic())

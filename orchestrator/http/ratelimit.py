"""A shared token bucket that spaces out HTTP request attempts.

One bucket is shared by every request a client makes (retries included), so thousands of runs
polling at once still stay under ``api.max_requests_per_second``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import anyio

__all__ = ["RateLimiter", "TokenBucket"]


class RateLimiter(Protocol):
    """Anything that can hold a request back until it may go."""

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""
        ...


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; each ``acquire`` takes one.

    Waiters are served first come, first served: the lock is held while the head waiter sleeps,
    so a cancelled waiter gives its turn away without having spent a token.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = burst
        self._stamp = clock()
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate!r}, burst={self.burst!r})"

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self) -> None:
        """Take one token, waiting for it when the bucket is empty."""
        async with self._lock:
            self._refill()
            if self._tokens < 1:
                await self._sleep((1 - self._tokens) / self.rate)
                self._refill()
            # May dip a hair below zero through float rounding; the next waiter pays it back.
            self._tokens -= 1

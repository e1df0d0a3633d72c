"""Which failed HTTP attempts are tried again, and after how long (tenacity underneath).

The rules follow the official SDK: retry 408, 409, 429 and >= 500, connection errors and
timeouts; ``x-should-retry: true/false`` overrides the status rule; the server's
``retry-after-ms`` / ``retry-after`` delay is honoured up to ``retry.max_retry_after`` and a
longer demand fails at once; otherwise exponential back-off with jitter.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

import anyio
import tenacity

from orchestrator import config, errors

__all__ = [
    "RETRY_STATUSES",
    "RetryPolicy",
    "Retryable",
    "backoff",
    "parse_retry_after",
    "should_retry",
]

R = TypeVar("R")

#: Statuses retried besides every status >= 500.
RETRY_STATUSES: Final = frozenset({408, 409, 429})


class Retryable(Exception):
    """Internal signal raised by an attempt: ``error`` may go away if the request is sent again.

    ``delay`` is the wait the server asked for (seconds), if any. ``RetryPolicy.call`` never lets
    this escape: when attempts run out it raises ``error`` itself.
    """

    def __init__(self, error: errors.OrchestratorError, delay: float | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.delay = delay


def should_retry(status: int, headers: Mapping[str, str]) -> bool:
    """Whether an error status is worth another attempt (``x-should-retry`` wins)."""
    override = headers.get("x-should-retry", "").strip().lower()
    if override == "true":
        return True
    if override == "false":
        return False
    return status in RETRY_STATUSES or status >= 500


def _finite(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, then ``retry-after`` as seconds or
    as an HTTP date; None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None and (value := _finite(ms)) is not None:
        return value / 1000.0
    text = headers.get("retry-after")
    if text is None:
        return None
    if (value := _finite(text)) is not None:
        return value
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - (time.time() if now is None else now)


def backoff(
    retry: config.RetryConfig, retries_done: int, rand: Callable[[], float] = random.random
) -> float:
    """``min(initial * 2**n, max)`` seconds, shortened by up to a quarter at random."""
    base = min(retry.initial_backoff * 2.0 ** min(retries_done, 62), retry.max_backoff)
    return base * (1.0 - 0.25 * rand())


#: Called before each retry sleep with (failed attempt number, its error, seconds to wait).
OnRetry = Callable[[int, errors.OrchestratorError, float], None]


class RetryPolicy:
    """Runs one logical request through ``retry.attempts`` attempts."""

    def __init__(
        self,
        retry: config.RetryConfig,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = retry
        self._sleep = sleep
        self._rand = rand

    def judge(self, error: errors.APIError, headers: Mapping[str, str]) -> Exception:
        """What an attempt should raise for an error answer: ``Retryable(error)`` when worth
        another try, a ``RateLimitError`` when the server asks to wait longer than the cap, or
        the error itself."""
        if not should_retry(error.status, headers):
            return error
        delay = error.retry_after
        cap = self.config.max_retry_after
        if delay is not None and delay > cap:
            if isinstance(error, errors.RateLimitError):
                return error
            limited = errors.RateLimitError(
                f"server asked to wait {delay:g} s (cap {cap:g} s): {error.message}",
                status=error.status,
                type=error.type,
                code=error.code,
                param=error.param,
                request_id=error.request_id,
                retry_after=delay,
            )
            limited.__cause__ = error
            return limited
        return Retryable(error, delay if delay is not None and delay > 0 else None)

    async def call(
        self, attempt: Callable[[int], Awaitable[R]], on_retry: OnRetry | None = None
    ) -> R:
        """Await ``attempt(n)`` for n = 1, 2, ... while it raises ``Retryable``."""
        # Nearly every first attempt succeeds: it goes without building a tenacity loop (its
        # state, closures and per-call inspection cost a third of a poll's client CPU).
        try:
            return await attempt(1)
        except Retryable as exc:
            first = exc
        if self.config.attempts <= 1:
            raise first.error from first.error.__cause__
        delay = first.delay if first.delay is not None else backoff(self.config, 0, self._rand)
        if on_retry is not None:
            on_retry(1, first.error, delay)
        await self._sleep(delay)
        return await self._retry(attempt, on_retry)

    async def _retry(self, attempt: Callable[[int], Awaitable[R]], on_retry: OnRetry | None) -> R:
        """Attempts 2..n, after the first failed."""
        count = 1

        async def once() -> R:
            nonlocal count
            count += 1
            return await attempt(count)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, Retryable) and exc.delay is not None:
                return exc.delay
            # tenacity counts from our second attempt: its attempt k is our k + 1.
            return backoff(self.config, state.attempt_number, self._rand)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and isinstance(exc, Retryable):
                on_retry(state.attempt_number + 1, exc.error, state.upcoming_sleep)

        # Built per call: tenacity keeps per-call state on the instance.
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.config.attempts - 1),
            wait=wait,
            retry=tenacity.retry_if_exception_type(Retryable),
            before_sleep=before_sleep,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return await retrying(once)
        except Retryable as exc:
            raise exc.error from exc.error.__cause__

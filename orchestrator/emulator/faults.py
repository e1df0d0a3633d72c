"""Seeded fault draws, the rate-limit window, and the responses both produce.

One ``random.Random(seed)`` decides every fault, one uniform draw per request, so the same seed
and the same sequence of requests give the same faults.
"""

from __future__ import annotations

import math
import random
from typing import Final

from aiohttp import web

from orchestrator.emulator import replies, settings

__all__ = [
    "STATIC_LIMITS",
    "Faults",
    "Injection",
    "RateLimited",
    "drop",
    "error_for",
    "malformed",
]

_MALFORMED_PREFIX: Final = b'{"id": "run_'
STATIC_LIMITS: Final = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "30000000",
    "x-ratelimit-remaining-tokens": "29999000",
    "x-ratelimit-reset-tokens": "2ms",
}


class RateLimited(replies.ApiError):
    """429 from the rate-limit mode."""


class Injection:
    """One fault promised to the next request(s) matching a method and a path ending."""

    __slots__ = ("after_apply", "kind", "method", "path_suffix", "times")

    def __init__(
        self,
        kind: settings.FaultKind,
        *,
        method: str,
        path_suffix: str,
        times: int,
        after_apply: bool,
    ) -> None:
        self.kind = kind
        self.method = method
        self.path_suffix = path_suffix
        self.times = times
        self.after_apply = after_apply


class Faults:
    """Decides which requests fail, and how."""

    __slots__ = ("_count", "_rng", "_window", "injections", "settings", "table")

    def __init__(self, s: settings.EmulatorSettings) -> None:
        self.settings = s
        self.table = s.fault_table()
        self._rng = random.Random(s.seed)
        self._window = 0.0
        self._count = 0
        #: Faults promised to particular requests (tests), before any random draw.
        self.injections: list[Injection] = []

    def injected(self, method: str, path: str) -> Injection | None:
        """The injection this request takes (counting it down), or None."""
        for injection in self.injections:
            if injection.method == method and path.endswith(injection.path_suffix):
                injection.times -= 1
                if injection.times <= 0:
                    self.injections.remove(injection)
                return injection
        return None

    def configure(self, s: settings.EmulatorSettings) -> None:
        """New settings; a new seed restarts the draws."""
        if s.seed != self.settings.seed:
            self._rng = random.Random(s.seed)
        self.settings = s
        self.table = s.fault_table()

    def reset(self) -> None:
        """Restart the draws and the rate-limit window; forget injections."""
        self.injections.clear()
        self._rng = random.Random(self.settings.seed)
        self._window = 0.0
        self._count = 0

    def draw(
        self, table: tuple[tuple[float, settings.FaultKind], ...]
    ) -> settings.FaultKind | None:
        """The fault for one request, or None."""
        u = self._rng.random()
        for threshold, kind in table:
            if u < threshold:
                return kind
        return None

    def draw_cut(self, p: float) -> int | None:
        """How many events a stream sends before it is cut, or None when it is not."""
        if p <= 0 or self._rng.random() >= p:
            return None
        return self._rng.randint(1, 3)

    def limit_headers(self, now: float) -> dict[str, str]:
        """Count one request against the rate limit; raise ``RateLimited`` past it."""
        rps = self.settings.rate_limit_rps
        if rps is None:
            return STATIC_LIMITS
        if now - self._window >= 1.0:
            self._window, self._count = now, 0
        self._count += 1
        limit = math.ceil(rps)
        reset_ms = max(1, math.ceil((self._window + 1.0 - now) * 1000))
        headers = {
            **STATIC_LIMITS,
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(max(0, limit - self._count)),
            "x-ratelimit-reset-requests": f"{reset_ms}ms",
        }
        if self._count > rps:
            headers["retry-after-ms"] = str(reset_ms)
            headers["retry-after"] = str(math.ceil(reset_ms / 1000))
            raise RateLimited(
                429,
                f"Rate limit reached for requests per second (RPS): Limit {limit}, Used "
                f"{limit}, Requested 1. Please try again in {reset_ms}ms.",
                type="requests",
                code="rate_limit_exceeded",
                headers=headers,
            )
        return headers


def error_for(kind: settings.FaultKind, fs: settings.FaultSettings) -> replies.ApiError:
    """The error response of an injected fault (not ``drop``, ``slow`` or ``malformed``)."""
    if kind == "429":
        ms = fs.retry_after_ms
        return replies.ApiError(
            429,
            f"Rate limit reached for requests. Please try again in {ms}ms.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after-ms": str(ms), "retry-after": str(max(1, math.ceil(ms / 1000)))},
        )
    if kind == "503":
        return replies.ApiError(
            503, "The server is overloaded or not ready yet.", type="server_error"
        )
    headers = {"x-should-retry": "false"} if kind == "no_retry" else None
    return replies.ApiError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
        headers=headers,
    )


def malformed(resp: web.StreamResponse | None) -> web.Response:
    """A 200 whose JSON body is cut in half (or a bare fragment when there is none)."""
    body = resp.body if isinstance(resp, web.Response) else None
    whole = isinstance(body, bytes) and len(body) > 2
    cut = body[: len(body) // 2] if whole and isinstance(body, bytes) else _MALFORMED_PREFIX
    return web.Response(body=cut, status=200, headers={"Content-Type": "application/json"})


def drop(request: web.Request) -> web.Response:
    """Close the connection without an answer; the returned response is never sent."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=204)

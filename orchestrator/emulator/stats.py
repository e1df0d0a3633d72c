"""What the emulator saw: requests by route template and status, runs by status, faults."""

from __future__ import annotations

from collections import Counter

import msgspec

__all__ = ["Counters", "EmulatorStats"]


class EmulatorStats(msgspec.Struct, kw_only=True):
    """A snapshot, as served by ``GET /_emulator/stats``.

    Route templates read like ``"POST /v1/threads/{thread_id}/runs"``; statuses are HTTP codes as
    strings, or ``"dropped"`` for a connection closed without an answer.
    """

    #: Every API request (``/_emulator`` routes excluded).
    requests_total: int = 0
    #: route template -> status -> count.
    requests: dict[str, dict[str, int]] = {}
    #: run status -> count, as of the snapshot.
    runs: dict[str, int] = {}
    #: injected fault kind -> count (``stream_cut`` included; rate-limit 429s are not faults).
    faults: dict[str, int] = {}

    def count(
        self,
        route: str | None = None,
        status: int | str | None = None,
        *,
        contains: str | None = None,
    ) -> int:
        """Requests to ``route`` (or to every route containing ``contains``) with ``status``."""
        total = 0
        want = None if status is None else str(status)
        for name, by_status in self.requests.items():
            if route is not None and name != route:
                continue
            if contains is not None and contains not in name:
                continue
            total += sum(n for s, n in by_status.items() if want is None or s == want)
        return total


class Counters:
    """Live counters behind ``EmulatorStats``."""

    __slots__ = ("faults", "requests")

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()
        self.faults: Counter[str] = Counter()

    def clear(self) -> None:
        """Start counting from zero."""
        self.requests.clear()
        self.faults.clear()

    def snapshot(self, runs: dict[str, int]) -> EmulatorStats:
        """The counters as an ``EmulatorStats``."""
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), n in self.requests.items():
            by_route.setdefault(route, {})[status] = n
        return EmulatorStats(
            requests_total=sum(self.requests.values()),
            requests=by_route,
            runs=runs,
            faults=dict(self.faults),
        )

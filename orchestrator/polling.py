"""Adaptive polling, the same for every protocol: the interval backs off while nothing changes
and starts over when something does, with jitter, never sooner than the server's
``openai-poll-after-ms`` hint when ``poll.honour_server_hint`` is on."""

from __future__ import annotations

import random
import time

import anyio

from orchestrator import config

__all__ = ["Poller", "next_poll"]


def next_poll(poll: config.PollConfig, interval: float, hint_ms: int | None) -> float:
    """Seconds to the next poll: ``interval`` with jitter, at least the server's hint."""
    delay = interval * random.uniform(1 - poll.jitter, 1 + poll.jitter)
    if poll.honour_server_hint and hint_ms is not None and hint_ms > 0:
        delay = max(delay, hint_ms / 1000)
    return delay


class Poller:
    """The state of one object's polling: the current interval and the server's last hint."""

    __slots__ = ("hint_ms", "interval", "poll")

    def __init__(self, poll: config.PollConfig) -> None:
        self.poll = poll
        self.interval = poll.initial_interval
        self.hint_ms: int | None = None

    def delay(self) -> float:
        """Seconds to wait before the next poll."""
        return next_poll(self.poll, self.interval, self.hint_ms)

    async def pause(self, until: float) -> None:
        """Sleep until the next poll is due, or ``until`` (Unix time) if that comes first: the
        caller then looks once more, so an object that ended meanwhile is seen ended."""
        await anyio.sleep(max(0.0, min(self.delay(), until - time.time())))

    def seen(self, *, changed: bool, hint_ms: int | None) -> None:
        """A poll answered: start over when the object changed, else back off."""
        self.hint_ms = hint_ms
        poll = self.poll
        if changed:
            self.interval = poll.initial_interval
        else:
            self.interval = min(self.interval * poll.multiplier, poll.max_interval)

    def reset(self, hint_ms: int | None = None) -> None:
        """A new object (or a new round): poll it at the initial interval."""
        self.interval = self.poll.initial_interval
        self.hint_ms = hint_ms

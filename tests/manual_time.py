"""A manual clock for tests of time-based code (no sleeping, no wall-clock asserts)."""

from __future__ import annotations

import anyio


class ManualTime:
    """A clock that only moves when the test says so; sleepers wake when it passes them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.requested: list[float] = []
        self.sleepers: list[tuple[float, anyio.Event]] = []
        self.someone_sleeps = anyio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        wake = anyio.Event()
        self.sleepers.append((self.now + seconds, wake))
        self.someone_sleeps.set()
        await wake.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.someone_sleeps = anyio.Event()
        due = [s for s in self.sleepers if s[0] <= self.now]
        self.sleepers = [s for s in self.sleepers if s[0] > self.now]
        for _, wake in due:
            wake.set()

"""In-memory state: assistants, threads, runs, and the lookups and pages over them.

A run's wire object (``models.Run``) is kept and mutated in place, so a response is one encode
of a struct that already exists. What the wire object does not hold (script position, when the
current status began, the live tool-call step) sits beside it in ``RunState``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

from orchestrator.emulator import script, settings
from orchestrator.protocols.assistants import models

__all__ = ["PageError", "RunState", "Store", "ThreadState", "new_id", "page"]

T = TypeVar("T")


def new_id(prefix: str) -> str:
    """A random id like the API's: ``run_`` + 24 hex digits."""
    return prefix + os.urandom(12).hex()


class ThreadState:
    """A thread, its messages (oldest first), its runs, and the run that holds its lock."""

    __slots__ = ("active", "messages", "runs", "thread")

    def __init__(self, thread: models.Thread) -> None:
        self.thread = thread
        self.messages: list[models.Message] = []
        self.runs: list[RunState] = []
        self.active: RunState | None = None


class RunState:
    """A run's wire object plus what the lifecycle needs to move it on."""

    __slots__ = (
        "deadline",
        "fault_table",
        "faults",
        "outputs",
        "round",
        "run",
        "script",
        "since",
        "sink",
        "steps",
        "thread",
        "tool_step",
        "wake",
    )

    def __init__(
        self,
        run: models.Run,
        thread: ThreadState,
        rounds: tuple[script.Round, ...],
        *,
        now: float,
        ttl: float,
    ) -> None:
        self.run = run
        self.thread = thread
        self.script = rounds
        #: Index of the round in progress (past the end: the closing message).
        self.round = 0
        #: When the current status began.
        self.since = now
        #: ``expires_at`` with sub-second precision.
        self.deadline = now + ttl
        #: (function name, output) of every submitted output, for the closing message.
        self.outputs: list[tuple[str, str]] = []
        self.steps: list[models.RunStep] = []
        #: The ``tool_calls`` step waiting for outputs.
        self.tool_step: models.RunStep | None = None
        #: Per-run faults from ``emulator_faults`` metadata (None: the global ones).
        self.faults: settings.FaultSettings | None = None
        self.fault_table: tuple[tuple[float, settings.FaultKind], ...] = ()
        #: SSE frames produced while a stream follows this run (None: nobody listens).
        self.sink: list[bytes] | None = None
        #: Set when another request changed the run, to wake its stream.
        self.wake: asyncio.Event | None = None

    def current_round(self) -> script.Round:
        """The round being worked on."""
        rounds = self.script
        return rounds[self.round] if self.round < len(rounds) else script.FINAL

    def poke(self) -> None:
        """Wake the stream following this run, if any."""
        if self.wake is not None:
            self.wake.set()


class Store:
    """Every object the emulator holds, by id."""

    __slots__ = ("assistants", "runs", "threads")

    def __init__(self) -> None:
        self.assistants: dict[str, models.Assistant] = {}
        self.threads: dict[str, ThreadState] = {}
        self.runs: dict[str, RunState] = {}

    def clear(self) -> None:
        """Forget everything."""
        self.assistants.clear()
        self.threads.clear()
        self.runs.clear()


class PageError(Exception):
    """A page request refused as invalid (``param`` names the query parameter)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def page(
    items: Sequence[T],
    key: Callable[[T], str],
    *,
    limit: str | None,
    order: str | None,
    after: str | None,
    before: str | None,
) -> tuple[list[T], bool]:
    """One page of ``items`` (oldest first) by the API's cursor rules: (page, has_more)."""
    n = 20
    if limit is not None:
        try:
            n = int(limit)
        except ValueError:
            raise PageError(
                f"Invalid 'limit': expected an integer, got {limit!r}.", "limit"
            ) from None
        if not 1 <= n <= 100:
            raise PageError(f"Invalid 'limit': expected a value within 1..100, got {n}.", "limit")
    if order not in (None, "asc", "desc"):
        raise PageError(f"Invalid 'order': expected 'asc' or 'desc', got {order!r}.", "order")
    seq = list(items) if order == "asc" else list(reversed(items))
    start, stop = 0, len(seq)
    ids = [key(x) for x in seq] if (after or before) else []
    if after:
        start = ids.index(after) + 1 if after in ids else len(seq)
    if before:
        stop = ids.index(before) if before in ids else 0
        if not after:  # the items just before the cursor, in the same order
            start = max(0, stop - n)
            return seq[start:stop], start > 0
    chunk = seq[start:stop]
    return chunk[:n], len(chunk) > n

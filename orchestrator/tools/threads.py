"""Sync tool bodies on daemon threads of their own, which a timeout may abandon.

Why not ``anyio.to_thread.run_sync(abandon_on_cancel=True)``: its caller learns nothing when an
abandoned body finally returns, so the concurrency slot of a timed-out call was freed while its
thread ran on (``tools.concurrency: 2`` let 40 bodies run at once), and anyio's worker threads
are not daemons, so one body that never returns held up interpreter exit.

Here each body runs on a daemon thread (idle ones are reused for a while, as anyio's are: a
new thread per call cost about twice the dispatch time of trivial tools), and ``release`` (the
slot) is called once the body has really returned, however the awaiting side ended. Daemon,
because an abandoned body has already
been reported as a timeout and nobody waits for its result: at exit it stops with the process,
as it would on SIGKILL, instead of keeping a finished worker alive. (A tool with cleanup that
must run should be async, or bound its own blocking calls.) The number of abandoned threads
is process-wide, since threads are; ``AbandonedThreads`` counts them so that dispatch can refuse
to start another sync body past ``tools.max_abandoned_threads``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any, Final

import anyio

__all__ = ["AbandonedThreads", "abandoned", "run"]


class AbandonedThreads:
    """How many sync tool bodies were given up on and have not returned yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        """Threads abandoned and still running."""
        return self._count

    def _add(self, n: int) -> None:
        with self._lock:
            self._count += n


#: The process's abandoned tool threads (a process-wide resource, hence one counter).
abandoned = AbandonedThreads()

#: Seconds an idle worker thread waits for another body before it ends.
IDLE_SECONDS: Final = 10.0


class _Workers:
    """Daemon threads taking bodies from one queue; a new one starts when none is idle."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: Idle threads no job has been promised to (waiting threads = this + jobs queued).
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            reuse = self._idle > 0
            if reuse:
                self._idle -= 1
        if reuse:
            self._jobs.put(job)
        else:
            threading.Thread(
                target=self._work, args=(job,), name="orchestrator tool", daemon=True
            ).start()

    def _work(self, job: Callable[[], None]) -> None:
        while True:
            job()
            del job  # hold nothing of a finished call while idle
            with self._lock:
                self._idle += 1
            while True:
                try:
                    job = self._jobs.get(timeout=IDLE_SECONDS)
                    break
                except queue.Empty:
                    with self._lock:
                        if self._idle > 0:  # no job is promised to a waiting thread: leave
                            self._idle -= 1
                            return


_workers = _Workers()


class _Call:
    """One body on its thread; ``outcome`` and ``given_up`` change under ``lock`` only."""

    def __init__(
        self, fn: Callable[[], Any], release: Callable[[], None], counter: AbandonedThreads
    ) -> None:
        self.fn = fn
        self.release = release
        self.counter = counter
        self.context = contextvars.copy_context()  # what to_thread.run_sync would pass on
        self.loop = asyncio.get_running_loop()
        self.done = anyio.Event()
        self.lock = threading.Lock()
        self.outcome: tuple[Any, BaseException | None] | None = None
        self.given_up = False

    def body(self) -> None:
        """The thread's target: run, then hand the outcome (or the slot) back to the loop."""
        try:
            outcome: tuple[Any, BaseException | None] = (self.context.run(self.fn), None)
        except BaseException as exc:  # handed to the awaiting side, or dropped if it left
            outcome = (None, exc)
        with self.lock:
            self.outcome = outcome
            given_up = self.given_up
        if given_up:
            self.counter._add(-1)
            self._post(self.release)
        else:
            self._post(self.done.set)

    def _post(self, fn: Callable[[], None]) -> None:
        # a closed loop raises RuntimeError: no slot or waiter is left to tell
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(fn)

    def give_up(self) -> bool:
        """Abandon the body unless it already returned; True if its thread now owns the slot."""
        with self.lock:
            if self.outcome is not None:
                return False
            self.given_up = True
        self.counter._add(1)
        return True


async def run(
    fn: Callable[[], Any],
    *,
    release: Callable[[], None],
    counter: AbandonedThreads = abandoned,
) -> Any:
    """Run ``fn`` on a daemon thread and return (or raise) what it did.

    ``release`` is called exactly once, in the event loop, when ``fn`` has returned: before this
    coroutine returns, or later if it was cancelled first (the body is then abandoned, counted in
    ``counter`` until it returns).
    """
    call = _Call(fn, release, counter)
    try:
        _workers.submit(call.body)
    except BaseException:  # no thread could be started
        release()
        raise
    try:
        await call.done.wait()
    except BaseException:
        if not call.give_up():
            release()
        raise
    release()
    assert call.outcome is not None  # done is set only after the outcome
    value, exc = call.outcome
    if exc is not None:
        try:
            raise exc
        finally:
            del exc, call  # no reference cycle through the traceback
    return value

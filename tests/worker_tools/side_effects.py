"""Tools with side effects outside the process, for worker subprocesses (crash and drain tests).

A worker subprocess imports this module through ``tools.modules: [worker_tools.side_effects]``
with ``tests/`` on PYTHONPATH, so the tools register on ``tools.default_registry``. The test
process itself never imports it (that would add them to its default registry).

``append_line`` follows the worker's contract for side-effecting tools: a call whose output is
in the ledger is never run again, but a call interrupted after its side effect (the worker died
before the output reached the ledger) is run again with ``ctx.attempt > 1``. So on a later
attempt it first looks for its line, and on attempt 1 it deliberately does not: a worker that
re-ran a call at attempt 1 would leave a duplicate line, which the tests catch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import anyio

import worker_tools
from orchestrator import tools


def _journal(path: str, text: str) -> None:
    # One write(2) per line on an O_APPEND file: lines from parallel calls never interleave.
    with open(path + ".journal", "a", encoding="utf-8") as f:
        f.write(text + "\n")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    with open(path + ".lock", "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return []


#: Set by the PostgreSQL crash test: each call asks the database whether its worker still holds
#: the job, as it starts (the answer goes to ``<path>.claims``) and again before its side effect.
CLAIM_CHECK_DSN = worker_tools.CLAIM_CHECK_DSN


def claim_held(ctx: tools.ToolContext, path: str, started: float | None = None) -> bool:
    """Whether this process holds the call's job now (RUNNING under its lease); True untested.

    The lease owner is the worker id, ``<host>-<pid>-<suffix>``. With ``started`` (when the
    call was entered) the answer is written to ``<path>.claims`` with the time it was known: a
    ``stale`` line is a call started by a worker that no longer held its job, unless the
    process was frozen between the two times.
    """
    dsn = os.environ.get(CLAIM_CHECK_DSN)
    if not dsn:
        return True
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state, lease_owner, epoch FROM orchestrator_jobs WHERE run_id = %s",
            (ctx.run_id,),
        ).fetchone()
    held = row is not None and row[0] == "running" and f"-{os.getpid()}-" in (row[1] or "")
    if started is not None:
        verdict = "held" if held else "stale"
        with open(path + ".claims", "a", encoding="utf-8") as f:
            checked = time.time()
            f.write(f"{ctx.tool_call_id} {os.getpid()} {verdict} {started!r} {checked!r} {row}\n")
    return held


@tools.tool
def append_line(ctx: tools.ToolContext, path: str, pause: float = 0.0, marker: str = "") -> str:
    """Append this call's id to a file, once per call even when the call is resumed.

    Args:
        path: The side-effect file.
        pause: Seconds to wait after the append: widens the window between side effect and submit.
        marker: A file created once the side effect is done, for tests to wait on.
    """
    line, started = ctx.tool_call_id, time.time()
    claim_held(ctx, path, started=started)
    # Look-then-append under a lock on the file, fenced by the claim: a worker frozen (SIGSTOP)
    # after the call started may have lost the job meanwhile, and then must not write.
    with _locked(path):
        if not claim_held(ctx, path):
            _journal(path, f"{line} {ctx.attempt} {os.getpid()} fenced {started!r}")
            return f"{line}: not done, the job moved on (attempt {ctx.attempt})"
        if ctx.attempt > 1 and line in _lines(path):
            _journal(path, f"{line} {ctx.attempt} {os.getpid()} skipped {started!r}")
            return f"{line}: done before (attempt {ctx.attempt})"
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        _journal(path, f"{line} {ctx.attempt} {os.getpid()} appended {started!r}")
    if marker:
        Path(marker).touch()
    time.sleep(pause)
    return f"{line}: done (attempt {ctx.attempt})"


@tools.tool
async def wait_long(ctx: tools.ToolContext, path: str, seconds: float, marker: str) -> str:
    """Create ``marker``, wait (cancellably), then append this call's id to ``path``.

    Args:
        path: The side-effect file, written only if the wait ends.
        seconds: How long to wait.
        marker: A file created when the call starts.
    """
    await anyio.Path(marker).touch()
    await anyio.sleep(seconds)
    async with await anyio.open_file(path, "a", encoding="utf-8") as f:
        await f.write(ctx.tool_call_id + "\n")
    return "waited"

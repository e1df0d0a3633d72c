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

import os
import time
from pathlib import Path

import anyio

from orchestrator import tools


def _journal(path: str, text: str) -> None:
    # One write(2) per line on an O_APPEND file: lines from parallel calls never interleave.
    with open(path + ".journal", "a", encoding="utf-8") as f:
        f.write(text + "\n")


def _lines(path: str) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return []


@tools.tool
def append_line(ctx: tools.ToolContext, path: str, pause: float = 0.0, marker: str = "") -> str:
    """Append this call's id to a file, once per call even when the call is resumed.

    Args:
        path: The side-effect file.
        pause: Seconds to wait after the append: widens the window between side effect and submit.
        marker: A file created once the side effect is done, for tests to wait on.
    """
    line, started = ctx.tool_call_id, time.time()
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

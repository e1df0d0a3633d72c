"""The SSE stream of a run: events written as the run moves, then ``done``.

The stream sets ``rs.sink`` so every transition of the run (whoever triggers it: this loop, a
poll, a cancel) leaves a frame there; the loop writes what is there, then sleeps until the run's
next change is due or another request pokes it. It ends after ``requires_action`` or a terminal
event. A stream-cut fault aborts the connection after a few events instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Final

from aiohttp import web

from orchestrator.emulator import core, lifecycle, state

__all__ = ["DONE", "stream_run"]

logger = logging.getLogger(__name__)

DONE: Final = b"event: done\ndata: [DONE]\n\n"
_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}


def _garbled(frame: bytes) -> bytes:
    """The frame with its JSON data cut short: the event arrives, unreadable."""
    head, sep, data = frame.partition(b"\ndata: ")
    if not sep:
        return frame
    return head + sep + data[: max(1, len(data) // 2)].rstrip(b"\n") + b"\n\n"


async def stream_run(
    request: web.Request, engine: core.Engine, rs: state.RunState, sink: list[bytes]
) -> web.StreamResponse:
    """Follow ``rs`` until its stream ends; ``sink`` holds the frames already due."""
    fs = rs.faults or engine.settings
    cut_after = engine.faults.draw_cut(fs.fault_stream_cut)
    if cut_after is not None:
        engine.counters.faults["stream_cut"] += 1
    garble_at = engine.faults.draw_cut(fs.fault_stream_garble)
    if garble_at is not None:
        engine.counters.faults["stream_garble"] += 1
    rs.sink = sink
    wake = rs.wake = asyncio.Event()
    response = web.StreamResponse(headers=_HEADERS)
    sent = 0
    try:
        await response.prepare(request)
        while True:
            now = time.time()
            engine.advance(rs, now)
            frames = sink[:]
            sink.clear()
            if garble_at is not None and sent < garble_at <= sent + len(frames):
                frames[garble_at - sent - 1] = _garbled(frames[garble_at - sent - 1])
            if cut_after is not None and sent + len(frames) >= cut_after:
                await response.write(b"".join(frames[: max(0, cut_after - sent)]))
                _cut(request)
                return response
            if frames:
                await response.write(b"".join(frames))
                sent += len(frames)
            if rs.run.status in lifecycle.ENDS_STREAM:
                break
            wake.clear()
            delay = lifecycle.next_change(rs, engine.settings) - now
            try:
                async with asyncio.timeout(None if math.isinf(delay) else max(0.0, delay)):
                    await wake.wait()
            except TimeoutError:
                pass
        if cut_after is not None:  # the run ended before the cut point: cut before done
            _cut(request)
            return response
        await response.write(DONE)
        await response.write_eof()
    except ConnectionError:
        logger.debug("stream client went away", extra={"run_id": rs.run.id})
    finally:
        if rs.sink is sink:
            rs.sink = None
            rs.wake = None
    return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()

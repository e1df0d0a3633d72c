"""Routes of the emulator's ``/responses``: create (plain or streamed), retrieve (plain or
streamed, resumable with ``starting_after``), cancel, list; and ``GET /_emulator/responses``.

A stream replays the response's event log past ``starting_after`` and follows it until a
terminal event; a stream-cut fault aborts the connection after a few events instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from orchestrator.emulator import gate, replies, state
from orchestrator.emulator import responses_engine as engine_mod
from orchestrator.emulator import responses_objects as objects
from orchestrator.protocols.assistants import models

__all__ = ["RESPONSES", "ROUTES", "install"]

logger = logging.getLogger(__name__)

RESPONSES: Final = web.AppKey("responses", engine_mod.ResponsesEngine)
_ENDS: Final = frozenset({"completed", "failed", "incomplete", "cancelled"})
_HEADERS: Final = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


def _engine(request: web.Request) -> engine_mod.ResponsesEngine:
    return request.app[RESPONSES]


def _answer(request: web.Request, rs: engine_mod.ResponseState) -> web.Response:
    ms = _engine(request).engine.settings.poll_after_ms
    headers = {"openai-poll-after-ms": str(ms)} if ms is not None else None
    return replies.json_response(rs.obj, headers=headers)


async def create_response(request: web.Request) -> web.StreamResponse:
    from orchestrator.emulator import app as app_mod  # the shared body reader

    body = await app_mod._body(request, objects.CreateBody)
    rs = _engine(request).create(body)
    # A POST whose answer will be lost to a fault is answered as JSON, then replaced.
    if body.stream is True and gate.AFTER_FAULT not in request:
        return await stream_response(request, rs, after=None)
    return _answer(request, rs)


async def get_response(request: web.Request) -> web.StreamResponse:
    rs = _engine(request).get(request.match_info["response_id"])
    if request.query.get("stream") not in ("true", "True", "1"):
        return _answer(request, rs)
    if not rs.obj.background:
        raise replies.ApiError(400, "Only background responses can be streamed again.")
    text = request.query.get("starting_after")
    after = None
    if text is not None:
        try:
            after = int(text)
        except ValueError:
            raise replies.ApiError(
                400, "Invalid 'starting_after': expected an integer.", param="starting_after"
            ) from None
    return await stream_response(request, rs, after=after)


async def cancel_response(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    rs = engine.get(request.match_info["response_id"])
    engine.cancel(rs)
    return _answer(request, rs)


async def list_responses(request: web.Request) -> web.StreamResponse:
    q = request.query
    try:
        data, more = state.page(
            _engine(request).listing(),
            lambda rs: rs.obj.id,
            limit=q.get("limit"),
            order=q.get("order"),
            after=q.get("after"),
            before=q.get("before"),
        )
    except state.PageError as exc:
        raise replies.ApiError(400, exc.message, param=exc.param) from None
    objs = [rs.obj for rs in data]
    return replies.json_response(
        models.ListResponse[objects.ResponseObject](
            data=objs,
            first_id=objs[0].id if objs else None,
            last_id=objs[-1].id if objs else None,
            has_more=more,
        )
    )


async def get_stats(request: web.Request) -> web.StreamResponse:
    return replies.json_response(_engine(request).stats())


async def stream_response(
    request: web.Request, rs: engine_mod.ResponseState, *, after: int | None
) -> web.StreamResponse:
    """Write ``rs``'s events past ``after`` and follow it until it ends."""
    engine = _engine(request)
    cut_after = engine.engine.faults.draw_cut(engine.engine.settings.fault_stream_cut)
    if cut_after is not None:
        engine.engine.counters.faults["stream_cut"] += 1
    wake = asyncio.Event()
    rs.waiters.add(wake)
    response = web.StreamResponse(headers=_HEADERS)
    index = 0 if after is None else sum(1 for seq, _ in rs.events if seq <= after)
    sent = 0
    try:
        await response.prepare(request)
        while True:
            now = time.time()
            engine.advance(rs, now)
            frames = [frame for _, frame in rs.events[index:]]
            index += len(frames)
            if cut_after is not None and sent + len(frames) >= cut_after:
                await response.write(b"".join(frames[: max(0, cut_after - sent)]))
                _cut(request)
                return response
            if frames:
                await response.write(b"".join(frames))
                sent += len(frames)
            if rs.obj.status in _ENDS:
                break
            wake.clear()
            delay = engine.next_change(rs) - now
            try:
                async with asyncio.timeout(None if math.isinf(delay) else max(0.0, delay)):
                    await wake.wait()
            except TimeoutError:
                pass
        if cut_after is not None:  # it ended before the cut point: cut before the end
            _cut(request)
            return response
        await response.write_eof()
    except ConnectionError:
        logger.debug("stream client went away", extra={"response_id": rs.obj.id})
    finally:
        rs.waiters.discard(wake)
    return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ROUTES: Final[tuple[tuple[str, str, _Handler], ...]] = (
    ("POST", "/responses", create_response),
    ("GET", "/responses", list_responses),
    ("GET", "/responses/{response_id}", get_response),
    ("POST", "/responses/{response_id}/cancel", cancel_response),
)


def install(app: web.Application, prefixes: tuple[str, ...]) -> engine_mod.ResponsesEngine:
    """Serve ``/responses`` under each prefix, and the stats route; returns the engine."""
    responses = engine_mod.ResponsesEngine(app[gate.ENGINE])
    app[RESPONSES] = responses
    for prefix in prefixes:
        for method, path, handler in ROUTES:
            app.router.add_route(method, prefix + path, handler)
    app.router.add_get(gate.INTERNAL_PREFIX + "responses", get_stats)
    return responses

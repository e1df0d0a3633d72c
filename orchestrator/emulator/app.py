"""Routes and handlers: parse the request, call the engine, encode the answer.

Every route exists three times: OpenAI's form under ``/v1``, Azure's under ``/openai`` (which
also needs ``api-version``) and Foundry's under ``/api/projects/{project}`` (``foundry``).
``/_emulator/stats`` and ``/_emulator/reset`` sit outside them.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from aiohttp import web

from orchestrator.emulator import bodies, core, gate, lifecycle, replies, responses_app, sse, state
from orchestrator.protocols.assistants import models

__all__ = ["build_app"]

T = TypeVar("T")

_RUN_CREATED: Final = "thread.run.created"


async def _body(request: web.Request, type_: type[T]) -> T:
    raw = await bodies.read(request, _engine(request).settings.body_timeout)
    return bodies.decode(raw, type_)


def _engine(request: web.Request) -> core.Engine:
    return request.app[gate.ENGINE]


def _run_response(engine: core.Engine, rs: state.RunState) -> web.Response:
    ms = engine.settings.poll_after_ms
    headers = {"openai-poll-after-ms": str(ms)} if ms is not None else None
    return replies.json_response(rs.run, headers=headers)


def _page(request: web.Request, items: list[T], key: Callable[[T], str]) -> tuple[list[T], bool]:
    q = request.query
    try:
        return state.page(
            items,
            key,
            limit=q.get("limit"),
            order=q.get("order"),
            after=q.get("after"),
            before=q.get("before"),
        )
    except state.PageError as exc:
        raise replies.ApiError(400, exc.message, param=exc.param) from None


def _list(data: list[Any], more: bool, key: Callable[[Any], str]) -> web.Response:
    return replies.json_response(
        models.ListResponse[Any](
            data=data,
            first_id=key(data[0]) if data else None,
            last_id=key(data[-1]) if data else None,
            has_more=more,
        )
    )


def _wants_stream(request: web.Request, stream: object) -> bool:
    # A POST whose answer will be lost to a fault is answered as JSON, then replaced.
    return stream is True and gate.AFTER_FAULT not in request


# --- assistants and threads --------------------------------------------------------------------


async def create_assistant(request: web.Request) -> web.StreamResponse:
    body = await _body(request, models.CreateAssistant)
    return replies.json_response(_engine(request).create_assistant(body))


async def get_assistant(request: web.Request) -> web.StreamResponse:
    return replies.json_response(_engine(request).assistant(request.match_info["assistant_id"]))


async def modify_assistant(request: web.Request) -> web.StreamResponse:
    body = await _body(request, models.ModifyAssistant)
    engine = _engine(request)
    return replies.json_response(engine.modify_assistant(request.match_info["assistant_id"], body))


async def list_assistants(request: web.Request) -> web.StreamResponse:
    items = list(_engine(request).store.assistants.values())
    data, more = _page(request, items, _id)
    return _list(data, more, _id)


async def create_thread(request: web.Request) -> web.StreamResponse:
    body = await _body(request, models.CreateThread)
    return replies.json_response(_engine(request).create_thread(body).thread)


async def get_thread(request: web.Request) -> web.StreamResponse:
    return replies.json_response(_engine(request).thread(request.match_info["thread_id"]).thread)


async def create_message(request: web.Request) -> web.StreamResponse:
    body = await _body(request, models.MessageRequest)
    engine = _engine(request)
    ts = engine.thread(request.match_info["thread_id"])
    return replies.json_response(engine.add_message(ts, body))


async def list_messages(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    ts = engine.thread(request.match_info["thread_id"])
    engine.active_run(ts, time.time())  # a run finishing now adds its reply first
    run_id = request.query.get("run_id")
    items = [m for m in ts.messages if run_id is None or m.run_id == run_id]
    data, more = _page(request, items, _id)
    return _list(data, more, _id)


async def get_message(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    ts = engine.thread(request.match_info["thread_id"])
    engine.active_run(ts, time.time())
    message_id = request.match_info["message_id"]
    for m in ts.messages:
        if m.id == message_id:
            return replies.json_response(m)
    raise replies.not_found("message", message_id)


# --- runs --------------------------------------------------------------------------------------


async def create_run(request: web.Request) -> web.StreamResponse:
    body = await _body(request, core.CreateRunBody)
    engine = _engine(request)
    rs = engine.create_run(engine.thread(request.match_info["thread_id"]), body)
    if _wants_stream(request, body.stream):
        frames = [
            lifecycle.event_frame(_RUN_CREATED, rs.run),
            lifecycle.event_frame("thread.run.queued", rs.run),
        ]
        return await sse.stream_run(request, engine, rs, frames)
    return _run_response(engine, rs)


async def create_thread_and_run(request: web.Request) -> web.StreamResponse:
    body = await _body(request, core.CreateThreadAndRunBody)
    engine = _engine(request)
    engine.assistant(body.assistant_id)  # 404 before a thread is made
    ts = engine.create_thread(body.thread)
    rs = engine.create_run(ts, body)
    if _wants_stream(request, body.stream):
        frames = [
            lifecycle.event_frame("thread.created", ts.thread),
            lifecycle.event_frame(_RUN_CREATED, rs.run),
            lifecycle.event_frame("thread.run.queued", rs.run),
        ]
        return await sse.stream_run(request, engine, rs, frames)
    return _run_response(engine, rs)


async def list_runs(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    ts = engine.thread(request.match_info["thread_id"])
    runs, more = _page(request, ts.runs, _run_id)
    now = time.time()
    return _list([engine.advance(rs, now).run for rs in runs], more, _id)


async def get_run(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    return _run_response(engine, _run(request))


async def modify_run(request: web.Request) -> web.StreamResponse:
    body = await _body(request, core.ModifyRunBody)
    engine = _engine(request)
    rs = _run(request)
    engine.modify_run(rs, body)
    return _run_response(engine, rs)


async def cancel_run(request: web.Request) -> web.StreamResponse:
    engine = _engine(request)
    rs = _run(request)
    engine.cancel(rs)
    return _run_response(engine, rs)


async def submit_tool_outputs(request: web.Request) -> web.StreamResponse:
    body = await _body(request, core.SubmitBody)
    engine = _engine(request)
    rs = _run(request)
    outputs = engine.check_submit(rs, body)
    if not _wants_stream(request, body.stream):
        engine.submit(rs, outputs)
        return _run_response(engine, rs)
    frames: list[bytes] = []
    rs.sink = frames  # the step completing and the run queueing are the stream's first events
    engine.submit(rs, outputs)
    return await sse.stream_run(request, engine, rs, frames)


async def list_steps(request: web.Request) -> web.StreamResponse:
    rs = _run(request)
    data, more = _page(request, rs.steps, _id)
    return _list(data, more, _id)


async def get_step(request: web.Request) -> web.StreamResponse:
    rs = _run(request)
    return replies.json_response(_engine(request).step(rs, request.match_info["step_id"]))


def _run(request: web.Request) -> state.RunState:
    info = request.match_info
    return _engine(request).run(info["thread_id"], info["run_id"])


def _id(obj: Any) -> str:
    return str(obj.id)


def _run_id(rs: state.RunState) -> str:
    return rs.run.id


# --- the emulator's own routes -----------------------------------------------------------------


async def get_stats(request: web.Request) -> web.StreamResponse:
    return replies.json_response(_engine(request).stats())


async def post_reset(request: web.Request) -> web.StreamResponse:
    _engine(request).reset()
    request.app[responses_app.RESPONSES].reset()
    return replies.json_response({"ok": True})


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_T = "/threads/{thread_id}"
_R = _T + "/runs/{run_id}"
ROUTES: Final[tuple[tuple[str, str, _Handler], ...]] = (
    ("POST", "/assistants", create_assistant),
    ("GET", "/assistants", list_assistants),
    ("GET", "/assistants/{assistant_id}", get_assistant),
    ("POST", "/assistants/{assistant_id}", modify_assistant),
    ("POST", "/threads", create_thread),
    ("POST", "/threads/runs", create_thread_and_run),
    ("GET", _T, get_thread),
    ("POST", _T + "/messages", create_message),
    ("GET", _T + "/messages", list_messages),
    ("GET", _T + "/messages/{message_id}", get_message),
    ("POST", _T + "/runs", create_run),
    ("GET", _T + "/runs", list_runs),
    ("GET", _R, get_run),
    ("POST", _R, modify_run),
    ("POST", _R + "/cancel", cancel_run),
    ("POST", _R + "/submit_tool_outputs", submit_tool_outputs),
    ("GET", _R + "/steps", list_steps),
    ("GET", _R + "/steps/{step_id}", get_step),
)


def build_app(engine: core.Engine) -> web.Application:
    """The aiohttp application serving ``engine``."""
    app = web.Application(middlewares=[gate.middleware], client_max_size=bodies.MAX_BODY_BYTES)
    app[gate.ENGINE] = engine
    for prefix in ("/v1", "/openai"):
        for method, path, handler in ROUTES:
            app.router.add_route(method, prefix + path, handler)
    responses_app.install(app, ("/v1", "/openai"))
    from orchestrator.emulator import foundry

    foundry.install(app, ROUTES)
    app.router.add_get(gate.INTERNAL_PREFIX + "stats", get_stats)
    app.router.add_post(gate.INTERNAL_PREFIX + "reset", post_reset)
    app.on_response_prepare.append(gate.on_prepare)
    return app

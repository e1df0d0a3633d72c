"""SSE framing, event decoding, and streamed runs over a real loopback server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import msgspec
import pytest
from aiohttp import web

from orchestrator import config, errors
from orchestrator.protocols.assistants import client, models, streaming

# --- framing -------------------------------------------------------------------------------


def frames(*chunks: bytes) -> list[tuple[str, bytes]]:
    dec = streaming.SSEDecoder()
    return [(m.event, m.data) for c in chunks for m in dec.feed(c)]


def test_basic_frames_and_default_event_name() -> None:
    text = b"event: thread.run.created\ndata: {}\n\ndata: plain\n\n"
    assert frames(text) == [("thread.run.created", b"{}"), ("message", b"plain")]


def test_multiline_data_joins_with_newline() -> None:
    assert frames(b"event: e\ndata: a\ndata:b\ndata:  c\ndata\n\n") == [("e", b"a\nb\n c\n")]


def test_comments_id_retry_and_unknown_fields_are_ignored() -> None:
    text = b": keep-alive\nid: 7\nretry: 100\nevent: e\nfoo: bar\n:another\ndata: x\n\n"
    assert frames(text) == [("e", b"x")]


def test_frames_without_data_are_dropped_and_reset_the_event() -> None:
    assert frames(b"event: lonely\n\ndata: y\n\n") == [("message", b"y")]


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"])
def test_line_endings(eol: bytes) -> None:
    text = eol.join([b"event: a", b"data: 1", b"", b"event: b", b"data: 2", b"", b""])
    assert frames(text) == [("a", b"1"), ("b", b"2")]


STREAM = (
    b'\xef\xbb\xbfevent: thread.run.created\r\ndata: {"id": "run_1"}\r\n\r\n'
    b": ping\r\n\r\n"
    b"event: thread.message.delta\ndata: line one\ndata: line two\n\n"
    b"event: done\rdata: [DONE]\r\r"
)
EXPECTED = [
    ("thread.run.created", b'{"id": "run_1"}'),
    ("thread.message.delta", b"line one\nline two"),
    ("done", b"[DONE]"),
]


def test_every_split_point_gives_the_same_frames() -> None:
    for cut in range(len(STREAM) + 1):
        assert frames(STREAM[:cut], STREAM[cut:]) == EXPECTED, cut
    for cut in range(1, len(STREAM)):
        # Three pieces around each cut, including a CR / LF pair split across chunks.
        assert frames(STREAM[: cut - 1], STREAM[cut - 1 : cut + 1], STREAM[cut + 1 :]) == EXPECTED


def test_byte_by_byte() -> None:
    assert frames(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


@pytest.mark.parametrize("chunk_size", [1_000, 4_096, 65_536])
def test_a_4_mib_event_is_scanned_in_linear_time(chunk_size: int) -> None:
    # Counted, not timed: each byte is searched for line ends once when it arrives and once
    # when its line ends, whatever the chunking (the old decoder rescanned the whole pending
    # line on every chunk: ~2 GiB of scanning for this event in 4 KiB chunks).
    value = b"x" * (4 * 1024 * 1024)
    stream = b"event: thread.message.delta\ndata: " + value + b"\n\n"
    decoder = streaming.SSEDecoder()
    out: list[streaming.SSEMessage] = []
    for start in range(0, len(stream), chunk_size):
        out += decoder.feed(stream[start : start + chunk_size])
    assert out == [streaming.SSEMessage("thread.message.delta", value)]
    assert decoder.scanned <= 2 * len(stream)


def test_unterminated_last_frame_is_not_dispatched() -> None:
    assert frames(b"event: a\ndata: 1\n\nevent: b\ndata: 2\n") == [("a", b"1")]


# --- decoding ------------------------------------------------------------------------------

RUN = {
    "id": "run_1",
    "object": "thread.run",
    "created_at": 1,
    "thread_id": "thread_1",
    "assistant_id": "asst_1",
    "status": "in_progress",
    "model": "gpt-4o",
    "instructions": None,
    "tools": [],
}
STEP = {
    "id": "step_1",
    "object": "thread.run.step",
    "run_id": "run_1",
    "type": "tool_calls",
    "status": "in_progress",
    "step_details": {"type": "tool_calls", "tool_calls": []},
}
MESSAGE = {
    "id": "msg_1",
    "object": "thread.message",
    "thread_id": "thread_1",
    "role": "assistant",
    "status": "completed",
    "content": [{"type": "text", "text": {"value": "Hi there", "annotations": []}}],
}
STEP_DELTA = {
    "id": "step_1",
    "object": "thread.run.step.delta",
    "delta": {
        "step_details": {
            "type": "tool_calls",
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"ci', "output": None},
                },
                {
                    "index": 1,
                    "type": "code_interpreter",
                    "code_interpreter": {"input": "1+1", "outputs": [{"index": 0, "type": "logs"}]},
                },
            ],
        }
    },
}
MESSAGE_DELTA = {
    "id": "msg_1",
    "object": "thread.message.delta",
    "delta": {
        "role": "assistant",
        "content": [
            {"index": 0, "type": "text", "text": {"value": "Hel"}},
            {"index": 1, "type": "text", "text": {"value": "lo", "annotations": []}},
        ],
    },
}
THREAD = {"id": "thread_1", "object": "thread", "created_at": 5, "metadata": {}}


def decode(event: str, data: Any) -> streaming.ServerEvent | None:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return streaming.decode_event(streaming.SSEMessage(event, raw))


def test_each_known_event_decodes_into_its_struct() -> None:
    for status in ("created", "queued", "requires_action", "completed", "expired", "cancelling"):
        ev = decode(f"thread.run.{status}", RUN)
        assert isinstance(ev, streaming.RunEvent)
        assert (ev.event, ev.run.id) == (f"thread.run.{status}", "run_1")
    step = decode("thread.run.step.created", STEP)
    assert isinstance(step, streaming.StepEvent)
    assert step.step.step_details is not None
    assert step.step.step_details.type == "tool_calls"
    message = decode("thread.message.completed", MESSAGE)
    assert isinstance(message, streaming.MessageEvent)
    assert message.message.text == "Hi there"
    thread = decode("thread.created", THREAD)
    assert isinstance(thread, streaming.ThreadEvent)
    assert thread.thread.id == "thread_1"


def test_step_delta_fragments() -> None:
    ev = decode("thread.run.step.delta", STEP_DELTA)
    assert isinstance(ev, streaming.StepDeltaEvent)
    details = ev.delta.delta.step_details
    assert details is not None
    assert details.tool_calls is not None
    fn, ci = details.tool_calls
    assert (fn.index, fn.id, fn.type) == (0, "call_1", "function")
    assert fn.function == streaming.FunctionDelta("get_weather", '{"ci', None)
    assert ci.id is None
    assert ci.code_interpreter is not None
    assert ci.code_interpreter.outputs == [streaming.CodeInterpreterOutputDelta("logs", 0)]
    empty = decode("thread.run.step.delta", {"id": "step_2", "object": "thread.run.step.delta"})
    assert isinstance(empty, streaming.StepDeltaEvent)
    assert empty.delta.delta.step_details is None


def test_message_delta_text() -> None:
    ev = decode("thread.message.delta", MESSAGE_DELTA)
    assert isinstance(ev, streaming.MessageDeltaEvent)
    assert ev.delta.delta.role == "assistant"
    assert streaming.delta_text(ev.delta) == ev.delta.text == "Hello"
    bare = decode("thread.message.delta", {"id": "m", "delta": {}})
    assert isinstance(bare, streaming.MessageDeltaEvent)
    assert streaming.delta_text(bare.delta) == ""


def test_unknown_events_are_kept_raw() -> None:
    ev = decode("thread.run.step.teleported", b"not even json")
    assert ev == streaming.UnknownEvent("thread.run.step.teleported", b"not even json")
    assert decode("message", b"{}") == streaming.UnknownEvent("message", b"{}")


def test_done_ends_the_stream() -> None:
    assert decode("done", b"[DONE]") is None
    assert decode("done", b"") is None
    assert decode("message", b"[DONE]") is None


@pytest.mark.parametrize(
    "payload",
    [
        {"code": "server_error", "message": "boom", "param": None, "type": "server_error"},
        {
            "error": {
                "code": "server_error",
                "message": "boom",
                "param": None,
                "type": "server_error",
            }
        },
    ],
)
def test_error_event_raises_in_both_shapes(payload: dict[str, Any]) -> None:
    with pytest.raises(errors.StreamError) as info:
        streaming.decode_event(
            streaming.SSEMessage("error", json.dumps(payload).encode()), request_id="req_9"
        )
    err = info.value
    assert (err.message, err.code, err.type, err.status, err.request_id) == (
        "boom",
        "server_error",
        "server_error",
        200,
        "req_9",
    )
    assert isinstance(err, errors.APIError)


def test_error_event_with_text_data() -> None:
    with pytest.raises(errors.StreamError, match="upstream timed out"):
        decode("error", b"upstream timed out")


def test_malformed_known_event_names_the_path() -> None:
    bad = {**RUN, "required_action": {"submit_tool_outputs": {"tool_calls": [{"id": 3}]}}}
    with pytest.raises(errors.DecodeError) as info:
        decode("thread.run.requires_action", bad)
    assert "thread.run.requires_action" in str(info.value)
    assert "$.required_action.submit_tool_outputs.tool_calls[0].id" in str(info.value)


# --- over the wire -------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sse(event: str, data: Any) -> bytes:
    raw = data if isinstance(data, str) else json.dumps(data)
    return f"event: {event}\ndata: {raw}\n\n".encode()


def streamer(*chunks: bytes, cut: bool = False) -> Handler:
    """Answer with ``chunks`` as an SSE body; ``cut`` drops the connection afterwards."""

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"content-type": "text/event-stream", "x-request-id": "req_s"}
        )
        await resp.prepare(request)
        for chunk in chunks:
            await resp.write(chunk)
        if cut:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    return handler


class Box:
    """Handlers in order (the last repeats) and the requests they saw."""

    def __init__(self) -> None:
        self.handlers: list[Handler] = []
        self.bodies: list[bytes] = []
        self.accept: list[str] = []
        self.url = ""

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.read())
        self.accept.append(request.headers.get("Accept", ""))
        handler = self.handlers.pop(0) if len(self.handlers) > 1 else self.handlers[0]
        return await handler(request)


@pytest.fixture
async def box(anyio_backend: str) -> AsyncIterator[Box]:
    b = Box()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", b.dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    b.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    yield b
    await runner.cleanup()


def make(box: Box) -> client.AssistantsClient:
    retry = config.RetryConfig(attempts=3, initial_backoff=0.001, max_backoff=0.001)
    return client.AssistantsClient(config.ApiConfig(base_url=box.url), retry, api_key="sk-x")


async def collect(stream: AsyncIterator[streaming.ServerEvent]) -> list[str]:
    return [ev.event async for ev in stream]


TURN = b"".join(
    [
        sse("thread.run.created", {**RUN, "status": "queued"}),
        b": keep-alive\n\n",
        sse("thread.run.in_progress", RUN),
        sse("thread.run.step.created", STEP),
        sse("thread.run.step.delta", STEP_DELTA),
        sse("thread.message.delta", MESSAGE_DELTA),
        sse("thread.run.surprise", {"x": 1}),
        sse("thread.run.completed", {**RUN, "status": "completed"}),
        sse("done", "[DONE]"),
        sse("thread.run.after_done", RUN),
    ]
)


@pytest.mark.anyio
async def test_streamed_run_in_odd_chunks(box: Box) -> None:
    # Chunks of 7 bytes split lines, fields and UTF-8 wherever they fall.
    box.handlers = [streamer(*(TURN[i : i + 7] for i in range(0, len(TURN), 7)))]
    async with make(box) as api:
        body = models.CreateRun(assistant_id="asst_1")
        async with api.create_run_stream("thread_1", body) as events:
            got = [ev async for ev in events]
    assert [e.event for e in got] == [
        "thread.run.created",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.delta",
        "thread.message.delta",
        "thread.run.surprise",
        "thread.run.completed",
    ]
    assert isinstance(got[-1], streaming.RunEvent)
    assert got[-1].run.status == "completed"
    assert isinstance(got[5], streaming.UnknownEvent)
    assert box.bodies == [b'{"assistant_id":"asst_1","stream":true}']
    assert box.accept == ["text/event-stream"]
    assert body.stream is msgspec.UNSET  # the caller's struct is left alone


@pytest.mark.anyio
async def test_stream_cut_midway_raises_connection_error(box: Box) -> None:
    box.handlers = [
        streamer(sse("thread.run.created", RUN), sse("thread.run.queued", RUN), cut=True)
    ]
    seen: list[str] = []
    async with make(box) as api:
        body = models.CreateThreadAndRun(assistant_id="asst_1")
        async with api.create_thread_and_run_stream(body) as events:
            seen += [(await events.__anext__()).event, (await events.__anext__()).event]
            with pytest.raises(errors.APIConnectionError):
                await events.__anext__()
            assert [ev async for ev in events] == []  # and it stays ended
    assert seen == ["thread.run.created", "thread.run.queued"]
    assert len(box.bodies) == 1  # nothing is retried once events flow


@pytest.mark.anyio
async def test_error_event_raises_stream_error(box: Box) -> None:
    error = {"error": {"message": "internal", "type": "server_error", "code": None}}
    box.handlers = [streamer(sse("thread.run.created", RUN), sse("error", error))]
    async with make(box) as api:
        outputs = [models.ToolOutput("call_1", "ok")]
        async with api.submit_tool_outputs_stream("thread_1", "run_1", outputs) as events:
            first = await events.__anext__()
            with pytest.raises(errors.StreamError, match="internal") as info:
                await events.__anext__()
            assert [ev async for ev in events] == []
    assert first.event == "thread.run.created"
    assert info.value.request_id == "req_s"


@pytest.mark.anyio
async def test_clean_end_without_done_ends_iteration(box: Box) -> None:
    box.handlers = [streamer(sse("thread.run.requires_action", RUN), b"event: partial\ndata: 1")]
    body = models.CreateRun(assistant_id="a")
    async with make(box) as api, api.create_run_stream("thread_1", body) as events:
        assert await collect(events) == ["thread.run.requires_action"]


@pytest.mark.anyio
async def test_opening_is_retried_then_errors_are_the_usual_ones(box: Box) -> None:
    async def unavailable(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "later"}}, status=503)

    async def not_found(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "No thread"}}, status=404)

    box.handlers = [unavailable, streamer(sse("thread.run.created", RUN), sse("done", "[DONE]"))]
    async with make(box) as api:
        async with api.create_run_stream("thread_1", models.CreateRun(assistant_id="a")) as events:
            assert await collect(events) == ["thread.run.created"]
        assert len(box.bodies) == 2
        box.handlers = [not_found]
        with pytest.raises(errors.NotFoundError, match="No thread"):
            async with api.create_run_stream("t", models.CreateRun(assistant_id="a")):
                raise AssertionError("not reached")


@pytest.mark.anyio
async def test_leaving_early_releases_the_connection(box: Box) -> None:
    gate = anyio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(sse("thread.run.created", RUN))
        await gate.wait()
        return resp

    box.handlers = [endless, streamer(sse("thread.run.created", RUN))]
    async with make(box) as api:
        async with api.create_run_stream("t", models.CreateRun(assistant_id="a")) as events:
            async for ev in events:
                assert ev.event == "thread.run.created"
                break
        # The client is still usable, and the half-read stream did not block it.
        async with api.create_run_stream("t", models.CreateRun(assistant_id="a")) as events:
            assert await collect(events) == ["thread.run.created"]
    gate.set()

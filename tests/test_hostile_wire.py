"""A hostile or broken server over real HTTP: every bad body is one of our errors, and a key it
quotes back is redacted everywhere (issue 15, items 2 and 4)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import msgspec
import pytest
from aiohttp import web

from orchestrator import config, errors
from orchestrator.http import transport
from orchestrator.protocols.assistants import models, streaming

pytestmark = pytest.mark.anyio

DEEP_ARRAY = b"[" * 5_000 + b"]" * 5_000
RUN = (
    b'{"id": "run_1", "object": "thread.run", "created_at": 1, "thread_id": "thread_1", '
    b'"assistant_id": "asst_1", "status": "queued", "tools": [], "metadata": {}}'
)
#: Hostile 2xx bodies: nesting in a skipped field, in ``tools`` (kept raw), in a known field;
#: invalid UTF-8 inside a known string and inside a skipped one.
HOSTILE_BODIES = {
    "deep_skipped": RUN[:-1] + b', "unknown": ' + DEEP_ARRAY + b"}",
    "deep_raw": RUN.replace(b'"tools": []', b'"tools": ' + DEEP_ARRAY),
    "deep_known": RUN.replace(
        b'"metadata": {}', b'"metadata": ' + b'{"a": ' * 5_000 + b"1" + b"}" * 5_000
    ),
    "bad_utf8_known": RUN.replace(b'"queued"', b'"que\xff\xfeued"'),
    "bad_utf8_metadata": RUN.replace(b'"metadata": {}', b'"metadata": {"k": "\xed\xa0\x80"}'),
}
MASKED = "sk-abcd1***wxyz"
FULL_KEY = "sk-proj-" + "A1b2C3d4" * 6


@dataclass
class Server:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    url: str = ""
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.method)
        return web.Response(
            body=self.body,
            status=self.status,
            headers={"content-type": self.content_type, "x-request-id": "req_1"},
        )


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    yield srv
    await runner.cleanup()


@pytest.fixture
async def http(server: Server) -> AsyncIterator[transport.Transport]:
    retry = config.RetryConfig(attempts=2, initial_backoff=0.001, max_backoff=0.001)
    t = transport.Transport(
        config.ApiConfig(base_url=server.url),
        retry,
        api_key=config.Secret(FULL_KEY),
        limiter=None,
        observer=None,
    )
    async with aiohttp.ClientSession() as session:
        t.session = session
        yield t


# --- item 2: hostile bodies are DecodeError / APIError ------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
async def test_hostile_2xx_bodies_are_decode_errors(
    server: Server, http: transport.Transport, kind: str, method: str
) -> None:
    server.body = HOSTILE_BODIES[kind]
    with pytest.raises(errors.DecodeError, match=r"get_run \(request req_1\): Run: "):
        await http.request("get_run", method, "/threads/t/runs/r", models.Run)
    assert len(server.seen) == 1  # the same bytes would come back: not retried


def test_invalid_utf8_in_the_raw_run_tools_is_a_decode_error_on_access() -> None:
    bad_tools = b'"tools": [{"type": "function", "function": {"name": "a\xff"}}]'
    run = models.decode(RUN.replace(b'"tools": []', bad_tools), models.Run)  # kept raw
    with pytest.raises(errors.DecodeError, match=r"not valid UTF-8"):
        run.tools  # noqa: B018


@pytest.mark.parametrize("kind", sorted(HOSTILE_BODIES))
def test_models_decode_maps_every_failure(kind: str) -> None:
    with pytest.raises(errors.DecodeError, match=r"^Run: "):
        models.decode(HOSTILE_BODIES[kind], models.Run)


@pytest.mark.parametrize(
    "body",
    [
        b'{"error": {"message": "bad", "x": ' + DEEP_ARRAY + b"}}",
        b'{"error": {"message": "b\xffad"}}',
        DEEP_ARRAY,
        b"\xff\xfe<html>",
    ],
)
async def test_hostile_error_bodies_are_api_errors(
    server: Server, http: transport.Transport, body: bytes
) -> None:
    server.status, server.body = 400, body
    with pytest.raises(errors.BadRequestError) as info:
        await http.request("get_run", "GET", "/threads/t/runs/r", models.Run)
    assert info.value.status == 400
    assert info.value.request_id == "req_1"
    str(info.value).encode()  # printable


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("thread.run.created", HOSTILE_BODIES["deep_skipped"]),
        ("thread.run.created", HOSTILE_BODIES["bad_utf8_known"]),
        (
            "thread.message.delta",
            b'{"id": "m", "delta": ' + b'{"x": ' * 5_000 + b"1" + b"}" * 5_000 + b"}",
        ),
    ],
)
def test_hostile_sse_events_are_decode_errors(name: str, data: bytes) -> None:
    with pytest.raises(errors.DecodeError, match=name):
        streaming.decode_event(streaming.SSEMessage(name, data))


@pytest.mark.parametrize("data", [DEEP_ARRAY, b'{"error": {"message": "\xff"}}', b"\xff"])
def test_hostile_error_events_are_stream_errors(data: bytes) -> None:
    with pytest.raises(errors.StreamError):
        streaming.decode_event(streaming.SSEMessage("error", data))


async def test_a_hostile_event_over_the_wire_is_a_decode_error(
    server: Server, http: transport.Transport
) -> None:
    server.content_type = "text/event-stream"
    server.body = b"event: thread.run.created\ndata: " + HOSTILE_BODIES["deep_skipped"] + b"\n\n"
    response = await http.open_stream("create_run", "/threads/t/runs", b"{}")
    try:
        with pytest.raises(errors.DecodeError):
            [event async for event in streaming.EventStream(response)]
    finally:
        response.release()


# --- item 4: a key quoted by the server is redacted -----------------------------------------


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        (f"Incorrect API key provided: {MASKED}. Find your key at https://x.test.", MASKED),
        (f"Incorrect API key provided: {FULL_KEY}.", FULL_KEY),
        (f"Header Authorization: Bearer {FULL_KEY} refused", FULL_KEY),
        ("Bearer abc.DEF-ghi_123 refused", "abc.DEF-ghi_123"),
        ("api-key: 0123456789abcdef0123456789abcdef is not valid", "0123456789abcdef"),
    ],
)
async def test_a_key_quoted_in_an_error_is_redacted_everywhere(
    server: Server,
    http: transport.Transport,
    caplog: pytest.LogCaptureFixture,
    message: str,
    secret: str,
) -> None:
    server.status = 401
    server.body = msgspec.json.encode(
        {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(errors.AuthenticationError) as info:
        await http.request("get_run", "GET", "/threads/t/runs/r", models.Run)
    error = info.value
    logging.getLogger("test").warning("run failed: %s", error)  # as the worker logs it
    for text in [str(error), repr(error), error.message, *map(str, error.args), caplog.text]:
        assert secret not in text
        assert "wxyz" not in text
    assert "[redacted]" in error.message
    assert error.code == "invalid_api_key"


def test_redaction_keeps_ordinary_messages() -> None:
    for text in [
        "No thread found with id 'thread_abc'.",
        "The key 'metadata.sk' is too long",
        "risk-free task-12345678 is done",
        "Run run_123 is active; expected tool outputs for call_ids ['call_1']",
    ]:
        assert errors.APIError(text, status=400).message == text

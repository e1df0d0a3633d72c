"""AssistantsClient against real aiohttp servers on loopback: retries, errors, flavours, paging."""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from manual_time import ManualTime
from multidict import CIMultiDictProxy, MultiMapping

from orchestrator import config, errors
from orchestrator.http import ratelimit
from orchestrator.protocols.assistants import client, models

pytestmark = pytest.mark.anyio

KEY = "sk-test-S3CRET-do-not-leak"
FAST = config.RetryConfig(attempts=4, initial_backoff=0.001, max_backoff=0.002)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    raw_path: str
    query: MultiMapping[str]
    headers: CIMultiDictProxy[str]
    body: bytes


@dataclass
class Server:
    """A loopback server answering each (method, path) from a script of handlers; the last
    handler of a script repeats."""

    url: str = ""
    routes: dict[tuple[str, str], list[Handler]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    #: Set at teardown: handlers that hang wait for it.
    stopping: anyio.Event = field(default_factory=anyio.Event)

    def on(self, method: str, path: str, *handlers: Handler) -> None:
        self.routes[(method, path)] = list(handlers)

    def calls(self, method: str, path: str) -> int:
        return sum(1 for s in self.seen if s.method == method and s.raw_path == path)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(request.method, request.rel_url.raw_path, request.query, request.headers, body)
        )
        script = self.routes.get((request.method, request.rel_url.raw_path))
        if not script:
            return web.json_response({"error": {"message": "no route", "type": "x"}}, status=404)
        handler = script.pop(0) if len(script) > 1 else script[0]
        return await handler(request)


@pytest.fixture
async def server(anyio_backend: str) -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    yield srv
    srv.stopping.set()
    await runner.cleanup()


def run_json(status: str = "queued", run_id: str = "run_1", **extra: Any) -> dict[str, Any]:
    return {
        "id": run_id,
        "object": "thread.run",
        "created_at": 1_700_000_000,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": status,
        "model": "gpt-4o",
        "instructions": None,
        "tools": [],
        **extra,
    }


def reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        if isinstance(body, bytes):
            return web.Response(body=body, status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return handler


def api_error(status: int, message: str, headers: dict[str, str] | None = None) -> Handler:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None}}
    return reply(body, status, {"x-request-id": "req_err", **(headers or {})})


async def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without an answer."""
    assert request.transport is not None
    request.transport.close()
    raise web.HTTPInternalServerError  # never reaches the client


class Recorder:
    """A RequestObserver that keeps every callback."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, int | None]] = []
        self.retried: list[tuple[str, int, BaseException]] = []

    def request_finished(self, endpoint: str, status: int | None, seconds: float) -> None:
        assert seconds >= 0
        self.finished.append((endpoint, status))

    def request_retried(self, endpoint: str, attempt: int, error: BaseException) -> None:
        self.retried.append((endpoint, attempt, error))


def make(
    server: Server,
    *,
    retry: config.RetryConfig = FAST,
    observer: client.RequestObserver | None = None,
    limiter: ratelimit.RateLimiter | None = None,
    **api: Any,
) -> client.AssistantsClient:
    api.setdefault("base_url", server.url)
    return client.AssistantsClient(
        config.ApiConfig(**api), retry, api_key=KEY, observer=observer, limiter=limiter
    )


RUN = "/v1/threads/thread_1/runs/run_1"
RUNS = "/v1/threads/thread_1/runs"
SUBMIT = RUN + "/submit_tool_outputs"


# --- retries -----------------------------------------------------------------------------


async def test_429_with_retry_after_ms_then_success(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    server.on("GET", RUN, api_error(429, "slow down", {"retry-after-ms": "3"}), reply(run_json()))
    rec = Recorder()
    caplog.set_level(logging.INFO, logger="orchestrator")
    async with make(server, observer=rec) as api:
        run = await api.retrieve_run("thread_1", "run_1")
    assert run.id == "run_1"
    assert server.calls("GET", RUN) == 2
    [(endpoint, attempt, error)] = rec.retried
    assert (endpoint, attempt) == ("retrieve_run", 1)
    assert isinstance(error, errors.RateLimitError)
    assert error.retry_after == 0.003
    # The server's delay is used as is (no back-off jitter).
    assert [r.__dict__["delay"] for r in caplog.records if hasattr(r, "delay")] == [0.003]


async def test_500_then_success(server: Server) -> None:
    server.on("POST", RUNS, api_error(500, "oops"), reply(run_json()))
    async with make(server) as api:
        run = await api.create_run("thread_1", models.CreateRun(assistant_id="asst_1"))
    assert run.status == "queued"
    assert server.calls("POST", RUNS) == 2


async def test_dropped_connection_then_success(server: Server) -> None:
    server.on("POST", RUNS, drop, reply(run_json()))
    rec = Recorder()
    async with make(server, observer=rec) as api:
        run = await api.create_run("thread_1", models.CreateRun(assistant_id="asst_1"))
    assert run.id == "run_1"
    assert server.calls("POST", RUNS) == 2
    assert rec.finished == [("create_run", None), ("create_run", 200)]
    assert isinstance(rec.retried[0][2], errors.APIConnectionError)


async def test_dropped_connection_on_get_still_succeeds(server: Server) -> None:
    # aiohttp itself may re-send an idempotent GET once, so only the outcome is asserted.
    server.on("GET", RUN, drop, reply(run_json("in_progress")))
    async with make(server) as api:
        run = await api.retrieve_run("thread_1", "run_1")
    assert run.status == "in_progress"
    assert server.calls("GET", RUN) == 2


async def test_every_attempt_dropped_raises_connection_error(server: Server) -> None:
    server.on("POST", RUN + "/cancel", drop)
    async with make(server) as api:
        with pytest.raises(errors.APIConnectionError) as info:
            await api.cancel_run("thread_1", "run_1")
    assert server.calls("POST", RUN + "/cancel") == FAST.attempts
    assert isinstance(info.value.__cause__, aiohttp.ClientError)


async def test_x_should_retry_false_overrides_500(server: Server) -> None:
    server.on("GET", RUN, api_error(500, "broken", {"x-should-retry": "false"}))
    async with make(server) as api:
        with pytest.raises(errors.ServerError) as info:
            await api.retrieve_run("thread_1", "run_1")
    assert server.calls("GET", RUN) == 1
    assert info.value.status == 500
    assert info.value.request_id == "req_err"


async def test_x_should_retry_true_overrides_400(server: Server) -> None:
    server.on(
        "GET", RUN, api_error(400, "try again", {"x-should-retry": "true"}), reply(run_json())
    )
    async with make(server) as api:
        assert (await api.retrieve_run("thread_1", "run_1")).id == "run_1"
    assert server.calls("GET", RUN) == 2


async def test_401_not_retried(server: Server) -> None:
    server.on("GET", RUN, api_error(401, "Incorrect API key provided"))
    async with make(server) as api:
        with pytest.raises(errors.AuthenticationError) as info:
            await api.retrieve_run("thread_1", "run_1")
    assert server.calls("GET", RUN) == 1
    assert info.value.message == "Incorrect API key provided"
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (429, {"retry-after": "3600"}),
        (503, {"retry-after-ms": "500000"}),
        (429, {"retry-after": "Wed, 21 Oct 2099 07:28:00 GMT"}),
    ],
)
async def test_retry_after_above_cap_fails_at_once(
    server: Server, status: int, headers: dict[str, str]
) -> None:
    server.on("GET", RUN, api_error(status, "busy", headers), reply(run_json()))
    async with make(server) as api:
        with pytest.raises(errors.RateLimitError) as info:
            await api.retrieve_run("thread_1", "run_1")
    assert server.calls("GET", RUN) == 1
    assert info.value.retry_after is not None
    assert info.value.retry_after > FAST.max_retry_after
    assert info.value.status == status


async def test_attempts_run_out_with_the_last_error(server: Server) -> None:
    page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
    server.on("GET", RUN, reply(page, 502, {"content-type": "text/html"}))
    async with make(server) as api:
        with pytest.raises(errors.ServerError) as info:
            await api.retrieve_run("thread_1", "run_1")
    assert server.calls("GET", RUN) == FAST.attempts
    assert info.value.status == 502
    assert "text/html" in info.value.message
    assert "502 Bad Gateway" in info.value.message
    assert "HTTP 502" in str(info.value)


async def test_html_error_page_gives_api_error_with_excerpt(server: Server) -> None:
    page = b"<!DOCTYPE html>\n<html>\n  <body>" + b"Forbidden by proxy " * 100 + b"</body></html>"
    server.on("POST", RUNS, reply(page, 403, {"content-type": "text/html; charset=utf-8"}))
    async with make(server) as api:
        with pytest.raises(errors.PermissionDeniedError) as info:
            await api.create_run("thread_1", models.CreateRun(assistant_id="a"))
    assert info.value.message.startswith("non-JSON error body (text/html): <!DOCTYPE html> <html>")
    assert len(info.value.message) < 300


async def test_unknown_error_status_is_plain_api_error(server: Server) -> None:
    server.on("GET", RUN, reply({"error": {"message": "teapot"}}, 418))
    async with make(server) as api:
        with pytest.raises(errors.APIError) as info:
            await api.retrieve_run("thread_1", "run_1")
    assert type(info.value) is errors.APIError
    assert (info.value.status, info.value.message) == (418, "teapot")


async def test_malformed_json_body_raises_decode_error(server: Server) -> None:
    """A truncated GET body is read again (it may have been cut on the way), then raised."""
    server.on("GET", RUN, reply(b'{"id": "run_1", "status": ', 200))
    async with make(server) as api:
        with pytest.raises(errors.DecodeError) as info:
            await api.retrieve_run("thread_1", "run_1")
    assert server.calls("GET", RUN) == FAST.attempts
    assert "retrieve_run" in str(info.value)


async def test_truncated_get_body_then_good_one_succeeds(server: Server) -> None:
    server.on("GET", RUN, reply(b'{"id": "run_1", "sta', 200), reply(run_json("completed")))
    async with make(server) as api:
        run = await api.retrieve_run("thread_1", "run_1")
    assert run.status == "completed"
    assert server.calls("GET", RUN) == 2


async def test_malformed_post_body_is_not_sent_again(server: Server) -> None:
    server.on("POST", RUN + "/cancel", reply(b'{"id": "run_1", "sta', 200))
    async with make(server) as api:
        with pytest.raises(errors.DecodeError):
            await api.cancel_run("thread_1", "run_1")
    assert server.calls("POST", RUN + "/cancel") == 1


async def test_wrong_shape_names_the_path(server: Server) -> None:
    server.on(
        "GET", RUN, reply(run_json(required_action={"submit_tool_outputs": {"tool_calls": [{}]}}))
    )
    async with make(server) as api:
        with pytest.raises(errors.DecodeError) as info:
            await api.retrieve_run("thread_1", "run_1")
    assert "$.required_action.submit_tool_outputs.tool_calls[0]" in str(info.value)


async def test_timeout_is_retried_then_raised(server: Server) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await server.stopping.wait()
        raise web.HTTPServiceUnavailable  # the client gave up long ago

    server.on("GET", RUN, slow)
    retry = config.RetryConfig(attempts=2, initial_backoff=0.001, max_backoff=0.001)
    async with make(server, retry=retry, timeout=0.05) as api:
        with pytest.raises(errors.APITimeoutError):
            await api.retrieve_run("thread_1", "run_1")
    assert server.calls("GET", RUN) == 2


# --- races (recovery itself lives in the run loop: tests/test_exactly_once.py) ----------


async def test_create_race_with_someone_elses_run_raises(server: Server) -> None:
    async def created_then_lost(request: web.Request) -> web.StreamResponse:
        return await drop(request)

    busy = api_error(400, "Thread thread_1 already has an active run run_1.")
    server.on("POST", RUNS, created_then_lost, busy)
    server.on("GET", RUN, reply(run_json("in_progress", assistant_id="asst_other")))
    async with make(server) as api:
        with pytest.raises(errors.BadRequestError, match="already has an active run"):
            await api.create_run("thread_1", models.CreateRun(assistant_id="asst_1"))


async def test_submit_refused_on_first_attempt_raises(server: Server) -> None:
    server.on(
        "POST", SUBMIT, api_error(400, 'Runs in status "expired" do not accept tool outputs.')
    )
    server.on("GET", RUN, reply(run_json("expired")))
    async with make(server) as api:
        with pytest.raises(errors.BadRequestError, match="do not accept tool outputs"):
            await api.submit_tool_outputs("thread_1", "run_1", [models.ToolOutput("c", "x")])
    assert [s.method for s in server.seen] == ["POST"]


async def test_openai_headers_and_body(server: Server) -> None:
    server.on("POST", RUNS, reply(run_json(), headers={"openai-poll-after-ms": "750"}))
    body = models.CreateRun(assistant_id="asst_1", instructions=None, temperature=0.5, stream=True)
    async with make(server, organization="org_1", project="proj_1") as api:
        resp = await api.create_run_response("thread_1", body)
    assert resp.poll_after_ms == 750
    assert resp.status == 200
    seen = server.seen[0]
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.headers["OpenAI-Beta"] == "assistants=v2"
    assert seen.headers["OpenAI-Organization"] == "org_1"
    assert seen.headers["OpenAI-Project"] == "proj_1"
    assert seen.headers["Content-Type"] == "application/json"
    assert "api-key" not in seen.headers
    assert not seen.query
    # Only what was set; explicit None kept; a stream flag dropped on the non-stream call.
    assert seen.body == b'{"assistant_id":"asst_1","instructions":null,"temperature":0.5}'


async def test_azure_url_headers_and_query(server: Server) -> None:
    root = server.url.removesuffix("/v1")
    server.on(
        "GET", "/openai/threads/thread_1/runs/run_1/steps", reply({"data": [], "has_more": False})
    )
    server.on("POST", "/openai/threads/thread_1/runs/run_1/cancel", reply(run_json("cancelling")))
    azure = make(server, flavor="azure", api_version="2024-05-01-preview", base_url=root + "/")
    async with azure as api:
        assert api.base_url == root + "/openai"
        include = ["step_details.tool_calls[*].file_search.results[*].content"]
        await api.list_run_steps("thread_1", "run_1", limit=5, include=include)
        run = await api.cancel_run("thread_1", "run_1")
    assert run.status == "cancelling"
    steps, cancel = server.seen
    for seen in (steps, cancel):
        assert seen.query["api-version"] == "2024-05-01-preview"
        assert seen.headers["api-key"] == KEY
        assert "Authorization" not in seen.headers
    assert steps.query.getall("include[]") == include
    assert steps.query["limit"] == "5"
    assert cancel.body == b""


def test_azure_without_base_url_is_a_config_error() -> None:
    api_cfg = config.ApiConfig(flavor="azure", api_version="2024-05-01-preview")
    with pytest.raises(errors.ConfigError, match="base_url"):
        client.AssistantsClient(api_cfg)


def test_default_base_url_is_openai() -> None:
    assert client.AssistantsClient().base_url == "https://api.openai.com/v1"


async def test_ids_cannot_escape_their_path_segment(server: Server) -> None:
    async with make(server) as api:
        with pytest.raises(errors.NotFoundError):
            await api.retrieve_run("../../assistants", "r?x=1")
    assert server.seen[0].raw_path == "/v1/threads/..%2F..%2Fassistants/runs/r%3Fx=1"


async def test_response_headers_exposed(server: Server) -> None:
    headers = {"x-request-id": "req_42", "openai-poll-after-ms": "soon"}
    server.on("GET", RUN, reply(run_json(), headers=headers))
    async with make(server) as api:
        resp = await api.retrieve_run_response("thread_1", "run_1")
    assert (resp.request_id, resp.poll_after_ms) == ("req_42", None)


async def test_other_endpoints(server: Server) -> None:
    asst = {"id": "asst_1", "object": "assistant", "created_at": 1, "model": "gpt-4o", "tools": []}
    thread = {"id": "thread_1", "object": "thread", "created_at": 2, "metadata": {}}
    message = {"id": "msg_1", "thread_id": "thread_1", "role": "user", "content": []}
    server.on("POST", "/v1/assistants", reply(asst))
    server.on("POST", "/v1/threads", reply(thread))
    server.on("POST", "/v1/threads/thread_1/messages", reply(message))
    server.on("GET", "/v1/threads/thread_1/messages", reply({"data": [message], "has_more": False}))
    server.on("POST", "/v1/threads/runs", reply(run_json()))
    server.on("POST", RUN, reply(run_json(metadata={"k": "v"})))
    hello = models.MessageRequest("user", "hello")
    async with make(server) as api:
        assert (await api.create_assistant(model="gpt-4o", name="bot")).id == "asst_1"
        assert (await api.create_thread(messages=[hello])).id == "thread_1"
        assert (await api.create_message("thread_1", hello)).id == "msg_1"
        page = await api.list_messages("thread_1", run_id="run_1", order="asc")
        assert [m.id for m in page.data] == ["msg_1"]
        tar = models.CreateThreadAndRun(assistant_id="asst_1", thread=models.ThreadRequest([hello]))
        assert (await api.create_thread_and_run(tar)).id == "run_1"
        assert (await api.modify_run("thread_1", "run_1", {"k": "v"})).metadata == {"k": "v"}
    bodies = [s.body for s in server.seen]
    assert bodies[0] == b'{"model":"gpt-4o","name":"bot"}'
    assert bodies[1] == b'{"messages":[{"role":"user","content":"hello"}]}'
    assert dict(server.seen[3].query) == {"order": "asc", "run_id": "run_1"}
    assert bodies[4] == (
        b'{"assistant_id":"asst_1","thread":{"messages":[{"role":"user","content":"hello"}]}}'
    )
    assert bodies[5] == b'{"metadata":{"k":"v"}}'


# --- pagination ---------------------------------------------------------------------------


def paged(items: list[dict[str, Any]], size: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        after = request.query.get("after")
        start = next(i + 1 for i, it in enumerate(items) if it["id"] == after) if after else 0
        page = items[start : start + size]
        more = start + size < len(items)
        return web.json_response({"object": "list", "data": page, "has_more": more})

    return handler


async def test_iter_runs_walks_every_page(server: Server) -> None:
    runs = [run_json(run_id=f"run_{i}") for i in range(7)]
    server.on("GET", RUNS, paged(runs, 3))
    async with make(server) as api:
        got = [r.id async for r in api.iter_runs("thread_1", limit=3, order="asc")]
        first = await api.list_runs("thread_1", limit=3, before="run_9")
    assert got == [r["id"] for r in runs]
    assert [s.query.get("after") for s in server.seen[:3]] == [None, "run_2", "run_5"]
    assert all(s.query["limit"] == "3" and s.query["order"] == "asc" for s in server.seen[:3])
    assert first.has_more
    assert server.seen[3].query["before"] == "run_9"


async def test_iter_run_steps_walks_every_page_with_include(server: Server) -> None:
    steps = [
        {"id": f"step_{i}", "run_id": "run_1", "type": "tool_calls", "status": "completed"}
        for i in range(5)
    ]
    server.on("GET", RUN + "/steps", paged(steps, 2))
    server.on("GET", RUN + "/steps/step_1", reply(steps[1]))
    inc = ["step_details.tool_calls[*].file_search.results[*].content"]
    async with make(server) as api:
        got = [s.id async for s in api.iter_run_steps("thread_1", "run_1", include=inc)]
        one = await api.retrieve_run_step("thread_1", "run_1", "step_1", include=inc)
    assert got == [s["id"] for s in steps]
    assert len(server.seen) == 4
    assert all(s.query.getall("include[]") == inc for s in server.seen)
    assert one.id == "step_1"


# --- rate limit, observer, session, secrets -------------------------------------------------


async def test_rate_limiter_bounds_requests(server: Server) -> None:
    server.on("GET", RUN, reply(run_json()))
    time = ManualTime()
    bucket = ratelimit.TokenBucket(2.0, burst=1, clock=time.clock, sleep=time.sleep)
    send, receive = anyio.create_memory_object_stream[int](10)
    async with make(server, limiter=bucket) as api, send, receive:

        async def call(n: int) -> None:
            await api.retrieve_run("thread_1", "run_1")
            await send.send(n)

        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(call, n)
            await receive.receive()
            await time.someone_sleeps.wait()
            # One token spent, one caller waiting for the clock, one queued behind it.
            assert len(server.seen) == 1
            assert len(time.sleepers) == 1
            time.advance(0.5)
            await receive.receive()
            assert len(server.seen) == 2
            await time.someone_sleeps.wait()
            time.advance(0.5)
            await receive.receive()
    assert len(server.seen) == 3
    assert time.requested == [0.5, 0.5]


async def test_max_connections_caps_requests_in_flight(server: Server) -> None:
    in_flight = 0
    peak = 0
    two_arrived = anyio.Event()
    gate = anyio.Event()

    async def held(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            two_arrived.set()
        await gate.wait()
        in_flight -= 1
        return web.json_response(run_json())

    server.on("GET", RUN, held)
    async with make(server, max_connections=2) as api, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(api.retrieve_run, "thread_1", "run_1")
        try:
            await two_arrived.wait()
            await anyio.wait_all_tasks_blocked()
            assert len(server.seen) == 2  # the other three wait for a connection
        finally:
            gate.set()
    assert len(server.seen) == 5
    assert peak == 2


async def test_rate_limit_from_config_applies(server: Server) -> None:
    server.on("GET", RUN, reply(run_json()))
    async with make(server, max_requests_per_second=1000.0) as api:
        for _ in range(3):
            await api.retrieve_run("thread_1", "run_1")
    assert len(server.seen) == 3


async def test_observer_sees_every_attempt(server: Server) -> None:
    server.on("GET", RUN, api_error(503, "later"), api_error(502, "later"), reply(run_json()))
    rec = Recorder()
    async with make(server, observer=rec) as api:
        await api.retrieve_run("thread_1", "run_1")
    assert rec.finished == [("retrieve_run", 503), ("retrieve_run", 502), ("retrieve_run", 200)]
    assert [(e, a, type(x)) for e, a, x in rec.retried] == [
        ("retrieve_run", 1, errors.ServerError),
        ("retrieve_run", 2, errors.ServerError),
    ]


async def test_failing_observer_does_not_fail_requests(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        def request_finished(self, endpoint: str, status: int | None, seconds: float) -> None:
            raise RuntimeError("metrics down")

        def request_retried(self, endpoint: str, attempt: int, error: BaseException) -> None:
            raise RuntimeError("metrics down")

    server.on("GET", RUN, api_error(500, "x"), reply(run_json()))
    async with make(server, observer=Broken()) as api:
        assert (await api.retrieve_run("thread_1", "run_1")).id == "run_1"
    assert sum(r.message == "request observer failed" for r in caplog.records) == 3


async def test_caller_session_is_not_closed(server: Server) -> None:
    server.on("GET", RUN, reply(run_json()))
    async with aiohttp.ClientSession() as session:
        api = client.AssistantsClient(config.ApiConfig(base_url=server.url), session=session)
        async with api:
            await api.retrieve_run("thread_1", "run_1")
        assert not session.closed
        assert (await api.retrieve_run("thread_1", "run_1")).id == "run_1"


async def test_unopened_client_says_so() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await client.AssistantsClient().retrieve_run("t", "r")


async def test_key_never_leaks(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.on("GET", RUN, api_error(500, "x"), api_error(401, "bad key"))
    api = make(server)
    assert KEY not in repr(api)
    raised: list[BaseException] = []
    async with api:
        with pytest.raises(errors.AuthenticationError) as info:
            await api.retrieve_run("thread_1", "run_1")
        raised.append(info.value)
    assert server.seen[0].headers["Authorization"] == f"Bearer {KEY}"  # it was sent, though
    # A connection error too: nothing listens on the port of a stopped server.
    dead = client.AssistantsClient(
        config.ApiConfig(base_url="http://127.0.0.1:9/v1", flavor="openai"),
        config.RetryConfig(attempts=2, initial_backoff=0.001, max_backoff=0.001),
        api_key=config.Secret(KEY),
    )
    async with dead:
        with pytest.raises(errors.APIConnectionError) as info2:
            await dead.retrieve_run("thread_1", "run_1")
        raised.append(info2.value)
    for exc in raised:
        text = "".join(traceback.format_exception(exc))
        assert KEY not in text
        assert KEY not in repr(exc)
        assert KEY not in str(exc)
    assert KEY not in caplog.text
    assert KEY not in repr(dead)
    assert all(KEY not in repr(r.__dict__) for r in caplog.records)

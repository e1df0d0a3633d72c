"""Review of the ProtocolLoop refactor (Assistants runs on the protocol seam): behaviours the
old ``RunLoop`` had that the loop must keep. Each test here failed on the refactored code when
it was written, and passes since."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import anyio
import msgspec
import pytest
from aiohttp import web
from run_shapes import run_json
from test_driver import calls, client, emu, make_assistant, make_config, of, registry, script

from orchestrator import config, driver, events, tools
from orchestrator import orchestrator as orch_mod
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants.client import AssistantsClient

__all__ = ["calls", "client", "emu", "registry"]

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """What a caller's code raises while a run is being driven."""


async def ignore(event: events.Event) -> None:
    """An ``emit`` that drops every event."""


class Rig(NamedTuple):
    client: AssistantsClient
    runs: driver.Driver
    thread_id: str
    assistant: str


@asynccontextmanager
async def rig(
    emu: Emulator, registry: tools.ToolRegistry, cfg: config.Config
) -> AsyncIterator[Rig]:
    """A client and a driver with ``cfg`` against ``emu``, a thread and an assistant."""
    api = msgspec.structs.replace(cfg.api, base_url=emu.base_url)
    async with AssistantsClient(api, cfg.retry, api_key="k") as c:
        thread = await c.create_thread()
        assistant = await make_assistant(c, registry)
        yield Rig(c, driver.Driver(c, registry, cfg), thread.id, assistant)


Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]


async def run_against(
    routes: Sequence[Route], registry: tools.ToolRegistry, **sections: dict[str, Any]
) -> tuple[Any, list[events.Event]]:
    """One ``Orchestrator.run`` against a hand-written server (for what the emulator does not
    do), with the thread's messages listed empty; its result and events."""

    async def messages(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [], "has_more": False})

    app = web.Application()
    for method, path, handler in [*routes, ("GET", "/v1/threads/{t}/messages", messages)]:
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    seen: list[events.Event] = []
    try:
        base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        cfg = make_config(api={"base_url": base_url}, **sections)
        async with orch_mod.Orchestrator(
            cfg, registry=registry, api_key="k", handler=seen.append
        ) as orch:
            with anyio.fail_after(20):
                result = await orch.run(thread_id="thread_1", assistant_id="asst_1")
    finally:
        await runner.cleanup()
    return result, seen


async def test_abort_whose_cancel_outlasts_cancel_timeout_raises_the_callers_error(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """The cancel request of an abort is slower than ``run.cancel_timeout``: the caller still
    gets its own exception (not an ``UnboundLocalError`` from the abort path)."""
    emu.configure(slow_delay=1.5)
    cfg = make_config(run={"cancel_timeout": 0.3})
    async with rig(emu, registry, cfg) as (_c, runs, thread_id, assistant):

        async def emit(event: events.Event) -> None:
            if isinstance(event, events.StatusChanged) and event.current == "in_progress":
                emu.inject("slow", method="POST", path_suffix="/cancel", times=5)
                raise Boom("the caller's handler failed")

        body = models.CreateRun(assistant_id=assistant, metadata=script({"stall": True}))
        with anyio.fail_after(20), pytest.raises(Boom):
            await runs.create(thread_id, body, emit=emit)


async def test_abort_after_the_run_was_seen_completed_sends_no_cancel(
    emu: Emulator, client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    """The caller's handler fails on the poll that shows the run completed: the run is over,
    so the abort cancels nothing (the old loop looked at the latest view of the run)."""
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    runs = driver.Driver(client, registry, make_config(poll={"mode": "poll"}))
    seen: list[events.Event] = []

    async def emit(event: events.Event) -> None:
        seen.append(event)
        if isinstance(event, events.StatusChanged) and event.current == "completed":
            raise Boom("the caller's handler failed")

    body = models.CreateRun(assistant_id=assistant, metadata=script({"message": "hi"}))
    with anyio.fail_after(20), pytest.raises(Boom):
        await runs.create(thread.id, body, emit=emit)
    assert emu.stats().count(contains="/cancel") == 0
    # nothing is reported after the failure (the reply is not fetched for an abandoned drive)
    assert isinstance(seen[-1], events.StatusChanged)


@pytest.mark.parametrize("mode", ["poll", "stream"])
async def test_failure_while_opening_notes_the_created_run(
    mode: str, client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    """``on_run`` (the worker records the run there) fails: the exception names the run it
    leaves behind, as it did before the refactor."""
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    runs = driver.Driver(client, registry, make_config(poll={"mode": mode}))
    made: list[str] = []

    async def on_run(run: models.Run) -> None:
        made.append(run.id)
        raise Boom("could not record the run")

    body = models.CreateRun(assistant_id=assistant, metadata=script({"stall": True}))
    with anyio.fail_after(20), pytest.raises(Boom) as info:
        await runs.create(thread.id, body, emit=ignore, on_run=on_run)
    notes: list[Any] = getattr(info.value, "__notes__", [])
    assert made
    assert any(made[0] in note for note in notes), notes


async def test_unknown_status_seen_only_in_the_stream_is_reported(
    registry: tools.ToolRegistry,
) -> None:
    """A status from the future that the run passes through while streaming is reported
    (``UnknownStatus``) even though the loop only sees the run once the stream ends."""

    def frame(name: str, status: str) -> bytes:
        return f"event: {name}\ndata: {json.dumps(run_json(status))}\n\n".encode()

    async def create(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(
            frame("thread.run.created", "queued")
            + frame("thread.run.in_progress", "paused_for_review")
            + frame("thread.run.completed", "completed")
            + b"event: done\ndata: [DONE]\n\n"
        )
        await response.write_eof()
        return response

    result, seen = await run_against(
        [("POST", "/v1/threads/{t}/runs", create)], registry, poll={"mode": "stream"}
    )
    assert result.outcome == "completed"
    assert [e.current for e in of(seen, events.StatusChanged)] == [
        "queued",
        "paused_for_review",
        "completed",
    ]
    assert [u.status for u in of(seen, events.UnknownStatus)] == ["paused_for_review"]


async def test_a_run_done_before_the_deadline_poll_is_not_cancelled(
    emu: Emulator, registry: tools.ToolRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The server asks for polls 1 s apart; the run completes well before ``run_timeout``
    (0.6 s) but after the last poll: one look at the deadline finds it completed, so nothing
    is cancelled and no deadline is reported."""
    emu.configure(poll_after_ms=1000, queue_delay=0.01, think_delay=0.05)
    cfg = make_config(poll={"mode": "poll"}, run={"run_timeout": 0.6})
    async with rig(emu, registry, cfg) as (_c, runs, thread_id, assistant):
        body = models.CreateRun(assistant_id=assistant, metadata=script({"message": "hi"}))
        with anyio.fail_after(20):
            result = await runs.create(thread_id, body, emit=ignore)
    assert result.outcome == "completed"
    assert emu.stats().count(contains="/cancel") == 0
    assert not [r for r in caplog.records if getattr(r, "action", None) == "timeout"]


async def test_a_cancel_past_cancel_timeout_reports_the_run_as_last_seen(
    emu: Emulator, registry: tools.ToolRegistry
) -> None:
    """The run stays ``cancelling`` longer than ``run.cancel_timeout``: the result shows it
    ``cancelling`` (as the cancel request answered), not the status before the cancel."""
    emu.configure(cancel_delay=5.0)
    cfg = make_config(poll={"mode": "poll"}, run={"run_timeout": 0.3, "cancel_timeout": 0.3})
    async with rig(emu, registry, cfg) as (_c, runs, thread_id, assistant):
        seen: list[events.Event] = []

        async def emit(event: events.Event) -> None:
            seen.append(event)

        body = models.CreateRun(assistant_id=assistant, metadata=script({"stall": True}))
        with anyio.fail_after(20):
            result = await runs.create(thread_id, body, emit=emit)
    assert result.outcome == "timed_out"
    assert [e.current for e in of(seen, events.StatusChanged)][-1] == "cancelling"
    assert result.run.status == "cancelling"


async def test_a_tool_failure_is_not_logged_as_a_timeout(
    client: AssistantsClient, registry: tools.ToolRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    runs = driver.Driver(client, registry, make_config())

    body = models.CreateRun(
        assistant_id=assistant,
        metadata=script({"tool_calls": [{"name": "critical", "arguments": {"x": 1}}]}),
    )
    with anyio.fail_after(20):
        result = await runs.create(thread.id, body, emit=ignore)
    assert result.outcome == "tool_failed"
    actions = [getattr(r, "action", None) for r in caplog.records if r.levelname == "WARNING"]
    assert "tool_failed" in actions
    assert "timeout" not in actions


async def test_cancelling_the_run_of_a_create_cut_off_is_logged(
    emu: Emulator, registry: tools.ToolRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The caller goes away while a streaming create is in flight (it lands, its answer is
    slow): the run is found by its reference and cancelled, and the log says so."""
    caplog.set_level(logging.INFO)
    emu.configure(slow_delay=1.0)
    cfg = make_config(poll={"mode": "stream"})
    async with rig(emu, registry, cfg) as (c, runs, thread_id, assistant):
        body = models.CreateRun(assistant_id=assistant, metadata=script({"stall": True}))
        emu.inject("slow", method="POST", path_suffix=f"/{thread_id}/runs")
        with anyio.fail_after(20), anyio.move_on_after(0.3):
            await runs.create(thread_id, body, emit=ignore)
        with anyio.fail_after(10):
            while not (page := await c.list_runs(thread_id)).data:  # noqa: ASYNC110
                await anyio.sleep(0.02)
    assert page.data[0].status in {"cancelling", "cancelled"}
    assert any("driver stopped" in r.getMessage() for r in caplog.records)


class CountingLedger:
    """A ledger that keeps nothing and counts the claim checks that ask the store."""

    def __init__(self) -> None:
        self.confirms = 0

    async def confirm(self) -> None:
        self.confirms += 1

    def check(self) -> None:
        return None

    async def calls(self, run_id: str) -> dict[str, Any]:
        return {}

    async def outputs(self, run_id: str) -> dict[str, str]:  # the ledger before the refactor
        return {}

    async def submitted_calls(self, run_id: str) -> set[str]:  # likewise
        return set()

    async def record(self, run_id: str) -> None:
        return None

    async def begin(self, run_id: str, ids: Any) -> dict[str, int]:
        return dict.fromkeys(ids, 1)

    async def save(self, run_id: str, call_id: str, output: str) -> None:
        return None

    async def submitted(self, run_id: str, ids: Any) -> None:
        return None


async def test_a_create_asks_the_store_for_the_claim_once(
    client: AssistantsClient, registry: tools.ToolRegistry
) -> None:
    """One fenced claim check (a store query) before the create, as before the refactor: the
    loop's own check and the session's opening check are the same one."""
    assistant = await make_assistant(client, registry)
    thread = await client.create_thread()
    runs = driver.Driver(client, registry, make_config(), cancel_on_abort=False)
    ledger = CountingLedger()

    body = models.CreateRun(assistant_id=assistant, metadata=script({"message": "hi"}))
    with anyio.fail_after(20):
        result = await runs.create(thread.id, body, emit=ignore, ledger=ledger)
    assert result.ok
    assert ledger.confirms == 1


async def test_tools_of_a_run_without_expires_at_are_bounded_by_the_timeouts_only(
    registry: tools.ToolRegistry, calls: Any
) -> None:
    """A server that shows no ``expires_at``: the tools' deadline is ``run.run_timeout`` (none
    here), not an expiry the client assumes (the 10 min ``RUN_LIFETIME`` bounds waiting only).
    A margin beyond 10 min shows it: with an assumed expiry the tool never starts."""

    action = {
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                }
            ]
        },
    }

    async def create(request: web.Request) -> web.Response:
        return web.json_response(run_json("requires_action", required_action=action))

    async def submit(request: web.Request) -> web.Response:
        return web.json_response(run_json("completed"))

    routes: list[Route] = [
        ("POST", "/v1/threads/{t}/runs", create),
        ("POST", "/v1/threads/{t}/runs/{r}/submit_tool_outputs", submit),
    ]
    result, seen = await run_against(
        routes, registry, poll={"mode": "poll"}, tools={"deadline_margin": 700.0}
    )
    assert result.ok
    assert [f.error_type for f in of(seen, events.ToolCallFinished)] == [None]
    assert calls.seen == [("add", (1, 2))]

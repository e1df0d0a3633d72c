"""Text for end users as events: message deltas and run-step deltas in stream mode, the whole
message as one event in poll mode, nothing repeated after a stream cut."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from aiohttp import web
from run_shapes import run_json

from orchestrator import Config, Emulator, Orchestrator, ToolRegistry, events, testing
from orchestrator.testing import Script, call

registry = ToolRegistry()


@registry.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


REPLY = "The sum is {output:add}, and this reply is long enough to come in several pieces."


@pytest.fixture
def tool_registry() -> ToolRegistry:
    return registry


@pytest.fixture(params=["poll", "stream"])
def orchestrator_config(request: pytest.FixtureRequest, emulator: Emulator) -> Config:
    return testing.emulator_config(emulator, poll={"mode": request.param})


def of(seen: list[events.Event], kind: type[Any]) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


def texts_by_message(seen: list[events.Event]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for d in of(seen, events.MessageDelta):
        joined[d.message_id] = joined.get(d.message_id, "") + d.text
    return joined


async def test_message_text_arrives_as_events_in_both_modes(orchestrator: Orchestrator) -> None:
    run = await testing.run_script(orchestrator, Script(call("add", a=2, b=3), reply=REPLY))
    assert run.ok
    deltas = of(run.events, events.MessageDelta)
    assert list(texts_by_message(run.events).values()) == [run.reply]
    assert run.reply == REPLY.replace("{output:add}", "5")
    finished = run.events.index(of(run.events, events.RunFinished)[0])
    assert all(run.events.index(d) < finished for d in deltas)
    if orchestrator.config.poll.mode == "poll":
        assert len(deltas) == 1  # the whole message in one event
        assert not of(run.events, events.StepDelta)
    else:
        assert len(deltas) > 1  # token by token, as the server sends them
    # every event still encodes to JSON and back
    for event in run.events:
        assert events.decode_event(events.encode_event(event)) == event


async def test_stream_mode_reports_step_deltas_before_the_tools_run(
    orchestrator: Orchestrator,
) -> None:
    run = await testing.run_script(orchestrator, Script(call("add", a=2, b=3), reply="ok"))
    step_deltas = of(run.events, events.StepDelta)
    if orchestrator.config.poll.mode == "poll":
        assert not step_deltas  # polling sees whole steps only
        return
    assert step_deltas
    requested = run.events.index(of(run.events, events.ToolCallsRequested)[0])
    assert all(run.events.index(d) < requested for d in step_deltas)
    name, arguments = None, ""
    for d in step_deltas:
        assert d.run_id == run.result.run.id
        details = d.delta.step_details
        assert details is not None
        assert details.type == "tool_calls"
        for fragment in details.tool_calls or ():
            assert fragment.index == 0
            if fragment.function is not None:
                name = fragment.function.name or name
                arguments += fragment.function.arguments or ""
    assert name == "add"
    assert json.loads(arguments) == {"a": 2, "b": 3}


async def test_a_stream_cut_repeats_no_text(orchestrator: Orchestrator) -> None:
    faults = {"emulator_faults": json.dumps({"fault_stream_cut": 1.0})}
    text = "A reply long enough that the cut can land in the middle of it. " * 4
    run = await testing.run_script(orchestrator, Script(reply=text), metadata=faults)
    assert run.ok
    if orchestrator.config.poll.mode == "stream":
        assert of(run.events, events.StreamFallback)
    assert list(texts_by_message(run.events).values()) == [run.reply]
    assert run.reply is not None
    assert run.reply.strip() == text.strip()


@pytest.mark.anyio
async def test_a_cut_in_the_middle_of_a_message_sends_only_the_rest(
    tool_registry: ToolRegistry,
) -> None:
    """The stream showed the first words; polling fetches the message and sends what is left."""
    whole = "Hello there, the rest of this sentence comes after the cut."
    shown = whole[:12]

    async def create(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        delta = {
            "id": "msg_1",
            "object": "thread.message.delta",
            "delta": {"content": [{"index": 0, "type": "text", "text": {"value": shown}}]},
        }
        await response.write(
            b"event: thread.run.created\ndata: " + json.dumps(run_json("queued")).encode() + b"\n\n"
            b"event: thread.message.delta\ndata: " + json.dumps(delta).encode() + b"\n\n"
        )
        assert request.transport is not None
        request.transport.abort()  # the connection drops mid-message
        return response

    async def retrieve(request: web.Request) -> web.Response:
        return web.json_response(run_json("completed"))

    async def messages(request: web.Request) -> web.Response:
        message = {
            "id": "msg_1",
            "object": "thread.message",
            "created_at": 1,
            "thread_id": "thread_1",
            "role": "assistant",
            "run_id": "run_1",
            "content": [{"type": "text", "text": {"value": whole, "annotations": []}}],
        }
        return web.json_response({"object": "list", "data": [message], "has_more": False})

    app = web.Application()
    app.router.add_post("/v1/threads/{t}/runs", create)
    app.router.add_get("/v1/threads/{t}/runs/{r}", retrieve)
    app.router.add_get("/v1/threads/{t}/messages", messages)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    seen: list[events.Event] = []
    try:
        cfg = msgspec.convert(
            {
                "api": {"base_url": f"http://127.0.0.1:{runner.addresses[0][1]}/v1"},
                "poll": {"mode": "stream", "initial_interval": 0.01, "max_interval": 0.05},
                "retry": {"attempts": 1},
                "tools": {"modules": []},
            },
            Config,
        )
        async with Orchestrator(cfg, registry=tool_registry, api_key="k") as orch:
            result = await orch.run(
                thread_id="thread_1", assistant_id="asst_1", handler=seen.append
            )
    finally:
        await runner.cleanup()
    assert result.reply == whole
    assert of(seen, events.StreamFallback)
    assert [d.text for d in of(seen, events.MessageDelta)] == [shown, whole[len(shown) :]]

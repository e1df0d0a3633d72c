"""The official ``openai`` SDK, unchanged, against the emulator (polling, streaming, Azure)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncAssistantEventHandler, AsyncAzureOpenAI, AsyncOpenAI
from openai.types.beta import AssistantStreamEvent

from orchestrator.emulator import Emulator

# The SDK marks every Assistants method deprecated; silenced here only.
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

GET_TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "enum": ["UTC", "Europe/Paris"]}},
            "required": ["tz"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02, poll_after_ms=10) as e:
        yield e


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0) as c:
        yield c


async def test_sdk_create_and_poll_then_submit_and_poll(client: AsyncOpenAI) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o", tools=[GET_TIME])
    thread = await client.beta.threads.create()
    await client.beta.threads.messages.create(thread.id, role="user", content="What time is it?")

    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments)["tz"] in ("UTC", "Europe/Paris")

    output = json.dumps({"time": "12:00"})
    run = await client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": call.id, "output": output}],
        poll_interval_ms=10,
    )
    assert run.status == "completed"
    assert run.usage is not None
    assert run.usage.total_tokens > 0

    steps = await client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id)
    tool_steps = [s for s in steps.data if s.step_details.type == "tool_calls"]
    [step] = tool_steps
    assert step.step_details.type == "tool_calls"
    [fn_call] = step.step_details.tool_calls
    assert fn_call.type == "function"
    assert fn_call.id == call.id
    assert fn_call.function.output == output

    messages = await client.beta.threads.messages.list(thread_id=thread.id, run_id=run.id)
    [reply] = messages.data
    assert reply.content[0].type == "text"
    assert f"get_time -> {output}" in reply.content[0].text.value


async def test_sdk_poll_follows_the_poll_after_header(client: AsyncOpenAI) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o")
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    # No poll_interval_ms: the SDK waits what openai-poll-after-ms says (10 ms), not 1 s.
    run = await client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "completed"
    page = await client.beta.threads.runs.list(thread_id=thread.id)
    assert [r.id for r in page.data] == [run.id]


class Recorder(AsyncAssistantEventHandler):
    """Remembers every event name and the tool-call deltas the SDK assembled."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.tool_calls_done: list[str] = []

    async def on_event(self, event: AssistantStreamEvent) -> None:
        self.names.append(event.event)

    async def on_tool_call_done(self, tool_call: Any) -> None:
        self.tool_calls_done.append(tool_call.function.arguments)


async def test_sdk_stream_sees_requires_action_then_submit_stream_completes(
    client: AsyncOpenAI,
) -> None:
    assistant = await client.beta.assistants.create(model="gpt-4o", tools=[GET_TIME])
    thread = await client.beta.threads.create(messages=[{"role": "user", "content": "time?"}])

    first = Recorder()
    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=first
    ) as stream:
        await stream.until_done()
    run = first.current_run
    assert run is not None
    assert run.status == "requires_action"
    assert first.names[0] == "thread.run.created"
    assert first.names[-1] == "thread.run.requires_action"
    assert run.required_action is not None
    [call] = run.required_action.submit_tool_outputs.tool_calls
    assert first.tool_calls_done == [call.function.arguments]  # deltas assembled right

    second = Recorder()
    async with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread.id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "noon"}],
        event_handler=second,
    ) as stream:
        await stream.until_done()
    assert second.current_run is not None
    assert second.current_run.status == "completed"
    assert second.names[-1] == "thread.run.completed"
    [message] = await second.get_final_messages()
    assert message.content[0].type == "text"
    assert message.content[0].text.value.endswith("get_time -> noon")


async def test_sdk_azure_client(emu: Emulator) -> None:
    async with AsyncAzureOpenAI(
        azure_endpoint=emu.azure_endpoint,
        api_key="k",
        api_version="2024-05-01-preview",
        max_retries=0,
    ) as azure:
        assistant = await azure.beta.assistants.create(model="my-deployment", tools=[GET_TIME])
        thread = await azure.beta.threads.create(messages=[{"role": "user", "content": "t?"}])
        run = await azure.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
        )
        assert run.status == "requires_action"
        assert run.model == "my-deployment"
    assert emu.stats().count("POST /openai/threads/{thread_id}/runs", 200) == 1

"""The official ``openai`` SDK, unchanged, against the emulator's ``/responses``: background
create and retrieve polling, streamed create and resume with ``starting_after``, function-call
rounds with ``previous_response_id``, cancel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import AsyncOpenAI
from responses_support import sdk_poll as _poll

from orchestrator.emulator import Emulator

pytestmark = pytest.mark.anyio

GET_TIME: Any = {
    "type": "function",
    "name": "get_time",
    "description": "The time in a time zone.",
    "parameters": {
        "type": "object",
        "properties": {"tz": {"type": "string", "enum": ["UTC", "Europe/Paris"]}},
        "required": ["tz"],
        "additionalProperties": False,
    },
}


@pytest.fixture
async def client() -> AsyncIterator[AsyncOpenAI]:
    async with (
        Emulator(queue_delay=0.01, think_delay=0.02) as emu,
        AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0) as c,
    ):
        yield c


async def test_sdk_background_polling_and_function_call_rounds(client: AsyncOpenAI) -> None:
    script = json.dumps(
        [
            {"tool_calls": [{"name": "get_time", "arguments": {"tz": "UTC"}}]},
            {"tool_calls": [{"name": "get_time", "arguments": {"tz": "Europe/Paris"}}]},
            {"message": "UTC {outputs}"},
        ]
    )
    response = await client.responses.create(
        model="gpt-4o",
        input="What time is it?",
        tools=[GET_TIME],
        background=True,
        metadata={"emulator_script": script},
    )
    assert response.status == "queued"
    assert response.background is True
    rounds = 0
    while True:
        response = await _poll(client, response)
        assert response.status == "completed"
        calls = [item for item in response.output if item.type == "function_call"]
        if not calls:
            break
        rounds += 1
        outputs: Any = [
            {"type": "function_call_output", "call_id": c.call_id, "output": f"t{rounds}"}
            for c in calls
        ]
        response = await client.responses.create(
            model="gpt-4o", previous_response_id=response.id, input=outputs, background=True
        )
    assert rounds == 2
    assert response.output_text == "UTC get_time -> t1\nget_time -> t2"
    assert response.usage is not None
    assert response.usage.total_tokens > 0


async def test_sdk_stream_background_then_resume_after_a_cut(client: AsyncOpenAI) -> None:
    stream = await client.responses.create(
        model="gpt-4o", input="hello", background=True, stream=True
    )
    response_id, last = "", -1
    async for event in stream:
        if event.type == "response.created":
            response_id = event.response.id
        last = event.sequence_number
        if last == 2:
            break  # the reader goes away, as after a cut
    await stream.close()
    resumed = await client.responses.retrieve(response_id, stream=True, starting_after=last)
    types, text = [], ""
    async for event in resumed:
        assert event.sequence_number > last
        last = event.sequence_number
        types.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
    assert types[-1] == "response.completed"
    assert text == "You said: hello"


async def test_sdk_cancel_background_response(client: AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="gpt-4o",
        input="x",
        background=True,
        metadata={"emulator_script": json.dumps([{"stall": True}])},
    )
    cancelled = await client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    again = await client.responses.retrieve(response.id)
    assert again.status == "cancelled"

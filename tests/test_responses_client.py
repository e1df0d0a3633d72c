"""``ResponsesClient`` against the emulator's ``/responses``: create, retrieve, cancel, streams
and resume, function-call rounds, faults, and recovering a create whose answer was lost."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import pytest
from responses_support import until_done as _until_done

from orchestrator import config, errors
from orchestrator.emulator import Emulator
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import stream, wire

pytestmark = pytest.mark.anyio

GET_TIME = wire.Tool(
    type="function",
    name="get_time",
    parameters={"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]},
)


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02, poll_after_ms=10) as e:
        yield e


def _client(emu: Emulator, attempts: int = 3) -> client_mod.ResponsesClient:
    api = config.ApiConfig(base_url=emu.base_url, timeout=5.0)
    retry = config.RetryConfig(attempts=attempts, initial_backoff=0.01, max_backoff=0.02)
    return client_mod.ResponsesClient(api, retry, api_key="k")


async def test_background_create_poll_and_function_call_round(emu: Emulator) -> None:
    async with _client(emu) as c:
        created = await c.create(
            wire.CreateResponse(
                model="m", input="What time is it?", tools=[GET_TIME], background=True
            )
        )
        assert created.data.status == "queued"
        assert created.poll_after_ms == 10
        first = await _until_done(c, created.data.id)
        assert first.status == "completed"
        [call] = first.function_calls
        assert call.name == "get_time"
        assert "tz" in json.loads(call.arguments or "")
        body = wire.CreateResponse(
            model="m",
            previous_response_id=first.id,
            input=[wire.InputItem.function_output(call.call_id or "", "12:00")],
            background=True,
        )
        second = await _until_done(c, (await c.create(body)).data.id)
    assert second.previous_response_id == first.id
    assert second.function_calls == []
    assert second.text is not None
    assert "get_time -> 12:00" in second.text
    assert emu.responses_stats().outputs_received == 1


async def test_continuation_missing_an_output_is_refused(emu: Emulator) -> None:
    async with _client(emu) as c:
        r = await c.create(wire.CreateResponse(model="m", input="x", tools=[GET_TIME]))
        assert r.data.status == "completed"
        assert r.data.background is False
        with pytest.raises(errors.BadRequestError, match="No tool output found"):
            await c.create(wire.CreateResponse(model="m", previous_response_id=r.data.id, input=[]))


async def test_cancel_a_background_response(emu: Emulator) -> None:
    script = json.dumps([{"stall": True}])
    async with _client(emu) as c:
        body = wire.CreateResponse(
            model="m", input="x", background=True, metadata={"emulator_script": script}
        )
        r = (await c.create(body)).data
        cancelled = await c.cancel(r.id)
        assert cancelled.status == "cancelled"
        assert cancelled.is_terminal
        with pytest.raises(errors.BadRequestError):
            await c.cancel((await c.create(wire.CreateResponse(model="m", input="y"))).data.id)


async def test_stream_then_resume_after_a_sequence_number(emu: Emulator) -> None:
    async with _client(emu) as c:
        seen: list[stream.ServerEvent] = []
        body = wire.CreateResponse(model="m", input="hello", background=True)
        async with c.create_stream(body) as events:
            async for event in events:
                seen.append(event)
                if event.sequence_number == 2:
                    break
        first = seen[0]
        assert isinstance(first, stream.ResponseEvent)
        assert first.type == "response.created"
        rid = first.response.id
        rest: list[stream.ServerEvent] = []
        async with c.retrieve_stream(rid, starting_after=2) as events:
            rest.extend([e async for e in events])
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))
    assert any(isinstance(e, stream.TextDeltaEvent) for e in rest)
    last = rest[-1]
    assert isinstance(last, stream.ResponseEvent)
    assert last.type == "response.completed"
    assert last.response.text == "You said: hello"
    unknown = [e for e in rest if isinstance(e, stream.UnknownEvent)]
    assert {e.type for e in unknown} >= {"response.content_part.added"}


def seed_faulting_first(p: float, quiet: int = 8) -> int:
    """A fault seed whose first draw faults (probability ``p``) and the next ``quiet`` do not."""
    for seed in range(10_000):
        rng = random.Random(seed)
        draws = [rng.random() for _ in range(quiet + 1)]
        if draws[0] < p and all(d >= p for d in draws[1:]):
            return seed
    raise AssertionError("no such seed")


async def test_create_whose_answer_is_lost_is_recovered_by_client_id(emu: Emulator) -> None:
    # The first create takes effect but answers 500; the retry finds it instead of re-creating.
    emu.configure(seed=seed_faulting_first(0.5), fault_500=0.5, fault_after_apply=True)
    async with _client(emu) as c:
        body = wire.CreateResponse(
            model="m", input="x", background=True, metadata={client_mod.CLIENT_ID_KEY: "cid-1"}
        )
        found = (await c.create(body)).data
    assert found.metadata == {client_mod.CLIENT_ID_KEY: "cid-1"}
    assert sum(emu.responses_stats().responses.values()) == 1
    assert emu.stats().count("POST /v1/responses", 500) == 1


async def test_create_without_client_id_is_simply_retried(emu: Emulator) -> None:
    emu.configure(seed=seed_faulting_first(0.5), fault_500=0.5, fault_after_apply=True)
    async with _client(emu) as c:
        await c.create(wire.CreateResponse(model="m", input="x", background=True))
    assert sum(emu.responses_stats().responses.values()) == 2  # what recovery prevents


async def test_stream_cut_raises_connection_error_and_resume_finishes(emu: Emulator) -> None:
    async with _client(emu) as c:
        r = (await c.create(wire.CreateResponse(model="m", input="hi", background=True))).data
        emu.configure(fault_stream_cut=1.0)
        seen: list[int | None] = []

        async def read() -> None:
            async with c.retrieve_stream(r.id) as events:
                async for event in events:
                    seen.append(event.sequence_number)

        with pytest.raises(errors.APIConnectionError):
            await read()
        assert seen
        last = seen[-1]
        emu.configure(fault_stream_cut=0.0)
        async with c.retrieve_stream(r.id, starting_after=last) as events:
            tail = [e async for e in events]
    assert tail
    assert tail[-1].type == "response.completed"


async def test_error_event_raises_stream_error() -> None:
    frame = stream.sse.SSEMessage(
        "error", b'{"type":"error","code":"server_error","message":"boom","sequence_number":4}'
    )
    with pytest.raises(errors.StreamError, match="boom"):
        stream.decode_event(frame)
    unknown = stream.decode_event(
        stream.sse.SSEMessage("message", b'{"type":"response.brand_new","sequence_number":7}')
    )
    assert isinstance(unknown, stream.UnknownEvent)
    assert unknown.sequence_number == 7
    with pytest.raises(errors.DecodeError):
        stream.decode_event(
            stream.sse.SSEMessage("response.completed", b'{"type":"response.completed"}')
        )

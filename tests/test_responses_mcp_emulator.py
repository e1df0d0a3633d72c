"""The emulator's MCP approval rounds in ``/responses``, driven by the official ``openai`` SDK
unchanged and by the project's own wire models: ``mcp_approval_request`` items, answers in a
continuation (approved, denied, missing, duplicated, unknown), the ``mcp_call`` items that
follow, ``require_approval`` on the ``mcp`` tool, stream events, and the stats of answers."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
from openai import AsyncOpenAI, BadRequestError
from openai.types.responses import Response, ResponseOutputMessage, ResponseStreamEvent
from openai.types.responses.response_output_item import McpApprovalRequest, McpCall
from pydantic import TypeAdapter
from responses_support import sdk_poll as _poll
from responses_support import until_done as _until_done

from orchestrator import config
from orchestrator.emulator import Emulator, responses_objects
from orchestrator.protocols.assistants import streaming
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import stream, wire

pytestmark = pytest.mark.anyio

SEARCH: Any = {"server_label": "github", "name": "search", "arguments": {"q": "msgspec"}}
READ: Any = {"server_label": "github", "name": "read_file", "arguments": {"path": "README.md"}}
#: Two calls to approve, then a closing message quoting what came of them.
SCRIPT = json.dumps([{"mcp_calls": [SEARCH, READ]}, {"message": "Done. {outputs}"}])
SEARCH_OUT = '{"search": "ran on github"}'
READ_OUT = '{"read_file": "ran on github"}'


def _mcp_tool(require_approval: Any = "always") -> Any:
    return {
        "type": "mcp",
        "server_label": "github",
        "server_url": "https://mcp.example.invalid/mcp",
        "require_approval": require_approval,
    }


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(queue_delay=0.01, think_delay=0.02) as e:
        yield e


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=emu.base_url, api_key="x", max_retries=0) as c:
        yield c


async def _ask(client: AsyncOpenAI, script: str = SCRIPT, tool: Any = None) -> Response:
    """A background response whose script asks for approvals, polled to its end."""
    response = await client.responses.create(
        model="gpt-4o",
        input="Look up msgspec and read its README.",
        tools=[tool if tool is not None else _mcp_tool()],
        background=True,
        metadata={"emulator_script": script},
    )
    return await _poll(client, response)


async def _answer(client: AsyncOpenAI, parent: Response, answers: list[Any]) -> Response:
    response = await client.responses.create(
        model="gpt-4o",
        previous_response_id=parent.id,
        input=answers,
        tools=[_mcp_tool()],
        background=True,
    )
    return await _poll(client, response)


def _approval(request_id: str, approve: bool, reason: str | None = None) -> Any:
    answer: Any = {"type": "mcp_approval_response", "approval_request_id": request_id}
    answer["approve"] = approve
    if reason is not None:
        answer["reason"] = reason
    return answer


def _requests(response: Response) -> list[McpApprovalRequest]:
    found = [i for i in response.output if isinstance(i, McpApprovalRequest)]
    assert len(found) == len(response.output)  # nothing else: no message, no call
    return found


async def test_sdk_approved_round_runs_each_call_then_the_message(client: AsyncOpenAI) -> None:
    asked = await _ask(client)
    assert asked.status == "completed"
    search, read = _requests(asked)
    assert asked.output_text == ""
    for request, spec in ((search, SEARCH), (read, READ)):
        assert request.type == "mcp_approval_request"
        assert re.fullmatch(r"mcpr_[0-9a-f]{24}", request.id)
        assert (request.server_label, request.name) == (spec["server_label"], spec["name"])
        assert json.loads(request.arguments) == spec["arguments"]
    answered = await _answer(client, asked, [_approval(search.id, True), _approval(read.id, True)])
    assert answered.status == "completed"
    assert answered.previous_response_id == asked.id
    *calls, message = answered.output
    assert isinstance(message, ResponseOutputMessage)
    assert [type(c) for c in calls] == [McpCall, McpCall]
    for call, request, output in zip(calls, (search, read), (SEARCH_OUT, READ_OUT), strict=True):
        assert isinstance(call, McpCall)
        assert re.fullmatch(r"mcp_[0-9a-f]{24}", call.id)
        assert call.approval_request_id == request.id
        assert (call.server_label, call.name, call.arguments) == (
            request.server_label,
            request.name,
            request.arguments,
        )
        assert (call.output, call.status, call.error) == (output, "completed", None)
    assert answered.output_text == f"Done. search -> {SEARCH_OUT}\nread_file -> {READ_OUT}"


async def test_sdk_denied_calls_do_not_run_and_the_message_says_so(client: AsyncOpenAI) -> None:
    asked = await _ask(client)
    search, read = _requests(asked)
    answers = [_approval(search.id, True), _approval(read.id, False, reason="not that file")]
    answered = await _answer(client, asked, answers)
    assert answered.status == "completed"
    [call, message] = answered.output
    assert isinstance(call, McpCall)
    assert call.approval_request_id == search.id
    assert isinstance(message, ResponseOutputMessage)
    assert answered.output_text == (
        f"Done. search -> {SEARCH_OUT}\nread_file -> denied by the user: not that file"
    )

    again = await _ask(client)
    denied = [_approval(r.id, False) for r in _requests(again)]
    nothing_ran = await _answer(client, again, denied)
    assert [i.type for i in nothing_ran.output] == ["message"]
    assert "search -> denied by the user\nread_file -> denied by the user" in (
        nothing_ran.output_text
    )


async def test_sdk_missing_duplicate_and_unknown_answers_are_400(
    client: AsyncOpenAI, emu: Emulator
) -> None:
    asked = await _ask(client)
    search, read = _requests(asked)
    wrong: list[tuple[list[Any], str, str]] = [
        ([_approval(search.id, True)], read.id, "input"),
        (
            [_approval(search.id, True), _approval(read.id, True), _approval(search.id, False)],
            search.id,
            "input[2]",
        ),
        (
            [_approval(search.id, True), _approval(read.id, True), _approval("mcpr_nope", True)],
            "mcpr_nope",
            "input[2].approval_request_id",
        ),
        ([], search.id, "input"),
    ]
    for answers, named, param in wrong:
        with pytest.raises(BadRequestError) as caught:
            await client.responses.create(
                model="gpt-4o", previous_response_id=asked.id, input=answers, background=True
            )
        assert caught.value.status_code == 400
        assert named in caught.value.message
        assert (caught.value.param, caught.value.type) == (param, "invalid_request_error")
    # None of those counted; the right answer still goes through.
    assert emu.responses_stats().approvals_received == 0
    answered = await _answer(client, asked, [_approval(read.id, True), _approval(search.id, True)])
    assert [i.type for i in answered.output] == ["mcp_call", "mcp_call", "message"]


async def test_sdk_an_approval_answer_where_none_was_asked_is_400(client: AsyncOpenAI) -> None:
    plain = await client.responses.create(model="gpt-4o", input="hi", background=True)
    plain = await _poll(client, plain)
    assert plain.status == "completed"
    stray = [_approval("mcpr_" + "0" * 24, True)]
    for previous in (plain.id, None):
        with pytest.raises(BadRequestError) as caught:
            await client.responses.create(
                model="gpt-4o",
                input=stray,
                background=True,
                **({"previous_response_id": previous} if previous else {}),
            )
        assert caught.value.param == "input[0].approval_request_id"


async def test_stats_count_each_answer_and_its_decision(client: AsyncOpenAI, emu: Emulator) -> None:
    asked = await _ask(client)
    search, read = _requests(asked)
    before = emu.responses_stats()
    assert {rid: t.answers for rid, t in before.approvals.items()} == {search.id: 0, read.id: 0}
    await _answer(client, asked, [_approval(search.id, True), _approval(read.id, False)])
    stats = emu.responses_stats()
    assert (stats.approvals_received, stats.duplicate_approvals) == (2, 0)
    tally = stats.approvals[search.id]
    assert (tally.server_label, tally.name, tally.answers, tally.decisions) == (
        "github",
        "search",
        1,
        [True],
    )
    assert stats.approvals[read.id].decisions == [False]
    # The same approval round sent again (a second continuation of the same response).
    await _answer(client, asked, [_approval(search.id, True), _approval(read.id, True)])
    stats = emu.responses_stats()
    assert (stats.approvals_received, stats.duplicate_approvals) == (4, 2)
    assert stats.approvals[read.id].decisions == [False, True]
    # The stats route serves the same counts.
    url = emu.azure_endpoint + "/_emulator/responses"
    async with aiohttp.ClientSession() as http, http.get(url) as got:
        served = msgspec.json.decode(await got.read(), type=responses_objects.ResponsesStats)
    assert served.approvals == stats.approvals
    emu.reset()
    assert emu.responses_stats().approvals == {}


async def test_require_approval_never_runs_calls_at_once_and_goes_on(client: AsyncOpenAI) -> None:
    ran = await _ask(client, tool=_mcp_tool("never"))
    assert ran.status == "completed"
    assert [i.type for i in ran.output] == ["mcp_call", "mcp_call", "message"]
    calls = [i for i in ran.output if isinstance(i, McpCall)]
    assert [(c.name, c.approval_request_id, c.output) for c in calls] == [
        ("search", None, SEARCH_OUT),
        ("read_file", None, READ_OUT),
    ]
    assert ran.output_text == f"Done. search -> {SEARCH_OUT}\nread_file -> {READ_OUT}"

    # A filter: only the tools under "never" skip approval.
    mixed = await _ask(client, tool=_mcp_tool({"never": {"tool_names": ["search"]}}))
    assert [i.type for i in mixed.output] == ["mcp_call", "mcp_approval_request"]
    request = mixed.output[1]
    assert isinstance(request, McpApprovalRequest)
    assert request.name == "read_file"
    answered = await _answer(client, mixed, [_approval(request.id, True)])
    assert answered.output_text == f"Done. search -> {SEARCH_OUT}\nread_file -> {READ_OUT}"


def _item_view(item: Any) -> tuple[Any, ...]:
    """Every field the SDK's MCP item models carry, read the same way from either side."""
    fields = ("type", "id", "server_label", "name", "arguments")
    if item.type == "mcp_call":
        fields += ("approval_request_id", "output", "error", "status")
    if item.type == "message":
        fields = ("type", "id", "status", "role")
    return tuple(getattr(item, f) for f in fields)


async def test_items_decode_with_our_wire_models_and_agree_with_the_sdk(
    client: AsyncOpenAI,
) -> None:
    asked = await _ask(client)
    search, read = _requests(asked)
    answered = await _answer(client, asked, [_approval(search.id, True), _approval(read.id, False)])
    for response_id in (asked.id, answered.id):
        raw = await client.responses.with_raw_response.retrieve(response_id)
        sdk = raw.parse()
        ours = wire.decode_response(raw.content)
        assert [_item_view(i) for i in ours.output] == [_item_view(i) for i in sdk.output]
        assert all(i.known for i in ours.output)
        # The SDK's models accept every item without leniency, too.
        Response.model_validate_json(raw.content)
    ours_asked = wire.decode_response(
        (await client.responses.with_raw_response.retrieve(asked.id)).content
    )
    assert [i.id for i in ours_asked.approval_requests] == [search.id, read.id]
    assert ours_asked.text is None


_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


async def _raw_events(emu: Emulator, response_id: str) -> list[streaming.SSEMessage]:
    url = f"{emu.base_url}/responses/{response_id}?stream=true"
    decoder = streaming.SSEDecoder()
    frames: list[streaming.SSEMessage] = []
    async with aiohttp.ClientSession() as http, http.get(url) as got:
        async for chunk in got.content.iter_any():
            frames.extend(decoder.feed(chunk))
    return frames


async def test_stream_events_of_mcp_items(client: AsyncOpenAI, emu: Emulator) -> None:
    asked = await _ask(client)
    search, read = _requests(asked)
    answered = await _answer(client, asked, [_approval(search.id, True), _approval(read.id, False)])
    for response_id, expected in (
        (asked.id, ["added", "done", "added", "done"]),
        (
            answered.id,
            [
                "added",
                "response.mcp_call.in_progress",
                "response.mcp_call_arguments.done",
                "response.mcp_call.completed",
                "done",
                "added",  # the message follows
            ],
        ),
    ):
        frames = await _raw_events(emu, response_id)
        kinds: list[str] = []
        for frame in frames:
            sdk = _EVENT.validate_json(frame.data)  # strict: the SDK's own event models
            ours = stream.decode_event(frame)
            assert ours is not None
            assert ours.type == sdk.type == frame.event
            assert ours.sequence_number == sdk.sequence_number
            if isinstance(ours, stream.ItemEvent):
                assert _item_view(ours.item) == _item_view(sdk.item)
                kinds.append(ours.type.rsplit(".", 1)[1])
            elif "mcp" in sdk.type:
                assert sdk.item_id == answered.output[0].id
                kinds.append(sdk.type)
        assert kinds[: len(expected)] == expected
        assert frames[-1].event == "response.completed"
    added = [
        _EVENT.validate_json(f.data).item
        for f in await _raw_events(emu, answered.id)
        if f.event == "response.output_item.added"
    ]
    assert (added[0].type, added[0].status, added[0].output) == ("mcp_call", "in_progress", None)


async def test_the_project_client_answers_with_its_own_input_items(emu: Emulator) -> None:
    api = config.ApiConfig(base_url=emu.base_url, timeout=5.0)
    retry = config.RetryConfig(attempts=1, initial_backoff=0.01, max_backoff=0.02)
    async with client_mod.ResponsesClient(api, retry, api_key="k") as c:
        body = wire.CreateResponse(
            model="m",
            input="go",
            tools=[wire.Tool(type="mcp", server_label="github", require_approval="always")],
            background=True,
            metadata={"emulator_script": SCRIPT},
        )
        first = await _until_done(c, (await c.create(body)).data.id)
        search, read = first.approval_requests
        answers = [
            wire.InputItem.approval(search.id or "", True),
            wire.InputItem.approval(read.id or "", False, reason="no"),
        ]
        follow = wire.CreateResponse(previous_response_id=first.id, input=answers, background=True)
        second = await _until_done(c, (await c.create(follow)).data.id)
    [call] = [i for i in second.output if i.type == "mcp_call"]
    assert (call.approval_request_id, call.output) == (search.id, SEARCH_OUT)
    assert second.text == f"Done. search -> {SEARCH_OUT}\nread_file -> denied by the user: no"
    assert {t.answers for t in emu.responses_stats().approvals.values()} == {1}

"""Wire models: the spec's payloads, v1 payloads, every union variant, unknown shapes, errors,
request bodies, round trips, and agreement with the official SDK's parsing."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest

from orchestrator import errors
from orchestrator.protocols.assistants import models

# --- payload corpus ------------------------------------------------------------------------

#: WIRE.md 1.15, verbatim.
SPEC_RUN: dict[str, Any] = json.loads(
    """{"id":"run_abc123","object":"thread.run","created_at":1698107661,"assistant_id":"asst_abc123",
 "thread_id":"thread_abc123","status":"completed","started_at":1699073476,"expires_at":null,
 "cancelled_at":null,"failed_at":null,"completed_at":1699073498,"last_error":null,"model":"gpt-4o",
 "instructions":null,"tools":[{"type":"file_search"},{"type":"code_interpreter"}],"metadata":{},
 "incomplete_details":null,"usage":{"prompt_tokens":123,"completion_tokens":456,"total_tokens":579},
 "temperature":1.0,"top_p":1.0,"max_prompt_tokens":1000,"max_completion_tokens":1000,
 "truncation_strategy":{"type":"auto","last_messages":null},"response_format":"auto",
 "tool_choice":"auto","parallel_tool_calls":true}"""
)


def run_payload(**changes: Any) -> dict[str, Any]:
    base = copy.deepcopy(SPEC_RUN)
    base.update(changes)
    return base


WEATHER_FN = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}

REQUIRES_ACTION = run_payload(
    id="run_ra",
    status="requires_action",
    completed_at=None,
    expires_at=1699074076,
    usage=None,
    instructions="Be brief.",
    required_action={
        "type": "submit_tool_outputs",
        "submit_tool_outputs": {
            "tool_calls": [
                {
                    "id": "call_A",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_B",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                },
                {
                    "id": "call_C",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": "{not json"},
                },
            ]
        },
    },
    tools=[WEATHER_FN, {"type": "function", "function": {"name": "get_time"}}],
    tool_choice={"type": "function", "function": {"name": "get_weather"}},
    response_format={
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
    },
    truncation_strategy={"type": "last_messages", "last_messages": 10},
    metadata={"job": "42"},
    temperature=0.2,
    top_p=0.9,
    max_prompt_tokens=None,
    max_completion_tokens=None,
)

FAILED = run_payload(
    id="run_failed",
    instructions="Answer.",
    status="failed",
    completed_at=None,
    failed_at=1699073490,
    last_error={"code": "rate_limit_exceeded", "message": "Slow down."},
    tool_choice="required",
    response_format={"type": "json_object"},
    tools=[{"type": "file_search", "file_search": {"max_num_results": 7}}],
)

INCOMPLETE = run_payload(
    id="run_inc",
    instructions="Answer.",
    status="incomplete",
    incomplete_details={"reason": "max_completion_tokens"},
    tool_choice={"type": "file_search"},
    response_format={"type": "text"},
    parallel_tool_calls=False,
    tools=[
        {
            "type": "file_search",
            "file_search": {"ranking_options": {"ranker": "auto", "score_threshold": 0.5}},
        }
    ],
)

BIG_TIMESTAMPS = run_payload(
    id="run_big", created_at=2**40, started_at=2**40 + 1, completed_at=2**62, expires_at=None
)

#: DevDay-era (v1) payload: wrong ``object``, ``file_ids``, ``retrieval``, no newer fields.
V1_RUN: dict[str, Any] = {
    "id": "run_v1",
    "object": "assistant.run",
    "created_at": 1699063290,
    "assistant_id": "asst_v1",
    "thread_id": "thread_v1",
    "status": "queued",
    "started_at": None,
    "expires_at": 1699063890,
    "cancelled_at": None,
    "failed_at": None,
    "completed_at": None,
    "last_error": None,
    "model": "gpt-4-1106-preview",
    "instructions": None,
    "tools": [{"type": "code_interpreter"}, {"type": "retrieval"}],
    "file_ids": ["file-abc123", "file-abc456"],
    "metadata": {},
}

FUTURE_RUN = run_payload(
    id="run_future",
    status="paused_for_review",
    tools=[{"type": "web_browser", "web_browser": {"depth": 2}}],
    tool_choice={"type": "web_browser"},
    response_format={"type": "xml", "xml": {"root": "a"}},
    required_action={"type": "approve_plan", "approve_plan": {"steps": 3}},
    brand_new_field={"anything": [1, 2, 3]},
)

SDK_RUNS = [
    run_payload(instructions=""),  # the SDK rejects the spec's own ``instructions: null``
    REQUIRES_ACTION,
    FAILED,
    INCOMPLETE,
    run_payload(id="run_big", instructions="", created_at=2**40, completed_at=2**62),
]
ALL_RUNS = [SPEC_RUN, REQUIRES_ACTION, FAILED, INCOMPLETE, BIG_TIMESTAMPS, V1_RUN, FUTURE_RUN]


def step_payload(step_id: str, details: dict[str, Any], **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": step_id,
        "object": "thread.run.step",
        "created_at": 1699073480,
        "assistant_id": "asst_abc123",
        "thread_id": "thread_abc123",
        "run_id": "run_abc123",
        "type": details["type"],
        "status": "completed",
        "step_details": details,
        "last_error": None,
        "expired_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": 1699073485,
        "metadata": {},
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    base.update(changes)
    return base


MESSAGE_STEP = step_payload(
    "step_msg", {"type": "message_creation", "message_creation": {"message_id": "msg_1"}}
)
TOOL_STEP = step_payload(
    "step_tools",
    {
        "type": "tool_calls",
        "tool_calls": [
            {
                "id": "call_ci",
                "type": "code_interpreter",
                "code_interpreter": {
                    "input": "print(6*7)",
                    "outputs": [
                        {"type": "logs", "logs": "42\n"},
                        {"type": "image", "image": {"file_id": "file-img"}},
                    ],
                },
            },
            {
                "id": "call_fs",
                "type": "file_search",
                "file_search": {
                    "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.25},
                    "results": [
                        {
                            "file_id": "file-1",
                            "file_name": "a.pdf",
                            "score": 0.9,
                            "content": [{"type": "text", "text": "hello"}],
                        },
                        {"file_id": "file-2", "file_name": "b.pdf", "score": 0.3},
                    ],
                },
            },
            {
                "id": "call_fn_pending",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"city":"Paris"}',
                    "output": None,
                },
            },
            {
                "id": "call_fn_done",
                "type": "function",
                "function": {"name": "get_time", "arguments": "{}", "output": "12:00"},
            },
        ],
    },
)
IN_PROGRESS_STEP = step_payload(
    "step_wip",
    {
        "type": "tool_calls",
        "tool_calls": [{"id": "call_fs", "type": "file_search", "file_search": {}}],
    },
    status="in_progress",
    completed_at=None,
    usage=None,
    last_error={"code": "server_error", "message": "hiccup"},
)
V1_STEP = step_payload(
    "step_v1",
    {"type": "tool_calls", "tool_calls": [{"id": "call_r", "type": "retrieval", "retrieval": {}}]},
)
FUTURE_STEP = step_payload(
    "step_future",
    {"type": "reasoning", "reasoning": {"summary": "thought hard"}},
    status="paused",
)
FUTURE_CALL_STEP = step_payload(
    "step_future_call",
    {
        "type": "tool_calls",
        "tool_calls": [{"id": "call_x", "type": "computer_use", "computer_use": {"x": 1}}],
    },
)
SDK_STEPS = [MESSAGE_STEP, TOOL_STEP, IN_PROGRESS_STEP]
ALL_STEPS = [*SDK_STEPS, V1_STEP, FUTURE_STEP, FUTURE_CALL_STEP]


def run(payload: dict[str, Any]) -> models.Run:
    return models.decode(json.dumps(payload).encode(), models.Run)


def step(payload: dict[str, Any]) -> models.RunStep:
    return models.decode(json.dumps(payload).encode(), models.RunStep)


# --- runs ----------------------------------------------------------------------------------


def test_spec_example() -> None:
    r = run(SPEC_RUN)
    assert (r.id, r.object, r.status, r.created_at) == (
        "run_abc123",
        "thread.run",
        "completed",
        1698107661,
    )
    assert (r.thread_id, r.assistant_id, r.model) == ("thread_abc123", "asst_abc123", "gpt-4o")
    assert r.instructions is None
    assert r.required_action is None
    assert (r.started_at, r.completed_at, r.expires_at) == (1699073476, 1699073498, None)
    assert [t.type for t in r.tools] == ["file_search", "code_interpreter"]
    assert r.usage == models.Usage(completion_tokens=456, prompt_tokens=123, total_tokens=579)
    assert r.truncation_strategy == models.TruncationStrategy("auto", None)
    assert (r.tool_choice, r.response_format) == ("auto", "auto")
    assert (r.temperature, r.top_p, r.max_prompt_tokens, r.max_completion_tokens) == (
        1.0,
        1.0,
        1000,
        1000,
    )
    assert r.metadata == {}
    assert r.parallel_tool_calls is True
    assert r.known_status is models.RunStatus.COMPLETED
    assert r.is_terminal
    assert not r.is_active
    assert r.tool_calls == []


def test_requires_action_with_several_calls() -> None:
    r = run(REQUIRES_ACTION)
    assert r.requires_action
    assert not r.is_terminal
    assert not r.is_active
    assert r.expires_at == 1699074076
    calls = r.tool_calls
    assert [c.id for c in calls] == ["call_A", "call_B", "call_C"]
    assert all(c.type == "function" for c in calls)
    assert [(c.function.name, c.function.arguments) for c in calls if c.function] == [
        ("get_weather", '{"city":"Paris"}'),
        ("get_weather", '{"city":"Oslo"}'),
        ("get_time", "{not json"),  # a string; validated later by the tool layer
    ]
    assert r.required_action is not None
    assert r.required_action.type == "submit_tool_outputs"
    assert r.metadata == {"job": "42"}


def test_v1_payload() -> None:
    r = run(V1_RUN)
    assert r.object == "assistant.run"
    assert r.file_ids == ["file-abc123", "file-abc456"]
    assert [t.type for t in r.tools] == ["code_interpreter", "retrieval"]
    # Fields added after DevDay take their defaults.
    assert r.usage is None
    assert r.incomplete_details is None
    assert r.truncation_strategy is None
    assert r.tool_choice is None
    assert r.response_format is None
    assert r.temperature is None
    assert r.parallel_tool_calls is True
    assert r.is_active


def test_tool_definitions() -> None:
    fn, bare = run(REQUIRES_ACTION).tools
    assert fn.function == models.FunctionDefinition(
        name="get_weather",
        description="Weather in a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
        strict=True,
    )
    assert bare.function == models.FunctionDefinition(name="get_time")
    [fs] = run(FAILED).tools
    assert fs.file_search == models.FileSearchSettings(max_num_results=7)
    [ranked] = run(INCOMPLETE).tools
    assert ranked.file_search is not None
    assert ranked.file_search.ranking_options == models.RankingOptions("auto", 0.5)
    assert [t.type for t in run(V1_RUN).tools] == ["code_interpreter", "retrieval"]
    assert run(FUTURE_RUN).tools == [models.ToolDefinition(type="web_browser")]


def test_tool_choice_forms() -> None:
    assert run(SPEC_RUN).tool_choice == "auto"
    assert run(FAILED).tool_choice == "required"
    assert run(REQUIRES_ACTION).tool_choice == models.ToolChoice(
        "function", models.NamedFunction("get_weather")
    )
    assert run(INCOMPLETE).tool_choice == models.ToolChoice("file_search")
    assert run(run_payload(tool_choice=None)).tool_choice is None


def test_response_format_forms() -> None:
    assert run(SPEC_RUN).response_format == "auto"
    assert run(FAILED).response_format == models.ResponseFormat("json_object")
    assert run(INCOMPLETE).response_format == models.ResponseFormat("text")
    rf = run(REQUIRES_ACTION).response_format
    assert isinstance(rf, models.ResponseFormat)
    assert rf.json_schema == models.JsonSchemaFormat("answer", None, {"type": "object"}, True)
    assert run(run_payload(response_format=None)).response_format is None


def test_errors_and_details() -> None:
    failed = run(FAILED)
    assert failed.last_error == models.LastError("rate_limit_exceeded", "Slow down.")
    assert failed.failed_at == 1699073490
    inc = run(INCOMPLETE)
    assert inc.incomplete_details == models.IncompleteDetails("max_completion_tokens")
    assert inc.parallel_tool_calls is False
    assert run(run_payload(incomplete_details={})).incomplete_details == models.IncompleteDetails()


def test_unknown_shapes_decode_and_keep_raw_strings() -> None:
    r = run(FUTURE_RUN)
    assert r.status == "paused_for_review"
    assert r.known_status is None
    assert not r.is_terminal
    assert not r.is_active
    assert r.tool_choice == models.ToolChoice("web_browser")
    assert r.response_format == models.ResponseFormat("xml")
    assert r.required_action == models.RequiredAction("approve_plan", None)
    assert r.required_action.tool_calls == []
    odd_call = run_payload(
        status="requires_action",
        required_action={
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": [{"id": "call_Z", "type": "mcp"}]},
        },
    )
    [call] = run(odd_call).tool_calls
    assert (call.id, call.type, call.function) == ("call_Z", "mcp", None)


def test_timestamps_beyond_32_bits() -> None:
    r = run(BIG_TIMESTAMPS)
    assert (r.created_at, r.started_at, r.completed_at) == (2**40, 2**40 + 1, 2**62)
    assert models.decode(models.encode(r), models.Run).completed_at == 2**62


def test_run_status_helpers() -> None:
    s = models.RunStatus
    assert {x for x in s if x.is_terminal} == {
        s.CANCELLED,
        s.FAILED,
        s.COMPLETED,
        s.INCOMPLETE,
        s.EXPIRED,
    }
    assert {x for x in s if x.is_active} == {s.QUEUED, s.IN_PROGRESS, s.CANCELLING}
    assert not s.REQUIRES_ACTION.is_terminal
    assert not s.REQUIRES_ACTION.is_active
    assert s.REQUIRES_ACTION.locks_thread


# --- steps ---------------------------------------------------------------------------------


def test_message_creation_step() -> None:
    st = step(MESSAGE_STEP)
    assert (st.type, st.status, st.run_id) == ("message_creation", "completed", "run_abc123")
    assert st.step_details == models.StepDetails(
        "message_creation", models.MessageCreation("msg_1")
    )
    assert st.usage == models.Usage(5, 10, 15)


def test_tool_calls_step_every_call_kind() -> None:
    st = step(TOOL_STEP)
    assert st.step_details is not None
    assert st.step_details.message_creation is None
    ci, fs, pending, done = st.step_details.tool_calls or []
    assert ci.code_interpreter == models.CodeInterpreterCall(
        "print(6*7)",
        [
            models.CodeInterpreterOutput("logs", logs="42\n"),
            models.CodeInterpreterOutput("image", image=models.ImageFile("file-img")),
        ],
    )
    assert fs.file_search is not None
    assert fs.file_search.ranking_options == models.RankingOptions("default_2024_08_21", 0.25)
    hit, miss = fs.file_search.results or []
    assert (hit.file_id, hit.file_name, hit.score) == ("file-1", "a.pdf", 0.9)
    assert hit.content == [models.FileSearchContent("text", "hello")]
    assert (miss.score, miss.content) == (0.3, None)
    assert pending.function == models.StepFunction("get_weather", '{"city":"Paris"}', None)
    assert done.function == models.StepFunction("get_time", "{}", "12:00")
    assert [c.type for c in (ci, fs, pending, done)] == [
        "code_interpreter",
        "file_search",
        "function",
        "function",
    ]


def test_in_progress_v1_and_unknown_steps() -> None:
    wip = step(IN_PROGRESS_STEP)
    assert (wip.status, wip.usage, wip.completed_at) == ("in_progress", None, None)
    assert wip.last_error == models.LastError("server_error", "hiccup")
    assert wip.step_details is not None
    [empty] = wip.step_details.tool_calls or []
    assert empty.file_search == models.FileSearchCall()
    v1 = step(V1_STEP)
    assert v1.step_details is not None
    [retrieval] = v1.step_details.tool_calls or []
    assert (retrieval.type, retrieval.retrieval) == ("retrieval", {})
    future = step(FUTURE_STEP)
    assert future.status == "paused"
    assert future.step_details == models.StepDetails("reasoning")
    fc = step(FUTURE_CALL_STEP)
    assert fc.step_details is not None
    assert fc.step_details.tool_calls == [models.StepToolCall("call_x", "computer_use")]


# --- lists, errors, assistants, threads ----------------------------------------------------


def test_lists() -> None:
    empty = models.decode(
        b'{"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false}',
        models.ListRunsResponse,
    )
    assert (empty.data, empty.first_id, empty.has_more) == ([], None, False)
    body = {"object": "list", "data": [MESSAGE_STEP, TOOL_STEP], "has_more": True}
    page = models.decode(json.dumps(body).encode(), models.ListRunStepsResponse)
    assert [s.id for s in page.data] == ["step_msg", "step_tools"]
    assert page.has_more


def test_error_body() -> None:
    raw = b'{"error":{"message":"No run","type":"invalid_request_error","param":null,"code":null}}'
    assert models.decode(raw, models.ErrorResponse).error == models.ErrorBody(
        "No run", "invalid_request_error", None, None
    )


def test_assistant_and_thread_are_lenient() -> None:
    a = models.decode(b'{"id":"asst_1","tools":[{"type":"retrieval"}],"new":1}', models.Assistant)
    assert (a.id, a.object, a.name, a.model, a.instructions) == (
        "asst_1",
        "assistant",
        None,
        "",
        None,
    )
    assert [t.type for t in a.tools] == ["retrieval"]
    t = models.decode(b'{"id":"thread_1","created_at":3,"tool_resources":{}}', models.Thread)
    assert (t.id, t.object, t.created_at, t.metadata) == ("thread_1", "thread", 3, None)


# --- malformed payloads --------------------------------------------------------------------


def broken_call(**call: Any) -> dict[str, Any]:
    return run_payload(
        status="requires_action",
        required_action={
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {"tool_calls": [call]},
        },
    )


@pytest.mark.parametrize(
    ("payload", "path"),
    [
        (broken_call(type="function"), "$.required_action.submit_tool_outputs.tool_calls[0]"),
        (broken_call(id=7), "$.required_action.submit_tool_outputs.tool_calls[0].id"),
        (
            broken_call(id="c", function={"name": "f", "arguments": {"city": "x"}}),
            "$.required_action.submit_tool_outputs.tool_calls[0].function.arguments",
        ),
        (run_payload(created_at="yesterday"), "$.created_at"),
        (run_payload(status=None), "$.status"),
        (run_payload(usage={"total_tokens": "many"}), "$.usage.total_tokens"),
        (run_payload(tool_choice=3), "$.tool_choice"),
        (run_payload(metadata={"k": 1}), "$.metadata"),
    ],
)
def test_malformed_payload_names_the_path(payload: dict[str, Any], path: str) -> None:
    with pytest.raises(errors.DecodeError) as info:
        run(payload)
    assert f"`{path}" in str(info.value)
    assert str(info.value).startswith("Run: ")
    assert isinstance(info.value.__cause__, msgspec.DecodeError)


def test_malformed_tools_raise_when_read_with_their_path() -> None:
    """``tools`` is decoded on demand (polls skip it), so its errors surface on access."""
    r = run(run_payload(tools=[{"function": {"name": "f"}}]))
    with pytest.raises(errors.DecodeError) as info:
        _ = r.tools
    assert "`$.tools[0]" in str(info.value)
    assert isinstance(info.value.__cause__, msgspec.DecodeError)
    assert run(run_payload(tools=None)).tools == []


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"id": "run_1"', b"[]", b"null"])
def test_not_a_run_at_all(raw: bytes) -> None:
    with pytest.raises(errors.DecodeError):
        models.decode(raw, models.Run)


def test_malformed_step_names_the_path() -> None:
    bad = copy.deepcopy(TOOL_STEP)
    bad["step_details"]["tool_calls"][0]["code_interpreter"]["outputs"][1]["image"] = "file"
    with pytest.raises(errors.DecodeError, match=r"step_details\.tool_calls\[0\]"):
        step(bad)


# --- request bodies ------------------------------------------------------------------------


def test_request_bodies_encode_only_what_was_set() -> None:
    assert models.encode(models.CreateRun(assistant_id="a")) == b'{"assistant_id":"a"}'
    explicit = models.CreateRun(
        assistant_id="a", instructions=None, tools=[], tool_choice="none", stream=False
    )
    assert json.loads(models.encode(explicit)) == {
        "assistant_id": "a",
        "instructions": None,
        "tools": [],
        "tool_choice": "none",
        "stream": False,
    }
    full = models.CreateRun(
        assistant_id="a",
        additional_messages=[models.MessageRequest("user", "hi")],
        truncation_strategy=models.TruncationStrategy("last_messages", 3),
        tool_choice=models.ToolChoice("function", models.NamedFunction("f")),
        response_format=models.ResponseFormat("json_object"),
        tools=[models.ToolDefinition.for_function(models.FunctionDefinition("f"))],
        reasoning_effort="low",
    )
    assert json.loads(models.encode(full)) == {
        "assistant_id": "a",
        "additional_messages": [{"role": "user", "content": "hi"}],
        "truncation_strategy": {"type": "last_messages", "last_messages": 3},
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "reasoning_effort": "low",
    }
    tar = models.CreateThreadAndRun(
        assistant_id="a", thread=models.ThreadRequest(metadata={"k": "v"})
    )
    assert json.loads(models.encode(tar)) == {
        "assistant_id": "a",
        "thread": {"metadata": {"k": "v"}},
    }
    outputs = models.SubmitToolOutputs([models.ToolOutput("call_A", "28C")])
    assert models.encode(outputs) == b'{"tool_outputs":[{"tool_call_id":"call_A","output":"28C"}]}'
    assert models.encode(models.ModifyRun(None)) == b'{"metadata":null}'
    assert models.encode(models.ModifyRun()) == b"{}"
    assert models.encode(models.CreateAssistant(model="m", name=None)) == (
        b'{"model":"m","name":null}'
    )
    assert models.encode(models.CreateThread()) == b"{}"


@pytest.mark.parametrize(
    "body",
    [
        models.CreateRun(assistant_id="a", temperature=0.3, metadata=None),
        models.CreateThreadAndRun(
            assistant_id="a",
            thread=models.ThreadRequest([models.MessageRequest("user", "x", metadata={"a": "b"})]),
            tool_resources={"code_interpreter": {"file_ids": ["f"]}},
        ),
        models.SubmitToolOutputs([models.ToolOutput("c", "{}")], stream=True),
        models.ModifyRun({"k": "v"}),
    ],
)
def test_request_round_trip(body: msgspec.Struct) -> None:
    assert models.decode(models.encode(body), type(body)) == body


@pytest.mark.parametrize("payload", ALL_RUNS, ids=lambda p: p["id"])
def test_run_round_trip(payload: dict[str, Any]) -> None:
    first = run(payload)
    encoded = models.encode(first)
    assert models.decode(encoded, models.Run) == first
    if "future" not in first.id:  # a shape we know: encoding gives the wire JSON back
        agree(json.loads(encoded), payload)


@pytest.mark.parametrize("payload", ALL_STEPS, ids=lambda p: p["id"])
def test_step_round_trip(payload: dict[str, Any]) -> None:
    first = step(payload)
    encoded = models.encode(first)
    assert models.decode(encoded, models.RunStep) == first
    if "future" not in first.id:
        agree(json.loads(encoded), payload)


# --- agreement with the official SDK -------------------------------------------------------


def agree(ours: Any, sdk: Any, path: str = "$") -> None:
    """Every value the SDK parsed is the one we parsed (None: absent or None on our side)."""
    if isinstance(sdk, dict):
        assert isinstance(ours, dict), path
        for key, value in sdk.items():
            if value is None:
                assert ours.get(key) is None, f"{path}.{key}"
            else:
                assert key in ours, f"{path}.{key}"
                agree(ours[key], value, f"{path}.{key}")
    elif isinstance(sdk, list):
        assert isinstance(ours, list), path
        assert len(ours) == len(sdk), path
        for i, (a, b) in enumerate(zip(ours, sdk, strict=True)):
            agree(a, b, f"{path}[{i}]")
    else:
        assert ours == sdk, path
        assert type(ours) is type(sdk) or {type(ours), type(sdk)} <= {int, float}, path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("payload", SDK_RUNS, ids=lambda p: p["id"])
def test_runs_agree_with_the_sdk(payload: dict[str, Any]) -> None:
    from openai.types.beta.threads import Run as SdkRun

    sdk = SdkRun.model_validate(payload)
    ours = run(payload)
    agree(msgspec.json.decode(models.encode(ours)), sdk.model_dump(mode="json", by_alias=True))
    # The fields the driver lives on, spelled out.
    assert (ours.id, ours.status, ours.thread_id) == (sdk.id, sdk.status, sdk.thread_id)
    assert (ours.created_at, ours.expires_at, ours.completed_at) == (
        sdk.created_at,
        sdk.expires_at,
        sdk.completed_at,
    )
    sdk_calls = sdk.required_action.submit_tool_outputs.tool_calls if sdk.required_action else []
    assert [(c.id, c.function.name if c.function else None) for c in ours.tool_calls] == [
        (c.id, c.function.name) for c in sdk_calls
    ]
    assert [c.function.arguments for c in ours.tool_calls if c.function] == [
        c.function.arguments for c in sdk_calls
    ]
    sdk_usage = sdk.usage.model_dump() if sdk.usage else None
    assert (msgspec.to_builtins(ours.usage) if ours.usage else None) == sdk_usage


def test_sdk_rejects_null_instructions_and_we_do_not() -> None:
    import pydantic
    from openai.types.beta.threads import Run as SdkRun

    with pytest.raises(pydantic.ValidationError):
        SdkRun.model_validate(SPEC_RUN)
    assert run(SPEC_RUN).instructions is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("payload", SDK_STEPS, ids=lambda p: p["id"])
def test_steps_agree_with_the_sdk(payload: dict[str, Any]) -> None:
    from openai.types.beta.threads.runs import RunStep as SdkStep

    sdk = SdkStep.model_validate(payload)
    ours = step(payload)
    agree(msgspec.json.decode(models.encode(ours)), sdk.model_dump(mode="json", by_alias=True))
    assert (ours.id, ours.type, ours.status) == (sdk.id, sdk.type, sdk.status)
    assert ours.step_details is not None
    assert ours.step_details.type == sdk.step_details.type

"""Fidelity against the official SDK: payloads generated from its pydantic models' JSON Schemas
must decode with our structs and agree with the SDK's own parsing; our request bodies must
validate as the SDK's parameter types; mutated payloads decode or raise ``DecodeError``.

The SDK is not the oracle on nullability (WIRE.md is): where the spec allows more than the SDK
(``instructions: null``), we accept both. Where the SDK allows more than we do, one test changes
every field of a corpus in turn (remove, null, retype) and demands that whatever the SDK's model
takes strictly, we take too.
"""

from __future__ import annotations

import contextlib
import json
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from msgspec import UNSET
from openai import pagination
from openai.types.beta import Thread as SdkThread
from openai.types.beta import assistant_stream_event, thread_create_and_run_params
from openai.types.beta.threads import Message as SdkMessage
from openai.types.beta.threads import (
    MessageDeltaEvent,
    run_create_params,
    run_submit_tool_outputs_params,
    run_update_params,
)
from openai.types.beta.threads import Run as SdkRun
from openai.types.beta.threads.runs import RunStep as SdkRunStep
from openai.types.beta.threads.runs import RunStepDeltaEvent
from openai.types.shared import ErrorObject
from pydantic import BaseModel, TypeAdapter, ValidationError

from orchestrator import errors
from orchestrator.protocols.assistants import models, streaming

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning"),
]

# Reproducible in CI: no example database, derandomized, modest example counts.
FIDELITY = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- schemas from the SDK's models ----------------------------------------------------------


# Arrays worth at least one item: an empty list exercises nothing.
_NONEMPTY = frozenset({"tool_calls", "outputs", "results", "content", "data"})


def _tame(schema: Any, name: str = "") -> Any:
    """Bound integers to int64 (what a server sends) and arrays to a few items (speed)."""
    if isinstance(schema, list):
        return [_tame(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _tame(v, k if name == "properties" else "") for k, v in schema.items()}
    if out.get("type") == "integer":
        out.setdefault("minimum", -(2**63))
        out.setdefault("maximum", 2**63 - 1)
    if out.get("type") == "array":
        out.setdefault("maxItems", 3)
        if name in _NONEMPTY:
            out.setdefault("minItems", 1)
    return out


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return typing.cast(dict[str, Any], _tame(model.model_json_schema()))


def _list_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The spec's list shape (``ListRunsResponse``/``ListRunStepsResponse``) around a model."""
    item = _schema(model)
    defs = item.pop("$defs", {})
    defs["_item"] = item
    nullable_str = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    return {
        "$defs": defs,
        "type": "object",
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"$ref": "#/$defs/_item"}, "maxItems": 3},
            "first_id": nullable_str,
            "last_id": nullable_str,
            "has_more": {"type": "boolean"},
        },
        "required": ["object", "data", "first_id", "last_id", "has_more"],
    }


def _run_schema(*, waiting: bool) -> dict[str, Any]:
    """The SDK's Run with the spec's nullable ``instructions``; ``waiting``: a run that
    requires action (half of what we generate, since it is what we act on)."""
    schema = _schema(SdkRun)
    schema["properties"]["instructions"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    if not waiting:
        return schema
    schema["required"] = [*schema["required"], "required_action"]
    schema["properties"]["status"] = {"const": "requires_action"}
    schema["properties"]["required_action"] = {"$ref": "#/$defs/RequiredAction"}
    return schema


def _event_name(cls: type[BaseModel]) -> str:
    return typing.cast(str, typing.get_args(cls.model_fields["event"].annotation)[0])


_SDK_EVENT = TypeAdapter(assistant_stream_event.AssistantStreamEvent)
_EVENT_CLASSES: list[type[BaseModel]] = list(
    typing.get_args(typing.get_args(assistant_stream_event.AssistantStreamEvent)[0])
)


def _data_kind(cls: type[BaseModel]) -> str:
    """The SDK model an event's ``data`` parses into: Run, RunStep, MessageDeltaEvent..."""
    return typing.cast(type, cls.model_fields["data"].annotation).__name__


def _event_schema(kind: str) -> dict[str, Any]:
    """Events whose data is of one kind: any of their names, with that data schema."""
    classes = [c for c in _EVENT_CLASSES if _data_kind(c) == kind]
    schema = _schema(classes[0])
    schema["properties"]["event"] = {"enum": [_event_name(c) for c in classes]}
    return schema


runs = from_schema(_run_schema(waiting=False)) | from_schema(_run_schema(waiting=True))
steps = from_schema(_schema(SdkRunStep))
run_lists = from_schema(_list_schema(SdkRun))
step_lists = from_schema(_list_schema(SdkRunStep))

# --- comparable views (what the orchestrator relies on) -------------------------------------


def _usage(u: Any) -> tuple[int, int, int] | None:
    return None if u is None else (u.completion_tokens, u.prompt_tokens, u.total_tokens)


def _err(e: Any) -> tuple[str, str] | None:
    return None if e is None else (e.code, e.message)


def _tool_choice_view(tc: Any) -> Any:
    if tc is None or isinstance(tc, str):
        return tc
    return (tc.type, tc.function.name if tc.function is not None else None)


def _response_format_view(rf: Any) -> Any:
    if rf is None or isinstance(rf, str):
        return rf
    js = getattr(rf, "json_schema", None)
    return (rf.type, js.name if js is not None else None)


_RUN_TIMES = ("created", "expires", "started", "cancelled", "failed", "completed")


def _run_view(r: Any) -> dict[str, Any]:
    ra = r.required_action
    calls = [] if ra is None else ra.submit_tool_outputs.tool_calls
    return {
        "id": r.id,
        "thread_id": r.thread_id,
        "assistant_id": r.assistant_id,
        "status": r.status,
        "model": r.model,
        "instructions": r.instructions,
        "times": tuple(getattr(r, f"{t}_at") for t in _RUN_TIMES),
        "usage": _usage(r.usage),
        "last_error": _err(r.last_error),
        "incomplete": None if r.incomplete_details is None else r.incomplete_details.reason,
        "required_action": None if ra is None else ra.type,
        "tool_calls": [(c.id, c.type, c.function.name, c.function.arguments) for c in calls],
        "tools": [(t.type, t.function.name if t.type == "function" else None) for t in r.tools],
        "metadata": r.metadata,
        "sampling": (r.temperature, r.top_p, r.max_prompt_tokens, r.max_completion_tokens),
        "truncation": None
        if r.truncation_strategy is None
        else (r.truncation_strategy.type, r.truncation_strategy.last_messages),
        "tool_choice": _tool_choice_view(r.tool_choice),
        "response_format": _response_format_view(r.response_format),
        "parallel_tool_calls": r.parallel_tool_calls,
    }


def _output_view(o: Any) -> tuple[Any, ...]:
    image = getattr(o, "image", None)
    # An empty id is no id: ours defaults a missing one to "", the SDK to None.
    return (o.type, getattr(o, "logs", None), None if image is None else image.file_id or None)


def _step_call_view(c: Any) -> tuple[Any, ...]:
    if c.type == "function":
        return (c.id, c.type, c.function.name, c.function.arguments, c.function.output)
    if c.type == "code_interpreter":
        ci = c.code_interpreter
        return (c.id, c.type, ci.input, [_output_view(o) for o in ci.outputs])
    fs = c.file_search
    ro = fs.ranking_options
    results = [
        (
            r.file_id,
            r.file_name,
            r.score,
            None if r.content is None else [x.text for x in r.content],
        )
        for r in fs.results or []
    ]
    return (c.id, c.type, None if ro is None else (ro.ranker, ro.score_threshold), results)


def _step_view(s: Any) -> dict[str, Any]:
    d = s.step_details
    return {
        "ids": (s.id, s.run_id, s.thread_id, s.assistant_id),
        "status": s.status,
        "type": s.type,
        "times": (s.created_at, s.expired_at, s.cancelled_at, s.failed_at, s.completed_at),
        "usage": _usage(s.usage),
        "last_error": _err(s.last_error),
        "metadata": s.metadata,
        "details": d.type,
        "message_id": d.message_creation.message_id if d.type == "message_creation" else None,
        "calls": [_step_call_view(c) for c in d.tool_calls] if d.type == "tool_calls" else None,
    }


def _message_view(m: Any) -> dict[str, Any]:
    def part(c: Any) -> tuple[Any, ...]:
        text = getattr(c, "text", None)
        return (c.type, None if text is None else text.value, getattr(c, "refusal", None))

    ids = (m.id, m.thread_id, m.run_id, m.assistant_id)
    return {"ids": ids, "role": m.role, "status": m.status, "content": [part(c) for c in m.content]}


def _call_delta_view(c: Any) -> tuple[Any, ...]:
    fn, ci = getattr(c, "function", None), getattr(c, "code_interpreter", None)
    outputs = None if ci is None or ci.outputs is None else ci.outputs
    return (
        c.index,
        c.id,
        c.type,
        None if fn is None else (fn.name, fn.arguments, fn.output),
        None if ci is None else ci.input,
        None if outputs is None else [(o.index, *_output_view(o)) for o in outputs],
    )


def _step_delta_view(d: Any) -> tuple[Any, ...]:
    sd = d.delta.step_details
    if sd is None:
        return (d.id, None)
    mc = getattr(sd, "message_creation", None)
    calls = getattr(sd, "tool_calls", None)
    return (
        d.id,
        sd.type,
        None if mc is None else mc.message_id,
        None if calls is None else [_call_delta_view(c) for c in calls],
    )


def _message_delta_view(d: Any) -> tuple[Any, ...]:
    def part(c: Any) -> tuple[Any, ...]:
        text = getattr(c, "text", None)
        return (c.index, c.type, None if text is None else text.value, getattr(c, "refusal", None))

    content = d.delta.content
    return (d.id, d.delta.role, None if content is None else [part(c) for c in content])


_VIEWS: dict[str, Any] = {
    "Run": _run_view,
    "RunStep": _step_view,
    "Message": _message_view,
    "RunStepDeltaEvent": _step_delta_view,
    "RunStepDelta": _step_delta_view,
    "MessageDeltaEvent": _message_delta_view,
    "MessageDelta": _message_delta_view,
    "Thread": lambda t: (t.id, t.created_at, t.metadata),
    "ErrorBody": lambda e: (e.code, e.message, e.param, e.type),
    "ErrorObject": lambda e: (e.code, e.message, e.param, e.type),
}


def _view(obj: Any) -> Any:
    if isinstance(getattr(obj, "data", None), list):
        return [_view(item) for item in obj.data]
    return _VIEWS[type(obj).__name__](obj)


_TERMINAL = frozenset({"cancelled", "failed", "completed", "incomplete", "expired"})


def _raw(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# --- responses: generated from the SDK's schemas --------------------------------------------


def _sdk_run(payload: dict[str, Any]) -> SdkRun:
    """The SDK's parse; its Run rejects the spec's ``instructions: null``, so it gets ""."""
    return SdkRun.model_validate({**payload, "instructions": payload["instructions"] or ""})


@FIDELITY
@given(runs)
def test_run_agrees_with_sdk(payload: dict[str, Any]) -> None:
    ours = models.decode(_raw(payload), models.Run)
    assert ours.instructions == payload["instructions"]
    sdk = _sdk_run(payload)
    assert {**_run_view(ours), "instructions": ""} == {**_run_view(sdk), "instructions": ""}
    waiting = sdk.status == "requires_action" and sdk.required_action is not None
    expected = sdk.required_action.submit_tool_outputs.tool_calls if sdk.required_action else []
    expected = expected if waiting else []
    assert [c.id for c in ours.tool_calls] == [c.id for c in expected]
    assert ours.is_terminal == (sdk.status in _TERMINAL)


@FIDELITY
@given(steps)
def test_run_step_agrees_with_sdk(payload: dict[str, Any]) -> None:
    ours = models.decode(_raw(payload), models.RunStep)
    assert _step_view(ours) == _step_view(SdkRunStep.model_validate(payload))


@settings(FIDELITY, max_examples=6)
@given(run_lists)
def test_run_list_agrees_with_sdk(payload: dict[str, Any]) -> None:
    ours = models.decode(_raw(payload), models.ListRunsResponse)
    page = pagination.SyncCursorPage[SdkRun].model_validate(payload)
    assert [_run_view(r) for r in ours.data] == [_run_view(r) for r in page.data]
    assert (ours.first_id, ours.last_id, ours.has_more) == (
        payload["first_id"],
        payload["last_id"],
        page.has_more,
    )


@settings(FIDELITY, max_examples=4)
@given(step_lists)
def test_run_step_list_agrees_with_sdk(payload: dict[str, Any]) -> None:
    ours = models.decode(_raw(payload), models.ListRunStepsResponse)
    page = pagination.SyncCursorPage[SdkRunStep].model_validate(payload)
    assert [_step_view(s) for s in ours.data] == [_step_view(s) for s in page.data]
    assert ours.has_more == page.has_more


@pytest.mark.parametrize("kind", sorted({_data_kind(c) for c in _EVENT_CLASSES}))
def test_stream_events_agree_with_sdk(kind: str) -> None:
    @settings(FIDELITY, max_examples=5)
    @given(from_schema(_event_schema(kind)))
    def check(payload: dict[str, Any]) -> None:
        # On the wire the name and the data are separate SSE lines; the SDK rejoins them.
        sdk: Any = _SDK_EVENT.validate_python(payload).data
        frame = streaming.SSEMessage(event=payload["event"], data=_raw(payload["data"]))
        if payload["event"] == "error":
            with pytest.raises(errors.StreamError) as caught:
                streaming.decode_event(frame)
            err = caught.value
            assert (err.code, err.param, err.type) == (sdk.code, sdk.param, sdk.type)
            assert err.message == (sdk.message or err.message)
            return
        event = streaming.decode_event(frame)
        assert event is not None
        ours = getattr(event, event.__struct_fields__[1])
        assert _view(ours) == _view(sdk)

    check()


#: The spec's own Run example (WIRE.md 1.15), ``instructions: null`` included.
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


@pytest.mark.parametrize("instructions", [None, "", "Be brief."])
def test_spec_example_with_and_without_instructions(instructions: str | None) -> None:
    # The SDK's Run rejects the spec example's ``instructions: null``; we take it as None and
    # otherwise agree with the SDK on the same payload with a string there.
    payload = {**SPEC_RUN, "instructions": instructions}
    ours = models.decode(_raw(payload), models.Run)
    assert ours.instructions == instructions
    assert {**_run_view(ours), "instructions": ""} == {
        **_run_view(_sdk_run(payload)),
        "instructions": "",
    }


# --- request bodies: validated as the SDK's parameter TypedDicts ---------------------------


def _force(value: Any) -> Any:
    """Drain pydantic's lazy ``Iterable`` validators so every item is checked."""
    if isinstance(value, dict):
        return {k: _force(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_force(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return [_force(v) for v in value]


def _sdk_accepts(td: Any, body: bytes, **path: str) -> None:
    """``body`` validates as ``td``, and nothing in it is dropped or coerced by the SDK's type."""
    sent = {**json.loads(body), **path}
    assert _force(TypeAdapter(td).validate_python(sent)) == sent


def _opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(UNSET) | s


def _nullable(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.just(UNSET) | st.none() | s


_text = st.text(max_size=12)
_name = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
_metadata = st.dictionaries(st.text(max_size=8), st.text(max_size=16), max_size=3)
_schema_obj = st.just({"type": "object", "properties": {"x": {"type": "integer"}}})
_function = st.builds(
    models.FunctionDefinition,
    name=_name,
    description=st.none() | _text,
    parameters=st.none() | _schema_obj,
    strict=st.none() | st.booleans(),
)
_ranking = st.builds(
    models.RankingOptions,
    ranker=st.none() | st.sampled_from(["auto", "default_2024_08_21"]),
    score_threshold=st.floats(0, 1),
)
_tool = st.one_of(
    st.builds(models.ToolDefinition.for_function, _function),
    st.just(models.ToolDefinition(type="code_interpreter")),
    st.builds(
        models.ToolDefinition,
        type=st.just("file_search"),
        file_search=st.none()
        | st.builds(
            models.FileSearchSettings,
            max_num_results=st.none() | st.integers(1, 50),
            ranking_options=st.none() | _ranking,
        ),
    ),
)
_tool_choice = st.one_of(
    st.sampled_from(["none", "auto", "required"]),
    st.builds(models.ToolChoice, type=st.sampled_from(["code_interpreter", "file_search"])),
    st.builds(
        models.ToolChoice,
        type=st.just("function"),
        function=st.builds(models.NamedFunction, name=_name),
    ),
)
_response_format = st.one_of(
    st.just("auto"),
    st.builds(models.ResponseFormat, type=st.sampled_from(["text", "json_object"])),
    st.builds(
        models.ResponseFormat,
        type=st.just("json_schema"),
        json_schema=st.builds(
            models.JsonSchemaFormat,
            name=_name,
            description=st.none() | _text,
            schema=st.none() | _schema_obj,
            strict=st.none() | st.booleans(),
        ),
    ),
)
_truncation = st.builds(
    models.TruncationStrategy,
    type=st.sampled_from(["auto", "last_messages"]),
    last_messages=st.none() | st.integers(1, 50),
)
_attachment = st.fixed_dictionaries(
    {"file_id": _text, "tools": st.lists(st.just({"type": "code_interpreter"}), max_size=1)}
)
_message = st.builds(
    models.MessageRequest,
    role=st.sampled_from(["user", "assistant"]),
    content=_text | st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": _text})),
    attachments=_nullable(st.lists(_attachment, max_size=2)),
    metadata=_nullable(_metadata),
)
_run_params: dict[str, st.SearchStrategy[Any]] = {
    "assistant_id": _text,
    "model": _nullable(st.sampled_from(["gpt-4o", "my-azure-deployment"])),
    "instructions": _nullable(_text),
    "tools": _nullable(st.lists(_tool, max_size=3)),
    "metadata": _nullable(_metadata),
    "temperature": _nullable(st.floats(0, 2)),
    "top_p": _nullable(st.floats(0, 1)),
    "stream": _nullable(st.booleans()),
    "max_prompt_tokens": _nullable(st.integers(256, 100_000)),
    "max_completion_tokens": _nullable(st.integers(256, 100_000)),
    "truncation_strategy": _nullable(_truncation),
    "tool_choice": _nullable(_tool_choice),
    "parallel_tool_calls": _opt(st.booleans()),
    "response_format": _nullable(_response_format),
}
_tool_resources = st.fixed_dictionaries(
    {},
    optional={
        "code_interpreter": st.fixed_dictionaries({"file_ids": st.lists(_text, max_size=2)}),
        "file_search": st.fixed_dictionaries({"vector_store_ids": st.lists(_text, max_size=1)}),
    },
)


@FIDELITY
@given(
    st.builds(
        models.CreateRun,
        **_run_params,
        reasoning_effort=_nullable(st.sampled_from(["none", "minimal", "low", "high", "xhigh"])),
        additional_instructions=_nullable(_text),
        additional_messages=_nullable(st.lists(_message, max_size=2)),
    )
)
def test_create_run_body_is_what_the_sdk_sends(body: models.CreateRun) -> None:
    mod = run_create_params
    td = mod.RunCreateParamsStreaming if body.stream else mod.RunCreateParamsNonStreaming
    _sdk_accepts(td, models.encode(body))


@FIDELITY
@given(
    st.builds(
        models.CreateThreadAndRun,
        **_run_params,
        thread=_opt(
            st.builds(
                models.ThreadRequest,
                messages=_opt(st.lists(_message, max_size=2)),
                tool_resources=_nullable(_tool_resources),
                metadata=_nullable(_metadata),
            )
        ),
        tool_resources=_nullable(_tool_resources),
    )
)
def test_create_thread_and_run_body_is_what_the_sdk_sends(body: models.CreateThreadAndRun) -> None:
    mod = thread_create_and_run_params
    td = (
        mod.ThreadCreateAndRunParamsStreaming
        if body.stream
        else mod.ThreadCreateAndRunParamsNonStreaming
    )
    _sdk_accepts(td, models.encode(body))


@FIDELITY
@given(
    st.builds(
        models.SubmitToolOutputs,
        tool_outputs=st.lists(st.builds(models.ToolOutput, tool_call_id=_text, output=_text)),
        stream=_nullable(st.booleans()),
    ),
    st.builds(models.ModifyRun, metadata=_nullable(_metadata)),
)
def test_submit_and_modify_bodies_are_what_the_sdk_sends(
    submit: models.SubmitToolOutputs, modify: models.ModifyRun
) -> None:
    mod = run_submit_tool_outputs_params
    td = (
        mod.RunSubmitToolOutputsParamsStreaming
        if submit.stream
        else mod.RunSubmitToolOutputsParamsNonStreaming
    )
    # thread_id is a path parameter the SDK keeps in the same TypedDict.
    _sdk_accepts(td, models.encode(submit), thread_id="thread_1")
    _sdk_accepts(run_update_params.RunUpdateParams, models.encode(modify), thread_id="thread_1")


def test_default_truncation_strategy_keeps_its_required_type() -> None:
    body = models.CreateRun(assistant_id="asst_1", truncation_strategy=models.TruncationStrategy())
    _sdk_accepts(run_create_params.RunCreateParamsNonStreaming, models.encode(body))
    assert json.loads(models.encode(body))["truncation_strategy"]["type"] == "auto"


# --- mutation: decode or DecodeError, never anything else -----------------------------------

_RUN_WAITING: dict[str, Any] = {
    **SPEC_RUN,
    **json.loads(
        """{"status": "requires_action", "expires_at": 1699074076, "completed_at": null,
        "usage": null, "tools": [{"type": "function", "function": {"name": "f"}}],
        "required_action": {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": "{"}}
        ]}}}"""
    ),
}
_STEP: dict[str, Any] = json.loads(
    """{"id": "step_1", "object": "thread.run.step", "created_at": 1, "assistant_id": "asst_1",
    "thread_id": "thread_1", "run_id": "run_1", "type": "tool_calls", "status": "completed",
    "last_error": null, "expired_at": null, "cancelled_at": null, "failed_at": null,
    "completed_at": 2, "metadata": {},
    "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    "step_details": {"type": "tool_calls", "tool_calls": [
        {"id": "ci_1", "type": "code_interpreter", "code_interpreter": {"input": "print(1)",
            "outputs": [{"type": "logs", "logs": "1\\n"},
                        {"type": "image", "image": {"file_id": "file_1"}}]}},
        {"id": "fs_1", "type": "file_search", "file_search": {
            "ranking_options": {"ranker": "auto", "score_threshold": 0.5},
            "results": [{"file_id": "file_2", "file_name": "a.txt", "score": 0.9,
                         "content": [{"type": "text", "text": "hit"}]}]}},
        {"id": "call_9", "type": "function",
         "function": {"name": "f", "arguments": "{}", "output": null}},
        {"id": "r_1", "type": "retrieval", "retrieval": {}}
    ]}}"""
)
_MESSAGE: dict[str, Any] = json.loads(
    """{"id": "msg_1", "object": "thread.message", "created_at": 1, "thread_id": "thread_1",
    "status": "completed", "role": "assistant", "assistant_id": "asst_1", "run_id": "run_1",
    "metadata": {}, "content": [{"type": "text", "text": {"value": "hi", "annotations": []}},
                                {"type": "image_file", "image_file": {"file_id": "file_1"}}]}"""
)
_STEP_DELTA: dict[str, Any] = json.loads(
    """{"id": "step_1", "object": "thread.run.step.delta", "delta": {"step_details": {
        "type": "tool_calls", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "function",
         "function": {"name": "f", "arguments": "{\\"a\\"", "output": null}},
        {"index": 1, "type": "code_interpreter", "code_interpreter": {"input": "x", "outputs": [
            {"index": 0, "type": "logs", "logs": "hi"},
            {"index": 1, "type": "image", "image": {"file_id": "file_1"}}]}},
        {"index": 2, "type": "file_search", "file_search": {}}]}}}"""
)
_MESSAGE_DELTA: dict[str, Any] = json.loads(
    """{"id": "msg_1", "object": "thread.message.delta", "delta": {"role": "assistant",
    "content": [{"index": 0, "type": "text", "text": {"value": "Hel", "annotations": []}},
                {"index": 1, "type": "refusal", "refusal": "no"},
                {"index": 2, "type": "image_file", "image_file": {"file_id": "f"}}]}}"""
)
_RUN_FAILED: dict[str, Any] = {
    **SPEC_RUN,
    **json.loads(
        """{"status": "failed", "failed_at": 1699073499, "completed_at": null, "usage": null,
        "last_error": {"code": "rate_limit_exceeded", "message": "slow down"},
        "incomplete_details": {"reason": "max_prompt_tokens"},
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "out",
            "schema": {"type": "object"}, "strict": true}},
        "truncation_strategy": {"type": "last_messages", "last_messages": 5},
        "tools": [{"type": "file_search", "file_search": {"max_num_results": 5,
            "ranking_options": {"ranker": "auto", "score_threshold": 0.2}}}]}"""
    ),
}
_LIST = {"object": "list", "first_id": "a", "last_id": "b", "has_more": False}
_THREAD = {"id": "thread_1", "object": "thread", "created_at": 1, "metadata": {}}
CORPUS: list[tuple[Any, type[Any]]] = [
    (SPEC_RUN, models.Run),
    (_RUN_WAITING, models.Run),
    (_RUN_FAILED, models.Run),
    (_STEP, models.RunStep),
    (_MESSAGE, models.Message),
    (_STEP_DELTA, streaming.RunStepDelta),
    (_MESSAGE_DELTA, streaming.MessageDelta),
    ({**_THREAD, "tool_resources": None}, models.Thread),
    ({**_LIST, "data": [SPEC_RUN, _RUN_WAITING]}, models.ListRunsResponse),
    ({**_LIST, "data": [_STEP]}, models.ListRunStepsResponse),
    ({"message": "boom", "type": "server_error", "param": None, "code": None}, models.ErrorBody),
    ({"error": {"message": "no", "type": "invalid_request_error"}}, models.ErrorResponse),
]
_JUNK: list[Any] = [None, 0, -1, 2**64, 1.5, "", "x", True, [], [1, "a"], {}, {"k": "v"}]


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    items: Any = node.items() if isinstance(node, dict) else ()
    for key, child in enumerate(node) if isinstance(node, list) else items:
        yield from _paths(child, (*path, key))


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def _mutated(payload: Any, path: tuple[Any, ...], op: str, junk: Any) -> Any:
    root = json.loads(json.dumps(payload))  # deep copy
    if not path:
        return junk if op != "extend" or not isinstance(root, dict) else {**root, "x_new": junk}
    parent, key = _at(root, path[:-1]), path[-1]
    if op == "remove":
        del parent[key]
    elif op == "null":
        parent[key] = None
    elif op == "retype":
        parent[key] = junk
    else:
        target = parent[key]
        if isinstance(target, dict):
            target["x_new"] = junk
        elif isinstance(target, list):
            target.append(junk)
        elif isinstance(parent, dict):
            parent["x_new"] = junk
    return root


def _touch(obj: Any, type_: type[Any]) -> None:
    """Everything the orchestrator reads works on what decoded, and it encodes back."""
    for item in getattr(obj, "data", None) or [obj]:
        if isinstance(item, models.Run):
            _ = (item.known_status, item.is_terminal, item.is_active, item.tool_calls)
        if isinstance(item, models.Message):
            _ = item.text
    assert models.decode(models.encode(obj), type_) == obj


_SDK_BASES = st.one_of(
    runs.map(lambda p: (p, models.Run)), steps.map(lambda p: (p, models.RunStep))
)


@settings(FIDELITY, max_examples=50)
@given(st.data())
def test_mutated_payloads_decode_or_raise_decode_error(data: st.DataObject) -> None:
    payload, type_ = data.draw(st.sampled_from(CORPUS) | _SDK_BASES, label="base")
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(list(_paths(payload))), label="path")
        op = data.draw(st.sampled_from(["remove", "null", "retype", "extend"]), label="op")
        payload = _mutated(payload, path, op, data.draw(st.sampled_from(_JUNK), label="junk"))
    try:
        obj = models.decode(_raw(payload), type_)
    except errors.DecodeError:
        return
    _touch(obj, type_)


_SDK_MODELS: dict[Any, type[BaseModel]] = {
    models.Run: SdkRun,
    models.RunStep: SdkRunStep,
    models.Message: SdkMessage,
    models.Thread: SdkThread,
    streaming.RunStepDelta: RunStepDeltaEvent,
    streaming.MessageDelta: MessageDeltaEvent,
    models.ErrorBody: ErrorObject,
    models.ListRunsResponse: pagination.SyncCursorPage[SdkRun],
    models.ListRunStepsResponse: pagination.SyncCursorPage[SdkRunStep],
}


@pytest.mark.parametrize(
    ("payload", "type_"),
    [pytest.param(p, t, id=f"{i}") for i, (p, t) in enumerate(CORPUS) if t in _SDK_MODELS],
)
def test_every_single_change_the_sdk_accepts_we_accept(payload: Any, type_: type[Any]) -> None:
    """Exhaustive over one change anywhere: whatever the SDK's model takes (strictly, without
    coercing types), ours decodes too, and the two agree."""
    sdk_model = _SDK_MODELS[type_]
    for path in _paths(payload):
        if path[-1:] == ("file_search",) and type_ is streaming.RunStepDelta:
            continue  # the SDK types this delta's {} as bare `object`; the spec says object
        for op, junk in [("remove", None), ("null", None)] + [("retype", j) for j in _JUNK]:
            changed = _mutated(payload, path, op, junk)
            try:
                sdk = sdk_model.model_validate(changed, strict=True)
            except ValidationError:
                continue
            ours = models.decode(_raw(changed), type_)
            assert _view(ours) == _view(sdk), (op, path, junk)


@settings(FIDELITY, max_examples=60)
@given(st.data())
def test_unknown_keys_anywhere_always_decode(data: st.DataObject) -> None:
    payload, type_ = data.draw(st.sampled_from(CORPUS), label="base")
    dicts = [p for p in _paths(payload) if isinstance(_at(payload, p), dict)]
    for path in data.draw(st.lists(st.sampled_from(dicts), min_size=1, max_size=4), label="where"):
        # A string value fits even a string-to-string map such as metadata.
        payload = _mutated(payload, path, "extend", data.draw(_text, label="value"))
    _touch(models.decode(_raw(payload), type_), type_)


@pytest.mark.parametrize(
    ("payload", "type_"), [pytest.param(p, t, id=f"{i}") for i, (p, t) in enumerate(CORPUS)]
)
def test_corpus_decodes_and_broken_bytes_raise_decode_error(payload: Any, type_: type[Any]) -> None:
    raw = _raw(payload)
    _touch(models.decode(raw, type_), type_)
    for cut in range(0, len(raw) - 1, 7):
        with pytest.raises(errors.DecodeError):
            models.decode(raw[:cut], type_)
    for bad in (b"", b"null", b"[]", b"\xff\xfe", raw.replace(b'"', b"'", 1), raw + b"}"):
        with pytest.raises(errors.DecodeError):
            models.decode(bad, type_)


def test_other_types_on_the_same_bytes_raise_only_decode_error() -> None:
    types = {t for _, t in CORPUS}
    for payload, _ in CORPUS:
        for type_ in types:
            with contextlib.suppress(errors.DecodeError):
                models.decode(_raw(payload), type_)

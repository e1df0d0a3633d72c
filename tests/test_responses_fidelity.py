"""Fidelity against the official SDK for ``/responses``: Response objects and stream events
generated from its pydantic models' JSON Schemas decode with our structs and agree with the
SDK's own parsing, field by field, on what the orchestrator relies on."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis_jsonschema import from_schema
from openai.types.responses import (
    Response,
    ResponseCodeInterpreterToolCall,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFileSearchToolCall,
    ResponseFunctionCallArgumentsDoneEvent,
    ResponseFunctionToolCall,
    ResponseFunctionWebSearch,
    ResponseOutputItemAddedEvent,
    ResponseOutputMessage,
    ResponseReasoningItem,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
)
from openai.types.responses.response_output_item import McpApprovalRequest, McpCall
from pydantic import BaseModel

from orchestrator import errors
from orchestrator.protocols.assistants import streaming
from orchestrator.protocols.responses import stream, wire

pytestmark = [pytest.mark.filterwarnings("ignore:Pydantic serializer warnings:UserWarning")]

FIDELITY = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _tame(schema: Any) -> Any:
    """Bound integers to int64 and arrays to a few items; leave ``tools`` to one kind."""
    if isinstance(schema, list):
        return [_tame(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _tame(v) for k, v in schema.items()}
    if out.get("type") == "integer":
        out.setdefault("minimum", -(2**63))
        out.setdefault("maximum", 2**63 - 1)
    if out.get("type") == "array":
        out.setdefault("maxItems", 3)
    return out


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = typing.cast(dict[str, Any], _tame(model.model_json_schema()))
    props = schema.get("properties", {})
    if "response" in props:  # events carrying a whole response: the cut-down one
        props["response"] = {"$ref": "#/$defs/Response"}
    if "item" in props:  # and items of the kinds in _ITEMS
        props["item"] = {"anyOf": _response_schema()["properties"]["output"]["items"]["anyOf"]}
        schema.setdefault("$defs", {}).update(_response_schema()["$defs"])
    return schema


#: The output item kinds generated: those we act on or report, plus built-in tool calls.
_ITEMS: list[type[BaseModel]] = [
    ResponseOutputMessage,
    ResponseFunctionToolCall,
    ResponseReasoningItem,
    ResponseFunctionWebSearch,
    ResponseFileSearchToolCall,
    ResponseCodeInterpreterToolCall,
    McpCall,
    McpApprovalRequest,
]
_KEEP = frozenset(
    {
        "id",
        "object",
        "created_at",
        "status",
        "background",
        "error",
        "incomplete_details",
        "model",
        "output",
        "metadata",
        "previous_response_id",
        "usage",
        "max_output_tokens",
        "parallel_tool_calls",
        "completed_at",
    }
)


def _response_schema() -> dict[str, Any]:
    """The SDK's Response cut to the fields we read (the whole one takes minutes to
    generate), with output items drawn from ``_ITEMS``."""
    full = Response.model_json_schema()
    defs = full.pop("$defs", {})
    items = []
    for model in _ITEMS:
        schema = model.model_json_schema()
        defs.update(schema.pop("$defs", {}))
        items.append(schema)
    props = {k: v for k, v in full["properties"].items() if k in _KEEP}
    props["output"] = {"type": "array", "items": {"anyOf": items}, "minItems": 1}
    required = [r for r in full["required"] if r in _KEEP]
    schema = {"$defs": defs, "type": "object", "properties": props, "required": required}
    return typing.cast(dict[str, Any], _tame(schema))


def _complete(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in the echoed configuration the SDK requires and the generator left out."""
    return {"tools": [], "tool_choice": "auto", "parallel_tool_calls": True, **data}


def _view(r: Any) -> dict[str, Any]:
    """What the orchestrator relies on, read the same way from either side."""
    error = None if r.error is None else (r.error.code, r.error.message)
    usage = None if r.usage is None else (r.usage.input_tokens, r.usage.output_tokens)
    return {
        "id": r.id,
        "status": r.status,
        "error": error,
        "incomplete": None if r.incomplete_details is None else r.incomplete_details.reason,
        "model": r.model,
        "metadata": r.metadata or None,
        "previous": r.previous_response_id,
        "usage": usage,
        "items": [_item_view(i) for i in r.output],
    }


def _item_view(item: Any) -> tuple[Any, ...]:
    kind = item.type
    fields: tuple[Any, ...] = (kind, getattr(item, "id", None))
    if kind == "function_call":
        return (*fields, item.call_id, item.name, item.arguments, item.status)
    if kind in ("mcp_call", "mcp_approval_request"):
        return (*fields, item.name, item.arguments, item.server_label)
    if kind == "message":
        texts = [getattr(p, "text", None) for p in item.content if p.type == "output_text"]
        return (*fields, item.role, texts)
    return fields


def _ours(payload: bytes) -> wire.Response:
    return wire.decode_response(payload)


@FIDELITY
@given(from_schema(_response_schema()))
def test_sdk_responses_decode_and_agree(data: dict[str, Any]) -> None:
    payload = json.dumps(data).encode()
    sdk = Response.model_validate(_complete(data))
    ours = _ours(payload)
    assert _view(ours) == _view(sdk)
    sdk_calls = [i.call_id for i in sdk.output if i.type == "function_call"]
    assert [i.call_id for i in ours.function_calls] == [c for c in sdk_calls if c]
    assert (ours.text or "") == "\n".join(
        t
        for t in (
            "".join(p.text for p in i.content if p.type == "output_text")
            for i in sdk.output
            if i.type == "message"
        )
        if t
    )


_EVENTS: list[type[BaseModel]] = [
    ResponseCompletedEvent,
    ResponseOutputItemAddedEvent,
    ResponseTextDeltaEvent,
    ResponseTextDoneEvent,
    ResponseFunctionCallArgumentsDoneEvent,
]


def _event_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = _schema(model)
    if "response" in schema["properties"]:
        defs = schema.setdefault("$defs", {})
        full = _response_schema()
        defs.update(full.pop("$defs", {}))
        defs["Response"] = full
    return schema


@pytest.mark.parametrize("model", _EVENTS, ids=lambda m: m.__name__)
def test_sdk_stream_events_decode_and_agree(model: type[BaseModel]) -> None:
    @FIDELITY
    @given(from_schema(_event_schema(model)))
    def check(data: dict[str, Any]) -> None:
        if isinstance(data.get("response"), dict):
            data = {**data, "response": _complete(data["response"])}
        sdk: Any = model.model_validate(data)
        raw = json.dumps(data).encode()
        # With the SSE event name, and without it (the type in the data decides).
        for name in (sdk.type, "message"):
            ours = stream.decode_event(streaming.SSEMessage(name, raw))
            assert ours is not None
            assert ours.type == sdk.type
            assert ours.sequence_number == sdk.sequence_number
            match ours:
                case stream.ResponseEvent(response=response):
                    assert _view(response) == _view(sdk.response)
                case stream.ItemEvent(item=item):
                    assert _item_view(item) == _item_view(sdk.item)
                    assert ours.output_index == sdk.output_index
                case stream.TextDeltaEvent():
                    assert (ours.item_id, ours.delta) == (sdk.item_id, sdk.delta)
                case stream.TextDoneEvent():
                    assert (ours.item_id, ours.text) == (sdk.item_id, sdk.text)
                case stream.ArgumentsDoneEvent():
                    assert (ours.item_id, ours.arguments) == (sdk.item_id, sdk.arguments)
                case _:
                    raise AssertionError(f"decoded as {type(ours).__name__}")

    check()


@FIDELITY
@given(from_schema(_schema(ResponseErrorEvent)))
def test_sdk_error_events_raise_stream_error(data: dict[str, Any]) -> None:
    sdk = ResponseErrorEvent.model_validate(data)
    with pytest.raises(errors.StreamError) as caught:
        stream.decode_event(streaming.SSEMessage("error", json.dumps(data).encode()))
    assert caught.value.code == sdk.code
    if sdk.message:
        assert caught.value.message == sdk.message

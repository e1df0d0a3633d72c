"""Stream delta payloads as the emulator sends them.

``orchestrator.protocols.assistants.streaming`` has lenient structs for reading deltas, but
they omit ``index: 0`` when encoding (``omit_defaults``), and the SDK needs it; these carry
``index`` always.
"""

from __future__ import annotations

from msgspec import UNSET, Struct, UnsetType

__all__ = ["MessageDelta", "RunStepDelta", "function_delta", "text_delta"]


class _FunctionDelta(Struct, omit_defaults=True):
    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET
    output: str | None | UnsetType = UNSET


class _ToolCallDelta(Struct, omit_defaults=True):
    index: int
    type: str
    id: str | UnsetType = UNSET
    function: _FunctionDelta | UnsetType = UNSET


class _StepDetailsDelta(Struct):
    type: str
    tool_calls: list[_ToolCallDelta]


class _StepDeltaBody(Struct):
    step_details: _StepDetailsDelta


class RunStepDelta(Struct, kw_only=True):
    """``thread.run.step.delta`` payload."""

    id: str
    object: str = "thread.run.step.delta"
    delta: _StepDeltaBody


class _Text(Struct):
    value: str
    annotations: list[object] = []


class _ContentDelta(Struct):
    index: int
    type: str
    text: _Text


class _MessageDeltaBody(Struct):
    content: list[_ContentDelta]


class MessageDelta(Struct, kw_only=True):
    """``thread.message.delta`` payload."""

    id: str
    object: str = "thread.message.delta"
    delta: _MessageDeltaBody


def function_delta(
    step_id: str, index: int, *, call_id: str | None, name: str | None, arguments: str
) -> RunStepDelta:
    """A fragment of function call ``index``: its head (id, name) or more of its arguments."""
    fn = _FunctionDelta(arguments=arguments)
    call = _ToolCallDelta(index=index, type="function", function=fn)
    if call_id is not None and name is not None:
        fn.name = name
        fn.output = None
        call.id = call_id
    details = _StepDetailsDelta(type="tool_calls", tool_calls=[call])
    return RunStepDelta(id=step_id, delta=_StepDeltaBody(step_details=details))


def text_delta(message_id: str, value: str) -> MessageDelta:
    """A fragment of the text of content part 0."""
    part = _ContentDelta(index=0, type="text", text=_Text(value=value))
    return MessageDelta(id=message_id, delta=_MessageDeltaBody(content=[part]))

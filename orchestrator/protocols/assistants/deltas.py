"""Delta payloads of a streamed run (WIRE.md 2.4 and 5.2): fragments of steps and messages.

Plain msgspec structs with no I/O, so that ``events`` can carry them; ``streaming`` decodes
them from the wire and re-exports them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from orchestrator.protocols.assistants import models

__all__ = [
    "CodeInterpreterDelta",
    "CodeInterpreterOutputDelta",
    "FunctionDelta",
    "MessageContentDelta",
    "MessageDelta",
    "MessageDeltaBody",
    "RunStepDelta",
    "RunStepDeltaBody",
    "StepDetailsDelta",
    "TextDelta",
    "ToolCallDelta",
    "delta_text",
]


class FunctionDelta(Struct, omit_defaults=True):
    """A fragment of a function call; ``arguments`` fragments concatenate per ``index``."""

    name: str | None = None
    arguments: str | None = None
    output: str | None = None


class CodeInterpreterOutputDelta(Struct, omit_defaults=True):
    """A fragment of a code-interpreter output (``logs`` or ``image``)."""

    type: str
    index: int = 0
    logs: str | None = None
    image: models.ImageFile | None = None


class CodeInterpreterDelta(Struct, omit_defaults=True):
    """A fragment of a code-interpreter call."""

    input: str | None = None
    outputs: list[CodeInterpreterOutputDelta] | None = None


class ToolCallDelta(Struct, omit_defaults=True):
    """A fragment of the tool call at position ``index`` of the step's ``tool_calls``."""

    type: str
    index: int = 0
    id: str | None = None
    function: FunctionDelta | None = None
    code_interpreter: CodeInterpreterDelta | None = None
    file_search: dict[str, Any] | None = None
    retrieval: dict[str, Any] | None = None


class StepDetailsDelta(Struct, omit_defaults=True):
    """``delta.step_details``: ``message_creation`` or ``tool_calls`` (or unknown)."""

    type: str
    message_creation: models.MessageCreation | None = None
    tool_calls: list[ToolCallDelta] | None = None


class RunStepDeltaBody(Struct, omit_defaults=True):
    """What changed in a step."""

    step_details: StepDetailsDelta | None = None


class RunStepDelta(Struct, kw_only=True):
    """``thread.run.step.delta`` payload."""

    id: str
    object: str = "thread.run.step.delta"
    delta: RunStepDeltaBody = msgspec.field(default_factory=RunStepDeltaBody)


class TextDelta(Struct, omit_defaults=True):
    """A fragment of message text."""

    value: str | None = None
    annotations: list[Any] | None = None


class MessageContentDelta(Struct, omit_defaults=True):
    """A fragment of content part ``index`` (``text``, ``image_file``, ``image_url``, ...)."""

    type: str
    index: int = 0
    text: TextDelta | None = None
    refusal: str | None = None
    image_file: dict[str, Any] | None = None
    image_url: dict[str, Any] | None = None


class MessageDeltaBody(Struct, omit_defaults=True):
    """What changed in a message."""

    role: str | None = None
    content: list[MessageContentDelta] | None = None


class MessageDelta(Struct, kw_only=True):
    """``thread.message.delta`` payload."""

    id: str
    object: str = "thread.message.delta"
    delta: MessageDeltaBody = msgspec.field(default_factory=MessageDeltaBody)

    @property
    def text(self) -> str:
        """The text fragments of this delta joined."""
        return delta_text(self)


def delta_text(delta: MessageDelta) -> str:
    """The text fragments of a message delta joined ("" when it carries none)."""
    parts = delta.delta.content or ()
    return "".join(p.text.value or "" for p in parts if p.text is not None)

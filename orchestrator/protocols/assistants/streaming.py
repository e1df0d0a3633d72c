"""Server-sent events of a streamed run: SSE framing, event payload structs, decoding.

The delta payloads live in ``orchestrator.protocols.assistants.deltas`` (re-exported here).

``SSEDecoder`` turns raw bytes (split anywhere) into ``SSEMessage`` frames; one table maps each
event name to the struct its ``data`` decodes into; ``EventStream`` reads an aiohttp response
and yields ``ServerEvent`` values until ``done``. An ``error`` event raises ``StreamError``; a
connection lost mid-stream raises ``APIConnectionError``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

import aiohttp
import msgspec
from msgspec import Struct

from orchestrator import errors
from orchestrator.http import sse, transport
from orchestrator.http.sse import SSEDecoder, SSEMessage
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants.deltas import (
    CodeInterpreterDelta,
    CodeInterpreterOutputDelta,
    FunctionDelta,
    MessageContentDelta,
    MessageDelta,
    MessageDeltaBody,
    RunStepDelta,
    RunStepDeltaBody,
    StepDetailsDelta,
    TextDelta,
    ToolCallDelta,
    delta_text,
)

__all__ = [
    "EVENT_TYPES",
    "CodeInterpreterDelta",
    "CodeInterpreterOutputDelta",
    "EventStream",
    "FunctionDelta",
    "MessageContentDelta",
    "MessageDelta",
    "MessageDeltaBody",
    "MessageDeltaEvent",
    "MessageEvent",
    "RunEvent",
    "RunStepDelta",
    "RunStepDeltaBody",
    "SSEDecoder",
    "SSEMessage",
    "ServerEvent",
    "StepDeltaEvent",
    "StepDetailsDelta",
    "StepEvent",
    "TextDelta",
    "ThreadEvent",
    "ToolCallDelta",
    "UnknownEvent",
    "decode_event",
    "delta_text",
]

# --- events ----------------------------------------------------------------------------------


class RunEvent(Struct, frozen=True):
    """``thread.run.*``: the run as it is now."""

    event: str
    run: models.Run


class StepEvent(Struct, frozen=True):
    """``thread.run.step.*`` except the delta."""

    event: str
    step: models.RunStep


class StepDeltaEvent(Struct, frozen=True):
    """``thread.run.step.delta``."""

    event: str
    delta: RunStepDelta


class MessageEvent(Struct, frozen=True):
    """``thread.message.*`` except the delta."""

    event: str
    message: models.Message


class MessageDeltaEvent(Struct, frozen=True):
    """``thread.message.delta``."""

    event: str
    delta: MessageDelta


class ThreadEvent(Struct, frozen=True):
    """``thread.created`` (create-thread-and-run only)."""

    event: str
    thread: models.Thread


class UnknownEvent(Struct, frozen=True):
    """An event name this code does not know; consumers log it and move on."""

    event: str
    data: bytes


ServerEvent: TypeAlias = (
    RunEvent
    | StepEvent
    | StepDeltaEvent
    | MessageEvent
    | MessageDeltaEvent
    | ThreadEvent
    | UnknownEvent
)

_RUN: Final = ("created", "queued", "in_progress", "requires_action", "completed", "incomplete")
_RUN_END: Final = ("failed", "cancelling", "cancelled", "expired")
_STEP: Final = ("created", "in_progress", "completed", "failed", "cancelled", "expired")
_MESSAGE: Final = ("created", "in_progress", "completed", "incomplete")

#: Event name → (payload type, event struct); decoders are built once, below.
EVENT_TYPES: Final[dict[str, tuple[Any, Callable[[str, Any], ServerEvent]]]] = {
    **{f"thread.run.{s}": (models.Run, RunEvent) for s in _RUN + _RUN_END},
    **{f"thread.run.step.{s}": (models.RunStep, StepEvent) for s in _STEP},
    "thread.run.step.delta": (RunStepDelta, StepDeltaEvent),
    **{f"thread.message.{s}": (models.Message, MessageEvent) for s in _MESSAGE},
    "thread.message.delta": (MessageDelta, MessageDeltaEvent),
    "thread.created": (models.Thread, ThreadEvent),
}
_DECODERS: Final = {
    name: (msgspec.json.Decoder(payload), make) for name, (payload, make) in EVENT_TYPES.items()
}


class _ErrorEventData(Struct):
    """``error`` data in either shape: the bare Error object or ``{"error": {...}}``."""

    error: models.ErrorBody | None = None
    message: str = ""
    type: str | None = None
    code: str | None = None
    param: str | None = None


_ERROR_DECODER: Final = msgspec.json.Decoder(_ErrorEventData)


def _stream_error(data: bytes, status: int, request_id: str | None) -> errors.StreamError:
    try:
        raw = _ERROR_DECODER.decode(data)
        body = raw.error or models.ErrorBody(raw.message, raw.type, raw.param, raw.code)
    except models.DECODE_FAILURES:
        body = models.ErrorBody(transport.excerpt(data))
    return errors.StreamError(
        body.message or "error event without a message",
        status=status,
        type=body.type,
        code=body.code,
        param=body.param,
        request_id=request_id,
    )


def decode_event(
    message: SSEMessage, *, status: int = 200, request_id: str | None = None
) -> ServerEvent | None:
    """The event for one SSE frame; None for the end of the stream (``done`` / ``[DONE]``).

    An ``error`` event raises ``StreamError``; a known event whose data does not fit its struct
    raises ``DecodeError`` naming the path.
    """
    name, data = message.event, message.data
    if name == "done" or data.startswith(b"[DONE]"):
        return None
    entry = _DECODERS.get(name)
    if entry is None:
        if name == "error":
            raise _stream_error(data, status, request_id)
        return UnknownEvent(name, data)
    decoder, make = entry
    try:
        return make(name, decoder.decode(data))
    except models.DECODE_FAILURES as exc:
        raise errors.DecodeError(f"{name} event: {models.describe(exc)}") from exc


class EventStream(sse.SSEReader[ServerEvent]):
    """Async iterator over the events of one SSE response; ends at ``done`` or a clean EOF.

    Owned by the client's stream context manager, which releases the response on exit.
    """

    def __init__(
        self, response: aiohttp.ClientResponse | None, *, endpoint: str = "stream"
    ) -> None:
        super().__init__(response, endpoint=endpoint)
        self._ready: collections.deque[ServerEvent] = collections.deque()

    @classmethod
    def empty(cls) -> EventStream:
        """A stream with no events."""
        return cls(None)

    @classmethod
    def of(cls, events: Sequence[ServerEvent]) -> EventStream:
        """A stream of events known already (no connection behind it)."""
        stream = cls(None)
        stream._ready.extend(events)
        return stream

    def __aiter__(self) -> EventStream:
        return self

    def decode(self, message: SSEMessage) -> ServerEvent | None:
        return decode_event(message, status=self.status, request_id=self.request_id)

    async def __anext__(self) -> ServerEvent:
        if self._ready:
            return self._ready.popleft()
        return await self.next_event()

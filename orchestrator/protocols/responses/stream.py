"""Server-sent events of a streamed response: event structs, decoding, and the reader.

Every event carries a ``sequence_number``; a stream cut short is resumed with ``GET
/responses/{id}?stream=true&starting_after=<last sequence_number>``. The SSE framing and
reading are shared (``http.sse``); one table maps each event type to its struct, and a type
unknown here becomes an ``UnknownEvent`` that still carries its sequence number. An ``error``
event raises ``StreamError``; a connection lost mid-stream raises ``APIConnectionError``.
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import aiohttp
import msgspec
from msgspec import Struct

from orchestrator import errors
from orchestrator.http import sse, transport
from orchestrator.protocols.responses import wire

__all__ = [
    "EVENT_TYPES",
    "ArgumentsDoneEvent",
    "ItemEvent",
    "ResponseEvent",
    "ResponseStream",
    "ServerEvent",
    "TextDeltaEvent",
    "TextDoneEvent",
    "UnknownEvent",
    "decode_event",
]


class ResponseEvent(Struct, frozen=True, kw_only=True):
    """``response.created`` / ``queued`` / ``in_progress`` / ``completed`` / ``failed`` /
    ``incomplete`` (and ``cancelled``): the response as it is now."""

    type: str
    sequence_number: int = 0
    response: wire.Response


class ItemEvent(Struct, frozen=True, kw_only=True):
    """``response.output_item.added`` / ``done``."""

    type: str
    sequence_number: int = 0
    output_index: int = 0
    item: wire.OutputItem


class TextDeltaEvent(Struct, frozen=True, kw_only=True):
    """``response.output_text.delta``: a piece of message text."""

    type: str
    sequence_number: int = 0
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    delta: str = ""


class TextDoneEvent(Struct, frozen=True, kw_only=True):
    """``response.output_text.done``: one text part, whole."""

    type: str
    sequence_number: int = 0
    item_id: str = ""
    output_index: int = 0
    content_index: int = 0
    text: str = ""


class ArgumentsDoneEvent(Struct, frozen=True, kw_only=True):
    """``response.function_call_arguments.done``: a call's arguments, whole."""

    type: str
    sequence_number: int = 0
    item_id: str = ""
    output_index: int = 0
    arguments: str = ""


class UnknownEvent(Struct, frozen=True, kw_only=True):
    """An event type this code does not act on; consumers log it and move on."""

    type: str
    sequence_number: int | None = None
    data: bytes = b""


ServerEvent: TypeAlias = (
    ResponseEvent | ItemEvent | TextDeltaEvent | TextDoneEvent | ArgumentsDoneEvent | UnknownEvent
)

_RESPONSE: Final = ("created", "queued", "in_progress", "completed", "failed", "incomplete")
#: Event type → struct its data decodes into.
EVENT_TYPES: Final[dict[str, type[Any]]] = {
    **{f"response.{s}": ResponseEvent for s in (*_RESPONSE, "cancelled")},
    "response.output_item.added": ItemEvent,
    "response.output_item.done": ItemEvent,
    "response.output_text.delta": TextDeltaEvent,
    "response.output_text.done": TextDoneEvent,
    "response.function_call_arguments.done": ArgumentsDoneEvent,
}
_DECODERS: Final = {name: msgspec.json.Decoder(t) for name, t in EVENT_TYPES.items()}


class _Head(Struct):
    """What every event has, read when the SSE ``event:`` line is missing or unknown."""

    type: str = ""
    sequence_number: int | None = None
    message: str = ""
    code: str | None = None
    param: str | None = None
    error: Any = None


_HEAD: Final = msgspec.json.Decoder(_Head)


def _stream_error(head: _Head, data: bytes, status: int, request_id: str | None) -> Exception:
    message, code, param, type_ = head.message, head.code, head.param, None
    if isinstance(head.error, dict):  # the ``{"error": {...}}`` shape
        message = str(head.error.get("message") or message)
        code = head.error.get("code") or code
        type_ = head.error.get("type")
    return errors.StreamError(
        message or transport.excerpt(data) or "error event without a message",
        status=status,
        type=type_,
        code=code if isinstance(code, str) else None,
        param=param,
        request_id=request_id,
    )


def decode_event(
    message: sse.SSEMessage, *, status: int = 200, request_id: str | None = None
) -> ServerEvent | None:
    """The event for one SSE frame; None at the end of the stream (``[DONE]``).

    An ``error`` event raises ``StreamError``; a known event whose data does not fit its struct
    raises ``DecodeError`` naming the path.
    """
    name, data = message.event, message.data
    if data.startswith(b"[DONE]") or name == "done":
        return None
    decoder = _DECODERS.get(name)
    if decoder is None:
        try:
            head = _HEAD.decode(data)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise errors.DecodeError(f"{name} event: {exc}") from exc
        if name == "error" or head.type == "error":
            raise _stream_error(head, data, status, request_id)
        decoder = _DECODERS.get(head.type)
        if decoder is None:
            return UnknownEvent(
                type=head.type or name, sequence_number=head.sequence_number, data=data
            )
        name = head.type
    try:
        event: ServerEvent = decoder.decode(data)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        raise errors.DecodeError(f"{name} event: {exc}") from exc
    return event


class ResponseStream(sse.SSEReader[ServerEvent]):
    """Async iterator over the events of one SSE response; ends at ``[DONE]`` or a clean EOF.

    ``last_sequence`` is the highest ``sequence_number`` seen (where a resume starts after).
    Owned by the client's stream context manager, which releases the response on exit.
    """

    def __init__(
        self,
        response: aiohttp.ClientResponse | None,
        *,
        endpoint: str = "stream_response",
        starting_after: int | None = None,
    ) -> None:
        super().__init__(response, endpoint=endpoint)
        self.last_sequence = starting_after

    def decode(self, message: sse.SSEMessage) -> ServerEvent | None:
        return decode_event(message, status=self.status, request_id=self.request_id)

    def __aiter__(self) -> ResponseStream:
        return self

    async def __anext__(self) -> ServerEvent:
        while True:
            event = await self.next_event()
            seq = event.sequence_number
            if seq is not None:
                if self.last_sequence is not None and seq <= self.last_sequence:
                    continue  # already seen (a server replaying around a resume point)
                self.last_sequence = seq
            return event

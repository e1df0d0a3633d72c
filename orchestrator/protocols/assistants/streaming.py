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
from orchestrator.http import transport
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


# --- SSE framing -----------------------------------------------------------------------------


class SSEMessage(Struct, frozen=True):
    """One dispatched SSE frame: the ``event`` name (default ``message``) and its ``data``."""

    event: str
    data: bytes


class SSEDecoder:
    """Incremental SSE parser (WHATWG rules): feed it chunks split anywhere.

    Lines end in LF, CRLF or CR; multi-line ``data`` joins with LF; ``:`` comments, ``id`` and
    ``retry`` are ignored; a blank line dispatches; a frame without data is dropped.

    Each byte is searched for line ends once, when its chunk arrives: the unfinished last line
    is kept as a list of pieces and joined once it ends, so a 4 MiB event costs linear time
    whatever the chunk sizes (``scanned`` counts the bytes searched).
    """

    __slots__ = ("_data", "_event", "_pending", "_skip_lf", "_started", "scanned")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # pieces of the line not ended yet
        self._skip_lf = False  # the last chunk ended in CR: a leading LF is its pair
        self._started = False
        self._event: str | None = None
        self._data: list[bytes] = []
        #: Bytes searched for line ends so far: at most twice the bytes fed.
        self.scanned = 0

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        """Parse a chunk; return the frames it completed."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            chunk = chunk.removeprefix(b"\n")
        if not chunk:
            return []
        self.scanned += len(chunk)  # the search for the last line end
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r"))
        if end < 0:  # no line ends here: one more piece of the pending line
            self._pending.append(chunk)
            return []
        self._skip_lf = end == len(chunk) - 1 and chunk[end] == 0x0D
        head, rest = chunk[: end + 1], chunk[end + 1 :]
        if self._pending:
            self._pending.append(head)
            head = b"".join(self._pending)
        self._pending = [rest] if rest else []
        self.scanned += len(head)  # the split into lines: each byte once, when its line ends
        # only ``head`` is split; it ends in a line end, so the last piece is always empty
        lines = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        lines.pop()
        if not self._started:
            self._started = True
            lines[0] = lines[0].removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM may open the stream
        out: list[SSEMessage] = []
        for line in lines:
            frame = self._line(line)
            if frame is not None:
                out.append(frame)
        return out

    def _line(self, line: bytes) -> SSEMessage | None:
        if not line:
            data, event = self._data, self._event
            self._data, self._event = [], None
            if not data:
                return None
            return SSEMessage(event or "message", b"\n".join(data))
        if line.startswith(b":"):
            return None
        field, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        return None  # id, retry and unknown fields carry nothing we use


class EventStream:
    """Async iterator over the events of one SSE response; ends at ``done`` or a clean EOF.

    Owned by the client's stream context manager, which releases the response on exit.
    """

    def __init__(
        self, response: aiohttp.ClientResponse | None, *, endpoint: str = "stream"
    ) -> None:
        self._response = response
        self._endpoint = endpoint
        self._decoder = SSEDecoder()
        self._pending: collections.deque[SSEMessage] = collections.deque()
        self._ready: collections.deque[ServerEvent] = collections.deque()
        self._finished = response is None
        self.status = response.status if response is not None else 200
        self.request_id = response.headers.get("x-request-id") if response is not None else None

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

    @property
    def finished(self) -> bool:
        """The stream ended (``done``, EOF or an error)."""
        return self._finished

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ServerEvent:
        if self._ready:
            return self._ready.popleft()
        while True:
            while not self._pending:
                response = self._response
                if self._finished or response is None:
                    raise StopAsyncIteration
                await self._read(response)
            message = self._pending.popleft()
            try:
                event = decode_event(message, status=self.status, request_id=self.request_id)
            except errors.StreamError:
                self._finish()
                raise
            if event is None:
                self._finish()
                raise StopAsyncIteration
            return event

    def _finish(self) -> None:
        self._finished = True
        self._pending.clear()

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        try:
            chunk = await response.content.readany()
        except (TimeoutError, aiohttp.ClientError) as exc:
            self._finish()
            raise transport.connection_error(self._endpoint, exc) from exc
        if not chunk:
            # A clean end without ``done``: an unterminated last frame is dropped (SSE rules).
            self._finish()
            return
        self._pending.extend(self._decoder.feed(chunk))

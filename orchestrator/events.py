"""What the driver reports: one tagged union of frozen structs, and how subscribers get them.

The same event object goes to a callback, an async iterator, a log line or a queue: every event
is JSON-encodable (``msgspec.json.encode(event)`` gives ``{"type": "run.status_changed", ...}``).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import msgspec

from orchestrator.protocols import base
from orchestrator.protocols.assistants import deltas, models
from orchestrator.protocols.responses import wire

__all__ = [
    "Event",
    "EventHandler",
    "MessageDelta",
    "OutputsSubmitted",
    "ResponseCreated",
    "ResponseFinished",
    "ResponseStatusChanged",
    "RunAdopted",
    "RunCreated",
    "RunEvent",
    "RunFinished",
    "ServerToolObserved",
    "StatusChanged",
    "StepCompleted",
    "StepDelta",
    "StreamFallback",
    "Subscribers",
    "ToolApprovalDecided",
    "ToolCallFinished",
    "ToolCallsRequested",
    "ToolRoundRequested",
    "UnknownStatus",
    "decode_event",
    "encode_event",
]

log = logging.getLogger(__name__)


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Fields every event has."""

    #: The run the event is about.
    run_id: str
    thread_id: str
    #: Unix time when the event was made.
    at: float = msgspec.field(default_factory=time.time)

    @property
    def type(self) -> str:
        """The event's tag, as in its JSON: ``run.created``, ``run.status_changed``, ..."""
        return str(self.__struct_config__.tag)


class RunCreated(Event, frozen=True, kw_only=True, tag="run.created"):
    """The driver created the run."""

    run: models.Run


class RunAdopted(Event, frozen=True, kw_only=True, tag="run.adopted"):
    """The driver took over a run created elsewhere (or resumed one it created before)."""

    run: models.Run


class StatusChanged(Event, frozen=True, kw_only=True, tag="run.status_changed"):
    """The run moved from ``previous`` to ``current``."""

    previous: str | None
    current: str
    run: models.Run


class UnknownStatus(Event, frozen=True, kw_only=True, tag="run.unknown_status"):
    """The server reported a status this code does not know; the driver keeps waiting."""

    status: str


class ToolCallsRequested(Event, frozen=True, kw_only=True, tag="tool_calls.requested"):
    """The run requires action; ``reused``: call ids answered from the ledger, not run again."""

    calls: list[models.RequiredToolCall]
    reused: list[str] = []


class ToolCallFinished(Event, frozen=True, kw_only=True, tag="tool_call.finished"):
    """One tool call finished; on failure ``output`` holds the error output sent to the model."""

    tool_call_id: str
    name: str
    output: str
    error_type: str | None = None
    error_message: str | None = None
    duration: float = 0.0


class OutputsSubmitted(Event, frozen=True, kw_only=True, tag="tool_outputs.submitted"):
    """All outputs of one ``requires_action`` went to the server in one request."""

    outputs: list[models.ToolOutput]


class StepCompleted(Event, frozen=True, kw_only=True, tag="step.completed"):
    """A run step completed (stream mode, or poll mode with steps fetched)."""

    step: models.RunStep


class StepDelta(Event, frozen=True, kw_only=True, tag="step.delta"):
    """A fragment of a run step as the model writes it (stream mode): a tool call's name and
    arguments, code interpreter input and logs. Fragments of one call share its ``index``."""

    step_id: str
    delta: deltas.RunStepDeltaBody


class MessageDelta(Event, frozen=True, kw_only=True, tag="message.delta"):
    """A piece of the assistant's message text, to forward to a user as it comes.

    Stream mode: each fragment as the server sends it. Poll mode: each message whole, in one
    event, before ``RunFinished``. Either way the pieces of one ``message_id``, joined, are its
    text.
    """

    message_id: str
    text: str


class StreamFallback(Event, frozen=True, kw_only=True, tag="stream.fallback"):
    """The stream broke or ended early; the driver goes on by polling from the last known state."""

    reason: str


class ToolApprovalDecided(Event, frozen=True, kw_only=True, tag="tool_approval.decided"):
    """Foundry: an MCP call awaiting approval was allowed or denied."""

    tool_call_id: str
    server_label: str
    name: str
    approve: bool
    #: Who decided: ``policy``, ``hook``, ``human`` (``orchestrator approve``) or ``ledger``
    #: (decided before a restart, read back, never decided again).
    source: str
    reason: str | None = None


class ServerToolObserved(Event, frozen=True, kw_only=True, tag="server_tool.observed"):
    """Foundry: the service ran a tool of its own (``mcp``, ``bing_grounding``, ``openapi``...)
    or reported an activity (``mcp_list_tools``); reported, never executed here."""

    step_id: str
    #: The tool call's or activity's type, as sent.
    tool_type: str
    #: The tool call's or activity's id.
    item_id: str
    #: The step's type: ``tool_calls`` or ``activities``.
    step_type: str = "tool_calls"
    #: The MCP server's label, for ``mcp`` calls and activities.
    server_label: str | None = None
    #: The MCP tool's name, for ``mcp`` calls.
    name: str | None = None


class RunFinished(Event, frozen=True, kw_only=True, tag="run.finished"):
    """The run reached a terminal state (``outcome`` says why when the driver ended it)."""

    run: models.Run
    #: The run's final status, or ``timed_out`` / ``tool_failed`` when the driver cancelled it.
    outcome: str
    reply: str | None = None


class ResponseCreated(Event, frozen=True, kw_only=True, tag="response.created"):
    """A response of a Responses chain exists: created, or taken over (``adopted``) after a
    restart or an ambiguous create. ``run_id`` is the response id, ``thread_id`` the chain's."""

    response: wire.Response
    adopted: bool = False


class ResponseStatusChanged(Event, frozen=True, kw_only=True, tag="response.status_changed"):
    """A response moved from ``previous`` to ``current``."""

    previous: str | None
    current: str
    response: wire.Response


class ToolRoundRequested(Event, frozen=True, kw_only=True, tag="tool_round.requested"):
    """A tool round to answer (either protocol); ``reused``: ids answered from the ledger."""

    calls: list[base.ToolCall]
    reused: list[str] = []


class ResponseFinished(Event, frozen=True, kw_only=True, tag="response.finished"):
    """A Responses chain ended; ``response`` is its last response."""

    response: wire.Response
    #: The last response's status, or ``timed_out`` / ``tool_failed`` when the driver ended it.
    outcome: str
    reply: str | None = None
    rounds: int = 0


RunEvent: TypeAlias = (
    RunCreated
    | RunAdopted
    | StatusChanged
    | UnknownStatus
    | ToolCallsRequested
    | ToolCallFinished
    | OutputsSubmitted
    | StepCompleted
    | StepDelta
    | MessageDelta
    | StreamFallback
    | ToolApprovalDecided
    | ServerToolObserved
    | RunFinished
    | ResponseCreated
    | ResponseStatusChanged
    | ToolRoundRequested
    | ResponseFinished
)

EventHandler: TypeAlias = Callable[[Any], Awaitable[None] | None]
E = TypeVar("E", bound=Event)

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[RunEvent] = msgspec.json.Decoder(RunEvent)


def encode_event(event: Event) -> bytes:
    """JSON for logs and queues."""
    return _encoder.encode(event)


def decode_event(data: bytes) -> RunEvent:
    """The event back from ``encode_event``."""
    return _decoder.decode(data)


class Subscribers:
    """Callbacks by event type. A failing callback is logged; it never stops the run."""

    def __init__(self) -> None:
        self._handlers: list[tuple[tuple[type[Event], ...], EventHandler]] = []

    def add(self, handler: EventHandler, *types: type[Event]) -> None:
        """Call ``handler`` for events of ``types`` (all events when none are given)."""
        self._handlers.append((types or (Event,), handler))

    def remove(self, handler: EventHandler) -> None:
        """Stop calling ``handler``."""
        self._handlers = [(t, h) for t, h in self._handlers if h is not handler]

    def __bool__(self) -> bool:
        return bool(self._handlers)

    async def emit(self, event: Event) -> None:
        """Deliver ``event`` to every matching handler, in registration order."""
        for types, handler in self._handlers:
            if not isinstance(event, types):
                continue
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event handler %r failed", handler, extra={"run_id": event.run_id})

"""The narrow interface between the run loop and a wire protocol, and what both sides share.

A protocol session follows one logical conversation with the server (an Assistants run; a
chain of Responses linked by ``previous_response_id``) and offers five operations: ``open``
(create, or adopt what the ledger recorded), ``observe`` (the next state: a poll or stream
events), ``answer`` (one tool round's outputs), ``cancel``, and ``recover`` (find an object whose
creation outcome is unknown, by the client-generated id in its metadata). Policy (deadlines,
tools, the ledger, events, when to cancel) lives in the loop above it (``protocol_loop``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import msgspec

__all__ = ["Observation", "ProtocolSession", "ToolCall", "ToolOutput"]

ObjT = TypeVar("ObjT")


class ToolCall(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A call the model asks us to make, whatever protocol carried it."""

    #: The id its output answers (Assistants ``tool_call.id``, Responses ``call_id``).
    id: str
    name: str
    #: A JSON *string* of arguments, as the model wrote it.
    arguments: str = ""
    #: ``function`` unless the protocol asked for a kind of call we cannot make.
    type: str = "function"


class ToolOutput(msgspec.Struct, frozen=True, gc=False):
    """One output to send back: the call it answers and its text."""

    tool_call_id: str
    output: str


class Observation(msgspec.Struct, Generic[ObjT], frozen=True, kw_only=True):
    """The protocol's object as last seen, in terms the loop acts on."""

    #: The protocol's own object (``wire.Response``, ``models.Run``).
    obj: ObjT
    #: Its id (the ledger keys tool calls by it).
    id: str
    status: str
    #: The status has a meaning for the protocol (an unknown one is reported and waited out).
    known: bool = True
    #: A tool round waiting for our outputs.
    calls: list[ToolCall] = []
    #: Over, with nothing left to answer.
    done: bool = False
    #: The assistant's reply text, once done.
    reply: str | None = None


class ProtocolSession(Protocol[ObjT]):
    """One conversation with the server, driven by the loop."""

    @property
    def scope(self) -> str:
        """The id events carry as ``thread_id``."""
        ...

    async def open(self) -> Observation[ObjT]:
        """Create the first object, or take over the one already recorded or recoverable."""
        ...

    async def observe(self, current: Observation[ObjT]) -> Observation[ObjT]:
        """Wait for the next state of ``current`` (poll or stream) and return it."""
        ...

    async def answer(
        self, current: Observation[ObjT], outputs: Sequence[ToolOutput]
    ) -> Observation[ObjT]:
        """Send one tool round's outputs; never sends a round the server already took."""
        ...

    async def cancel(self, current: Observation[ObjT]) -> Observation[ObjT] | None:
        """Ask the server to stop ``current``; its state after the request (None: unknown)."""
        ...

    async def recover(self, client_id: str) -> Observation[ObjT] | None:
        """The object created with ``client_id`` in its metadata, if the server has it."""
        ...

    def finished(self, last: Observation[ObjT], outcome: str, rounds: int) -> Any:
        """The event that reports the end (the protocol's own ``*Finished`` event)."""
        ...

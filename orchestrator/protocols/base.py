"""The narrow interface between the run loop and a wire protocol, and what both sides share.

A protocol session follows one logical conversation with the server (an Assistants run; a
chain of Responses linked by ``previous_response_id``) and offers five operations: ``open``
(create, or adopt what the ledger recorded), ``observe`` (the next state: a poll or stream
events), ``answer`` (one round's tool outputs and approval decisions), ``cancel``, and
``recover`` (find an object whose creation outcome is unknown, by the client-generated id in
its metadata). Policy (deadlines, tools, approvals, the ledger, when to cancel) lives in the
loop above it (``protocol_loop``); a session reports what only it sees (status changes, stream
fragments, steps) as events of its protocol.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import msgspec

__all__ = [
    "ABORT_LOOKUPS",
    "EXPIRY_GRACE",
    "ApprovalAnswer",
    "ApprovalCall",
    "Observation",
    "ProtocolSession",
    "ToolCall",
    "ToolOutput",
]

ObjT = TypeVar("ObjT")

#: Seconds after an object's ``expires_at`` we still wait for the server to end it itself.
EXPIRY_GRACE: Final = 30.0
#: Pauses between the looks for an object whose create was cut off in flight when driving
#: stopped (the server may apply it a moment later: a create is not always shielded).
ABORT_LOOKUPS: Final = (0.0, 0.25, 0.75)


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


class ApprovalCall(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A call of a server-side (MCP) tool that runs only once allowed."""

    #: The id a decision answers (Foundry's tool call id, Responses' approval request id).
    id: str
    server_label: str
    name: str
    #: The call's arguments as a JSON string.
    arguments: str = ""


class ApprovalAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A decision on one ``ApprovalCall``."""

    tool_call_id: str
    approve: bool
    #: Headers for the MCP server with this call (Foundry; never stored or logged).
    headers: dict[str, str] | None = None
    reason: str | None = None

    def __repr__(self) -> str:
        shown = "None" if self.headers is None else "{…}"
        return (
            f"ApprovalAnswer(tool_call_id={self.tool_call_id!r}, approve={self.approve}, "
            f"headers={shown}, reason={self.reason!r})"
        )


class Observation(msgspec.Struct, Generic[ObjT], frozen=True, kw_only=True):
    """The protocol's object as last seen, in terms the loop acts on."""

    #: The protocol's own object (``wire.Response``, ``models.Run``).
    obj: ObjT
    #: Its id (the ledger keys tool calls by it).
    id: str
    status: str
    #: A tool round waiting for our outputs.
    calls: list[ToolCall] = []
    #: MCP calls waiting for our decisions (answered in the same round as ``calls``).
    approvals: list[ApprovalCall] = []
    #: Unix time when the server gives the object up by itself (an Assistants run's
    #: ``expires_at``); tools must be done by then.
    expires_at: float | None = None
    #: Unix time after which waiting for the object makes no sense (its expiry plus a grace,
    #: or the protocol's usual lifetime when it shows none); None: no such bound.
    lifetime: float | None = None
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

    async def observe(self, current: Observation[ObjT], until: float) -> Observation[ObjT]:
        """Wait for the next state of ``current`` (poll or stream) and return it; by ``until``
        (Unix time) at the latest, after one last look. Unknown statuses are reported here
        (``UnknownStatus``, once each), as the session sees them."""
        ...

    async def answer(
        self,
        current: Observation[ObjT],
        outputs: Sequence[ToolOutput],
        approvals: Sequence[ApprovalAnswer],
        landed: Callable[[str], Awaitable[None]],
    ) -> Observation[ObjT]:
        """Send one round's outputs and decisions, awaiting ``landed`` with the id of the
        object that follows (the same run, or the next response) as soon as the server took
        them, before following it; never sends a round twice."""
        ...

    async def cancel(
        self, current: Observation[ObjT] | None, *, until: float, wait: bool
    ) -> Observation[ObjT] | None:
        """Stop the object (the session's latest view of it; ``current`` None: whatever an
        interrupted create may have made), all by ``until``. With ``wait``: follow it until it
        ends and return its last state (None: nothing known). Without: the state the cancel
        request answered (None: nothing was sent, the object being over or unknown)."""
        ...

    async def recover(self, client_id: str) -> Observation[ObjT] | None:
        """The object created with ``client_id`` in its metadata, if the server has it."""
        ...

    def requested(self, current: Observation[ObjT], reused: Sequence[str]) -> Any:
        """The event that reports a tool round (``reused``: ids answered from the ledger)."""
        ...

    def finished(self, last: Observation[ObjT], outcome: str, rounds: int) -> Any:
        """The event that reports the end (the protocol's own ``*Finished`` event)."""
        ...

"""msgspec structs for the Responses API wire format (``/responses``).

Lenient like the Assistants models: unknown keys are skipped, every field has a default, and the
output-item union is one flat struct keyed by its raw ``type`` string (``message``,
``function_call``, ``reasoning``, built-in tool calls, MCP calls and approval requests, or a type
unknown here), so a new item type decodes instead of failing. Fields whose shape differs between
item types (``output``, ``error``, ``action``...) stay untyped. ``Response.status`` is the raw
string; ``Status`` names the known ones.

Request bodies default every optional field to ``UNSET`` and encode only what the caller set.
"""

from __future__ import annotations

import enum
from typing import Any, Final

import msgspec
from msgspec import UNSET, Struct, UnsetType

from orchestrator import codec, errors
from orchestrator.protocols.assistants import models

__all__ = [
    "KNOWN_ITEM_TYPES",
    "AgentReference",
    "ContentPart",
    "CreateResponse",
    "IncompleteDetails",
    "InputItem",
    "OutputItem",
    "Response",
    "ResponseError",
    "Status",
    "Tool",
    "Usage",
]


class Status(enum.StrEnum):
    """The response statuses this code knows; ``Response.status`` may hold others."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    INCOMPLETE = "incomplete"
    CANCELLED = "cancelled"


TERMINAL: Final = frozenset({Status.COMPLETED, Status.FAILED, Status.INCOMPLETE, Status.CANCELLED})
_KNOWN_STATUSES: Final = frozenset(s.value for s in Status)

#: Output item types with a meaning here; others are reported once and left alone.
KNOWN_ITEM_TYPES: Final = frozenset(
    {
        "message",
        "function_call",
        "reasoning",
        "web_search_call",
        "file_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "computer_call",
        "local_shell_call",
        "custom_tool_call",
        "mcp_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
    }
)


class ResponseError(Struct, gc=False):
    """Why a response failed (``server_error``, ``rate_limit_exceeded``, ...)."""

    code: str | None = None
    message: str = ""


class IncompleteDetails(Struct, gc=False):
    """Why a response ended ``incomplete`` (``max_output_tokens``, ``content_filter``)."""

    reason: str | None = None


class Usage(Struct, gc=False):
    """Token counts of a finished response."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


class ContentPart(Struct, omit_defaults=True):
    """A part of a message or reasoning item: ``output_text``, ``refusal``, ``reasoning_text``,
    ``summary_text``, or a type unknown here."""

    type: str
    text: str | None = None
    refusal: str | None = None
    annotations: list[Any] | None = None


class OutputItem(Struct, kw_only=True, omit_defaults=True):
    """One entry of ``Response.output``; which fields are set depends on ``type``."""

    type: str
    id: str | None = None
    status: str | None = None
    #: ``message``: ``assistant``.
    role: str | None = None
    #: ``message``: text and refusal parts; ``reasoning``: reasoning text.
    content: list[ContentPart] | None = None
    #: ``reasoning``: summary parts.
    summary: list[ContentPart] | None = None
    #: ``function_call``: the id a ``function_call_output`` answers.
    call_id: str | None = None
    #: ``function_call`` / ``mcp_call`` / ``mcp_approval_request``: the tool's name.
    name: str | None = None
    #: ``function_call`` / ``mcp_*``: a JSON *string* of arguments.
    arguments: str | None = None
    #: ``mcp_*``: which MCP server.
    server_label: str | None = None
    approval_request_id: str | None = None
    output: Any = None
    error: Any = None

    @property
    def text(self) -> str:
        """The text parts of a message joined ("" for other items)."""
        if self.type != "message" or not self.content:
            return ""
        return "".join(p.text or "" for p in self.content if p.type == "output_text")

    @property
    def known(self) -> bool:
        """The type has a meaning here."""
        return self.type in KNOWN_ITEM_TYPES


class Conversation(Struct, gc=False):
    """The conversation a response belongs to."""

    id: str


class Response(Struct, kw_only=True):
    """A response (``object: "response"``)."""

    id: str
    object: str = "response"
    created_at: float = 0.0
    #: None when the server left it out (reported as an unknown status).
    status: str | None = None
    background: bool | None = None
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str = ""
    output: list[OutputItem] = []
    previous_response_id: str | None = None
    conversation: Conversation | None = None
    metadata: dict[str, str] | None = None
    usage: Usage | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    completed_at: float | None = None
    #: Echoed tools as raw JSON: decoded only when someone asks (polls skip the schemas).
    tools_json: msgspec.Raw = msgspec.field(name="tools", default=msgspec.Raw(b"[]"))

    def __post_init__(self) -> None:
        self.tools_json = self.tools_json.copy()  # a view into the whole body otherwise

    @property
    def known_status(self) -> Status | None:
        """The status as a ``Status``, or None for one unknown here."""
        return Status(self.status) if self.status in _KNOWN_STATUSES else None

    @property
    def is_terminal(self) -> bool:
        """The response will not change again."""
        return self.status in TERMINAL

    @property
    def function_calls(self) -> list[OutputItem]:
        """The ``function_call`` items to answer (in output order)."""
        return [i for i in self.output if i.type == "function_call" and i.call_id]

    @property
    def approval_requests(self) -> list[OutputItem]:
        """The ``mcp_approval_request`` items waiting for an answer."""
        return [i for i in self.output if i.type == "mcp_approval_request" and i.id]

    @property
    def text(self) -> str | None:
        """The assistant's message text, all message items joined; None when there is none."""
        texts = [i.text for i in self.output if i.type == "message" and i.role != "user"]
        joined = "\n".join(t for t in texts if t)
        return joined or None


# --- request bodies ---------------------------------------------------------------------------


class Tool(Struct, kw_only=True, omit_defaults=True):
    """A tool in a request: ``function`` (flat, unlike the Assistants ``{"function": {...}}``),
    a built-in (``web_search``, ``file_search``, ``mcp``...) or a type unknown here."""

    type: str
    name: str | UnsetType = UNSET
    description: str | UnsetType = UNSET
    parameters: dict[str, Any] | UnsetType = UNSET
    strict: bool | None | UnsetType = UNSET
    #: ``mcp``: which server, and where it is.
    server_label: str | UnsetType = UNSET
    server_url: str | UnsetType = UNSET
    require_approval: str | dict[str, Any] | UnsetType = UNSET

    @classmethod
    def function(cls, definition: models.FunctionDefinition) -> Tool:
        """The Responses form of an Assistants function definition."""
        return cls(
            type="function",
            name=definition.name,
            description=definition.description or UNSET,
            parameters=definition.parameters if definition.parameters is not None else UNSET,
            strict=definition.strict if definition.strict is not None else UNSET,
        )


class InputItem(Struct, kw_only=True, omit_defaults=True):
    """An input item: ``message``, ``function_call_output``, ``mcp_approval_response``..."""

    #: Left out for a plain message (the API's "easy" input message form).
    type: str = "message"
    role: str | UnsetType = UNSET
    content: str | list[Any] | UnsetType = UNSET
    call_id: str | UnsetType = UNSET
    output: str | list[Any] | UnsetType = UNSET
    approval_request_id: str | UnsetType = UNSET
    approve: bool | UnsetType = UNSET
    reason: str | UnsetType = UNSET

    @classmethod
    def message(cls, text: str, role: str = "user") -> InputItem:
        """A message with plain text content."""
        return cls(type="message", role=role, content=text)

    @classmethod
    def function_output(cls, call_id: str, output: str) -> InputItem:
        """The answer to one ``function_call``."""
        return cls(type="function_call_output", call_id=call_id, output=output)

    @classmethod
    def approval(cls, request_id: str, approve: bool, reason: str | None = None) -> InputItem:
        """The answer to one ``mcp_approval_request``."""
        return cls(
            type="mcp_approval_response",
            approval_request_id=request_id,
            approve=approve,
            reason=UNSET if reason is None else reason,
        )


class AgentReference(Struct, omit_defaults=True, tag="agent_reference", tag_field="type"):
    """Foundry's new agents: the agent a response runs as."""

    name: str
    version: str | UnsetType = UNSET


class CreateResponse(Struct, kw_only=True, omit_defaults=True):
    """Body of ``POST /responses``."""

    model: str | UnsetType = UNSET
    input: str | list[InputItem] | UnsetType = UNSET
    instructions: str | None | UnsetType = UNSET
    tools: list[Tool] | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    previous_response_id: str | UnsetType = UNSET
    conversation: str | dict[str, Any] | UnsetType = UNSET
    agent: AgentReference | UnsetType = UNSET
    background: bool | UnsetType = UNSET
    store: bool | UnsetType = UNSET
    stream: bool | UnsetType = UNSET
    metadata: dict[str, str] | UnsetType = UNSET
    max_output_tokens: int | UnsetType = UNSET
    max_tool_calls: int | UnsetType = UNSET
    temperature: float | UnsetType = UNSET
    top_p: float | UnsetType = UNSET
    truncation: str | UnsetType = UNSET
    reasoning: dict[str, Any] | UnsetType = UNSET
    text: dict[str, Any] | UnsetType = UNSET
    include: list[str] | UnsetType = UNSET
    user: str | UnsetType = UNSET


def decode_response(data: bytes | str) -> Response:
    """A response from JSON; a bad payload raises ``DecodeError`` naming the path."""
    try:
        return codec.decoder(Response).decode(data)
    except msgspec.DecodeError as exc:
        raise errors.DecodeError(f"Response: {exc}") from exc

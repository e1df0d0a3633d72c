"""msgspec structs for the Assistants runs wire format (v2, and the v1 shapes still seen).

Lenient with the server: unknown keys are skipped, every nullable or later-added field has a
default, and "union" objects (tools, tool calls, step details, outputs) are flat structs keyed by
a raw ``type`` string with one optional payload field per known type, so a type this code has
never heard of decodes instead of failing. ``Run.status`` stays the raw string for the same
reason; ``RunStatus`` names the known ones.

Request bodies default every optional field to ``UNSET`` and encode only what the caller set.

Structs that hold only scalars (or other such structs) set ``gc=False``: they cannot be part of
a reference cycle, and leaving them untracked makes decoding and every collector pass cheaper
(bench/decode.py; thousands of in-flight runs hold many of them).
"""

from __future__ import annotations

import enum
from typing import Any, Final, Generic, Literal, TypeVar

import msgspec
from msgspec import UNSET, Struct, UnsetType

from orchestrator import errors
from orchestrator.codec import (
    DECODE_FAILURES,
    ErrorBody,
    ErrorResponse,
    decode,
    describe,
    encode,
)

__all__ = [
    "DECODE_FAILURES",
    "Assistant",
    "CodeInterpreterCall",
    "CodeInterpreterOutput",
    "CreateAssistant",
    "CreateRun",
    "CreateThread",
    "CreateThreadAndRun",
    "ErrorBody",
    "ErrorResponse",
    "FileSearchCall",
    "FileSearchResult",
    "FileSearchSettings",
    "FunctionCall",
    "FunctionDefinition",
    "IncompleteDetails",
    "LastError",
    "ListRunStepsResponse",
    "ListRunsResponse",
    "Message",
    "MessageContent",
    "MessageCreation",
    "MessageRequest",
    "ModifyRun",
    "RankingOptions",
    "RequiredAction",
    "RequiredToolCall",
    "ResponseFormat",
    "Run",
    "RunStatus",
    "RunStep",
    "StepActivity",
    "StepDetails",
    "StepFunction",
    "StepToolCall",
    "SubmitToolApprovals",
    "SubmitToolOutputs",
    "SubmitToolOutputsAction",
    "Thread",
    "ToolApproval",
    "ToolChoice",
    "ToolDefinition",
    "ToolOutput",
    "TruncationStrategy",
    "Usage",
    "decode",
    "describe",
    "encode",
]


class RunStatus(enum.StrEnum):
    """The run statuses this code knows; ``Run.status`` may hold others."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    REQUIRES_ACTION = "requires_action"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    FAILED = "failed"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        """The run is over and will not change again."""
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """The server is working: keep watching (``requires_action`` waits for us instead)."""
        return self in ACTIVE_STATUSES

    @property
    def locks_thread(self) -> bool:
        """A run in this status blocks new runs and messages on its thread."""
        return self in ACTIVE_STATUSES or self is RunStatus.REQUIRES_ACTION


TERMINAL_STATUSES: Final = frozenset(
    {
        RunStatus.CANCELLED,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
        RunStatus.INCOMPLETE,
        RunStatus.EXPIRED,
    }
)
ACTIVE_STATUSES: Final = frozenset({RunStatus.QUEUED, RunStatus.IN_PROGRESS, RunStatus.CANCELLING})
_KNOWN_STATUSES: Final = frozenset(s.value for s in RunStatus)


# --- small shared pieces -------------------------------------------------------------------


class LastError(Struct, gc=False):
    """Why a run or step failed: ``server_error``, ``rate_limit_exceeded``, ``invalid_prompt``..."""

    code: str
    message: str = ""


class IncompleteDetails(Struct, gc=False):
    """Which token budget ended an ``incomplete`` run."""

    reason: str | None = None


class Usage(Struct, gc=False):
    """Token counts of a finished run or step."""

    completion_tokens: int = 0
    prompt_tokens: int = 0
    total_tokens: int = 0


class TruncationStrategy(Struct, gc=False):
    """How the thread is cut to fit the context."""

    # Not omit_defaults: ``type`` is required on the wire even when it is the default "auto".

    type: str = "auto"
    last_messages: int | None = None


class NamedFunction(Struct, gc=False):
    """A function named in ``tool_choice``."""

    name: str


class ToolChoice(Struct, omit_defaults=True, gc=False):
    """The object form of ``tool_choice``: force one tool."""

    type: str
    function: NamedFunction | None = None


class JsonSchemaFormat(Struct, omit_defaults=True):
    """``response_format.json_schema``."""

    name: str
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormat(Struct, omit_defaults=True):
    """The object form of ``response_format``: ``text``, ``json_object`` or ``json_schema``."""

    #: Foundry's spec lets it be null (``AgentsResponseFormat.type`` is optional).
    type: str | None = None
    json_schema: JsonSchemaFormat | None = None


# --- tool definitions ----------------------------------------------------------------------


class FunctionDefinition(Struct, omit_defaults=True):
    """A function the model may call."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class RankingOptions(Struct, omit_defaults=True, gc=False):
    """File-search ranking settings."""

    ranker: str | None = None
    score_threshold: float | None = None


class FileSearchSettings(Struct, omit_defaults=True, gc=False):
    """Settings of a ``file_search`` tool."""

    max_num_results: int | None = None
    ranking_options: RankingOptions | None = None


class ToolDefinition(Struct, omit_defaults=True):
    """A tool on an assistant or run: ``function``, ``code_interpreter``, ``file_search``,
    v1 ``retrieval``, or a type unknown here (kept by name)."""

    type: str
    function: FunctionDefinition | None = None
    file_search: FileSearchSettings | None = None

    @classmethod
    def for_function(cls, function: FunctionDefinition) -> ToolDefinition:
        """A ``function`` tool."""
        return cls(type="function", function=function)


# --- required_action -----------------------------------------------------------------------

#: Foundry's ``required_action.type`` for MCP tool calls that wait for approval.
APPROVAL_ACTION: Final = "submit_tool_approval"


class FunctionCall(Struct, gc=False):
    """A call the model asks us to make: a name and a JSON *string* of arguments."""

    name: str
    arguments: str = ""


class RequiredToolCall(Struct, gc=False):
    """One entry of ``required_action.submit_tool_outputs.tool_calls`` (a ``function``), or of
    Foundry's ``submit_tool_approval.tool_calls`` (an ``mcp`` call awaiting approval)."""

    id: str
    type: str = "function"
    function: FunctionCall | None = None
    # Foundry's ``mcp`` calls only (UNSET: absent, so other calls encode as before).
    #: ``mcp``: the tool's name on its server.
    name: str | UnsetType = UNSET
    #: ``mcp``: the arguments as a JSON string.
    arguments: str | UnsetType = UNSET
    #: ``mcp``: the label of the MCP server the tool belongs to.
    server_label: str | UnsetType = UNSET


class SubmitToolOutputsAction(Struct):
    """The calls to answer."""

    tool_calls: list[RequiredToolCall] = []


class RequiredAction(Struct):
    """What a ``requires_action`` run waits for: ``submit_tool_outputs``, or Foundry's
    ``submit_tool_approval`` (MCP calls to allow or deny)."""

    type: str = "submit_tool_outputs"
    submit_tool_outputs: SubmitToolOutputsAction | None = None
    submit_tool_approval: SubmitToolOutputsAction | UnsetType = UNSET

    @property
    def approval_calls(self) -> list[RequiredToolCall]:
        """The calls awaiting approval (empty unless ``submit_tool_approval``)."""
        sta = self.submit_tool_approval
        if isinstance(sta, UnsetType) or self.type != APPROVAL_ACTION:
            return []
        return sta.tool_calls

    @property
    def tool_calls(self) -> list[RequiredToolCall]:
        """The calls to answer (empty for an action type unknown here)."""
        sto = self.submit_tool_outputs
        return sto.tool_calls if sto is not None else []


# --- Run -----------------------------------------------------------------------------------


class Run(Struct, kw_only=True):
    """A run (``object: "thread.run"``)."""

    id: str
    object: str = "thread.run"
    created_at: int = 0
    thread_id: str
    assistant_id: str = ""
    status: str
    required_action: RequiredAction | None = None
    last_error: LastError | None = None
    expires_at: int | None = None
    started_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str = ""
    instructions: str | None = None
    #: The run's ``tools`` as raw JSON. Every run response echoes each function's whole
    #: parameter schema, which would cost most of a poll's decode time and is needed only
    #: when someone reads it: ``tools`` decodes it on demand.
    tools_json: msgspec.Raw = msgspec.field(name="tools", default=msgspec.Raw(b"[]"))
    metadata: dict[str, str] | None = None
    usage: Usage | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_prompt_tokens: int | None = None
    max_completion_tokens: int | None = None
    truncation_strategy: TruncationStrategy | None = None
    tool_choice: str | ToolChoice | None = None
    parallel_tool_calls: bool = True
    response_format: str | ResponseFormat | None = None
    #: v1 only.
    file_ids: list[str] = []
    #: Foundry: resources the run's tools use (kept as sent; not interpreted here).
    tool_resources: dict[str, Any] | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        # A decoded Raw is a view into the whole response body; keep only its own bytes.
        self.tools_json = self.tools_json.copy()

    @property
    def tools(self) -> list[ToolDefinition]:
        """The run's tools, decoded from ``tools_json`` (``DecodeError`` if malformed)."""
        raw = self.tools_json
        if bytes(raw).strip() == b"null":
            return []
        try:
            return _tools_decoder.decode(raw)
        except DECODE_FAILURES as exc:
            raise errors.DecodeError(f"Run: {describe(exc)}".replace("`$", "`$.tools", 1)) from exc

    @property
    def known_status(self) -> RunStatus | None:
        """The status as a ``RunStatus``, or None for a status unknown here."""
        return RunStatus(self.status) if self.status in _KNOWN_STATUSES else None

    @property
    def is_terminal(self) -> bool:
        """The run is over."""
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        """The server is working on the run (queued, in progress, cancelling)."""
        return self.status in ACTIVE_STATUSES

    @property
    def requires_action(self) -> bool:
        """The run waits for tool outputs."""
        return self.status == RunStatus.REQUIRES_ACTION

    @property
    def tool_calls(self) -> list[RequiredToolCall]:
        """The calls to answer when the run requires action, else empty."""
        if self.status != RunStatus.REQUIRES_ACTION or self.required_action is None:
            return []
        return self.required_action.tool_calls

    @property
    def approval_calls(self) -> list[RequiredToolCall]:
        """Foundry: the MCP calls awaiting approval when the run requires action, else empty."""
        if self.status != RunStatus.REQUIRES_ACTION or self.required_action is None:
            return []
        return self.required_action.approval_calls


# --- RunStep -------------------------------------------------------------------------------


class MessageCreation(Struct, gc=False):
    """``step_details.message_creation``."""

    message_id: str = ""


class ImageFile(Struct, gc=False):
    """A file produced by a tool."""

    #: None only in stream deltas, where the SDK (``Optional[str]``) allows null.
    file_id: str | None = ""


class CodeInterpreterOutput(Struct, omit_defaults=True, gc=False):
    """An output of code interpreter: ``logs`` or ``image`` (or an unknown type)."""

    type: str
    logs: str | None = None
    image: ImageFile | None = None


class CodeInterpreterCall(Struct):
    """What code interpreter ran and produced."""

    input: str = ""
    outputs: list[CodeInterpreterOutput] = []


class FileSearchContent(Struct, omit_defaults=True, gc=False):
    """Text of a file-search hit, when asked for with ``include[]``."""

    type: str = "text"
    text: str | None = None


class FileSearchResult(Struct, omit_defaults=True):
    """One file-search hit."""

    file_id: str = ""
    file_name: str = ""
    score: float = 0.0
    content: list[FileSearchContent] | None = None


class FileSearchCall(Struct, omit_defaults=True):
    """What file search did."""

    ranking_options: RankingOptions | None = None
    results: list[FileSearchResult] | None = None


class StepFunction(Struct, gc=False):
    """A function call inside a step; ``output`` is null until submitted."""

    name: str = ""
    arguments: str = ""
    output: str | None = None


class StepToolCall(Struct, omit_defaults=True):
    """A tool call in a ``tool_calls`` step, by ``type``: ``function``, ``code_interpreter``,
    ``file_search``, v1 ``retrieval``, Foundry's server-side tools (``mcp``, ``openapi``,
    ``bing_grounding``, ``azure_ai_search``, ``connected_agent``...), or unknown. The details of
    server-side tools are kept as sent: they are observed and reported, never executed here."""

    id: str
    type: str
    function: StepFunction | None = None
    code_interpreter: CodeInterpreterCall | None = None
    file_search: FileSearchCall | None = None
    retrieval: dict[str, Any] | None = None
    #: ``mcp``: tool name, JSON arguments, output and server label (top-level on the wire).
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    server_label: str | None = None
    azure_ai_search: dict[str, Any] | None = None
    bing_grounding: dict[str, Any] | None = None
    bing_custom_search: dict[str, Any] | None = None
    openapi: dict[str, Any] | None = None
    azure_function: dict[str, Any] | None = None
    connected_agent: dict[str, Any] | None = None
    deep_research: dict[str, Any] | None = None
    fabric_dataagent: dict[str, Any] | None = None
    sharepoint_grounding: dict[str, Any] | None = None
    browser_automation: dict[str, Any] | None = None

    @property
    def server_side(self) -> bool:
        """Run by the service, not by us (anything but ``function``)."""
        return self.type != "function"


class StepActivity(Struct, omit_defaults=True):
    """An entry of an ``activities`` step (Foundry), e.g. ``mcp_list_tools``."""

    type: str
    id: str = ""
    server_label: str | None = None
    #: ``mcp_list_tools``: the functions the server offers, by name (kept as sent).
    tools: dict[str, Any] | None = None


class StepDetails(Struct, omit_defaults=True):
    """``message_creation``, ``tool_calls``, Foundry's ``activities`` (or an unknown type)."""

    type: str
    message_creation: MessageCreation | None = None
    tool_calls: list[StepToolCall] | None = None
    activities: list[StepActivity] | None = None


class RunStep(Struct, kw_only=True):
    """A step of a run (``object: "thread.run.step"``)."""

    id: str
    object: str = "thread.run.step"
    created_at: int = 0
    assistant_id: str = ""
    thread_id: str = ""
    run_id: str = ""
    type: str = ""
    status: str = ""
    step_details: StepDetails | None = None
    last_error: LastError | None = None
    expired_at: int | None = None
    cancelled_at: int | None = None
    failed_at: int | None = None
    completed_at: int | None = None
    metadata: dict[str, str] | None = None
    usage: Usage | None = None


# --- messages (what the orchestrator reads back as the reply) -------------------------------


class TextValue(Struct):
    """Text content of a message."""

    value: str = ""
    annotations: list[Any] = []


class MessageContent(Struct, omit_defaults=True):
    """A content part: ``text``, ``image_file``, ``image_url``, ``refusal`` or unknown."""

    type: str
    text: TextValue | None = None
    refusal: str | None = None
    image_file: dict[str, Any] | None = None
    image_url: dict[str, Any] | None = None


class Message(Struct, kw_only=True):
    """A thread message (``object: "thread.message"``)."""

    id: str
    object: str = "thread.message"
    created_at: int = 0
    thread_id: str = ""
    status: str | None = None
    role: str = "assistant"
    content: list[MessageContent] = []
    assistant_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, str] | None = None
    attachments: list[Any] | None = None
    completed_at: int | None = None
    incomplete_at: int | None = None
    #: ``{reason}``: content_filter, max_tokens, run_cancelled, run_expired, run_failed.
    incomplete_details: IncompleteDetails | None = None

    @property
    def text(self) -> str:
        """All text parts joined."""
        return "".join(c.text.value for c in self.content if c.text is not None)


# --- assistants and threads (the few non-run objects a worker creates) -----------------------


class Assistant(Struct, kw_only=True):
    """An assistant (``object: "assistant"``)."""

    id: str
    object: str = "assistant"
    created_at: int = 0
    name: str | None = None
    description: str | None = None
    model: str = ""
    instructions: str | None = None
    tools: list[ToolDefinition] = []
    metadata: dict[str, str] | None = None


class Thread(Struct, kw_only=True):
    """A thread (``object: "thread"``)."""

    id: str
    object: str = "thread"
    created_at: int = 0
    tool_resources: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None


# --- lists ---------------------------------------------------------------------------------

T = TypeVar("T")


class ListResponse(Struct, Generic[T]):
    """A page of a list endpoint."""

    data: list[T]
    object: str = "list"
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


ListRunsResponse = ListResponse[Run]
ListRunStepsResponse = ListResponse[RunStep]
ListMessagesResponse = ListResponse[Message]
ListAssistantsResponse = ListResponse[Assistant]


# --- request bodies ------------------------------------------------------------------------


class MessageRequest(Struct, omit_defaults=True):
    """A message to add (``additional_messages`` or ``thread.messages``)."""

    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]
    attachments: list[dict[str, Any]] | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class _RunParams(Struct, omit_defaults=True, kw_only=True):
    """Fields shared by create-run and create-thread-and-run."""

    assistant_id: str
    model: str | None | UnsetType = UNSET
    instructions: str | None | UnsetType = UNSET
    tools: list[ToolDefinition] | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    stream: bool | None | UnsetType = UNSET
    max_prompt_tokens: int | None | UnsetType = UNSET
    max_completion_tokens: int | None | UnsetType = UNSET
    truncation_strategy: TruncationStrategy | None | UnsetType = UNSET
    tool_choice: str | ToolChoice | None | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    response_format: str | ResponseFormat | None | UnsetType = UNSET


class CreateRun(_RunParams, omit_defaults=True, kw_only=True):
    """Body of ``POST /threads/{thread_id}/runs``."""

    reasoning_effort: str | None | UnsetType = UNSET
    additional_instructions: str | None | UnsetType = UNSET
    additional_messages: list[MessageRequest] | None | UnsetType = UNSET


class ThreadRequest(Struct, omit_defaults=True):
    """The ``thread`` of create-thread-and-run."""

    messages: list[MessageRequest] | UnsetType = UNSET
    tool_resources: dict[str, Any] | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class CreateThreadAndRun(_RunParams, omit_defaults=True, kw_only=True):
    """Body of ``POST /threads/runs``."""

    thread: ThreadRequest | UnsetType = UNSET
    tool_resources: dict[str, Any] | None | UnsetType = UNSET


class ToolOutput(Struct, gc=False):
    """The answer to one tool call; ``output`` must be a string."""

    tool_call_id: str
    output: str


class ToolApproval(Struct, omit_defaults=True, gc=False):
    """Foundry: the decision on one MCP call awaiting approval."""

    tool_call_id: str
    approve: bool
    #: Headers sent to the MCP server with this call (e.g. its own auth).
    headers: dict[str, str] | UnsetType = UNSET


class SubmitToolOutputs(Struct, omit_defaults=True):
    """Body of ``POST .../submit_tool_outputs``."""

    tool_outputs: list[ToolOutput]
    stream: bool | None | UnsetType = UNSET


class SubmitToolApprovals(Struct, omit_defaults=True):
    """Foundry: body of ``POST .../submit_tool_outputs`` answering ``submit_tool_approval``."""

    tool_approvals: list[ToolApproval]
    stream: bool | None | UnsetType = UNSET


class CreateAssistant(Struct, omit_defaults=True, kw_only=True):
    """Body of ``POST /assistants``."""

    model: str
    name: str | None | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    instructions: str | None | UnsetType = UNSET
    tools: list[ToolDefinition] | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class ModifyAssistant(Struct, omit_defaults=True, kw_only=True):
    """Body of ``POST /assistants/{assistant_id}`` (fields left unset are not changed)."""

    model: str | UnsetType = UNSET
    name: str | None | UnsetType = UNSET
    description: str | None | UnsetType = UNSET
    instructions: str | None | UnsetType = UNSET
    tools: list[ToolDefinition] | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class CreateThread(Struct, omit_defaults=True, kw_only=True):
    """Body of ``POST /threads``."""

    messages: list[MessageRequest] | UnsetType = UNSET
    tool_resources: dict[str, Any] | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class ModifyRun(Struct, omit_defaults=True):
    """Body of ``POST /threads/{thread_id}/runs/{run_id}``."""

    metadata: dict[str, str] | None | UnsetType = UNSET


# --- codec ---------------------------------------------------------------------------------

_tools_decoder: Final = msgspec.json.Decoder(list[ToolDefinition])

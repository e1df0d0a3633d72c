"""What the emulator's ``/responses`` reads and serves: the strict create body, the whole
response object (with the detail objects the SDK's models require), and the stats."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct

from orchestrator.emulator import responses_mcp
from orchestrator.protocols.responses import wire

__all__ = ["CreateBody", "FullUsage", "ResponseObject", "ResponsesStats"]


class CreateBody(wire.CreateResponse, forbid_unknown_fields=True, omit_defaults=True, kw_only=True):
    """Strict body of create-response (the API refuses unknown parameters)."""


class _TokenDetails(Struct, gc=False):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class _OutputDetails(Struct, gc=False):
    reasoning_tokens: int = 0


class FullUsage(Struct, gc=False):
    """``usage`` with the detail objects the SDK's model requires."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: _TokenDetails = msgspec.field(default_factory=_TokenDetails)
    output_tokens_details: _OutputDetails = msgspec.field(default_factory=_OutputDetails)


class ResponseObject(Struct, kw_only=True):
    """The whole response object as the emulator serves it."""

    id: str
    object: str = "response"
    created_at: int
    status: str
    background: bool = False
    error: wire.ResponseError | None = None
    incomplete_details: wire.IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[wire.OutputItem] = []
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] = {}
    temperature: float | None = 1.0
    top_p: float | None = 1.0
    tool_choice: Any = "auto"
    tools: list[wire.Tool] = []
    store: bool = True
    truncation: str = "disabled"
    text: Any = msgspec.field(default_factory=lambda: {"format": {"type": "text"}})
    usage: FullUsage | None = None
    completed_at: int | None = None


class ResponsesStats(Struct, kw_only=True):
    """``GET /_emulator/responses``: responses by status and how often each call was answered."""

    responses: dict[str, int] = {}
    #: function_call_output items accepted, in total.
    outputs_received: int = 0
    #: Answers beyond the first to one call id (a tool round sent twice).
    duplicate_outputs: int = 0
    #: mcp_approval_response items accepted, in total.
    approvals_received: int = 0
    #: Answers beyond the first to one approval request (an approval round sent twice).
    duplicate_approvals: int = 0
    #: Every mcp_approval_request served, by id, with the answers it accepted.
    approvals: dict[str, responses_mcp.ApprovalTally] = {}

"""Driving Responses chains: the request body from a registry's tools, and one call that puts
a ``ResponsesSession`` under a ``ProtocolLoop`` (used by the ``Orchestrator`` and the worker)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import msgspec
from msgspec import UNSET

from orchestrator import approvals, config, errors, tools
from orchestrator.protocol_loop import Emit, Ledger, ProtocolLoop, ProtocolResult
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import session as session_mod
from orchestrator.protocols.responses import wire

__all__ = ["ResponseResult", "drive", "request_body"]

#: How a Responses chain ended: its last ``wire.Response``, outcome, outputs, reply, rounds.
ResponseResult = ProtocolResult[wire.Response]


def request_body(
    registry: tools.ToolRegistry,
    *,
    model: str | None = None,
    input: str | Sequence[wire.InputItem] = (),
    agent: str | None = None,
    metadata: Mapping[str, str] | None = None,
    extra_tools: Sequence[wire.Tool] = (),
    **params: Any,
) -> wire.CreateResponse:
    """A create body: the registry's function tools and ``extra_tools`` (an ``mcp`` server,
    say) unless ``tools`` is given; ``params`` are any other create fields
    (``instructions``, ``max_output_tokens``, ``conversation``...)."""
    if model is None and agent is None:
        raise errors.OrchestratorError("respond: give a model or an agent")
    if "tools" not in params:
        functions = [d.function for d in registry.definitions() if d.function is not None]
        offered = [wire.Tool.function(f) for f in functions] + list(extra_tools)
        params["tools"] = offered or UNSET
    try:
        return wire.CreateResponse(
            model=UNSET if model is None else model,
            agent=UNSET if agent is None else wire.AgentReference(name=agent),
            input=input if isinstance(input, str) else list(input) or UNSET,
            metadata=UNSET if metadata is None else dict(metadata),
            **params,
        )
    except TypeError as exc:
        raise errors.OrchestratorError(f"unknown create-response parameter: {exc}") from exc


async def drive(
    client: client_mod.ResponsesClient,
    registry: tools.ToolRegistry,
    settings: config.Config,
    body: wire.CreateResponse,
    *,
    emit: Emit,
    key: str | None = None,
    ledger: Ledger | None = None,
    tool_limiter: anyio.CapacityLimiter | None = None,
    cancel_on_abort: bool = True,
    resume_id: str | None = None,
    attempt: int = 1,
    resumed: bool | None = None,
    since: float | None = None,
    approver: approvals.Approver | None = None,
) -> ResponseResult:
    """Create (or resume from ``resume_id``) a chain and drive it to its end.

    ``key`` prefixes every client id (default: a fresh one); ``attempt``: the tools'
    ``ToolContext.attempt``; ``resumed`` (default: ``attempt`` > 1) says an earlier attempt
    may have created responses: each is looked for before anything is created; ``approver``
    decides MCP approval requests (default: the ``approvals.*`` policy).
    """
    session = session_mod.ResponsesSession(
        client,
        msgspec.structs.replace(body, stream=UNSET),
        settings,
        emit=emit,
        key=key or f"chain_{uuid.uuid4().hex}",
        resume_id=resume_id,
        resumed=attempt > 1 if resumed is None else resumed,
        since=since,
    )
    loop = ProtocolLoop(
        session,
        registry=registry,
        settings=settings,
        emit=emit,
        ledger=ledger,
        tool_limiter=tool_limiter,
        cancel_on_abort=cancel_on_abort,
        attempt=attempt,
        approver=approver,
    )
    return await loop.run()

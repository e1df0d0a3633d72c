"""MCP tool approvals, for both protocols: who decides, how a decision is kept, what is reported.

A Foundry run may stop with ``required_action.type == "submit_tool_approval"``, and a Responses
response may complete with ``mcp_approval_request`` items: MCP calls (server label, tool name,
JSON arguments) that run only once allowed. The loop hands them to ``Approver.decide`` as
``protocols.base.ApprovalCall``s, which answers each:

1. a decision already in the ledger (made before a crash, or by ``orchestrator approve``) is
   reused, never made twice;
2. else the Python hook, when one is given (``async def approve(call) -> bool | Approval``);
3. else the config policy: allowed when ``approvals.allow`` lists the server label and tool name;
   otherwise denied (``approvals.mode: policy``) or left open (``wait``): ``ApprovalPending`` is
   raised; the worker parks the job as ``waiting_approval`` until a human decides, and an
   embedding caller gets the exception with the run left waiting (not cancelled), to submit its
   decisions (``client.submit_tool_approvals``) and adopt the run.

The session sends the decisions the way its protocol does (``submit_tool_approval``, or
``mcp_approval_response`` items in the continuation).

A decision is stored in the ledger like a tool output, keyed by the call id (``APPROVED`` or
``DENIED``), before it is submitted; each one is reported as a ``ToolApprovalDecided`` event.
Headers a hook returns for the MCP server are sent but never stored or logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

import msgspec

from orchestrator import config, errors, events
from orchestrator.protocols import base
from orchestrator.protocols.assistants import models

__all__ = [
    "APPROVED",
    "DENIED",
    "Approval",
    "ApprovalPending",
    "ApprovalRequest",
    "Approver",
    "Hook",
    "decision_output",
    "parse_decision",
    "report_server_tools",
]

log = logging.getLogger(__name__)

#: Ledger outputs that record a decision (approval calls have ids of their own, so a tool
#: output is never read as one).
APPROVED: Final = "approval:allow"
DENIED: Final = "approval:deny"


class ApprovalRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One MCP call awaiting approval, as the hook and the CLI see it."""

    run_id: str
    thread_id: str
    tool_call_id: str
    server_label: str
    name: str
    #: The call's arguments as a JSON string.
    arguments: str


class Approval(msgspec.Struct, frozen=True, kw_only=True):
    """A hook's decision (a plain ``bool`` works too)."""

    approve: bool
    #: Headers the service sends to the MCP server with this call (never stored or logged).
    headers: dict[str, str] | None = None
    reason: str | None = None

    def __repr__(self) -> str:
        shown = "None" if self.headers is None else "{…}"
        return f"Approval(approve={self.approve}, headers={shown}, reason={self.reason!r})"


Hook = Callable[[ApprovalRequest], Awaitable[bool | Approval]]
Emit = Callable[[events.Event], Awaitable[None]]


class ApprovalPending(errors.OrchestratorError):
    """Calls wait for a human decision (``approvals.mode: wait``); the object is left as it is.

    ``run`` is the protocol's object that asks (``models.Run``, or ``wire.Response``)."""

    def __init__(self, run: Any, calls: Sequence[ApprovalRequest]) -> None:
        names = ", ".join(f"{c.tool_call_id} ({c.server_label}/{c.name})" for c in calls)
        kind = "run" if isinstance(run, models.Run) else "response"
        super().__init__(f"{kind} {getattr(run, 'id', '?')}: waiting for approval of {names}")
        self.run = run
        self.calls = list(calls)


def decision_output(approve: bool) -> str:
    """The ledger output that records a decision."""
    return APPROVED if approve else DENIED


def parse_decision(output: str) -> bool | None:
    """The decision a ledger output records, or None when it is not a decision."""
    if output == APPROVED:
        return True
    if output == DENIED:
        return False
    return None


class Approver:
    """Decides MCP approvals for every run of a driver (policy, hook, ledger)."""

    def __init__(self, settings: config.ApprovalsConfig, hook: Hook | None = None) -> None:
        self.settings = settings
        self.hook = hook
        self._allowed = {(r.server_label, t) for r in settings.allow for t in r.tools}

    def allowed(self, request: ApprovalRequest) -> bool:
        """The policy allows the call (by server label and tool name, ``*`` for any)."""
        label = request.server_label
        return (label, request.name) in self._allowed or (label, "*") in self._allowed

    async def _decide_one(self, request: ApprovalRequest) -> tuple[Approval | None, str]:
        if self.hook is not None:
            try:
                answer = await self.hook(request)
            except Exception as exc:  # a broken hook must not approve anything
                log.exception(
                    "approval hook failed; denying",
                    extra={"run_id": request.run_id, "action": "approval_hook_failed"},
                )
                return Approval(approve=False, reason=f"hook failed: {type(exc).__name__}"), "hook"
            if isinstance(answer, bool):
                return Approval(approve=answer), "hook"
            return answer, "hook"
        if self.allowed(request):
            return Approval(approve=True, reason="allowed by approvals.allow"), "policy"
        if self.settings.mode == "wait":
            return None, "human"
        return Approval(approve=False, reason="not in approvals.allow"), "policy"

    async def decide(
        self,
        calls: Sequence[base.ApprovalCall],
        *,
        obj: Any,
        object_id: str,
        scope: str,
        stored: Mapping[str, str],
        save: Callable[[str, str], Awaitable[None]] | None,
        emit: Emit,
    ) -> list[base.ApprovalAnswer]:
        """A decision for every call (of ``obj``, whose id is ``object_id``): one ``stored``
        before is reused; a new one is saved (``save``) before it is returned, and each is
        reported. ``ApprovalPending`` for calls left open."""
        answers: list[base.ApprovalAnswer] = []
        pending: list[ApprovalRequest] = []
        for call in calls:
            request = ApprovalRequest(
                run_id=object_id,
                thread_id=scope,
                tool_call_id=call.id,
                server_label=call.server_label,
                name=call.name,
                arguments=call.arguments,
            )
            kept = parse_decision(stored[call.id]) if call.id in stored else None
            if kept is not None:
                approval, source = Approval(approve=kept), "ledger"
            else:
                decided, source = await self._decide_one(request)
                if decided is None:
                    pending.append(request)
                    continue
                approval = decided
                if save is not None:
                    await save(call.id, decision_output(approval.approve))
            log.info(
                "MCP call %s/%s %s (%s)",
                request.server_label,
                request.name,
                "allowed" if approval.approve else "denied",
                source,
                extra={"run_id": object_id, "action": "approval", "tool_call_id": call.id},
            )
            await emit(
                events.ToolApprovalDecided(
                    run_id=object_id,
                    thread_id=scope,
                    tool_call_id=call.id,
                    server_label=request.server_label,
                    name=request.name,
                    approve=approval.approve,
                    source=source,
                    reason=approval.reason,
                )
            )
            answers.append(
                base.ApprovalAnswer(
                    tool_call_id=call.id,
                    approve=approval.approve,
                    headers=approval.headers,
                    reason=approval.reason,
                )
            )
        if pending:
            raise ApprovalPending(obj, pending)
        return answers


async def report_server_tools(step: models.RunStep, emit: Emit) -> None:
    """One ``ServerToolObserved`` per server-side tool call or activity of a step."""
    details = step.step_details
    if details is None:
        return
    seen: list[tuple[str, str, str | None, str | None]] = [
        (c.type, c.id, c.server_label, c.name) for c in details.tool_calls or () if c.server_side
    ]
    seen += [(a.type, a.id, a.server_label, None) for a in details.activities or ()]
    for tool_type, item_id, server_label, name in seen:
        await emit(
            events.ServerToolObserved(
                run_id=step.run_id,
                thread_id=step.thread_id,
                step_id=step.id,
                tool_type=tool_type,
                item_id=item_id,
                step_type=details.type,
                server_label=server_label,
                name=name,
            )
        )

"""Foundry's MCP tool approvals: who decides, how a decision is kept, what is reported.

A Foundry run may stop with ``required_action.type == "submit_tool_approval"``: MCP calls (server
label, tool name, JSON arguments) that run only once allowed. ``Approver.decide`` answers each:

1. a decision already in the ledger (made before a crash, or by ``orchestrator approve``) is
   reused, never made twice;
2. else the Python hook, when one is given (``async def approve(call) -> bool | Approval``);
3. else the config policy: allowed when ``approvals.allow`` lists the server label and tool name;
   otherwise denied (``approvals.mode: policy``) or left open (``wait``): ``ApprovalPending`` is
   raised; the worker parks the job as ``waiting_approval`` until a human decides, and an
   embedding caller gets the exception with the run left waiting (not cancelled), to submit its
   decisions (``client.submit_tool_approvals``) and adopt the run.

A decision is stored in the ledger like a tool output, keyed by the call id (``APPROVED`` or
``DENIED``), before it is submitted; each one is reported as a ``ToolApprovalDecided`` event.
Headers a hook returns for the MCP server are sent but never stored or logged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

from orchestrator import config, errors, events
from orchestrator.protocols.assistants import models

if TYPE_CHECKING:
    from orchestrator import run_loop

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


class ApprovalPending(errors.OrchestratorError):
    """Calls wait for a human decision (``approvals.mode: wait``); the run is left as it is."""

    def __init__(self, run: models.Run, calls: Sequence[ApprovalRequest]) -> None:
        names = ", ".join(f"{c.tool_call_id} ({c.server_label}/{c.name})" for c in calls)
        super().__init__(f"run {run.id}: waiting for approval of {names}")
        self.run = run
        self.calls = list(calls)


class _Ledger(Protocol):
    async def outputs(self, run_id: str) -> dict[str, str]: ...

    async def save(self, run_id: str, tool_call_id: str, output: str) -> None: ...


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


def _text(value: str | msgspec.UnsetType) -> str:
    return value if isinstance(value, str) else ""


def request_for(run: models.Run, call: models.RequiredToolCall) -> ApprovalRequest:
    """The request the hook and the events see for one call."""
    return ApprovalRequest(
        run_id=run.id,
        thread_id=run.thread_id,
        tool_call_id=call.id,
        server_label=_text(call.server_label),
        name=_text(call.name),
        arguments=_text(call.arguments),
    )


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
        self, run: models.Run, *, ledger: _Ledger | None, emit: run_loop.Emit
    ) -> list[models.ToolApproval]:
        """A decision for every call of the run's ``submit_tool_approval`` action, each stored
        (when there is a ledger) and reported; ``ApprovalPending`` for calls left open."""
        stored = await ledger.outputs(run.id) if ledger is not None else {}
        answers: list[models.ToolApproval] = []
        pending: list[ApprovalRequest] = []
        for call in run.approval_calls:
            request = request_for(run, call)
            kept = parse_decision(stored[call.id]) if call.id in stored else None
            if kept is not None:
                approval, source = Approval(approve=kept), "ledger"
            else:
                decided, source = await self._decide_one(request)
                if decided is None:
                    pending.append(request)
                    continue
                approval = decided
                if ledger is not None:
                    await ledger.save(run.id, call.id, decision_output(approval.approve))
            log.info(
                "MCP call %s/%s %s (%s)",
                request.server_label,
                request.name,
                "allowed" if approval.approve else "denied",
                source,
                extra={"run_id": run.id, "action": "approval", "tool_call_id": call.id},
            )
            await emit(
                events.ToolApprovalDecided(
                    run_id=run.id,
                    thread_id=run.thread_id,
                    tool_call_id=call.id,
                    server_label=request.server_label,
                    name=request.name,
                    approve=approval.approve,
                    source=source,
                    reason=approval.reason,
                )
            )
            headers = approval.headers if approval.headers is not None else msgspec.UNSET
            answers.append(
                models.ToolApproval(tool_call_id=call.id, approve=approval.approve, headers=headers)
            )
        if pending:
            raise ApprovalPending(run, pending)
        return answers


async def report_server_tools(step: models.RunStep, emit: run_loop.Emit) -> None:
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

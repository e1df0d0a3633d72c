"""Foundry's scripted rounds: MCP calls awaiting approval, and tools the service runs itself.

``approval`` rounds stop the run with ``required_action.type == "submit_tool_approval"`` and an
in-progress ``tool_calls`` step of ``mcp`` calls; the approvals submitted fill each call's output
(a denied call's output says so) and the run goes on. ``server_tools`` rounds add completed steps
(``tool_calls`` of server-side types, and an ``activities`` step for ``mcp_list_tools``) and go on
to the next round without stopping.
"""

from __future__ import annotations

from typing import Final

from orchestrator.emulator import lifecycle, replies, script, state
from orchestrator.protocols.assistants import models

__all__ = ["LIST_TOOLS", "check_approvals", "outcome", "submit_approvals"]

#: The one activity type the service reports today.
LIST_TOOLS: Final = "mcp_list_tools"
_APPROVAL: Final = models.APPROVAL_ACTION
#: Details of server-side tool calls, as the service fills them (keys are the type names).
_DETAILS: Final = {
    "bing_grounding": {"requesturl": "https://api.bing.microsoft.com/v7.0/search?q=emulator"},
    "bing_custom_search": {"requesturl": "https://api.bing.microsoft.com/v7.0/custom?q=emulator"},
    "azure_ai_search": {"input": "emulator", "output": "{}"},
    "openapi": {"name": "emulator_op", "arguments": "{}", "output": "{}"},
    "sharepoint_grounding": {"input": "emulator", "output": "{}"},
    "fabric_dataagent": {"input": "emulator", "output": "{}"},
}


def outcome(rs: state.RunState, t: float, rnd: script.Round) -> None:
    """Apply a Foundry round's outcome at ``t``."""
    if rnd.kind == "approval":
        _ask_approval(rs, t, rnd)
    else:
        _server_tools(rs, t, rnd)


def _ask_approval(rs: state.RunState, t: float, rnd: script.Round) -> None:
    run = rs.run
    ids = [state.new_id("call_") for _ in rnd.calls]
    triples = list(zip(ids, rnd.calls, rnd.labels, strict=True))
    calls = [
        models.StepToolCall(id=cid, type="mcp", name=n, arguments=a, server_label=lb, output="")
        for cid, (n, a), lb in triples
    ]
    step = lifecycle._step(rs, t, "tool_calls", _tool_calls(calls))
    rs.tool_step = step
    required = [
        models.RequiredToolCall(id=cid, type="mcp", name=n, arguments=a, server_label=lb)
        for cid, (n, a), lb in triples
    ]
    run.required_action = models.RequiredAction(
        type=_APPROVAL,
        submit_tool_outputs=None,
        submit_tool_approval=models.SubmitToolOutputsAction(tool_calls=required),
    )
    run.status = lifecycle.REQUIRES_ACTION
    rs.since = t
    lifecycle._emit(rs, "thread.run.step.created", step)
    lifecycle._emit(rs, "thread.run.step.in_progress", step)
    lifecycle._emit(rs, "thread.run.requires_action", run)


def _tool_calls(calls: list[models.StepToolCall]) -> models.StepDetails:
    return models.StepDetails(type="tool_calls", tool_calls=calls)


def _server_tools(rs: state.RunState, t: float, rnd: script.Round) -> None:
    calls: list[models.StepToolCall] = []
    activities: list[models.StepActivity] = []
    for (kind, _), label in zip(rnd.calls, rnd.labels, strict=True):
        if kind == LIST_TOOLS:
            activities.append(_list_tools(label))
        else:
            calls.append(_server_call(kind, label))
    if activities:
        details = models.StepDetails(type="activities", activities=activities)
        _completed_step(rs, t, "activities", details)
    if calls:
        _completed_step(rs, t, "tool_calls", _tool_calls(calls))
    rs.round += 1  # the service goes on by itself: the next round starts thinking now
    rs.since = t


def _list_tools(label: str) -> models.StepActivity:
    schema = {"type": "object", "properties": {"query": {"type": "string"}}, "required": []}
    tools = {"search": {"description": "Search the server.", "parameters": schema}}
    return models.StepActivity(
        type=LIST_TOOLS, id=state.new_id("act_"), server_label=label, tools=tools
    )


def _server_call(kind: str, label: str) -> models.StepToolCall:
    cid = state.new_id("call_")
    if kind == "mcp":
        return models.StepToolCall(
            id=cid, type="mcp", name="search", arguments="{}", output="[]", server_label=label
        )
    call = models.StepToolCall(id=cid, type=kind)
    details = _DETAILS.get(kind, {})
    if kind in _DETAILS:
        setattr(call, kind, dict(details))
    elif kind in {"connected_agent", "deep_research", "azure_function", "browser_automation"}:
        setattr(call, kind, {})
    return call


def _completed_step(
    rs: state.RunState, t: float, kind: str, details: models.StepDetails
) -> models.RunStep:
    step = lifecycle._step(rs, t, kind, details)
    step.status = "completed"
    step.completed_at = int(t)
    step.usage = models.Usage(completion_tokens=5, prompt_tokens=20, total_tokens=25)
    lifecycle._emit(rs, "thread.run.step.created", step)
    lifecycle._emit(rs, "thread.run.step.completed", step)
    return step


def check_approvals(rs: state.RunState, approvals: list[models.ToolApproval]) -> dict[str, bool]:
    """The decisions by call id, when the run waits for exactly these; else 400."""
    run = rs.run
    action = run.required_action
    if run.status != lifecycle.REQUIRES_ACTION or action is None or action.type != _APPROVAL:
        raise replies.ApiError(400, f'Runs in status "{run.status}" do not accept tool outputs.')
    expected = [c.id for c in action.approval_calls]
    got = [a.tool_call_id for a in approvals]
    if sorted(expected) != sorted(got):
        raise replies.ApiError(400, f"Expected tool approvals for call_ids {expected}, got {got}")
    return {a.tool_call_id: a.approve for a in approvals}


def submit_approvals(rs: state.RunState, now: float, decisions: dict[str, bool]) -> None:
    """Run the approved MCP calls (a denied one's output says so) and queue the next round."""
    outputs: dict[str, str] = {}
    step = rs.tool_step
    for call in (step.step_details.tool_calls or []) if step and step.step_details else []:
        name = call.name or "mcp"
        allowed = decisions.get(call.id, False)
        result = script.mcp_output(name, call.server_label) if allowed else script.MCP_DENIED
        call.output = result
        outputs[call.id] = result
        rs.outputs.append((name, result))  # the closing message quotes them
    lifecycle.submit(rs, now, outputs)

"""MCP approval rounds of the emulator's ``/responses``.

A script round with ``mcp_calls`` ends its response ``completed`` with one
``mcp_approval_request`` item (id ``mcpr_<hex>``) per call that needs approval, and no message.
Whether a call needs it comes from the ``mcp`` entry of the response's ``tools`` with the call's
``server_label``: ``require_approval`` is ``"always"`` when left out (as in the API), ``"never"``
runs every call of that server at once, and ``{"never": {"tool_names": [...]}}`` runs those
tools at once. A call run at once is an ``mcp_call`` item in the same response; when a round has
nothing left to approve, the response goes on to the script's next round by itself.

A continuation (``previous_response_id``) must carry one ``mcp_approval_response`` for every
request of the response it continues, and none for anything else (400 otherwise). Its approved
calls run first in it: ``mcp_call`` items (id ``mcp_<hex>``) carrying ``approval_request_id``
and the server's output. A denied call is not run and leaves no item (as in the API, where only
the model hears of the denial); the closing message quotes it as denied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
from msgspec import Struct

from orchestrator.emulator import replies, script, state
from orchestrator.protocols.responses import wire

__all__ = [
    "ApprovalTally",
    "Approvals",
    "Decision",
    "decide",
    "executed",
    "needs_approval",
    "quoted",
    "split_round",
    "stream_shape",
]

_RESPONSE: Final = "mcp_approval_response"


class ApprovalTally(Struct, kw_only=True):
    """One ``mcp_approval_request`` the emulator served, and the answers it accepted."""

    server_label: str
    name: str
    #: ``mcp_approval_response`` items accepted for it (1: answered exactly once).
    answers: int = 0
    #: The ``approve`` of each accepted answer, in order.
    decisions: list[bool] = []


class Decision(Struct, frozen=True, kw_only=True):
    """One request as a continuation answered it."""

    request: wire.OutputItem
    approve: bool
    reason: str | None = None


class _Names(Struct):
    tool_names: list[str] | None = None


class _Filter(Struct):
    """``require_approval`` as an object; only ``never`` exempts a call from approval."""

    never: _Names | None = None


def needs_approval(tools: Sequence[wire.Tool], server_label: str, name: str) -> bool:
    """Whether the request's ``mcp`` tool entry for ``server_label`` wants ``name`` approved."""
    for tool in tools:
        if tool.type != "mcp" or tool.server_label != server_label:
            continue
        policy = tool.require_approval
        if policy == "never":
            return False
        if isinstance(policy, dict):
            try:
                never = msgspec.convert(policy, _Filter).never
            except msgspec.ValidationError:
                return True  # a filter we cannot read: the API's default
            return never is None or name not in (never.tool_names or ())
        return True
    return True


def split_round(
    rnd: script.Round, tools: Sequence[wire.Tool]
) -> tuple[list[wire.OutputItem], list[wire.OutputItem]]:
    """The approval requests of an ``approval`` round, and the calls it runs at once."""
    requests: list[wire.OutputItem] = []
    ran: list[wire.OutputItem] = []
    for (name, arguments), label in zip(rnd.calls, rnd.labels, strict=True):
        if needs_approval(tools, label, name):
            requests.append(
                wire.OutputItem(
                    type="mcp_approval_request",
                    id=state.new_id("mcpr_"),
                    server_label=label,
                    name=name,
                    arguments=arguments,
                )
            )
        else:
            ran.append(_call(label, name, arguments, None))
    return requests, ran


def _call(label: str, name: str, arguments: str, request_id: str | None) -> wire.OutputItem:
    return wire.OutputItem(
        type="mcp_call",
        id=state.new_id("mcp_"),
        status="completed",
        server_label=label,
        name=name,
        arguments=arguments,
        approval_request_id=request_id,
        output=script.mcp_output(name, label),
    )


def decide(asked: Mapping[str, wire.OutputItem], items: Sequence[Any]) -> list[Decision]:
    """The answers in ``items`` to the requests ``asked`` (by id); 400 unless each request has
    exactly one and nothing else is answered. Changes nothing."""
    given: dict[str, Decision] = {}
    for index, item in enumerate(items):
        if not isinstance(item, wire.InputItem) or item.type != _RESPONSE:
            continue
        request_id = item.approval_request_id
        if not isinstance(request_id, str):
            raise _missing(index, "approval_request_id")
        if not isinstance(item.approve, bool):
            raise _missing(index, "approve")
        request = asked.get(request_id)
        if request is None:
            raise replies.ApiError(
                400,
                f"No MCP approval request found for approval_request_id {request_id}.",
                param=f"input[{index}].approval_request_id",
            )
        if request_id in given:
            raise replies.ApiError(
                400,
                f"Duplicate mcp_approval_response for approval request {request_id}.",
                param=f"input[{index}]",
            )
        reason = item.reason if isinstance(item.reason, str) else None
        given[request_id] = Decision(request=request, approve=item.approve, reason=reason)
    for request_id in asked:
        if request_id not in given:
            raise replies.ApiError(
                400,
                f"No mcp_approval_response found for MCP approval request {request_id}.",
                param="input",
            )
    return [given[r] for r in asked]


def _missing(index: int, field: str) -> replies.ApiError:
    param = f"input[{index}].{field}"
    return replies.ApiError(400, f"Missing required parameter: '{param}'.", param=param)


def executed(decisions: Sequence[Decision]) -> list[wire.OutputItem]:
    """The ``mcp_call`` items of the approved requests (the denied ones do not run)."""
    return [
        _call(r.server_label or "", r.name or "", r.arguments or "{}", r.id)
        for r in (d.request for d in decisions if d.approve)
    ]


def quoted(decisions: Sequence[Decision]) -> list[tuple[str, str]]:
    """(tool name, outcome) of each decision, for the closing message."""
    quotes: list[tuple[str, str]] = []
    for d in decisions:
        name, label = d.request.name or "", d.request.server_label
        if d.approve:
            quotes.append((name, script.mcp_output(name, label)))
        else:
            reason = f": {d.reason}" if d.reason else ""
            quotes.append((name, script.MCP_DENIED + reason))
    return quotes


def stream_shape(item: wire.OutputItem) -> tuple[wire.OutputItem, list[tuple[str, dict[str, Any]]]]:
    """An MCP item as ``output_item.added`` shows it, and the events between that and ``done``
    (each also gets the item's ``item_id`` and ``output_index``)."""
    if item.type != "mcp_call":
        return item, []
    added = msgspec.structs.replace(item, status="in_progress", output=None)
    return added, [
        ("response.mcp_call.in_progress", {}),
        ("response.mcp_call_arguments.done", {"arguments": item.arguments}),
        ("response.mcp_call.completed", {}),
    ]


class Approvals:
    """Every approval request served, and the answers each accepted."""

    def __init__(self) -> None:
        self.tallies: dict[str, ApprovalTally] = {}

    def clear(self) -> None:
        """Forget every request."""
        self.tallies.clear()

    def asked(self, requests: Sequence[wire.OutputItem]) -> None:
        """Count ``requests`` as served, not yet answered."""
        for r in requests:
            if r.id is not None:
                self.tallies[r.id] = ApprovalTally(
                    server_label=r.server_label or "", name=r.name or ""
                )

    def answered(self, decisions: Sequence[Decision]) -> None:
        """Count one accepted answer per decision."""
        for d in decisions:
            tally = self.tallies.get(d.request.id or "")
            if tally is not None:
                tally.answers += 1
                tally.decisions.append(d.approve)

    def snapshot(self) -> dict[str, ApprovalTally]:
        """A copy of the tallies by request id."""
        return {
            rid: msgspec.structs.replace(t, decisions=list(t.decisions))
            for rid, t in self.tallies.items()
        }

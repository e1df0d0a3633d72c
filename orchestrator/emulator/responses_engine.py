"""The emulator's ``/responses``: background responses moved on by time, scripted like runs.

A background response is ``queued`` for ``queue_delay``, ``in_progress`` for ``think_delay``
(or its round's ``think_ms``), then reaches its round's outcome: ``function_call`` items,
``mcp_approval_request`` items (``responses_mcp``), a message, ``failed``, ``incomplete``, or a
stall. A foreground response is answered finished.
A chain of responses linked by ``previous_response_id`` walks one script (the ``emulator_script``
metadata of its first response, else every function tool once, then a message quoting the
outputs); a continuation must answer every function call and approval request of the response
it continues.

Every change appends SSE frames with increasing ``sequence_number`` to the response's event log;
streams replay that log (from ``starting_after``) and follow it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any, Final

import msgspec
from msgspec import UNSET

from orchestrator.emulator import core, lifecycle, replies, responses_mcp, script, state
from orchestrator.emulator import responses_objects as objects
from orchestrator.protocols.assistants import models
from orchestrator.protocols.responses import wire

__all__ = ["ResponseState", "ResponsesEngine"]

_TEXT_CHUNK: Final = 24


class ResponseState:
    """A response's wire object plus its script position and event log."""

    __slots__ = (
        "asked",
        "events",
        "names",
        "obj",
        "outputs",
        "pending",
        "round",
        "said",
        "script",
        "since",
        "waiters",
    )

    def __init__(
        self, obj: objects.ResponseObject, rounds: tuple[script.Round, ...], index: int, now: float
    ) -> None:
        self.obj = obj
        self.script = rounds
        self.round = index
        self.since = now
        #: (sequence_number, SSE frame) of every event so far.
        self.events: list[tuple[int, bytes]] = []
        #: call_id -> function name of this response's function calls.
        self.names: dict[str, str] = {}
        #: id -> this response's approval requests.
        self.asked: dict[str, wire.OutputItem] = {}
        #: ``mcp_call`` items of the approvals this response carries, run when it finishes.
        self.pending: list[wire.OutputItem] = []
        #: (function name, output) of every output the chain has received.
        self.outputs: list[tuple[str, str]] = []
        self.said: str | None = None
        self.waiters: set[asyncio.Event] = set()

    @property
    def current(self) -> script.Round:
        return self.script[self.round] if self.round < len(self.script) else script.FINAL

    def emit(self, type_: str, **fields: Any) -> None:
        seq = len(self.events)
        payload = {"type": type_, "sequence_number": seq, **fields}
        self.events.append((seq, lifecycle.event_frame(type_, payload)))
        for waiter in self.waiters:
            waiter.set()


class ResponsesEngine:
    """Responses and the rules the real service enforces on them."""

    def __init__(self, engine: core.Engine) -> None:
        self.engine = engine
        self.items: dict[str, ResponseState] = {}
        self.answers: Counter[str] = Counter()
        self.approvals = responses_mcp.Approvals()

    def reset(self) -> None:
        """Forget every response."""
        self.items.clear()
        self.answers.clear()
        self.approvals.clear()

    def stats(self) -> objects.ResponsesStats:
        """Counts as of now."""
        now = time.time()
        by_status = Counter(self.advance(rs, now).obj.status for rs in self.items.values())
        approvals = self.approvals.snapshot()
        return objects.ResponsesStats(
            responses=dict(by_status),
            outputs_received=sum(self.answers.values()),
            duplicate_outputs=sum(n - 1 for n in self.answers.values() if n > 1),
            approvals_received=sum(t.answers for t in approvals.values()),
            duplicate_approvals=sum(t.answers - 1 for t in approvals.values() if t.answers > 1),
            approvals=approvals,
        )

    def get(self, response_id: str) -> ResponseState:
        """The response brought up to date, or 404."""
        rs = self.items.get(response_id)
        if rs is None:
            raise replies.not_found("response", response_id)
        return self.advance(rs, time.time())

    def listing(self) -> list[ResponseState]:
        """Every response, oldest first, brought up to date."""
        now = time.time()
        return [self.advance(rs, now) for rs in self.items.values()]

    # --- creating ---------------------------------------------------------------------------

    def create(self, body: objects.CreateBody) -> ResponseState:
        """A new response (background: queued; else finished before it is answered)."""
        if body.model is UNSET and body.agent is UNSET and body.previous_response_id is UNSET:
            raise replies.ApiError(400, "Missing required parameter: 'model'.", param="model")
        now = time.time()
        parent = None
        if body.previous_response_id is not UNSET:
            parent = self._parent(body.previous_response_id)
        items = [body.input] if isinstance(body.input, str) else list(body.input or [])
        decisions = responses_mcp.decide(parent.asked if parent else {}, items)
        answers = self._answers(parent, items)
        self.approvals.answered(decisions)
        metadata = dict(body.metadata) if body.metadata is not UNSET else {}
        tools = list(body.tools) if body.tools is not UNSET else []
        if parent is not None:
            rounds, index = parent.script, parent.round + 1
        else:
            rounds, index = self._script(metadata, tools, body), 0
        model = body.model if isinstance(body.model, str) else ""
        if not model and body.agent is not UNSET:
            model = body.agent.name
        obj = objects.ResponseObject(
            id=state.new_id("resp_"),
            created_at=int(now),
            status="queued",
            background=body.background is True,
            instructions=body.instructions if isinstance(body.instructions, str) else None,
            max_output_tokens=_given(body.max_output_tokens),
            model=model or (parent.obj.model if parent else ""),
            parallel_tool_calls=body.parallel_tool_calls is not False,
            previous_response_id=parent.obj.id if parent else None,
            metadata=metadata,
            tool_choice=body.tool_choice if body.tool_choice is not UNSET else "auto",
            tools=tools,
            store=body.store is not False,
        )
        rs = ResponseState(obj, rounds, index, now)
        rs.outputs = (parent.outputs if parent else []) + answers + responses_mcp.quoted(decisions)
        rs.pending = responses_mcp.executed(decisions)
        rs.said = parent.said if parent else _said(items)
        self.items[obj.id] = rs
        rs.emit("response.created", response=obj)
        rs.emit("response.queued", response=obj)
        if not obj.background:
            self.advance(rs, math.inf)
        return rs

    def _parent(self, response_id: str) -> ResponseState:
        parent = self.items.get(response_id)
        if parent is None:
            raise replies.ApiError(
                404,
                f"Previous response with id '{response_id}' not found.",
                param="previous_response_id",
            )
        self.advance(parent, time.time())
        if parent.obj.status in ("queued", "in_progress"):
            raise replies.ApiError(
                400,
                f"Previous response with id '{response_id}' is still {parent.obj.status}.",
                param="previous_response_id",
            )
        return parent

    def _answers(self, parent: ResponseState | None, items: list[Any]) -> list[tuple[str, str]]:
        """(name, output) of each ``function_call_output``; every call of ``parent`` answered."""
        outputs = [i for i in items if isinstance(i, wire.InputItem)]
        outputs = [i for i in outputs if i.type == "function_call_output"]
        names = parent.names if parent is not None else {}
        given: dict[str, str] = {}
        for item in outputs:
            call_id = item.call_id if isinstance(item.call_id, str) else ""
            if call_id not in names:
                raise replies.ApiError(
                    400,
                    f"No tool call found for function call output with call_id {call_id}.",
                    param="input",
                )
            given[call_id] = item.output if isinstance(item.output, str) else ""
        for call_id in names:
            if call_id not in given:
                raise replies.ApiError(
                    400, f"No tool output found for function call {call_id}.", param="input"
                )
        self.answers.update(given.keys())
        return [(names[c], out) for c, out in given.items()]

    def _script(
        self, metadata: dict[str, str], tools: list[wire.Tool], body: objects.CreateBody
    ) -> tuple[script.Round, ...]:
        text = metadata.get(script.SCRIPT_KEY)
        if text is not None:
            try:
                return script.parse_script(text)
            except script.ScriptError as exc:
                raise replies.ApiError(400, str(exc), param="metadata") from None
        definitions = [
            models.ToolDefinition.for_function(
                models.FunctionDefinition(
                    name=t.name, parameters=_given(t.parameters), description=_given(t.description)
                )
            )
            for t in tools
            if t.type == "function" and isinstance(t.name, str)
        ]
        choice = body.tool_choice if isinstance(body.tool_choice, str) else None
        return script.default_script(
            definitions,
            parallel=body.parallel_tool_calls is not False,
            tool_choice=choice,
            seed=self.engine.settings.seed,
        )

    # --- moving on --------------------------------------------------------------------------

    def advance(self, rs: ResponseState, now: float) -> ResponseState:
        """Apply every transition due by ``now``."""
        s = self.engine.settings
        obj = rs.obj
        while True:
            if obj.status == "queued":
                due = rs.since + s.queue_delay
                if now < due:
                    break
                rs.since = min(due, time.time())
                obj.status = "in_progress"
                rs.emit("response.in_progress", response=obj)
            elif obj.status == "in_progress":
                current = rs.current
                think = current.think if current.think is not None else s.think_delay
                if current.kind == "stall" or now < rs.since + think:
                    break
                rs.since = min(rs.since + think, time.time())  # a round run at once goes on
                self._finish(rs, current)
            else:
                break
        return rs

    def next_change(self, rs: ResponseState) -> float:
        """When ``advance`` will next have something to do (inf: never by itself)."""
        s = self.engine.settings
        if rs.obj.status == "queued":
            return rs.since + s.queue_delay
        if rs.obj.status == "in_progress" and rs.current.kind != "stall":
            think = rs.current.think
            return rs.since + (think if think is not None else s.think_delay)
        return math.inf

    def _finish(self, rs: ResponseState, current: script.Round) -> None:
        obj = rs.obj
        now = int(time.time())
        for item in rs.pending:
            self._add_item(rs, item)
        rs.pending = []
        if current.kind == "approval":
            requests, ran = responses_mcp.split_round(current, obj.tools)
            for item in ran + requests:
                self._add_item(rs, item)
            rs.outputs = rs.outputs + [(i.name or "", str(i.output)) for i in ran]
            rs.asked = {i.id: i for i in requests if i.id is not None}
            self.approvals.asked(requests)
            if not requests:  # nothing to approve: the service goes on to the next round
                rs.round += 1
                return
        elif current.kind == "tool_calls":
            for name, arguments in current.calls:
                call_id = state.new_id("call_")
                rs.names[call_id] = name
                item = wire.OutputItem(
                    type="function_call",
                    id=state.new_id("fc_"),
                    status="completed",
                    call_id=call_id,
                    name=name,
                    arguments=arguments,
                )
                self._add_item(rs, item)
        elif current.kind == "fail":
            code = current.text or "server_error"
            message = script.FAIL_MESSAGES.get(code, "The response failed.")
            obj.error = wire.ResponseError(code=code, message=message)
            obj.status = "failed"
            rs.emit("response.failed", response=obj)
            return
        else:
            text = script.render_message(
                current.text if current.kind == "message" else None, rs.outputs, rs.said
            )
            if current.kind == "incomplete":
                text = text[: max(1, len(text) // 2)]
            self._add_message(rs, text, complete=current.kind == "message")
            if current.kind == "incomplete":
                obj.status = "incomplete"
                obj.incomplete_details = wire.IncompleteDetails(
                    reason=current.text or "max_output_tokens"
                )
                rs.emit("response.incomplete", response=obj)
                return
        words = sum(len((i.arguments or i.text).split()) for i in obj.output)
        obj.usage = objects.FullUsage(input_tokens=12, output_tokens=words, total_tokens=12 + words)
        obj.status = "completed"
        obj.completed_at = now
        rs.emit("response.completed", response=obj)

    def _add_item(self, rs: ResponseState, item: wire.OutputItem) -> None:
        index = len(rs.obj.output)
        if item.type == "function_call":
            added = msgspec.structs.replace(item, status="in_progress", arguments="")
            done = {"name": item.name, "arguments": item.arguments}
            between = [("response.function_call_arguments.done", done)]
        else:
            added, between = responses_mcp.stream_shape(item)
        rs.emit("response.output_item.added", output_index=index, item=added)
        for type_, fields in between:
            rs.emit(type_, item_id=item.id, output_index=index, **fields)
        rs.obj.output.append(item)
        rs.emit("response.output_item.done", output_index=index, item=item)

    def _add_message(self, rs: ResponseState, text: str, *, complete: bool) -> None:
        index = len(rs.obj.output)
        item_id = state.new_id("msg_")
        status = "completed" if complete else "incomplete"
        empty = wire.OutputItem(
            type="message", id=item_id, status="in_progress", role="assistant", content=[]
        )
        rs.emit("response.output_item.added", output_index=index, item=empty)
        part = {"type": "output_text", "text": "", "annotations": []}
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        rs.emit("response.content_part.added", part=part, **where)
        for start in range(0, len(text), _TEXT_CHUNK):
            delta = text[start : start + _TEXT_CHUNK]
            rs.emit("response.output_text.delta", delta=delta, logprobs=[], **where)
        rs.emit("response.output_text.done", text=text, logprobs=[], **where)
        content = wire.ContentPart(type="output_text", text=text, annotations=[])
        rs.emit("response.content_part.done", part=content, **where)
        item = wire.OutputItem(
            type="message", id=item_id, status=status, role="assistant", content=[content]
        )
        rs.obj.output.append(item)
        rs.emit("response.output_item.done", output_index=index, item=item)

    def cancel(self, rs: ResponseState) -> None:
        """Cancel a background response (400 for a foreground or finished one)."""
        obj = rs.obj
        if not obj.background:
            raise replies.ApiError(400, "Only background responses can be cancelled.")
        if obj.status == "cancelled":
            return
        if obj.status not in ("queued", "in_progress"):
            raise replies.ApiError(400, f"Cannot cancel a response with status '{obj.status}'.")
        obj.status = "cancelled"
        rs.emit("response.cancelled", response=obj)


def _given(value: Any) -> Any:
    return None if value is UNSET else value


def _said(items: list[Any]) -> str | None:
    for item in items:
        if isinstance(item, str):
            return item
        if item.type == "message" and isinstance(item.content, str):
            return str(item.content)
    return None

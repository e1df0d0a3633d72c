"""How a run moves: lazily, from timestamps, whenever someone looks.

There are no timers. ``advance(rs, now)`` replays every transition due by ``now`` (queued for
``queue_delay``, in progress for the round's think time, then the round's outcome; cancelling for
``cancel_delay``; expired at ``expires_at`` when not finished), stamping each at the moment it was
due. A stream that follows the run sets ``rs.sink`` and gets one SSE frame per transition.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from orchestrator.emulator import script, settings, state, wire
from orchestrator.protocols.assistants import models

__all__ = [
    "ENDS_STREAM",
    "TERMINAL",
    "advance",
    "cancel",
    "event_frame",
    "next_change",
    "submit",
]

QUEUED: Final = models.RunStatus.QUEUED.value
IN_PROGRESS: Final = models.RunStatus.IN_PROGRESS.value
REQUIRES_ACTION: Final = models.RunStatus.REQUIRES_ACTION.value
CANCELLING: Final = models.RunStatus.CANCELLING.value
CANCELLED: Final = models.RunStatus.CANCELLED.value
FAILED: Final = models.RunStatus.FAILED.value
COMPLETED: Final = models.RunStatus.COMPLETED.value
INCOMPLETE: Final = models.RunStatus.INCOMPLETE.value
EXPIRED: Final = models.RunStatus.EXPIRED.value

TERMINAL: Final = frozenset({CANCELLED, FAILED, COMPLETED, INCOMPLETE, EXPIRED})
#: A stream ends after the event announcing one of these.
ENDS_STREAM: Final = TERMINAL | {REQUIRES_ACTION}
_INF: Final = math.inf

_encoder: Final = msgspec.json.Encoder()


def event_frame(name: str, payload: Any) -> bytes:
    """One SSE event: ``event: name`` and its JSON ``data`` line."""
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"


def _emit(rs: state.RunState, name: str, payload: Any) -> None:
    if rs.sink is not None:
        rs.sink.append(event_frame(name, payload))


def _next_transition(rs: state.RunState, s: settings.EmulatorSettings) -> float:
    status = rs.run.status
    if status == QUEUED:
        return rs.since + s.queue_delay
    if status == IN_PROGRESS:
        rnd = rs.current_round()
        if rnd.kind == "stall":
            return _INF
        return rs.since + (s.think_delay if rnd.think is None else rnd.think)
    if status == CANCELLING:
        return rs.since + s.cancel_delay
    return _INF


def next_change(rs: state.RunState, s: settings.EmulatorSettings) -> float:
    """When the run will next change by itself (inf: only a request can change it)."""
    if rs.run.status in TERMINAL:
        return _INF
    t = _next_transition(rs, s)
    return t if rs.run.status == CANCELLING else min(t, rs.deadline)


def advance(rs: state.RunState, now: float, s: settings.EmulatorSettings) -> None:
    """Apply every transition due by ``now``."""
    run = rs.run
    while run.status not in TERMINAL:
        t = _next_transition(rs, s)
        if run.status != CANCELLING and rs.deadline <= min(t, now):
            _expire(rs, rs.deadline)
            return
        if t > now:
            return
        if run.status == QUEUED:
            _start(rs, t)
        elif run.status == IN_PROGRESS:
            _outcome(rs, t)
        else:
            _cancelled(rs, t)


# --- transitions -------------------------------------------------------------------------------


def _start(rs: state.RunState, t: float) -> None:
    run = rs.run
    run.status = IN_PROGRESS
    if run.started_at is None:
        run.started_at = int(t)
    rs.since = t
    _emit(rs, "thread.run.in_progress", run)


def _outcome(rs: state.RunState, t: float) -> None:
    rnd = rs.current_round()
    if rnd.kind == "tool_calls":
        _require_action(rs, t, rnd)
    elif rnd.kind == "fail":
        code = rnd.text or "server_error"
        message = script.FAIL_MESSAGES.get(code, "Sorry, something went wrong.")
        rs.run.last_error = models.LastError(code=code, message=message)
        rs.run.failed_at = int(t)
        _finish(rs, t, FAILED)
    elif rnd.kind in ("approval", "server_tools"):
        from orchestrator.emulator import foundry_rounds

        foundry_rounds.outcome(rs, t, rnd)
    elif rnd.kind == "incomplete":
        rs.run.incomplete_details = models.IncompleteDetails(reason=rnd.text)
        _finish(rs, t, INCOMPLETE)
    else:
        _reply(rs, t, rnd.text)


def _step(rs: state.RunState, t: float, kind: str, details: models.StepDetails) -> models.RunStep:
    run = rs.run
    step = models.RunStep(
        id=state.new_id("step_"),
        created_at=int(t),
        assistant_id=run.assistant_id,
        thread_id=run.thread_id,
        run_id=run.id,
        type=kind,
        status="in_progress",
        step_details=details,
        metadata={},
    )
    rs.steps.append(step)
    return step


def _require_action(rs: state.RunState, t: float, rnd: script.Round) -> None:
    run = rs.run
    ids = [state.new_id("call_") for _ in rnd.calls]
    calls = [
        models.StepToolCall(
            id=cid, type="function", function=models.StepFunction(name=n, arguments=a)
        )
        for cid, (n, a) in zip(ids, rnd.calls, strict=True)
    ]
    step = _step(rs, t, "tool_calls", models.StepDetails(type="tool_calls", tool_calls=calls))
    rs.tool_step = step
    required = [
        models.RequiredToolCall(id=cid, function=models.FunctionCall(name=n, arguments=a))
        for cid, (n, a) in zip(ids, rnd.calls, strict=True)
    ]
    run.required_action = models.RequiredAction(
        submit_tool_outputs=models.SubmitToolOutputsAction(tool_calls=required)
    )
    run.status = REQUIRES_ACTION
    rs.since = t
    if rs.sink is not None:
        # As the API does: the step starts empty and the calls arrive as deltas.
        empty = msgspec.structs.replace(
            step, step_details=models.StepDetails(type="tool_calls", tool_calls=[])
        )
        _emit(rs, "thread.run.step.created", empty)
        _emit(rs, "thread.run.step.in_progress", empty)
        for index, call in enumerate(calls):
            for delta in _call_deltas(step.id, index, call):
                _emit(rs, "thread.run.step.delta", delta)
        _emit(rs, "thread.run.requires_action", run)


def _call_deltas(step_id: str, index: int, call: models.StepToolCall) -> list[wire.RunStepDelta]:
    fn = call.function or models.StepFunction()
    half = len(fn.arguments) // 2
    parts = [p for p in (fn.arguments[:half], fn.arguments[half:]) if p]
    head = wire.function_delta(step_id, index, call_id=call.id, name=fn.name, arguments="")
    return [head] + [
        wire.function_delta(step_id, index, call_id=None, name=None, arguments=p) for p in parts
    ]


def _reply(rs: state.RunState, t: float, template: str | None) -> None:
    run, thread = rs.run, rs.thread
    said = next((m.text for m in reversed(thread.messages) if m.role == "user"), None)
    text = script.render_message(template, rs.outputs, said)
    when = int(t)
    message = models.Message(
        id=state.new_id("msg_"),
        created_at=when,
        thread_id=run.thread_id,
        status="completed",
        role="assistant",
        content=[models.MessageContent(type="text", text=models.TextValue(value=text))],
        assistant_id=run.assistant_id,
        run_id=run.id,
        metadata={},
        attachments=[],
        completed_at=when,
    )
    thread.messages.append(message)
    details = models.StepDetails(
        type="message_creation", message_creation=models.MessageCreation(message_id=message.id)
    )
    step = _step(rs, t, "message_creation", details)
    if rs.sink is not None:
        _emit(rs, "thread.run.step.created", step)
        _emit(rs, "thread.run.step.in_progress", step)
        opened = msgspec.structs.replace(
            message, status="in_progress", content=[], completed_at=None
        )
        _emit(rs, "thread.message.created", opened)
        _emit(rs, "thread.message.in_progress", opened)
        cut = len(text) // 2
        for part in (text[:cut], text[cut:]):
            if part:
                _emit(rs, "thread.message.delta", wire.text_delta(message.id, part))
        _emit(rs, "thread.message.completed", message)
    step.status = "completed"
    step.completed_at = when
    step.usage = models.Usage(
        completion_tokens=len(text) // 4 + 1, prompt_tokens=50, total_tokens=len(text) // 4 + 51
    )
    _emit(rs, "thread.run.step.completed", step)
    run.completed_at = when
    _finish(rs, t, COMPLETED)


def _finish(rs: state.RunState, t: float, status: str) -> None:
    run = rs.run
    run.status = status
    run.required_action = None
    if status != EXPIRED:
        run.expires_at = None
    prompt = 100 + 50 * rs.round
    completion = 20 + 10 * len(rs.outputs)
    run.usage = models.Usage(
        completion_tokens=completion, prompt_tokens=prompt, total_tokens=prompt + completion
    )
    rs.since = t
    if rs.thread.active is rs:
        rs.thread.active = None
    _emit(rs, "thread.run." + status, run)


def _close_tool_step(rs: state.RunState, t: float, status: str) -> None:
    step = rs.tool_step
    if step is None:
        return
    rs.tool_step = None
    step.status = status
    when = int(t)
    if status == EXPIRED:
        step.expired_at = when
    elif status == CANCELLED:
        step.cancelled_at = when
    else:
        step.completed_at = when
        step.usage = models.Usage(completion_tokens=10, prompt_tokens=50, total_tokens=60)
    _emit(rs, "thread.run.step." + status, step)


def _expire(rs: state.RunState, t: float) -> None:
    _close_tool_step(rs, t, EXPIRED)
    _finish(rs, t, EXPIRED)


def _cancelled(rs: state.RunState, t: float) -> None:
    _close_tool_step(rs, t, CANCELLED)
    rs.run.cancelled_at = int(t)
    _finish(rs, t, CANCELLED)


# --- requests that change a run ----------------------------------------------------------------


def cancel(rs: state.RunState, now: float) -> None:
    """Start cancelling (the caller checked that the run is not finished)."""
    run = rs.run
    run.status = CANCELLING
    run.required_action = None
    rs.since = now
    _emit(rs, "thread.run.cancelling", run)
    rs.poke()


def submit(rs: state.RunState, now: float, outputs: dict[str, str]) -> None:
    """Record outputs (the caller checked status and call ids) and queue the next round."""
    step = rs.tool_step
    details = step.step_details if step is not None else None
    if details is not None and details.tool_calls:
        for call in details.tool_calls:
            if call.function is not None:
                call.function.output = outputs[call.id]
                rs.outputs.append((call.function.name, outputs[call.id]))
    _close_tool_step(rs, now, COMPLETED)
    run = rs.run
    run.required_action = None
    run.status = QUEUED
    rs.round += 1
    rs.since = now
    _emit(rs, "thread.run.queued", run)
    rs.poke()

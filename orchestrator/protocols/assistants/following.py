"""Following a session's run through the SSE stream of its create or submit request: each
event applied as it comes (status changes, steps, message text), until the next round or the
end. A stream cut or unreadable after the run appeared leaves the rest to polling
(``StreamFallback``); before the run appeared, the request's outcome is unknown and the caller
looks for the run (``retrying.Retryable``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from orchestrator import approvals, errors, events
from orchestrator.http import retrying
from orchestrator.protocols.assistants import streaming

if TYPE_CHECKING:
    from orchestrator.protocols.assistants.session import AssistantsSession

__all__ = ["consume", "fallback"]

log = logging.getLogger(__name__)


async def consume(
    session: AssistantsSession,
    stream: AsyncIterator[streaming.ServerEvent],
    *,
    created: bool = False,
) -> None:
    """Apply a stream's events; a broken or short stream leaves the rest to polling.
    ``created``: the stream's first run event is the run we just created."""
    try:
        async for event in stream:
            await _apply(session, event, created=created)
            created = created and session.run_ is None
    except (errors.APIConnectionError, errors.DecodeError) as exc:
        # A cut stream or an event we cannot read: the run itself is still fine.
        if session.run_ is None:
            raise retrying.Retryable(exc) from exc  # the create's outcome is unknown
        await fallback(session, f"stream broke: {exc}")
        return
    run = session.run_
    if run is not None and not run.is_terminal and not run.requires_action:
        await fallback(session, "stream ended before the run finished")


async def fallback(session: AssistantsSession, reason: str) -> None:
    """The stream is lost: what follows comes by polling (and the reply from the thread)."""
    run = session.run_
    assert run is not None
    session.fell_back = True
    log.info(reason + "; polling", extra={"run_id": run.id, "action": "stream_fallback"})
    await session.emit(events.StreamFallback(run_id=run.id, thread_id=run.thread_id, reason=reason))


async def _apply(
    session: AssistantsSession, event: streaming.ServerEvent, *, created: bool
) -> None:
    match event:
        case streaming.RunEvent(run=run):
            if created and session.run_ is None:
                await session.created_run(run)
            else:
                await session.observe_run(run)
        case streaming.StepEvent(event="thread.run.step.completed", step=step):
            session.steps_seen.add(step.id)
            await session.emit(
                events.StepCompleted(run_id=step.run_id, thread_id=step.thread_id, step=step)
            )
            await approvals.report_server_tools(step, session.emit)
        case streaming.StepDeltaEvent(delta=delta) if session.run_ is not None:
            await session.emit(
                events.StepDelta(
                    run_id=session.run_.id,
                    thread_id=session.run_.thread_id,
                    step_id=delta.id,
                    delta=delta.delta,
                )
            )
        case streaming.MessageDeltaEvent():
            text = streaming.delta_text(event.delta)
            if text and session.run_ is not None:
                await session.message_delta(session.run_, event.delta.id, text)
        case streaming.MessageEvent(event="thread.message.completed", message=message):
            if message.role == "assistant":
                shown = session.streamed_reply
                session.streamed_reply = (shown + "\n" if shown else "") + message.text
        case streaming.UnknownEvent(event=name):
            log.debug("skipping stream event %s", name)
        case _:
            pass

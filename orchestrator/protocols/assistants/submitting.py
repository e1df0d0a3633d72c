"""Submitting a round of a session's run at most once: tool outputs, or Foundry's approval
decisions. After any attempt that fails (an error, a lost or late answer, an unreadable body)
the run itself tells whether the round landed (it no longer asks for exactly these calls)
before another try (``recovery.exactly_once``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Final

import anyio

from orchestrator import errors, recovery
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import following, models, streaming

if TYPE_CHECKING:
    from orchestrator.protocols.assistants.session import AssistantsSession

__all__ = ["submit"]

log = logging.getLogger(__name__)

#: Statuses of a run that moved on without taking a round's outputs.
_NOT_TAKEN: Final = frozenset({"expired", "cancelled", "cancelling", "failed"})


async def submit(
    session: AssistantsSession,
    run: models.Run,
    outputs: Sequence[models.ToolOutput],
    approvals_: Sequence[models.ToolApproval],
    landed: Callable[[], Awaitable[None]],
) -> None:
    """Submit a round at most once: after any attempt that fails, the run itself tells
    whether it landed (it no longer asks for exactly these calls) before another try.
    Foundry's approval rounds go the same way with ``approvals_`` instead of outputs."""
    ids = [o.tool_call_id for o in outputs] + [a.tool_call_id for a in approvals_]

    async def moved_on() -> client_mod.Response[models.Run] | None:
        response = await session.client.retrieve_run_response(run.thread_id, run.id)
        return None if recovery.still_asking(response.data, ids) else response

    async def refused(exc: errors.BadRequestError) -> client_mod.Response[models.Run]:
        current = await moved_on()
        if current is None:
            raise exc  # refused while the run still asks for these calls: a real rejection
        log.info(
            "submit refused (%s); the run has moved on",
            exc.message,
            extra={"run_id": run.id, "action": "submit_refused"},
        )
        return current

    async def found(response: client_mod.Response[models.Run]) -> bool:
        if response.data.status not in _NOT_TAKEN:
            await landed()
        session.poller.hint_ms = response.poll_after_ms
        await session.observe_run(response.data)
        return True

    if session.stream:

        async def send_stream() -> bool:
            session.check_claim()
            try:
                with anyio.move_on_after(session.time_left()):
                    async with _submit_stream(session, run, outputs, approvals_) as stream:
                        await landed()
                        await following.consume(session, stream)
            except errors.BadRequestError as exc:
                session.fell_back = True
                return await found(await refused(exc))
            return True

        async def find_stream() -> bool | None:
            response = await moved_on()
            if response is None:
                return None
            session.fell_back = True  # the stream is lost: what follows comes by polling
            return await found(response)

        await recovery.exactly_once(
            session.settings.retry, send_stream, find_stream, what="submit_tool_outputs"
        )
        return

    async def send() -> bool:
        session.check_claim()
        try:
            if approvals_:
                response = await session.client.submit_tool_approvals_response(
                    run.thread_id, run.id, approvals_, retry=False
                )
            else:
                response = await session.client.submit_tool_outputs_response(
                    run.thread_id, run.id, outputs, retry=False
                )
        except errors.BadRequestError as exc:
            return await found(await refused(exc))
        await landed()
        session.poller.hint_ms = response.poll_after_ms
        await session.observe_run(response.data)
        return True

    async def find() -> bool | None:
        response = await moved_on()
        return None if response is None else await found(response)

    await recovery.exactly_once(session.settings.retry, send, find, what="submit_tool_outputs")


def _submit_stream(
    session: AssistantsSession,
    run: models.Run,
    outputs: Sequence[models.ToolOutput],
    approvals_: Sequence[models.ToolApproval],
) -> AbstractAsyncContextManager[streaming.EventStream]:
    if approvals_:
        return session.client.submit_tool_approvals_stream(
            run.thread_id, run.id, approvals_, retry=False
        )
    return session.client.submit_tool_outputs_stream(run.thread_id, run.id, outputs, retry=False)

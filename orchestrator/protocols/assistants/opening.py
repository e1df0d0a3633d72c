"""Creating a session's run, at most once: by streaming when configured (``auto``: unless the
endpoint refuses), else plainly; after any attempt whose outcome is unknown the run is looked
for by its reference before another try (``recovery.exactly_once``). A create refused because
the thread holds a run is adopted only when that run is ours (our reference, or the same job)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import anyio
import msgspec

from orchestrator import errors, polling, recovery
from orchestrator.http import retrying
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import following, models

if TYPE_CHECKING:
    from orchestrator.protocols.assistants.session import AssistantsSession

__all__ = ["create", "open_create"]

log = logging.getLogger(__name__)


async def open_create(session: AssistantsSession, body: models.CreateRun) -> None:
    """Create the session's run, following ``run.if_active`` while another run holds the
    thread (``error``: raise ``ThreadBusyError``; ``wait``; ``cancel`` it, then wait)."""
    metadata = body.metadata if isinstance(body.metadata, dict) else None
    ref = recovery.ref_of(metadata) or recovery.new_ref()
    body = msgspec.structs.replace(body, metadata=recovery.tagged(metadata, ref))
    waited: str | None = None
    while True:
        if session.fence is not None and waited is not None:
            # Never start a run for a job we no longer hold (the loop confirmed the claim
            # right before opening; after waiting out another run, ask again).
            await session.fence.confirm()
        session.creating = (ref, time.time())
        try:
            await create(session, body, ref)
            return
        except errors.BadRequestError as exc:
            other = session.active_run_id(exc)
            if other is None:
                raise
            session.creating = None
            if other == waited:
                # Seen over, still refused for it (a lagging view): back off, bounded.
                if time.time() >= session.hard_deadline():
                    raise errors.ThreadBusyError(
                        str(exc.message), thread_id=session.thread_id, run_id=other
                    ) from exc
                await anyio.sleep(
                    polling.next_poll(session.settings.poll, 0.5, session.poller.hint_ms)
                )
            if session.fence is not None:
                await session.fence.confirm()  # about to wait for, or cancel, another run
            await _thread_busy(session, other, exc)
            waited = other


async def _thread_busy(session: AssistantsSession, other: str, exc: errors.BadRequestError) -> None:
    policy = session.settings.run.if_active
    if policy == "error":
        raise errors.ThreadBusyError(
            str(exc.message), thread_id=session.thread_id, run_id=other
        ) from exc
    log.info(
        "thread %s has an active run; %s",
        session.thread_id,
        "cancelling it" if policy == "cancel" else "waiting for it",
        extra={"run_id": other, "action": f"if_active_{policy}"},
    )
    if policy == "cancel":
        await session.request_cancel(other)
    await session.wait_terminal(other, deadline=session.deadline)


async def create(session: AssistantsSession, body: models.CreateRun, ref: str) -> None:
    """Create the session's run from ``body`` (tagged with ``ref``) and take its first view."""
    if session.stream:
        try:
            await _create_streaming(session, body, ref)
            return
        except (errors.BadRequestError, errors.NotFoundError) as exc:
            busy = isinstance(exc, errors.BadRequestError) and session.active_run_id(exc)
            if session.settings.poll.mode != "auto" or busy:
                raise
            log.info("endpoint refused streaming (%s); polling instead", exc.message)
            session.stream = False

    client = session.client
    thread_id = session.thread_id

    async def send() -> client_mod.Response[models.Run]:
        try:
            # Shielded (the request has its own timeout): a caller cancelled meanwhile
            # still learns the run it created, and cancels it.
            session.check_claim()
            with anyio.CancelScope(shield=True):
                response = await client.create_run_response(thread_id, body, retry=False)
            return response
        except errors.BadRequestError as exc:
            if (own := await _own_active(session, ref, exc)) is None:
                raise
            return own

    response = await recovery.exactly_once(
        session.settings.retry, send, session.find_own, what="create_run"
    )
    session.poller.reset(response.poll_after_ms)
    await session.created_run(response.data)


async def _create_streaming(session: AssistantsSession, body: models.CreateRun, ref: str) -> None:
    async def send() -> bool:
        session.check_claim()
        try:
            with anyio.move_on_after(session.time_left()):
                async with session.client.create_run_stream(
                    session.thread_id, body, retry=False
                ) as events_:
                    await following.consume(session, events_, created=True)
        except errors.BadRequestError as exc:
            if (own := await _own_active(session, ref, exc)) is None:
                raise
            await _adopt_found(session, own.data)
        if session.run_ is None:
            raise retrying.Retryable(
                errors.APIConnectionError("create_run_stream: no run event before the end")
            )
        return True

    async def find() -> bool | None:
        found = await session.find_own()
        if found is None:
            return None
        await _adopt_found(session, found.data)
        return True

    await recovery.exactly_once(session.settings.retry, send, find, what="create_run_stream")


async def _adopt_found(session: AssistantsSession, run: models.Run) -> None:
    """Our run, found after its stream was lost: follow it by polling."""
    await session.created_run(run)
    await following.fallback(session, "the run's stream was lost before it started")


async def _own_active(
    session: AssistantsSession, ref: str, refusal: errors.BadRequestError
) -> client_mod.Response[models.Run] | None:
    """A create refused for an active run: ours when it carries our reference (an earlier
    attempt made it); anybody else's run is never adopted."""
    other = session.active_run_id(refusal)
    if other is None:
        return None
    response = await session.client.retrieve_run_response(session.thread_id, other)
    run = response.data
    if recovery.ref_of(run.metadata) == ref:
        return response
    if session.owns is not None and not run.is_terminal and session.owns(run):
        log.info(
            "the thread's active run %s belongs to this job (an earlier attempt made it)",
            run.id,
            extra={"run_id": run.id, "action": "adopt_own"},
        )
        return response
    return None

"""``ResponsesSession``: the Responses side of the protocol seam (``protocols.base``).

One session follows one chain: a background response (``store: true``), then one continuation
per tool round carrying every ``function_call_output`` of the response it continues (by
``previous_response_id``, or the same ``conversation``). Each response we create carries a
client id in its metadata, ``<key>:open`` for the first and ``<key>:<parent id>`` for a
continuation, so the same round always has the same id: after an ambiguous create, or in a
resumed job, the session looks for that id before creating anything.

Following is adaptive polling (``poll.*``, honouring ``openai-poll-after-ms``) or SSE
(``poll.mode`` ``stream``/``auto``) resumed from the last ``sequence_number`` after a cut; after
``MAX_CUTS`` cuts of one response it polls instead.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import anyio
import msgspec
from msgspec import UNSET

from orchestrator import config, errors, events, polling
from orchestrator.protocols import base
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import stream, wire

__all__ = ["MAX_CUTS", "ResponsesSession", "observation"]

log = logging.getLogger(__name__)

#: Stream cuts of one response before the session polls it instead.
MAX_CUTS: Final = 3

Emit = Callable[[events.Event], Awaitable[None]]
Obs = base.Observation[wire.Response]


def observation(response: wire.Response) -> Obs:
    """What the loop acts on: a completed response with function calls is a tool round."""
    calls: list[base.ToolCall] = []
    approvals: list[base.ApprovalCall] = []
    if response.status == wire.Status.COMPLETED:
        calls = [
            base.ToolCall(id=i.call_id or "", name=i.name or "", arguments=i.arguments or "")
            for i in response.function_calls
        ]
        approvals = [
            base.ApprovalCall(
                id=i.id or "",
                server_label=i.server_label or "",
                name=i.name or "",
                arguments=i.arguments or "",
            )
            for i in response.approval_requests
        ]
    done = response.is_terminal and not calls and not approvals
    return base.Observation(
        obj=response,
        id=response.id,
        status=response.status or "",
        calls=calls,
        approvals=approvals,
        done=done,
        reply=response.text if done else None,
    )


class ResponsesSession:
    """One chain of background responses, created or resumed, followed and continued."""

    def __init__(
        self,
        client: client_mod.ResponsesClient,
        body: wire.CreateResponse,
        settings: config.Config,
        *,
        emit: Emit,
        key: str,
        resume_id: str | None = None,
        resumed: bool = False,
        since: float | None = None,
    ) -> None:
        """``key``: the prefix of every client id (a job id; unique per chain).
        ``resume_id``: the response to continue from (what the ledger recorded).
        ``resumed``: an earlier attempt may have created responses; look before creating.
        ``since``: when the chain began (bounds the recovery search)."""
        self.client = client
        self.body = body
        self.settings = settings
        self.emit = emit
        self.key = key
        self.resume_id = resume_id
        self.resumed = resumed
        self.since = since if since is not None else time.time()
        self.stream = settings.poll.mode != "poll"
        self._scope: str | None = None
        self._status: str | None = None
        self._seq: int | None = None
        self._cuts = 0
        self._poller = polling.Poller(settings.poll)
        #: The client id of a create in flight (its response may exist: cancelled on abort).
        self._creating: str | None = None
        #: The chain's current response as last seen, and the unknown statuses reported.
        self._latest: wire.Response | None = None
        self._unknown: set[str] = set()

    @property
    def scope(self) -> str:
        """The chain's id: its first response's (or the conversation's) id."""
        conversation = self.body.conversation
        if isinstance(conversation, str):
            return conversation
        return self._scope or self.key

    def client_id(self, parent: str | None) -> str:
        """The client id of the response that opens the chain or continues ``parent``."""
        return f"{self.key}:{parent or 'open'}"

    # --- the seam ---------------------------------------------------------------------------

    async def open(self) -> Obs:
        if self.resume_id is not None:
            response = await self.client.retrieve(self.resume_id)
            self._poller.reset(response.poll_after_ms)
            return await self._took(response.data, adopted=True)
        cid = self.client_id(None)
        if self.resumed:
            found = await self.recover(cid)
            if found is not None:
                return found
        return await self._create(cid, self.body.input, None)

    async def observe(self, current: Obs, until: float) -> Obs:
        if self.stream and self._cuts < MAX_CUTS:
            with anyio.move_on_after(max(0.0, until - time.time())):
                return await self._follow(current)
            return observation(self._latest) if self._latest is not None else current
        await self._poller.pause(until)
        response = await self.client.retrieve(current.id)
        changed = response.data.status != self._status
        self._poller.seen(changed=changed, hint_ms=response.poll_after_ms)
        return await self._seen(response.data)

    async def answer(
        self,
        current: Obs,
        outputs: Sequence[base.ToolOutput],
        approvals: Sequence[base.ApprovalAnswer],
        landed: Callable[[str], Awaitable[None]],
    ) -> Obs:
        cid = self.client_id(current.id)
        found = None
        if self.resumed:
            # An earlier attempt may have sent this round already: never send it twice.
            found = await self.recover(cid)
        if found is None:
            items = [wire.InputItem.function_output(o.tool_call_id, o.output) for o in outputs]
            items += [
                wire.InputItem.approval(a.tool_call_id, a.approve, a.reason) for a in approvals
            ]
            found = await self._create(cid, items, current.id)
        await landed(found.id)
        return found

    async def cancel(self, current: Obs | None, *, until: float, wait: bool) -> Obs | None:
        # The latest view: the loop's may be older (a handler failed on a newer one).
        target = self._latest or (current.obj if current is not None else None)
        answered: wire.Response | None = None
        with anyio.move_on_after(max(0.0, until - time.time())):
            if (target is None or target.is_terminal) and self._creating is not None:
                # A create was cut off in flight: its response, if the server made it (now
                # or a moment later), is ours.
                for pause in base.ABORT_LOOKUPS:
                    await anyio.sleep(pause)
                    found = await self.client.find(self._creating, since=self.since)
                    if found is not None:
                        target = found
                        break
            if target is not None and not target.is_terminal:
                try:
                    answered = await self.client.cancel(target.id)
                except errors.BadRequestError:
                    # Over meanwhile (or not cancellable): what it is now, when asked to wait.
                    if wait:
                        target = (await self.client.retrieve(target.id)).data
                else:
                    target = answered
                while wait and target is not None and not target.is_terminal:
                    await anyio.sleep(self._poller.delay())
                    target = (await self.client.retrieve(target.id)).data
        if wait:
            return None if target is None else await self._seen(target)
        return None if answered is None else observation(answered)

    async def recover(self, client_id: str) -> Obs | None:
        found = await self.client.find(client_id, since=self.since)
        if found is None:
            return None
        log.info(
            "found response %s created by an earlier attempt; continuing from it",
            found.id,
            extra={"run_id": found.id, "action": "recovered", "client_id": client_id},
        )
        return await self._took(found, adopted=True)

    def requested(self, current: Obs, reused: Sequence[str]) -> events.Event:
        return events.ToolRoundRequested(
            run_id=current.id, thread_id=self.scope, calls=current.calls, reused=list(reused)
        )

    def finished(self, last: Obs, outcome: str, rounds: int) -> events.Event:
        return events.ResponseFinished(
            run_id=last.id,
            thread_id=self.scope,
            response=last.obj,
            outcome=outcome,
            reply=last.reply,
            rounds=rounds,
        )

    # --- inside -----------------------------------------------------------------------------

    def _request(
        self, cid: str, input_: str | list[wire.InputItem] | msgspec.UnsetType, parent: str | None
    ) -> wire.CreateResponse:
        body = self.body
        metadata = dict(body.metadata) if body.metadata is not UNSET else {}
        metadata[client_mod.CLIENT_ID_KEY] = cid
        # A conversation carries the context itself; otherwise link to the parent.
        link = UNSET if parent is None or body.conversation is not UNSET else parent
        return msgspec.structs.replace(
            body,
            input=input_,
            previous_response_id=link if parent is not None else body.previous_response_id,
            background=True,
            store=True,
            stream=UNSET,
            metadata=metadata,
        )

    async def _create(
        self, cid: str, input_: str | list[wire.InputItem] | msgspec.UnsetType, parent: str | None
    ) -> Obs:
        self._creating = cid
        response = await self.client.create(self._request(cid, input_, parent))
        self._creating = None
        self._poller.hint_ms = response.poll_after_ms
        return await self._took(response.data, adopted=False)

    async def _took(self, response: wire.Response, *, adopted: bool) -> Obs:
        """A new response of the chain: follow it from its start."""
        if self._scope is None:
            self._scope = response.id
        self._status = None
        self._seq = None
        self._cuts = 0
        self._poller.reset(self._poller.hint_ms)
        await self.emit(
            events.ResponseCreated(
                run_id=response.id, thread_id=self.scope, response=response, adopted=adopted
            )
        )
        log.info(
            "response %s",
            "adopted" if adopted else "created",
            extra={"run_id": response.id, "action": "adopted" if adopted else "created"},
        )
        return await self._seen(response)

    async def _seen(self, response: wire.Response) -> Obs:
        self._latest = response
        previous = self._status
        status = response.status or ""
        if status != previous:
            self._status = status
            await self.emit(
                events.ResponseStatusChanged(
                    run_id=response.id,
                    thread_id=self.scope,
                    previous=previous,
                    current=status,
                    response=response,
                )
            )
            if response.known_status is None and status not in self._unknown:
                self._unknown.add(status)
                log.warning(
                    "unknown response status %r; still waiting",
                    status,
                    extra={"run_id": response.id, "action": "unknown_status"},
                )
                await self.emit(
                    events.UnknownStatus(run_id=response.id, thread_id=self.scope, status=status)
                )
        return observation(response)

    async def _follow(self, current: Obs) -> Obs:
        """Stream the response's events (after the last one seen) until it ends."""
        latest = current
        try:
            async with self.client.retrieve_stream(current.id, starting_after=self._seq) as events_:
                async for event in events_:
                    self._seq = events_.last_sequence
                    match event:
                        case stream.ResponseEvent(response=response):
                            latest = await self._seen(response)
                            if response.is_terminal:
                                return latest
                        case stream.TextDeltaEvent(item_id=item_id, delta=delta) if delta:
                            await self.emit(
                                events.MessageDelta(
                                    run_id=current.id,
                                    thread_id=self.scope,
                                    message_id=item_id,
                                    text=delta,
                                )
                            )
                        case stream.UnknownEvent(type=kind):
                            log.debug("skipping stream event %s", kind)
                        case _:
                            pass
            reason = "stream ended before the response did"
        except (errors.BadRequestError, errors.NotFoundError) as exc:
            if self.settings.poll.mode != "auto":
                raise
            log.info("server refused to stream (%s); polling instead", exc.message)
            self.stream = False
            return latest
        except errors.APIConnectionError as exc:
            reason = f"stream cut: {exc}"
        except errors.DecodeError as exc:
            # An event we cannot read: the response itself is fine; resume after the last
            # event we did read (or poll), as after a cut.
            reason = f"unreadable stream event: {exc}"
        self._cuts += 1
        then = "resuming" if self._cuts < MAX_CUTS else "polling"
        after = f" after event {self._seq}" if self._seq is not None else ""
        await self.emit(
            events.StreamFallback(
                run_id=current.id, thread_id=self.scope, reason=f"{reason}; {then}{after}"
            )
        )
        return latest

"""``AssistantsSession``: the Assistants side of the protocol seam (``protocols.base``).

One session follows one run: created on a thread (``open`` with a body; a run holding the
thread is waited for or cancelled by ``run.if_active``) or adopted (``open`` with a run id).
Every run it creates carries a client reference in its metadata (``recovery.REF_KEY``); a create
or submit whose outcome is unknown is settled by asking the server (``recovery.exactly_once``)
before anything is sent again. Following is adaptive polling, or SSE: the create and submit
requests stream the run's events until the next round or the end; a cut or unreadable stream
leaves the rest to polling without repeating an event. Steps (``StepCompleted``, server-side
tools), message text (``MessageDelta``) and status changes are reported here, as they are seen.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import anyio
import msgspec

from orchestrator import approvals, config, errors, events, polling, recovery
from orchestrator.protocols import base
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models, opening, submitting

__all__ = ["RUN_LIFETIME", "AssistantsSession", "Fence"]

log = logging.getLogger(__name__)

#: Seconds a run lives when it shows no ``expires_at`` (the API's runs expire after ~10 min).
RUN_LIFETIME: Final = 600.0
#: A create refused because another run holds the thread: "Thread t already has an active run
#: r." (create), or "Can't add messages to t while a run r is active." (a create carrying
#: ``additional_messages``); group 1 is that run's id.
_ACTIVE_RUN = re.compile(r"(?:already has an active run|while a run) (\S+?)(?: is active)?\.?$")

Emit = Callable[[events.Event], Awaitable[None]]
Obs = base.Observation[models.Run]
OnRun = Callable[[models.Run], Awaitable[None]]


class Fence(Protocol):
    """The worker's claim, checked before each request with side effects."""

    def check(self) -> None:
        """Raise ``errors.LeaseLost`` when the claim is believed gone (no I/O)."""
        ...

    async def confirm(self) -> None:
        """The same, asking the store."""
        ...


class AssistantsSession:
    """One run, created or adopted, followed and answered."""

    def __init__(
        self,
        client: client_mod.AssistantsClient,
        settings: config.Config,
        thread_id: str,
        *,
        emit: Emit,
        body: models.CreateRun | None = None,
        run_id: str | None = None,
        on_run: OnRun | None = None,
        owns: Callable[[models.Run], bool] | None = None,
        fence: Fence | None = None,
        deadline: float | None = None,
    ) -> None:
        """Create a run from ``body``, or adopt ``run_id``. ``on_run`` is awaited with the
        run we created before anything else happens to it; ``owns`` recognises an active run
        another attempt of the same job made (adopted when it refuses our create);
        ``deadline`` bounds waiting for another run and streaming (absolute Unix time)."""
        if (body is None) == (run_id is None):
            raise ValueError("give a create body or a run id")
        self.client = client
        self.settings = settings
        self.thread_id = thread_id
        self.emit = emit
        self.body = body
        self.run_id = run_id
        self.on_run = on_run
        self.owns = owns
        self.fence = fence
        self.deadline = deadline
        self.stream = settings.poll.mode != "poll"
        self.started = time.time()
        self.run_: models.Run | None = None
        #: (reference, start) of a create whose run we do not know yet.
        self.creating: tuple[str, float] | None = None
        self.created: models.Run | None = None
        self.fell_back = False
        self.poller = polling.Poller(settings.poll)
        #: The reply as the stream showed it (assistant messages completed).
        self.streamed_reply: str | None = None
        self.reply: str | None = None
        self.steps_seen: set[str] = set()
        self.unknown_seen: set[str] = set()
        #: Message text already sent as MessageDelta events, by message id.
        self.delta_texts: dict[str, str] = {}

    @property
    def scope(self) -> str:
        """The thread."""
        return self.thread_id

    # --- the seam ---------------------------------------------------------------------------

    async def open(self) -> Obs:
        if self.run_id is not None:
            response = await self.client.retrieve_run_response(self.thread_id, self.run_id)
            run = response.data
            self.poller.reset(response.poll_after_ms)
            await self.emit(events.RunAdopted(run_id=run.id, thread_id=run.thread_id, run=run))
            await self.observe_run(run)
        else:
            assert self.body is not None
            try:
                await opening.open_create(self, self.body)
            except Exception as exc:
                made = self.run_ or self.created
                if made is not None:  # the run it leaves behind (recording it failed, say)
                    exc.add_note(f"run {made.id} on thread {made.thread_id}")
                raise
        return await self._observation()

    async def observe(self, current: Obs, until: float) -> Obs:
        await self.poller.pause(until)
        response = await self.client.retrieve_run_response(self.thread_id, current.id)
        changed = await self.observe_run(response.data)
        self.poller.seen(changed=changed, hint_ms=response.poll_after_ms)
        return await self._observation()

    async def answer(
        self,
        current: Obs,
        outputs: Sequence[base.ToolOutput],
        approvals_: Sequence[base.ApprovalAnswer],
        landed: Callable[[str], Awaitable[None]],
    ) -> Obs:
        async def took() -> None:
            await landed(current.id)

        await submitting.submit(
            self,
            current.obj,
            [models.ToolOutput(o.tool_call_id, o.output) for o in outputs],
            [_approval(a) for a in approvals_],
            took,
        )
        self.poller.reset(self.poller.hint_ms)
        return await self._observation()

    async def cancel(self, current: Obs | None, *, until: float, wait: bool) -> Obs | None:
        # The latest view: the loop's may be older (a handler failed on a newer one).
        run = self.run_ or self.created or (current.obj if current is not None else None)
        answered: models.Run | None = None
        with anyio.move_on_after(max(0.0, until - time.time())):
            if run is None and self.creating is not None:
                found = await self._find_own_after_abort()  # a create cut off in flight
                run = found.data if found is not None else None
            if run is not None and not run.is_terminal:
                answered = await self.request_cancel(run.id)
                if wait and answered is None and run is self.run_:
                    # Refused as over: it ended meanwhile; how is what the caller reports.
                    response = await self.client.retrieve_run_response(self.thread_id, run.id)
                    await self.observe_run(response.data)
                elif wait and answered is not None and not answered.is_terminal:
                    await self.observe_run(await self.wait_terminal(run.id, deadline=None))
        if wait:
            return await self._observation() if self.run_ is not None else None
        return None if answered is None else await self._observation(answered, reply=False)

    async def recover(self, client_id: str) -> Obs | None:
        found = await recovery.find_run(self.client, self.thread_id, client_id, self.started)
        if found is None:
            return None
        await self.observe_run(found.data)
        return await self._observation()

    def requested(self, current: Obs, reused: Sequence[str]) -> events.Event:
        return events.ToolCallsRequested(
            run_id=current.id,
            thread_id=self.thread_id,
            calls=list(current.obj.tool_calls),
            reused=list(reused),
        )

    def finished(self, last: Obs, outcome: str, rounds: int) -> events.Event:
        return events.RunFinished(
            run_id=last.id,
            thread_id=self.thread_id,
            run=last.obj,
            outcome=outcome,
            reply=last.reply,
        )

    # --- what the loop sees -----------------------------------------------------------------

    async def _observation(self, run: models.Run | None = None, *, reply: bool = True) -> Obs:
        """What the loop acts on: the latest view of the run (or ``run``), with the reply
        once it is over."""
        if run is None:
            run = self.run_
        assert run is not None
        text = await self._final_reply(run) if reply and run.is_terminal else None
        calls = [_call(c) for c in run.tool_calls]
        approvals_ = [
            base.ApprovalCall(
                id=c.id,
                server_label=_text(c.server_label),
                name=_text(c.name),
                arguments=_text(c.arguments),
            )
            for c in run.approval_calls
        ]
        if run.requires_action and not calls and not approvals_:
            # An action of a kind we cannot answer: reported once; the loop keeps waiting.
            kind = run.required_action.type if run.required_action else "none"
            await self._unknown(run, f"requires_action:{kind}")
        return base.Observation(
            obj=run,
            id=run.id,
            status=run.status,
            calls=calls,
            approvals=approvals_,
            expires_at=None if run.expires_at is None else float(run.expires_at),
            lifetime=self._lifetime(run),
            done=run.is_terminal,
            reply=text,
        )

    async def _final_reply(self, run: models.Run) -> str | None:
        """The reply of a finished run: what the stream showed, unless the stream broke (then
        the thread's messages, which poll mode reads anyway)."""
        if self.reply is not None:
            return self.reply
        reply = None if self.fell_back else self.streamed_reply
        if reply is None and run.status in {"completed", "incomplete"}:
            reply = await self._fetch_reply(run)
        self.reply = reply
        return reply

    async def observe_run(self, run: models.Run) -> bool:
        """Take a new view of the run; report a status change. True when the status changed."""
        previous = self.run_.status if self.run_ is not None else None
        self.run_ = run
        if run.status == previous:
            return False
        log.info(
            "status %s -> %s",
            previous,
            run.status,
            extra={"run_id": run.id, "action": "status", "status": run.status},
        )
        await self.emit(
            events.StatusChanged(
                run_id=run.id,
                thread_id=run.thread_id,
                previous=previous,
                current=run.status,
                run=run,
            )
        )
        if run.known_status is None:
            await self._unknown(run, run.status)
        if (
            self.settings.poll.fetch_steps
            and (not self.stream or self.fell_back)
            and (run.requires_action or run.is_terminal)
        ):
            await self._report_steps(run)
        return True

    async def _unknown(self, run: models.Run, status: str) -> None:
        """A status (or action) this code does not know: reported once; the loop waits on."""
        if status in self.unknown_seen:
            return
        self.unknown_seen.add(status)
        log.warning(
            "unknown run status %r; still waiting",
            status,
            extra={"run_id": run.id, "action": "unknown_status"},
        )
        await self.emit(events.UnknownStatus(run_id=run.id, thread_id=run.thread_id, status=status))

    async def _report_steps(self, run: models.Run) -> None:
        """Poll mode's view of the steps: each completed step reported once, in order."""
        async for step in self.client.iter_run_steps(run.thread_id, run.id, order="asc"):
            if step.status == "completed" and step.id not in self.steps_seen:
                self.steps_seen.add(step.id)
                await self.emit(
                    events.StepCompleted(run_id=run.id, thread_id=run.thread_id, step=step)
                )
                await approvals.report_server_tools(step, self.emit)

    # --- time -------------------------------------------------------------------------------

    def _lifetime(self, run: models.Run | None) -> float:
        """When the run cannot still be live: its expiry (or the API's usual lifetime from
        when we started, for a run that shows none) plus a grace."""
        ends = run.expires_at if run is not None and run.expires_at is not None else None
        return (self.started + RUN_LIFETIME if ends is None else ends) + base.EXPIRY_GRACE

    def hard_deadline(self) -> float:
        """When to give up waiting: the caller's deadline, or the run's lifetime."""
        lifetime = self._lifetime(self.run_)
        return lifetime if self.deadline is None else min(self.deadline, lifetime)

    def time_left(self) -> float:
        return max(0.0, self.hard_deadline() - time.time())

    def check_claim(self) -> None:
        """Right before a request with side effects: the worker's claim must still hold."""
        if self.fence is not None:
            self.fence.check()

    # --- creating ---------------------------------------------------------------------------

    def active_run_id(self, exc: errors.BadRequestError) -> str | None:
        """The run a create was refused for (it holds the thread), if that was the reason."""
        match = _ACTIVE_RUN.search(exc.message)
        return None if match is None else match.group(1)

    async def find_own(self) -> client_mod.Response[models.Run] | None:
        assert self.creating is not None
        ref, since = self.creating
        return await recovery.find_run(self.client, self.thread_id, ref, since)

    async def _find_own_after_abort(self) -> client_mod.Response[models.Run] | None:
        """Our create was cut off in flight; the server may apply it a moment later (a
        streaming create is not shielded), so look a few times before concluding none."""
        for pause in base.ABORT_LOOKUPS:
            await anyio.sleep(pause)
            found = await self.find_own()
            if found is not None:
                return found
        return None

    async def created_run(self, run: models.Run) -> None:
        """Our run exists: record it (``on_run``), report it, follow it."""
        self.creating = None
        self.created = run  # ours from now on, even if ``on_run`` fails: cancelled on abort
        if self.on_run is not None:
            await self.on_run(run)
        await self.emit(events.RunCreated(run_id=run.id, thread_id=run.thread_id, run=run))
        log.info(
            "run created on %s",
            run.thread_id,
            extra={"run_id": run.id, "action": "created"},
        )
        await self.observe_run(run)

    # --- submitting -------------------------------------------------------------------------

    # --- cancelling, waiting, the reply -----------------------------------------------------

    async def request_cancel(self, run_id: str) -> models.Run | None:
        """Ask the server to cancel ``run_id``; the run as it answered (None: already over)."""
        try:
            run = await self.client.cancel_run(self.thread_id, run_id)
        except errors.BadRequestError:
            return None  # already finished: nothing to cancel
        if self.run_ is not None and run.id == self.run_.id:
            await self.observe_run(run)
        return run

    async def wait_terminal(self, run_id: str, *, deadline: float | None) -> models.Run:
        """Poll another run (or ours, after a cancel) until it no longer holds the thread."""
        poller = polling.Poller(self.settings.poll)
        while True:
            response = await self.client.retrieve_run_response(self.thread_id, run_id)
            run = response.data
            if run.is_terminal:
                return run
            if deadline is not None and time.time() >= deadline:
                raise errors.RunError(f"run {run_id} on {self.thread_id} did not finish in time")
            poller.hint_ms = response.poll_after_ms
            await anyio.sleep(poller.delay())
            poller.seen(changed=False, hint_ms=poller.hint_ms)  # back off from the next one

    async def _fetch_reply(self, run: models.Run) -> str | None:
        try:
            page = await self.client.list_messages(run.thread_id, run_id=run.id, order="asc")
        except (errors.APIError, errors.TransientError, errors.DecodeError) as exc:
            # The run is done either way; a server without the messages endpoint, say.
            log.warning(
                "could not read the reply: %s", exc, extra={"run_id": run.id, "action": "reply"}
            )
            return None
        texts = [m.text for m in page.data if m.role == "assistant" and m.text]
        for message in page.data:
            if message.role == "assistant" and message.text:
                # poll mode: the whole message; after a stream cut: what the stream did not show
                sent = self.delta_texts.get(message.id, "")
                if message.text.startswith(sent) and len(message.text) > len(sent):
                    await self.message_delta(run, message.id, message.text[len(sent) :])
        return "\n".join(texts) if texts else None

    async def message_delta(self, run: models.Run, message_id: str, text: str) -> None:
        self.delta_texts[message_id] = self.delta_texts.get(message_id, "") + text
        await self.emit(
            events.MessageDelta(
                run_id=run.id, thread_id=run.thread_id, message_id=message_id, text=text
            )
        )


def _call(call: models.RequiredToolCall) -> base.ToolCall:
    function = call.function
    if function is None:
        # Not a function we can call: dispatch answers it as an unsupported call type.
        kind = call.type if call.type != "function" else "function (without a function)"
        return base.ToolCall(id=call.id, name=_text(call.name), type=kind)
    return base.ToolCall(
        id=call.id, name=function.name, arguments=function.arguments, type=call.type
    )


def _approval(answer: base.ApprovalAnswer) -> models.ToolApproval:
    headers = answer.headers if answer.headers is not None else msgspec.UNSET
    return models.ToolApproval(
        tool_call_id=answer.tool_call_id, approve=answer.approve, headers=headers
    )


def _text(value: str | msgspec.UnsetType) -> str:
    return value if isinstance(value, str) else ""

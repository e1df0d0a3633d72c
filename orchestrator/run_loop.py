"""The state machine that drives one run to a terminal state, by polling or by SSE.

Both modes feed the same transition logic (``RunLoop._observe``), so they report the same events;
a broken stream falls back to polling from the last known state without repeating an event. The
loop always ends: a run past its deadline (``run.run_timeout``, or its ``expires_at`` plus a
grace) is cancelled and reported.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import msgspec

from orchestrator import approvals, config, errors, events, recovery
from orchestrator.http import retrying
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models, streaming
from orchestrator.tools import dispatch

if TYPE_CHECKING:
    from orchestrator import driver as driver_mod

__all__ = ["Emit", "Ledger", "RunLoop", "RunResult"]

log = logging.getLogger(__name__)

#: Seconds after ``expires_at`` we still wait for the server to expire the run itself.
EXPIRY_GRACE: Final = 30.0
#: Seconds a run lives when it shows no ``expires_at`` (the API's runs expire after ~10 min).
RUN_LIFETIME: Final = 600.0
#: A create refused because another run holds the thread: "Thread t already has an active run
#: r." (create), or "Can't add messages to t while a run r is active." (a create carrying
#: ``additional_messages``); group 1 is that run's id.
_ACTIVE_RUN = re.compile(r"(?:already has an active run|while a run) (\S+?)(?: is active)?\.?$")
#: Pauses between the looks for a run whose create was cut off in flight (within cancel_timeout).
_ABORT_LOOKUPS: Final = (0.0, 0.25, 0.75)
#: Statuses of a run that moved on without taking a round's outputs.
_NOT_TAKEN: Final = frozenset({"expired", "cancelled", "cancelling", "failed"})

Emit = Callable[[events.Event], Awaitable[None]]
OpenStream = AbstractAsyncContextManager[AsyncIterator[streaming.ServerEvent]]


class Ledger(Protocol):
    """Where a durable caller (the worker) keeps each tool round's lifecycle.

    ``begin`` before a round's calls run (it may refuse: ``errors.LeaseLost``), ``save`` each
    output before it is submitted, ``submitted`` once the server took the round. ``check`` is
    the cheap test made right before each side effect (each tool body, each submit).
    """

    async def outputs(self, run_id: str) -> dict[str, str]:
        """Outputs already stored for the run's tool calls, by call id."""
        ...

    async def submitted_calls(self, run_id: str) -> set[str]:
        """Call ids of rounds the server already took."""
        ...

    async def begin(self, run_id: str, tool_call_ids: Sequence[str]) -> dict[str, int]:
        """Record that these calls are about to run; each call's attempt number."""
        ...

    async def save(self, run_id: str, tool_call_id: str, output: str) -> None:
        """Store one output; must be durable when it returns."""
        ...

    async def submitted(self, run_id: str, tool_call_ids: Sequence[str]) -> None:
        """Record that the server took these outputs."""
        ...

    async def confirm(self) -> None:
        """Prove the right to act (before creating a run); raise ``errors.LeaseLost`` if gone."""
        ...

    def check(self) -> None:
        """Raise ``errors.LeaseLost`` when the right to act is believed gone (no I/O)."""
        ...


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """How a run ended."""

    run: models.Run
    #: The final status, or ``timed_out`` / ``tool_failed`` when the driver cancelled the run.
    outcome: str
    #: Every output submitted, in submission order.
    outputs: list[models.ToolOutput] = []
    #: The assistant's reply text, when there is one.
    reply: str | None = None
    #: How many ``requires_action`` rounds were answered.
    rounds: int = 0

    @property
    def ok(self) -> bool:
        """The run completed."""
        return self.outcome == models.RunStatus.COMPLETED


class RunLoop:
    """The state machine of one run being driven: open, follow, answer, finish."""

    def __init__(
        self,
        driver: driver_mod.Driver,
        *,
        emit: Emit,
        ledger: Ledger | None,
        attempt: int = 1,
        deadline: float | None = None,
        owns: Callable[[models.Run], bool] | None = None,
    ) -> None:
        """``deadline``: absolute Unix time when the run is given up (default from
        ``run.run_timeout``); ``attempt``: passed on to tools as ``ToolContext.attempt``;
        ``owns``: recognises an active run that another attempt of the same job made (the
        worker's job id in its metadata), adopted when it refuses our create."""
        self.attempt = attempt
        self.owns = owns
        self.client = driver.client
        self.registry = driver.registry
        self.settings = driver.settings
        self.tool_limiter = driver.tool_limiter
        self.cancel_on_abort = driver.cancel_on_abort
        self.approver = driver.approver
        self.emit = emit
        self.ledger = ledger
        self.run_: models.Run | None = None
        self.stream = driver.settings.poll.mode != "poll"
        self.answered: dict[str, str] = {}
        self.submitted_ids: set[str] = set()
        self.outputs: list[models.ToolOutput] = []
        self.rounds = 0
        self.reply: str | None = None
        self.fell_back = False
        self.hint_ms: int | None = None
        self.unknown_seen: set[str] = set()
        self.steps_seen: set[str] = set()
        #: (thread id, reference, start) of a create whose run we do not know yet.
        self.creating: tuple[str, str, float] | None = None
        self.created: models.Run | None = None
        #: The run whose submitted rounds were read from the ledger.
        self.ledger_run: str | None = None
        #: Message text already sent as MessageDelta events, by message id.
        self.delta_texts: dict[str, str] = {}
        timeout = driver.settings.run.run_timeout
        self.started = time.time()
        if deadline is None and timeout is not None:
            deadline = self.started + timeout
        self.deadline = deadline

    # --- opening ---------------------------------------------------------------------------

    async def open_create(
        self,
        thread_id: str,
        body: models.CreateRun,
        on_run: Callable[[models.Run], Awaitable[None]] | None,
    ) -> None:
        metadata = body.metadata if isinstance(body.metadata, dict) else None
        ref = recovery.ref_of(metadata) or recovery.new_ref()
        body = msgspec.structs.replace(body, metadata=recovery.tagged(metadata, ref))
        waited: str | None = None
        while True:
            if self.ledger is not None:
                await self.ledger.confirm()  # never start a run for a job we no longer hold
            self.creating = (thread_id, ref, time.time())
            try:
                await self._create(thread_id, body, ref, on_run)
                return
            except errors.BadRequestError as exc:
                match = _ACTIVE_RUN.search(exc.message)
                if match is None:
                    raise
                self.creating = None
                other = match.group(1)
                if other == waited:
                    # Seen over, still refused for it (a lagging view): back off, bounded.
                    if time.time() >= self._hard_deadline(None):
                        raise errors.ThreadBusyError(
                            str(exc.message), thread_id=thread_id, run_id=other
                        ) from exc
                    await anyio.sleep(_next_poll(self.settings.poll, 0.5, self.hint_ms))
                if self.ledger is not None:
                    await self.ledger.confirm()  # about to wait for, or cancel, another run
                await self._thread_busy(thread_id, other, exc)
                waited = other

    async def _find_own_after_abort(self) -> client_mod.Response[models.Run] | None:
        """Our create was cut off in flight; the server may apply it a moment later (a
        streaming create is not shielded), so look a few times before concluding none."""
        for pause in _ABORT_LOOKUPS:
            await anyio.sleep(pause)
            found = await self._find_own()
            if found is not None:
                return found
        return None

    def _check_claim(self) -> None:
        """Right before a request with side effects: the worker's claim must still hold."""
        if self.ledger is not None:
            self.ledger.check()

    async def _find_own(self) -> client_mod.Response[models.Run] | None:
        assert self.creating is not None
        thread_id, ref, since = self.creating
        return await recovery.find_run(self.client, thread_id, ref, since)

    async def _own_active(
        self, thread_id: str, ref: str, refusal: errors.BadRequestError
    ) -> client_mod.Response[models.Run] | None:
        """A create refused for an active run: ours when it carries our reference (an
        earlier attempt made it); anybody else's run is never adopted."""
        match = _ACTIVE_RUN.search(refusal.message)
        if match is None:
            return None
        response = await self.client.retrieve_run_response(thread_id, match.group(1))
        run = response.data
        if recovery.ref_of(run.metadata) == ref:
            return response
        if self.owns is not None and not run.is_terminal and self.owns(run):
            log.info(
                "the thread's active run %s belongs to this job (an earlier attempt made it)",
                run.id,
                extra={"run_id": run.id, "action": "adopt_own"},
            )
            return response
        return None

    async def _create(
        self,
        thread_id: str,
        body: models.CreateRun,
        ref: str,
        on_run: Callable[[models.Run], Awaitable[None]] | None,
    ) -> None:
        """Create the run by streaming when configured (``auto``: unless refused), else plainly;
        either way at most one run, found by ``ref`` after any attempt with an unknown outcome."""
        if self.stream:
            try:
                await self._create_streaming(thread_id, body, ref, on_run)
                return
            except (errors.BadRequestError, errors.NotFoundError) as exc:
                if self.settings.poll.mode != "auto" or _ACTIVE_RUN.search(exc.message):
                    raise
                log.info("endpoint refused streaming (%s); polling instead", exc.message)
                self.stream = False

        async def send() -> client_mod.Response[models.Run]:
            try:
                # Shielded (the request has its own timeout): a caller cancelled meanwhile
                # still learns the run it created, and cancels it.
                self._check_claim()
                with anyio.CancelScope(shield=True):
                    response = await self.client.create_run_response(thread_id, body, retry=False)
                return response
            except errors.BadRequestError as exc:
                if (own := await self._own_active(thread_id, ref, exc)) is None:
                    raise
                return own

        response = await recovery.exactly_once(
            self.settings.retry, send, self._find_own, what="create_run"
        )
        self.hint_ms = response.poll_after_ms
        await self._created(response.data, on_run)

    async def _create_streaming(
        self,
        thread_id: str,
        body: models.CreateRun,
        ref: str,
        on_run: Callable[[models.Run], Awaitable[None]] | None,
    ) -> None:
        async def send() -> bool:
            self._check_claim()
            try:
                with anyio.move_on_after(self._time_left()):
                    async with self.client.create_run_stream(
                        thread_id, body, retry=False
                    ) as events_:
                        await self._consume(events_, created=True, on_run=on_run)
            except errors.BadRequestError as exc:
                if (own := await self._own_active(thread_id, ref, exc)) is None:
                    raise
                await self._adopt_found(own.data, on_run)
            if self.run_ is None:
                raise retrying.Retryable(
                    errors.APIConnectionError("create_run_stream: no run event before the end")
                )
            return True

        async def find() -> bool | None:
            found = await self._find_own()
            if found is None:
                return None
            await self._adopt_found(found.data, on_run)
            return True

        await recovery.exactly_once(self.settings.retry, send, find, what="create_run_stream")

    async def _adopt_found(
        self, run: models.Run, on_run: Callable[[models.Run], Awaitable[None]] | None
    ) -> None:
        """Our run, found after its stream was lost: follow it by polling."""
        await self._created(run, on_run)
        await self._fallback("the run's stream was lost before it started")

    async def open_adopt(self, thread_id: str, run_id: str) -> None:
        response = await self.client.retrieve_run_response(thread_id, run_id)
        run = response.data
        self.hint_ms = response.poll_after_ms
        await self.emit(events.RunAdopted(run_id=run.id, thread_id=run.thread_id, run=run))
        await self._observe(run)

    async def _created(
        self, run: models.Run, on_run: Callable[[models.Run], Awaitable[None]] | None
    ) -> None:
        self.creating = None
        self.created = run  # ours from now on, even if ``on_run`` fails: cancelled on abort
        if on_run is not None:
            await on_run(run)
        await self.emit(events.RunCreated(run_id=run.id, thread_id=run.thread_id, run=run))
        log.info(
            "run created on %s",
            run.thread_id,
            extra={"run_id": run.id, "action": "created"},
        )
        await self._observe(run)

    async def _thread_busy(self, thread_id: str, other: str, exc: errors.BadRequestError) -> None:
        policy = self.settings.run.if_active
        if policy == "error":
            raise errors.ThreadBusyError(
                str(exc.message), thread_id=thread_id, run_id=other
            ) from exc
        log.info(
            "thread %s has an active run; %s",
            thread_id,
            "cancelling it" if policy == "cancel" else "waiting for it",
            extra={"run_id": other, "action": f"if_active_{policy}"},
        )
        if policy == "cancel":
            await self._request_cancel(thread_id, other)
        await self._wait_terminal(thread_id, other, deadline=self.deadline)

    # --- the loop --------------------------------------------------------------------------

    async def run(self, opening: Awaitable[None]) -> RunResult:
        """Open the run, follow it to its end, report ``RunFinished``."""
        outcome: str | None = None
        try:
            await opening
            outcome = await self._follow()
        except BaseException as exc:
            await self._on_abort(exc)
            raise
        run = self.run_
        assert run is not None  # _follow returns only with a run
        if self.fell_back:
            self.reply = None  # what the stream showed may be cut short: read the thread
        if self.reply is None and run.status in {"completed", "incomplete"}:
            self.reply = await self._fetch_reply(run)
        await self.emit(
            events.RunFinished(
                run_id=run.id, thread_id=run.thread_id, run=run, outcome=outcome, reply=self.reply
            )
        )
        log.info(
            "run finished: %s",
            outcome,
            extra={"run_id": run.id, "action": "finished", "rounds": self.rounds},
        )
        return RunResult(
            run=run, outcome=outcome, outputs=self.outputs, reply=self.reply, rounds=self.rounds
        )

    async def _on_abort(self, exc: BaseException) -> None:
        """Leave no thread locked when driving stops early: cancel our run, even one whose
        create was in flight (found by its reference). A worker (``cancel_on_abort`` off)
        leaves the run to be resumed instead."""
        run = self.run_ or self.created
        if run is not None and isinstance(exc, Exception):
            exc.add_note(f"run {run.id} on thread {run.thread_id}")
        if not self.cancel_on_abort or (run is not None and run.is_terminal):
            return
        if isinstance(exc, approvals.ApprovalPending):
            return  # a deliberate pause: the run waits for the caller's decision
        if run is None and self.creating is None:
            return  # nothing was created
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.run.cancel_timeout):
            try:
                if run is None:
                    found = await self._find_own_after_abort()
                    if found is None or found.data.is_terminal:
                        return
                    run = found.data
                # A caller going away (a service's client disconnecting) is routine.
                log.log(
                    logging.INFO if cancelled else logging.WARNING,
                    "driver stopped (%s); cancelling the run",
                    "caller cancelled" if cancelled else type(exc).__name__,
                    extra={"run_id": run.id, "action": "cancel"},
                )
                await self._request_cancel(run.thread_id, run.id)
            except errors.OrchestratorError as cancel_exc:
                log.warning(
                    "could not cancel the run: %s",
                    cancel_exc,
                    extra={"run_id": run.id if run else None, "action": "cancel_failed"},
                )

    async def _follow(self) -> str:
        poll = self.settings.poll
        interval = poll.initial_interval
        while True:
            run = self.run_
            assert run is not None
            if run.is_terminal:
                return run.status
            if self._past_deadline(run):
                log.warning(
                    "run passed its deadline in status %s; cancelling it",
                    run.status,
                    extra={"run_id": run.id, "action": "timeout"},
                )
                return await self._cancel_and_wait("timed_out")
            if run.requires_action and self.ledger is not None and run.id != self.ledger_run:
                # A resumed job: rounds the server already took are old views, not new rounds.
                self.ledger_run = run.id
                self.submitted_ids |= await self.ledger.submitted_calls(run.id)
            if run.requires_action and run.tool_calls and not self._stale_action(run):
                try:
                    await self._answer(run)
                except errors.ToolFailure as exc:
                    log.warning(
                        "tool %s failed with on_error=raise; cancelling the run",
                        exc.tool_name,
                        extra={"run_id": run.id, "action": "tool_failed"},
                    )
                    return await self._cancel_and_wait("tool_failed")
                interval = poll.initial_interval
                continue
            if run.approval_calls and not self._stale_action(run):
                await self._answer_approvals(run)
                interval = poll.initial_interval
                continue
            if run.requires_action and not run.tool_calls and not run.approval_calls:
                # An action of a kind we cannot answer: report it once, keep waiting.
                kind = run.required_action.type if run.required_action else "none"
                await self._unknown(run, f"requires_action:{kind}")
            await anyio.sleep(self._delay(interval, run))
            response = await self.client.retrieve_run_response(run.thread_id, run.id)
            self.hint_ms = response.poll_after_ms
            changed = await self._observe(response.data)
            interval = (
                poll.initial_interval
                if changed
                else min(interval * poll.multiplier, poll.max_interval)
            )

    def _stale_action(self, run: models.Run) -> bool:
        """The run still shows calls we already submitted: an old view, not a new round."""
        ids = {call.id for call in (*run.tool_calls, *run.approval_calls)}
        return bool(ids) and ids <= self.submitted_ids

    def _delay(self, interval: float, run: models.Run) -> float:
        delay = _next_poll(self.settings.poll, interval, self.hint_ms)
        return max(0.0, min(delay, self._hard_deadline(run) - time.time()))

    def _hard_deadline(self, run: models.Run | None) -> float:
        """When to give up: the caller's deadline, or the run's expiry plus a grace (a run
        that shows none is given the API's usual lifetime from when we started)."""
        ends = [d for d in (self.deadline,) if d is not None]
        if run is not None and run.expires_at is not None:
            ends.append(run.expires_at + EXPIRY_GRACE)
        else:
            ends.append(self.started + RUN_LIFETIME + EXPIRY_GRACE)
        return min(ends)

    def _past_deadline(self, run: models.Run) -> bool:
        return time.time() >= self._hard_deadline(run)

    def _time_left(self) -> float:
        return max(0.0, self._hard_deadline(self.run_) - time.time())

    async def _observe(self, run: models.Run) -> bool:
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
        """Report a status (or action) this code does not know, once; the loop keeps waiting."""
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

    # --- streaming -------------------------------------------------------------------------

    async def _consume(
        self,
        stream: AsyncIterator[streaming.ServerEvent],
        *,
        created: bool = False,
        on_run: Callable[[models.Run], Awaitable[None]] | None = None,
    ) -> None:
        """Apply a stream's events; a broken or short stream leaves the rest to polling."""
        try:
            async for event in stream:
                await self._apply(event, created=created, on_run=on_run)
                created = created and self.run_ is None
        except (errors.APIConnectionError, errors.DecodeError) as exc:
            # A cut stream or an event we cannot read: the run itself is still fine.
            if self.run_ is None:
                raise retrying.Retryable(exc) from exc  # the create's outcome is unknown
            await self._fallback(f"stream broke: {exc}")
            return
        run = self.run_
        if run is not None and not run.is_terminal and not run.requires_action:
            await self._fallback("stream ended before the run finished")

    async def _fallback(self, reason: str) -> None:
        run = self.run_
        assert run is not None
        self.fell_back = True
        log.info(reason + "; polling", extra={"run_id": run.id, "action": "stream_fallback"})
        await self.emit(
            events.StreamFallback(run_id=run.id, thread_id=run.thread_id, reason=reason)
        )

    async def _apply(
        self,
        event: streaming.ServerEvent,
        *,
        created: bool,
        on_run: Callable[[models.Run], Awaitable[None]] | None,
    ) -> None:
        match event:
            case streaming.RunEvent(run=run):
                if created and self.run_ is None:
                    await self._created(run, on_run)
                else:
                    await self._observe(run)
            case streaming.StepEvent(event="thread.run.step.completed", step=step):
                self.steps_seen.add(step.id)
                await self.emit(
                    events.StepCompleted(run_id=step.run_id, thread_id=step.thread_id, step=step)
                )
                await approvals.report_server_tools(step, self.emit)
            case streaming.StepDeltaEvent(delta=delta) if self.run_ is not None:
                await self.emit(
                    events.StepDelta(
                        run_id=self.run_.id,
                        thread_id=self.run_.thread_id,
                        step_id=delta.id,
                        delta=delta.delta,
                    )
                )
            case streaming.MessageDeltaEvent():
                text = streaming.delta_text(event.delta)
                if text and self.run_ is not None:
                    await self._message_delta(self.run_, event.delta.id, text)
            case streaming.MessageEvent(event="thread.message.completed", message=message):
                if message.role == "assistant":
                    self.reply = (self.reply + "\n" if self.reply else "") + message.text
            case streaming.UnknownEvent(event=name):
                log.debug("skipping stream event %s", name)
            case _:
                pass

    # --- requires_action -------------------------------------------------------------------

    async def _answer(self, run: models.Run) -> None:
        calls = run.tool_calls
        if self.ledger is not None:
            for call_id, output in (await self.ledger.outputs(run.id)).items():
                self.answered.setdefault(call_id, output)
        reused = [c.id for c in calls if c.id in self.answered]
        todo = [c for c in calls if c.id not in self.answered]
        self.rounds += 1
        attempts: dict[str, int] = {}
        if todo and self.ledger is not None:
            # Fenced: a job whose claim is gone starts no tool (errors.LeaseLost).
            attempts = await self.ledger.begin(run.id, [c.id for c in todo])
        await self.emit(
            events.ToolCallsRequested(
                run_id=run.id, thread_id=run.thread_id, calls=list(calls), reused=reused
            )
        )

        async def on_result(result: dispatch.ToolResult) -> None:
            if self.ledger is not None:
                await self.ledger.save(run.id, result.tool_call_id, result.output)
            self.answered[result.tool_call_id] = result.output
            await self.emit(
                events.ToolCallFinished(
                    run_id=run.id,
                    thread_id=run.thread_id,
                    tool_call_id=result.tool_call_id,
                    name=result.name,
                    output=result.output,
                    error_type=result.error.type if result.error else None,
                    error_message=result.error.message if result.error else None,
                    duration=result.duration,
                )
            )

        if todo:
            deadline = self._tool_deadline(run)
            await dispatch.dispatch(
                todo,
                self.registry,
                self.settings.tools,
                run_id=run.id,
                thread_id=run.thread_id,
                deadline=deadline,
                limiter=self.tool_limiter,
                attempt=self.attempt,
                attempts=attempts,
                guard=self.ledger.check if self.ledger is not None else None,
                on_result=on_result,
            )
        outputs = [models.ToolOutput(tool_call_id=c.id, output=self.answered[c.id]) for c in calls]
        await self._submit(run, outputs)

    def _tool_deadline(self, run: models.Run) -> float | None:
        ends = [d for d in (self.deadline, run.expires_at) if d is not None]
        return float(min(ends)) if ends else None

    async def _submit(
        self,
        run: models.Run,
        outputs: Sequence[models.ToolOutput],
        approvals_: Sequence[models.ToolApproval] = (),
    ) -> None:
        """Submit a round at most once: after any attempt that fails, the run itself tells
        whether it landed (it no longer asks for exactly these calls) before another try.
        Foundry's approval rounds go the same way with ``approvals_`` instead of outputs."""
        ids = [o.tool_call_id for o in outputs] + [a.tool_call_id for a in approvals_]
        self.submitted_ids.update(ids)
        if self.ledger is not None:
            self.ledger.check()

        async def moved_on() -> client_mod.Response[models.Run] | None:
            response = await self.client.retrieve_run_response(run.thread_id, run.id)
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
                await self._landed(run, outputs, ids)
            self.hint_ms = response.poll_after_ms
            await self._observe(response.data)
            return True

        if self.stream:

            async def send_stream() -> bool:
                self._check_claim()
                try:
                    with anyio.move_on_after(self._time_left()):
                        async with self._submit_stream(run, outputs, approvals_) as stream:
                            await self._landed(run, outputs, ids)
                            await self._consume(stream)
                except errors.BadRequestError as exc:
                    self.fell_back = True
                    return await found(await refused(exc))
                return True

            async def find_stream() -> bool | None:
                response = await moved_on()
                if response is None:
                    return None
                self.fell_back = True  # the stream is lost: what follows comes by polling
                return await found(response)

            await recovery.exactly_once(
                self.settings.retry, send_stream, find_stream, what="submit_tool_outputs"
            )
            return

        async def send() -> bool:
            self._check_claim()
            try:
                if approvals_:
                    response = await self.client.submit_tool_approvals_response(
                        run.thread_id, run.id, approvals_, retry=False
                    )
                else:
                    response = await self.client.submit_tool_outputs_response(
                        run.thread_id, run.id, outputs, retry=False
                    )
            except errors.BadRequestError as exc:
                return await found(await refused(exc))
            await self._landed(run, outputs, ids)
            self.hint_ms = response.poll_after_ms
            await self._observe(response.data)
            return True

        async def find() -> bool | None:
            response = await moved_on()
            return None if response is None else await found(response)

        await recovery.exactly_once(self.settings.retry, send, find, what="submit_tool_outputs")

    def _submit_stream(
        self,
        run: models.Run,
        outputs: Sequence[models.ToolOutput],
        approvals_: Sequence[models.ToolApproval],
    ) -> AbstractAsyncContextManager[streaming.EventStream]:
        if approvals_:
            return self.client.submit_tool_approvals_stream(
                run.thread_id, run.id, approvals_, retry=False
            )
        return self.client.submit_tool_outputs_stream(run.thread_id, run.id, outputs, retry=False)

    async def _landed(
        self, run: models.Run, outputs: Sequence[models.ToolOutput], ids: Sequence[str]
    ) -> None:
        """The server took the round (outputs, or approval decisions)."""
        self.outputs.extend(outputs)
        if self.ledger is not None:
            await self.ledger.submitted(run.id, ids)
        if outputs:
            await self._emit_submitted(run, outputs)

    async def _emit_submitted(self, run: models.Run, outputs: Sequence[models.ToolOutput]) -> None:
        log.info(
            "submitted %d tool outputs",
            len(outputs),
            extra={"run_id": run.id, "action": "submitted"},
        )
        await self.emit(
            events.OutputsSubmitted(run_id=run.id, thread_id=run.thread_id, outputs=list(outputs))
        )

    async def _answer_approvals(self, run: models.Run) -> None:
        """Foundry's ``submit_tool_approval``: decide (ledger, hook or policy), then submit the
        decisions as a round (the ledger keeps them like outputs)."""
        answers = await self.approver.decide(run, ledger=self.ledger, emit=self.emit)
        self.rounds += 1
        await self._submit(run, (), answers)

    # --- cancelling and finishing ----------------------------------------------------------

    async def _request_cancel(self, thread_id: str, run_id: str) -> None:
        try:
            run = await self.client.cancel_run(thread_id, run_id)
        except errors.BadRequestError:
            return  # already finished: nothing to cancel
        if self.run_ is not None and run.id == self.run_.id:
            await self._observe(run)

    async def _cancel_and_wait(self, outcome: str) -> str:
        """Cancel our run and wait (bounded, shielded) for it to end; the outcome to report:
        ``outcome`` if it ended cancelled, else the status it reached on its own first."""
        run = self.run_
        assert run is not None
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.run.cancel_timeout):
            await self._request_cancel(run.thread_id, run.id)
            final = await self._wait_terminal(run.thread_id, run.id, deadline=None)
            await self._observe(final)
        final_run = self.run_ if self.run_ is not None else run
        if final_run.is_terminal and final_run.status != models.RunStatus.CANCELLED:
            return final_run.status  # it ended by itself before the cancel landed
        return outcome

    async def _wait_terminal(
        self, thread_id: str, run_id: str, *, deadline: float | None
    ) -> models.Run:
        """Poll another run (or ours, after a cancel) until it no longer holds the thread."""
        poll = self.settings.poll
        interval = poll.initial_interval
        while True:
            response = await self.client.retrieve_run_response(thread_id, run_id)
            run = response.data
            if run.is_terminal:
                return run
            if deadline is not None and time.time() >= deadline:
                raise errors.RunError(f"run {run_id} on {thread_id} did not finish in time")
            await anyio.sleep(_next_poll(poll, interval, response.poll_after_ms))
            interval = min(interval * poll.multiplier, poll.max_interval)

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
                    await self._message_delta(run, message.id, message.text[len(sent) :])
        return "\n".join(texts) if texts else None

    async def _message_delta(self, run: models.Run, message_id: str, text: str) -> None:
        self.delta_texts[message_id] = self.delta_texts.get(message_id, "") + text
        await self.emit(
            events.MessageDelta(
                run_id=run.id, thread_id=run.thread_id, message_id=message_id, text=text
            )
        )


def _next_poll(poll: config.PollConfig, interval: float, hint_ms: int | None) -> float:
    """Seconds to the next poll: the back-off interval with jitter, never sooner than the
    server's ``openai-poll-after-ms`` when it is honoured."""
    delay = interval * random.uniform(1 - poll.jitter, 1 + poll.jitter)
    if poll.honour_server_hint and hint_ms is not None and hint_ms > 0:
        delay = max(delay, hint_ms / 1000)
    return delay

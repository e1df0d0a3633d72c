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

from orchestrator import approvals, config, dispatch, errors, events, models, streaming
from orchestrator import client as client_mod

if TYPE_CHECKING:
    from orchestrator import driver as driver_mod

__all__ = ["Emit", "Ledger", "RunLoop", "RunResult"]

log = logging.getLogger(__name__)

#: Seconds after ``expires_at`` we still wait for the server to expire the run itself.
EXPIRY_GRACE: Final = 30.0
#: Seconds a run lives when it shows no ``expires_at`` (the API's runs expire after ~10 min).
RUN_LIFETIME: Final = 600.0
_ACTIVE_RUN = re.compile(r"already has an active run (\S+?)\.?$")
_NOT_ACCEPTING = "do not accept tool outputs"

Emit = Callable[[events.Event], Awaitable[None]]
OpenStream = AbstractAsyncContextManager[AsyncIterator[streaming.ServerEvent]]


class Ledger(Protocol):
    """Where tool outputs are kept before they are submitted (the worker's durable store)."""

    async def outputs(self, run_id: str) -> dict[str, str]:
        """Outputs already stored for the run's tool calls, by call id."""
        ...

    async def save(self, run_id: str, tool_call_id: str, output: str) -> None:
        """Store one output; must be durable when it returns."""
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
    ) -> None:
        """``deadline``: absolute Unix time when the run is given up (default from
        ``run.run_timeout``); ``attempt``: passed on to tools as ``ToolContext.attempt``."""
        self.attempt = attempt
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
        while True:
            try:
                await self._create(thread_id, body, on_run)
                return
            except errors.BadRequestError as exc:
                match = _ACTIVE_RUN.search(exc.message)
                if match is None:
                    raise
                await self._thread_busy(thread_id, match.group(1), exc)

    async def _create(
        self,
        thread_id: str,
        body: models.CreateRun,
        on_run: Callable[[models.Run], Awaitable[None]] | None,
    ) -> None:
        await self._open(
            lambda: self.client.create_run_stream(thread_id, body),
            lambda: self.client.create_run_response(thread_id, body),
            on_run,
        )

    async def open_thread_and_run(
        self,
        body: models.CreateThreadAndRun,
        on_run: Callable[[models.Run], Awaitable[None]] | None,
    ) -> None:
        await self._open(
            lambda: self.client.create_thread_and_run_stream(body),
            lambda: self.client.create_thread_and_run_response(body),
            on_run,
        )

    async def _open(
        self,
        stream: Callable[[], OpenStream],
        plain: Callable[[], Awaitable[client_mod.Response[models.Run]]],
        on_run: Callable[[models.Run], Awaitable[None]] | None,
    ) -> None:
        """Create the run by streaming when configured (``auto``: unless refused), else plainly."""
        if self.stream:
            try:
                with anyio.move_on_after(self._time_left()):
                    async with stream() as events_:
                        await self._consume(events_, created=True, on_run=on_run)
                if self.run_ is None:
                    raise errors.RunError("the stream ended before the run was created")
                return
            except (errors.BadRequestError, errors.NotFoundError) as exc:
                if self.settings.poll.mode != "auto" or _ACTIVE_RUN.search(exc.message):
                    raise
                log.info("endpoint refused streaming (%s); polling instead", exc.message)
                self.stream = False
        response = await plain()
        await self._created(response.data, on_run)
        self.hint_ms = response.poll_after_ms

    async def open_adopt(self, thread_id: str, run_id: str) -> None:
        response = await self.client.retrieve_run_response(thread_id, run_id)
        run = response.data
        self.hint_ms = response.poll_after_ms
        await self.emit(events.RunAdopted(run_id=run.id, thread_id=run.thread_id, run=run))
        await self._observe(run)

    async def _created(
        self, run: models.Run, on_run: Callable[[models.Run], Awaitable[None]] | None
    ) -> None:
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
            if self._should_cancel(exc):
                await self._abort(exc)
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

    def _should_cancel(self, exc: BaseException) -> bool:
        """Leave no thread locked when driving stops early; a worker (``cancel_on_abort``
        off) leaves the run to be resumed instead."""
        if self.run_ is None or self.run_.is_terminal:
            return False
        if isinstance(exc, Exception):
            exc.add_note(f"run {self.run_.id} on thread {self.run_.thread_id}")
        return self.cancel_on_abort

    async def _abort(self, exc: BaseException) -> None:
        run = self.run_
        assert run is not None
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        log.warning(
            "driver stopped (%s); cancelling the run",
            "caller cancelled" if cancelled else type(exc).__name__,
            extra={"run_id": run.id, "action": "cancel"},
        )
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.run.cancel_timeout):
            try:
                await self._request_cancel(run.thread_id, run.id)
            except errors.OrchestratorError as cancel_exc:
                log.warning(
                    "could not cancel the run: %s",
                    cancel_exc,
                    extra={"run_id": run.id, "action": "cancel_failed"},
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
        except errors.APIConnectionError as exc:
            if self.run_ is None:
                raise
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
            case streaming.MessageDeltaEvent():
                text = streaming.delta_text(event.delta)
                if text and self.run_ is not None:
                    await self.emit(
                        events.MessageDelta(
                            run_id=self.run_.id,
                            thread_id=self.run_.thread_id,
                            message_id=event.delta.id,
                            text=text,
                        )
                    )
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
        stored = await self.ledger.outputs(run.id) if self.ledger is not None else {}
        for call_id, output in stored.items():
            self.answered.setdefault(call_id, output)
        reused = [c.id for c in calls if c.id in self.answered]
        todo = [c for c in calls if c.id not in self.answered]
        self.rounds += 1
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
                on_result=on_result,
            )
        outputs = [models.ToolOutput(tool_call_id=c.id, output=self.answered[c.id]) for c in calls]
        await self._submit(run, outputs)

    def _tool_deadline(self, run: models.Run) -> float | None:
        ends = [d for d in (self.deadline, run.expires_at) if d is not None]
        return float(min(ends)) if ends else None

    async def _submit(self, run: models.Run, outputs: Sequence[models.ToolOutput]) -> None:
        self.submitted_ids.update(o.tool_call_id for o in outputs)
        try:
            if self.stream:
                with anyio.move_on_after(self._time_left()):
                    async with self.client.submit_tool_outputs_stream(
                        run.thread_id, run.id, outputs
                    ) as stream:
                        self.outputs.extend(outputs)
                        await self._emit_submitted(run, outputs)
                        await self._consume(stream)
                return
            response = await self.client.submit_tool_outputs_response(
                run.thread_id, run.id, outputs
            )
        except errors.BadRequestError as exc:
            if _NOT_ACCEPTING not in exc.message:
                raise
            # The run moved on without us (expired, cancelled): read where it is.
            log.warning("%s", exc.message, extra={"run_id": run.id, "action": "submit_refused"})
            response = await self.client.retrieve_run_response(run.thread_id, run.id)
            self.hint_ms = response.poll_after_ms
            await self._observe(response.data)
            return
        self.outputs.extend(outputs)
        self.hint_ms = response.poll_after_ms
        await self._emit_submitted(run, outputs)
        await self._observe(response.data)

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
        """Foundry's ``submit_tool_approval``: decide (ledger, hook or policy) and submit."""
        answers = await self.approver.decide(run, ledger=self.ledger, emit=self.emit)
        self.rounds += 1
        self.submitted_ids.update(a.tool_call_id for a in answers)
        try:
            if self.stream:
                with anyio.move_on_after(self._time_left()):
                    async with self.client.submit_tool_approvals_stream(
                        run.thread_id, run.id, answers
                    ) as stream:
                        await self._consume(stream)
                return
            response = await self.client.submit_tool_approvals_response(
                run.thread_id, run.id, answers
            )
        except errors.BadRequestError as exc:
            if _NOT_ACCEPTING not in exc.message:
                raise
            log.warning("%s", exc.message, extra={"run_id": run.id, "action": "submit_refused"})
            response = await self.client.retrieve_run_response(run.thread_id, run.id)
        self.hint_ms = response.poll_after_ms
        await self._observe(response.data)

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
        page = await self.client.list_messages(run.thread_id, run_id=run.id, order="asc")
        texts = [m.text for m in page.data if m.role == "assistant" and m.text]
        return "\n".join(texts) if texts else None


def _next_poll(poll: config.PollConfig, interval: float, hint_ms: int | None) -> float:
    """Seconds to the next poll: the back-off interval with jitter, never sooner than the
    server's ``openai-poll-after-ms`` when it is honoured."""
    delay = interval * random.uniform(1 - poll.jitter, 1 + poll.jitter)
    if poll.honour_server_hint and hint_ms is not None and hint_ms > 0:
        delay = max(delay, hint_ms / 1000)
    return delay

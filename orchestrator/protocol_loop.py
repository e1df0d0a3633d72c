"""The protocol-neutral loop: open → observe → answer a tool round → … → done, over any
``protocols.base.ProtocolSession``.

Policy lives here, bytes in the session: the deadline (``run.run_timeout``; past it the current
object is cancelled and the outcome is ``timed_out``), tool rounds through ``dispatch`` with the
ledger's round lifecycle (calls begun, each output saved before it is sent, the round marked
submitted once the server took it), the tool events, cancel-on-abort, and the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

import anyio
import msgspec

from orchestrator import config, errors, events, tools
from orchestrator.protocols import base
from orchestrator.protocols.assistants import models
from orchestrator.store import base as store_base
from orchestrator.tools import dispatch

__all__ = ["Emit", "Ledger", "ProtocolLoop", "ProtocolResult"]

log = logging.getLogger(__name__)

ObjT = TypeVar("ObjT")
Emit = Callable[[events.Event], Awaitable[None]]


class Ledger(Protocol):
    """The worker's durable record of one job's rounds (fenced by its claim)."""

    async def confirm(self) -> None:
        """Raise ``errors.LeaseLost`` unless the claim is still ours (before side effects)."""
        ...

    def check(self) -> None:
        """The same, from local state only (right before each tool starts)."""
        ...

    async def calls(self, object_id: str) -> dict[str, store_base.CallRecord]:
        """What is known of the tool calls of ``object_id``."""
        ...

    async def begin(self, object_id: str, call_ids: Sequence[str]) -> dict[str, int]:
        """Record these calls as starting; each one's attempt number."""
        ...

    async def save(self, object_id: str, call_id: str, output: str) -> None:
        """Store one output; durable when it returns."""
        ...

    async def submitted(self, object_id: str, call_ids: Sequence[str]) -> None:
        """The server took the round holding these calls."""
        ...

    async def record(self, object_id: str) -> None:
        """The job now follows ``object_id`` (a resumed job continues from it)."""
        ...


class ProtocolResult(msgspec.Struct, Generic[ObjT], frozen=True, kw_only=True):
    """How a drive ended."""

    #: The protocol's last object (``wire.Response``, ``models.Run``).
    obj: ObjT
    #: Its final status, or ``timed_out`` / ``tool_failed`` when the loop ended it.
    outcome: str
    outputs: list[base.ToolOutput] = []
    reply: str | None = None
    rounds: int = 0

    @property
    def ok(self) -> bool:
        """It completed."""
        return self.outcome == "completed"


class ProtocolLoop(Generic[ObjT]):
    """Drives one session to its end."""

    def __init__(
        self,
        session: base.ProtocolSession[ObjT],
        *,
        registry: tools.ToolRegistry,
        settings: config.Config,
        emit: Emit,
        ledger: Ledger | None = None,
        tool_limiter: anyio.CapacityLimiter | None = None,
        cancel_on_abort: bool = True,
        deadline: float | None = None,
        attempt: int = 1,
    ) -> None:
        """``deadline``: absolute Unix time (default: now + ``run.run_timeout``)."""
        self.session = session
        self.registry = registry
        self.settings = settings
        self.emit = emit
        self.ledger = ledger
        self.tool_limiter = tool_limiter
        self.cancel_on_abort = cancel_on_abort
        timeout = settings.run.run_timeout
        if deadline is None and timeout is not None:
            deadline = time.time() + timeout
        self.deadline = deadline
        self.attempt = attempt
        self.outputs: list[base.ToolOutput] = []
        self.rounds = 0
        self._unknown: set[str] = set()

    async def run(self) -> ProtocolResult[ObjT]:
        """Open, follow and answer until done; report the end."""
        current: base.Observation[ObjT] | None = None
        try:
            await self._confirm()
            with anyio.fail_after(self._time_left()):
                current = await self.session.open()
            await self._record(current)
            while True:
                if current.calls:
                    if self._past_deadline():
                        outcome = "timed_out"
                        break
                    try:
                        outputs = await self._tools(current)
                    except errors.ToolFailure as exc:
                        log.warning(
                            "tool %s failed with on_error=raise; stopping",
                            exc.tool_name,
                            extra={"run_id": current.id, "action": "tool_failed"},
                        )
                        outcome = "tool_failed"
                        break
                    current = await self._answer(current, outputs)
                    continue
                if current.done:
                    outcome = current.status
                    break
                if not current.known:
                    await self._report_unknown(current)
                if self._past_deadline():
                    outcome = await self._time_out(current)
                    break
                with anyio.move_on_after(self._time_left()):
                    current = await self.session.observe(current)
        except BaseException as exc:
            if current is not None and not current.done and not current.calls:
                if isinstance(exc, Exception):
                    exc.add_note(f"while driving {current.id} ({self.session.scope})")
                if self.cancel_on_abort:
                    await self._abort(current, exc)
            raise
        await self.emit(self.session.finished(current, outcome, self.rounds))
        log.info(
            "finished: %s",
            outcome,
            extra={"run_id": current.id, "action": "finished", "rounds": self.rounds},
        )
        return ProtocolResult(
            obj=current.obj,
            outcome=outcome,
            outputs=self.outputs,
            reply=current.reply,
            rounds=self.rounds,
        )

    # --- tool rounds ------------------------------------------------------------------------

    async def _tools(self, current: base.Observation[ObjT]) -> list[base.ToolOutput]:
        """Every output of the round: stored ones reused, the others run (and saved first)."""
        calls = current.calls
        records = await self.ledger.calls(current.id) if self.ledger is not None else {}
        answered = {cid: r.output for cid, r in records.items() if r.output is not None}
        reused = [c.id for c in calls if c.id in answered]
        todo = [c for c in calls if c.id not in answered]
        scope = self.session.scope
        await self.emit(
            events.ToolRoundRequested(
                run_id=current.id, thread_id=scope, calls=calls, reused=reused
            )
        )
        attempt = self.attempt
        if todo and self.ledger is not None:
            begun = await self.ledger.begin(current.id, [c.id for c in todo])
            attempt = max([attempt, *begun.values()])

        async def on_result(result: dispatch.ToolResult) -> None:
            if self.ledger is not None:
                await self.ledger.save(current.id, result.tool_call_id, result.output)
            answered[result.tool_call_id] = result.output
            error = result.error
            await self.emit(
                events.ToolCallFinished(
                    run_id=current.id,
                    thread_id=scope,
                    tool_call_id=result.tool_call_id,
                    name=result.name,
                    output=result.output,
                    error_type=error.type if error else None,
                    error_message=error.message if error else None,
                    duration=result.duration,
                )
            )

        if todo:
            await dispatch.dispatch(
                todo,
                self.registry,
                self.settings.tools,
                run_id=current.id,
                thread_id=scope,
                deadline=self.deadline,
                limiter=self.tool_limiter,
                attempt=attempt,
                on_result=on_result,
                guard=self.ledger.check if self.ledger is not None else None,
            )
        return [base.ToolOutput(c.id, answered[c.id]) for c in calls]

    async def _answer(
        self, current: base.Observation[ObjT], outputs: list[base.ToolOutput]
    ) -> base.Observation[ObjT]:
        await self._confirm()
        with anyio.fail_after(self._time_left()):
            following = await self.session.answer(current, outputs)
        self.rounds += 1
        self.outputs.extend(outputs)
        await self._record(following)
        if self.ledger is not None:
            await self.ledger.submitted(current.id, [o.tool_call_id for o in outputs])
        log.info(
            "submitted %d tool outputs",
            len(outputs),
            extra={"run_id": current.id, "action": "submitted"},
        )
        await self.emit(
            events.OutputsSubmitted(
                run_id=current.id,
                thread_id=self.session.scope,
                outputs=[models.ToolOutput(o.tool_call_id, o.output) for o in outputs],
            )
        )
        return following

    # --- ends -------------------------------------------------------------------------------

    async def _confirm(self) -> None:
        if self.ledger is not None:
            await self.ledger.confirm()

    async def _record(self, current: base.Observation[ObjT]) -> None:
        if self.ledger is not None:
            await self.ledger.record(current.id)

    async def _report_unknown(self, current: base.Observation[ObjT]) -> None:
        if current.status in self._unknown:
            return
        self._unknown.add(current.status)
        log.warning(
            "unknown status %r; still waiting",
            current.status,
            extra={"run_id": current.id, "action": "unknown_status"},
        )
        await self.emit(
            events.UnknownStatus(
                run_id=current.id, thread_id=self.session.scope, status=current.status
            )
        )

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.time() >= self.deadline

    def _time_left(self) -> float:
        if self.deadline is None:
            return float("inf")
        return max(0.0, self.deadline - time.time())

    async def _time_out(self, current: base.Observation[ObjT]) -> str:
        """Cancel ``current`` (bounded, shielded); ``timed_out`` unless it ended by itself."""
        log.warning(
            "passed the deadline in status %s; cancelling",
            current.status,
            extra={"run_id": current.id, "action": "timeout"},
        )
        final = None
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.run.cancel_timeout):
            final = await self.session.cancel(current)
        if final is not None and final.done and final.status not in ("cancelled", "cancelling"):
            return final.status
        return "timed_out"

    async def _abort(self, current: base.Observation[ObjT], exc: BaseException) -> None:
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        log.warning(
            "driver stopped (%s); cancelling",
            "caller cancelled" if cancelled else type(exc).__name__,
            extra={"run_id": current.id, "action": "cancel"},
        )
        with anyio.CancelScope(shield=True), anyio.move_on_after(self.settings.run.cancel_timeout):
            try:
                await self.session.cancel(current)
            except errors.OrchestratorError as cancel_exc:
                log.warning(
                    "could not cancel: %s",
                    cancel_exc,
                    extra={"run_id": current.id, "action": "cancel_failed"},
                )

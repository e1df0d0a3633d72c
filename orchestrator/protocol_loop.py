"""The protocol-neutral loop: open → observe → answer a round → … → done, over any
``protocols.base.ProtocolSession`` (Assistants runs, Responses chains).

Policy lives here, bytes in the session: the deadline (``run.run_timeout``, and the object's
own ``expires_at`` plus a grace; past it the object is cancelled and the outcome is
``timed_out``), tool rounds through ``dispatch`` with the ledger's round lifecycle (calls begun,
each output saved before it is sent, the round marked submitted once the server took it), MCP
approvals through the ``approvals.Approver``, the tool events, cancel-on-abort, and the result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, Protocol, TypeVar

import anyio
import msgspec

from orchestrator import approvals, config, errors, events, tools
from orchestrator.protocols import base
from orchestrator.protocols.assistants import models
from orchestrator.store import base as store_base
from orchestrator.tools import dispatch

__all__ = ["Emit", "Ledger", "ProtocolLoop", "ProtocolResult"]

log = logging.getLogger(__name__)

#: Statuses a cancel asked for (the outcome is then the loop's reason, not the status).
_CANCELLED: Final = frozenset({"cancelled", "cancelling"})
#: Seconds past its ``until`` a session's cancel may take before the loop stops waiting (a
#: guard: sessions keep to ``until``, and a shielded wait must end).
_SAFETY: Final = 5.0

ObjT = TypeVar("ObjT")
Emit = Callable[[events.Event], Awaitable[None]]


class Ledger(Protocol):
    """The worker's durable record of one job's rounds (fenced by its claim)."""

    async def confirm(self) -> None:
        """Raise ``errors.LeaseLost`` unless the claim is still ours (before side effects)."""
        ...

    def check(self) -> None:
        """The same, from local state only (right before each tool starts, each request)."""
        ...

    async def calls(self, object_id: str) -> dict[str, store_base.CallRecord]:
        """What is known of the tool calls of ``object_id``."""
        ...

    async def begin(self, object_id: str, call_ids: Sequence[str]) -> dict[str, int]:
        """Record these calls as starting; each one's attempt number."""
        ...

    async def save(self, object_id: str, call_id: str, output: str) -> None:
        """Store one output (or approval decision); durable when it returns."""
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
        approver: approvals.Approver | None = None,
    ) -> None:
        """``deadline``: absolute Unix time (default: now + ``run.run_timeout``); ``attempt``
        > 1 says an earlier attempt may have started calls without storing their outputs."""
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
        self.approver = approver or approvals.Approver(settings.approvals)
        self.outputs: list[base.ToolOutput] = []
        self.rounds = 0
        #: Call ids of rounds the server took, and the object whose ledger rounds were read.
        self._submitted: set[str] = set()
        self._ledger_read: str | None = None
        #: The ledger's records just read for the object on first sight (the round that
        #: follows uses them instead of reading again).
        self._fresh: dict[str, store_base.CallRecord] | None = None

    async def run(self) -> ProtocolResult[ObjT]:
        """Open, follow and answer until done; report the end."""
        current: base.Observation[ObjT] | None = None
        try:
            await self._confirm()
            current = await self.session.open()
            await self._record(current)
            while True:
                if (current.calls or current.approvals) and not await self._stale(current):
                    if self._past(current):
                        outcome, current = await self._end(current, "timed_out")
                        break
                    try:
                        current = await self._round(current)
                    except errors.ToolFailure as exc:
                        log.warning(
                            "tool %s failed with on_error=raise; stopping",
                            exc.tool_name,
                            extra={"run_id": current.id, "action": "tool_failed"},
                        )
                        outcome, current = await self._end(current, "tool_failed")
                        break
                    continue
                if current.done:
                    outcome = current.status
                    break
                if self._past(current):
                    outcome, current = await self._end(current, "timed_out")
                    break
                current = await self.session.observe(current, self._limit(current))
        except BaseException as exc:
            if current is not None and isinstance(exc, Exception):
                exc.add_note(f"while driving {current.id} ({self.session.scope})")
            if self._abandons(current, exc):
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

    # --- rounds -----------------------------------------------------------------------------

    async def _stale(self, current: base.Observation[ObjT]) -> bool:
        """The object still shows calls whose round the server took: an old view, not a round
        (a lagging poll, or a resumed job reading what an earlier attempt submitted)."""
        if self.ledger is not None and current.id != self._ledger_read:
            self._ledger_read = current.id
            records = self._fresh = await self.ledger.calls(current.id)
            self._submitted.update(cid for cid, r in records.items() if r.submitted)
        ids = {c.id for c in current.calls} | {a.id for a in current.approvals}
        if ids <= self._submitted:
            self._fresh = None  # no round follows now
            return True
        return False

    async def _round(self, current: base.Observation[ObjT]) -> base.Observation[ObjT]:
        """Answer one round: stored outputs and decisions reused, the rest made (and saved)."""
        records, self._fresh = self._fresh, None
        if records is None:
            records = await self.ledger.calls(current.id) if self.ledger is not None else {}
        stored = {cid: r.output for cid, r in records.items() if r.output is not None}
        self.rounds += 1
        outputs = await self._tools(current, stored) if current.calls else []
        decisions: list[base.ApprovalAnswer] = []
        if current.approvals:
            save = None if self.ledger is None else self._saver(current.id)
            decisions = await self.approver.decide(
                current.approvals,
                obj=current.obj,
                object_id=current.id,
                scope=self.session.scope,
                stored=stored,
                save=save,
                emit=self.emit,
            )
        return await self._answer(current, outputs, decisions)

    def _saver(self, object_id: str) -> Callable[[str, str], Awaitable[None]]:
        ledger = self.ledger
        assert ledger is not None

        async def save(call_id: str, output: str) -> None:
            await ledger.save(object_id, call_id, output)

        return save

    async def _tools(
        self, current: base.Observation[ObjT], stored: dict[str, str]
    ) -> list[base.ToolOutput]:
        """Every output of the round: stored ones reused, the others run (and saved first)."""
        calls = current.calls
        answered = {c.id: stored[c.id] for c in calls if c.id in stored}
        todo = [c for c in calls if c.id not in answered]
        scope = self.session.scope
        attempts: dict[str, int] = {}
        if todo and self.ledger is not None:
            # Fenced: a job whose claim is gone starts no tool (errors.LeaseLost).
            attempts = await self.ledger.begin(current.id, [c.id for c in todo])
        await self.emit(self.session.requested(current, list(answered)))

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
            ends = [d for d in (self.deadline, current.expires_at) if d is not None]
            await dispatch.dispatch(
                todo,
                self.registry,
                self.settings.tools,
                run_id=current.id,
                thread_id=scope,
                deadline=min(ends) if ends else None,
                limiter=self.tool_limiter,
                attempt=self.attempt,
                attempts=attempts,
                on_result=on_result,
                guard=self.ledger.check if self.ledger is not None else None,
            )
        return [base.ToolOutput(c.id, answered[c.id]) for c in calls]

    async def _answer(
        self,
        current: base.Observation[ObjT],
        outputs: list[base.ToolOutput],
        decisions: list[base.ApprovalAnswer],
    ) -> base.Observation[ObjT]:
        ids = [o.tool_call_id for o in outputs] + [d.tool_call_id for d in decisions]
        if self.ledger is not None:
            self.ledger.check()

        async def landed(following: str) -> None:
            # The job follows the next object before the round counts as taken: a job resumed
            # in between continues from the object the round made, never from a round that
            # looks taken on an object that asks for it.
            if following != current.id and self.ledger is not None:
                await self.ledger.record(following)
            self._submitted.update(ids)
            self.outputs.extend(outputs)
            if self.ledger is not None:
                await self.ledger.submitted(current.id, ids)
            if outputs:
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

        return await self.session.answer(current, outputs, decisions, landed)

    # --- ends -------------------------------------------------------------------------------

    async def _confirm(self) -> None:
        if self.ledger is not None:
            await self.ledger.confirm()

    async def _record(self, current: base.Observation[ObjT]) -> None:
        if self.ledger is not None:
            await self.ledger.record(current.id)

    def _limit(self, current: base.Observation[ObjT]) -> float:
        """When to give up: the caller's deadline, or the end of the object's lifetime."""
        ends = [d for d in (self.deadline, current.lifetime) if d is not None]
        return min(ends) if ends else float("inf")

    def _past(self, current: base.Observation[ObjT]) -> bool:
        return time.time() >= self._limit(current)

    async def _end(
        self, current: base.Observation[ObjT], outcome: str
    ) -> tuple[str, base.Observation[ObjT]]:
        """Cancel ``current`` and follow it (bounded, shielded): ``outcome``, unless it ended
        by itself first (then its own status)."""
        if outcome == "timed_out":
            log.warning(
                "passed the deadline in status %s; cancelling",
                current.status,
                extra={"run_id": current.id, "action": "timeout"},
            )
        final = None
        until = time.time() + self.settings.run.cancel_timeout
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SAFETY + until - time.time()):
            final = await self.session.cancel(current, until=until, wait=True)
        if final is None:
            return outcome, current
        if final.done and final.status not in _CANCELLED:
            return final.status, final
        return outcome, final

    def _abandons(self, current: base.Observation[ObjT] | None, exc: BaseException) -> bool:
        """Driving stops early and leaves the object to be cancelled (``cancel_on_abort``;
        the worker turns it off: another worker resumes). A pause for a human's approval
        decision is not abandoning."""
        if not self.cancel_on_abort or isinstance(exc, approvals.ApprovalPending):
            return False
        return current is None or not current.done

    async def _abort(self, current: base.Observation[ObjT] | None, exc: BaseException) -> None:
        cancelled = isinstance(exc, anyio.get_cancelled_exc_class())
        stopped = None
        until = time.time() + self.settings.run.cancel_timeout
        with anyio.CancelScope(shield=True), anyio.move_on_after(_SAFETY + until - time.time()):
            try:
                stopped = await self.session.cancel(current, until=until, wait=False)
            except errors.OrchestratorError as cancel_exc:
                log.warning(
                    "could not cancel: %s",
                    cancel_exc,
                    extra={"run_id": current.id if current else None, "action": "cancel_failed"},
                )
        if stopped is not None:
            # A caller going away (a service's client disconnecting) is routine.
            log.log(
                logging.INFO if cancelled else logging.WARNING,
                "driver stopped (%s); cancelled %s (%s)",
                "caller cancelled" if cancelled else type(exc).__name__,
                stopped.id,
                stopped.status,
                extra={"run_id": stopped.id, "action": "cancel"},
            )

"""Driving runs: the ``Driver`` creates or adopts runs, each an ``AssistantsSession`` driven by
the protocol-neutral ``ProtocolLoop``.

It holds what all runs share (client, registry, settings, the tool limiter, the approver) and
the policies around one run: ``if_active`` on creation lives in the session; re-creating a run
that failed with a retryable ``last_error`` lives here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import msgspec

from orchestrator import approvals, config, errors, recovery, tools
from orchestrator.protocol_loop import Emit, Ledger, ProtocolLoop
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.protocols.assistants import session as session_mod

__all__ = ["Driver", "Emit", "Ledger", "RunResult"]

log = logging.getLogger(__name__)


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


class Driver:
    """Drives runs with one client, registry and configuration; one instance serves many runs."""

    def __init__(
        self,
        client: client_mod.AssistantsClient,
        registry: tools.ToolRegistry,
        settings: config.Config,
        *,
        tool_limiter: anyio.CapacityLimiter | None = None,
        cancel_on_abort: bool = True,
        approve: approvals.Hook | None = None,
    ) -> None:
        """``cancel_on_abort``: cancel the remote run when driving stops early (caller cancelled,
        a permanent error); the worker turns it off so another worker can resume the run.
        ``approve``: the hook deciding Foundry's MCP tool approvals (else ``approvals``)."""
        self.cancel_on_abort = cancel_on_abort
        self.client = client
        self.registry = registry
        self.settings = settings
        self.tool_limiter = tool_limiter or anyio.CapacityLimiter(settings.tools.concurrency)
        self.approver = approvals.Approver(settings.approvals, approve)

    async def create(
        self,
        thread_id: str,
        body: models.CreateRun,
        *,
        emit: Emit,
        ledger: Ledger | None = None,
        on_run: Callable[[models.Run], Awaitable[None]] | None = None,
        attempt: int = 1,
        owns: Callable[[models.Run], bool] | None = None,
    ) -> RunResult:
        """Create a run on ``thread_id`` (following ``run.if_active``) and drive it to its end.

        A run that fails with a ``last_error.code`` in ``run.retry_failed_codes`` is created
        again (without re-posting ``additional_messages``), up to ``run.retry_failed_attempts``
        times, all within one ``run.run_timeout``. ``on_run`` is awaited with each new run
        before anything else happens to it (the worker records the run id there). ``attempt``
        > 1 says this is a resumed job: tool calls without a stored output may have started
        before, and their tools see it in ``ToolContext.attempt`` (to deduplicate). ``owns``
        recognises an active run made by another attempt of the same job (adopted when it
        refuses our create).
        """
        policy = self.settings.run
        timeout = policy.run_timeout
        deadline = time.time() + timeout if timeout is not None else None
        retries = 0
        while True:
            session = self._session(
                thread_id, emit, ledger, deadline, body=body, on_run=on_run, owns=owns
            )
            result = await self._drive(session, emit, ledger, attempt, deadline)
            code = result.run.last_error.code if result.run.last_error else None
            retry = (
                result.outcome == models.RunStatus.FAILED
                and code in policy.retry_failed_codes
                and retries < policy.retry_failed_attempts
            )
            if not retry:
                return result
            delay = policy.retry_failed_backoff * 2**retries
            log.info(
                "run failed with %s; creating it again in %.1fs",
                code,
                delay,
                extra={"run_id": result.run.id, "action": "retry_run"},
            )
            retries += 1
            await anyio.sleep(delay)
            # The thread already holds the messages the first run brought; the new run is a
            # new object with a reference of its own.
            metadata = dict(result.run.metadata or {})
            metadata[recovery.REF_KEY] = recovery.new_ref()
            body = msgspec.structs.replace(
                body, additional_messages=msgspec.UNSET, metadata=metadata
            )

    async def create_thread_and_run(
        self,
        body: models.CreateThreadAndRun,
        *,
        emit: Emit,
        ledger: Ledger | None = None,
        on_run: Callable[[models.Run], Awaitable[None]] | None = None,
        attempt: int = 1,
    ) -> RunResult:
        """Create a thread, then a run on it, and drive the run to its end.

        Two requests, not the one ``POST /threads/runs``: a run on a known thread can be found
        by its reference after a lost answer, one on an unknown thread cannot. A thread whose
        answer was lost may be created twice; the spare one holds the messages and no run.
        """
        thread = body.thread if isinstance(body.thread, models.ThreadRequest) else None
        tool_resources = thread.tool_resources if thread is not None else msgspec.UNSET
        if tool_resources is msgspec.UNSET:
            tool_resources = body.tool_resources
        created = await self.create_thread(
            messages=thread.messages if thread and thread.messages is not msgspec.UNSET else (),
            metadata=thread.metadata if thread and isinstance(thread.metadata, dict) else None,
            tool_resources=None if tool_resources is msgspec.UNSET else tool_resources,
        )
        fields = {
            f: getattr(body, f) for f in models.CreateRun.__struct_fields__ if hasattr(body, f)
        }
        run_body = models.CreateRun(**fields)
        return await self.create(
            created.id, run_body, emit=emit, ledger=ledger, on_run=on_run, attempt=attempt
        )

    async def create_thread(
        self,
        *,
        messages: Sequence[models.MessageRequest] = (),
        metadata: Mapping[str, str] | None = None,
        tool_resources: dict[str, Any] | None = None,
    ) -> models.Thread:
        """Create a thread, retrying whatever failed (its outcome included: the API cannot list
        threads, so a lost answer can leave one spare thread, holding no run)."""

        async def send() -> models.Thread:
            return await self.client.create_thread(
                messages=messages,
                metadata=recovery.tagged(metadata, recovery.new_ref()),
                tool_resources=tool_resources,
                retry=False,
            )

        async def nothing() -> None:
            return None

        return await recovery.exactly_once(self.settings.retry, send, nothing, what="create_thread")

    async def adopt(
        self,
        thread_id: str,
        run_id: str,
        *,
        emit: Emit,
        ledger: Ledger | None = None,
        attempt: int = 1,
    ) -> RunResult:
        """Drive a run that already exists (created elsewhere, or before a restart)."""
        timeout = self.settings.run.run_timeout
        deadline = time.time() + timeout if timeout is not None else None
        session = self._session(thread_id, emit, ledger, deadline, run_id=run_id)
        return await self._drive(session, emit, ledger, attempt, deadline)

    def _session(
        self,
        thread_id: str,
        emit: Emit,
        ledger: Ledger | None,
        deadline: float | None,
        **how: Any,
    ) -> session_mod.AssistantsSession:
        return session_mod.AssistantsSession(
            self.client, self.settings, thread_id, emit=emit, fence=ledger, deadline=deadline, **how
        )

    async def _drive(
        self,
        session: session_mod.AssistantsSession,
        emit: Emit,
        ledger: Ledger | None,
        attempt: int,
        deadline: float | None,
    ) -> RunResult:
        loop = ProtocolLoop(
            session,
            registry=self.registry,
            settings=self.settings,
            emit=emit,
            ledger=ledger,
            tool_limiter=self.tool_limiter,
            cancel_on_abort=self.cancel_on_abort,
            deadline=deadline,
            attempt=attempt,
            approver=self.approver,
        )
        try:
            result = await loop.run()
        except ExceptionGroup as group:
            # Parallel tool calls can fail together; callers get the one error that decides.
            raise errors.deciding(group) from group
        return RunResult(
            run=result.obj,
            outcome=result.outcome,
            outputs=[models.ToolOutput(o.tool_call_id, o.output) for o in result.outputs],
            reply=result.reply,
            rounds=result.rounds,
        )

"""The worker's ``ResponseJob``: a Responses chain driven under a claim, resumable after a crash.

The job id keys every client id of the chain, so whatever an earlier attempt created can be
found; each response is recorded as the job's ``run_id`` the moment it exists (a resumed job
continues from the last one); tool calls go through the store's round lifecycle (begun, saved
before sending, marked submitted) fenced by the claim's epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import anyio

from orchestrator import approvals, config, responses_driver, tools
from orchestrator.protocol_loop import Emit
from orchestrator.protocols.responses import client as client_mod
from orchestrator.store import base as store_base

__all__ = ["ClaimLedger", "drive"]


class ClaimLedger(Protocol):
    """What the worker's ledger offers for one claim (its epoch fences every write)."""

    async def confirm(self) -> None:
        """Raise ``LeaseLost`` unless the claim is still live."""
        ...

    def check(self) -> None:
        """The same, from the local lease deadline only."""
        ...

    async def begin(self, run_id: str, tool_call_ids: Sequence[str]) -> dict[str, int]:
        """Record calls as begun; each one's attempt."""
        ...

    async def save(self, run_id: str, tool_call_id: str, output: str) -> None:
        """Store one output."""
        ...

    async def submitted(self, run_id: str, tool_call_ids: Sequence[str]) -> None:
        """The server took the round."""
        ...


class _Ledger:
    """``protocol_loop.Ledger`` over the store and the worker's claim ledger."""

    def __init__(self, store: store_base.JobStore, job: store_base.Job, claim: ClaimLedger) -> None:
        self._store = store
        self._job = job
        self._claim = claim

    async def confirm(self) -> None:
        await self._claim.confirm()

    def check(self) -> None:
        self._claim.check()

    async def calls(self, object_id: str) -> dict[str, store_base.CallRecord]:
        return await self._store.calls(object_id)

    async def begin(self, object_id: str, call_ids: Sequence[str]) -> dict[str, int]:
        await self._claim.confirm()
        return await self._claim.begin(object_id, call_ids)

    async def save(self, object_id: str, call_id: str, output: str) -> None:
        await self._claim.save(object_id, call_id, output)

    async def submitted(self, object_id: str, call_ids: Sequence[str]) -> None:
        await self._claim.submitted(object_id, call_ids)

    async def record(self, object_id: str) -> None:
        if object_id != self._job.run_id:
            await self._store.record_run(self._job.id, self._job.epoch, object_id)


async def drive(
    job: store_base.Job,
    spec: store_base.ResponseJob,
    *,
    store: store_base.JobStore,
    client: client_mod.ResponsesClient,
    registry: tools.ToolRegistry,
    settings: config.Config,
    claim: ClaimLedger,
    emit: Emit,
    tool_limiter: anyio.CapacityLimiter | None = None,
    approver: approvals.Approver | None = None,
) -> tuple[store_base.JobState, store_base.JobResult]:
    """Drive the job's chain to its end (or on from where an earlier attempt left it)."""
    if job.run_id is not None:
        await store.append_history(job.id, job.epoch, f"resuming from response {job.run_id}")
    params: dict[str, object] = {}
    if spec.instructions is not None:
        params["instructions"] = spec.instructions
    if spec.conversation is not None:
        params["conversation"] = spec.conversation
    if spec.max_output_tokens is not None:
        params["max_output_tokens"] = spec.max_output_tokens
    body = responses_driver.request_body(
        registry,
        model=spec.model,
        agent=spec.agent,
        input=spec.input,
        metadata=spec.metadata,
        extra_tools=spec.tools,
        **params,
    )
    result = await responses_driver.drive(
        client,
        registry,
        settings,
        body,
        emit=emit,
        key=job.id,
        ledger=_Ledger(store, job, claim),
        tool_limiter=tool_limiter,
        cancel_on_abort=False,  # another worker resumes the chain
        resume_id=job.run_id,
        attempt=job.attempts,
        # Any earlier claim may have created responses, even one handed back (its attempt
        # given back) while a create was on its way: look before creating.
        resumed=job.epoch > 1,
        since=job.created_at,
        approver=approver,
    )
    response = result.obj
    last_error = response.error.message if response.error is not None else None
    if last_error is None and not result.ok:
        last_error = result.outcome
    answered = len(await store.outputs(response.id))
    state = store_base.JobState.SUCCEEDED if result.ok else store_base.JobState.FAILED
    return state, store_base.JobResult(
        status=result.outcome,
        last_error=last_error,
        reply=result.reply,
        tool_calls=max(answered, len(result.outputs)),
    )

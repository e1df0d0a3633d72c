"""A job as the worker holds it: its claim (epoch and local lease deadline) and the ledger
seen through that claim, whose epoch fences every write and whose lease deadline guards every
side effect (``check``: no I/O, so a paused process notices at once; ``confirm``: asks the
store too)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import anyio

from orchestrator import errors
from orchestrator.protocols.assistants import models
from orchestrator.store import base as store_base

__all__ = ["InFlight", "JobLedger"]


@dataclass(eq=False)
class InFlight:
    """A job being driven by this worker."""

    job: store_base.Job
    #: ``time.monotonic()`` by which the lease must have been renewed, or the claim is gone.
    lease_deadline: float
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    #: Inside a tool round (tools running or outputs not yet submitted): let it finish on drain.
    in_round: bool = False
    round_done: anyio.Event = field(default_factory=anyio.Event)
    released: bool = False
    #: The job's run as last seen (cancelled when the job ends failed).
    run: models.Run | None = None
    #: A Responses job: the id of its chain's latest response (likewise).
    response_id: str | None = None


class JobLedger:
    """The store's ledger seen through one claim: its epoch fences every write, and its lease
    deadline guards every side effect."""

    def __init__(self, store: store_base.JobStore, entry: InFlight) -> None:
        self._store = store
        self._entry = entry
        self._job_id = entry.job.id
        self._epoch = entry.job.epoch

    def _lost(self, why: str) -> errors.LeaseLost:
        return errors.LeaseLost(
            f"job {self._job_id}: {why} (epoch {self._epoch})",
            job_id=self._job_id,
            epoch=self._epoch,
        )

    def check(self) -> None:
        if time.monotonic() >= self._entry.lease_deadline:
            raise self._lost("the lease was not renewed in time")

    async def confirm(self) -> None:
        self.check()
        if not await self._store.check_claim(self._job_id, self._epoch):
            raise self._lost("the claim is no longer live")

    async def calls(self, run_id: str) -> dict[str, store_base.CallRecord]:
        return await self._store.calls(run_id)

    async def record(self, run_id: str) -> None:
        """Nothing to do: a run is recorded as it is created (``on_run``), or was already."""

    async def begin(self, run_id: str, tool_call_ids: Sequence[str]) -> dict[str, int]:
        self.check()
        entry = self._entry
        entry.in_round = True
        entry.round_done = anyio.Event()
        return await self._store.begin_calls(self._job_id, self._epoch, run_id, tool_call_ids)

    async def save(self, run_id: str, tool_call_id: str, output: str) -> None:
        await self._store.save_output(self._job_id, self._epoch, run_id, tool_call_id, output)

    async def submitted(self, run_id: str, tool_call_ids: Sequence[str]) -> None:
        try:
            await self._store.mark_submitted(self._job_id, self._epoch, run_id, tool_call_ids)
        finally:
            self._entry.in_round = False
            self._entry.round_done.set()

"""The long-running worker: claim jobs, drive their runs, never lose one, never run a tool twice.

Crash safety comes from recording every step the moment it happens and making each step
idempotent on resume:

* a new thread is recorded before anything is added to it;
* a run is created with the job id (and its own reference) in its metadata and recorded as soon
  as it exists; a job resumed without a recorded run first looks on its thread for a run
  carrying its id;
* each tool round is explicit in the ledger: its calls are begun (counting each call's
  attempts), each output is saved before the submit, and the round is marked submitted once
  the server took it; a resumed run re-submits stored outputs, calls tools only for calls that
  have none (at a higher ``ToolContext.attempt`` when they were begun before), and never
  re-sends a round the server took;
* every write is fenced by the claim epoch, so a worker that lost its lease cannot win; and
  before each side effect (creating a run, starting a tool, submitting) the worker proves its
  claim: a local monotonic lease deadline (no I/O, so a paused process notices at once) and,
  before a run or a round, a fenced check in the store. A run created under a claim that turns
  out lost is cancelled unless the job's new owner already took it.

Shutdown: the first stop request stops claiming, lets runs that are inside a tool round finish
their submit (up to ``worker.drain_timeout``) and hands every other job back at once; a second
request aborts. Handing a job back gives its attempt back; the ledger still counts each begun
call, so a call that may have run is run again with ``ToolContext.attempt > 1``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Final

import anyio

from orchestrator import (
    approvals,
    claims,
    config,
    driver,
    errors,
    events,
    health,
    metrics,
    response_jobs,
    run_jobs,
    tools,
)
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.protocols.responses import client as responses_client
from orchestrator.store import base as store_base
from orchestrator.tools import check as toolcheck

__all__ = ["JOB_METADATA_KEY", "Worker"]

log = logging.getLogger(__name__)

#: Run metadata key that ties a run to the job that created it.
JOB_METADATA_KEY: Final = run_jobs.JOB_METADATA_KEY
#: A store failing to claim for this many lease periods in a row stops the worker: by then every
#: lease it held has lapsed, and waiting longer only fills the log (a corrupt file stays corrupt).
_STORE_PATIENCE_LEASES: Final = 4
#: Longest pause between claims while the store keeps failing (the pause doubles up to it).
_STORE_RETRY_CAP: Final = 5.0


class Worker:
    """Claims jobs from a store and drives their runs, ``worker.concurrency`` at a time."""

    def __init__(
        self,
        settings: config.Config,
        store: store_base.JobStore,
        client: client_mod.AssistantsClient,
        registry: tools.ToolRegistry,
        *,
        worker_id: str | None = None,
        metrics_: metrics.Metrics | None = None,
        handler: Callable[[events.Event], Awaitable[None] | None] | None = None,
        responses: responses_client.ResponsesClient | None = None,
    ) -> None:
        """``responses``: the client for ``ResponseJob``s (without it they fail)."""
        self.settings = settings
        self.store = store
        self.client = client
        self.responses = responses
        self.registry = registry
        self.metrics = metrics_ or metrics.Metrics()
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.driver = driver.Driver(client, registry, settings, cancel_on_abort=False)
        self.tool_check = toolcheck.ToolCheck(registry, settings.tools.check_tools)
        self.subscribers = events.Subscribers()
        self.subscribers.add(self.metrics.observe)
        if handler is not None:
            self.subscribers.add(handler)
        self._in_flight: dict[str, claims.InFlight] = {}
        self._stopping = anyio.Event()
        self._slot_free = anyio.Event()
        self._stop_requests = 0
        self._scope: anyio.CancelScope | None = None
        #: Why the worker stopped on its own (a store that kept failing); raised by ``run``.
        self._fatal: errors.StoreError | None = None
        self.health_address: tuple[str, int] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        """``stop()`` was called (by a signal handler, say)."""
        return self._stop_requests > 0

    @property
    def aborted(self) -> bool:
        """A second stop request cut the work short (threads of sync tools may still run)."""
        return self._stop_requests > 1

    def stop(self) -> None:
        """Graceful shutdown on the first call; abort on the second (signal handlers call this)."""
        self._stop_requests += 1
        if self._stop_requests == 1:
            log.info("stopping: no new jobs; draining", extra={"action": "stop"})
            self._stopping.set()
        elif self._scope is not None:
            log.warning("second stop request: aborting now", extra={"action": "abort"})
            self._scope.cancel()

    async def run(self, *, until_idle: bool = False) -> None:
        """Work until ``stop()`` (or, with ``until_idle``, until no job is left to do).

        Raises ``errors.StoreError`` (after draining) when the store could not be used for
        ``4 * worker.lease_seconds`` in a row.
        """
        with anyio.CancelScope() as scope:
            self._scope = scope
            async with anyio.create_task_group() as tg:
                if self.settings.worker.health:
                    self.health_address = await tg.start(
                        health.serve,
                        self.settings.worker.health,
                        self._health_status,
                        self._metrics_page,
                    )
                tg.start_soon(self._heartbeat_loop)
                await self._claim_loop(tg, until_idle=until_idle)
                await self._drain()
                tg.cancel_scope.cancel()
        if self._fatal is not None:
            raise self._fatal

    async def _claim_loop(self, tg: anyio.abc.TaskGroup, *, until_idle: bool) -> None:
        wcfg = self.settings.worker
        patience = _STORE_PATIENCE_LEASES * wcfg.lease_seconds
        failing_since: float | None = None
        failures = 0
        while not self._stopping.is_set():
            if len(self._in_flight) >= wcfg.concurrency:
                await self._wait_slot()
                continue
            claimed_at = time.monotonic()
            try:
                job = await self.store.claim(
                    self.worker_id,
                    lease_seconds=wcfg.lease_seconds,
                    max_attempts=wcfg.max_attempts,
                )
                idle = job is None and until_idle and not self._in_flight
                done = idle and await self._nothing_left()
            except errors.StoreError as exc:
                # A busy database is worth waiting for, within bounds; a damaged one is not.
                failures += 1
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= patience:
                    self._fatal = errors.StoreError(
                        f"the job store failed for {now - failing_since:.0f} s"
                        f" ({failures} tries); stopping the worker: {exc}"
                    )
                    log.critical("%s", self._fatal, extra={"action": "store_failed"})
                    self._stopping.set()
                    return
                log.error(
                    "claiming failed (try %d; the worker stops after %.0f s of this): %s",
                    failures,
                    patience,
                    exc,
                    extra={"action": "claim"},
                )
                await self._wait_slot(
                    wait=min(wcfg.idle_poll_seconds * 2 ** min(failures, 16), _STORE_RETRY_CAP)
                )
                continue
            failing_since, failures = None, 0
            if job is not None and job.state is store_base.JobState.FAILED:
                await self._gave_up(job)  # out of attempts: its run must not hold the thread
                continue
            if job is not None:
                if job.attempts > 1:
                    log.warning(
                        "taking over job %s at attempt %d: its last worker died or lost its lease",
                        job.id,
                        job.attempts,
                        extra={"job_id": job.id, "action": "takeover"},
                    )
                entry = claims.InFlight(job, lease_deadline=claimed_at + wcfg.lease_seconds)
                self._in_flight[job.id] = entry
                tg.start_soon(self._execute, entry, name=f"job {job.id}")
                continue
            if done:
                log.info("no jobs left; stopping", extra={"action": "idle"})
                return
            await self._wait_slot(wait=wcfg.idle_poll_seconds)

    async def _nothing_left(self) -> bool:
        try:
            counts = await self.store.counts()
        except errors.StoreError as exc:  # a blip: the claim loop's own back-off handles more
            log.warning("could not count jobs: %s", exc, extra={"action": "counts"})
            return False
        self.metrics.set_queue_depth({str(k): v for k, v in counts.items()})
        return counts[store_base.JobState.QUEUED] == 0 and counts[store_base.JobState.RUNNING] == 0

    async def _wait_slot(self, wait: float | None = None) -> None:
        self._slot_free = anyio.Event()
        with anyio.move_on_after(wait):
            async with anyio.create_task_group() as tg:

                async def stop_waiting(ev: anyio.Event) -> None:
                    await ev.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(stop_waiting, self._stopping)
                tg.start_soon(stop_waiting, self._slot_free)

    async def _drain(self) -> None:
        """Hand back jobs that are only being watched; let tool rounds finish their submit."""
        if not self._in_flight:
            return
        for entry in list(self._in_flight.values()):
            if not entry.in_round:
                entry.scope.cancel()
        with anyio.move_on_after(self.settings.worker.drain_timeout):
            for entry in list(self._in_flight.values()):
                if entry.in_round:
                    await entry.round_done.wait()
                entry.scope.cancel()
            while self._in_flight:
                await self._wait_slot(wait=0.05)
        for entry in list(self._in_flight.values()):
            entry.scope.cancel()
        while self._in_flight:
            await self._wait_slot(wait=0.05)

    # --- heartbeats ------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        wcfg = self.settings.worker
        while True:
            await anyio.sleep(wcfg.heartbeat_seconds)
            leases = [(e.job.id, e.job.epoch) for e in self._in_flight.values()]
            if not leases:
                continue
            sent = time.monotonic()
            try:
                held = await self.store.heartbeat_many(leases, lease_seconds=wcfg.lease_seconds)
            except errors.StoreError as exc:
                log.error("heartbeat failed: %s", exc, extra={"action": "heartbeat"})
                continue
            for job_id, _ in leases:
                entry = self._in_flight.get(job_id)
                if job_id in held and entry is not None:
                    entry.lease_deadline = sent + wcfg.lease_seconds
                if job_id not in held and entry is not None:
                    log.warning(
                        "lease lost; stopping the job", extra={"job_id": job_id, "action": "lost"}
                    )
                    entry.released = True  # nothing of ours to give back
                    entry.scope.cancel()

    # --- one job ---------------------------------------------------------------------------

    async def _execute(self, entry: claims.InFlight) -> None:
        job = entry.job
        if self.metrics.enabled:
            self.metrics.runs_in_flight.inc()
        try:
            with entry.scope:
                await self._drive_job(entry)
        except Exception as exc:
            cause = errors.deciding(exc)
            if isinstance(cause, errors.LeaseLost):
                entry.released = True  # nothing of ours to give back
                log.warning(
                    "lease lost; another worker owns the job: %s",
                    cause,
                    extra={"job_id": job.id, "action": "lost"},
                )
            else:
                await self._on_error(entry, cause)
        finally:
            if self.metrics.enabled:
                self.metrics.runs_in_flight.dec()
            if not entry.released and self.aborted:
                # Not handed back: tools may still run in abandoned threads.
                await self._note(
                    job, "aborted by a second stop request; resumed when the lease lapses"
                )
            elif entry.scope.cancelled_caught and not entry.released:
                await self._release(entry)
            entry.round_done.set()
            self._in_flight.pop(job.id, None)
            self._slot_free.set()

    async def _drive_job(self, entry: claims.InFlight) -> None:
        job = entry.job
        store = self.store
        await store.append_history(job.id, job.epoch, f"worker {self.worker_id} started")
        ledger = claims.JobLedger(store, entry)

        async def emit(event: events.Event) -> None:
            match event:
                case events.RunCreated(run=run) | events.RunAdopted(run=run):
                    entry.run = run
                case events.StatusChanged(run=run):
                    entry.run = run
                case events.RunFinished(run=run):
                    entry.run = run
                    entry.in_round = False
                    entry.round_done.set()
                case events.ResponseCreated(response=response):
                    entry.response_id = response.id
                case events.ResponseFinished():
                    entry.in_round = False
                    entry.round_done.set()
                case _:
                    pass
            await self.subscribers.emit(event)

        spec = job.spec
        if isinstance(spec, store_base.ResponseJob):
            if self.responses is None:
                raise errors.ConfigError("a response job needs the worker's Responses client")
            state, result = await response_jobs.drive(
                job,
                spec,
                store=store,
                client=self.responses,
                registry=self.registry,
                settings=self.settings,
                claim=ledger,
                emit=emit,
                tool_limiter=self.driver.tool_limiter,
                approver=self.driver.approver,
            )
            run_id = None
        else:
            state, result, run_id = await run_jobs.drive(
                job,
                spec,
                store=store,
                runs=self.driver,
                tool_check=self.tool_check,
                ledger=ledger,
                emit=emit,
                orphaned=self._orphaned,
            )
        await store.complete(job.id, job.epoch, state, result)
        log.info(
            "job %s: %s",
            state,
            result.status,
            extra={"job_id": job.id, "run_id": run_id, "action": "job_done"},
        )

    async def _on_error(self, entry: claims.InFlight, exc: Exception) -> None:
        job = entry.job
        entry.released = True
        with anyio.CancelScope(shield=True):
            try:
                if isinstance(exc, approvals.ApprovalPending):
                    # A human decides (``orchestrator approve``), which queues the job again.
                    log.info("%s", exc, extra={"job_id": job.id, "action": "waiting_approval"})
                    await self.store.park(job.id, job.epoch, f"waiting for approval: {exc}")
                    return
                if isinstance(exc, errors.TransientError | errors.StoreError):
                    # Not handed back: the lease lapses and the job is claimed again then, with
                    # the attempt counted, so a job failing this way backs off and is bounded.
                    log.warning(
                        "job interrupted (%s); retried when its lease lapses",
                        exc,
                        extra={"job_id": job.id, "action": "interrupted"},
                    )
                    await self.store.append_history(job.id, job.epoch, f"interrupted: {exc}")
                    return
                log.error("job failed: %s", exc, extra={"job_id": job.id, "action": "job_failed"})
                result = store_base.JobResult(
                    status="error", last_error=f"{type(exc).__name__}: {exc}"
                )
                await self.store.complete(job.id, job.epoch, store_base.JobState.FAILED, result)
            except errors.StoreError as store_exc:
                log.error("could not record the failure: %s", store_exc, extra={"job_id": job.id})
                return
            if entry.run is not None:
                await self._cancel_run(job, entry.run.thread_id, entry.run.id)
            if entry.response_id is not None:
                await self._cancel_response(job, entry.response_id)

    async def _gave_up(self, job: store_base.Job) -> None:
        """``claim`` ended a job out of attempts: cancel the run it may have left active."""
        log.error(
            "job %s failed: out of attempts",
            job.id,
            extra={"job_id": job.id, "action": "job_failed"},
        )
        if isinstance(job.spec, store_base.ResponseJob):
            if job.run_id is not None:
                await self._cancel_response(job, job.run_id)
            return
        if job.thread_id is None:
            return
        run_id = job.run_id
        if run_id is None:  # created but not recorded before its last worker died
            with (
                anyio.CancelScope(shield=True),
                anyio.move_on_after(self.settings.run.cancel_timeout),
            ):
                try:
                    run_id = await run_jobs.find_run(
                        self.client, job.thread_id, job.id, job.created_at
                    )
                except errors.OrchestratorError as exc:
                    log.warning(
                        "could not look for the job's run: %s", exc, extra={"job_id": job.id}
                    )
        if run_id is not None:
            await self._cancel_run(job, job.thread_id, run_id)

    async def _orphaned(
        self, job: store_base.Job, run: models.Run, recorded: Collection[str | None]
    ) -> None:
        """Recording ``run`` failed (the claim was lost, or the job was stopped meanwhile).

        It is cancelled only when the store shows that another claim made a different run the
        job's run; otherwise whoever drives the job next finds it by the job's id (the newest
        run carrying it) and drives it. ``recorded``: runs this claim itself recorded before.
        """
        with anyio.CancelScope(shield=True):
            try:
                current = await self.store.get(job.id)
            except errors.StoreError:
                return  # cannot tell: leaving it to be found is safe, cancelling is not
            if current is None or current.epoch == job.epoch:
                return  # still our claim (a stop, not a loss): the job resumes with this run
            if current.run_id is None or current.run_id == run.id or current.run_id in recorded:
                return  # the new owner finds (or found) this run by the job's id
        await self._cancel_run(job, run.thread_id, run.id)

    async def _cancel_run(self, job: store_base.Job, thread_id: str, run_id: str) -> None:
        """Cancel a job's run so that it does not hold its thread (shielded, time-bounded)."""

        async def cancel() -> str:
            return (await self.client.cancel_run(thread_id, run_id)).status

        await self._cancel(job, f"run {run_id}", cancel)

    async def _cancel_response(self, job: store_base.Job, response_id: str) -> None:
        """Cancel a Responses job's latest response (shielded, time-bounded)."""
        responses = self.responses
        if responses is None:
            return

        async def cancel() -> str:
            return (await responses.cancel(response_id)).status or "?"

        await self._cancel(job, f"response {response_id}", cancel)

    async def _cancel(
        self, job: store_base.Job, what: str, cancel: Callable[[], Awaitable[str]]
    ) -> None:
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(self.settings.run.cancel_timeout),
        ):
            try:
                status = await cancel()
            except errors.BadRequestError:
                return  # already over
            except errors.OrchestratorError as exc:
                log.warning("could not cancel %s: %s", what, exc, extra={"job_id": job.id})
                return
            log.info(
                "cancelled the job's %s (%s)",
                what,
                status,
                extra={"job_id": job.id, "run_id": what.rsplit(maxsplit=1)[-1], "action": "cancel"},
            )
            await self._note(job, f"{what} cancelled")

    async def _note(self, job: store_base.Job, message: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.store.append_history(job.id, job.epoch, message)
            except errors.StoreError as exc:
                log.warning("could not record %r: %s", message, exc, extra={"job_id": job.id})

    async def _release(self, entry: claims.InFlight) -> None:
        """Give the job back so another worker (or this one) takes it at once."""
        entry.released = True
        job = entry.job
        with anyio.CancelScope(shield=True):
            try:
                await self.store.release(job.id, job.epoch)
                log.info("job handed back", extra={"job_id": job.id, "action": "released"})
            except errors.StoreError as exc:
                log.warning("could not hand the job back: %s", exc, extra={"job_id": job.id})

    # --- health and metrics ----------------------------------------------------------------

    def _health_status(self) -> health.HealthStatus:
        return health.HealthStatus(
            status="stopping" if self._stopping.is_set() else "ok",
            worker_id=self.worker_id,
            in_flight=len(self._in_flight),
            time=time.time(),
        )

    async def _metrics_page(self) -> tuple[bytes, str]:
        counts = await self.store.counts()
        self.metrics.set_queue_depth({str(k): v for k, v in counts.items()})
        return self.metrics.exposition()

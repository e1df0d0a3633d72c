"""Driving one Assistants job for the worker: a new run (on the job's thread, made and recorded
first when the job brings only messages), a run adopted by id, or, on resume, the run the job
recorded or, when a crash cut it off from recording, the newest run carrying the job's id.

A run is created with the job id in its metadata (``JOB_METADATA_KEY``) and recorded the moment
it exists (``on_run``); when recording fails because the claim was lost or the job stopped,
``orphaned`` decides its fate (the worker cancels it unless the job's new owner has it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Final

import anyio
import msgspec

from orchestrator import driver, errors, recovery
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.store import base as store_base
from orchestrator.tools import check as toolcheck

__all__ = ["JOB_METADATA_KEY", "Orphaned", "drive"]

#: Run metadata key that ties a run to the job that created it.
JOB_METADATA_KEY: Final = "orchestrator_job"

#: What to do with a run whose recording failed: (job, run, runs this claim recorded before).
Orphaned = Callable[[store_base.Job, models.Run, Collection[str | None]], Awaitable[None]]


async def drive(
    job: store_base.Job,
    spec: store_base.CreateJob | store_base.AdoptJob,
    *,
    store: store_base.JobStore,
    runs: driver.Driver,
    tool_check: toolcheck.ToolCheck,
    ledger: driver.Ledger,
    emit: driver.Emit,
    orphaned: Orphaned,
) -> tuple[store_base.JobState, store_base.JobResult, str]:
    """Drive the job's run to its end; the job's final state, its result, and the run id."""
    if isinstance(spec, store_base.AdoptJob):
        result = await runs.adopt(
            spec.thread_id, spec.run_id, emit=emit, ledger=ledger, attempt=job.attempts
        )
    else:
        result = await _create_or_resume(
            job,
            spec,
            store=store,
            runs=runs,
            tool_check=tool_check,
            ledger=ledger,
            emit=emit,
            orphaned=orphaned,
        )
    state = store_base.JobState.SUCCEEDED if result.ok else store_base.JobState.FAILED
    last_error = result.run.last_error.message if result.run.last_error else None
    if last_error is None and not result.ok:
        last_error = result.outcome
    # Every call this job's run answered, in this attempt or an earlier one.
    answered = len(await store.outputs(result.run.id))
    outcome = store_base.JobResult(
        status=result.outcome,
        last_error=last_error,
        reply=result.reply,
        tool_calls=max(answered, len(result.outputs)),
    )
    return state, outcome, result.run.id


async def _create_or_resume(
    job: store_base.Job,
    spec: store_base.CreateJob,
    *,
    store: store_base.JobStore,
    runs: driver.Driver,
    tool_check: toolcheck.ToolCheck,
    ledger: driver.Ledger,
    emit: driver.Emit,
    orphaned: Orphaned,
) -> driver.RunResult:
    thread_id = job.thread_id or spec.thread_id
    if thread_id is None:
        thread = await runs.create_thread(
            messages=list(spec.messages), metadata={JOB_METADATA_KEY: job.id}
        )
        thread_id = thread.id
        await store.record_thread(job.id, job.epoch, thread_id)
    run_id = job.run_id or await find_run(runs.client, thread_id, job.id, job.created_at)
    if run_id is not None:
        if job.run_id is None:
            await store.record_run(job.id, job.epoch, run_id)
        await store.append_history(job.id, job.epoch, f"resuming run {run_id}")
        return await runs.adopt(thread_id, run_id, emit=emit, ledger=ledger, attempt=job.attempts)
    body = spec.run_request()
    await tool_check.check(runs.client, spec.assistant_id, body.tools)
    metadata = dict(body.metadata or {}) if body.metadata is not msgspec.UNSET else {}
    metadata[JOB_METADATA_KEY] = job.id
    body = msgspec.structs.replace(body, metadata=metadata)

    recorded: set[str | None] = {job.run_id}

    async def record(run: models.Run) -> None:
        try:
            await store.record_run(job.id, job.epoch, run.id)
        except BaseException as exc:  # the claim lost, or the job stopped meanwhile
            if isinstance(exc, errors.LeaseLost | anyio.get_cancelled_exc_class()):
                await orphaned(job, run, recorded)
            raise
        recorded.add(run.id)

    def owns(run: models.Run) -> bool:
        return (run.metadata or {}).get(JOB_METADATA_KEY) == job.id

    return await runs.create(
        thread_id, body, emit=emit, ledger=ledger, on_run=record, attempt=job.attempts, owns=owns
    )


async def find_run(
    client: client_mod.AssistantsClient, thread_id: str, job_id: str, since: float
) -> str | None:
    """The newest run on ``thread_id`` carrying ``job_id`` (made since ``since``), or None."""
    async for run in client.iter_runs(thread_id, order="desc"):
        if run.metadata and run.metadata.get(JOB_METADATA_KEY) == job_id:
            return run.id
        if run.created_at < since - recovery.CLOCK_SKEW:
            break  # newest first: older runs cannot be this job's
    return None

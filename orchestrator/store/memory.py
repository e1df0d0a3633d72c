"""In-process ``JobStore`` for tests and one-shot runs: same semantics as SQLite, no durability.

Each method checks in with the event loop once and then does all its work without awaiting, so
every operation is atomic with respect to other tasks, just as a transaction would be.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Self

import anyio
import msgspec

from orchestrator import errors
from orchestrator.store import base

__all__ = ["MemoryStore"]

_replace = msgspec.structs.replace


class MemoryStore:
    """Jobs, history and ledger in dicts; data survives close/reopen of the same object."""

    def __init__(self) -> None:
        #: Insertion order is enqueue order, which is claim order.
        self._jobs: dict[str, base.Job] = {}
        self._events: dict[str, list[base.JobEvent]] = {}
        #: run id → tool call id → (epoch of the last write, record)
        self._ledger: dict[str, dict[str, tuple[int, base.CallRecord]]] = {}
        #: job id → the spec as stored; ``claim`` loads it from here, as SQLite does from a row.
        self._stored: dict[str, bytes] = {}
        self._open = False

    async def __aenter__(self) -> Self:
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False

    async def _enter(self) -> None:
        await anyio.lowlevel.checkpoint()
        if not self._open:
            raise errors.StoreError("memory store: not open (use `async with`)")

    def _log(self, job_id: str, epoch: int, message: str, now: float | None = None) -> None:
        at = time.time() if now is None else now
        self._events[job_id].append(base.JobEvent(at=at, epoch=epoch, message=message))

    def _job(self, job_id: str) -> base.Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise errors.StoreError(f"memory store: no job {job_id!r}")
        return job

    def _fence(self, job_id: str, epoch: int, operation: str) -> base.Job:
        job = self._job(job_id)
        if job.state is base.JobState.RUNNING and job.epoch == epoch:
            return job
        message = base.stale_message(operation, epoch, job.epoch, job.state)
        self._log(job_id, epoch, message)
        raise errors.LeaseLost(f"job {job_id}: {message}", job_id=job_id, epoch=epoch)

    def _put(self, job: base.Job) -> base.Job:
        self._jobs[job.id] = job
        return job

    async def enqueue(self, spec: base.JobSpec, *, queueing_lock: str | None = None) -> str:
        # Round-trip through the stored form: validates, and detaches from the caller's objects.
        data = base.encode_spec(spec)
        await self._enter()
        if queueing_lock is not None:
            for other in self._jobs.values():
                if other.queueing_lock == queueing_lock and other.state is base.JobState.QUEUED:
                    raise errors.AlreadyEnqueued(
                        f"queueing lock {queueing_lock!r} is held by queued job {other.id}",
                        queueing_lock=queueing_lock,
                        job_id=other.id,
                    )
        stored = base.decode_spec(data)
        now = time.time()
        job = base.Job(
            id=base.new_job_id(),
            spec=stored,
            state=base.JobState.QUEUED,
            attempts=0,
            thread_id=stored.thread_id,
            run_id=stored.run_id if isinstance(stored, base.AdoptJob) else None,
            lease_owner=None,
            lease_expires_at=None,
            epoch=0,
            result=None,
            created_at=now,
            updated_at=now,
            queueing_lock=queueing_lock,
        )
        self._put(job)
        self._stored[job.id] = data
        self._events[job.id] = []
        self._log(job.id, 0, "enqueued", now)
        return job.id

    async def claim(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        max_attempts: int | None = None,
        now: float | None = None,
    ) -> base.Job | None:
        await self._enter()
        now = time.time() if now is None else now
        busy_threads = {
            job.thread_id
            for job in self._jobs.values()
            if job.state is base.JobState.RUNNING
            and job.thread_id is not None
            and job.lease_expires_at is not None
            and job.lease_expires_at > now
        }
        for job in list(self._jobs.values()):
            expired = (
                job.state is base.JobState.RUNNING
                and job.lease_expires_at is not None
                and job.lease_expires_at <= now
            )
            if not (job.state is base.JobState.QUEUED or expired):
                continue
            if job.thread_id in busy_threads:
                continue
            try:
                spec = base.decode_spec(self._stored[job.id])
            except errors.InvalidJob as exc:  # see "Quarantine" in store.base
                reason = str(exc)
                self._put(_end(job, base.JobState.FAILED, base.quarantine_result(reason), now))
                self._log(job.id, job.epoch, base.quarantine_message(reason), now)
                continue
            if max_attempts is not None and job.attempts >= max_attempts:
                result = base.exhausted_result(job.attempts)
                self._log(job.id, job.epoch, f"failed: {result.last_error}", now)
                return self._put(_end(job, base.JobState.FAILED, result, now))
            previous = job.lease_owner if expired else None
            claimed = self._put(
                _replace(
                    job,
                    spec=spec,
                    state=base.JobState.RUNNING,
                    epoch=job.epoch + 1,
                    attempts=job.attempts + 1,
                    lease_owner=worker_id,
                    lease_expires_at=now + lease_seconds,
                    updated_at=now,
                )
            )
            self._log(job.id, claimed.epoch, base.claim_message(worker_id, claimed, previous), now)
            return claimed
        return None

    async def heartbeat(
        self, job_id: str, epoch: int, *, lease_seconds: float, now: float | None = None
    ) -> bool:
        held = await self.heartbeat_many([(job_id, epoch)], lease_seconds=lease_seconds, now=now)
        return job_id in held

    async def heartbeat_many(
        self,
        leases: Sequence[tuple[str, int]],
        *,
        lease_seconds: float,
        now: float | None = None,
    ) -> set[str]:
        await self._enter()
        now = time.time() if now is None else now
        held: set[str] = set()
        for job_id, epoch in leases:
            job = self._jobs.get(job_id)
            if job is None:
                continue
            if job.state is base.JobState.RUNNING and job.epoch == epoch:
                self._put(_replace(job, lease_expires_at=now + lease_seconds, updated_at=now))
                held.add(job_id)
            else:
                message = base.stale_message("heartbeat", epoch, job.epoch, job.state)
                self._log(job_id, epoch, message, now)
        return held

    async def record_thread(self, job_id: str, epoch: int, thread_id: str) -> None:
        await self._enter()
        job = self._fence(job_id, epoch, "record_thread")
        if job.thread_id == thread_id:
            return
        if job.thread_id is not None:
            raise errors.StoreError(
                f"job {job_id}: already on thread {job.thread_id}, cannot move to {thread_id}"
            )
        self._put(_replace(job, thread_id=thread_id, updated_at=time.time()))
        self._log(job_id, epoch, f"thread recorded: {thread_id}")

    async def record_run(self, job_id: str, epoch: int, run_id: str) -> None:
        await self._enter()
        job = self._fence(job_id, epoch, "record_run")
        if job.run_id == run_id:
            return
        self._put(_replace(job, run_id=run_id, updated_at=time.time()))
        self._log(job_id, epoch, base.run_message(run_id, job.run_id))

    async def release(self, job_id: str, epoch: int) -> None:
        await self._enter()
        job = self._fence(job_id, epoch, "release")
        self._put(
            _replace(
                job,
                state=base.JobState.QUEUED,
                attempts=max(job.attempts - 1, 0),
                lease_owner=None,
                lease_expires_at=None,
                updated_at=time.time(),
            )
        )
        self._log(job_id, epoch, f"released by {job.lease_owner}")

    async def complete(
        self, job_id: str, epoch: int, state: base.JobState, result: base.JobResult
    ) -> None:
        base.check_final(state)
        await self._enter()
        job = self._fence(job_id, epoch, "complete")
        now = time.time()
        self._put(_end(job, state, result, now))
        self._log(job_id, epoch, base.complete_message(state, result), now)

    async def get(self, job_id: str) -> base.Job | None:
        await self._enter()
        return self._jobs.get(job_id)

    async def list_jobs(
        self, *, state: base.JobState | None = None, limit: int = 100
    ) -> list[base.Job]:
        await self._enter()
        jobs = [j for j in reversed(self._jobs.values()) if state is None or j.state is state]
        return jobs[: max(limit, 0)]

    async def history(self, job_id: str) -> list[base.JobEvent]:
        await self._enter()
        return list(self._events.get(job_id, ()))

    async def append_history(self, job_id: str, epoch: int, message: str) -> None:
        await self._enter()
        self._job(job_id)
        self._log(job_id, epoch, message)

    async def counts(self) -> dict[base.JobState, int]:
        await self._enter()
        counts = dict.fromkeys(base.JobState, 0)
        for job in self._jobs.values():
            counts[job.state] += 1
        return counts

    async def save_output(
        self, job_id: str, epoch: int, run_id: str, tool_call_id: str, output: str
    ) -> None:
        await self._enter()
        self._fence(job_id, epoch, "save_output")
        calls = self._ledger.setdefault(run_id, {})
        written, record = calls.get(tool_call_id, (0, base.CallRecord(tool_call_id=tool_call_id)))
        if record.output is None or written < epoch:
            calls[tool_call_id] = (epoch, _replace(record, output=output))

    async def outputs(self, run_id: str) -> dict[str, str]:
        await self._enter()
        return {
            call: record.output
            for call, (_, record) in self._ledger.get(run_id, {}).items()
            if record.output is not None
        }

    async def check_claim(self, job_id: str, epoch: int, *, now: float | None = None) -> bool:
        await self._enter()
        return _live(self._jobs.get(job_id), epoch, time.time() if now is None else now)

    async def begin_calls(
        self,
        job_id: str,
        epoch: int,
        run_id: str,
        tool_call_ids: Sequence[str],
        *,
        now: float | None = None,
    ) -> dict[str, int]:
        await self._enter()
        job = self._fence(job_id, epoch, "begin_calls")
        at = time.time() if now is None else now
        if not _live(job, epoch, at):
            message = base.lapsed_message("begin_calls", epoch, job.lease_expires_at)
            self._log(job_id, epoch, message, at)
            raise errors.LeaseLost(f"job {job_id}: {message}", job_id=job_id, epoch=epoch)
        calls = self._ledger.setdefault(run_id, {})
        attempts: dict[str, int] = {}
        for call_id in tool_call_ids:
            _, record = calls.get(call_id, (0, base.CallRecord(tool_call_id=call_id)))
            if record.output is not None:
                continue
            record = _replace(record, starts=record.starts + 1)
            calls[call_id] = (epoch, record)
            attempts[call_id] = record.starts
        return attempts

    async def mark_submitted(
        self, job_id: str, epoch: int, run_id: str, tool_call_ids: Sequence[str]
    ) -> None:
        await self._enter()
        self._fence(job_id, epoch, "mark_submitted")
        calls = self._ledger.setdefault(run_id, {})
        for call_id in tool_call_ids:
            _, record = calls.get(call_id, (0, base.CallRecord(tool_call_id=call_id)))
            calls[call_id] = (epoch, _replace(record, submitted=True))

    async def calls(self, run_id: str) -> dict[str, base.CallRecord]:
        await self._enter()
        return {call: record for call, (_, record) in self._ledger.get(run_id, {}).items()}

    async def park(self, job_id: str, epoch: int, message: str) -> None:
        await self._enter()
        job = self._fence(job_id, epoch, "park")
        self._put(
            _replace(
                job,
                state=base.JobState.WAITING_APPROVAL,
                attempts=max(job.attempts - 1, 0),
                lease_owner=None,
                lease_expires_at=None,
                updated_at=time.time(),
            )
        )
        self._log(job_id, epoch, message)

    async def decide(self, job_id: str, decisions: Mapping[str, str]) -> None:
        await self._enter()
        job = self._jobs.get(job_id)
        run_id = base.check_parked(job, job_id)
        assert job is not None
        calls = self._ledger.setdefault(run_id, {})
        for tool_call_id, output in decisions.items():
            blank = base.CallRecord(tool_call_id=tool_call_id)
            _, record = calls.get(tool_call_id, (0, blank))
            if record.output is None:  # a decision already stored stays
                calls[tool_call_id] = (job.epoch, _replace(record, output=output))
        self._put(_replace(job, state=base.JobState.QUEUED, updated_at=time.time()))
        self._log(job_id, job.epoch, base.decided_message(decisions))


def _end(job: base.Job, state: base.JobState, result: base.JobResult, now: float) -> base.Job:
    """The job in a final state with its result, lease dropped."""
    return _replace(
        job,
        state=state,
        result=result,
        lease_owner=None,
        lease_expires_at=None,
        updated_at=now,
    )


def _live(job: base.Job | None, epoch: int, now: float) -> bool:
    """``epoch`` is the job's current claim, with a lease unexpired at ``now``."""
    return (
        job is not None
        and job.state is base.JobState.RUNNING
        and job.epoch == epoch
        and job.lease_expires_at is not None
        and job.lease_expires_at > now
    )

"""``JobStore`` on PostgreSQL: jobs are procrastinate jobs; the rest lives in our own tables.

* **The queue is procrastinate's.** ``enqueue`` defers a procrastinate job (queue
  ``orchestrator``) with ``lock=`` the thread (one running job per thread, in enqueue order) and
  ``queueing_lock=`` when asked, in the same transaction as our job row. ``claim`` takes jobs
  with procrastinate's fetch (``FOR UPDATE SKIP LOCKED``, its lock and order rules), ``release``
  and lease expiry hand them back with its retry, ``complete`` ends them with its finish.
  Our worker drives the jobs (procrastinate's own worker does not run them): it needs the claim
  epoch to fence every write, which procrastinate does not keep.
* **Dead workers.** procrastinate does not retry a job whose worker died. Every ``claim`` first
  hands back to the queue the jobs whose lease lapsed (the sweep), so a killed worker's job is
  taken over by the next claim after ``lease_seconds``; its fetch then honours the thread lock.
* **Fencing.** Every write locks the job row (``FOR UPDATE``) and checks the epoch in the same
  transaction, as SQLite does. Leases are measured on the database clock, so workers on
  machines whose clocks disagree still agree on who holds a job.
* **Connections.** One ``psycopg_pool`` pool per store, sized for the worker's concurrency;
  broken connections are replaced on checkout, so a database restart costs the calls made
  while it is down (``StoreError``, which the worker retries) and nothing more. Sessions run
  with ``idle_in_transaction_session_timeout``: a worker frozen inside a transaction (SIGSTOP,
  VM pause) cannot hold a job's row lock past it.
* Every call runs shielded from cancellation: its transaction commits or rolls back first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

import msgspec
import psycopg
from procrastinate import exceptions as pexc

from orchestrator import errors
from orchestrator.store import base
from orchestrator.store import postgres_schema as schema
from orchestrator.store.postgres_ledger import LedgerOps
from orchestrator.store.postgres_pool import Conn, describe_dsn, load

log = logging.getLogger(__name__)
_result_encoder: Final = msgspec.json.Encoder()
_EPOCH: Final = schema.NAMES.index("epoch")

__all__ = ["PostgresStore", "describe_dsn", "migrate"]


async def migrate(dsn: str) -> list[str]:
    """``orchestrator migrate``: bring the database at ``dsn`` to the current schema."""
    where = describe_dsn(dsn)
    try:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            done = await schema.migrate(conn)
    except psycopg.Error as exc:
        raise errors.StoreError(f"PostgreSQL {where}: {exc}") from exc
    return [f"PostgreSQL {where}: {line}" for line in done] or [
        f"PostgreSQL {where}: schema version {schema.SCHEMA_VERSION}, nothing to do"
    ]


class PostgresStore(LedgerOps):
    """Jobs on procrastinate's queue, with their records, history and ledger beside them."""

    # --- jobs ----------------------------------------------------------------------------

    async def enqueue(self, spec: base.JobSpec, *, queueing_lock: str | None = None) -> str:
        data = base.encode_spec(spec)
        run_id = spec.run_id if isinstance(spec, base.AdoptJob) else None
        job_id = base.new_job_id()

        async def op(conn: Conn) -> str:
            assert self._app is not None
            deferrer = self._app.configure_task(
                schema.TASK,
                queue=schema.QUEUE,
                lock=spec.thread_id,
                queueing_lock=queueing_lock,
                connection=conn,
            )
            try:
                async with conn.transaction():  # a savepoint: the lookup below still runs
                    pid = await deferrer.defer_async(job_id=job_id)
            except pexc.AlreadyEnqueued:
                assert queueing_lock is not None
                cur = await conn.execute(
                    "SELECT o.id FROM procrastinate_jobs AS p"
                    " JOIN orchestrator_jobs AS o ON o.procrastinate_id = p.id"
                    " WHERE p.queueing_lock = %s AND p.status = 'todo'",
                    (queueing_lock,),
                )
                row = await cur.fetchone()
                holder = None if row is None else str(row[0])
                raise errors.AlreadyEnqueued(
                    f"queueing lock {queueing_lock!r} is held by queued job {holder}",
                    queueing_lock=queueing_lock,
                    job_id=holder,
                ) from None
            now = time.time()
            args = {
                "pid": pid,
                "id": job_id,
                "spec": data,
                "thread_id": spec.thread_id,
                "run_id": run_id,
                "now": now,
                "queueing_lock": queueing_lock,
            }
            await conn.execute(schema.INSERT_JOB, args)
            await self._log(conn, job_id, 0, "enqueued", now)
            return job_id

        return await self._run(op, write=True)

    async def claim(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        max_attempts: int | None = None,
        now: float | None = None,
    ) -> base.Job | None:
        async def op(conn: Conn) -> base.Job | None:
            # The sweep: lapsed leases go back to procrastinate's queue (see the module doc).
            cur = await conn.execute(schema.SWEEP, {"now": now})
            row = await cur.fetchone()
            assert row is not None
            at, expired = float(row[0]), row[1]
            for pid in expired:
                await self._query_one(
                    conn,
                    "retry_job",
                    job_id=pid,
                    retry_at=None,
                    new_priority=None,
                    new_queue_name=None,
                    new_lock=None,
                )
            pworker = await self._beat(conn, lease_seconds)
            while True:
                fetched = await self._query_one(
                    conn, "fetch_job", queues=[schema.QUEUE], worker_id=pworker
                )
                if fetched["id"] is None:
                    return None
                job = await self._fetched(conn, fetched["id"])
                if job is None:
                    continue
                if max_attempts is not None and job.attempts >= max_attempts:
                    # Returned FAILED, not claimed: the caller cancels the run it may have left.
                    result = base.exhausted_result(job.attempts)
                    await self._end(conn, job, base.JobState.FAILED, result, at)
                    await self._log(conn, job.id, job.epoch, f"failed: {result.last_error}", at)
                    return msgspec.structs.replace(
                        job,
                        state=base.JobState.FAILED,
                        result=result,
                        lease_owner=None,
                        lease_expires_at=None,
                        updated_at=at,
                    )
                return await self._take(conn, job, worker_id, lease_seconds, at)

        return await self._run(op, write=True)

    async def _fetched(self, conn: Conn, pid: int) -> base.Job | None:
        """Our row (locked) of a procrastinate job just fetched; None when it has none."""
        cur = await conn.execute(
            f"SELECT {schema.COLUMNS} FROM orchestrator_jobs WHERE procrastinate_id = %s"
            " FOR UPDATE",
            (pid,),
        )
        row = await cur.fetchone()
        if row is None:
            # Not ours (deferred into our queue by something else): never run it.
            await self._query_one(conn, "finish_job", job_id=pid, status="failed", delete_job=False)
            return None
        job = load(row)
        if isinstance(job, str):  # see "Quarantine" in store.base: fail it, keep its bytes
            at = time.time()
            result = _result_encoder.encode(base.quarantine_result(job))
            await conn.execute(schema.QUARANTINE, {"id": row[0], "result": result, "now": at})
            await self._log(conn, row[0], row[_EPOCH], base.quarantine_message(job), at)
            return None
        return job

    async def _take(
        self, conn: Conn, job: base.Job, worker_id: str, lease_seconds: float, at: float
    ) -> base.Job:
        claimed = msgspec.structs.replace(
            job,
            state=base.JobState.RUNNING,
            epoch=job.epoch + 1,
            attempts=job.attempts + 1,
            lease_owner=worker_id,
            lease_expires_at=at + lease_seconds,
            updated_at=at,
        )
        # A running job holds no queueing lock (procrastinate enforces it on queued jobs only).
        await conn.execute(
            schema.TAKE,
            (claimed.epoch, claimed.attempts, worker_id, claimed.lease_expires_at, at, job.id),
        )
        previous = job.lease_owner if job.state is base.JobState.RUNNING else None
        message = base.claim_message(worker_id, claimed, previous)
        await self._log(conn, job.id, claimed.epoch, message, at)
        return claimed

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
        pairs = list(leases)

        async def op(conn: Conn) -> set[str]:
            at = time.time()  # for history lines only
            args = {
                "now": now,
                "lease": lease_seconds,
                "ids": [job_id for job_id, _ in pairs],
                "epochs": [epoch for _, epoch in pairs],
            }
            cur = await conn.execute(schema.HEARTBEAT, args)
            held = {str(row[0]) for row in await cur.fetchall()}
            lost = [(job_id, epoch) for job_id, epoch in pairs if job_id not in held]
            if lost:
                # State and epoch only: a row that went bad is no reason to fail the others.
                cur = await conn.execute(
                    "SELECT id, state, epoch FROM orchestrator_jobs WHERE id = ANY(%s)",
                    ([job_id for job_id, _ in lost],),
                )
                current = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
                for job_id, epoch in lost:
                    if job_id in current:
                        state, now_epoch = current[job_id]
                        message = base.stale_message("heartbeat", epoch, now_epoch, state)
                        await self._log(conn, job_id, epoch, message, at)
            await self._beat(conn, lease_seconds)
            return held

        return set() if not pairs else await self._run(op, write=True)

    async def record_thread(self, job_id: str, epoch: int, thread_id: str) -> None:
        async def op(conn: Conn) -> None:
            job = await self._fence(conn, job_id, epoch, "record_thread")
            if job.thread_id == thread_id:
                return
            if job.thread_id is not None:
                raise errors.StoreError(
                    f"job {job_id}: already on thread {job.thread_id}, cannot move to {thread_id}"
                )
            await self._update(conn, job_id, thread_id=thread_id)
            # The new thread becomes the job's procrastinate lock: later jobs on it wait.
            await conn.execute(
                "UPDATE procrastinate_jobs AS p SET lock = %s FROM orchestrator_jobs AS o"
                " WHERE o.id = %s AND p.id = o.procrastinate_id AND p.lock IS NULL",
                (thread_id, job_id),
            )
            await self._log(conn, job_id, epoch, f"thread recorded: {thread_id}", time.time())

        await self._run(op, write=True)

    async def record_run(self, job_id: str, epoch: int, run_id: str) -> None:
        async def op(conn: Conn) -> None:
            job = await self._fence(conn, job_id, epoch, "record_run")
            if job.run_id != run_id:
                await self._update(conn, job_id, run_id=run_id)
                message = base.run_message(run_id, job.run_id)
                await self._log(conn, job_id, epoch, message, time.time())

        await self._run(op, write=True)

    async def release(self, job_id: str, epoch: int) -> None:
        async def op(conn: Conn) -> None:
            job = await self._fence(conn, job_id, epoch, "release")
            await self._update(
                conn,
                job_id,
                state=base.JobState.QUEUED.value,
                attempts=max(job.attempts - 1, 0),
                lease_owner=None,
                lease_expires_at=None,
            )
            await conn.execute(schema.RETRY, {"id": job_id})
            if job.queueing_lock is not None:
                await conn.execute(
                    schema.RESTORE_QUEUEING_LOCK, {"lock": job.queueing_lock, "id": job_id}
                )
            await self._log(conn, job_id, epoch, f"released by {job.lease_owner}", time.time())

        await self._run(op, write=True)

    async def complete(
        self, job_id: str, epoch: int, state: base.JobState, result: base.JobResult
    ) -> None:
        base.check_final(state)

        async def op(conn: Conn) -> None:
            job = await self._fence(conn, job_id, epoch, "complete")
            now = time.time()
            await self._end(conn, job, state, result, now)
            await self._log(conn, job_id, epoch, base.complete_message(state, result), now)

        await self._run(op, write=True)

    async def get(self, job_id: str) -> base.Job | None:
        return await self._run(lambda conn: self._select(conn, job_id))

    async def list_jobs(
        self, *, state: base.JobState | None = None, limit: int = 100
    ) -> list[base.Job]:
        async def op(conn: Conn) -> list[base.Job]:
            where = "" if state is None else "WHERE state = %(state)s"
            cur = await conn.execute(
                f"SELECT {schema.COLUMNS} FROM orchestrator_jobs {where}"
                " ORDER BY seq DESC LIMIT %(limit)s",
                {"state": None if state is None else state.value, "limit": max(limit, 0)},
            )
            jobs: list[base.Job] = []
            for row in await cur.fetchall():
                job = load(row)
                if isinstance(job, str):  # read paths never quarantine; claim does
                    log.warning("%s: job %s skipped: %s", self.where, row[0], job)
                else:
                    jobs.append(job)
            return jobs

        return await self._run(op)

    async def history(self, job_id: str) -> list[base.JobEvent]:
        async def op(conn: Conn) -> list[base.JobEvent]:
            cur = await conn.execute(
                "SELECT at, epoch, message FROM orchestrator_job_events"
                " WHERE job_id = %s ORDER BY id",
                (job_id,),
            )
            rows = await cur.fetchall()
            return [base.JobEvent(at=at, epoch=epoch, message=msg) for at, epoch, msg in rows]

        return await self._run(op)

    async def append_history(self, job_id: str, epoch: int, message: str) -> None:
        async def op(conn: Conn) -> None:
            cur = await conn.execute(schema.APPEND, (time.time(), epoch, message, job_id))
            if cur.rowcount == 0:
                raise errors.StoreError(f"PostgreSQL {self.where}: no job {job_id!r}")

        await self._run(op)  # one statement: no transaction needed

    async def counts(self) -> dict[base.JobState, int]:
        async def op(conn: Conn) -> dict[base.JobState, int]:
            counts = dict.fromkeys(base.JobState, 0)
            cur = await conn.execute("SELECT state, count(*) FROM orchestrator_jobs GROUP BY state")
            for state, n in await cur.fetchall():
                counts[base.JobState(state)] = int(n)
            return counts

        return await self._run(op)

"""The tool-call ledger and the approval hand-off of ``PostgresStore`` (see ``store.base``).

Every write here is fenced like the job writes in ``postgres.py``: the job row is locked and its
epoch checked in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from orchestrator import errors
from orchestrator.store import base
from orchestrator.store import postgres_schema as schema
from orchestrator.store.postgres_pool import Conn, PostgresBase

__all__ = ["LedgerOps"]


class LedgerOps(PostgresBase):
    """Ledger and approval operations; ``PostgresStore`` adds the jobs."""

    # --- ledger --------------------------------------------------------------------------

    async def save_output(
        self, job_id: str, epoch: int, run_id: str, tool_call_id: str, output: str
    ) -> None:
        async def op(conn: Conn) -> None:
            await self._fence(conn, job_id, epoch, "save_output")
            args = (run_id, tool_call_id, job_id, epoch, output, time.time())
            await conn.execute(schema.UPSERT_OUTPUT, args)

        await self._run(op, write=True)

    async def outputs(self, run_id: str) -> dict[str, str]:
        async def op(conn: Conn) -> dict[str, str]:
            cur = await conn.execute(
                "SELECT tool_call_id, output FROM orchestrator_calls"
                " WHERE run_id = %s AND output IS NOT NULL",
                (run_id,),
            )
            return {str(call): str(output) for call, output in await cur.fetchall()}

        return await self._run(op)

    async def check_claim(self, job_id: str, epoch: int, *, now: float | None = None) -> bool:
        async def op(conn: Conn) -> bool:
            cur = await conn.execute(
                "SELECT 1 FROM orchestrator_jobs WHERE id = %s AND epoch = %s"
                f" AND state = 'running' AND lease_expires_at > coalesce(%s, {schema.NOW})",
                (job_id, epoch, now),
            )
            return await cur.fetchone() is not None

        return await self._run(op)

    async def begin_calls(
        self,
        job_id: str,
        epoch: int,
        run_id: str,
        tool_call_ids: Sequence[str],
        *,
        now: float | None = None,
    ) -> dict[str, int]:
        ids = list(dict.fromkeys(tool_call_ids))  # one row may be touched once per statement

        async def op(conn: Conn) -> dict[str, int]:
            job, at = await self._fence_at(conn, job_id, epoch, "begin_calls", now)
            if job.lease_expires_at is None or job.lease_expires_at <= at:
                message = base.lapsed_message("begin_calls", epoch, job.lease_expires_at)
                await self._log(conn, job_id, epoch, message, at)
                raise errors.LeaseLost(f"job {job_id}: {message}", job_id=job_id, epoch=epoch)
            args = {"run_id": run_id, "job_id": job_id, "epoch": epoch, "now": at, "ids": ids}
            cur = await conn.execute(schema.BEGIN_CALLS, args)
            return {str(call): int(starts) for call, starts in await cur.fetchall()}

        return await self._run(op, write=True)

    async def mark_submitted(
        self, job_id: str, epoch: int, run_id: str, tool_call_ids: Sequence[str]
    ) -> None:
        ids = list(dict.fromkeys(tool_call_ids))

        async def op(conn: Conn) -> None:
            await self._fence(conn, job_id, epoch, "mark_submitted")
            args = {"run_id": run_id, "job_id": job_id, "epoch": epoch, "now": time.time()}
            await conn.execute(schema.MARK_SUBMITTED, {**args, "ids": ids})

        await self._run(op, write=True)

    async def calls(self, run_id: str) -> dict[str, base.CallRecord]:
        async def op(conn: Conn) -> dict[str, base.CallRecord]:
            cur = await conn.execute(
                "SELECT tool_call_id, starts, output, submitted FROM orchestrator_calls"
                " WHERE run_id = %s",
                (run_id,),
            )
            return {
                call: base.CallRecord(
                    tool_call_id=call, starts=starts, output=output, submitted=submitted
                )
                for call, starts, output, submitted in await cur.fetchall()
            }

        return await self._run(op)

    # --- approvals -----------------------------------------------------------------------

    async def park(self, job_id: str, epoch: int, message: str) -> None:
        async def op(conn: Conn) -> None:
            job = await self._fence(conn, job_id, epoch, "park")
            # procrastinate keeps the job "doing": its thread stays locked while the run waits
            # for the decision on the server, and nothing fetches it until ``decide``.
            await self._update(
                conn,
                job_id,
                state=base.JobState.WAITING_APPROVAL.value,
                attempts=max(job.attempts - 1, 0),
                lease_owner=None,
                lease_expires_at=None,
            )
            await self._log(conn, job_id, epoch, message, time.time())

        await self._run(op, write=True)

    async def decide(self, job_id: str, decisions: Mapping[str, str]) -> None:
        async def op(conn: Conn) -> None:
            job = await self._select(conn, job_id, lock=True)
            run_id = base.check_parked(job, job_id)
            assert job is not None
            now = time.time()
            for tool_call_id, output in decisions.items():
                args = (run_id, tool_call_id, job_id, job.epoch, output, now)
                await conn.execute(schema.UPSERT_OUTPUT, args)
            await self._update(conn, job_id, state=base.JobState.QUEUED.value)
            await conn.execute(schema.RETRY, {"id": job_id})  # back in procrastinate's queue
            if job.queueing_lock is not None:
                await conn.execute(
                    schema.RESTORE_QUEUEING_LOCK, {"lock": job.queueing_lock, "id": job_id}
                )
            message = base.decided_message(decisions)
            await self._log(conn, job_id, job.epoch, message, now)

        await self._run(op, write=True)

"""``JobStore`` on one SQLite file (stdlib ``sqlite3``), shareable by several processes.

* Every call runs off the event loop through ``anyio.to_thread.run_sync`` on the store's own
  ``CapacityLimiter(1)``. One connection per store, opened with ``check_same_thread=False`` and
  only ever used by one thread at a time (the limiter serialises calls): the pragmas are set
  once and no call pays for an open. Two stores (threads or processes) on one file each hold a
  connection; SQLite's file locks arbitrate between them.
* WAL journal (readers never block the writer), ``synchronous=FULL`` (a committed claim or
  ledger record survives power loss), a busy timeout so writers queue instead of failing.
* Every write is one ``BEGIN IMMEDIATE`` transaction: it takes the write lock before reading,
  so ``claim``'s select-then-update cannot interleave with another process's.
* A cancelled caller does not abandon its thread: the transaction finishes or rolls back first.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, Self, TypeVar

import anyio
import msgspec

from orchestrator import errors
from orchestrator.store import base
from orchestrator.store import sqlite_schema as schema

__all__ = ["SqliteStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class SqliteStore:
    """Jobs, history and ledger in one SQLite file at ``path``."""

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0, readonly: bool = False
    ) -> None:
        self.path = os.fspath(path)
        #: Seconds a write waits for another connection's lock before "database is locked".
        self.busy_timeout = busy_timeout
        #: Open without writing anything (no schema, no journal change): for ``status``.
        self.readonly = readonly
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"SqliteStore({self.path!r})"

    # --- plumbing ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._conn = await anyio.to_thread.run_sync(self._open, limiter=self._limiter)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def _error(self, exc: sqlite3.Error) -> errors.StoreError:
        return errors.StoreError(f"{self.path}: {exc}")

    def _open(self) -> sqlite3.Connection:
        if self.readonly:
            return self._open_readonly()
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # serialised by the limiter instead
            )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise errors.StoreError(f"{self.path}: cannot use WAL journal (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_readonly(self, flags: str) -> sqlite3.Connection:
        uri = f"file:{urllib.parse.quote(self.path)}?mode=ro{flags}"
        conn = sqlite3.connect(
            uri, uri=True, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        if not 1 <= version <= schema.SCHEMA_VERSION:
            conn.close()
            raise errors.StoreError(
                f"{self.path}: not an orchestrator database this code reads (schema {version})"
            )
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        try:
            if not os.path.lexists(self.path):
                # Nothing was ever enqueued there: an empty store, and no file created.
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                conn.executescript(schema.SCHEMA)
                return conn
            try:
                return self._connect_readonly("")
            except sqlite3.OperationalError:
                # A WAL database in a directory we may not write: SQLite cannot make its -shm
                # file. Read the file as it stands (a writer's newest commits may be missed).
                return self._connect_readonly("&immutable=1")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == schema.SCHEMA_VERSION:
            return
        if version > schema.SCHEMA_VERSION:
            raise errors.StoreError(
                f"{self.path}: schema version {version} is newer than this code"
                f" ({schema.SCHEMA_VERSION})"
            )
        with schema.transaction(conn):
            # Another process may have created the schema while we waited for the lock.
            if conn.execute("PRAGMA user_version").fetchone()[0] == schema.SCHEMA_VERSION:
                return
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if current == 1:
                script = schema.MIGRATE_1_TO_2
            elif tables:
                raise errors.StoreError(f"{self.path}: not an orchestrator database")
            else:
                script = schema.SCHEMA
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise errors.StoreError(f"{self.path}: store is not open (use `async with`)")

        def call() -> T:
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    def _job(self, row: Sequence[Any]) -> base.Job:
        job = _load(row)
        if isinstance(job, str):
            raise errors.StoreError(f"{self.path}: job {row[0]}: {job}")
        return job

    def _select(self, conn: sqlite3.Connection, job_id: str) -> base.Job | None:
        row = conn.execute(f"SELECT {schema.COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._job(row)

    def _fence(self, conn: sqlite3.Connection, job_id: str, epoch: int, op: str) -> base.Job:
        job = self._select(conn, job_id)
        if job is None:
            raise errors.StoreError(f"{self.path}: no job {job_id!r}")
        if job.state is base.JobState.RUNNING and job.epoch == epoch:
            return job
        message = base.stale_message(op, epoch, job.epoch, job.state)
        schema.log(conn, job_id, epoch, message, time.time())
        raise errors.LeaseLost(f"job {job_id}: {message}", job_id=job_id, epoch=epoch)

    # --- jobs ----------------------------------------------------------------------------

    async def enqueue(self, spec: base.JobSpec, *, queueing_lock: str | None = None) -> str:
        data = base.encode_spec(spec)
        run_id = spec.run_id if isinstance(spec, base.AdoptJob) else None
        job_id = base.new_job_id()

        def op(conn: sqlite3.Connection) -> str:
            with schema.transaction(conn):
                if queueing_lock is not None:
                    row = conn.execute(
                        "SELECT id FROM jobs WHERE queueing_lock = ? AND state = 'queued'",
                        (queueing_lock,),
                    ).fetchone()
                    if row is not None:
                        raise errors.AlreadyEnqueued(
                            f"queueing lock {queueing_lock!r} is held by queued job {row[0]}",
                            queueing_lock=queueing_lock,
                            job_id=row[0],
                        )
                now = time.time()
                conn.execute(
                    f"INSERT INTO jobs ({schema.COLUMNS})"
                    " VALUES (?, ?, 'queued', 0, ?, ?, NULL, NULL, 0, NULL, ?, ?, ?)",
                    (job_id, data, spec.thread_id, run_id, now, now, queueing_lock),
                )
                schema.log(conn, job_id, 0, "enqueued", now)
            return job_id

        return await self._run(op)

    async def claim(
        self,
        worker_id: str,
        *,
        lease_seconds: float,
        max_attempts: int | None = None,
        now: float | None = None,
    ) -> base.Job | None:
        at = time.time() if now is None else now

        def op(conn: sqlite3.Connection) -> base.Job | None:
            with schema.transaction(conn):
                while (row := conn.execute(schema.CLAIMABLE, {"now": at}).fetchone()) is not None:
                    job = _load(row)
                    if isinstance(job, str):  # see "Quarantine" in store.base
                        schema.quarantine(conn, row[0], row[_EPOCH], job, at)
                        continue
                    if max_attempts is not None and job.attempts >= max_attempts:
                        result = base.exhausted_result(job.attempts)
                        schema.end(conn, job.id, base.JobState.FAILED, result, at)
                        schema.log(conn, job.id, job.epoch, f"failed: {result.last_error}", at)
                        return self._select(conn, job.id)
                    claimed = msgspec.structs.replace(
                        job,
                        state=base.JobState.RUNNING,
                        epoch=job.epoch + 1,
                        attempts=job.attempts + 1,
                        lease_owner=worker_id,
                        lease_expires_at=at + lease_seconds,
                        updated_at=at,
                    )
                    conn.execute(
                        "UPDATE jobs SET state = 'running', epoch = ?, attempts = ?,"
                        " lease_owner = ?, lease_expires_at = ?, updated_at = ? WHERE id = ?",
                        (
                            claimed.epoch,
                            claimed.attempts,
                            worker_id,
                            claimed.lease_expires_at,
                            at,
                            job.id,
                        ),
                    )
                    previous = job.lease_owner if job.state is base.JobState.RUNNING else None
                    message = base.claim_message(worker_id, claimed, previous)
                    schema.log(conn, job.id, claimed.epoch, message, at)
                    return claimed
                # Idle: the moment to sweep rows in a state we do not know (cheap: index ranges).
                for job_id, state, epoch in conn.execute(schema.UNKNOWN_STATE).fetchall():
                    schema.quarantine(conn, job_id, epoch, f"unknown state {state!r}", at)
            return None

        return await self._run(op)

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
        at = time.time() if now is None else now
        pairs = list(leases)

        def op(conn: sqlite3.Connection) -> set[str]:
            held: set[str] = set()
            with schema.transaction(conn):
                for job_id, epoch in pairs:
                    cursor = conn.execute(
                        "UPDATE jobs SET lease_expires_at = ?, updated_at = ?"
                        " WHERE id = ? AND epoch = ? AND state = 'running'",
                        (at + lease_seconds, at, job_id, epoch),
                    )
                    if cursor.rowcount:
                        held.add(job_id)
                        continue
                    # Raw columns: an unloadable row must not fail every other lease's renewal.
                    found = conn.execute(
                        "SELECT epoch, state FROM jobs WHERE id = ?", (job_id,)
                    ).fetchone()
                    if found is not None:
                        message = base.stale_message("heartbeat", epoch, found[0], found[1])
                        schema.log(conn, job_id, epoch, message, at)
            return held

        return set() if not pairs else await self._run(op)

    async def record_thread(self, job_id: str, epoch: int, thread_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                job = self._fence(conn, job_id, epoch, "record_thread")
                if job.thread_id == thread_id:
                    return
                if job.thread_id is not None:
                    raise errors.StoreError(
                        f"job {job_id}: already on thread {job.thread_id}, "
                        f"cannot move to {thread_id}"
                    )
                schema.update(conn, job_id, thread_id=thread_id)
                schema.log(conn, job_id, epoch, f"thread recorded: {thread_id}", time.time())

        await self._run(op)

    async def record_run(self, job_id: str, epoch: int, run_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                job = self._fence(conn, job_id, epoch, "record_run")
                if job.run_id != run_id:
                    schema.update(conn, job_id, run_id=run_id)
                    schema.log(
                        conn, job_id, epoch, base.run_message(run_id, job.run_id), time.time()
                    )

        await self._run(op)

    async def release(self, job_id: str, epoch: int) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                job = self._fence(conn, job_id, epoch, "release")
                schema.update(
                    conn,
                    job_id,
                    state=base.JobState.QUEUED.value,
                    attempts=max(job.attempts - 1, 0),
                    lease_owner=None,
                    lease_expires_at=None,
                )
                schema.log(conn, job_id, epoch, f"released by {job.lease_owner}", time.time())

        await self._run(op)

    async def complete(
        self, job_id: str, epoch: int, state: base.JobState, result: base.JobResult
    ) -> None:
        base.check_final(state)

        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                self._fence(conn, job_id, epoch, "complete")
                now = time.time()
                schema.end(conn, job_id, state, result, now)
                schema.log(conn, job_id, epoch, base.complete_message(state, result), now)

        await self._run(op)

    async def get(self, job_id: str) -> base.Job | None:
        return await self._run(lambda conn: self._select(conn, job_id))

    async def list_jobs(
        self, *, state: base.JobState | None = None, limit: int = 100
    ) -> list[base.Job]:
        def op(conn: sqlite3.Connection) -> list[base.Job]:
            where, args = ("", ()) if state is None else ("WHERE state = ?", (state.value,))
            rows = conn.execute(
                f"SELECT {schema.COLUMNS} FROM jobs {where} ORDER BY seq DESC LIMIT ?",
                (*args, max(limit, 0)),
            ).fetchall()
            jobs: list[base.Job] = []
            for row in rows:
                job = _load(row)
                if isinstance(job, str):
                    log.warning("%s: job %s skipped: %s", self.path, row[0], job)
                else:
                    jobs.append(job)
            return jobs

        return await self._run(op)

    async def history(self, job_id: str) -> list[base.JobEvent]:
        def op(conn: sqlite3.Connection) -> list[base.JobEvent]:
            rows = conn.execute(
                "SELECT at, epoch, message FROM job_events WHERE job_id = ? ORDER BY id",
                (job_id,),
            ).fetchall()
            return [base.JobEvent(at=at, epoch=epoch, message=msg) for at, epoch, msg in rows]

        return await self._run(op)

    async def append_history(self, job_id: str, epoch: int, message: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                    raise errors.StoreError(f"{self.path}: no job {job_id!r}")
                schema.log(conn, job_id, epoch, message, time.time())

        await self._run(op)

    async def counts(self) -> dict[base.JobState, int]:
        def op(conn: sqlite3.Connection) -> dict[base.JobState, int]:
            counts = dict.fromkeys(base.JobState, 0)
            for state, n in conn.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
                if state in _STATES:  # an unknown state is quarantined by the next idle claim
                    counts[base.JobState(state)] = n
            return counts

        return await self._run(op)

    # --- ledger --------------------------------------------------------------------------

    async def save_output(
        self, job_id: str, epoch: int, run_id: str, tool_call_id: str, output: str
    ) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                self._fence(conn, job_id, epoch, "save_output")
                args = (run_id, tool_call_id, job_id, epoch, output, time.time())
                conn.execute(schema.UPSERT_OUTPUT, args)

        await self._run(op)

    async def outputs(self, run_id: str) -> dict[str, str]:
        def op(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT tool_call_id, output FROM calls WHERE run_id = ? AND output IS NOT NULL",
                (run_id,),
            )
            return dict(rows.fetchall())

        return await self._run(op)

    async def check_claim(self, job_id: str, epoch: int, *, now: float | None = None) -> bool:
        at = time.time() if now is None else now

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT 1 FROM jobs WHERE id = ? AND epoch = ? AND state = 'running'"
                " AND lease_expires_at > ?",
                (job_id, epoch, at),
            ).fetchone()
            return row is not None

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
        at = time.time() if now is None else now
        ids = list(tool_call_ids)

        def op(conn: sqlite3.Connection) -> dict[str, int]:
            with schema.transaction(conn):
                job = self._fence(conn, job_id, epoch, "begin_calls")
                if job.lease_expires_at is None or job.lease_expires_at <= at:
                    message = base.lapsed_message("begin_calls", epoch, job.lease_expires_at)
                    schema.log(conn, job_id, epoch, message, at)
                    raise errors.LeaseLost(f"job {job_id}: {message}", job_id=job_id, epoch=epoch)
                attempts: dict[str, int] = {}
                for call_id in ids:
                    row = conn.execute(
                        schema.BEGIN_CALL, (run_id, call_id, job_id, epoch, at)
                    ).fetchone()
                    if row is not None:
                        attempts[call_id] = row[0]
                return attempts

        return await self._run(op)

    async def mark_submitted(
        self, job_id: str, epoch: int, run_id: str, tool_call_ids: Sequence[str]
    ) -> None:
        ids = list(tool_call_ids)

        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                self._fence(conn, job_id, epoch, "mark_submitted")
                now = time.time()
                conn.executemany(
                    schema.MARK_SUBMITTED, [(run_id, c, job_id, epoch, now) for c in ids]
                )

        await self._run(op)

    async def calls(self, run_id: str) -> dict[str, base.CallRecord]:
        def op(conn: sqlite3.Connection) -> dict[str, base.CallRecord]:
            rows = conn.execute(
                "SELECT tool_call_id, starts, output, submitted FROM calls WHERE run_id = ?",
                (run_id,),
            ).fetchall()
            return {
                call_id: base.CallRecord(
                    tool_call_id=call_id, starts=starts, output=output, submitted=bool(submitted)
                )
                for call_id, starts, output, submitted in rows
            }

        return await self._run(op)

    async def park(self, job_id: str, epoch: int, message: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                job = self._fence(conn, job_id, epoch, "park")
                schema.update(
                    conn,
                    job_id,
                    state=base.JobState.WAITING_APPROVAL.value,
                    attempts=max(job.attempts - 1, 0),
                    lease_owner=None,
                    lease_expires_at=None,
                )
                schema.log(conn, job_id, epoch, message, time.time())

        await self._run(op)

    async def decide(self, job_id: str, decisions: Mapping[str, str]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            with schema.transaction(conn):
                job = self._select(conn, job_id)
                run_id = base.check_parked(job, job_id)
                assert job is not None
                now = time.time()
                for tool_call_id, output in decisions.items():
                    args = (run_id, tool_call_id, job_id, job.epoch, output, now)
                    conn.execute(schema.UPSERT_OUTPUT, args)
                schema.update(conn, job_id, state=base.JobState.QUEUED.value)
                message = base.decided_message(decisions)
                schema.log(conn, job_id, job.epoch, message, now)

        await self._run(op)


_STATES: Final = frozenset(s.value for s in base.JobState)
_EPOCH: Final = schema.NAMES.index("epoch")
_RESULT_ERRORS: Final = (msgspec.DecodeError, RecursionError, UnicodeError, TypeError, ValueError)


def _load(row: Sequence[Any]) -> base.Job | str:
    """The job a row holds, or why it cannot be loaded (any damage to any column)."""
    fields = dict(zip(schema.NAMES, row, strict=True))
    try:
        fields["spec"] = base.decode_spec(fields["spec"])
    except errors.InvalidJob as exc:
        return str(exc)
    try:
        if fields["result"] is not None:
            fields["result"] = msgspec.json.decode(fields["result"])
        return msgspec.convert(fields, base.Job)
    except _RESULT_ERRORS as exc:
        return f"unreadable row: {str(exc)[:300]}"

"""The connection side of ``PostgresStore``: pool, transactions, procrastinate's queries, rows.

Kept apart from ``postgres.py`` so the store reads as operations.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Self, TypeVar

import anyio
import msgspec
import procrastinate
import psycopg
import psycopg_pool
from procrastinate import exceptions as pexc
from psycopg import conninfo

from orchestrator import errors
from orchestrator.store import base
from orchestrator.store import postgres_schema as schema

__all__ = ["Conn", "PostgresBase", "describe_dsn", "load"]

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

_result_encoder: Final = msgspec.json.Encoder()
#: A pooled connection idle this long is checked (one round trip) before it is handed out.
CHECK_AFTER_IDLE: Final = 1.0
#: Seconds between heartbeats of our procrastinate worker row.
BEAT_SECONDS: Final = 5.0
#: A procrastinate worker row without a heartbeat for this many leases (at least a minute) is
#: a dead worker's.
STALE_WORKER: Final = 10
_PSYCOPG_ERRORS: Final = (psycopg.Error, psycopg_pool.PoolTimeout, pexc.ConnectorException)


def load(row: Sequence[Any]) -> base.Job | str:
    """The job a row holds, or why it cannot be loaded (see "Quarantine" in ``store.base``)."""
    fields = dict(zip(schema.NAMES, row, strict=True))
    try:
        fields["spec"] = base.decode_spec(bytes(fields["spec"]))
    except errors.InvalidJob as exc:
        return str(exc)
    try:
        if fields["result"] is not None:
            fields["result"] = msgspec.json.decode(bytes(fields["result"]))
        return msgspec.convert(fields, base.Job)
    except (msgspec.DecodeError, RecursionError, UnicodeError, TypeError, ValueError) as exc:
        return f"unreadable row: {str(exc)[:300]}"


def describe_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` of a connection string, never its password."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable PostgreSQL DSN>"
    host = parts.get("host") or "localhost"
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{host}{port}/{parts.get('dbname') or ''}"


class PostgresBase:
    """The pool and connector of one store, and the helpers its operations share."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        connect_timeout: float = 10.0,
        idle_in_transaction_timeout: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self.where = describe_dsn(dsn)
        #: Most connections open at once (the worker's concurrent calls wait for one beyond).
        self.pool_size = pool_size
        #: Seconds to wait for a connection, at start and for each call.
        self.connect_timeout = connect_timeout
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._connector: procrastinate.PsycopgConnector | None = None
        self._app: procrastinate.App | None = None
        self._worker_id: int | None = None
        #: ``time.monotonic()`` at which each pooled connection (by id) was last returned.
        self._last_used: dict[int, float] = {}
        #: ``time.monotonic()`` of our last procrastinate worker heartbeat.
        self._beaten_at = float("-inf")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.where!r})"

    # --- plumbing ------------------------------------------------------------------------

    def _error(self, exc: BaseException) -> errors.StoreError:
        cause = exc.__cause__ if isinstance(exc, pexc.ConnectorException) else None
        detail = str(cause or exc).strip() or type(exc).__name__
        return errors.StoreError(f"PostgreSQL {self.where}: {detail}")

    def _session(self) -> dict[str, Any]:
        ms = int(self.idle_in_transaction_timeout * 1000)
        return {
            "autocommit": True,
            "connect_timeout": max(1, round(self.connect_timeout)),
            "options": f"-c idle_in_transaction_session_timeout={ms}",
            # A partition must fail calls (the worker retries) rather than hang them.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 15_000,
        }

    async def __aenter__(self) -> Self:
        # One direct connection first: its error says why (refused, auth, no database), where
        # a pool would only time out; it also checks that the schema was migrated.
        try:
            conn = await psycopg.AsyncConnection.connect(self._dsn, **self._session())
        except psycopg.Error as exc:
            raise errors.StoreError(f"cannot connect to PostgreSQL {self.where}: {exc}") from exc
        async with conn:
            try:
                found = await schema.version(conn)
            except psycopg.Error as exc:
                raise self._error(exc) from exc
        if found != schema.SCHEMA_VERSION:
            action = "run `orchestrator migrate`" if found < schema.SCHEMA_VERSION else "upgrade"
            raise errors.StoreError(
                f"PostgreSQL {self.where}: schema version {found}, this code needs"
                f" {schema.SCHEMA_VERSION}: {action}"
            )
        pool = psycopg_pool.AsyncConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self.pool_size,
            kwargs=self._session(),
            timeout=self.connect_timeout,
            check=self._check,
            reset=self._returned,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
            self._connector = procrastinate.PsycopgConnector()
            await self._connector.open_async(pool=pool)
            self._app = procrastinate.App(connector=self._connector)
            self._pool = pool
            self._worker_id = await self._run(self._register)
        except BaseException as exc:
            self._pool = None
            await pool.close()
            if isinstance(exc, _PSYCOPG_ERRORS):
                raise self._error(exc) from exc
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pool = self._pool
        if pool is None:
            return
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(errors.StoreError):
                await self._run(self._unregister)
            self._pool = None
            await pool.close()

    async def _returned(self, conn: Conn) -> None:
        self._last_used[id(conn)] = time.monotonic()

    async def _check(self, conn: Conn) -> None:
        """Before a checkout: a round trip to a connection that sat idle (after a database
        restart it is dead, and is replaced instead of failing the call); recently used ones
        are trusted, which saves a round trip on nearly every call."""
        if time.monotonic() - self._last_used.get(id(conn), float("-inf")) > CHECK_AFTER_IDLE:
            await psycopg_pool.AsyncConnectionPool.check_connection(conn)

    async def _register(self, conn: Conn) -> int:
        row = await self._query_one(conn, "register_worker")
        return int(row["worker_id"])

    async def _beat(self, conn: Conn, lease_seconds: float) -> int:
        """Our procrastinate worker id, its heartbeat renewed every few seconds.

        Rows of dead workers (killed, never unregistered) are pruned after ``STALE_WORKER``
        leases, which also clears their id from procrastinate's jobs; a worker pruned while it
        was frozen registers again here.
        """
        worker_id = self._worker_id
        if worker_id is not None and time.monotonic() - self._beaten_at < BEAT_SECONDS:
            return worker_id
        stale = max(STALE_WORKER * lease_seconds, 60.0)
        assert self._connector is not None
        await self._connector.execute_query_all_async_with_connection(
            conn,
            procrastinate.sql.queries["prune_stalled_workers"],
            seconds_since_heartbeat=stale,
        )
        cur = await conn.execute(
            "UPDATE procrastinate_workers SET last_heartbeat = now() WHERE id = %s RETURNING id",
            (worker_id,),
        )
        if await cur.fetchone() is None:
            worker_id = self._worker_id = await self._register(conn)
        self._beaten_at = time.monotonic()
        assert worker_id is not None
        return worker_id

    async def _unregister(self, conn: Conn) -> None:
        await self._query_one(conn, "unregister_worker", worker_id=self._worker_id)

    async def _query_one(self, conn: Conn, name: str, **args: Any) -> dict[str, Any]:
        """One of procrastinate's own named queries, on our connection (our transaction)."""
        assert self._connector is not None
        query = procrastinate.sql.queries[name]
        row: dict[str, Any] = await self._connector.execute_query_one_async_with_connection(
            conn, query, **args
        )
        return row

    async def _run(self, fn: Callable[[Conn], Awaitable[T]], *, write: bool = False) -> T:
        """``fn`` on a pooled connection (in one transaction when ``write``), shielded.

        A ``LeaseLost`` from ``fn`` still commits, so the history line recording the rejected
        write stays (as in SQLite).
        """
        pool = self._pool
        if pool is None:
            message = f"PostgreSQL {self.where}: store is not open (use `async with`)"
            raise errors.StoreError(message)

        async def call() -> T:
            async with pool.connection() as conn:
                if not write:
                    return await fn(conn)
                lost: errors.LeaseLost | None = None
                # Pipeline mode: statements whose results nobody waits for (BEGIN, the writes
                # after a fence, the history line, COMMIT) share round trips.
                async with conn.pipeline(), conn.transaction():
                    try:
                        return await fn(conn)
                    except errors.LeaseLost as exc:
                        lost = exc
                raise lost

        with anyio.CancelScope(shield=True):
            try:
                result = await call()
            except _PSYCOPG_ERRORS as exc:
                raise self._error(exc) from exc
        return result

    def _job(self, row: Sequence[Any]) -> base.Job:
        job = load(row)
        if isinstance(job, str):
            raise errors.StoreError(f"PostgreSQL {self.where}: job {row[0]}: {job}")
        return job

    async def _select(self, conn: Conn, job_id: str, *, lock: bool = False) -> base.Job | None:
        suffix = " FOR UPDATE" if lock else ""
        cur = await conn.execute(
            f"SELECT {schema.COLUMNS} FROM orchestrator_jobs WHERE id = %s{suffix}", (job_id,)
        )
        row = await cur.fetchone()
        return None if row is None else self._job(row)

    async def _log(self, conn: Conn, job_id: str, epoch: int, message: str, at: float) -> None:
        await conn.execute(schema.LOG, (job_id, at, epoch, message))

    async def _update(self, conn: Conn, job_id: str, **values: object) -> None:
        # Column names come from our own keyword arguments, never from input.
        sets = ", ".join(f"{name} = %s" for name in values)
        await conn.execute(
            f"UPDATE orchestrator_jobs SET {sets}, updated_at = {schema.NOW} WHERE id = %s",
            (*values.values(), job_id),
        )

    async def _fence(self, conn: Conn, job_id: str, epoch: int, op: str) -> base.Job:
        """The job, locked, while ``epoch`` holds it; else its stale line and ``LeaseLost``."""
        job, _ = await self._fence_at(conn, job_id, epoch, op, None)
        return job

    async def _fence_at(
        self, conn: Conn, job_id: str, epoch: int, op: str, now: float | None
    ) -> tuple[base.Job, float]:
        """``_fence``, and the time: ``now``, or the database clock (no extra round trip)."""
        cur = await conn.execute(
            f"SELECT {schema.COLUMNS}, coalesce(%s::double precision, {schema.NOW})"
            " FROM orchestrator_jobs WHERE id = %s FOR UPDATE",
            (now, job_id),
        )
        row = await cur.fetchone()
        job = None if row is None else self._job(row[:-1])
        if job is None:
            raise errors.StoreError(f"PostgreSQL {self.where}: no job {job_id!r}")
        if job.state is base.JobState.RUNNING and job.epoch == epoch:
            assert row is not None
            return job, float(row[-1])
        message = base.stale_message(op, epoch, job.epoch, job.state)
        await self._log(conn, job_id, epoch, message, time.time())
        raise errors.LeaseLost(f"job {job_id}: {message}", job_id=job_id, epoch=epoch)

    async def _end(
        self, conn: Conn, job: base.Job, state: base.JobState, result: base.JobResult, at: float
    ) -> None:
        """Our row final, procrastinate's job finished with the same outcome."""
        await conn.execute(
            "UPDATE orchestrator_jobs SET state = %s, result = %s, lease_owner = NULL,"
            " lease_expires_at = NULL, updated_at = %s WHERE id = %s",
            (state.value, _result_encoder.encode(result), at, job.id),
        )
        await conn.execute(schema.FINISH, {"id": job.id, "status": state.value})

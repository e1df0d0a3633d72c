"""The PostgreSQL schema: procrastinate's own, plus the project's tables, applied by ``migrate``.

Nothing here runs at import or when a store opens: ``orchestrator migrate`` (``migrate()``)
creates or upgrades the schema explicitly, and a store refuses a database that is not at
``SCHEMA_VERSION``.

* procrastinate's schema is applied the way its documentation says (its schema manager's
  ``apply_schema``) when its tables are absent; upgrading procrastinate across versions is
  done with its own migration files, as its docs describe.
* The project's tables hold what procrastinate does not keep: the job record (spec, claim
  epoch, lease, thread and run, result), the append-only history and the tool-call ledger.
  Each job row points at its procrastinate job (``procrastinate_id``).
* Migrations are numbered; each runs in one transaction under an advisory lock, so two
  ``migrate`` commands started together apply each step once.
"""

from __future__ import annotations

from typing import Any, Final, LiteralString

import psycopg

from orchestrator import errors

__all__ = ["MIGRATIONS", "QUEUE", "SCHEMA_VERSION", "TASK", "migrate", "version"]

#: The procrastinate queue and task name our jobs are deferred as.
QUEUE: Final = "orchestrator"
TASK: Final = "orchestrator.job"

#: Key of the advisory lock ``migrate`` holds (any constant both sides agree on).
_MIGRATE_LOCK: Final = 0x6F7263686573

MIGRATIONS: Final[tuple[LiteralString, ...]] = (
    # 1: jobs, history, ledger.
    """
    CREATE TABLE orchestrator_jobs (
        seq bigserial NOT NULL UNIQUE,          -- enqueue order (newest-first listings)
        id text PRIMARY KEY,
        procrastinate_id bigint UNIQUE REFERENCES procrastinate_jobs (id) ON DELETE SET NULL,
        spec bytea NOT NULL,                    -- base.encode_spec: versioned msgspec JSON
        state text NOT NULL
            CHECK (state IN ('queued', 'running', 'waiting_approval', 'succeeded', 'failed')),
        attempts integer NOT NULL,
        thread_id text,
        run_id text,
        lease_owner text,
        lease_expires_at double precision,
        epoch integer NOT NULL,
        result bytea,                           -- msgspec JSON of base.JobResult
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        queueing_lock text
    );
    CREATE INDEX orchestrator_jobs_state ON orchestrator_jobs (state, seq);
    CREATE INDEX orchestrator_jobs_expiring ON orchestrator_jobs (lease_expires_at)
        WHERE state = 'running';
    CREATE TABLE orchestrator_job_events (
        id bigserial PRIMARY KEY,
        job_id text NOT NULL,
        at double precision NOT NULL,
        epoch integer NOT NULL,
        message text NOT NULL
    );
    CREATE INDEX orchestrator_job_events_job ON orchestrator_job_events (job_id, id);
    CREATE TABLE orchestrator_calls (
        run_id text NOT NULL,
        tool_call_id text NOT NULL,
        job_id text NOT NULL,
        epoch integer NOT NULL,
        starts integer NOT NULL DEFAULT 0,
        output text,
        submitted boolean NOT NULL DEFAULT false,
        saved_at double precision,
        PRIMARY KEY (run_id, tool_call_id)
    );
    """,
)

#: The version ``migrate`` brings a database to, and the only one a store opens.
SCHEMA_VERSION: Final = len(MIGRATIONS)

_VERSION_TABLE: Final = """
CREATE TABLE IF NOT EXISTS orchestrator_schema (
    version integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _exists(conn: psycopg.AsyncConnection[Any], table: str) -> bool:
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def version(conn: psycopg.AsyncConnection[Any]) -> int:
    """The project schema version of the database (0: never migrated)."""
    if not await _exists(conn, "orchestrator_schema"):
        return 0
    cur = await conn.execute("SELECT coalesce(max(version), 0) FROM orchestrator_schema")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Bring the database to ``SCHEMA_VERSION``; returns what was done, one line per step.

    ``conn`` must be in autocommit mode: each step is its own transaction.
    """
    import procrastinate

    done: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
        if not await _exists(conn, "procrastinate_jobs"):
            # procrastinate's documented way: its schema manager applies its schema file.
            await conn.execute(procrastinate.schema.SchemaManager.get_schema())
            done.append("applied procrastinate's schema")
        await conn.execute(_VERSION_TABLE)
    current = await version(conn)
    if current > SCHEMA_VERSION:
        raise errors.StoreError(
            f"schema version {current} is newer than this code ({SCHEMA_VERSION})"
        )
    for number in range(current + 1, SCHEMA_VERSION + 1):
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            if await version(conn) >= number:
                continue  # another migrate got there first
            await conn.execute(MIGRATIONS[number - 1])
            await conn.execute("INSERT INTO orchestrator_schema (version) VALUES (%s)", (number,))
        done.append(f"applied orchestrator migration {number}")
    return done


# --- statements the store runs (kept here so the store reads as operations) ---------------------

#: The database clock in Unix seconds: every process sharing the database agrees on lease expiry
#: even when their own clocks drift (``now=`` from a caller still wins, for tests).
NOW: Final = "extract(epoch FROM clock_timestamp())::double precision"

COLUMNS: Final = (
    "id, spec, state, attempts, thread_id, run_id, lease_owner, lease_expires_at, epoch, "
    "result, created_at, updated_at, queueing_lock"
)
NAMES: Final = tuple(name.strip() for name in COLUMNS.split(","))

INSERT_JOB: Final = f"""
INSERT INTO orchestrator_jobs (procrastinate_id, {COLUMNS})
VALUES (%(pid)s, %(id)s, %(spec)s, 'queued', 0, %(thread_id)s, %(run_id)s, NULL, NULL, 0, NULL,
        %(now)s, %(now)s, %(queueing_lock)s)
"""

# The claim's clock, and the running jobs whose lease lapsed while procrastinate still has them
# "doing" (handed back to procrastinate's queue so that its fetch, locks and order included,
# hands them out again).
SWEEP: Final = f"""
WITH clock AS (SELECT coalesce(%(now)s::double precision, {NOW}) AS at),
expired AS (
    SELECT p.id FROM orchestrator_jobs AS o
    JOIN procrastinate_jobs AS p ON p.id = o.procrastinate_id
    WHERE o.state = 'running' AND o.lease_expires_at <= (SELECT at FROM clock)
      AND p.status = 'doing'
    ORDER BY o.seq
    FOR UPDATE OF o, p SKIP LOCKED
)
SELECT clock.at, array(SELECT id FROM expired) FROM clock
"""

HEARTBEAT: Final = f"""
WITH clock AS (SELECT coalesce(%(now)s::double precision, {NOW}) AS at)
UPDATE orchestrator_jobs AS o SET lease_expires_at = clock.at + %(lease)s, updated_at = clock.at
FROM clock, unnest(%(ids)s::text[], %(epochs)s::integer[]) AS l (id, epoch), procrastinate_jobs AS p
WHERE o.id = l.id AND o.epoch = l.epoch AND o.state = 'running'
  AND p.id = o.procrastinate_id AND p.status = 'doing'
RETURNING o.id
"""

# Fail an unloadable job (see "Quarantine" in store.base): its spec bytes stay as stored, and
# procrastinate's job ends failed too.
QUARANTINE: Final = """
WITH failed AS (
    UPDATE orchestrator_jobs SET state = 'failed', result = %(result)s, lease_owner = NULL,
        lease_expires_at = NULL, updated_at = %(now)s
    WHERE id = %(id)s
    RETURNING procrastinate_id
)
SELECT procrastinate_finish_job_v1(p.id, 'failed', false)
FROM failed JOIN procrastinate_jobs AS p ON p.id = failed.procrastinate_id
WHERE p.status IN ('todo', 'doing')
"""

# A line for an existing job only (no row: no such job).
APPEND: Final = """
INSERT INTO orchestrator_job_events (job_id, at, epoch, message)
SELECT id, %s, %s, %s FROM orchestrator_jobs WHERE id = %s
"""

LOG: Final = (
    "INSERT INTO orchestrator_job_events (job_id, at, epoch, message) VALUES (%s, %s, %s, %s)"
)

UPSERT_OUTPUT: Final = """
INSERT INTO orchestrator_calls (run_id, tool_call_id, job_id, epoch, output, saved_at)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (run_id, tool_call_id) DO UPDATE
SET job_id = excluded.job_id, epoch = excluded.epoch, output = excluded.output,
    saved_at = excluded.saved_at
WHERE orchestrator_calls.output IS NULL OR orchestrator_calls.epoch < excluded.epoch
"""

# One more start for each call without an output; no row comes back for a call that has one.
BEGIN_CALLS: Final = """
INSERT INTO orchestrator_calls AS c (run_id, tool_call_id, job_id, epoch, starts, saved_at)
SELECT %(run_id)s, call_id, %(job_id)s, %(epoch)s, 1, %(now)s
FROM unnest(%(ids)s::text[]) AS call_id
ON CONFLICT (run_id, tool_call_id) DO UPDATE
SET job_id = excluded.job_id, epoch = excluded.epoch, starts = c.starts + 1
WHERE c.output IS NULL
RETURNING tool_call_id, starts
"""

MARK_SUBMITTED: Final = """
INSERT INTO orchestrator_calls AS c (run_id, tool_call_id, job_id, epoch, submitted, saved_at)
SELECT %(run_id)s, call_id, %(job_id)s, %(epoch)s, true, %(now)s
FROM unnest(%(ids)s::text[]) AS call_id
ON CONFLICT (run_id, tool_call_id) DO UPDATE SET submitted = true
"""

# procrastinate's own functions on the job's procrastinate job, when procrastinate still has it
# in a state they accept.
FINISH: Final = """
SELECT procrastinate_finish_job_v1(p.id, %(status)s::procrastinate_job_status, false)
FROM orchestrator_jobs AS o JOIN procrastinate_jobs AS p ON p.id = o.procrastinate_id
WHERE o.id = %(id)s AND p.status IN ('todo', 'doing')
"""
RETRY: Final = """
SELECT procrastinate_retry_job_v2(p.id, NULL, NULL, NULL, NULL)
FROM orchestrator_jobs AS o JOIN procrastinate_jobs AS p ON p.id = o.procrastinate_id
WHERE o.id = %(id)s AND p.status = 'doing'
"""

# A job handed back to the queue holds its queueing lock again, unless another queued job
# took it meanwhile (procrastinate allows one queued job per lock; release must not fail).
RESTORE_QUEUEING_LOCK: Final = """
UPDATE procrastinate_jobs AS p SET queueing_lock = %(lock)s FROM orchestrator_jobs AS o
WHERE o.id = %(id)s AND p.id = o.procrastinate_id AND NOT EXISTS (
    SELECT 1 FROM procrastinate_jobs AS q WHERE q.queueing_lock = %(lock)s AND q.status = 'todo')
"""

# The claim itself; the job's procrastinate job (now "doing") drops its queueing lock, which
# procrastinate enforces on queued jobs only.
TAKE: Final = """
WITH taken AS (
    UPDATE orchestrator_jobs SET state = 'running', epoch = %s, attempts = %s, lease_owner = %s,
        lease_expires_at = %s, updated_at = %s
    WHERE id = %s
    RETURNING procrastinate_id
)
UPDATE procrastinate_jobs SET queueing_lock = NULL FROM taken WHERE id = taken.procrastinate_id
"""

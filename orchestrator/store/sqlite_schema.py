"""The SQLite schema, its statements, and the small helpers every transaction uses.

Kept apart from ``sqlite.py`` so the store reads as operations, not SQL text.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from collections.abc import Iterator
from typing import Final

import msgspec

from orchestrator import errors
from orchestrator.store import base

__all__ = [
    "BEGIN_CALL",
    "CLAIMABLE",
    "COLUMNS",
    "MARK_SUBMITTED",
    "MIGRATE_1_TO_2",
    "NAMES",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UNKNOWN_STATE",
    "UPSERT_OUTPUT",
    "end",
    "log",
    "quarantine",
    "transaction",
    "update",
]

SCHEMA_VERSION: Final = 2

_CALLS: Final = """
CREATE TABLE calls (                        -- the ledger: one row per tool call of a run
    run_id TEXT NOT NULL,
    tool_call_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    epoch INTEGER NOT NULL,                 -- the claim that wrote the row last
    starts INTEGER NOT NULL DEFAULT 0,      -- claims that began the call
    output TEXT,                            -- NULL until saved
    submitted INTEGER NOT NULL DEFAULT 0,   -- the server took the round
    saved_at REAL NOT NULL,
    PRIMARY KEY (run_id, tool_call_id)
) WITHOUT ROWID;
"""

SCHEMA: Final = (
    """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- enqueue order = claim order
    id TEXT NOT NULL UNIQUE,
    spec BLOB NOT NULL,                     -- base.encode_spec: versioned msgspec JSON
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    thread_id TEXT,
    run_id TEXT,
    lease_owner TEXT,
    lease_expires_at REAL,
    epoch INTEGER NOT NULL,
    result BLOB,                            -- msgspec JSON of base.JobResult
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    queueing_lock TEXT
);
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_thread ON jobs (thread_id, state);
CREATE INDEX jobs_queueing_lock ON jobs (queueing_lock, state);
CREATE TABLE job_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    epoch INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX job_events_job ON job_events (job_id, id);
"""
    + _CALLS
)

#: From version 1: the ``outputs`` table becomes ``calls`` (saved outputs keep their rows).
MIGRATE_1_TO_2: Final = (
    _CALLS
    + """
INSERT INTO calls (run_id, tool_call_id, job_id, epoch, output, saved_at)
    SELECT run_id, tool_call_id, job_id, epoch, output, saved_at FROM outputs;
DROP TABLE outputs;
"""
)

COLUMNS: Final = (
    "id, spec, state, attempts, thread_id, run_id, lease_owner, lease_expires_at, epoch, "
    "result, created_at, updated_at, queueing_lock"
)
NAMES: Final = tuple(name.strip() for name in COLUMNS.split(","))

# The oldest claimable job whose thread has no other running job under a live lease.
CLAIMABLE: Final = f"""
SELECT {COLUMNS} FROM jobs AS j
WHERE (j.state = 'queued' OR (j.state = 'running' AND j.lease_expires_at <= :now))
  AND (j.thread_id IS NULL OR NOT EXISTS (
        SELECT 1 FROM jobs AS o
        WHERE o.thread_id = j.thread_id AND o.id != j.id
          AND o.state = 'running' AND o.lease_expires_at > :now))
ORDER BY j.seq LIMIT 1
"""

UPSERT_OUTPUT: Final = """
INSERT INTO calls (run_id, tool_call_id, job_id, epoch, output, saved_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, tool_call_id) DO UPDATE
SET job_id = excluded.job_id, epoch = excluded.epoch, output = excluded.output,
    saved_at = excluded.saved_at
WHERE calls.output IS NULL OR calls.epoch < excluded.epoch
"""

# One more start for a call without an output; no row comes back for a call that has one.
BEGIN_CALL: Final = """
INSERT INTO calls (run_id, tool_call_id, job_id, epoch, starts, saved_at)
VALUES (?, ?, ?, ?, 1, ?)
ON CONFLICT (run_id, tool_call_id) DO UPDATE
SET job_id = excluded.job_id, epoch = excluded.epoch, starts = calls.starts + 1
WHERE calls.output IS NULL
RETURNING starts
"""

MARK_SUBMITTED: Final = """
INSERT INTO calls (run_id, tool_call_id, job_id, epoch, submitted, saved_at)
VALUES (?, ?, ?, ?, 1, ?)
ON CONFLICT (run_id, tool_call_id) DO UPDATE SET submitted = 1
"""

# Rows whose state is none of ours, found through the (state, seq) index as five ranges
# around the known values (a NOT IN would scan every row). Non-text states sort outside them.
_KNOWN: Final = sorted(s.value for s in base.JobState)
UNKNOWN_STATE: Final = (
    "SELECT id, state, epoch FROM jobs WHERE "
    + " OR ".join(
        [f"state < '{_KNOWN[0]}'"]
        + [f"(state > '{a}' AND state < '{b}')" for a, b in itertools.pairwise(_KNOWN)]
        + [f"state > '{_KNOWN[-1]}'"]
    )
    + " LIMIT 100"
)

_result_encoder: Final = msgspec.json.Encoder()


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back on error, except ``LeaseLost``.

    A rejected fenced write still commits, so the history line recording the rejection stays.
    """
    conn.execute("BEGIN IMMEDIATE")
    commit = False
    try:
        yield
        commit = True
    except errors.LeaseLost:
        commit = True
        raise
    finally:
        if conn.in_transaction:
            try:
                conn.execute("COMMIT" if commit else "ROLLBACK")
            finally:
                if conn.in_transaction:  # COMMIT failed: leave the connection usable
                    conn.execute("ROLLBACK")


def log(conn: sqlite3.Connection, job_id: str, epoch: int, message: str, at: float) -> None:
    """Append one history line."""
    conn.execute(
        "INSERT INTO job_events (job_id, at, epoch, message) VALUES (?, ?, ?, ?)",
        (job_id, at, epoch, message),
    )


def update(conn: sqlite3.Connection, job_id: str, **values: object) -> None:
    """Set columns of one job (and ``updated_at``)."""
    # Column names come from our own keyword arguments, never from input.
    assignments = ", ".join(f"{name} = ?" for name in values)
    conn.execute(
        f"UPDATE jobs SET {assignments}, updated_at = ? WHERE id = ?",
        (*values.values(), time.time(), job_id),
    )


def end(
    conn: sqlite3.Connection,
    job_id: str,
    state: base.JobState,
    result: base.JobResult,
    now: float,
) -> None:
    """Put a job in a final state with its result and drop its lease."""
    conn.execute(
        "UPDATE jobs SET state = ?, result = ?, lease_owner = NULL, lease_expires_at = NULL,"
        " updated_at = ? WHERE id = ?",
        (state.value, _result_encoder.encode(result), now, job_id),
    )


def quarantine(
    conn: sqlite3.Connection, job_id: object, epoch: object, reason: str, now: float
) -> None:
    """Fail an unloadable job; only state, result, lease and ``updated_at`` change (not the spec).

    ``job_id`` and ``epoch`` are the row's raw values, whatever their type.
    """
    result = _result_encoder.encode(base.quarantine_result(reason))
    conn.execute(
        "UPDATE jobs SET state = 'failed', result = ?, lease_owner = NULL,"
        " lease_expires_at = NULL, updated_at = ? WHERE id = ?",
        (result, now, job_id),
    )
    conn.execute(
        "INSERT INTO job_events (job_id, at, epoch, message) VALUES (?, ?, ?, ?)",
        (job_id, now, epoch if isinstance(epoch, int) else 0, base.quarantine_message(reason)),
    )

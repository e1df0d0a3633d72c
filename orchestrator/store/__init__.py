"""Durable jobs and the tool-output ledger behind one protocol (see ``store.base``)."""

from __future__ import annotations

import types

from orchestrator import config, errors
from orchestrator.store import base, memory, sqlite, sqlite_schema
from orchestrator.store.base import (
    AdoptJob,
    CallRecord,
    CreateJob,
    Job,
    JobEvent,
    JobResult,
    JobSpec,
    JobState,
    JobStore,
    ResponseJob,
    RunOverrides,
    decode_spec,
    encode_spec,
)
from orchestrator.store.memory import MemoryStore
from orchestrator.store.sqlite import SqliteStore

__all__ = [
    "AdoptJob",
    "CallRecord",
    "CreateJob",
    "Job",
    "JobEvent",
    "JobResult",
    "JobSpec",
    "JobState",
    "JobStore",
    "MemoryStore",
    "ResponseJob",
    "RunOverrides",
    "SqliteStore",
    "base",
    "decode_spec",
    "encode_spec",
    "memory",
    "migrate",
    "open_store",
    "sqlite",
    "sqlite_schema",
]


def open_store(worker: config.WorkerConfig, *, readonly: bool = False) -> JobStore:
    """The store ``worker.store`` names, not yet opened: use it as ``async with store:``.

    ``readonly``: for reading only (``status``); the store writes nothing, not even its schema.
    """
    match worker.store:
        case "sqlite":
            return SqliteStore(worker.sqlite_path, readonly=readonly)
        case "memory":
            return MemoryStore()
        case "postgres":
            postgres = _postgres()
            assert worker.postgres_dsn is not None  # WorkerConfig requires it for postgres
            impl: JobStore = postgres.PostgresStore(
                worker.postgres_dsn,
                pool_size=worker.postgres_pool_size or min(worker.concurrency + 2, 20),
                connect_timeout=worker.postgres_connect_timeout,
            )
            return impl


def _postgres() -> types.ModuleType:
    try:
        from orchestrator.store import postgres
    except ImportError as exc:
        raise errors.ConfigError(
            f"worker.store: 'postgres' needs the postgres extra ({exc.name} is missing):"
            " pip install 'run-orchestrator[postgres]'"
        ) from exc
    return postgres


async def migrate(worker: config.WorkerConfig) -> list[str]:
    """Create or upgrade the schema of the store ``worker.store`` names; what was done."""
    if worker.store == "memory":
        return ["memory store: nothing to migrate"]
    if worker.store == "sqlite":
        async with SqliteStore(worker.sqlite_path):  # SQLite migrates when it opens
            pass
        return [f"sqlite {worker.sqlite_path}: schema version {sqlite_schema.SCHEMA_VERSION}"]
    postgres = _postgres()
    assert worker.postgres_dsn is not None
    done: list[str] = await postgres.migrate(worker.postgres_dsn)
    return done

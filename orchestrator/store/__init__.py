"""Durable jobs and the tool-output ledger behind one protocol (see ``store.base``)."""

from __future__ import annotations

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
    "RunOverrides",
    "SqliteStore",
    "base",
    "decode_spec",
    "encode_spec",
    "memory",
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
            raise errors.ConfigError("worker.store: 'postgres' is not available yet")

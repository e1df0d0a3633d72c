"""The worker as a subprocess (``orchestrator.cli worker``) against an in-process emulator.

The emulator lives in the test process, so its state (threads, runs, steps) survives every
worker that is killed; the jobs and the ledger live in a SQLite file the test reads too.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, NamedTuple

import anyio
import anyio.abc
import yaml

from orchestrator import worker
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.store import base as store_base

TESTS_DIR = Path(__file__).resolve().parent.parent
TOOL_MODULE = "worker_tools.side_effects"


def write_config(path: Path, *, base_url: str, db: Path, **worker: Any) -> Path:
    """A config file with short leases and polls; ``worker`` overrides ``worker.*`` keys."""
    raw: dict[str, Any] = {
        "api": {"base_url": base_url, "timeout": 10.0, "connect_timeout": 5.0},
        "retry": {"attempts": 8, "initial_backoff": 0.02, "max_backoff": 0.2},
        "poll": {"initial_interval": 0.05, "max_interval": 0.2, "multiplier": 1.5},
        "run": {"cancel_timeout": 2.0},
        "tools": {"modules": [TOOL_MODULE], "timeout": 30.0, "deadline_margin": 1.0},
        "worker": {
            "store": "sqlite",
            "sqlite_path": str(db),
            "concurrency": 16,
            "lease_seconds": 1.0,
            "heartbeat_seconds": 0.25,
            "idle_poll_seconds": 0.05,
            "drain_timeout": 20.0,
            "health": None,
            "max_attempts": 1000,
            **worker,
        },
        "logging": {"level": "INFO"},
    }
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def worker_env(**extra: str) -> dict[str, str]:
    """The test's environment with our tools importable and no stray orchestrator settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRATOR_")}
    env.update(extra)
    env["OPENAI_API_KEY"] = "sk-worker-test"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return env


@asynccontextmanager
async def worker_process(
    cfg: Path, log: IO[bytes], *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[anyio.abc.Process]:
    """``orchestrator --config cfg worker ARGS`` as a subprocess, killed on the way out."""
    proc = await spawn_worker(cfg, log, *args, env=env)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.CancelScope(shield=True):
            await proc.wait()
        await proc.aclose()


async def spawn_worker(
    cfg: Path, log: IO[bytes], *args: str, env: dict[str, str] | None = None
) -> anyio.abc.Process:
    """``orchestrator --config cfg worker ARGS`` as a subprocess (the caller ends it)."""
    command = [sys.executable, "-m", "orchestrator.cli", "--config", str(cfg), "worker", *args]
    log.write(f"\n===== {' '.join(command[3:])}\n".encode())
    log.flush()
    return await anyio.open_process(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=worker_env(**(env or {}))
    )


def call(path: Path, pause: float = 0.0, marker: Path | None = None) -> dict[str, Any]:
    """One scripted call of ``append_line``."""
    arguments: dict[str, Any] = {"path": str(path), "pause": pause}
    if marker is not None:
        arguments["marker"] = str(marker)
    return {"name": "append_line", "arguments": arguments}


def job(assistant_id: str, name: str, script: Sequence[dict[str, Any]]) -> store_base.CreateJob:
    """A create job on a new thread whose run follows ``script`` (the emulator's rounds)."""
    return store_base.CreateJob(
        assistant_id=assistant_id,
        messages=(models.MessageRequest(role="user", content=f"please do {name}"),),
        overrides=store_base.RunOverrides(metadata={"emulator_script": json.dumps(script)}),
    )


def lines(path: Path) -> collections.Counter[str]:
    """How many times each line appears in a side-effect file."""
    if not path.exists():
        return collections.Counter()
    return collections.Counter(path.read_text(encoding="utf-8").split())


class JournalEntry(NamedTuple):
    """One invocation of ``append_line``."""

    call_id: str
    attempt: int
    pid: int
    #: ``appended``, ``skipped`` (a resumed call that found its line) or ``fenced`` (its worker
    #: no longer held the job when it came to write; PostgreSQL crash test only).
    action: str
    #: When the tool body started (``time.time()``).
    at: float


def journal(effects: Path) -> list[JournalEntry]:
    """What each ``append_line`` invocation did, in order."""
    path = Path(f"{effects}.journal")
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        call_id, attempt, pid, action, at = line.split()
        entries.append(JournalEntry(call_id, int(attempt), int(pid), action, float(at)))
    return entries


def tail(path: Path, n: int = 60) -> str:
    """The last lines of a log, for failure messages."""
    if not path.exists():
        return ""
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])


async def function_call_ids(
    client: client_mod.AssistantsClient, thread_id: str, run_id: str
) -> list[str]:
    """Ids of the function calls the run's steps record, oldest first."""
    ids: list[str] = []
    async for step in client.iter_run_steps(thread_id, run_id, order="asc"):
        details = step.step_details
        if details is not None and details.tool_calls:
            ids += [c.id for c in details.tool_calls if c.type == "function"]
    return ids


async def runs_of_job(
    client: client_mod.AssistantsClient, thread_id: str, job_id: str
) -> list[models.Run]:
    """The runs on ``thread_id`` whose metadata names ``job_id``."""
    return [
        run
        async for run in client.iter_runs(thread_id)
        if run.metadata and run.metadata.get(worker.JOB_METADATA_KEY) == job_id
    ]

"""The worker over a damaged store: a bad row is skipped, a broken file stops it with an error."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from worker_tools import lab

from orchestrator import tools, worker
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import models
from orchestrator.store import CreateJob, JobState, MemoryStore, SqliteStore

pytestmark = pytest.mark.anyio


def hello(assistant_id: str) -> CreateJob:
    msg = models.MessageRequest(role="user", content="hi")
    return CreateJob(assistant_id=assistant_id, messages=(msg,))


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
async def test_until_idle_returns_past_a_corrupted_job(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "jobs.sqlite3"
    st = SqliteStore(db) if kind == "sqlite" else MemoryStore()
    async with Emulator(think_delay=0.01, queue_delay=0.0) as emu:
        cfg = lab.settings(db, emu.base_url)
        async with lab.client(cfg) as c, st:
            aid = (await c.create_assistant(model="gpt-4o-mini")).id
            bad, good = await st.enqueue(hello(aid)), await st.enqueue(hello(aid))
            corrupt = b'{"v":7,"spec":{"kind":"from-the-future"}}'
            if isinstance(st, SqliteStore):
                with sqlite3.connect(db) as conn:
                    conn.execute("UPDATE jobs SET spec = ? WHERE id = ?", (corrupt, bad))
            else:
                st._stored[bad] = corrupt  # the in-process equivalent of the row's bytes
            w = worker.Worker(cfg, st, c, tools.ToolRegistry(), worker_id="w1")
            with anyio.fail_after(20):
                await w.run(until_idle=True)
            done = await st.get(good)
            history = [e.message for e in await st.history(bad)]
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    assert history[-1].startswith("quarantined (row kept as stored): ")
    assert "version 7 is newer" in history[-1]


def _malformed_database(path: Path) -> None:
    """A database whose jobs table is destroyed while its header still opens fine."""

    async def fill() -> None:
        async with SqliteStore(path) as st:
            for _ in range(20):
                await st.enqueue(hello("asst_1"))

    anyio.run(fill)
    with sqlite3.connect(path) as conn:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'jobs'").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\xff" * size)


def test_a_malformed_database_stops_the_worker_with_an_error(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    _malformed_database(db)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f'worker:\n  sqlite_path: "{db}"\n  health: null\n  lease_seconds: 0.5\n'
        "  heartbeat_seconds: 0.1\n  idle_poll_seconds: 0.05\n",
        encoding="utf-8",
    )
    argv = [sys.executable, "-m", "orchestrator.cli", "--config", str(cfg), "worker"]
    # No --until-idle: only the store's failure may end this process.
    done = subprocess.run(
        argv, check=False, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin"}
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("orchestrator: StoreError: the job store failed for ")
    assert "database disk image is malformed" in last
    # Backing off: a handful of lines over the 2 s of patience, not ten a second.
    assert 1 <= done.stderr.count("claiming failed") <= 8


def test_status_shows_a_quarantined_jobs_history(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"

    async def quarantine() -> str:
        async with SqliteStore(db) as st:
            job_id = await st.enqueue(hello("asst_1"))
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE jobs SET spec = x'00ff' WHERE id = ?", (job_id,))
            assert await st.claim("w1", lease_seconds=5) is None
            return job_id

    job_id = anyio.run(quarantine)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f'worker:\n  sqlite_path: "{db}"\n  health: null\n', encoding="utf-8")
    argv = [sys.executable, "-m", "orchestrator.cli", "--config", str(cfg), "status"]
    env = {"PATH": "/usr/bin"}
    table = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, env=env)
    assert table.returncode == 0
    assert f"{job_id} skipped: invalid job spec" in table.stderr  # listed as unreadable
    one = subprocess.run(
        [*argv, job_id], check=False, capture_output=True, text=True, timeout=60, env=env
    )
    assert one.returncode == 0, one.stderr
    assert f"job {job_id}: its row cannot be read" in one.stdout
    assert "quarantined (row kept as stored): invalid job spec" in one.stdout

"""Review of the ProtocolLoop refactor, Responses jobs in the worker: the window between the
round marked submitted and the next response recorded (each test failed on the refactored code
when it was written, and passes since)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import msgspec
import pytest
from worker_tools import lab

from orchestrator import errors, worker
from orchestrator.emulator import Emulator
from orchestrator.protocols.responses import client as client_mod
from orchestrator.store import JobState, ResponseJob, SqliteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(think_delay=0.02, queue_delay=0.01) as e:
        yield e


class RecordFailsOnce(SqliteStore):
    """Recording the chain's second response fails once (a busy or full disk, or the process
    dying right there): the job is interrupted and resumed from the response recorded before."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.recorded = 0

    async def record_run(self, job_id: str, epoch: int, run_id: str) -> None:
        self.recorded += 1
        if self.recorded == 2:
            raise errors.StoreError(f"{self.path}: disk I/O error")
        await super().record_run(job_id, epoch, run_id)


async def test_a_job_interrupted_between_submitted_and_recorded_completes(
    emu: Emulator, tmp_path: Path
) -> None:
    """The resumed attempt finds the round submitted while the job still points at the
    response that asked for it: it must go on to the response the round made (found by its
    client id), not poll the old one until the deadline."""
    db = tmp_path / "jobs.sqlite3"
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    cfg = msgspec.structs.replace(cfg, run=msgspec.structs.replace(cfg.run, run_timeout=5.0))
    async with (
        lab.client(cfg) as c,
        client_mod.ResponsesClient(cfg.api, cfg.retry, api_key="sk-test") as r,
        RecordFailsOnce(db) as st,
    ):
        spec = ResponseJob(
            model="gpt-4o-mini", input="go", metadata={"emulator_script": lab.script([False])}
        )
        job_id = await st.enqueue(spec)
        w = worker.Worker(cfg, st, c, t.registry, worker_id="w1", responses=r)
        with anyio.fail_after(30):
            await w.run(until_idle=True)
        job = await st.get(job_id)
    assert job is not None
    assert job.state is JobState.SUCCEEDED, job.result  # not timed_out on the old response
    assert job.attempts == 2
    assert st.recorded >= 3  # the failed record, then the resumed attempt's
    assert len(t.effects) == 1
    assert emu.responses_stats().duplicate_outputs == 0

"""Crash tests on PostgreSQL: three worker processes on one database, killed, paused, restarted.

What must hold whatever moment a worker dies or freezes at (see ``test_worker_crash`` for the
single-worker SQLite version and the worker's contract for side-effecting tools):

* every job ends in its expected state, with exactly one run (0 duplicate runs);
* no tool call starts in a worker that no longer holds the job: ``append_line`` asks the
  database, as it starts, whether its process still owns the job (RUNNING under its lease) and
  a paused worker (SIGSTOP past its lease, then SIGCONT) must not start one (0 stale starts).
  One exception cannot be closed by any check: a freeze that lands while a round's calls are
  being handed to their threads (after the worker's last check) lets those calls start the
  moment the process resumes. Such starts, within ``IN_FLIGHT`` seconds of that process's
  SIGCONT, are counted, not failed; the tool fences its own write (it asks again under a file
  lock before writing), as a side-effecting tool must when several workers share a sink, so
  they write nothing;
* a call whose output was in the ledger is never run again (0 outputs recomputed, the fenced
  starts above aside), and each call's side effect happens once.

The emulator runs in this process (its runs survive every worker); a second test restarts the
PostgreSQL server under running workers: no job is lost and the same workers finish them.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import pytest
import worker_tools
from worker_tools import harness, pg

from orchestrator import client as client_mod
from orchestrator import config, models
from orchestrator.emulator import Emulator
from orchestrator.store import JobState

pytest.importorskip("psycopg", reason="the postgres extra is not installed")
from orchestrator.store.postgres import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.postgres]

#: Another seed explores other moments: WORKER_CRASH_SEED=n pytest <this file>
SEED = int(os.environ.get("WORKER_CRASH_SEED", "62024"))
WORKERS = 3
MIN_KILLS = 30
MIN_PAUSES = int(os.environ.get("WORKER_CRASH_PAUSES", "10"))
JOBS = 15
LEASE = 1.0
#: Seconds after a SIGCONT in which a stale start counts as a call already in flight at the freeze
#: (a worker that started new calls without checking would mostly start them later: its next
#: poll and round come after this).
IN_FLIGHT = 0.1

Expected = dict[str, tuple[JobState, str]]


def script(i: int, effects: Path, rng: random.Random) -> list[dict[str, Any]]:
    """One or two rounds of one to three parallel calls; most pause after their side effect."""
    rounds: list[dict[str, Any]] = []
    for r in range(1 + i % 2):
        calls = [harness.call(effects, rng.choice([0.0, 0.3, 0.6])) for _ in range(1 + (i + r) % 3)]
        rounds.append({"tool_calls": calls, "think_ms": 300})
    return [*rounds, {"message": f"job {i} done"}]


class Fleet:
    """Three worker processes, each killed, paused and restarted at the test's command."""

    def __init__(self, cfg: Path, log: IO[bytes], claim_check_dsn: str | None = None) -> None:
        self.cfg, self.log = cfg, log
        self.env = {worker_tools.CLAIM_CHECK_DSN: claim_check_dsn} if claim_check_dsn else {}
        self.procs: list[anyio.abc.Process] = []
        self.kills = self.pauses = 0
        #: (pid, time.time() of its SIGCONT) of every pause.
        self.resumed: list[tuple[int, float]] = []

    async def start(self) -> None:
        self.procs = [await self._spawn() for _ in range(WORKERS)]

    async def _spawn(self) -> anyio.abc.Process:
        return await harness.spawn_worker(self.cfg, self.log, env=self.env)

    def alive(self) -> bool:
        return all(p.returncode is None for p in self.procs)

    async def kill(self, i: int) -> None:
        self.procs[i].send_signal(signal.SIGKILL)
        await self.procs[i].wait()
        await self.procs[i].aclose()
        self.procs[i] = await self._spawn()
        self.kills += 1

    async def pause(self, i: int, seconds: float) -> None:
        """SIGSTOP past the lease (the others take its jobs over), then SIGCONT."""
        self.procs[i].send_signal(signal.SIGSTOP)
        await anyio.sleep(seconds)
        self.procs[i].send_signal(signal.SIGCONT)
        self.resumed.append((self.procs[i].pid, time.time()))
        self.pauses += 1

    async def stop(self) -> list[int | None]:
        for p in self.procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        with anyio.move_on_after(30):
            for p in self.procs:
                await p.wait()
        for p in self.procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
            codes.append(p.returncode)
            await p.aclose()
        return codes


async def outputs(st: PostgresStore) -> set[str]:
    """Every tool call with an output in the ledger now."""
    saved: set[str] = set()
    for job in await st.list_jobs(limit=1000):
        if job.run_id is not None:
            saved.update(await st.outputs(job.run_id))
    return saved


async def wait_all_done(st: PostgresStore, expected: Expected, fleet: Fleet) -> None:
    with anyio.fail_after(120):
        while True:
            jobs = [await st.get(j) for j in expected]
            if all(
                j is not None and j.state in (JobState.SUCCEEDED, JobState.FAILED) for j in jobs
            ):
                return
            assert fleet.alive(), "a worker exited"
            await anyio.sleep(0.2)


async def check_outcome(
    st: PostgresStore, client: client_mod.AssistantsClient, effects: Path, expected: Expected
) -> None:
    """Every job ended as expected with one run; each call's side effect happened once."""
    written = harness.lines(effects)
    assert not {line: n for line, n in written.items() if n != 1}, "side effects repeated"
    called: set[str] = set()
    for job_id, (state, status) in expected.items():
        job = await st.get(job_id)
        assert job is not None
        assert job.state is state, f"{job_id}: {job.state} {job.result}"
        assert job.thread_id is not None
        assert job.run_id is not None
        runs = await harness.runs_of_job(client, job.thread_id, job_id)
        assert [r.id for r in runs] == [job.run_id], f"{job_id}: duplicate runs {runs}"
        assert runs[0].status == status
        ids = await harness.function_call_ids(client, job.thread_id, job.run_id)
        assert ids
        assert all(i in written for i in ids), f"{job_id}: calls without their side effect"
        called.update(ids)
    assert set(written) == called


def stale_starts(effects: Path, resumed: list[tuple[int, float]]) -> tuple[list[str], int]:
    """Calls started by a worker that did not hold the job, and how many of those were already
    in flight when their process froze (entered within ``IN_FLIGHT`` after its SIGCONT, or
    frozen between entering and asking)."""
    path = Path(f"{effects}.claims")
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    assert lines, "the claim check did not run"
    stale, in_flight = [], 0
    for line in lines:
        _, pid, verdict, started, checked, _ = line.split(" ", 5)
        if verdict != "stale":
            continue
        # Resumed just before the call was entered (it was being handed to its thread at the
        # freeze), or while it asked (the job may have moved on during the freeze itself).
        window = (float(started) - IN_FLIGHT, float(checked))
        if any(p == int(pid) and window[0] <= t <= window[1] for p, t in resumed):
            in_flight += 1
        else:
            stale.append(line)
    return stale, in_flight


@pytest.mark.timeout(400)
async def test_three_workers_survive_kills_and_pauses(tmp_path: Path, pg_dsn: str) -> None:
    rng = random.Random(SEED)
    effects = tmp_path / "effects.txt"
    effects.touch()
    log_path = tmp_path / "workers.log"
    #: (outputs in the ledger, journal length read after them) at each kill or pause.
    snapshots: list[tuple[set[str], int]] = []

    async with Emulator() as emu:
        cfg = harness.write_config(
            tmp_path / "config.yaml",
            base_url=emu.base_url,
            db=tmp_path / "unused.sqlite3",
            store="postgres",
            postgres_dsn=pg_dsn,
            concurrency=3,
            lease_seconds=LEASE,
        )
        api = config.ApiConfig(base_url=emu.base_url)
        async with (
            client_mod.AssistantsClient(api, api_key="sk-worker-test") as client,
            PostgresStore(pg_dsn) as st,
        ):
            assistant = (await client.create_assistant(model="gpt-4o-mini", name="crash")).id
            expected: Expected = {}

            async def wave(n: int) -> None:
                start = len(expected)
                for i in range(start, start + n):
                    spec = harness.job(assistant, f"job {i}", script(i, effects, rng))
                    expected[await st.enqueue(spec)] = (JobState.SUCCEEDED, "completed")

            await wave(JOBS)
            failing = [{"tool_calls": [harness.call(effects, 0.3)]}, {"fail": "server_error"}]
            failing_id = await st.enqueue(harness.job(assistant, "a failing run", failing))
            expected[failing_id] = (JobState.FAILED, models.RunStatus.FAILED)

            with log_path.open("ab") as log:
                fleet = Fleet(cfg, log, pg_dsn)
                await fleet.start()
                try:
                    while fleet.kills < MIN_KILLS or fleet.pauses < MIN_PAUSES:
                        await anyio.sleep(rng.uniform(0.1, 0.6))
                        victim = rng.randrange(WORKERS)
                        if fleet.pauses < MIN_PAUSES and rng.random() < 0.2:
                            await fleet.pause(victim, rng.uniform(2 * LEASE, 3 * LEASE))
                        else:
                            await fleet.kill(victim)
                        saved = await outputs(st)
                        snapshots.append((saved, len(harness.journal(effects))))
                        counts = await st.counts()
                        if counts[JobState.QUEUED] + counts[JobState.RUNNING] < 3:
                            await wave(4)  # keep work around for the kills to land on
                    await wait_all_done(st, expected, fleet)
                finally:
                    codes = await fleet.stop()
            tail = harness.tail(log_path)
            assert codes == [0] * WORKERS, tail
            stale, in_flight = stale_starts(effects, fleet.resumed)
            assert stale == [], f"resumed (pid, time): {fleet.resumed}\n{tail}"
            journal = harness.journal(effects)
            # A fenced body is the exception above (a freeze while calls were handed to their
            # threads): it started on waking, found the job gone and wrote nothing.
            recomputed = [
                e
                for saved, n in snapshots
                for e in journal[n:]
                if e.call_id in saved and e.action != "fenced"
            ]
            assert recomputed == [], tail
            await check_outcome(st, client, effects, expected)
            history = [e.message for j in expected for e in await st.history(j)]
            print(
                f"seed {SEED}: {fleet.kills} kills, {fleet.pauses} pauses, {len(expected)} jobs,"
                f" {len(journal)} tool invocations,"
                f" {sum('expired;' in m for m in history)} leases taken over,"
                f" {sum(m.startswith('stale') for m in history)} stale writes rejected,"
                f" {in_flight} calls in flight at a freeze started stale,"
                f" {sum(e.action == 'fenced' for e in journal)} writes fenced by the tool"
            )


@pytest.mark.timeout(300)
async def test_a_database_restart_loses_no_job_and_workers_recover(
    tmp_path: Path, pg_server: pg.Server, pg_dsn: str
) -> None:
    rng = random.Random(SEED)
    effects = tmp_path / "effects.txt"
    effects.touch()
    log_path = tmp_path / "workers.log"
    async with Emulator() as emu:
        cfg = harness.write_config(
            tmp_path / "config.yaml",
            base_url=emu.base_url,
            db=tmp_path / "unused.sqlite3",
            store="postgres",
            postgres_dsn=pg_dsn,
            postgres_connect_timeout=2.0,
            concurrency=4,
            lease_seconds=LEASE,
        )
        api = config.ApiConfig(base_url=emu.base_url)
        async with client_mod.AssistantsClient(api, api_key="sk-worker-test") as client:
            async with PostgresStore(pg_dsn) as st:
                assistant = (await client.create_assistant(model="gpt-4o-mini")).id
                expected: Expected = {}
                for i in range(12):
                    spec = harness.job(assistant, f"job {i}", script(i, effects, rng))
                    expected[await st.enqueue(spec)] = (JobState.SUCCEEDED, "completed")
            with log_path.open("ab") as log:
                fleet = Fleet(cfg, log)
                await fleet.start()
                try:
                    async with PostgresStore(pg_dsn) as st:
                        with anyio.fail_after(60):  # some jobs in flight, some still queued
                            while True:  # every worker started and holds a job
                                running = await st.list_jobs(state=JobState.RUNNING)
                                if len({j.lease_owner for j in running}) == WORKERS:
                                    break
                                await anyio.sleep(0.05)
                    pg_server.stop()
                    await anyio.sleep(2.0)  # longer than the lease: every claim lapses
                    pg_server.start()
                    async with PostgresStore(pg_dsn) as st:
                        await wait_all_done(st, expected, fleet)
                        pids = [p.pid for p in fleet.procs]
                        assert fleet.kills == 0
                        await check_outcome(st, client, effects, expected)
                finally:
                    codes = await fleet.stop()
            tail = harness.tail(log_path)
            assert codes == [0] * WORKERS, tail
            assert len(set(pids)) == WORKERS  # the same processes, none restarted
            text = log_path.read_text(encoding="utf-8", errors="replace")
            assert "Traceback" not in text, tail
            # The outage was felt (calls failed while the server was down), and survived.
            assert "failed: PostgreSQL" in text, tail

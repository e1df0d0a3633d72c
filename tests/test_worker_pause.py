"""Paused workers: a worker frozen (SIGSTOP) past its lease and resumed must not act on the
claim it lost. Real processes: two workers on one SQLite file, the emulator in this process.

While one worker is frozen, the other takes its jobs over. When the frozen one wakes it finds
its leases gone (its local lease deadline passed, and the store refuses its fenced writes): it
must not create a run, start a tool, or win a write for those jobs. Checked afterwards: every
job ends as expected with exactly one run, every side effect happened once, and no tool body
started after another worker had claimed its job (the tool journal's start times against the
store's claim history).
"""

from __future__ import annotations

import os
import random
import re
import signal
from pathlib import Path

import anyio
import pytest
from test_worker_crash import Record, check_outcome, enqueue_wave
from worker_tools import harness

from orchestrator import config
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.store import JobState, SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SEED = int(os.environ.get("WORKER_PAUSE_SEED", "7"))
MIN_PAUSES = 8
LEASE = 1.0
#: A pause outlasts the lease by far, so the other worker takes the jobs over meanwhile.
PAUSE = 2.5 * LEASE
_CLAIMED = re.compile(r"claimed by \S+?-(\d+)-[0-9a-f]{6} \(epoch (\d+)")


async def claims_by_call(
    st: SqliteStore, client: client_mod.AssistantsClient
) -> dict[str, list[tuple[float, int]]]:
    """For each tool call of each job's run: the (time, worker pid) of every claim of its job."""
    out: dict[str, list[tuple[float, int]]] = {}
    for job in await st.list_jobs(limit=1000):
        if job.thread_id is None or job.run_id is None:
            continue
        claims = [
            (h.at, int(m.group(1)))
            for h in await st.history(job.id)
            if (m := _CLAIMED.search(h.message))
        ]
        for call_id in await harness.function_call_ids(client, job.thread_id, job.run_id):
            out[call_id] = claims
    return out


@pytest.mark.timeout(300)
async def test_paused_workers_never_act_on_a_lost_claim(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    effects = tmp_path / "effects.txt"
    effects.touch()
    db = tmp_path / "jobs.sqlite3"
    rec = Record(effects, tmp_path / "worker.log")
    pauses = 0
    async with Emulator() as emu:
        cfg = harness.write_config(
            tmp_path / "config.yaml",
            base_url=emu.base_url,
            db=db,
            concurrency=4,
            lease_seconds=LEASE,
            heartbeat_seconds=LEASE / 4,
        )
        async with (
            client_mod.AssistantsClient(
                config.ApiConfig(base_url=emu.base_url), api_key="sk-worker-test"
            ) as client,
            SqliteStore(db) as st,
        ):
            assistant = (await client.create_assistant(model="gpt-4o-mini", name="pause")).id
            rec.expected = await enqueue_wave(st, assistant, effects, rng, start=0, n=10)
            with rec.log_path.open("ab") as log:
                async with (
                    harness.worker_process(cfg, log) as first,
                    harness.worker_process(cfg, log) as second,
                ):
                    procs = [first, second]
                    rec.pids += [p.pid for p in procs]
                    while pauses < MIN_PAUSES:
                        await anyio.sleep(rng.uniform(0.3, 1.0))
                        victim = rng.choice(procs)
                        victim.send_signal(signal.SIGSTOP)
                        await anyio.sleep(PAUSE)
                        victim.send_signal(signal.SIGCONT)
                        pauses += 1
                        counts = await st.counts()
                        if counts[JobState.QUEUED] + counts[JobState.RUNNING] < 3:
                            n = len(rec.expected)
                            rec.expected.update(
                                await enqueue_wave(st, assistant, effects, rng, start=n, n=4)
                            )
                    with anyio.fail_after(120):
                        while True:
                            counts = await st.counts()
                            if counts[JobState.QUEUED] + counts[JobState.RUNNING] == 0:
                                break
                            await anyio.sleep(0.1)
                    for p in procs:
                        p.send_signal(signal.SIGTERM)
                    with anyio.fail_after(30):
                        for p in procs:
                            await p.wait()
                    assert [p.returncode for p in procs] == [0, 0], rec
            # 0 duplicate runs, each side effect once, every job as expected.
            await check_outcome(st, client, rec)
            # 0 tool calls started under a stale claim.
            claims = await claims_by_call(st, client)
            stale = []
            for entry in harness.journal(effects):
                before = [pid for at, pid in claims[entry.call_id] if at <= entry.at]
                if not before or before[-1] != entry.pid:
                    stale.append(entry)
            assert not stale, f"tools started under a lost claim: {stale}\n{rec}"
            takeovers = sum(len(c) - 1 for c in {id(c): c for c in claims.values()}.values())
            print(f"{pauses} pauses of {PAUSE} s; {len(rec.expected)} jobs; takeovers {takeovers}")
            assert takeovers > 0, rec  # the pauses did take jobs away

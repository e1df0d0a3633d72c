"""Crash test for ``ResponseJob``s: the worker as a real subprocess, SIGKILLed at random moments,
restarted, until every job is done; the Assistants crash test's guarantees for response chains.

* **No job loses its chain or forks it.** Every response the worker creates carries
  ``<job id>:<parent>`` in its metadata and is recorded at once; a resumed job continues from
  the last response it recorded and finds one it created but did not record. So each client id
  appears on exactly one response (no tool round sent twice), and the emulator never receives
  a second ``function_call_output`` for a call.
* **A call whose output is in the ledger is never run again**; one interrupted after its side
  effect runs again with ``ToolContext.attempt > 1`` and deduplicates (``append_line``).
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
from worker_tools import harness

from orchestrator import config
from orchestrator.emulator import Emulator
from orchestrator.protocols.responses import client as client_mod
from orchestrator.protocols.responses import wire
from orchestrator.store import JobState, ResponseJob, SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SEED = int(os.environ.get("WORKER_CRASH_SEED", "7013"))
MIN_KILLS = 12
JOBS = 8
KILL_AFTER = (0.3, 1.5)


def chain_script(i: int, effects: Path, rng: random.Random) -> list[dict[str, Any]]:
    """One or two rounds of one to three parallel calls; most pause after their side effect."""
    script: list[dict[str, Any]] = []
    for r in range(1 + i % 2):
        width = 1 + (i + r) % 3
        calls = [harness.call(effects, rng.choice([0.0, 0.3, 0.6])) for _ in range(width)]
        script.append({"tool_calls": calls, "think_ms": 300})
    script.append({"message": f"job {i} done: {{outputs}}"})
    return script


def job(script: list[dict[str, Any]]) -> ResponseJob:

    return ResponseJob(
        model="gpt-4o-mini", input="go", metadata={"emulator_script": json.dumps(script)}
    )


async def all_responses(client: client_mod.ResponsesClient) -> list[wire.Response]:
    out: list[wire.Response] = []
    after = None
    while True:
        page = await client.list_responses(limit=100, order="asc", after=after)
        out += page.data
        if not page.has_more or not page.data:
            return out
        after = page.data[-1].id


@pytest.mark.timeout(300)
async def test_sigkill_at_random_moments_forks_no_chain_and_repeats_no_call(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    effects = tmp_path / "effects.txt"
    effects.touch()
    db, log_path = tmp_path / "jobs.sqlite3", tmp_path / "worker.log"
    expected: dict[str, JobState] = {}
    kills: list[tuple[set[str], int]] = []  # (outputs in the ledger, workers started before)
    pids: list[int] = []
    #: Jobs caught by a kill inside a tool round (their response waits for outputs).
    mid_round = 0

    async with Emulator() as emu:
        cfg = harness.write_config(
            tmp_path / "config.yaml", base_url=emu.base_url, db=db, concurrency=2
        )
        api = config.ApiConfig(base_url=emu.base_url)
        async with (
            client_mod.ResponsesClient(api, api_key="sk-worker-test") as client,
            SqliteStore(db) as st,
        ):
            for i in range(JOBS):
                expected[await st.enqueue(job(chain_script(i, effects, rng)))] = JobState.SUCCEEDED
            failing = [{"tool_calls": [harness.call(effects, 0.3)]}, {"fail": "server_error"}]
            expected[await st.enqueue(job(failing))] = JobState.FAILED

            with log_path.open("ab") as log:
                exits = 0
                while len(kills) < MIN_KILLS:
                    async with harness.worker_process(cfg, log, "--until-idle") as proc:
                        pids.append(proc.pid)
                        with anyio.move_on_after(rng.uniform(*KILL_AFTER)):
                            await proc.wait()
                        if proc.returncode is None:
                            proc.send_signal(signal.SIGKILL)
                            await proc.wait()
                            ledger: set[str] = set()
                            for j in await st.list_jobs(limit=1000):
                                if j.run_id is None:
                                    continue
                                ledger.update(await st.outputs(j.run_id))
                                if j.state is JobState.RUNNING:
                                    now = (await client.retrieve(j.run_id)).data
                                    mid_round += bool(now.function_calls)
                            kills.append((ledger, len(pids)))
                            continue
                    assert proc.returncode == 0, harness.tail(log_path)
                    exits += 1
                    assert exits < 20, harness.tail(log_path)
                    for i in range(len(expected), len(expected) + 3):
                        spec = job(chain_script(i, effects, rng))
                        expected[await st.enqueue(spec)] = JobState.SUCCEEDED
                async with harness.worker_process(cfg, log, "--until-idle") as proc:
                    pids.append(proc.pid)
                    with anyio.fail_after(120):
                        await proc.wait()
                assert proc.returncode == 0, harness.tail(log_path)

            responses = await all_responses(client)
            jobs = {j: await st.get(j) for j in expected}
        stats = emu.responses_stats()

    # No call run again once its output was in the ledger.
    runs = harness.journal(effects)
    for ledger, started in kills:
        later = set(pids[started:])
        again = [e for e in runs if e.pid in later and e.call_id in ledger]
        assert not again, f"calls run again after their output was in the ledger: {again}"
    # Each side effect once; each round sent once; no chain forked.
    written = harness.lines(effects)
    assert not {line: n for line, n in written.items() if n != 1}
    assert stats.duplicate_outputs == 0
    refs = collections.Counter((r.metadata or {}).get(client_mod.CLIENT_ID_KEY) for r in responses)
    assert all(n == 1 for n in refs.values()), refs
    called: set[str] = set()
    by_id = {r.id: r for r in responses}
    for job_id, state in expected.items():
        found = jobs[job_id]
        assert found is not None
        assert found.state is state, f"{job_id}: {found.result}\n{harness.tail(log_path)}"
        assert found.run_id is not None
        chain = [r for r in responses if str(refs_key(r)).startswith(job_id + ":")]
        assert chain
        last = by_id[found.run_id]
        assert last.status == ("completed" if state is JobState.SUCCEEDED else "failed")
        for r in chain:
            called.update(i.call_id or "" for i in r.function_calls)
        if state is JobState.SUCCEEDED:
            assert found.result is not None
            assert found.result.reply is not None
            assert "done" in found.result.reply
    assert set(written) == called
    skipped = sum(1 for e in runs if e.action == "skipped")
    print(
        f"seed {SEED}: {len(kills)} kills, {mid_round} jobs caught inside a tool round;"
        f" {len(expected)} jobs; interrupted calls run again and deduplicated: {skipped}"
    )
    assert mid_round > 0


def refs_key(response: wire.Response) -> str | None:
    return (response.metadata or {}).get(client_mod.CLIENT_ID_KEY)

"""Crash test: the worker as a real subprocess, killed with SIGKILL at random moments, restarted.

What the worker guarantees, whatever moment it dies at (``orchestrator.worker``):

* **A job never creates two runs.** A run is created with metadata ``orchestrator_job=<job id>``
  and recorded in the store at once; a resumed job without a recorded run looks for one on its
  thread before creating one.
* **A tool call whose output is in the ledger is never run again**: a resumed run submits the
  stored output.
* **A call interrupted mid-flight** (the worker died after the tool's side effect but before its
  output reached the ledger) **is run again on resume with** ``ToolContext.attempt > 1`` (the
  job's attempt number). So a side-effecting tool deduplicates on ``ctx.tool_call_id`` when
  ``ctx.attempt > 1``; ``worker_tools.side_effects.append_line`` does, and on attempt 1 it does
  not even look, so a worker that re-ran a call at attempt 1 would leave a duplicate line.

The emulator runs in this process, so its runs survive every worker. Jobs: tool rounds of
parallel ``append_line`` calls (some pause after their side effect, so kills often land between
the side effect and the submit) and one run scripted to fail. After at least ``MIN_KILLS`` kills a
last worker runs until idle; then every job, run, step and side-effect line is checked.
"""

from __future__ import annotations

import collections
import os
import random
import signal
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import pytest
from worker_tools import harness

from orchestrator import config
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import client as client_mod
from orchestrator.protocols.assistants import models
from orchestrator.store import JobState, SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: Another seed explores other kill moments: WORKER_CRASH_SEED=n pytest tests/test_worker_crash.py
SEED = int(os.environ.get("WORKER_CRASH_SEED", "62024"))
MIN_KILLS = 20
#: Kills keep coming past MIN_KILLS until this many landed between a side effect and its submit.
MIN_KILLS_MID_ROUND = 3
MAX_KILLS = 40
JOBS = 12
#: Seconds from spawning a worker to killing it (a start takes about half a second).
KILL_AFTER = (0.3, 1.5)

Expected = dict[str, tuple[JobState, str]]


def tool_job_script(i: int, effects: Path, rng: random.Random) -> list[dict[str, Any]]:
    """One or two rounds of one to three parallel calls; most pause after their side effect."""
    script: list[dict[str, Any]] = []
    for r in range(1 + i % 2):
        width = 1 + (i + r) % 3
        calls = [harness.call(effects, rng.choice([0.0, 0.3, 0.6])) for _ in range(width)]
        script.append({"tool_calls": calls, "think_ms": 300})
    script.append({"message": f"job {i} done: {{outputs}}"})
    return script


async def enqueue_wave(
    st: SqliteStore, assistant: str, effects: Path, rng: random.Random, *, start: int, n: int
) -> Expected:
    expected: Expected = {}
    for i in range(start, start + n):
        spec = harness.job(assistant, f"job {i}", tool_job_script(i, effects, rng))
        expected[await st.enqueue(spec)] = (JobState.SUCCEEDED, models.RunStatus.COMPLETED)
    return expected


class Kill(NamedTuple):
    """What the store and the emulator showed right after one kill."""

    #: Where each unfinished job was when the worker died.
    phases: collections.Counter[str]
    #: Tool calls whose output was in the ledger.
    ledger: set[str]
    #: Workers started before this kill (later ones must not run a call of ``ledger``).
    started: int


async def inspect(
    st: SqliteStore, client: client_mod.AssistantsClient, effects: Path, started: int
) -> Kill:
    """Where each unfinished job was when the worker died (the dead worker cannot move it)."""
    seen: collections.Counter[str] = collections.Counter()
    in_ledger: set[str] = set()
    done = set(harness.lines(effects))
    for job in await st.list_jobs(limit=1000):
        if job.run_id is not None:
            in_ledger.update(await st.outputs(job.run_id))
        if job.state is not JobState.RUNNING:
            continue
        if job.run_id is None or job.thread_id is None:
            seen["no run recorded yet"] += 1
            continue
        run = await client.retrieve_run(job.thread_id, job.run_id)
        if run.is_terminal:
            seen["run ended, job not completed"] += 1
            continue
        if not run.requires_action:
            seen["polling"] += 1
            continue
        ledger = await st.outputs(run.id)
        for c in run.tool_calls:
            if c.id in ledger:
                seen["output in ledger, not submitted"] += 1
            elif c.id in done:
                seen["side effect done, output not in ledger"] += 1
            else:
                seen["tool not run yet"] += 1
    return Kill(seen, in_ledger, started)


MID_ROUND = ("output in ledger, not submitted", "side effect done, output not in ledger")


class Record:
    """Kills, worker processes and jobs of one crash test, and its summary for failures."""

    def __init__(self, effects: Path, log_path: Path) -> None:
        self.effects = effects
        self.log_path = log_path
        self.kills: list[Kill] = []
        self.pids: list[int] = []
        #: Workers that found nothing left to do and exited before their kill.
        self.exits = 0
        self.expected: Expected = {}

    def mid_round(self) -> int:
        """Kills that caught some job between a tool's side effect and the submit."""
        return sum(1 for k in self.kills if any(k.phases[p] for p in MID_ROUND))

    def summary(self) -> str:
        """Kills, and where they caught the jobs."""
        total: collections.Counter[str] = sum((k.phases for k in self.kills), collections.Counter())
        skipped = sum(1 for e in harness.journal(self.effects) if e.action == "skipped")
        return (
            f"seed {SEED}: {len(self.kills)} kills, {self.mid_round()} between a side effect and"
            f" its submit; {self.exits} workers exited idle; {len(self.expected)} jobs;"
            f" interrupted calls run again and deduplicated by the tool: {skipped}\n"
            f"job phases at the kills: {dict(total)}"
        )

    def __str__(self) -> str:
        return f"{self.summary()}\n--- worker log (tail) ---\n{harness.tail(self.log_path)}"


@pytest.mark.timeout(300)
async def test_sigkill_at_random_moments_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    effects = tmp_path / "effects.txt"
    effects.touch()
    db = tmp_path / "jobs.sqlite3"
    rec = Record(effects, tmp_path / "worker.log")

    async with Emulator() as emu:
        # Few runs at once, so the jobs outlast the kills.
        cfg = harness.write_config(
            tmp_path / "config.yaml", base_url=emu.base_url, db=db, concurrency=2
        )
        async with (
            client_mod.AssistantsClient(
                config.ApiConfig(base_url=emu.base_url), api_key="sk-worker-test"
            ) as client,
            SqliteStore(db) as st,
        ):
            assistant = (await client.create_assistant(model="gpt-4o-mini", name="crash")).id
            rec.expected = await enqueue_wave(st, assistant, effects, rng, start=0, n=JOBS)
            failing = harness.job(
                assistant,
                "a failing run",
                [{"tool_calls": [harness.call(effects, 0.3)]}, {"fail": "server_error"}],
            )
            rec.expected[await st.enqueue(failing)] = (JobState.FAILED, models.RunStatus.FAILED)

            with rec.log_path.open("ab") as log:
                while len(rec.kills) < MIN_KILLS or (
                    rec.mid_round() < MIN_KILLS_MID_ROUND and len(rec.kills) < MAX_KILLS
                ):
                    async with harness.worker_process(cfg, log, "--until-idle") as proc:
                        rec.pids.append(proc.pid)
                        with anyio.move_on_after(rng.uniform(*KILL_AFTER)):
                            await proc.wait()
                        if proc.returncode is None:
                            proc.send_signal(signal.SIGKILL)
                            await proc.wait()
                            rec.kills.append(await inspect(st, client, effects, len(rec.pids)))
                            continue
                    assert proc.returncode == 0, rec
                    # All done before the kill: more work, so that kills keep landing on some.
                    rec.exits += 1
                    assert rec.exits < 20, rec
                    n = len(rec.expected)
                    rec.expected.update(
                        await enqueue_wave(st, assistant, effects, rng, start=n, n=3)
                    )

                async with harness.worker_process(cfg, log, "--until-idle") as proc:
                    rec.pids.append(proc.pid)
                    with anyio.fail_after(120):
                        await proc.wait()
                assert proc.returncode == 0, rec

            print(rec.summary())
            assert rec.mid_round() > 0, rec
            check_ledger_respected(rec)
            await check_outcome(st, client, rec)


def check_ledger_respected(rec: Record) -> None:
    """No worker ran a call whose output was already in the ledger when it started."""
    runs = harness.journal(rec.effects)
    for kill in rec.kills:
        later = set(rec.pids[kill.started :])
        again = [e for e in runs if e.pid in later and e.call_id in kill.ledger]
        assert not again, f"calls run again after their output was in the ledger: {again}\n{rec}"


async def check_outcome(st: SqliteStore, client: client_mod.AssistantsClient, rec: Record) -> None:
    """Every job ended as expected, with one run, and each tool call's side effect once."""
    written = harness.lines(rec.effects)
    repeated = {line: n for line, n in written.items() if n != 1}
    assert not repeated, f"side effects repeated: {repeated}\n{rec}"
    called: set[str] = set()
    for job_id, (state, status) in rec.expected.items():
        job = await st.get(job_id)
        assert job is not None
        assert job.state is state, f"{job_id}: {job.state} {job.result}\n{rec}"
        assert job.thread_id is not None
        assert job.run_id is not None
        runs = await harness.runs_of_job(client, job.thread_id, job_id)
        assert [r.id for r in runs] == [job.run_id], f"{job_id}: runs {runs}\n{rec}"
        assert runs[0].status == status, f"{job_id}: {runs[0].status}\n{rec}"
        assert job.result is not None
        assert job.result.status == status
        ids = await harness.function_call_ids(client, job.thread_id, job.run_id)
        assert ids, f"{job_id}: no tool calls in the run's steps"
        missing = [i for i in ids if i not in written]
        assert not missing, f"{job_id}: calls without their side effect: {missing}\n{rec}"
        called.update(ids)
        if state is JobState.SUCCEEDED:
            assert job.result.reply is not None
            assert "done" in job.result.reply
    assert set(written) == called, f"side effects of calls no run shows\n{rec}"


# --- signals -----------------------------------------------------------------------------------


async def wait_for(path: Path, text: str = "") -> None:
    """Until another process created a file (holding ``text``)."""
    with anyio.fail_after(30):
        while True:
            apath = anyio.Path(path)
            if await apath.exists() and text in await apath.read_text(errors="replace"):
                return
            await anyio.sleep(0.02)


async def test_sigterm_lets_the_tool_round_submit_and_hands_every_job_back(
    tmp_path: Path,
) -> None:
    effects, started = tmp_path / "effects.txt", tmp_path / "started"
    effects.touch()
    db, log_path = tmp_path / "jobs.sqlite3", tmp_path / "worker.log"
    async with Emulator() as emu:
        cfg = harness.write_config(tmp_path / "config.yaml", base_url=emu.base_url, db=db)
        async with (
            client_mod.AssistantsClient(
                config.ApiConfig(base_url=emu.base_url), api_key="sk-worker-test"
            ) as client,
            SqliteStore(db) as st,
        ):
            assistant = (await client.create_assistant(model="gpt-4o-mini")).id
            round_ = [harness.call(effects, 1.0, marker=started), harness.call(effects, 1.0)]
            in_round = await st.enqueue(
                harness.job(assistant, "a slow tool round", [{"tool_calls": round_}])
            )
            polling = await st.enqueue(
                harness.job(assistant, "a long think", [{"message": "hi", "think_ms": 3000}])
            )
            with log_path.open("ab") as log:
                async with harness.worker_process(cfg, log) as proc:
                    await wait_for(started)
                    polled = await st.get(polling)
                    assert polled is not None
                    assert polled.state is JobState.RUNNING, harness.tail(log_path)
                    proc.send_signal(signal.SIGTERM)
                    with anyio.fail_after(30):  # the drain timeout is 20 s
                        await proc.wait()
                assert proc.returncode == 0, harness.tail(log_path)
                first = proc.pid

                handed_back = {j: await st.get(j) for j in (in_round, polling)}
                job = handed_back[in_round]
                assert job is not None
                assert job.run_id is not None
                assert job.thread_id is not None
                run = await client.retrieve_run(job.thread_id, job.run_id)
                assert run.status != "requires_action", harness.tail(log_path)
                steps = [s async for s in client.iter_run_steps(job.thread_id, job.run_id)]
                histories = {j: await st.history(j) for j in (in_round, polling)}

                async with harness.worker_process(cfg, log, "--until-idle") as proc:
                    with anyio.fail_after(60):
                        await proc.wait()
                assert proc.returncode == 0, harness.tail(log_path)
            finished = [await st.get(j) for j in (in_round, polling)]

    submitted = [
        c.function.output
        for s in steps
        if s.step_details and s.step_details.tool_calls
        for c in s.step_details.tool_calls
        if c.function
    ]
    assert len(submitted) == 2
    assert all(output is not None and "done (attempt 1)" in output for output in submitted)
    for j in handed_back.values():
        assert j is not None
        assert j.state is JobState.QUEUED
        assert j.attempts == 0  # given back by release
        assert j.lease_owner is None
    released = {
        j: [h.at for h in hs if h.message.startswith("released by")] for j, hs in histories.items()
    }
    assert len(released[in_round]) == len(released[polling]) == 1
    # The job that was only polling was handed back at once, not after the tool round.
    assert released[polling][0] < released[in_round][0]
    for j in finished:
        assert j is not None
        assert j.state is JobState.SUCCEEDED, j.result
    assert list(harness.lines(effects).values()) == [1, 1]
    assert {e.pid for e in harness.journal(effects)} == {first}


async def test_a_second_sigterm_aborts_at_once_without_handing_the_job_back(
    tmp_path: Path,
) -> None:
    effects, started = tmp_path / "effects.txt", tmp_path / "started"
    db, log_path = tmp_path / "jobs.sqlite3", tmp_path / "worker.log"
    async with Emulator() as emu:
        cfg = harness.write_config(tmp_path / "config.yaml", base_url=emu.base_url, db=db)
        async with (
            client_mod.AssistantsClient(
                config.ApiConfig(base_url=emu.base_url), api_key="sk-worker-test"
            ) as client,
            SqliteStore(db) as st,
        ):
            assistant = (await client.create_assistant(model="gpt-4o-mini")).id
            wait = {"path": str(effects), "seconds": 600, "marker": str(started)}
            job_id = await st.enqueue(
                harness.job(
                    assistant,
                    "a hung tool",
                    [{"tool_calls": [{"name": "wait_long", "arguments": wait}]}],
                )
            )
            with log_path.open("ab") as log:
                async with harness.worker_process(cfg, log) as proc:
                    await wait_for(started)
                    proc.send_signal(signal.SIGTERM)
                    # Signals sent back to back may arrive as one: wait for the first.
                    await wait_for(log_path, "stopping: no new jobs")
                    proc.send_signal(signal.SIGTERM)
                    # Far sooner than the tool (600 s) or the drain timeout (20 s) would end.
                    with anyio.fail_after(15):
                        await proc.wait()
            job = await st.get(job_id)
            history = [h.message for h in await st.history(job_id)]
    assert proc.returncode == 0, harness.tail(log_path)
    assert not effects.exists()
    assert job is not None
    assert job.state is JobState.RUNNING  # its lease lapses; the next worker resumes it
    assert job.attempts == 1
    assert not [m for m in history if m.startswith(("released", "stopped"))]
    assert "aborted by a second stop request; resumed when the lease lapses" in history

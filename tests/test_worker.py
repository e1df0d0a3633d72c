"""The worker in-process against the emulator and a SQLite file: resume, leases, drain, metrics.

Guarantees under test (``orchestrator.worker``):

* A job never creates two runs: the run carries ``orchestrator_job=<job id>`` in its metadata and
  is recorded at once; a resumed job without a recorded run adopts the one on its thread.
* A tool call whose output is in the ledger is never run again; its stored output is submitted.
* A call interrupted mid-flight runs again on resume with ``ToolContext.attempt > 1`` (the job's
  attempt number), so a side-effecting tool deduplicates on ``ctx.tool_call_id`` then. A worker
  that gives a job back (``release``) gives its attempt back too, so it must not do that for a
  job cut off inside a tool round: that job is left for its lease to lapse instead.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import msgspec
import pytest
from prometheus_client import parser
from worker_tools import lab

from orchestrator import cli, errors, metrics, run_jobs, worker
from orchestrator.emulator import Emulator
from orchestrator.protocols.assistants import models
from orchestrator.store import AdoptJob, CreateJob, JobState, SqliteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(think_delay=0.02, queue_delay=0.01) as e:
        yield e


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


async def run_until_idle(w: worker.Worker) -> None:
    with anyio.fail_after(30):
        await w.run(until_idle=True)


async def assistant(c: Any) -> str:
    return str((await c.create_assistant(model="gpt-4o-mini")).id)


# --- driving and resuming ----------------------------------------------------------------------


async def test_a_job_runs_its_tools_once_at_attempt_1_and_succeeds(emu: Emulator, db: Path) -> None:
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        job_id = await st.enqueue(lab.job(await assistant(c), lab.script([False, False])))
        await run_until_idle(worker.Worker(cfg, st, c, t.registry, worker_id="w1"))
        job = await st.get(job_id)
        history = lab.messages(await st.history(job_id))
    assert job is not None
    assert job.state is JobState.SUCCEEDED
    assert job.result is not None
    assert job.result.status == "completed"
    assert job.result.tool_calls == 2
    assert job.result.reply is not None
    assert job.result.reply.startswith("all done")
    assert sorted(a for _, a in t.calls) == [1, 1]
    assert len(set(t.effects)) == 2
    assert history[0] == "enqueued"
    assert history[1] == "claimed by w1 (epoch 1, attempt 1)"
    assert f"run recorded: {job.run_id}" in history
    assert history[-1] == "succeeded: run completed"


async def test_a_resumed_job_adopts_the_run_it_created_but_did_not_record(
    emu: Emulator, db: Path
) -> None:
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        asst = await assistant(c)
        job_id = await st.enqueue(lab.job(asst, lab.script([False])))
        # A worker that died right after creating the run, before recording it.
        ghost = await lab.ghost_claim(st, job_id)
        thread = await c.create_thread(metadata={lab.JOB_KEY: job_id})
        await st.record_thread(job_id, ghost.epoch, thread.id)
        body = models.CreateRun(
            assistant_id=asst,
            metadata={lab.JOB_KEY: job_id, "emulator_script": lab.script([False])},
        )
        orphan = await c.create_run(thread.id, body)
        await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        job = await st.get(job_id)
        runs = await c.list_runs(thread.id)
        history = lab.messages(await st.history(job_id))
    assert job is not None
    assert job.state is JobState.SUCCEEDED
    assert [r.id for r in runs.data] == [orphan.id]
    assert job.run_id == orphan.id
    assert f"resuming run {orphan.id}" in history
    # The ghost never began the call (the ledger says so): it runs for the first time.
    assert [a for _, a in t.calls] == [1]


async def test_a_resumed_run_submits_ledger_outputs_and_runs_only_the_other_calls(
    emu: Emulator, db: Path
) -> None:
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        asst = await assistant(c)
        script = lab.script([False, False])
        job_id = await st.enqueue(lab.job(asst, script))
        # A worker that died after one of two outputs reached the ledger.
        ghost = await lab.ghost_claim(st, job_id)
        thread = await c.create_thread()
        await st.record_thread(job_id, ghost.epoch, thread.id)
        body = models.CreateRun(
            assistant_id=asst, metadata={lab.JOB_KEY: job_id, "emulator_script": script}
        )
        run = await c.create_run(thread.id, body)
        await st.record_run(job_id, ghost.epoch, run.id)
        run = await lab.wait_status(c, thread.id, run.id, "requires_action")
        stored, fresh = run.tool_calls
        # The ghost began both calls; one output reached the ledger before it died.
        began = await st.begin_calls(
            job_id, ghost.epoch, run.id, [stored.id, fresh.id], now=ghost.updated_at
        )
        assert began == {stored.id: 1, fresh.id: 1}
        await st.save_output(job_id, ghost.epoch, run.id, stored.id, "from the ledger")
        await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        job = await st.get(job_id)
        steps = [s async for s in c.iter_run_steps(thread.id, run.id)]
    assert job is not None
    assert job.state is JobState.SUCCEEDED
    assert t.calls == [(fresh.id, 2)]
    outputs = {
        call.id: call.function.output
        for s in steps
        if s.step_details and s.step_details.tool_calls
        for call in s.step_details.tool_calls
        if call.function
    }
    assert outputs[stored.id] == "from the ledger"
    assert outputs[fresh.id] == f"{fresh.id}: done at attempt 2"


async def test_a_second_worker_reclaims_a_dead_workers_job_once_its_lease_lapses(
    emu: Emulator, db: Path
) -> None:
    # Heartbeats every 0.2 s keep a 1.5 s lease even on a loaded machine.
    cfg, t = lab.settings(db, emu.base_url, lease_seconds=1.5), lab.Lab()
    async with (
        lab.client(cfg) as c,
        SqliteStore(db) as store_a,
        SqliteStore(db) as store_b,
    ):
        job_id = await store_a.enqueue(lab.job(await assistant(c), lab.script([True])))
        a = worker.Worker(cfg, store_a, c, t.registry, worker_id="A")
        b = worker.Worker(cfg, store_b, c, t.registry, worker_id="B")
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.run)
            with anyio.fail_after(20):
                await t.holding.wait()  # A's call did its side effect and hangs
            first = await store_a.get(job_id)
            assert first is not None
            assert first.lease_expires_at is not None
            renewed = first.lease_expires_at + cfg.worker.lease_seconds
            tg.start_soon(run_until_idle, b)
            # A heartbeats past its first lease's end while B looks for work: B must wait...
            await lab.eventually(lambda: lease_beyond(store_b, job_id, renewed))
            # ... until A dies without giving the job back (a second stop aborts at once).
            a.stop()
            a.stop()
        job = await store_b.get(job_id)
        history = await store_b.history(job_id)
        assert job is not None
        assert job.thread_id is not None
        thread_runs = await c.list_runs(job.thread_id)
    assert job.state is JobState.SUCCEEDED
    claims = [h for h in history if "claimed by" in h.message]
    assert [h.message for h in claims] == [
        "claimed by A (epoch 1, attempt 1)",
        "lease of A (epoch 1) expired; claimed by B (epoch 2, attempt 2)",
    ]
    assert [h.epoch for h in claims] == [1, 2]
    assert not [m for m in lab.messages(history) if m.startswith("released")]
    assert [r.id for r in thread_runs.data] == [job.run_id]
    # A's call did its side effect and died; B ran it again at attempt 2, which deduplicated.
    assert [a for _, a in t.calls] == [1, 2]
    assert len(t.effects) == 1


async def lease_beyond(st: SqliteStore, job_id: str, at: float) -> bool:
    job = await st.get(job_id)
    assert job is not None
    assert job.lease_owner == "A"
    return job.lease_expires_at is not None and job.lease_expires_at > at


# --- stopping and failing ----------------------------------------------------------------------


async def test_a_job_cut_off_inside_a_tool_round_is_handed_back_and_its_call_counted(
    emu: Emulator, db: Path
) -> None:
    """The drain ran out while a call ran: it may have had its side effect. The job is handed
    back at once; the ledger counted the call's start, so it runs again at attempt 2."""
    cfg, t = lab.settings(db, emu.base_url, drain_timeout=0.1), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        job_id = await st.enqueue(lab.job(await assistant(c), lab.script([True])))
        w = worker.Worker(cfg, st, c, t.registry)
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w.run)
                await t.holding.wait()
                w.stop()
        cut = await st.get(job_id)
        assert cut is not None
        assert cut.state is JobState.QUEUED
        assert cut.run_id is not None
        assert [r.starts for r in (await st.calls(cut.run_id)).values()] == [1]
        t.gate.set()  # a call run again at attempt 1 would not hang, only repeat its effect
        await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        job = await st.get(job_id)
        history = lab.messages(await st.history(job_id))
    assert [m for m in history if m.startswith("released")]
    assert job is not None
    assert job.state is JobState.SUCCEEDED
    assert [a for _, a in t.calls] == [1, 2]
    assert len(t.effects) == 1


class FailingLedger(SqliteStore):
    """A store whose ledger refuses the first ``parallel`` writes together, like a full disk."""

    def __init__(self, path: Path, parallel: int) -> None:
        super().__init__(path)
        self.parallel = parallel
        self.refused = 0
        self._together = anyio.Event()

    async def save_output(
        self, job_id: str, epoch: int, run_id: str, tool_call_id: str, output: str
    ) -> None:
        if self.refused >= self.parallel:
            return await super().save_output(job_id, epoch, run_id, tool_call_id, output)
        self.refused += 1
        if self.refused == self.parallel:
            self._together.set()
        await self._together.wait()
        raise errors.StoreError(f"{self.path}: disk I/O error")


async def test_store_errors_from_parallel_calls_leave_the_job_to_be_retried(
    emu: Emulator, db: Path
) -> None:
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, FailingLedger(db, parallel=2) as st:
        job_id = await st.enqueue(lab.job(await assistant(c), lab.script([False, False])))
        await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        job = await st.get(job_id)
        history = lab.messages(await st.history(job_id))
    assert st.refused == 2
    assert job is not None
    assert job.state is JobState.SUCCEEDED, job.result
    assert job.attempts == 2
    assert any(m.startswith("interrupted") and "disk I/O error" in m for m in history)
    assert sorted(a for _, a in t.calls) == [1, 1, 2, 2]
    assert len(t.effects) == 2


async def test_bad_jobs_fail_with_the_api_error_and_the_worker_goes_on(
    emu: Emulator, db: Path
) -> None:
    cfg, t = lab.settings(db, emu.base_url, concurrency=1), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        asst = await assistant(c)
        thread = await c.create_thread()
        bad = {
            "assistant": await st.enqueue(lab.job("asst_nope")),
            "thread": await st.enqueue(
                CreateJob(
                    assistant_id=asst,
                    thread_id="thread_nope",
                    messages=(models.MessageRequest(role="user", content="hi"),),
                )
            ),
            "run": await st.enqueue(AdoptJob(thread_id=thread.id, run_id="run_nope")),
        }
        good = await st.enqueue(lab.job(asst, lab.script([False])))
        await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        jobs = {k: await st.get(v) for k, v in bad.items()}
        done = await st.get(good)
    missing = {"assistant": "asst_nope", "thread": "thread_nope", "run": "run_nope"}
    for kind, job in jobs.items():
        assert job is not None
        assert job.state is JobState.FAILED
        assert job.attempts == 1
        assert job.result is not None
        assert job.result.status == "error"
        assert job.result.last_error is not None
        assert job.result.last_error.startswith("NotFoundError")
        assert f"No {kind} found with id '{missing[kind]}'" in job.result.last_error
    assert done is not None
    assert done.state is JobState.SUCCEEDED


# --- health and metrics ------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text as {(sample name, labels): value}."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_health_and_metrics_endpoints_describe_the_work(emu: Emulator, db: Path) -> None:
    cfg, t = lab.settings(db, emu.base_url, health="127.0.0.1:0"), lab.Lab()
    # Half the requests addressing the run fail with 503 and are retried (20 attempts: all of
    # them failing is as good as impossible); thinking for a while makes for many requests.
    cfg = msgspec.structs.replace(cfg, retry=msgspec.structs.replace(cfg.retry, attempts=20))
    m = metrics.Metrics()
    faults = msgspec.json.encode({"fault_503": 0.5}).decode()
    async with (
        lab.client(cfg, observer=m) as c,
        SqliteStore(db) as st,
        aiohttp.ClientSession() as http,
    ):
        script = lab.script([True], think_ms=200)
        spec = lab.job(await assistant(c), script, emulator_faults=faults)
        job_id = await st.enqueue(spec)
        await st.enqueue(lab.job("asst_nope"))
        w = worker.Worker(cfg, st, c, t.registry, metrics_=m)

        async def get(path: str) -> tuple[str, str]:
            assert w.health_address is not None
            host, port = w.health_address
            async with http.get(f"http://{host}:{port}{path}") as resp:
                assert resp.status == 200
                return resp.headers["Content-Type"], await resp.text()

        async with anyio.create_task_group() as tg:
            tg.start_soon(w.run)
            with anyio.fail_after(20):
                await t.holding.wait()
            kind, body = await get("/healthz")
            health = msgspec.json.decode(body)
            during = samples((await get("/metrics"))[1])
            t.gate.set()
            await lab.eventually(lambda: finished(st, job_id))
            kind_m, text = await get("/metrics")
            after = samples(text)
            w.stop()
    assert kind == "application/json"
    assert health["status"] == "ok"
    assert health["worker_id"] == w.worker_id
    assert health["in_flight"] >= 1
    assert kind_m.startswith("text/plain")
    assert value(during, "orchestrator_runs_in_flight") >= 1
    assert value(during, "orchestrator_jobs", state="running") >= 1
    assert value(after, "orchestrator_runs_in_flight") == 0
    assert value(after, "orchestrator_jobs", state="succeeded") == 1
    assert value(after, "orchestrator_jobs", state="failed") == 1
    assert value(after, "orchestrator_jobs", state="queued") == 0
    assert value(after, "orchestrator_run_transitions_total", status="requires_action") == 1
    assert value(after, "orchestrator_run_transitions_total", status="completed") == 1
    assert value(after, "orchestrator_runs_finished_total", outcome="completed") == 1
    assert value(after, "orchestrator_tool_calls_total", tool="effect", outcome="ok") == 1
    assert value(after, "orchestrator_tool_latency_seconds_count", tool="effect") == 1
    assert value(after, "orchestrator_tool_latency_seconds_bucket", tool="effect", le="+Inf") == 1
    assert (
        value(after, "orchestrator_http_requests_total", endpoint="create_run", status="200") == 1
    )
    assert (
        value(after, "orchestrator_http_requests_total", endpoint="create_run", status="404") == 1
    )
    assert (
        value(
            after, "orchestrator_http_requests_total", endpoint="submit_tool_outputs", status="200"
        )
        == 1
    )
    retried = sum(v for (name, _), v in after.items() if name == "orchestrator_http_retries_total")
    failed = sum(
        v
        for (name, labels), v in after.items()
        if name == "orchestrator_http_requests_total" and ("status", "503") in labels
    )
    assert retried >= 1
    assert failed == retried


async def finished(st: SqliteStore, job_id: str) -> bool:
    job = await st.get(job_id)
    return job is not None and job.state is JobState.SUCCEEDED


# --- the command line: enqueue and status ------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No stray settings from the environment; the CLI's logging set-up undone afterwards."""
    for name in list(os.environ):
        if name.startswith("ORCHESTRATOR_") or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def config_file(tmp_path: Path, db: Path) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(f"worker:\n  sqlite_path: {json.dumps(str(db))}\n", encoding="utf-8")
    return str(path)


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--message", "hi"], "--assistant: required for a create job"),
        (["--assistant", " asst_1"], "assistant_id: expected an id without surrounding spaces"),
        (["--assistant", "asst_1", "--message", ""], "messages[0].content: must not be empty"),
        (["--adopt", "thread_1", "run_1", "--assistant", "asst_1"], "--adopt takes no"),
        (["--adopt", "thread_1", ""], "run_id: expected an id"),
    ],
)
def test_enqueue_rejects_a_malformed_job_and_stores_nothing(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    cfg = config_file(tmp_path, db)
    assert cli.main(["--config", cfg, "enqueue", *args]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1].startswith("orchestrator: InvalidJob: ")
    assert message in err
    assert cli.main(["--config", cfg, "status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("jobs: 0 in all")
    assert len(lines) == 4  # counts, a blank line, headers and rule: no job


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("kind", ["directory", "garbage"])
def test_status_names_an_unreadable_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / "jobs.sqlite3"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_bytes(b"not a database, only text " * 200)
    assert cli.main(["--config", config_file(tmp_path, path), "status"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("orchestrator: StoreError: ")
    assert str(path) in err


async def _work(db: Path) -> list[str]:
    """Three jobs: one succeeds, one fails, one stays queued (with a lock)."""
    async with Emulator(think_delay=0.01, queue_delay=0.0) as emu:
        cfg, t = lab.settings(db, emu.base_url), lab.Lab()
        async with lab.client(cfg) as c, SqliteStore(db) as st:
            ok = await st.enqueue(lab.job(await assistant(c), lab.script([False])))
            bad = await st.enqueue(lab.job("asst_nope"))
            await run_until_idle(worker.Worker(cfg, st, c, t.registry, worker_id="w-cli"))
    return [ok, bad]


@pytest.mark.usefixtures("cli_env")
def test_status_prints_the_job_table_and_one_jobs_history(
    tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ok, bad = anyio.run(_work, db)
    cfg = config_file(tmp_path, db)
    assert cli.main(["--config", cfg, "enqueue", "--assistant", "asst_1", "--count", "2"]) == 0
    queued = capsys.readouterr().out.split()
    assert len(queued) == 2
    assert all(q.startswith("job_") for q in queued)

    assert cli.main(["--config", cfg, "status"]) == 0
    counts, _, *lines = capsys.readouterr().out.splitlines()
    assert (
        counts == "jobs: 4 in all: 2 queued, 0 running, 0 waiting_approval, 1 succeeded, 1 failed"
    )
    assert lines[0].split() == ["job", "state", "tries", "run", "status", "tool", "calls", "reply"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == [*reversed(queued), bad, ok]  # newest first
    assert rows[ok].split()[1:3] == ["succeeded", "1"]
    assert " completed " in rows[ok]
    assert "all done" in rows[ok]
    assert rows[bad].split()[1:3] == ["failed", "1"]
    assert "NotFoundError" in rows[bad]
    assert all(rows[q].split()[1:3] == ["queued", "0"] for q in queued)

    assert cli.main(["--config", cfg, "status", "--state", "queued"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] for line in lines[4:]) == sorted(queued)

    assert cli.main(["--config", cfg, "status", ok]) == 0
    out = capsys.readouterr().out
    head, _, history = out.rpartition("\n\n")
    assert f"job        {ok}" in head
    assert "reply:\nall done" in head  # the whole reply, on its own lines
    assert "tool outputs (" in head
    events_ = [line.split(None, 3)[3].strip() for line in history.splitlines()[2:]]
    assert events_[0] == "enqueued"
    assert events_[1] == "claimed by w-cli (epoch 1, attempt 1)"
    assert any(e.startswith("thread recorded: thread_") for e in events_)
    assert any(e.startswith("run recorded: run_") for e in events_)
    assert events_[-1] == "succeeded: run completed"

    assert cli.main(["--config", cfg, "status", "job_nope"]) == 1
    assert "no job job_nope" in capsys.readouterr().err


async def test_a_job_out_of_attempts_cancels_the_run_it_left_holding_its_thread(
    emu: Emulator, db: Path
) -> None:
    """Issue 10 defect 6: ``claim`` gives up on a job whose last worker died with its run
    waiting for tool outputs; the run must not keep the thread locked until it expires."""
    cfg, t = lab.settings(db, emu.base_url, max_attempts=1), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        asst = await assistant(c)
        job_id = await st.enqueue(lab.job(asst, lab.script([False])))
        ghost = await lab.ghost_claim(st, job_id)
        thread = await c.create_thread()
        await st.record_thread(job_id, ghost.epoch, thread.id)
        body = models.CreateRun(
            assistant_id=asst,
            metadata={lab.JOB_KEY: job_id, "emulator_script": lab.script([False])},
        )
        run = await c.create_run(thread.id, body)
        await st.record_run(job_id, ghost.epoch, run.id)
        await lab.wait_status(c, thread.id, run.id, "requires_action")
        await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        job = await st.get(job_id)
        after = await c.retrieve_run(thread.id, run.id)
        history = lab.messages(await st.history(job_id))
    assert job is not None
    assert job.state is JobState.FAILED
    assert after.status in {"cancelling", "cancelled"}
    assert f"run {run.id} cancelled" in history
    assert not t.calls


@pytest.mark.parametrize("mode", ["warn", "error"])
async def test_a_job_whose_assistant_offers_unregistered_tools_is_named_before_its_run(
    emu: Emulator, db: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 14 item 1, in the worker: ``tools.check_tools`` names the assistant's tools that no
    module registered before the run starts (``error`` fails the job instead of a "success"
    whose every call was an ``unknown_tool`` output)."""
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    cfg = msgspec.structs.replace(cfg, tools=msgspec.structs.replace(cfg.tools, check_tools=mode))
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        tool = models.ToolDefinition(
            type="function", function=models.FunctionDefinition(name="not_registered")
        )
        asst = (await c.create_assistant(model="gpt-4o-mini", tools=[tool])).id
        job_id = await st.enqueue(lab.job(asst, json.dumps([{"message": "hi"}])))
        with caplog.at_level(logging.WARNING, logger="orchestrator"):
            await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        job = await st.get(job_id)
    assert job is not None
    assert "not_registered" in caplog.text
    if mode == "warn":
        assert job.state is JobState.SUCCEEDED
    else:
        assert job.state is JobState.FAILED
        assert job.result is not None
        assert job.run_id is None  # refused before any run was created
        assert "not_registered" in (job.result.last_error or "")


class StealingStore(SqliteStore):
    """A store in which another worker takes the job over while its run is being created."""

    def __init__(self, path: Path, thief_records: str | None) -> None:
        super().__init__(path)
        self.thief_records = thief_records

    async def record_run(self, job_id: str, epoch: int, run_id: str) -> None:
        thief = await self.claim("thief", lease_seconds=3600, now=time.time() + 3600)
        assert thief is not None
        if self.thief_records is not None:
            await super().record_run(job_id, thief.epoch, self.thief_records)
        await super().record_run(job_id, epoch, run_id)  # stale: LeaseLost


@pytest.mark.parametrize("thief_has_its_own_run", [False, True])
async def test_a_run_created_under_a_lost_claim_is_cancelled_unless_the_new_owner_takes_it(
    emu: Emulator, db: Path, thief_has_its_own_run: bool
) -> None:
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    st = StealingStore(db, "run_of_the_new_owner" if thief_has_its_own_run else None)
    async with lab.client(cfg) as c, st:
        job_id = await st.enqueue(lab.job(await assistant(c), lab.script([False])))
        w = worker.Worker(cfg, st, c, t.registry)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(w.run)
                while (job := await st.get(job_id)) is None or job.lease_owner != "thief":  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                while job_id in w._in_flight:  # noqa: ASYNC110
                    await anyio.sleep(0.02)
                w.stop()
        job = await st.get(job_id)
        assert job is not None
        assert job.thread_id is not None
        runs = (await c.list_runs(job.thread_id)).data
    assert len(runs) == 1
    assert not t.calls  # no tool started under the lost claim
    if thief_has_its_own_run:
        assert runs[0].status in {"cancelling", "cancelled"}  # ours is an orphan: cancelled
    else:
        assert not runs[0].is_terminal  # the new owner finds it by the job's id, drives it


async def test_the_new_owner_drives_the_run_a_lost_claim_made_after_it_looked(
    emu: Emulator, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review finding: a paused worker's create lands after the job's new owner looked for a
    run; the new owner's own create is refused for that run, which carries the job's id: it
    is the job's run, adopted and driven, not waited out (the thread would stay locked)."""
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        asst = await assistant(c)
        job_id = await st.enqueue(lab.job(asst, lab.script([False])))
        ghost = await lab.ghost_claim(st, job_id)
        thread = await c.create_thread()
        await st.record_thread(job_id, ghost.epoch, thread.id)
        stale = worker.Worker(cfg, st, c, t.registry, worker_id="stale")
        owner = worker.Worker(cfg, st, c, t.registry, worker_id="owner")
        look = run_jobs.find_run
        late: list[models.Run] = []

        async def look_then_the_stale_create_lands(*args: Any) -> str | None:
            found = await look(*args)
            body = models.CreateRun(
                assistant_id=asst,
                metadata={lab.JOB_KEY: job_id, "emulator_script": lab.script([False])},
            )
            late.append(await c.create_run(thread.id, body))
            with pytest.raises(errors.LeaseLost):
                await st.record_run(job_id, ghost.epoch, late[0].id)
            await stale._orphaned(ghost, late[0], {None})  # what its record() does then
            return found

        monkeypatch.setattr(run_jobs, "find_run", look_then_the_stale_create_lands)
        await run_until_idle(owner)
        job = await st.get(job_id)
        runs = (await c.list_runs(thread.id)).data
    assert job is not None
    assert job.state is JobState.SUCCEEDED
    assert [r.id for r in runs] == [late[0].id]
    assert job.run_id == late[0].id
    assert [a for _, a in t.calls] == [1]


async def test_a_run_whose_recording_was_cut_off_by_a_stop_is_kept(emu: Emulator, db: Path) -> None:
    """Stopped (drain) while recording a re-created run: the claim is still ours, so the run
    stays for the job's next attempt to find, even though the store still shows the old run."""
    cfg, t = lab.settings(db, emu.base_url), lab.Lab()
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        asst = await assistant(c)
        job_id = await st.enqueue(lab.job(asst, lab.script([False])))
        job = await st.claim("w", lease_seconds=60)
        assert job is not None
        thread = await c.create_thread()
        await st.record_thread(job_id, job.epoch, thread.id)
        await st.record_run(job_id, job.epoch, "run_failed_before")
        body = models.CreateRun(
            assistant_id=asst,
            metadata={lab.JOB_KEY: job_id, "emulator_script": lab.script([False])},
        )
        run = await c.create_run(thread.id, body)
        w = worker.Worker(cfg, st, c, t.registry)
        await w._orphaned(job, run, {None, "run_failed_before"})
        after = await c.retrieve_run(thread.id, run.id)
    assert not after.is_terminal
    assert after.status not in {"cancelling", "cancelled"}


async def test_a_job_out_of_attempts_finds_and_cancels_a_run_it_never_recorded(
    emu: Emulator, db: Path
) -> None:
    """Its last worker died after creating the run, before recording it: the claim that finds
    the job out of attempts ends it failed, finds the run by the job's id and cancels it."""
    cfg, t = lab.settings(db, emu.base_url, max_attempts=1), lab.Lab()
    stall = json.dumps([{"stall": True}])
    async with lab.client(cfg) as c, SqliteStore(db) as st:
        asst = await assistant(c)
        job_id = await st.enqueue(lab.job(asst, stall))
        ghost = await lab.ghost_claim(st, job_id)
        thread = await c.create_thread()
        await st.record_thread(job_id, ghost.epoch, thread.id)
        body = models.CreateRun(
            assistant_id=asst, metadata={lab.JOB_KEY: job_id, "emulator_script": stall}
        )
        left = await c.create_run(thread.id, body)
        await run_until_idle(worker.Worker(cfg, st, c, t.registry))
        job = await st.get(job_id)
        after = await c.retrieve_run(thread.id, left.id)
    assert job is not None
    assert job.state is JobState.FAILED
    assert after.status in ("cancelling", "cancelled")
